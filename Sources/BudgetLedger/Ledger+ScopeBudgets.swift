internal import LedgerSQLite

extension Ledger {
    /// Sets (or changes) the budget of `scope`: a max in tokens, in nano-dollars, or both, per
    /// `period` window (UTC calendar), recorded as a budget event.
    ///
    /// The window's spend so far counts: a monthly budget set on the 15th starts with the
    /// month's spend under the scope. Changing the figures re-arms the thresholds the window no
    /// longer reaches.
    ///
    /// - Throws: `LedgerError.invalidInput` when neither max is given or one is out of range.
    @discardableResult
    public func setBudget(
        _ scope: BudgetScope, period: BudgetPeriod = .none, maxTokens: Int64? = nil, maxNanodollars: Int64? = nil
    ) throws -> ScopeBudget {
        try ScopeBudgetRules.validate(maxTokens: maxTokens, maxNanodollars: maxNanodollars)
        return try write { [self] connection in
            let now = configuration.clock()
            try connection.execute(
                ScopeBudgetSQL.insertBudget, [now, scope.description, period.rawValue, maxTokens, maxNanodollars])
            guard let budget = try ScopeBudgetSQL.budgets(scopes: [scope.description], at: now, on: connection).first
            else { preconditionFailure("a budget event left scope \(scope) without a budget") }
            return budget
        }
    }

    /// Removes the budget of `scope` (a budget_remove event); its history stays in the events.
    ///
    /// - Throws: `LedgerError.conflict` when the scope has no budget (nothing is written).
    public func removeBudget(_ scope: BudgetScope) throws {
        try write { [self] connection in
            let now = configuration.clock()
            guard try ScopeBudgetSQL.budgets(scopes: [scope.description], at: now, countingHolds: false, on: connection)
                .first != nil
            else {
                throw LedgerError.conflict("scope \(scope) has no budget")
            }
            try connection.execute(ScopeBudgetSQL.insertRemove, [now, scope.description])
        }
    }

    /// Every scope budget with its current window (at the ledger's clock), by scope.
    public func budgets() throws -> [ScopeBudget] {
        try read { [self] connection in
            try ScopeBudgetSQL.allBudgets(at: configuration.clock(), on: connection)
        }
    }

    /// The budget of `scope` with its current window; nil when it has none.
    public func budget(scope: BudgetScope) throws -> ScopeBudget? {
        try read { [self] connection in
            try ScopeBudgetSQL.budgets(scopes: [scope.description], at: configuration.clock(), on: connection).first
        }
    }

    /// Refuses the call when it does not fit a scope budget it falls under (`tokens` and `cost`
    /// more, in the window holding `now`), inside the caller's write transaction.
    ///
    /// A dollar budget refuses a call whose cost is unknown: an unpriced model, or none named.
    func checkScopes(
        _ applicable: [ScopeBudget], threadID: String, tokens: Int64, cost: Int64?, model: String?
    ) throws {
        try ScopeBudgetRules.check(applicable, threadID: threadID, tokens: tokens, cost: cost, model: model)
    }

    /// Records a scope_threshold event for every threshold a scope window reaches after the
    /// consume `eventID` (which spent `tokens` and `cost`) that has not fired in that window.
    func recordScopeCrossings(
        _ applicable: [ScopeBudget], tokens: Int64, cost: Int64?, causedBy eventID: Int64, at now: Int64,
        on connection: Connection
    ) throws -> [ScopeThresholdCrossing] {
        var crossings: [ScopeThresholdCrossing] = []
        for budget in applicable {
            // The fired thresholds are read only when one is reached (most consumes reach none).
            let reached = ScopeBudgetRules.crossings(of: budget, tokens: tokens, cost: cost, thresholds: thresholds, fired: [])
            if reached.isEmpty { continue }
            let fired = try ScopeBudgetSQL.firedThresholds(budget.scope, window: budget.window, on: connection)
            for crossing in reached where !fired.contains(crossing.thresholdPercent) {
                try connection.execute(
                    ScopeBudgetSQL.insertScopeThreshold,
                    [
                        now, budget.scope.description, budget.window.startMicroseconds, crossing.thresholdPercent,
                        crossing.severity, eventID, crossing.tokensUsed, crossing.nanodollarsUsed, budget.maxTokens,
                        budget.maxNanodollars,
                    ])
                crossings.append(crossing)
            }
        }
        return crossings
    }
}

/// The statements of scope budgets (migration 0010), and the decoding of their rows.
enum ScopeBudgetSQL {
    static let insertBudget = """
        INSERT INTO events (timestamp_us, kind, scope, period, max_tokens, max_cost_nanos)
        VALUES (?, 'budget', ?, ?, ?, ?)
        """

    static let insertRemove = "INSERT INTO events (timestamp_us, kind, scope) VALUES (?, 'budget_remove', ?)"

    static let insertScopeThreshold = """
        INSERT INTO events (timestamp_us, kind, scope, window_start_us, threshold_percent, severity, caused_by,
                            tokens_used, cost_used_nanos, max_tokens, max_cost_nanos)
        VALUES (?, 'scope_threshold', ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """

