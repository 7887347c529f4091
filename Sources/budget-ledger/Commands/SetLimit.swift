import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct SetLimit: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-limit", abstract: "Set one thread's max (creating the thread when needed).")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The thread id.")
        var thread: String

        @Argument(help: "The new max, in tokens (0 blocks the thread).")
        var maxTokens: Int64

        func run() throws {
            try options.withAnyLedger { ledger in
                let budget = try ledger.setLimit(thread, maxTokens: maxTokens)
                Output.emit(budget.json, text: "limit set: " + Output.text(budget), asJSON: options.json)
            }
        }
    }
}
