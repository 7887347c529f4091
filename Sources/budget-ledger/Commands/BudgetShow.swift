import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand.Budget {
    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one scope's budget and its current window (exit 4 when the scope has none).")

        @OptionGroup var options: LedgerOptions

        @OptionGroup var scope: ScopeArgument

        func run() throws {
            let scope = try scope.parsed()
            try options.withExistingAnyLedger { ledger in
                guard let budget = try ledger.budget(scope: scope) else {
                    throw ScopeBudgetNotFoundError(scope: scope)
                }
                Output.emit(budget.json, text: Output.text([budget]), asJSON: options.json)
            }
        }
    }
}

/// `budget show` of a scope without a budget: exit 4, as a thread that is not open.
struct ScopeBudgetNotFoundError: Error, CustomStringConvertible {
    let scope: BudgetScope

    var description: String { "scope \(scope) has no budget" }
}
