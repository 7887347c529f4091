internal import LedgerSQLite

/// Which path recorded an import batch (`package`: tests check that a batch took the one they
/// mean to prove).
package enum ImportRoute: Sendable, Equatable {
    /// Derived state per batch (`Ledger.importAsBatch`).
    case batch
    /// One consume at a time (`Ledger.record`, the reference), and why.
    case rowByRow(ImportFallback)
}

/// Why a batch was recorded row by row: whatever the batch path would have to do differently
/// from a plain append, the row path does exactly as a consume does.
package enum ImportFallback: Error, Sendable, Equatable {
    /// The caller asked for the row path (the equivalence tests' reference).
    case asked
    /// The ledger has a scope budget: each consume's window and thresholds are the row path's.
    case scopeBudget
    /// A touched thread has holds, live or expired (expiries to record, held tokens to count).
    case holds
    /// An insert was refused: a line's key is already recorded, in the ledger or earlier in the
    /// batch (the row path skips a replay and names a conflict's line), or another constraint.
    case insertRefused
    /// A line was refused (its cost above the per-call limit): the row path names it.
    case lineRefused
    /// The batch would take an all-time sum past the capacity: the row path names the line.
    case capacity
}

/// An open thread as the batch path keeps it: its budget with the batch's consumes added, and
/// what the batch added, to write once at the end.
private struct BatchThread {
    var budget: ThreadBudget
    var promptTokensAdded: Int64 = 0
    var completionTokensAdded: Int64 = 0
    var requestsAdded: Int64 = 0
}

/// What the batch path reads once per batch and keeps while it records the lines.
private struct BatchState {
    let defaultMaxTokens: Int64
    let pricesVersion: Int64
    /// The touched threads, and their ids in the order first touched (the order of the updates).
    var threads: [String: BatchThread] = [:]
    var threadOrder: [String] = []
    /// The all-time sums' additions: prompt, completion, cost, latency (saturating: a batch
    /// that would overflow is past the capacity anyway).
    var allTimeSums: [Int64] = [0, 0, 0, 0]
}

extension Ledger {
    /// Records `batch` with its derived state applied per batch, in the caller's write: each
    /// touched thread read once, its totals kept in Swift and written once, the all-time sums
    /// added (and checked against the capacity) once. The events are those the row path writes,
    /// in its order, with its ids: a new thread's open, the consume (and the fold at every
    /// 1,024th event), its threshold events, judged as `record` judges them.
    ///
    /// It opens no savepoint of its own: under one, SQLite keeps every statement's page images
    /// in the sub-journal until the savepoint ends, which spilled to a temporary file (3.4 page
    /// writes a line, most of a line's system time). A fallback is thrown instead, and the
    /// caller's write rolls back what the batch wrote.
    ///
    /// - Throws: an `ImportFallback` when the batch needs the row path (scope budgets, holds, a
    ///   recorded key, a refused line, the capacity), which then records it as a consume would
    ///   and names any line refused; the connection's errors.
    func importAsBatch(_ batch: [ImportedConsume], on connection: Connection) throws {
        guard var state = try readBatchSettings(on: connection) else { throw ImportFallback.scopeBudget }
        for consume in batch {
            try recordInBatch(consume, state: &state, on: connection)
        }
        try applyBatchDerivedState(state, on: connection)
    }

    /// The ledger's default max and price version; nil when a scope budget is set.
    private func readBatchSettings(on connection: Connection) throws -> BatchState? {
        let settings = try connection.cachedStatement(ImportSQL.selectSettings).fetchOne { row in
            (defaultMaxTokens: try row[0] as Int64, pricesVersion: try row[1] as Int64, anyScopeBudget: try row[2] as Bool)
        }
        guard let settings else {
            preconditionFailure("ledger_settings has no row: the schema is broken")
        }
        if settings.anyScopeBudget { return nil }
        return BatchState(defaultMaxTokens: settings.defaultMaxTokens, pricesVersion: settings.pricesVersion)
    }

