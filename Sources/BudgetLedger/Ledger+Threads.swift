internal import LedgerSQLite

/// A thread's row as the ledger reads it.
struct ThreadRow {
    /// The budget, nil when the thread is not open.
    let budget: ThreadBudget?
    /// The default max a new thread would open with.
    let defaultMaxTokens: Int64
    /// Holds of the thread whose time has passed but whose expiry is not yet recorded.
    let expiredHolds: Int64
    /// `max(id)` of `model_prices` plus `max(id)` of `price_withdrawals`: the version `PriceCache` checks.
    let pricesVersion: Int64
    /// The consume already recorded under the idempotency key asked about, if any.
    let eventIDForKey: Int64?
    /// Whether the ledger has any scope budget: when it has none, a call needs no scope read.
    let hasScopeBudgets: Bool
    /// How far the fold went and the all-time sums it folded: whether a consume can skip them.
    let foldMark: FoldMark

    /// One statement: the thread's state, its live holds at `now`, the ledger's default max,
    /// whether `idempotencyKey` was already used (so the consume path needs no second lookup), and
    /// whether any scope budget exists (so a call under none skips the scope read).
    static func fetch(
        _ threadID: String, at now: Int64, idempotencyKey: String? = nil, on connection: Connection
    ) throws -> ThreadRow {
        let statement = try connection.cachedStatement(LedgerSQL.selectThreadAndDefault)
        let row = try statement.fetchOne([threadID, now, idempotencyKey]) { row in
            let maxTokens: Int64? = try row[0]
            let budget = try maxTokens.map { maxTokens in
                ThreadBudget(
                    threadID: threadID, maxTokens: maxTokens, promptTokens: try row[1], completionTokens: try row[2],
                    requestCount: try row[3], triggeredThresholds: parseThresholds(try row[4]), heldTokens: try row[6])
            }
            return ThreadRow(
                budget: budget, defaultMaxTokens: try row[5], expiredHolds: try row[7], pricesVersion: try row[8],
                eventIDForKey: try row[9], hasScopeBudgets: try row[10], foldMark: try FoldMark(row: row, from: 11))
        }
        guard let row else {
            preconditionFailure("ledger_settings has no row: the schema is broken")
        }
        return row
    }

    /// Decodes the columns of `LedgerSQL.threadColumns`.
    static func budget(from row: Row) throws -> ThreadBudget {
        ThreadBudget(
            threadID: try row[0], maxTokens: try row[1], promptTokens: try row[2], completionTokens: try row[3],
            requestCount: try row[4], triggeredThresholds: parseThresholds(try row[5]), heldTokens: try row[6])
    }

    static func parseThresholds(_ list: String?) -> [Int] {
        guard let list else { return [] }
        return list.split(separator: ",").compactMap { Int($0) }.sorted()
    }
}

extension Ledger {
    /// The default max for threads opened from now on, as stored in the ledger (shared by every
    /// process using the file).
    public var maxTokensPerThread: Int64 {
        get throws {
            try withConnection { connection in
                try connection.cachedStatement(LedgerSQL.selectDefaultMax).fetchOne { try $0[0] as Int64 } ?? 0
            }
        }
    }

    /// Sets the default max for threads opened from now on; open threads keep theirs.
    ///
    /// - Throws: `LedgerError.invalidInput` for a max outside `0...LedgerLimits.maxTokensMax`.
    public func configure(maxTokensPerThread: Int64) throws {
        try Validate.maxTokens(maxTokensPerThread, field: "maxTokensPerThread")
        try write { [self] connection in
            try connection.execute(LedgerSQL.insertConfigure, [configuration.clock(), maxTokensPerThread])
        }
    }

    /// The thread's budget, opening the thread at the default max when it is not open.
    public func budget(for threadID: String) throws -> ThreadBudget {
        try Validate.identifier(threadID, field: "threadId")
        if let budget = try usage(threadID) {
            return budget
        }
        return try write { [self] connection in
            let now = configuration.clock()
            let found = try ThreadRow.fetch(threadID, at: now, on: connection)
            if let budget = found.budget { return budget }
            return try openThread(threadID, maxTokens: found.defaultMaxTokens, at: now, on: connection)
        }
    }

    /// Whether the thread is open. Never opens one.
    public func hasBudget(_ threadID: String) throws -> Bool {
        try usage(threadID) != nil
    }

    /// The thread's budget, or nil when it is not open. Never opens one.
    public func usage(_ threadID: String) throws -> ThreadBudget? {
        try Validate.identifier(threadID, field: "threadId")
        return try withConnection { connection in
            try connection.cachedStatement(LedgerSQL.selectThread)
                .fetchOne([threadID, configuration.clock()], ThreadRow.budget(from:))
        }
    }

    /// Every open thread's budget, hottest (highest percent used) first.
    public func allUsage() throws -> [ThreadBudget] {
        try withConnection { connection in
            try connection.cachedStatement(LedgerSQL.selectAllThreads).fetchAll([configuration.clock()], ThreadRow.budget(from:))
        }
    }

    /// Starts a new window for the thread: spent reads zero, the max stays, thresholds re-arm.
    /// The old events stay in the ledger.
    ///
    /// - Returns: the fresh budget, or nil when the thread is not open.
    @discardableResult
    public func resetThread(_ threadID: String) throws -> ThreadBudget? {
        try Validate.identifier(threadID, field: "threadId")
        return try write { [self] connection in
            let now = configuration.clock()
            guard let budget = try ThreadRow.fetch(threadID, at: now, on: connection).budget else { return nil }
            try connection.execute(LedgerSQL.insertReset, [now, threadID])
            return ThreadBudget(threadID: threadID, maxTokens: budget.maxTokens, heldTokens: budget.heldTokens)
        }
    }

    /// Ends the thread's life: returns its final budget; afterwards the thread is not open, and
    /// using its id again opens a fresh thread at the default max. The events stay.
    ///
    /// - Returns: the final budget, or nil when the thread is not open.
    @discardableResult
    public func cleanupThread(_ threadID: String) throws -> ThreadBudget? {
        try Validate.identifier(threadID, field: "threadId")
        return try write { [self] connection in
            let now = configuration.clock()
            guard let budget = try ThreadRow.fetch(threadID, at: now, on: connection).budget else { return nil }
            try connection.execute(LedgerSQL.insertCleanup, [now, threadID])
            return budget
        }
    }

    /// Sets one thread's max, opening the thread when it is not open. The max may be lowered
    /// below what is spent (the thread is then exhausted); 0 blocks the thread entirely.
    ///
    /// - Throws: `LedgerError.invalidInput` for a max outside `0...LedgerLimits.maxTokensMax` or a bad thread id.
    @discardableResult
    public func setLimit(_ threadID: String, maxTokens: Int64) throws -> ThreadBudget {
        try Validate.identifier(threadID, field: "threadId")
        try Validate.maxTokens(maxTokens, field: "maxTokens")
        return try write { [self] connection in
            let now = configuration.clock()
            try connection.execute(LedgerSQL.insertLimit, [now, threadID, maxTokens])
            guard let budget = try ThreadRow.fetch(threadID, at: now, on: connection).budget else {
                preconditionFailure("a limit event left thread \(threadID) closed")
            }
            return budget
        }
    }
}