    static let budgetColumns = """
        scope, period, max_tokens, max_cost_nanos, set_event_id, window_start_us, spent_tokens, spent_cost_nanos,
        request_count, unpriced_requests
        """

    /// The budgets of up to five scopes (a call's candidates), each a primary-key lookup; unused
    /// parameters are NULL.
    static let selectBudgets = """
        SELECT \(budgetColumns) FROM scope_budgets WHERE scope = ?1
        UNION ALL SELECT \(budgetColumns) FROM scope_budgets WHERE scope = ?2
        UNION ALL SELECT \(budgetColumns) FROM scope_budgets WHERE scope = ?3
        UNION ALL SELECT \(budgetColumns) FROM scope_budgets WHERE scope = ?4
        UNION ALL SELECT \(budgetColumns) FROM scope_budgets WHERE scope = ?5
        """

    static let selectAllBudgets = "SELECT \(budgetColumns) FROM scope_budgets ORDER BY scope"

    /// The live holds at `?1` under scope `?2`: their tokens and most cost.
    static let selectHeld = """
        SELECT coalesce(sum(tokens), 0), coalesce(sum(cost_nanos), 0) FROM holds
        WHERE expires_at_us > ?1
          AND (?2 = 'global' OR ?2 = 'org:' || org_id OR ?2 = 'user:' || user_id OR ?2 = 'agent:' || agent_id
               OR ?2 = 'model:' || model)
        """

    /// Every live hold at `?1` with its scopes' columns (for listing many budgets at once).
    static let selectLiveHolds = """
        SELECT tokens, coalesce(cost_nanos, 0), org_id, user_id, agent_id, model FROM holds WHERE expires_at_us > ?1
        """

    static let selectFired = """
        SELECT threshold_percent FROM scope_thresholds WHERE scope = ? AND window_start_us = ?
        """

    /// The budgets of `scopes` (at most five) with their windows at `now` and, when
    /// `countingHolds`, the live holds under them (one more query per budget; a plain consume,
    /// which only judges thresholds, and an existence check leave them at 0).
    static func budgets(
        scopes: [String], at now: Int64, countingHolds: Bool = true, on connection: Connection
    ) throws -> [ScopeBudget] {
        precondition(scopes.count <= 5, "a call falls under at most five scopes")
        let parameters: [any SQLiteBindable] = (0..<5).map { $0 < scopes.count ? scopes[$0] : String?.none }
        let rows = try connection.cachedStatement(selectBudgets).fetchAll(parameters) {
            try StoredScopeBudget(row: $0)
        }
        return try rows.map { stored in
            let held = countingHolds
                ? try connection.cachedStatement(selectHeld).fetchOne([now, stored.scope]) {
                    (tokens: try $0[0] as Int64, cost: try $0[1] as Int64)
                }
                : nil
            return try stored.budget(at: now, heldTokens: held?.tokens ?? 0, heldNanodollars: held?.cost ?? 0)
        }
    }

    /// Every budget at `now`; the live holds are read once and summed per scope.
    static func allBudgets(at now: Int64, on connection: Connection) throws -> [ScopeBudget] {
        var held: [String: (tokens: Int64, cost: Int64)] = [:]
        var holds = try connection.cachedStatement(selectLiveHolds).rows([now])
        while let row = try holds.next() {
            let tokens: Int64 = try row[0]
            let cost: Int64 = try row[1]
            let optional: [String?] = [try row[2], try row[3], try row[4], try row[5]]
            let scopes = ["global"] + zip(["org:", "user:", "agent:", "model:"], optional).compactMap { prefix, id in
                id.map { prefix + $0 }
            }
            for scope in scopes {
                let sum = held[scope] ?? (0, 0)
                held[scope] = (sum.tokens.saturatingAdd(tokens), sum.cost.saturatingAdd(cost))
            }
        }
        // Four windows at most, computed once (a month's takes a calendar conversion).
        var windows: [String: BudgetWindow] = [:]
        for period in BudgetPeriod.allCases { windows[period.rawValue] = period.window(containing: now) }
        return try connection.cachedStatement(selectAllBudgets).fetchAll([]) { row in
            let stored = try StoredScopeBudget(row: row)
            let sums = held.isEmpty ? nil : held[stored.scope]
            return try stored.budget(
                at: now, heldTokens: sums?.tokens ?? 0, heldNanodollars: sums?.cost ?? 0, window: windows[stored.period])
        }
    }

    static func firedThresholds(_ scope: BudgetScope, window: BudgetWindow, on connection: Connection) throws -> Set<Int> {
        Set(try connection.cachedStatement(selectFired).fetchAll([scope.description, window.startMicroseconds]) {
            try $0[0] as Int
        })
    }
}

extension StoredScopeBudget {
    /// Decodes the columns of `ScopeBudgetSQL.budgetColumns`.
    init(row: Row) throws {
        self.init(
            scope: try row[0], period: try row[1], maxTokens: try row[2], maxNanodollars: try row[3],
            setEventID: try row[4], windowStart: try row[5], spentTokens: try row[6], spentNanodollars: try row[7],
            requestCount: try row[8], unpricedRequests: try row[9])
    }
}
