import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Reserve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Hold tokens against a thread's budget until settled, released or expired (exit 3 when it does not fit).")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The thread id.")
        var thread: String

        @Option(parsing: .unconditional, help: "Tokens to hold (at least 1).")
        var tokens: Int64

        @Option(parsing: .unconditional, help: "Seconds until the hold stops counting (default 300, at most 604800).")
        var ttl: Int64 = Ledger.defaultHoldSeconds

        @OptionGroup var usage: HoldScopeFlags

        @Option(
            name: .customLong("idempotency-key"),
            help: "A retried reserve with the same key (and thread, tokens, agent, model, metadata) records nothing new.")
        var idempotencyKey: String?

        func run() throws {
            // Metadata is parsed and checked here, once, before the ledger is opened.
            let details = try options.checkingInput { try usage.details() }
            try options.withAnyLedger { ledger in
                let result = try ledger.reserve(
                    thread, tokens: tokens, ttlSeconds: ttl, usage: details, idempotencyKey: idempotencyKey)
                let replayed = result.isReplay ? " (replayed: recorded earlier under this key)" : ""
                Output.emit(
                    result.json,
                    text: "reservation \(result.reservation.id)\(replayed): \(Output.count(tokens, "token")) held until "
                        + Timestamps.iso8601(microseconds: result.reservation.expiresAtMicroseconds) + "\n"
                        + Output.text(result.budget),
                    asJSON: options.json)
            }
        }
    }
}
