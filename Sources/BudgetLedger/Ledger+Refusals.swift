internal import LedgerSQLite
import Synchronization

/// What a write that a budget may refuse hands back from its transaction: the refusal must
/// commit (its refusal event), so it cannot leave the body as a thrown error, which rolls back.
enum RefusableOutcome<Value: Sendable>: Sendable {
    case done(Value)
    case refused(BudgetExhaustedError)

    /// The value, or the refusal thrown (once its transaction has committed).
    func value() throws -> Value {
        switch self {
        case .done(let value): return value
        case .refused(let refusal): throw refusal
        }
    }
}

extension Ledger {
    /// Runs `body` as a group-committed write whose `BudgetExhaustedError` is recorded as a
    /// refusal event (the first of its window: `recordRefusal`) in the same transaction, and
    /// thrown to the caller once that transaction has committed.
    ///
    /// `body` must decide a refusal before it writes anything: the transaction commits, so any
    /// row written before the throw would be recorded with the refusal (a precondition checks it).
    ///
    /// The refusal is the caller's answer even when its event could not be committed (the
    /// transaction failed: a full disk, or another write of the batch ended it): the call was
    /// refused all the same, and the window, still without a refusal, records the next one.
    ///
    /// - Throws: the `BudgetExhaustedError` of `body`, after commit; whatever else `write` throws.
    func writeRecordingRefusal<Result: Sendable>(
        batchable: BatchedConsume? = nil, _ body: @escaping @Sendable (Connection) throws -> Result
    ) throws -> Result {
        let decided = RefusalDecision()
        let outcome: RefusableOutcome<Result>
        do {
            outcome = try write(batchable: batchable, recordingRefusal(of: body, in: decided))
        } catch {
            throw decided.refusal.withLock { $0 } ?? error
        }
        return try outcome.value()
    }

    /// `writeRecordingRefusal(_:)` for a caller that suspends instead of blocking (`write(suspending:)`).
    func writeRecordingRefusal<Result: Sendable>(
        batchable: BatchedConsume? = nil, suspending body: @escaping @Sendable (Connection) throws -> Result
    ) async throws -> Result {
        let decided = RefusalDecision()
        let outcome: RefusableOutcome<Result>
        do {
            outcome = try await write(batchable: batchable, suspending: recordingRefusal(of: body, in: decided))
        } catch {
            throw decided.refusal.withLock { $0 } ?? error
        }
        return try outcome.value()
    }

    /// `body` as a write whose refusal is recorded (and kept in `decided`) instead of thrown.
    private func recordingRefusal<Result: Sendable>(
        of body: @escaping @Sendable (Connection) throws -> Result, in decided: RefusalDecision
    ) -> @Sendable (Connection) throws -> RefusableOutcome<Result> {
        { [self] connection in
            let changesBefore = connection.totalChanges
            do {
                return .done(try body(connection))
            } catch let refusal as BudgetExhaustedError {
                precondition(
                    connection.totalChanges == changesBefore,
                    "a refused write wrote before it was refused: that would commit with its refusal event")
                decided.refusal.withLock { $0 = refusal }
                try recordRefusal(refusal, at: configuration.clock(), on: connection)
                return .refused(refusal)
            }
        }
    }

    /// Records `refusal` as a refusal event unless its window already has one: the thread's
    /// window (`thread_state.window_event_id`, 0 while the thread is not open) when the thread's
    /// budget refused, else the scope's window. Returns whether it recorded one.
    @discardableResult
    func recordRefusal(_ refusal: BudgetExhaustedError, at now: Int64, on connection: Connection) throws -> Bool {
        guard let scope = refusal.scope, let window = refusal.window else {
            try connection.execute(RefusalSQL.insertThreadRefusal, [now, refusal.threadID, refusal.used, refusal.maxTokens])
            return connection.changes > 0
        }
        // The refusal names one unit; the event keeps both of the budget's, as scope_threshold does.
        let budget = try ScopeBudgetSQL.budgets(scopes: [scope.description], at: now, on: connection).first
        try connection.execute(
            RefusalSQL.insertScopeRefusal,
            [
                now, refusal.threadID, scope.description, window.startMicroseconds,
                budget?.spentTokens ?? (refusal.unit == .tokens ? refusal.used : 0),
                budget?.spentNanodollars ?? (refusal.unit == .nanodollars ? refusal.used : nil),
                budget?.maxTokens ?? (refusal.unit == .tokens ? refusal.maxTokens : nil),
                budget?.maxNanodollars ?? (refusal.unit == .nanodollars ? refusal.maxTokens : nil),
            ])
        return connection.changes > 0
    }
}

/// The refusal a write's body decided, kept outside the transaction that may fail to record it.
private final class RefusalDecision: Sendable {
    let refusal = Mutex<BudgetExhaustedError?>(nil)
}

/// The statements of refusal events and alert cursors (migration 0011).
enum RefusalSQL {
    /// `?1` now, `?2` thread, `?3` its total, `?4` its max: inserted unless the thread's window
    /// (as the trigger of 0011 keys it) already has a refusal.
    static let insertThreadRefusal = """
        INSERT INTO events (timestamp_us, kind, thread_id, tokens_used, max_tokens)
        SELECT ?1, 'refusal', ?2, ?3, ?4
        WHERE NOT EXISTS (SELECT 1 FROM thread_refusals AS r
                          WHERE r.thread_id = ?2
                            AND r.window_event_id
                                = coalesce((SELECT s.window_event_id FROM thread_state AS s WHERE s.thread_id = ?2), 0))
        """

    /// `?1` now, `?2` thread, `?3` scope, `?4` window start, `?5` tokens and `?6` nano-dollars
    /// spent in the window, `?7` `?8` the maxes: inserted unless the window already has a refusal.
    static let insertScopeRefusal = """
        INSERT INTO events (timestamp_us, kind, thread_id, scope, window_start_us, tokens_used, cost_used_nanos,
                            max_tokens, max_cost_nanos)
        SELECT ?1, 'refusal', ?2, ?3, ?4, ?5, ?6, ?7, ?8
        WHERE NOT EXISTS (SELECT 1 FROM scope_refusals WHERE scope = ?3 AND window_start_us = ?4)
        """
}
