@testable import BudgetLedger
import Foundation
@_spi(FaultInjection) import LedgerSQLite
import Synchronization
import Testing

/// A FULL ledger in `folder` and its WAL sync.
fileprivate func fullLedger(in folder: TemporaryFolder) throws -> (Ledger, WALSync) {
    let ledger = try Ledger(path: folder.path("l.db"), configuration: Ledger.Configuration(synchronous: .full))
    return (ledger, try #require(ledger.walSync))
}

@Suite("FULL durability: the WAL is synced after the write lock, before the caller hears")
struct WALSyncTests {
    @Test("a lone writer at FULL lets SQLite sync inside the commit; after contention the ledger syncs after the lock")
    func lonePathAndContendedPath() throws {
        // Proves both ways a FULL commit becomes durable, and the choice between them: with
        // nobody waiting, SQLite's own FULL sync (the connection at FULL, no sync of ours);
        // after recent contention, SQLite at NORMAL and our sync after the lock. Either way
        // every acknowledged commit is covered when the call returns (durable == written).
        let folder = try TemporaryFolder()
        let (ledger, walSync) = try fullLedger(in: folder)
        defer { ledger.close() }
        let syncsAtOpen = walSync.syncs
        for call in 0..<20 {
            try ledger.consume("t", promptTokens: 10, idempotencyKey: "lone-\(call)")
            let commits = walSync.commits
            #expect(commits.durable == commits.written)
        }
        #expect(try ledger.withConnection { $0.synchronous } == .full)
        #expect(walSync.syncs == syncsAtOpen, "SQLite synced inside the commits; the ledger did not sync again")

        // As if another writer had just waited for the lock.
        ledger.transactionsSinceContention.store(0, ordering: .relaxed)
        for call in 0..<Ledger.contendedTransactionsMemory {
            try ledger.consume("t", promptTokens: 10, idempotencyKey: "after-\(call)")
            let commits = walSync.commits
            #expect(commits.durable == commits.written)
        }
        #expect(walSync.syncs >= syncsAtOpen + Ledger.contendedTransactionsMemory)
        #expect(try ledger.withConnection { $0.synchronous } == .normal)
        try ledger.consume("t", promptTokens: 10, idempotencyKey: "lone-again")
        #expect(try ledger.withConnection { $0.synchronous } == .full, "quiet again: back to SQLite's sync")
    }

    @Test("the write lock tells whether another writer waits for it")
    func waiterIsSeen() throws {
        // Proves the test the policy above relies on: two locks on one file (two open file
        // descriptions, as two processes) — while one holds the lock, the other's wait shows.
        let folder = try TemporaryFolder()
        let holder = WriterLock(ledgerPath: folder.path("l.db"))
        let other = WriterLock(ledgerPath: folder.path("l.db"))
        #expect(holder.lock(timeoutMilliseconds: 0))
        #expect(!holder.hasWaiter())
        let acquired = DispatchSemaphore(value: 0)
        Thread {
            _ = other.lock(timeoutMilliseconds: 60_000)
            acquired.signal()
            other.unlock()
        }.start()
        let deadline = Date().addingTimeInterval(10)
        while !holder.hasWaiter() && Date() < deadline { Thread.sleep(forTimeInterval: 0.001) }
        #expect(holder.hasWaiter())
        holder.unlock()
        #expect(acquired.wait(timeout: .now() + 10) == .success)
    }

    @Test("at NORMAL and in memory there is no WAL sync of the ledger's own")
    func normalHasNone() throws {
        // Proves the extra sync is only paid where FULL asks for it.
        let folder = try TemporaryFolder()
        let normal = try Ledger(path: folder.path("n.db"), configuration: Ledger.Configuration(synchronous: .normal))
        defer { normal.close() }
        #expect(normal.walSync == nil)
        let memory = try Ledger.inMemory()
        defer { memory.close() }
        #expect(memory.walSync == nil)
    }

    @Test("64 concurrent writers at FULL share syncs, and every one returns durable")
    func syncsAreShared() throws {
        // Proves the sync is coalesced: callers whose commit a running or finished sync covers
        // do not sync again (fewer syncs than transactions once writers overlap), and still
        // no caller returns before its commit is covered.
        let folder = try TemporaryFolder()
        let (ledger, walSync) = try fullLedger(in: folder)
        defer { ledger.close() }
        // Every transaction syncs after the lock (as under steady contention), so fewer syncs
        // than transactions can only come from syncs being shared.
        ledger.transactionsSinceContention.store(0, ordering: .relaxed)
        let notCovered = Mutex(0)
        onThreads(64) { thread in
            for call in 0..<25 {
                // This call's commit comes after every commit counted before it began, so
                // once it returns the durable mark must be past that count.
                let writtenBefore = walSync.commits.written
                guard (try? ledger.consume("t\(thread % 8)", promptTokens: 1, idempotencyKey: "k\(thread)-\(call)")) != nil
                else { continue }
                if walSync.commits.durable <= writtenBefore { notCovered.withLock { $0 += 1 } }
            }
        }
        #expect(notCovered.withLock { $0 } == 0)
        #expect(try eventCount(at: folder.path("l.db")) >= 64 * 25)
        let commits = walSync.commits
        #expect(commits.durable == commits.written)
        // Transactions since open: the 64 × 25 consumes, the thread opens among them, and the
        // sync of the migrations at open.
        let transactions = ledger.statistics.transactions
        #expect(Int64(walSync.syncs) < transactions, "syncs \(walSync.syncs), transactions \(transactions)")
    }

    @Test("a WAL deleted (and replaced) under the ledger fails the write with the sync error instead of acknowledging it")
    func failedSyncIsNotAcknowledged() throws {
        // Proves a failed sync is reported, not swallowed: someone removes the WAL (SQLite keeps
        // writing to the unlinked file, whose frames are gone once it closes) and puts an empty
        // file in its place. The sync must neither sync the deleted file as if it were the WAL nor
        // open what now sits at the path: the consume throws an I/O error that names the WAL,
        // instead of returning a result nobody may rely on.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let (ledger, _) = try fullLedger(in: folder)
        defer { ledger.close() }
        try ledger.consume("t", promptTokens: 1)
        // As if another writer had just waited: the ledger syncs the WAL itself, after the lock.
        ledger.transactionsSinceContention.store(0, ordering: .relaxed)
        try FileManager.default.removeItem(atPath: path + "-wal")
        #expect(FileManager.default.createFile(atPath: path + "-wal", contents: Data()))
        let sqliteError = try #require(thrownDatabaseError(at: path) { try ledger.consume("t", promptTokens: 1) })
        #expect(sqliteError.extendedCode == .ioErrorFsync)
        #expect(sqliteError.message.contains("l.db-wal was deleted"))
    }

    // MARK: Review of issue 20

    @Test("a commit that wrote no WAL frame does not mark earlier commits durable", arguments: FramelessWrite.allCases)
    func framelessCommitCoversNothing(write: FramelessWrite) throws {
        // Proves the durable mark moves only with a sync that covered the frames. A commit at
        // NORMAL whose leader has not synced it yet (counted by `committed()`, as between its
        // commit and its sync) must not become durable because a later lone commit at FULL
        // returned when that later commit appended no frame to the WAL (an idempotent replay,
        // a settle replayed, the reset or cleanup of an unknown thread): SQLite syncs the WAL
        // only in a commit that appends frames. Its caller, which may have read the pending
        // commit, hears back only after a sync of the ledger's own covered everything before it.
        let folder = try TemporaryFolder()
        let (ledger, walSync) = try fullLedger(in: folder)
        defer { ledger.close() }
        try write.prepare(ledger)
        let pending = walSync.committed()
        let syncsBefore = walSync.syncs
        try write.run(ledger)
        #expect(try ledger.withConnection { $0.synchronous } == .full, "a lone writer: SQLite at FULL")
        #expect(walSync.commits.durable >= pending, "the call returned, so every commit before it is durable")
        #expect(walSync.syncs == syncsBefore + 1, "with nothing for SQLite to sync, the ledger must have synced")
    }

    @Test("a lone commit at FULL that wrote frames covers every earlier commit with SQLite's own sync")
    func framedCommitCoversEarlierCommits() throws {
        // Proves the other half of the rule above: SQLite's sync inside a FULL commit is an
        // fdatasync of the whole WAL, so it covers the pending commit too, and the ledger adds no
        // sync of its own.
        let folder = try TemporaryFolder()
        let (ledger, walSync) = try fullLedger(in: folder)
        defer { ledger.close() }
        try ledger.consume("t", promptTokens: 1)
        let pending = walSync.committed()
        let syncsBefore = walSync.syncs
        try ledger.consume("t", promptTokens: 1)
        #expect(walSync.commits.durable > pending)
        #expect(walSync.syncs == syncsBefore)
    }

    @Test("a failed sync fails its writes and refuses every later write until the ledger is reopened")
    func failedSyncRefusesWritesUntilReopened() throws {
        // Proves a failed fdatasync is not forgotten ("fsyncgate": after a failure the kernel may
        // have dropped the dirty pages, and the next sync can succeed without writing them). The
        // write whose sync failed is reported failed (SQLITE_IOERR_FSYNC); every later write,
        // whichever way it would sync, is refused with the same code, a message that says to
        // reopen, and records nothing; reads still work. A reopened ledger writes again, and a
        // retry of the failed write's key tells what the WAL kept.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let (ledger, walSync) = try fullLedger(in: folder)
        try ledger.consume("t", promptTokens: 1, idempotencyKey: "before")
        let failing = walSync.syncs + 1
        walSync.injectSyncFault { attempt in attempt == failing ? EIO : nil }
        // As if another writer had just waited: the ledger syncs the WAL itself, after the lock.
        ledger.transactionsSinceContention.store(0, ordering: .relaxed)
        let failed = try #require(thrownDatabaseError(at: path) {
            try ledger.consume("t", promptTokens: 1, idempotencyKey: "synced-failed")
        })
        #expect(failed.extendedCode == .ioErrorFsync)
        #expect(failed.message.contains("fdatasync of \(path)-wal failed"), "\(failed)")
        let eventsAfterFailure = try eventCount(at: path)

        for (call, lone) in [false, true].enumerated() {
            // `lone`: SQLite would sync inside the commit, which no fault of ours can reach.
            ledger.transactionsSinceContention.store(lone ? Ledger.contendedTransactionsMemory + 1 : 0, ordering: .relaxed)
            let refused = try #require(thrownDatabaseError(at: path) {
                try ledger.consume("t", promptTokens: 1, idempotencyKey: "refused-\(call)")
            })
            #expect(refused.extendedCode == .ioErrorFsync)
            #expect(refused.message.contains("reopen"), "\(refused)")
        }
        #expect(try eventCount(at: path) == eventsAfterFailure, "a refused write records nothing")
        #expect(try ledger.usage("t") != nil, "reads still work")
        ledger.close()

        let reopened = try Ledger(path: path)
        defer { reopened.close() }
        try reopened.consume("t", promptTokens: 1, idempotencyKey: "synced-failed")
        #expect(try !reopened.consume("t", promptTokens: 1, idempotencyKey: "refused-0").isReplay)
        #expect(try !reopened.consume("t", promptTokens: 1, idempotencyKey: "after").isReplay)
        #expect(try reopened.verify().isConsistent)
    }

    @Test("close() syncs what committed before it closes the connection, so no durable write is reported failed")
    func closeSyncsBeforeClosing() throws {
        // Proves the order of close(): a commit at NORMAL whose leader has not synced it yet
        // (counted by `committed()`, as between its commit and its sync) is covered when
        // close() returns, and the leader's sync that runs after close() then finds it durable
        // instead of failing on a WAL that closing the connection checkpointed and deleted.
        let folder = try TemporaryFolder()
        let (ledger, walSync) = try fullLedger(in: folder)
        try ledger.consume("t", promptTokens: 1)
        let pending = walSync.committed()
        ledger.close()
        #expect(walSync.commits.durable >= pending)
        #expect(throws: Never.self) { try walSync.sync(through: pending) }
    }

    @Test("a ledger opened with defaults is FULL: SQLite syncs a lone commit, and the ledger syncs every other before answering")
    func defaultsAreFull() throws {
        // Proves what guarantees FULL by default, both ways a commit becomes durable. The default
        // configuration asks for FULL. A lone commit runs with the writer connection at
        // `PRAGMA synchronous` = 2 (FULL: SQLite syncs inside the commit). Under contention the
        // connection reads 1 (NORMAL: SQLite does not sync), and each acknowledged write was
        // covered by a sync of the ledger's own begun after it was called, counted by the sync
        // fault hook (which fails nothing here).
        #expect(Ledger.Configuration().synchronous == .full)
        let folder = try TemporaryFolder()
        let ledger = try Ledger(path: folder.path("l.db"))
        defer { ledger.close() }
        let walSync = try #require(ledger.walSync, "a file ledger at FULL syncs the WAL itself under contention")
        let pragma = { try ledger.withConnection { try $0.prepare("PRAGMA synchronous").fetchOne { try $0[0] as Int64 } } }
        try ledger.consume("t", promptTokens: 1)
        #expect(try pragma() == 2)

        let syncsBegun = Atomic<Int>(0)
        walSync.injectSyncFault { _ in
            syncsBegun.add(1, ordering: .sequentiallyConsistent)
            return nil
        }
        for call in 0..<5 {
            ledger.transactionsSinceContention.store(0, ordering: .relaxed)
            let before = syncsBegun.load(ordering: .sequentiallyConsistent)
            try ledger.consume("t", promptTokens: 1, idempotencyKey: "contended-\(call)")
            #expect(syncsBegun.load(ordering: .sequentiallyConsistent) > before, "write \(call) was not covered by a sync")
            #expect(try pragma() == 1)
        }
    }
}

