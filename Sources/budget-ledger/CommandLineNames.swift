import BudgetLedger

/// The names a user typed for what the ledger's validation names.
///
/// The domain names a bad field as the REST API does (`latencyMs`, `threadId`), since that is
/// the contract most clients read; the CLI says which flag or argument was wrong instead
/// (`--latency-ms`, `THREAD`), as `budget-ledger --help` and the README spell them.
enum CommandLineNames {
    /// The domain's field names, and the flag or argument each comes from on the command line.
    static let defaults: [String: String] = [
        "threadId": "THREAD",
        "maxTokens": "N",
        "promptTokens": "--prompt",
        "completionTokens": "--completion",
        "latencyMs": "--latency-ms",
        "agentId": "--agent",
        "model": "--model",
        "provider": "--provider",
        "metadata": "--meta",
        "idempotencyKey": "--idempotency-key",
        "tokens": "--tokens",
        "ttlSeconds": "--ttl",
        "estimatedTokens": "--estimate",
        "maxTokensPerThread": "--default-max",
        "maxUsd": "--max-usd",
        "newFrom": "--new-from",
        "to": "--to",
        "after": "--after",
        "limit": "--limit",
        "org": "--org",
    ]

    /// What the user typed for `field`: `overrides` first (a command whose argument differs,
    /// e.g. `price set MODEL`), then `defaults`; a metadata key as `--meta KEY`; else `field`.
    static func name(of field: String, overrides: [String: String] = [:]) -> String {
        if let name = overrides[field] ?? defaults[field] { return name }
        if field.hasPrefix("metadata.") { return "--meta " + field.dropFirst("metadata.".count) }
        return field
    }

    /// `error` as the CLI reports it: a bad field under its command-line name.
    static func describe(_ error: any Error, overrides: [String: String] = [:]) -> String {
        guard case .invalidInput(let field, let reason)? = error as? LedgerError else { return "\(error)" }
        return "invalid \(name(of: field, overrides: overrides)): \(reason)"
    }
}
