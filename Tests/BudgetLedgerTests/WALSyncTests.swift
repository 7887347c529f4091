@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Synchronization
import Testing

@Suite("FULL durability: the WAL is synced after the write lock, before the caller hears")
struct WALSyncTests {
    @Test("at FULL every acknowledged write's commit is synced; SQLite itself commits at NORMAL")
    func acknowledgedMeansSynced() throws {
        // Proves the ledger's FULL promise now that SQLite does not sync inside the commit: by
        // the time consume returns, the WAL sync has covered its commit (durable == written),
        // and the connection really runs at NORMAL (so the sync is ours, not SQLite's).
        let folder = try TemporaryFolder()
        let ledger = try Ledger(path: folder.path("l.db"), configuration: Ledger.Configuration(synchronous: .full))
        defer { ledger.close() }
        let walSync = try #require(ledger.walSync)
        for call in 0..<20 {
            try ledger.consume("t", promptTokens: 10, idempotencyKey: "k\(call)")
            let commits = walSync.commits
            #expect(commits.written >= Int64(call + 1))
            #expect(commits.durable == commits.written)
        }
        let level = try ledger.withConnection { try $0.cachedStatement("PRAGMA synchronous").fetchOne { try $0[0] as Int64 } }
        #expect(level == 1)  // NORMAL
        #expect(walSync.syncs >= 20)
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
        let ledger = try Ledger(path: folder.path("l.db"), configuration: Ledger.Configuration(synchronous: .full))
        defer { ledger.close() }
        let walSync = try #require(ledger.walSync)
        let notCovered = Mutex(0)
        let group = DispatchGroup()
        for thread in 0..<64 {
            group.enter()
            Thread {
                defer { group.leave() }
                for call in 0..<25 {
                    // This call's commit comes after every commit counted before it began, so
                    // once it returns the durable mark must be past that count.
                    let writtenBefore = walSync.commits.written
                    guard (try? ledger.consume("t\(thread % 8)", promptTokens: 1, idempotencyKey: "k\(thread)-\(call)")) != nil
                    else { continue }
                    if walSync.commits.durable <= writtenBefore { notCovered.withLock { $0 += 1 } }
                }
            }.start()
        }
        group.wait()
        #expect(notCovered.withLock { $0 } == 0)
        #expect(try eventCount(at: folder.path("l.db")) >= 64 * 25)
        let commits = walSync.commits
        #expect(commits.durable == commits.written)
        // Transactions since open: the 64 × 25 consumes, the thread opens among them, and the
        // sync of the migrations at open.
        let transactions = ledger.statistics.transactions
        #expect(Int64(walSync.syncs) < transactions, "syncs \(walSync.syncs), transactions \(transactions)")
    }

    @Test("a WAL deleted under the ledger fails the write with the sync error instead of acknowledging it")
    func failedSyncIsNotAcknowledged() throws {
        // Proves a failed sync is reported, not swallowed: someone removes the WAL (SQLite keeps
        // writing to the unlinked file, whose frames are gone once it closes) and puts a folder
        // in its place, so the sync cannot reach it. The consume must throw an I/O error that
        // names the WAL, not return a result nobody may rely on.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .full))
        defer { ledger.close() }
        try ledger.consume("t", promptTokens: 1)
        try FileManager.default.removeItem(atPath: path + "-wal")
        try FileManager.default.createDirectory(atPath: path + "-wal", withIntermediateDirectories: false)
        let error = #expect(throws: LedgerError.self) { try ledger.consume("t", promptTokens: 1) }
        guard case .database(_, let sqliteError)? = error else {
            Issue.record("expected a database error, got \(String(describing: error))")
            return
        }
        #expect(sqliteError.extendedCode == .ioErrorFsync)
        #expect(sqliteError.message.contains("l.db-wal"))
    }
}