/// Writes that commit without appending a frame to the WAL.
enum FramelessWrite: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case idempotentReplay, settleReplay, resetOfUnknownThread, cleanupOfUnknownThread

    var testDescription: String { rawValue }

    /// What the write needs in the ledger first.
    func prepare(_ ledger: Ledger) throws {
        switch self {
        case .idempotentReplay:
            try ledger.consume("t", promptTokens: 1, idempotencyKey: "k")
        case .settleReplay:
            let hold = try ledger.reserve("t", tokens: 10)
            try ledger.settle(hold.reservation.id, promptTokens: 3, idempotencyKey: "settle")
        case .resetOfUnknownThread, .cleanupOfUnknownThread:
            try ledger.consume("t", promptTokens: 1)
        }
    }

    func run(_ ledger: Ledger) throws {
        switch self {
        case .idempotentReplay:
            #expect(try ledger.consume("t", promptTokens: 1, idempotencyKey: "k").isReplay)
        case .settleReplay:
            // Read on the ledger's connection, not through the feed: the feed syncs the WAL itself.
            let hold = try #require(try ledger.withConnection { connection in
                try connection.prepare("SELECT reservation_id FROM events WHERE reservation_id IS NOT NULL LIMIT 1")
                    .fetchOne { try $0[0] as Int64 }
            })
            #expect(try ledger.settle(hold, promptTokens: 3, idempotencyKey: "settle").consume.isReplay)
        case .resetOfUnknownThread:
            #expect(try ledger.resetThread("nobody") == nil)
        case .cleanupOfUnknownThread:
            #expect(try ledger.cleanupThread("nobody") == nil)
        }
    }
}

