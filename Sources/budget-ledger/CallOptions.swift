import ArgumentParser
import BudgetLedger
import BudgetLedgerWire
import Foundation

/// The tokens a call spent, and the key that makes retrying it safe (consume and settle).
struct SpentTokens: ParsableArguments {
    @Option(parsing: .unconditional, help: "Prompt tokens spent.")
    var prompt: Int64

    @Option(parsing: .unconditional, help: "Completion tokens spent.")
    var completion: Int64 = 0

    @Option(name: .customLong("idempotency-key"), help: "A retried call with the same key records nothing new.")
    var idempotencyKey: String?
}

/// The optional usage details of a consume, for billing.
struct UsageFlags: ParsableArguments {
    @Option(name: .customLong("agent"), help: "The agent that made the call.")
    var agentID: String?

    @Option(help: "The model called (priced by its exact name, else the most specific pattern: see price show).")
    var model: String?

    @Option(help: "The provider of the model.")
    var provider: String?

    @Option(name: .customLong("latency-ms"), parsing: .unconditional, help: "The call's latency in milliseconds.")
    var latencyMilliseconds: Int64?

    @Option(name: .customLong("meta"), help: "A metadata entry KEY=VALUE (repeatable; org_id and user_id are indexed).")
    var metadataPairs: [String] = []

    @Option(name: .customLong("meta-json"), help: "Metadata as a JSON object; --meta entries are added to it.")
    var metadataJSON: String?

    /// `--meta-json` parsed and `--meta` merged over it by `validate()`, so that `details()` does
    /// not parse again (a plain property: ArgumentParser keeps it as set).
    var metadataMembers: [String: Metadata.Value]?

    /// `--meta` must be KEY=VALUE and `--meta-json` a JSON object: refused before the ledger is opened.
    mutating func validate() throws {
        metadataMembers = try Self.mergedMembers(json: metadataJSON, pairs: metadataPairs)
    }

    /// The usage details, with `--meta` entries merged over `--meta-json`.
    ///
    /// - Throws: `LedgerError.invalidInput` for metadata the ledger refuses (run it under
    ///   `LedgerOptions.checkingInput`, before the ledger is opened).
    func details() throws -> UsageDetails {
        UsageDetails(
            agentID: agentID, model: model, provider: provider, latencyMilliseconds: latencyMilliseconds,
            metadata: try Self.metadata(metadataMembers, json: metadataJSON, pairs: metadataPairs))
    }

    /// `--meta` entries (KEY=VALUE) merged over `--meta-json` (an object), as members: parsed here,
    /// once; nil without either flag.
    ///
    /// - Throws: `ValidationError` (exit 64) for a malformed flag.
    static func mergedMembers(json metadataJSON: String?, pairs metadataPairs: [String]) throws -> [String: Metadata.Value]? {
        guard metadataJSON != nil || !metadataPairs.isEmpty else { return nil }
        var members: [String: Metadata.Value] = [:]
        if let metadataJSON {
            guard let parsed = try? JSONDecoder().decode([String: Metadata.Value].self, from: Data(metadataJSON.utf8))
            else {
                throw ValidationError("--meta-json must be a JSON object, got: \(metadataJSON)")
            }
            members = parsed
        }
        for pair in metadataPairs {
            // By Unicode scalars: "=" and a combining mark after it are one Character.
            let scalars = pair.unicodeScalars
            guard let equals = scalars.firstIndex(of: "="), equals != scalars.startIndex else {
                throw ValidationError("--meta takes KEY=VALUE, got: \(pair)")
            }
            members[String(scalars[..<equals])] = .string(String(scalars[scalars.index(after: equals)...]))
        }
        return members
    }

    /// The checked `Metadata` of `members` (as `validate()` left them; merged here only for an
    /// instance that was never validated), written as compact JSON with its keys sorted.
    static func metadata(_ members: [String: Metadata.Value]?, json: String?, pairs: [String]) throws -> Metadata? {
        try (members ?? mergedMembers(json: json, pairs: pairs)).map(Metadata.init)
    }
}

/// The scopes a hold falls under (reserve): the agent, the model and the metadata's `org_id` and
/// `user_id`, with the same flags as consume's.
struct HoldScopeFlags: ParsableArguments {
    @Option(name: .customLong("agent"), help: "The agent that will make the call.")
    var agentID: String?

    @Option(help: "The model that will be called (a dollar budget holds its most cost).")
    var model: String?

    @Option(name: .customLong("meta"), help: "A metadata entry KEY=VALUE (repeatable; org_id and user_id pick scopes).")
    var metadataPairs: [String] = []

    @Option(name: .customLong("meta-json"), help: "Metadata as a JSON object; --meta entries are added to it.")
    var metadataJSON: String?

    /// As `UsageFlags.metadataMembers`.
    var metadataMembers: [String: Metadata.Value]?

    /// As `UsageFlags.validate()`.
    mutating func validate() throws {
        metadataMembers = try UsageFlags.mergedMembers(json: metadataJSON, pairs: metadataPairs)
    }

    /// The usage details the ledger files the hold under (throws as `UsageFlags.details()`).
    func details() throws -> UsageDetails {
        UsageDetails(
            agentID: agentID, model: model, provider: nil, latencyMilliseconds: nil,
            metadata: try UsageFlags.metadata(metadataMembers, json: metadataJSON, pairs: metadataPairs))
    }
}

extension Timestamps {
    /// `text` as UTC microseconds; a malformed time is a `ValidationError` (exit 64) naming the option typed.
    static func parse(_ text: String, option: String) throws -> Int64 {
        do {
            return try parse(text, field: option)
        } catch let error as LedgerError {
            throw ValidationError("\(error)")
        }
    }
}
