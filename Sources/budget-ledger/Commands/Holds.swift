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
            try options.withExistingAnyLedger { ledger in
                let holds = try ledger.holds(thread)
                let held = HoldList.heldTokens(holds)
                let lines = holds.map {
                    "\($0.id) \($0.threadID) \(Output.count($0.tokens, "token")) until \(Timestamps.iso8601(microseconds: $0.expiresAtMicroseconds))"
                } + ["\(Output.count(holds.count, "hold")), \(Output.count(held, "token")) held"]
                Output.emit(HoldList.json(holds), text: lines.joined(separator: "\n"), asJSON: options.json)
            }
        }
    }
}
