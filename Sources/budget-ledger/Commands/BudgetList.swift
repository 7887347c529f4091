import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand.Budget {
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List every scope budget with its current window (now, UTC), by scope.")

        @OptionGroup var options: LedgerOptions

        func run() throws {
            try options.withExistingAnyLedger { ledger in
                let budgets = try ledger.budgets()
                Output.emit(ScopeBudgetList.json(budgets), text: Output.text(budgets), asJSON: options.json)
            }
        }
    }
}