@Suite("The feed's sync of the WAL follows the writer's rules")
struct ReaderSyncTests {
    @Test("a failed sync for a feed read fails the read, and at FULL refuses every later write")
    func failedReaderSyncIsFinal() throws {
        // Proves the feed syncs through the ledger's own WALSync: a failure there is final for
        // writes too (fsyncgate), instead of being forgotten by a second, private sync.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let (ledger, walSync) = try fullLedger(in: folder)
        defer { ledger.close() }
        try ledger.consume("t", promptTokens: 1)
        let failing = walSync.syncs + 1
        walSync.injectSyncFault { attempt in attempt == failing ? EIO : nil }
        let readFailure = try #require(thrownDatabaseError(at: path) { _ = try ledger.events(after: 0, limit: 10) })
        #expect(readFailure.extendedCode == .ioErrorFsync)
        let before = try eventCount(at: path)
        let refused = try #require(thrownDatabaseError(at: path) { try ledger.consume("t", promptTokens: 1) })
        #expect(refused.extendedCode == .ioErrorFsync)
        #expect(try eventCount(at: path) == before)
    }
}

@Suite("WALSync: callers wait on a running sync together, and a sync covers what was written before it began")
struct WALSyncWaitingTests {
    /// A WAL sync of a fresh FULL ledger whose next sync blocks until `release` is signalled,
    /// and a semaphore signalled once that sync has begun.
    private func blockedSync(_ walSync: WALSync) -> (started: DispatchSemaphore, release: DispatchSemaphore) {
        let started = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let blocking = Atomic<Bool>(true)
        walSync.injectSyncFault { _ in
            if blocking.exchange(false, ordering: .relaxed) {
                started.signal()
                release.wait()
            }
            return nil
        }
        return (started, release)
    }

