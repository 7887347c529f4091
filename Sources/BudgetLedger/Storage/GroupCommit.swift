import Foundation
internal import LedgerSQLite
import Synchronization

extension Ledger {
    /// The most writes one group commit coalesces into a transaction.
    public static let groupCommitBatchMax = 256
    /// Transactions without a waiting writer after which a lone write at FULL lets SQLite
    /// sync inside the commit again (see `syncsInCommit(_:)`).
    static let contendedTransactionsMemory = 64

    /// Runs `body` as part of a `BEGIN IMMEDIATE` transaction and returns its result once that
    /// transaction has committed, durably at the configured synchronous level.
    ///
    /// Group commit: callers that arrive while a transaction is running queue up. One caller
    /// at a time is the leader: it takes the cross-process write lock (waiting at most the busy
    /// timeout, without holding the connection, so reads go on), then the connection, and runs
    /// every queued write (up to `groupCommitBatchMax`, its own among them) in arrival order
    /// in one transaction, each
    /// inside its own savepoint, so a write that throws (a refused budget) is rolled back alone
    /// and never affects the others. Then it hands the lead to the oldest waiting caller, and
    /// only after that wakes the callers of its batch, so the next transaction starts while
    /// they return. No caller waits for company: a lone write runs at once, in a transaction
    /// of its own.
    ///
    /// At FULL, when other writers are about (`syncsInCommit(_:)`), the commit itself runs at
    /// SQLite's NORMAL and the former leader syncs the WAL (`WALSync`) after passing the lead
    /// on and letting the write lock go, then wakes its batch: the disk's sync overlaps the
    /// next batch (and other processes' writes), one sync covers every batch committed before
    /// it began, and still no caller hears of a commit before it is on the disk. Another
    /// connection can read a commit during that sync; a power loss then can take back what it
    /// read, never what a caller was told. A lone writer lets SQLite sync inside the commit.
    ///
    /// - Throws: what `body` threw; `LedgerError.database` when the transaction failed (a
    ///   busy lock, an I/O error, a failed sync, after which writes are refused until reopen).
    func write<Result: Sendable>(
        batchable: BatchedConsume? = nil, _ body: @escaping @Sendable (Connection) throws -> Result
    ) throws -> Result {
        let ticket = WriteTicket({ connection in try body(connection) }, batchable: batchable)
        if !enqueue(ticket) {
            ticket.wait()
        }
        if ticket.outcome == nil {
            // Leader: first in the queue when promoted, or alone when it found no leader.
            lead(until: ticket)
        }
        return try ticket.answer()
    }

    /// `write(_:)` for a caller that must not block its thread (the REST server's handlers, on
    /// Swift's cooperative threads): the write joins the same queue and the caller suspends
    /// instead of holding a thread while it waits.
    ///
    /// The same group commit, with the same guarantees: the answer comes once the batch is
    /// committed (and, at FULL, synced). Leading runs SQLite and waits for the disk, so a
    /// suspended caller never leads on its own thread: when it would (no leader was running, or
    /// the lead passed to it), it leads on `leaderQueue`, a serial queue of the ledger's own.
    ///
    /// - Throws: as `write(_:)`.
    func write<Result: Sendable>(
        batchable: BatchedConsume? = nil, suspending body: @escaping @Sendable (Connection) throws -> Result
    ) async throws -> Result {
        let ticket = await withCheckedContinuation { (continuation: CheckedContinuation<WriteTicket, Never>) in
            // Signalled as a blocked caller is woken: with the outcome, or (none yet) with the lead.
            let ticket = WriteTicket({ connection in try body(connection) }, batchable: batchable) { [self] ticket in
                guard ticket.outcome == nil else { return continuation.resume(returning: ticket) }
                leaderQueue.async {
                    self.lead(until: ticket)
                    continuation.resume(returning: ticket)
                }
            }
            if enqueue(ticket) { ticket.signal() }
        }
        return try ticket.answer()
    }

