internal import LedgerSQLite

/// One consume of a batch whose derived state is applied once per batch (`Ledger.recordBatch`).
struct BatchedConsume: Sendable {
    /// The validated call.
    let request: ConsumeRequest
    /// The time it is recorded at; nil: the clock's, read when its turn in the batch comes (as
    /// `Ledger.record` reads it).
    let time: Int64?
}

/// Why a batch is recorded one consume at a time instead (`Ledger.record`, the reference path),
/// which does exactly what a consume does: whatever the batch path would have to do otherwise
/// than append, count and judge thresholds.
package enum ConsumeBatchFallback: Error, Sendable, Equatable {
    /// The ledger has a scope budget: each consume's windows and thresholds are the row path's.
    case scopeBudget
    /// A touched thread has holds, live or expired (expiries to record, held tokens to count).
    case holds
    /// A checked consume does not fit: the row path refuses it and records the refusal event.
    case refused
    /// A consume's cost at its price is above the per-call limit: the row path names it.
    case priceRefused
    /// An insert was refused: its idempotency key is already recorded (a replay, or a conflict
    /// the row path names), or another constraint.
    case insertRefused
    /// A consume of the batch would take an all-time sum past the ledger's capacity: the row
    /// path refuses it with the fold's message.
    case capacity
}

/// A touched thread as the batch keeps it: its budget with the batch's consumes added so far,
/// and what the batch added, written once at the end.
private struct BatchThread {
    var budget: ThreadBudget
    var promptTokensAdded: Int64 = 0
    var completionTokensAdded: Int64 = 0
    var requestsAdded: Int64 = 0

    /// Counts `request`, whose consume left the thread at `budget`.
    mutating func add(_ request: ConsumeRequest, leaving budget: ThreadBudget) {
        self.budget = budget
        promptTokensAdded += request.promptTokens
        completionTokensAdded += request.completionTokens
        requestsAdded += 1
    }
}

/// What the batch path reads once per batch and keeps while it records the consumes.
private struct ConsumeBatchState {
    let defaultMaxTokens: Int64
    let pricesVersion: Int64
    /// The touched threads, and their ids in the order first touched (the order of the updates).
    var threads: [String: BatchThread] = [:]
    var threadOrder: [String] = []
    /// The fold's mark as it stands in the batch (read again after each fold).
    var foldMark: FoldMark
}

extension Ledger {
    /// Records `consumes` in order, in the caller's transaction, with their derived state
    /// applied per batch: each touched thread read once and its totals written once. The events
    /// are the row path's, in its order and with its ids: a new thread's open, the consume (and
    /// the fold when it is due, `FoldMark`), its threshold events, each judged as `record` judges
    /// them; so are the results. Import (`importConsumes`) and group commit (`runAsConsumeBatch`) use it.
    ///
    /// It opens no savepoint: under one, SQLite keeps the original of every page the batch
    /// changes until the savepoint ends (for an import batch of 2,000 lines, megabytes, which
    /// spilled to a temporary file). A fallback is thrown instead, and the caller rolls back
    /// its transaction, which takes back whatever the batch had written.
    ///
    /// - Returns: each consume's result, in order.
    /// - Throws: a `ConsumeBatchFallback` when the batch must go through the row path; the
    ///   connection's errors. Either way the caller's transaction holds part of the batch and
    ///   must be rolled back.
    func recordBatch(_ consumes: [BatchedConsume], on connection: Connection) throws -> [ConsumeResult] {
        guard var state = try readConsumeBatchSettings(on: connection) else { throw ConsumeBatchFallback.scopeBudget }
        let results = try consumes.map { consume in try recordInBatch(consume, state: &state, on: connection) }
        try applyBatchDerivedState(state, on: connection)
        return results
    }

    /// The ledger's default max, price version and fold mark; nil when a scope budget is set.
    private func readConsumeBatchSettings(on connection: Connection) throws -> ConsumeBatchState? {
        let settings = try connection.cachedStatement(ConsumeBatchSQL.selectSettings).fetchOne { row in
            (defaultMaxTokens: try row[0] as Int64, pricesVersion: try row[1] as Int64, anyScopeBudget: try row[2] as Bool,
             foldMark: try FoldMark(row: row, from: 3))
        }
        guard let settings else {
            preconditionFailure("ledger_settings has no row: the schema is broken")
        }
        if settings.anyScopeBudget { return nil }
        return ConsumeBatchState(
            defaultMaxTokens: settings.defaultMaxTokens, pricesVersion: settings.pricesVersion, foldMark: settings.foldMark)
    }

