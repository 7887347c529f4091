import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Holds: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List live holds, of one thread or all.")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "Only this thread's holds.")
        var thread: String?

        func run() throws {
            try options.withExistingLedger { ledger in
                let holds = try ledger.holds(thread)
                let held = holds.reduce(Int64(0)) { $0 + $1.tokens }
                let json = JSONValue.object([
                    ("holds", .array(holds.map(\.json))),
                    ("count", .integer(Int64(holds.count))),
                    ("heldTokens", .integer(held)),
                ])
                let lines = holds.map {
                    "\($0.id) \($0.threadID) \(Output.count($0.tokens, "token")) until \(Timestamps.iso8601(microseconds: $0.expiresAtMicroseconds))"
                } + ["\(Output.count(holds.count, "hold")), \(Output.count(held, "token")) held"]
                Output.emit(json, text: lines.joined(separator: "\n"), asJSON: options.json)
            }
        }
    }
}
