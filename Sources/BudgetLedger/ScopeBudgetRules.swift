/// The rules of scope budgets that do not depend on a store: what a budget may be set to, when a
/// call does not fit, which thresholds a consume makes a window cross. `package`, so that the
/// SQLite `Ledger` and the PostgreSQL store decide alike from the same code; only the SQL and
/// the transactions around these calls differ.
package enum ScopeBudgetRules {
    /// Checks a budget's figures as `setBudget` takes them.
    ///
    /// - Throws: `LedgerError.invalidInput` naming `maxTokens` when neither max is given or the
    ///   token max is out of range, `maxUsd` when the dollar max is.
    package static func validate(maxTokens: Int64?, maxNanodollars: Int64?) throws {
        guard maxTokens != nil || maxNanodollars != nil else {
            throw LedgerError.invalidInput(field: "maxTokens", reason: "a budget needs maxTokens, maxUsd or both")
        }
        if let maxTokens { try Validate.maxTokens(maxTokens, field: "maxTokens") }
        if let maxNanodollars, !(0...LedgerLimits.budgetNanodollarsMax).contains(maxNanodollars) {
            throw LedgerError.invalidInput(
                field: "maxUsd",
                reason: "must be 0…\(Money.decimalString(nanodollars: LedgerLimits.budgetNanodollarsMax)) USD "
                    + "(got \(Money.decimalString(nanodollars: maxNanodollars)))")
        }
    }

    /// Refuses a call that does not fit one of the `applicable` budgets (`tokens` and `cost`
    /// more, the budgets read with their holds in the caller's transaction), in their order.
    ///
    /// A dollar budget refuses a call whose cost is unknown: an unpriced model, or none named.
    ///
    /// - Throws: `BudgetExhaustedError` naming the first scope that refuses.
    package static func check(
        _ applicable: [ScopeBudget], threadID: String, tokens: Int64, cost: Int64?, model: String?
    ) throws {
        // As a thread's: refused when spent + held already reaches the max, or the call would pass it.
        func refuses(used: Int64, held: Int64, requested: Int64, max: Int64) -> Bool {
            used.saturatingAdd(held) >= max || used.saturatingAdd(held).saturatingAdd(requested) > max
        }
        for budget in applicable {
            if let maxTokens = budget.maxTokens,
                refuses(used: budget.spentTokens, held: budget.heldTokens, requested: tokens, max: maxTokens)
            {
                throw BudgetExhaustedError(
                    threadID: threadID, used: budget.spentTokens, maxTokens: maxTokens, requestedTokens: tokens,
                    heldTokens: budget.heldTokens, scope: budget.scope, window: budget.window)
            }
            guard let maxNanodollars = budget.maxNanodollars else { continue }
            if cost == nil
                || refuses(used: budget.spentNanodollars, held: budget.heldNanodollars, requested: cost ?? 0, max: maxNanodollars)
            {
                throw BudgetExhaustedError(
                    threadID: threadID, used: budget.spentNanodollars, maxTokens: maxNanodollars, requestedTokens: cost ?? 0,
                    heldTokens: budget.heldNanodollars, scope: budget.scope, window: budget.window, unit: .nanodollars,
                    unpricedModel: cost == nil ? (model ?? "(none named)") : nil)
            }
        }
    }

    /// The thresholds `budget`'s window reaches once a consume of `tokens` and `cost` is added,
    /// leaving out those `fired` already holds for the window (each fires once per window).
    package static func crossings(
        of budget: ScopeBudget, tokens: Int64, cost: Int64?, thresholds: [BudgetThreshold], fired: Set<Int>
    ) -> [ScopeThresholdCrossing] {
        let spentTokens = budget.spentTokens.saturatingAdd(tokens)
        let spentNanodollars = budget.spentNanodollars.saturatingAdd(cost ?? 0)
        return thresholds.filter { threshold in
            !fired.contains(threshold.percent)
                && reaches(
                    threshold.percent, spentTokens: spentTokens, maxTokens: budget.maxTokens,
                    spentNanodollars: spentNanodollars, maxNanodollars: budget.maxNanodollars)
        }.map { threshold in
            ScopeThresholdCrossing(
                scope: budget.scope, window: budget.window, thresholdPercent: threshold.percent,
                severity: threshold.severity, tokensUsed: spentTokens, nanodollarsUsed: spentNanodollars,
                maxTokens: budget.maxTokens, maxNanodollars: budget.maxNanodollars)
        }
    }

    /// Whether a window's spend reaches `percent` in either unit (a max of 0 reaches nothing):
    /// the rule of 0010's re-arming statement, in 128 bits.
    package static func reaches(
        _ percent: Int, spentTokens: Int64, maxTokens: Int64?, spentNanodollars: Int64, maxNanodollars: Int64?
    ) -> Bool {
        (maxTokens.map { BudgetThreshold.isReached(percent: percent, used: spentTokens, maxTokens: $0) } ?? false)
            || (maxNanodollars.map { BudgetThreshold.isReached(percent: percent, used: spentNanodollars, maxTokens: $0) }
                ?? false)
    }
}

/// A row of `scope_budgets` as either store keeps it, before its window is judged at a time.
package struct StoredScopeBudget: Sendable, Equatable {
    package let scope: String
    package let period: String
    package let maxTokens: Int64?
    package let maxNanodollars: Int64?
    package let setEventID: Int64
    package let windowStart: Int64
    package let spentTokens: Int64
    package let spentNanodollars: Int64
    package let requestCount: Int64
    package let unpricedRequests: Int64

    package init(
        scope: String, period: String, maxTokens: Int64?, maxNanodollars: Int64?, setEventID: Int64, windowStart: Int64,
        spentTokens: Int64, spentNanodollars: Int64, requestCount: Int64, unpricedRequests: Int64
    ) {
        self.scope = scope
        self.period = period
        self.maxTokens = maxTokens
        self.maxNanodollars = maxNanodollars
        self.setEventID = setEventID
        self.windowStart = windowStart
        self.spentTokens = spentTokens
        self.spentNanodollars = spentNanodollars
        self.requestCount = requestCount
        self.unpricedRequests = unpricedRequests
    }

    /// The budget in the window holding `now`: a stored window that has passed spent nothing
    /// of this one.
    ///
    /// - Throws: `LedgerError.conflict` for a period or scope the schema should have refused.
    package func budget(
        at now: Int64, heldTokens: Int64, heldNanodollars: Int64, window known: BudgetWindow? = nil
    ) throws -> ScopeBudget {
        guard let period = BudgetPeriod(rawValue: period) else {
            throw LedgerError.conflict("scope_budgets holds an unknown period \(period.debugDescription)")
        }
        let window = known ?? period.window(containing: now)
        let current = windowStart >= window.startMicroseconds
        return ScopeBudget(
            scope: try BudgetScope(stored: scope), period: period, maxTokens: maxTokens,
            maxNanodollars: maxNanodollars, window: window, spentTokens: current ? spentTokens : 0,
            spentNanodollars: current ? spentNanodollars : 0, requestCount: current ? requestCount : 0,
            unpricedRequests: current ? unpricedRequests : 0, heldTokens: heldTokens,
            heldNanodollars: heldNanodollars, setEventID: setEventID)
    }
}