    /// Records one consume's events and adds it to the batch's running totals; returns its result.
    ///
    /// - Throws: a `ConsumeBatchFallback` when the batch must go row by row; the connection's errors.
    private func recordInBatch(
        _ consume: BatchedConsume, state: inout ConsumeBatchState, on connection: Connection
    ) throws -> ConsumeResult {
        let request = consume.request
        let now = consume.time ?? configuration.clock()
        let touched = state.threads[request.threadID]
        let found = touched == nil ? try readBatchThread(request.threadID, on: connection) : nil
        let before =
            (touched ?? found)?.budget ?? ThreadBudget(threadID: request.threadID, maxTokens: state.defaultMaxTokens)
        if request.enforce && (before.isExhausted || !before.canConsume(request.tokens)) {
            throw ConsumeBatchFallback.refused
        }
        let cost: Int64?
        do {
            cost = try price(of: request, at: now, pricesVersion: state.pricesVersion, on: connection)
        } catch is LedgerError {
            throw ConsumeBatchFallback.priceRefused
        }
        // Opened once the consume is judged, as `record` opens a new thread.
        var thread =
            try touched ?? found
            ?? BatchThread(budget: openThread(request.threadID, maxTokens: state.defaultMaxTokens, at: now, on: connection))
        if touched == nil { state.threadOrder.append(request.threadID) }
        do {
            try connection.execute(
                LedgerSQL.insertConsume, request.consumeArguments(at: now, costNanodollars: cost, reservationID: nil))
        } catch let error as SQLiteError where error.code == .constraint {
            throw ConsumeBatchFallback.insertRefused
        }
        let eventID = connection.lastInsertRowID
        // The fold reads every consume past `rolled_up_to`, so it runs here, when the consume is
        // the last event, as in `record`. Another event of the batch (an open, a threshold) may
        // have folded since the mark was read: it is read again before the fold is judged due.
        if state.foldMark.foldIsDue(after: eventID, costNanodollars: cost) {
            state.foldMark = try FoldMark.read(on: connection)
            if state.foldMark.foldIsDue(after: eventID, costNanodollars: cost) {
                do {
                    try FoldMark.fold(through: eventID, on: connection)
                } catch is LedgerError {
                    throw ConsumeBatchFallback.capacity
                }
                state.foldMark = try FoldMark.read(on: connection)
            }
        }
        var budget = before.consuming(request)
        let crossings = try recordCrossings(of: &budget, causedBy: eventID, at: now, on: connection)
        thread.add(request, leaving: budget)
        state.threads[request.threadID] = thread
        return ConsumeResult(
            budget: budget, crossedThresholds: crossings,
            event: request.event(id: eventID, at: now, costNanodollars: cost, reservationID: nil), isReplay: false)
    }

    /// An open thread as the batch starts keeping it, read from the ledger; nil when it is not open.
    ///
    /// - Throws: `ConsumeBatchFallback.holds` for a thread with holds; the connection's errors.
    private func readBatchThread(_ threadID: String, on connection: Connection) throws -> BatchThread? {
        let found = try connection.cachedStatement(ConsumeBatchSQL.selectThread).fetchOne([threadID]) { row in
            (budget: ThreadBudget(
                threadID: threadID, maxTokens: try row[0], promptTokens: try row[1], completionTokens: try row[2],
                requestCount: try row[3], triggeredThresholds: ThreadRow.parseThresholds(try row[4])),
             hasHolds: try row[5] as Bool)
        }
        guard let found else { return nil }
        if found.hasHolds { throw ConsumeBatchFallback.holds }
        return BatchThread(budget: found.budget)
    }

    /// Writes what the batch added: each touched thread's totals once.
    private func applyBatchDerivedState(_ state: ConsumeBatchState, on connection: Connection) throws {
        for threadID in state.threadOrder {
            guard let thread = state.threads[threadID] else { continue }
            try connection.execute(
                ConsumeBatchSQL.addToThread,
                [threadID, thread.promptTokensAdded, thread.completionTokensAdded, thread.requestsAdded])
            // The thread was read (or opened) in this transaction, and only this writer writes.
            assert(connection.changes == 1, "thread \(threadID) vanished during its batch")
        }
    }
}

/// The reads and the derived state of a batch of consumes (`Ledger.recordBatch`).
enum ConsumeBatchSQL {
    /// The ledger's default max, the price table's version (as `LedgerSQL.selectThreadAndDefault`
    /// reads it for `PriceCache`), whether any scope budget is set, and the fold's mark.
    static let selectSettings = """
        SELECT g.default_max_tokens,
               (SELECT coalesce(max(id), 0) FROM model_prices) + (SELECT coalesce(max(id), 0) FROM price_withdrawals),
               EXISTS (SELECT 1 FROM scope_budgets), \(FoldMark.columns(of: "g"))
        FROM ledger_settings AS g WHERE g.id = 1
        """

    /// An open thread's totals, its fired thresholds, and whether it has any hold, live or
    /// expired (`?1` the thread); no row when the thread is not open.
    static let selectThread = """
        SELECT s.max_tokens, s.prompt_tokens, s.completion_tokens, s.request_count,
               (SELECT group_concat(t.threshold_percent) FROM thread_thresholds AS t WHERE t.thread_id = s.thread_id),
               EXISTS (SELECT 1 FROM holds AS h WHERE h.thread_id = s.thread_id)
        FROM thread_state AS s WHERE s.thread_id = ?1
        """

    /// Adds a batch's `?2` prompt and `?3` completion tokens and `?4` consumes to thread `?1`.
    static let addToThread = """
        UPDATE thread_state
        SET prompt_tokens = prompt_tokens + ?2, completion_tokens = completion_tokens + ?3,
            request_count = request_count + ?4
        WHERE thread_id = ?1
        """
}
