import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    /// `budget set|list|show|remove`: budgets of a scope (global, org, user, agent, model) per
    /// UTC calendar window; the subcommands live in `BudgetSet.swift` … `BudgetRemove.swift`.
    struct Budget: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage scope budgets: a max in tokens and/or USD for global, org:ID, user:ID, agent:ID or model:NAME.",
            discussion: """
                Windows are UTC calendar windows (day, ISO week from Monday, month) derived from each call's
                time; --period none is one window for all time. check-and-consume (consume --enforce) and
                reserve refuse (exit 3) a call that does not fit a budget it falls under; a dollar budget
                refuses calls whose model has no price. A plain consume records and can overshoot.
                """,
            subcommands: [Set.self, List.self, Show.self, Remove.self])
    }
}

/// The SCOPE argument of the budget subcommands.
struct ScopeArgument: ParsableArguments {
    @Argument(help: "global, org:ID, user:ID, agent:ID or model:NAME.")
    var scope: String

    /// The parsed scope; a malformed one is a `ValidationError` (exit 64) naming SCOPE.
    func parsed() throws -> BudgetScope {
        do {
            return try BudgetScope(parsing: scope, field: "SCOPE")
        } catch let error as LedgerError {
            throw ValidationError("\(error)")
        }
    }

    func validate() throws {
        _ = try parsed()
    }
}

extension Output {
    /// The header of the budget table.
    static let budgetHeader = [
        "SCOPE", "PERIOD", "WINDOW (UTC)", "TOKENS SPENT/MAX", "USD SPENT/MAX", "HELD", "REMAINING", "USED",
    ]

    /// A budget table: one row per budget; a max the budget does not have reads `-`.
    static func text(_ budgets: [ScopeBudget]) -> String {
        guard !budgets.isEmpty else { return "no scope budgets" }
        return table(budgets.map(budgetRow), header: budgetHeader, rightAligned: [3, 4, 5, 6, 7]).joined(separator: "\n")
    }

    private static func budgetRow(_ budget: ScopeBudget) -> [String] {
        let usd = { (nanos: Int64) in "$" + Money.decimalString(nanodollars: nanos) }
        let start = Timestamps.iso8601(microseconds: budget.window.startMicroseconds)
        let window = budget.window.endMicroseconds.map { start + " – " + Timestamps.iso8601(microseconds: $0) } ?? "all time"
        let tokens = "\(budget.spentTokens)/" + (budget.maxTokens.map(String.init) ?? "-")
        let dollars = usd(budget.spentNanodollars) + "/" + (budget.maxNanodollars.map(usd) ?? "-")
        var held = [String]()
        if budget.heldTokens > 0 || budget.heldNanodollars == 0 { held.append("\(budget.heldTokens) tok") }
        if budget.heldNanodollars > 0 { held.append(usd(budget.heldNanodollars)) }
        let remaining = [budget.remainingTokens.map { "\($0) tok" }, budget.remainingNanodollars.map(usd)]
            .compactMap { $0 }.joined(separator: ", ")
        let percent = "\(budget.percentUsed.roundedToOneDecimal)%" + (budget.isExhausted ? " EXHAUSTED" : "")
        return [
            budget.scope.description, budget.period.rawValue, window, tokens, dollars, held.joined(separator: ", "),
            remaining, percent,
        ]
    }
}
