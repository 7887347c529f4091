@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Synchronization
import Testing

/// A FULL ledger in `folder` and its WAL sync.
private func fullLedger(in folder: TemporaryFolder) throws -> (Ledger, WALSync) {
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
        holder.lock()
        #expect(!holder.hasWaiter())
        let acquired = DispatchSemaphore(value: 0)
        Thread {
            other.lock()
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
        let error = #expect(throws: LedgerError.self) { try ledger.consume("t", promptTokens: 1) }
        guard case .database(_, let sqliteError)? = error else {
            Issue.record("expected a database error, got \(String(describing: error))")
            return
        }
        #expect(sqliteError.extendedCode == .ioErrorFsync)
        #expect(sqliteError.message.contains("l.db-wal was deleted"))
    }
}
