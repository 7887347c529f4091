import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand.Budget {
    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set (or change) a scope's budget: --max-tokens, --max-usd or both, per --period window.")

        @OptionGroup var options: LedgerOptions

        @OptionGroup var scope: ScopeArgument

        @Option(help: "The window: none (all time), day, week (ISO, from Monday) or month, in UTC.")
        var period: String = BudgetPeriod.none.rawValue

        @Option(name: .customLong("max-tokens"), parsing: .unconditional, help: "The most tokens per window.")
        var maxTokens: Int64?

        @Option(name: .customLong("max-usd"), help: "The most USD per window, e.g. 500 or 12.50 (at most 9 decimals).")
        var maxUSD: String?

        func validate() throws {
            _ = try parsedPeriod()
            _ = try parsedMaxUSD()
            guard maxTokens != nil || maxUSD != nil else {
                throw ValidationError("a budget needs --max-tokens, --max-usd or both")
            }
            if let maxTokens, !(0...LedgerLimits.maxTokensMax).contains(maxTokens) {
                throw ValidationError("--max-tokens must be 0…\(LedgerLimits.maxTokensMax) (got \(maxTokens))")
            }
        }

        func run() throws {
            let (scope, period, maxNanodollars) = (try scope.parsed(), try parsedPeriod(), try parsedMaxUSD())
            try options.withAnyLedger { ledger in
                let budget = try ledger.setBudget(
                    scope, period: period, maxTokens: maxTokens, maxNanodollars: maxNanodollars)
                Output.emit(budget.json, text: "budget set:\n" + Output.text([budget]), asJSON: options.json)
            }
        }

        private func parsedPeriod() throws -> BudgetPeriod {
            guard let parsed = BudgetPeriod(rawValue: period) else {
                let names = BudgetPeriod.allCases.map(\.rawValue).joined(separator: ", ")
                throw ValidationError("--period must be one of \(names) (got \(period.debugDescription))")
            }
            return parsed
        }

        private func parsedMaxUSD() throws -> Int64? {
            do {
                return try maxUSD.map {
                    try Money.nanodollars(fromUSD: $0, field: "--max-usd", maximum: LedgerLimits.budgetNanodollarsMax)
                }
            } catch let error as LedgerError {
                throw ValidationError("\(error)")
            }
        }
    }
}