    /// Queues `ticket` and returns whether its caller is to lead (no leader was running).
    private func enqueue(_ ticket: WriteTicket) -> Bool {
        writeQueue.withLock { queue -> Bool in
            queue.tickets.append(ticket)
            if queue.hasLeader { return false }
            queue.hasLeader = true
            return true
        }
    }

    /// Runs batches until `ticket`'s has run, then passes the lead on and wakes the batch.
    private func lead(until ticket: WriteTicket) {
        var finished: [WriteTicket] = []
        while ticket.outcome == nil {
            let batch = writeQueue.withLock { queue -> [WriteTicket] in
                let count = min(queue.tickets.count, Self.groupCommitBatchMax)
                let batch = Array(queue.tickets.prefix(count))
                queue.tickets.removeFirst(count)
                return batch
            }
            run(batch)
            finished += batch
        }
        let next = writeQueue.withLock { queue -> WriteTicket? in
            guard let first = queue.tickets.first else {
                queue.hasLeader = false
                return nil
            }
            return first
        }
        next?.signal()
        makeDurable(finished)
        for done in finished where done !== ticket {
            done.signal()
        }
    }

    /// At FULL, syncs the WAL before the callers of `finished` hear that their writes committed.
    ///
    /// Runs after the lead has passed on, so the next batch executes while the disk syncs this
    /// one. When the sync fails, every write of `finished` that had committed reports the
    /// error instead: it may be in the ledger, but nobody may rely on it surviving a power loss
    /// (a retry with the same idempotency key, once the ledger is reopened, finds out). The
    /// failure is final: the ledger refuses every later write until it is reopened (`WALSync`).
    private func makeDurable(_ finished: [WriteTicket]) {
        guard let walSync else { return }
        let commit = finished.lazy.filter { if case .success? = $0.outcome { true } else { false } }.map(\.commitNumber).max()
        guard let commit else { return }
        do {
            try walSync.sync(through: commit)
        } catch {
            let failure = mapped(error)
            for ticket in finished {
                if case .success? = ticket.outcome { ticket.outcome = .failure(failure) }
            }
        }
    }

    /// Runs `batch` in one transaction under the cross-process write lock, or fails every write
    /// of it: when the ledger is closed, refuses writes after a failed sync, or another writer
    /// holds the lock past the busy timeout.
    ///
    /// The wait for the lock holds nothing of this ledger's: reads go on meanwhile, and the
    /// connection is held only while the transaction runs.
    private func run(_ batch: [WriteTicket]) {
        if let refusal = writesRefused() {
            for ticket in batch { ticket.outcome = .failure(refusal) }
            return
        }
        guard writerLock.lock(timeoutMilliseconds: configuration.busyTimeoutMilliseconds) else {
            let busy = SQLiteError(
                extendedCode: .busy,
                message: "\(writerLock.path) was held by another writer for longer than the busy timeout "
                    + "(\(configuration.busyTimeoutMilliseconds) ms); nothing was recorded")
            for ticket in batch { ticket.outcome = .failure(LedgerError.database(path: path, StorageFailure(busy))) }
            return
        }
        defer { writerLock.unlock() }
        connection.withLock { connection in run(batch, on: connection) }
    }

    /// Why the ledger takes no write now, or nil when it takes them.
    private func writesRefused() -> (any Error)? {
        if let refused = walSync?.writesRefused { return LedgerError.database(path: path, StorageFailure(refused)) }
        if !connection.withLock({ $0.isOpen }) { return LedgerError.closed }
        return nil
    }

