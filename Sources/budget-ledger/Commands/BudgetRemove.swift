import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand.Budget {
    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a scope's budget (its history stays in the events; exit 5 when it has none).")

        @OptionGroup var options: LedgerOptions

        @OptionGroup var scope: ScopeArgument

        func run() throws {
            let scope = try scope.parsed()
            try options.withAnyLedger { ledger in
                try ledger.removeBudget(scope)
                Output.emit(WriteAnswer.budgetRemoved(scope), text: "budget removed: \(scope)", asJSON: options.json)
            }
        }
    }
}
