import BudgetLedger
import PostgresNIO

extension PostgresLedger {
    /// Sets (or changes) the budget of `scope` (`Ledger.setBudget`: the same rules, figures and
    /// errors): a max in tokens, in nano-dollars, or both, per `period` window (UTC calendar).
    ///
    /// The window's spend so far counts. Takes the usage-window lock exclusive first, so that no
    /// thread write is in flight while the trigger sums that spend from the rollups.
    ///
    /// - Throws: `LedgerError.invalidInput` when neither max is given or one is out of range.
    @discardableResult
    public func setBudget(
        _ scope: BudgetScope, period: BudgetPeriod = .none, maxTokens: Int64? = nil, maxNanodollars: Int64? = nil
    ) async throws -> ScopeBudget {
        try ScopeBudgetRules.validate(maxTokens: maxTokens, maxNanodollars: maxNanodollars)
        return try await write { [self] connection in
            let now = configuration.clock()
            try await connection.execute("SELECT pg_advisory_xact_lock(\(PostgresSQL.usageWindowLockKey))", logger: logger)
            try await connection.execute(
                """
                INSERT INTO events (timestamp_us, kind, scope, period, max_tokens, max_cost_nanos)
                VALUES (\(now), 'budget', \(scope.description), \(period.rawValue), \(maxTokens), \(maxNanodollars))
                """, logger: logger)
            guard let budget = try await scopeBudgets([scope.description], at: now, on: connection).first else {
                preconditionFailure("a budget event left scope \(scope) without a budget")
            }
            return budget
        }
    }

    /// Removes the budget of `scope` (a budget_remove event; `Ledger.removeBudget`).
    ///
    /// - Throws: `LedgerError.conflict` when the scope has no budget (nothing is written).
    public func removeBudget(_ scope: BudgetScope) async throws {
        try await write { [self] connection in
            let now = configuration.clock()
            try await connection.execute("SELECT pg_advisory_xact_lock(\(PostgresSQL.usageWindowLockKey))", logger: logger)
            let found = try await connection.fetchOne(
                "SELECT scope FROM scope_budgets WHERE scope = \(scope.description) FOR UPDATE", as: String.self,
                logger: logger)
            guard found != nil else { throw LedgerError.conflict("scope \(scope) has no budget") }
            try await connection.execute(
                "INSERT INTO events (timestamp_us, kind, scope) VALUES (\(now), 'budget_remove', \(scope.description))",
                logger: logger)
        }
    }

    /// Every scope budget with its current window (at the ledger's clock), by scope in byte order.
    public func budgets() async throws -> [ScopeBudget] {
        try await read { [self] connection in
            try await scopeBudgets(nil, at: configuration.clock(), on: connection)
        }
    }

    /// The budget of `scope` with its current window; nil when it has none.
    public func budget(scope: BudgetScope) async throws -> ScopeBudget? {
        try await read { [self] connection in
            try await scopeBudgets([scope.description], at: configuration.clock(), on: connection).first
        }
    }

    /// The budgets of `scopes` (every budget when nil) at `now`, with the live holds under each.
    func scopeBudgets(_ scopes: [String]?, at now: Int64, on connection: PostgresConnection) async throws -> [ScopeBudget] {
        let query = PostgresQuery.sql(PostgresSQL.selectScopeBudgetsWithHolds) {
            $0.append(now)
            $0.append(scopes)
        }
        var budgets: [ScopeBudget] = []
        let rows = try await connection.query(query, logger: logger)
        for try await row in rows.decode(PostgresSQL.ScopeBudgetColumns.self) {
            budgets.append(try PostgresSQL.storedScopeBudget(row).budget(at: now, heldTokens: row.10, heldNanodollars: row.11))
        }
        return budgets
    }

    /// The budgets of the scopes a call falls under (`candidates`, in `BudgetScope.candidates`
    /// order), locked for the rest of the transaction in that order, after the thread's lock:
    /// the one lock order of scope rows (the consume trigger of migration 0007 keeps it too), so
    /// writers never deadlock, and no two can both see room for a scope's last tokens. With
    /// `countingHolds`, the live holds under each are read after the locks (a hold under a scope
    /// with a budget is made under its lock, so every one committed before is seen).
    func lockScopeBudgets(
        _ candidates: [String], at now: Int64, countingHolds: Bool, on connection: PostgresConnection
    ) async throws -> [ScopeBudget] {
        let query = PostgresQuery.sql(PostgresSQL.selectScopeBudgetsForUpdate) { $0.append(candidates) }
        var stored: [StoredScopeBudget] = []
        let rows = try await connection.query(query, logger: logger)
        for try await row in rows.decode(PostgresSQL.StoredScopeBudgetColumns.self) {
            stored.append(PostgresSQL.storedScopeBudget(row))
        }
        guard !stored.isEmpty else { return [] }
        var held: [String: (tokens: Int64, cost: Int64)] = [:]
        if countingHolds {
            let heldQuery = PostgresQuery.sql(PostgresSQL.selectHeldUnderScopes) {
                $0.append(now)
                $0.append(stored.map(\.scope))
            }
            for try await (scope, tokens, cost) in try await connection.query(heldQuery, logger: logger)
                .decode((String, Int64, Int64).self)
            {
                held[scope] = (tokens, cost)
            }
        }
        return try stored.map { budget in
            try budget.budget(
                at: now, heldTokens: held[budget.scope]?.tokens ?? 0, heldNanodollars: held[budget.scope]?.cost ?? 0)
        }
    }

