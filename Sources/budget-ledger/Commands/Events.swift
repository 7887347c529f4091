import ArgumentParser
import BudgetLedger

extension BudgetLedgerCommand {
    struct Events: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The billing feed: events after an id, in id order (remember lastId to resume).")

        @OptionGroup var options: LedgerOptions

        @Option(parsing: .unconditional, help: "Return events with a greater id (0: from the start).")
        var after: Int64 = 0

        @Option(parsing: .unconditional, help: "At most this many events (1…10000).")
        var limit: Int = 1_000

        func run() throws {
            try options.withLedger { ledger in
                let page = try ledger.events(after: after, limit: limit)
                let json = JSONValue.object([("events", .array(page.events.map(\.json))), ("lastId", .integer(page.lastID))])
                let lines = page.events.map { event in
                    "\(event.id) \(Timestamps.iso8601(microseconds: event.timestampMicroseconds)) \(event.kind) "
                        + "\(event.threadID ?? "-") \(event.promptTokens)+\(event.completionTokens)"
                } + ["lastId \(page.lastID)"]
                Output.emit(json, text: lines.joined(separator: "\n"), asJSON: options.json)
            }
        }
    }
}