    /// Records one line's events (an open for a new thread, the consume, its threshold events)
    /// and adds it to the batch's running totals.
    ///
    /// - Throws: an `ImportFallback` when the batch must go row by row; the connection's errors.
    private func recordInBatch(_ consume: ImportedConsume, state: inout BatchState, on connection: Connection) throws {
        let request = consume.request
        let now = consume.timestampMicroseconds
        var thread = try batchThread(request.threadID, at: now, state: &state, on: connection)
        let cost: Int64?
        do {
            cost = try price(of: request, at: now, pricesVersion: state.pricesVersion, on: connection)
        } catch is LedgerError {
            throw ImportFallback.lineRefused
        }
        do {
            try connection.execute(
                LedgerSQL.insertConsume, request.consumeArguments(at: now, costNanodollars: cost, reservationID: nil))
        } catch let error as SQLiteError where error.code == .constraint {
            throw ImportFallback.insertRefused
        }
        let eventID = connection.lastInsertRowID
        // The fold reads every consume past `rolled_up_to` (the view has no upper bound), so it
        // runs here, when the event that reaches the multiple is the last one, as in `record`.
        if eventID % ConsumeSQL.foldEveryEvents == 0 {
            try connection.execute(ConsumeSQL.fold, [eventID])
        }
        let before = thread.budget
        thread.budget = before.with(
            promptTokens: before.promptTokens.saturatingAdd(request.promptTokens),
            completionTokens: before.completionTokens.saturatingAdd(request.completionTokens),
            requestCount: before.requestCount + 1, triggeredThresholds: before.triggeredThresholds)
        thread.promptTokensAdded += request.promptTokens
        thread.completionTokensAdded += request.completionTokens
        thread.requestsAdded += 1
        let crossings = thresholds.crossings(by: thread.budget)
        for crossing in crossings {
            try connection.execute(
                LedgerSQL.insertThreshold,
                [now, request.threadID, crossing.thresholdPercent, crossing.severity, eventID, crossing.tokensUsed,
                 crossing.maxTokens])
        }
        thread.budget = thread.budget.firing(crossings)
        state.threads[request.threadID] = thread
        let added = [request.promptTokens, request.completionTokens, cost ?? 0, request.usage.latencyMilliseconds ?? 0]
        for index in 0..<4 {
            state.allTimeSums[index] = state.allTimeSums[index].saturatingAdd(added[index])
        }
    }

    /// The thread as the batch keeps it: read on first touch (opened at `now` at the default
    /// max when it is not open, as `record` opens it), then from the batch's own state.
    ///
    /// - Throws: `ImportFallback.holds` for a thread with holds; the connection's errors.
    private func batchThread(
        _ threadID: String, at now: Int64, state: inout BatchState, on connection: Connection
    ) throws -> BatchThread {
        if let thread = state.threads[threadID] { return thread }
        let found = try connection.cachedStatement(ImportSQL.selectThread).fetchOne([threadID]) { row in
            (budget: ThreadBudget(
                threadID: threadID, maxTokens: try row[0], promptTokens: try row[1], completionTokens: try row[2],
                requestCount: try row[3], triggeredThresholds: ThreadRow.parseThresholds(try row[4])),
             hasHolds: try row[5] as Bool)
        }
        state.threadOrder.append(threadID)
        if let found {
            if found.hasHolds { throw ImportFallback.holds }
            return BatchThread(budget: found.budget)
        }
        return BatchThread(budget: try openThread(threadID, maxTokens: state.defaultMaxTokens, at: now, on: connection))
    }

    /// Writes what the batch added: each touched thread's totals once, the all-time sums once
    /// (refused at the capacity, as `addToAllTimeSums` refuses a consume).
    ///
    /// - Throws: `ImportFallback.capacity` when a sum would pass the capacity; the connection's errors.
    private func applyBatchDerivedState(_ state: BatchState, on connection: Connection) throws {
        for threadID in state.threadOrder {
            guard let thread = state.threads[threadID] else { continue }
            try connection.execute(
                ImportSQL.addToThread,
                [threadID, thread.promptTokensAdded, thread.completionTokensAdded, thread.requestsAdded])
            // The thread was read (or opened) in this transaction, and only this writer writes.
            assert(connection.changes == 1, "thread \(threadID) vanished during its import batch")
        }
        try connection.execute(ConsumeSQL.addToAllTimeSums, state.allTimeSums.map { $0 as any SQLiteBindable })
        if connection.changes == 0 { throw ImportFallback.capacity }
    }
}
