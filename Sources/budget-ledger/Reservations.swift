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

        func run() throws {
            try options.withLedger { ledger in
                let result = try ledger.reserve(thread, tokens: tokens, ttlSeconds: ttl)
                Output.emit(
                    result.json,
                    text: "reservation \(result.reservation.id): \(tokens) tokens held until "
                        + Timestamps.iso8601(microseconds: result.reservation.expiresAtMicroseconds) + "\n"
                        + Output.text(result.budget),
                    asJSON: options.json)
            }
        }
    }

    struct Settle: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record what a held call actually spent and end the hold (exit 4 unknown, 5 no longer live).")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The reservation id.")
        var reservation: Int64

        @OptionGroup var spent: SpentTokens

        @OptionGroup var usage: UsageFlags

        func run() throws {
            let details = try usage.details()
            try options.withLedger { ledger in
                let result = try ledger.settle(
                    reservation, promptTokens: spent.prompt, completionTokens: spent.completion,
                    idempotencyKey: spent.idempotencyKey, usage: details)
                let expired = result.holdHadExpired ? " (the hold had expired; the spend is recorded)" : ""
                Output.emit(
                    result.json, text: "settled reservation \(reservation)\(expired): " + Output.text(result.consume.budget),
                    asJSON: options.json)
            }
        }
    }

    struct Release: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End a hold with nothing spent (exit 4 unknown, 5 no longer live).")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The reservation id.")
        var reservation: Int64

        func run() throws {
            try options.withLedger { ledger in
                let budget = try ledger.release(reservation)
                Output.emit(
                    .object([("released", .bool(true)), ("reservationId", .integer(reservation)), ("budget", budget.json)]),
                    text: "released reservation \(reservation): " + Output.text(budget), asJSON: options.json)
            }
        }
    }

    struct Holds: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List live holds, of one thread or all.")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "Only this thread's holds.")
        var thread: String?

        func run() throws {
            try options.withLedger { ledger in
                let holds = try ledger.holds(thread)
                let held = holds.reduce(Int64(0)) { $0 + $1.tokens }
                let json = JSONValue.object([
                    ("holds", .array(holds.map(\.json))),
                    ("count", .integer(Int64(holds.count))),
                    ("heldTokens", .integer(held)),
                ])
                let lines = holds.map {
                    "\($0.id) \($0.threadID) \($0.tokens) tokens until \(Timestamps.iso8601(microseconds: $0.expiresAtMicroseconds))"
                } + ["\(holds.count) holds, \(held) tokens held"]
                Output.emit(json, text: lines.joined(separator: "\n"), asJSON: options.json)
            }
        }
    }
}