    /// Records a scope_threshold event for every threshold a scope window reaches after the
    /// consume `eventID` that has not fired in that window (`Ledger.recordScopeCrossings`); the
    /// scope rows are locked by the caller.
    func recordScopeCrossings(
        _ applicable: [ScopeBudget], tokens: Int64, cost: Int64?, causedBy eventID: Int64, at now: Int64,
        on connection: PostgresConnection
    ) async throws -> [ScopeThresholdCrossing] {
        var crossings: [ScopeThresholdCrossing] = []
        for budget in applicable {
            // The fired thresholds are read only when one is reached (most consumes reach none).
            let reached = ScopeBudgetRules.crossings(of: budget, tokens: tokens, cost: cost, thresholds: thresholds, fired: [])
            if reached.isEmpty { continue }
            var fired: Set<Int> = []
            let rows = try await connection.query(
                """
                SELECT threshold_percent FROM scope_thresholds
                WHERE scope = \(budget.scope.description) AND window_start_us = \(budget.window.startMicroseconds)
                """, logger: logger)
            for try await percent in rows.decode(Int32.self) { fired.insert(Int(percent)) }
            for crossing in reached where !fired.contains(crossing.thresholdPercent) {
                try await connection.execute(
                    """
                    INSERT INTO events (timestamp_us, kind, scope, window_start_us, threshold_percent, severity, caused_by,
                                        tokens_used, cost_used_nanos, max_tokens, max_cost_nanos)
                    VALUES (\(now), 'scope_threshold', \(budget.scope.description), \(budget.window.startMicroseconds),
                            \(crossing.thresholdPercent), \(crossing.severity), \(eventID), \(crossing.tokensUsed),
                            \(crossing.nanodollarsUsed), \(budget.maxTokens), \(budget.maxNanodollars))
                    """, logger: logger)
                crossings.append(crossing)
            }
        }
        return crossings
    }

    /// Runs `body` as a write whose refusal (a `BudgetExhaustedError`, of the thread's budget or
    /// of a scope's) is recorded as a refusal event in the same transaction, the first of its
    /// window (`Ledger.writeRecordingRefusal`), and thrown once that transaction has committed.
    ///
    /// `body` must decide a refusal before it writes anything but its thread's lock row: the
    /// transaction commits.
    func writeRecordingRefusal<Result: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        let outcome: RefusableOutcome<Result> = try await write { [self] connection in
            do {
                return .done(try await body(connection))
            } catch let refusal as BudgetExhaustedError {
                try await recordRefusal(refusal, at: configuration.clock(), on: connection)
                return .refused(refusal)
            }
        }
        switch outcome {
        case .done(let value): return value
        case .refused(let refusal): throw refusal
        }
    }

    /// Records `refusal` unless its window already has one (`Ledger.recordRefusal`): the
    /// thread's window (`thread_state.window_event_id`, 0 while the thread is not open, as
    /// migration 0009 keys it) when the thread's budget refused, else the scope's window, whose
    /// event keeps both of the budget's units, as scope_threshold does.
    private func recordRefusal(_ refusal: BudgetExhaustedError, at now: Int64, on connection: PostgresConnection)
        async throws
    {
        guard let scope = refusal.scope, let window = refusal.window else {
            try await connection.execute(
                """
                INSERT INTO events (timestamp_us, kind, thread_id, tokens_used, max_tokens)
                SELECT \(now), 'refusal', \(refusal.threadID), \(refusal.used), \(refusal.maxTokens)
                WHERE NOT EXISTS (SELECT 1 FROM thread_refusals AS r
                                  WHERE r.thread_id = \(refusal.threadID)
                                    AND r.window_event_id
                                        = coalesce((SELECT s.window_event_id FROM thread_state AS s
                                                    WHERE s.thread_id = \(refusal.threadID)), 0))
                """, logger: logger)
            return
        }
        let budget = try await scopeBudgets([scope.description], at: now, on: connection).first
        let tokensUsed = budget?.spentTokens ?? (refusal.unit == .tokens ? refusal.used : 0)
        let costUsed = budget?.spentNanodollars ?? (refusal.unit == .nanodollars ? refusal.used : nil)
        let maxTokens = budget?.maxTokens ?? (refusal.unit == .tokens ? refusal.maxTokens : nil)
        let maxCost = budget?.maxNanodollars ?? (refusal.unit == .nanodollars ? refusal.maxTokens : nil)
        try await connection.execute(
            """
            INSERT INTO events (timestamp_us, kind, thread_id, scope, window_start_us, tokens_used, cost_used_nanos,
                                max_tokens, max_cost_nanos)
            SELECT \(now), 'refusal', \(refusal.threadID), \(scope.description), \(window.startMicroseconds),
                   \(tokensUsed), \(costUsed), \(maxTokens), \(maxCost)
            WHERE NOT EXISTS (SELECT 1 FROM scope_refusals
                              WHERE scope = \(scope.description) AND window_start_us = \(window.startMicroseconds))
            """, logger: logger)
    }
}

/// What a write that a budget may refuse hands back from its transaction: the refusal
/// must commit (its refusal event), so it cannot leave the body as a thrown error, which rolls back.
private enum RefusableOutcome<Value: Sendable>: Sendable {
    case done(Value)
    case refused(BudgetExhaustedError)
}
