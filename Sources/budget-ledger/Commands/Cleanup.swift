import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Cleanup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End a thread: print its final budget; afterwards the thread is unknown.")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The thread id.")
        var thread: String

        func run() throws {
            try options.withAnyLedger { ledger in
                guard let budget = try ledger.cleanupThread(thread) else {
                    throw Output.notFound(thread, json: options.json)
                }
                Output.emit(budget.json, text: "cleaned up: " + Output.text(budget), asJSON: options.json)
            }
        }
    }
}