    /// Runs `batch` in one transaction on `connection` and records each ticket's outcome.
    private func run(_ batch: [WriteTicket], on connection: Connection) {
        guard connection.isOpen else {
            for ticket in batch { ticket.outcome = .failure(LedgerError.closed) }
            return
        }
        writeStatistics.withLock { statistics in
            statistics.transactions += 1
            statistics.writes += Int64(batch.count)
            statistics.largestBatch = max(statistics.largestBatch, batch.count)
        }
        let syncInCommit = walSync != nil && syncsInCommit(batch)
        do {
            if walSync != nil {
                try connection.setSynchronous(syncInCommit ? .full : .normal)
            }
            try connection.execute("BEGIN IMMEDIATE TRANSACTION", [])
        } catch {
            let failure = mapped(error)
            for ticket in batch { ticket.outcome = .failure(failure) }
            return
        }
        if batch.count == 1 {
            // A lone write needs no savepoint: its failure rolls back the whole transaction.
            batch[0].staged = Swift.Result { try batch[0].body(connection) }.mapError(mapped)
        } else if !runAsConsumeBatch(batch, on: connection) {
            for ticket in batch {
                ticket.staged = Swift.Result { try connection.savepoint { try ticket.body(connection) } }.mapError(mapped)
                // Some errors (a full disk, I/O) end the whole transaction: nothing staged so far
                // will commit, so no ticket may be told it did.
                if connection.isAutocommit { break }
            }
        }
        finish(batch, on: connection, syncedInCommit: syncInCommit)
    }

    /// Runs `batch` through `recordBatch` when every write of it is a plain consume: derived
    /// state once per batch, no savepoint per write. Returns false when the batch must run one
    /// write at a time instead (`ConsumeBatchFallback`, an error, or a write that is not a
    /// consume): then nothing of the batch path is left in the transaction (rolled back and
    /// begun again when it had written), and every caller gets exactly the row path's answer.
    ///
    /// Each caller's outcome is what its body would have returned: its consume's result, as
    /// `writeRecordingRefusal` wraps it (the batch path refuses nothing: a refusal falls back).
    private func runAsConsumeBatch(_ batch: [WriteTicket], on connection: Connection) -> Bool {
        let consumes = batch.compactMap(\.batchable)
        guard consumes.count == batch.count else { return false }
        let results: [ConsumeResult]
        let changesBefore = connection.totalChanges
        do {
            results = try recordBatch(consumes, on: connection)
        } catch {
            // A fallback, or an error the writes will meet (or not) one at a time. When the batch
            // wrote nothing (a ledger with scope budgets hands every batch back before its first
            // write), the transaction goes on as it is; else what the batch wrote is taken back
            // and the transaction begun again for them.
            if !connection.isAutocommit && connection.totalChanges == changesBefore { return false }
            connection.rollbackIfNeeded()
            do {
                try connection.execute("BEGIN IMMEDIATE TRANSACTION", [])
            } catch {
                let failure = mapped(error)
                for ticket in batch { ticket.staged = .failure(failure) }
                return true
            }
            return false
        }
        writeStatistics.withLock { $0.batchedWrites += Int64(batch.count) }
        for (ticket, result) in zip(batch, results) {
            ticket.staged = .success(RefusableOutcome<ConsumeResult>.done(result))
        }
        return true
    }

    /// At FULL, whether SQLite should sync the WAL inside this commit (`synchronous = FULL`)
    /// rather than the leader after it (`WALSync`): when the batch is one write and no other
    /// writer, in this process or another, has waited for the lock in the last
    /// `contendedTransactionsMemory` transactions.
    ///
    /// Syncing after the lock only pays when someone can use the lock meanwhile. For a lone
    /// writer it measured slower than SQLite's own sync inside the commit (one caller at FULL:
    /// 2.0-2.3k against 2.3-2.8k txn/s, four runs each), so that case keeps SQLite's. A waiter
    /// seen now is not enough to go by: with processes taking turns, the next one often queues
    /// only while this transaction runs, so one seen recently counts too.
    private func syncsInCommit(_ batch: [WriteTicket]) -> Bool {
        let contended = batch.count > 1 || !writeQueue.withLock { $0.tickets.isEmpty } || writerLock.hasWaiter()
        if contended {
            transactionsSinceContention.store(0, ordering: .relaxed)
            return false
        }
        let since = transactionsSinceContention.add(1, ordering: .relaxed).newValue
        return since > Self.contendedTransactionsMemory
    }

