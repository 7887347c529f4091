import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check that a thread can spend an estimate (exit 3 when it cannot).")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The thread id.")
        var thread: String

        @Option(parsing: .unconditional, help: "Tokens the next call is expected to spend.")
        var estimate: Int64 = 0

        func run() throws {
            try options.withExistingAnyLedger { ledger in
                let budget = try ledger.checkBudget(thread, estimatedTokens: estimate)
                Output.emit(budget.json, text: "ok: " + Output.text(budget), asJSON: options.json)
            }
        }
    }
}
