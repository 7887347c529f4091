import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Reset: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a new budget window: spent reads zero, the max stays, thresholds re-arm.")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The thread id.")
        var thread: String

        func run() throws {
            try options.withAnyLedger { ledger in
                guard let budget = try ledger.resetThread(thread) else {
                    throw Output.notFound(thread, json: options.json)
                }
                Output.emit(budget.json, text: "reset: " + Output.text(budget), asJSON: options.json)
            }
        }
    }
}
