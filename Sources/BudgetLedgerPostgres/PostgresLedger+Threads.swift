import BudgetLedger
import PostgresNIO

extension PostgresLedger {
    /// The default max for threads opened from now on, as stored in the database.
    public var maxTokensPerThread: Int64 {
        get async throws {
            try await read { [logger] connection in
                try await connection.fetchOne(
                    "SELECT default_max_tokens FROM ledger_settings WHERE id = 1", as: Int64.self, logger: logger) ?? 0
            }
        }
    }

    /// Sets the default max for threads opened from now on; open threads keep theirs.
    ///
    /// - Throws: `LedgerError.invalidInput` for a max outside `0...LedgerLimits.maxTokensMax`.
    public func configure(maxTokensPerThread: Int64) async throws {
        try Validate.maxTokens(maxTokensPerThread, field: "maxTokensPerThread")
        try await write { [self] connection in
            try await connection.execute(
                "INSERT INTO events (timestamp_us, kind, max_tokens) VALUES (\(configuration.clock()), 'configure', \(maxTokensPerThread))",
                logger: logger)
        }
    }

    /// The thread's budget, opening the thread at the default max when it is not open.
    public func budget(for threadID: String) async throws -> ThreadBudget {
        try Validate.identifier(threadID, field: "threadId")
        if let budget = try await usage(threadID) {
            return budget
        }
        return try await write { [self] connection in
            let now = configuration.clock()
            try await lockThread(threadID, on: connection)
            let found = try await fetchThread(threadID, at: now, on: connection)
            if let budget = found.budget { return budget }
            return try await openThread(threadID, maxTokens: found.defaultMaxTokens, at: now, on: connection)
        }
    }

    /// Checks that `estimatedTokens` more fit in the thread's budget (opening it when new).
    ///
    /// - Throws: `BudgetExhaustedError` when they do not.
    @discardableResult
    public func checkBudget(_ threadID: String, estimatedTokens: Int64 = 0) async throws -> ThreadBudget {
        try Validate.identifier(threadID, field: "threadId")
        try Validate.count(estimatedTokens, field: "estimatedTokens", max: LedgerLimits.tokensPerRequestMax)
        let budget = try await budget(for: threadID)
        if budget.isExhausted || !budget.canConsume(estimatedTokens) {
            throw BudgetExhaustedError(
                threadID: threadID, used: budget.totalTokens, maxTokens: budget.maxTokens,
                requestedTokens: estimatedTokens, heldTokens: budget.heldTokens)
        }
        return budget
    }

    /// The thread's budget, or nil when it is not open. Never opens one.
    public func usage(_ threadID: String) async throws -> ThreadBudget? {
        try Validate.identifier(threadID, field: "threadId")
        let now = configuration.clock()
        return try await read { [logger] connection in
            let query = PostgresQuery.sql(PostgresSQL.selectThread) {
                $0.append(threadID)
                $0.append(now)
            }
            guard
                let row = try await connection.fetchOne(
                    query, as: (Int64, Int64, Int64, Int64, String?, Int64).self, logger: logger)
            else { return nil }
            return ThreadBudget(
                threadID: threadID, maxTokens: row.0, promptTokens: row.1, completionTokens: row.2, requestCount: row.3,
                triggeredThresholds: PostgresThreadRow.parseThresholds(row.4), heldTokens: row.5)
        }
    }

    /// Whether the thread is open. Never opens one.
    public func hasBudget(_ threadID: String) async throws -> Bool {
        try await usage(threadID) != nil
    }

    /// Starts a new window for the thread: spent reads zero, the max stays, thresholds re-arm.
    ///
    /// - Returns: the fresh budget, or nil when the thread is not open.
    @discardableResult
    public func resetThread(_ threadID: String) async throws -> ThreadBudget? {
        try Validate.identifier(threadID, field: "threadId")
        return try await write { [self] connection in
            let now = configuration.clock()
            try await lockThread(threadID, on: connection)
            guard let budget = try await fetchThread(threadID, at: now, on: connection).budget else { return nil }
            try await connection.execute(
                "INSERT INTO events (timestamp_us, kind, thread_id) VALUES (\(now), 'reset', \(threadID))", logger: logger)
            return ThreadBudget(threadID: threadID, maxTokens: budget.maxTokens, heldTokens: budget.heldTokens)
        }
    }

    /// Ends the thread's life and returns its final budget (nil when it is not open).
    @discardableResult
    public func cleanupThread(_ threadID: String) async throws -> ThreadBudget? {
        try Validate.identifier(threadID, field: "threadId")
        return try await write { [self] connection in
            let now = configuration.clock()
            try await lockThread(threadID, on: connection)
            guard let budget = try await fetchThread(threadID, at: now, on: connection).budget else { return nil }
            try await connection.execute(
                "INSERT INTO events (timestamp_us, kind, thread_id) VALUES (\(now), 'cleanup', \(threadID))", logger: logger)
            return budget
        }
    }

    /// Sets one thread's max, opening the thread when it is not open (`Ledger.setLimit`).
    ///
    /// - Throws: `LedgerError.invalidInput` for a max outside `0...LedgerLimits.maxTokensMax` or a bad thread id.
    @discardableResult
    public func setLimit(_ threadID: String, maxTokens: Int64) async throws -> ThreadBudget {
        try Validate.identifier(threadID, field: "threadId")
        try Validate.maxTokens(maxTokens, field: "maxTokens")
        return try await write { [self] connection in
            let now = configuration.clock()
            try await lockThread(threadID, on: connection)
            try await connection.execute(
                "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (\(now), 'limit', \(threadID), \(maxTokens))",
                logger: logger)
            guard let budget = try await fetchThread(threadID, at: now, on: connection).budget else {
                preconditionFailure("a limit event left thread \(threadID) closed")
            }
            return budget
        }
    }

    /// Totals of the usage window (`Ledger.usageOverview(_:).totals`), from `usage_agent_model_live`.
    public func usageTotals(_ scope: UsageScope = .currentWindow) async throws -> UsageTotals {
        let allTime = scope == .allTime
        return try await read { [logger] connection in
            let query = PostgresQuery.sql("SELECT \(Self.totalsColumns) FROM usage_agent_model_live WHERE \(Self.scopeFilter)") {
                $0.append(allTime)
            }
            return try await connection.fetchOne(query, as: TotalsRow.self, logger: logger).map(Self.totals) ?? UsageTotals()
        }
    }

    /// Starts a new usage window (`Ledger.resetUsageWindow`). Deletes nothing. Waits for the
    /// thread writes in flight and holds new ones until it commits (`lockThread`), so every
    /// consume is in the window its id says.
    public func resetUsageWindow() async throws {
        try await write { [self] connection in
            try await connection.execute("SELECT pg_advisory_xact_lock(\(PostgresSQL.usageWindowLockKey))", logger: logger)
            try await connection.execute(
                "INSERT INTO events (timestamp_us, kind) VALUES (\(configuration.clock()), 'usage_reset')", logger: logger)
        }
    }
}