    @Test("sixteen callers whose commits a running sync covers all return after it, with no sync of their own")
    func coveredCallersShareTheRunningSync() throws {
        // Proves the waiting rule: callers that arrive during a sync wait for it (not for a lock
        // held across it), and each finds its commit covered when it ends. Sixteen commits are
        // counted before the sync begins; exactly one sync runs for all of them.
        let folder = try TemporaryFolder()
        let (ledger, walSync) = try fullLedger(in: folder)
        defer { ledger.close() }
        let commits = (0..<16).map { _ in walSync.committed() }
        let (started, release) = blockedSync(walSync)
        let syncsBefore = walSync.syncs
        let first = DispatchSemaphore(value: 0)
        Thread {
            try? walSync.sync(through: commits[0])
            first.signal()
        }.start()
        started.wait()
        let returned = DispatchSemaphore(value: 0)
        for commit in commits.dropFirst() {
            Thread {
                try? walSync.sync(through: commit)
                returned.signal()
            }.start()
        }
        #expect(walSync.syncs == syncsBefore, "the running sync has not ended; syncs is readable meanwhile")
        release.signal()
        first.wait()
        for _ in commits.dropFirst() { returned.wait() }
        #expect(walSync.syncs == syncsBefore + 1)
        #expect(walSync.commits.durable >= commits.last!)
    }