    /// Commits what succeeded (or rolls back when nothing did) and publishes the outcomes.
    ///
    /// Each caller hears the truth about its own write. A write that failed (a refusal, or the
    /// error that ended the transaction) gets its own error, whatever became of the others. A
    /// write that succeeded gets its result when the commit succeeds, else the error that
    /// lost it; a write that never ran (the transaction ended before it) gets that error too:
    /// a database error a retry can answer, never another caller's refusal.
    private func finish(_ batch: [WriteTicket], on connection: Connection, syncedInCommit: Bool) {
        var sharedError: (any Error)?
        if connection.isAutocommit {
            sharedError = endedEarlyError(batch)
        } else if batch.contains(where: { if case .success = $0.staged { true } else { false } }) {
            sharedError = commit(batch, on: connection, syncedInCommit: syncedInCommit)
        } else {
            connection.rollbackIfNeeded()
        }
        for ticket in batch {
            switch ticket.staged {
            case .failure(let error)?: ticket.outcome = .failure(error)
            case .success(let value)?: ticket.outcome = sharedError.map { .failure($0) } ?? .success(value)
            case nil: ticket.outcome = .failure(sharedError ?? endedEarlyError(batch))
            }
            ticket.staged = nil
        }
    }

    /// Commits the batch's transaction and numbers the commit for `WALSync`; returns the error
    /// when `COMMIT` fails (the transaction is then rolled back).
    private func commit(_ batch: [WriteTicket], on connection: Connection, syncedInCommit: Bool) -> (any Error)? {
        let framedCommitsBefore = connection.framedWALCommits
        do {
            try connection.execute("COMMIT TRANSACTION", [])
        } catch {
            connection.rollbackIfNeeded()
            if let failure = error as? SQLiteError, failure.extendedCode == .ioErrorFsync {
                // SQLite's own sync inside the commit failed: as final as a failed sync of ours.
                walSync?.syncFailed(failure)
            }
            return mapped(error)
        }
        guard let walSync else { return nil }
        // SQLite's sync inside a FULL commit covers every earlier commit only when this commit
        // appended frames: one that wrote nothing (a replay, the reset of an unknown thread) syncs
        // nothing, and then counts as a commit at NORMAL, for a sync of ours before anyone hears.
        // The WAL hook tells exactly which commits appended frames (`framedWALCommits`).
        // `sqlite3_total_changes` would not: it counts rows a savepoint rolled back, and misses
        // page writes that change no row. Nor would the WAL's size: after a checkpoint SQLite
        // writes the WAL again from its start, so frames can be added without the file growing.
        let appendedFrames = connection.framedWALCommits != framedCommitsBefore
        let commit = syncedInCommit && appendedFrames ? walSync.committedDurably() : walSync.committed()
        for ticket in batch { ticket.commitNumber = commit }
        return nil
    }

    /// The error for the writes of a batch whose transaction SQLite rolled back early (an I/O
    /// error, out of memory, a full disk, a savepoint that could not be undone): those that had
    /// succeeded, lost with it, and those that never ran. It is the database error of the write
    /// that ended the transaction, the last one to run (the batch stops there).
    private func endedEarlyError(_ batch: [WriteTicket]) -> any Error {
        let cause: (any Error)?
        if case .failure(let error)? = batch.last(where: { $0.staged != nil })?.staged {
            if let ledgerError = error as? LedgerError, case .database = ledgerError { return error }
            cause = error
        } else {
            cause = nil
        }
        let reason = cause.map { "\($0)" } ?? "no write of the batch said why"
        return LedgerError.database(
            path: path,
            StorageFailure(
                SQLiteError(
                    extendedCode: .abortRollback,
                    message: "the transaction was rolled back before this write committed (\(reason)); nothing of it was recorded")))
    }

    private func mapped(_ error: any Error) -> any Error {
        if let error = error as? SQLiteError { return LedgerError.database(path: path, StorageFailure(error)) }
        return error
    }
}