    @Test("syncFile during a running sync waits for a sync that begins after its call")
    func syncFileWaitsForALaterSync() throws {
        // Proves syncFile's rule: a sync already running may have begun before the frames it
        // must cover, so syncFile does not take it; it returns only after a second sync.
        let folder = try TemporaryFolder()
        let (ledger, walSync) = try fullLedger(in: folder)
        defer { ledger.close() }
        let commit = walSync.committed()
        let (started, release) = blockedSync(walSync)
        let syncsBefore = walSync.syncs
        let first = DispatchSemaphore(value: 0)
        Thread {
            try? walSync.sync(through: commit)
            first.signal()
        }.start()
        started.wait()
        let fileSynced = DispatchSemaphore(value: 0)
        Thread {
            try? walSync.syncFile()
            fileSynced.signal()
        }.start()
        release.signal()
        first.wait()
        fileSynced.wait()
        #expect(walSync.syncs == syncsBefore + 2)
    }

    @Test("close() during a running sync waits for it, and a later sync opens the file again")
    func closeWaitsForTheRunningSync() throws {
        // Proves the descriptor is never closed under a running fdatasync: close() returns only
        // after the sync has ended (and succeeded), and the next sync still works.
        let folder = try TemporaryFolder()
        let (ledger, walSync) = try fullLedger(in: folder)
        defer { ledger.close() }
        let commit = walSync.committed()
        let (started, release) = blockedSync(walSync)
        let synced = Atomic<Bool>(false)
        let syncReturned = DispatchSemaphore(value: 0)
        Thread {
            if (try? walSync.sync(through: commit)) != nil { synced.store(true, ordering: .relaxed) }
            syncReturned.signal()
        }.start()
        started.wait()
        let closed = DispatchSemaphore(value: 0)
        Thread {
            walSync.close()
            closed.signal()
        }.start()
        #expect(closed.wait(timeout: .now() + .milliseconds(200)) == .timedOut, "close() waits for the running sync")
        release.signal()
        closed.wait()
        syncReturned.wait()
        let syncSucceeded = synced.load(ordering: .relaxed)
        #expect(syncSucceeded)
        try walSync.sync(through: walSync.committed())
        #expect(walSync.writesRefused == nil)
    }
}
