@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Synchronization
import Testing

/// The ledger's cross-process write lock (`<ledger>.lock`) held the way another process holds
/// it: `flock(2)` on a descriptor of its own (a separate open file description, which conflicts
/// with the ledger's as another process's would), as by a writer that was stopped (SIGSTOP)
/// while holding it.
private final class ForeignLockHolder: Sendable {
    private let descriptor: Mutex<Int32>

    init(ledgerPath: String) throws {
        let opened = open(ledgerPath + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        try #require(opened >= 0)
        try #require(flock(opened, LOCK_EX | LOCK_NB) == 0, "the lock was not free")
        descriptor = Mutex(opened)
        // Lets go in any case after the hang guard: a writer that waits without bound then
        // ends its wait, and the test fails on its expectations instead of hanging the run.
        DispatchQueue.global().asyncAfter(deadline: .now() + hangGuardSeconds / 4) { [self] in release() }
    }

    /// Lets the lock go. Idempotent.
    func release() {
        descriptor.withLock { descriptor in
            if descriptor >= 0 { close(descriptor) }
            descriptor = -1
        }
    }

    deinit { release() }
}

/// Whether some writer of the ledger at `path` waits for its write lock: a waiter holds the
/// queue lock (`<ledger>.lock-queue`) until it gets the write lock.
private func writerWaits(ledgerPath path: String) -> Bool {
    let queue = open(path + ".lock-queue", O_RDWR | O_CLOEXEC)
    guard queue >= 0 else { return false }
    defer { close(queue) }
    if flock(queue, LOCK_EX | LOCK_NB) == 0 {
        flock(queue, LOCK_UN)
        return false
    }
    return errno == EWOULDBLOCK
}

@Suite("The cross-process write lock: bounded waits, reads never behind it")
struct WriterLockTests {
    @Test("a write fails busy once another process has held the write lock for the busy timeout")
    func heldLockFailsBusy() throws {
        // Proves a frozen writer of another process cannot stall this one without bound: the
        // wait for `<ledger>.lock` ends after the configured busy timeout with
        // LedgerError.database(SQLITE_BUSY), the message naming the lock; nothing is recorded,
        // and once the lock is free the same write succeeds for the first time.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(busyTimeoutMilliseconds: 100))
        defer { ledger.close() }
        try ledger.consume("t", promptTokens: 1)
        let holder = try ForeignLockHolder(ledgerPath: path)
        let busy = try #require(thrownDatabaseError(at: path) {
            try ledger.consume("t", promptTokens: 1, idempotencyKey: "k")
        })
        #expect(busy.code == .busy, "\(busy)")
        #expect(busy.message.contains("\(path).lock"), "\(busy)")
        #expect(LedgerError.database(path: path, StorageFailure(busy)).isBusy, "the CLI maps it to exit 1, the server to 503")
        holder.release()
        #expect(try !ledger.consume("t", promptTokens: 1, idempotencyKey: "k").isReplay)
        #expect(try ledger.usage("t")?.requestCount == 2)
    }

    @Test("a read is answered while a write of the same ledger waits for another process's write lock")
    func readsDoNotWaitForTheWriteLock() throws {
        // Proves the wait for the cross-process lock does not hold the connection: while a
        // writer of this ledger waits for a lock another process holds, a read of the same
        // ledger returns, and the writer is still waiting when it does; the write then succeeds
        // once the lock is free.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(busyTimeoutMilliseconds: 60_000))
        defer { ledger.close() }
        try ledger.consume("t", promptTokens: 1)
        let holder = try ForeignLockHolder(ledgerPath: path)
        let written = Atomic(false)
        let writeError = Mutex<String?>(nil)
        let writer = DispatchGroup()
        writer.enter()
        Thread {
            do {
                try ledger.consume("t", promptTokens: 1)
            } catch {
                writeError.withLock { $0 = "\(error)" }
            }
            written.store(true, ordering: .sequentiallyConsistent)
            writer.leave()
        }.start()
        try #require(eventually { writerWaits(ledgerPath: path) })
        #expect(try ledger.usage("t")?.requestCount == 1)
        let writtenBeforeTheReadReturned = written.load(ordering: .sequentiallyConsistent)
        #expect(!writtenBeforeTheReadReturned, "the read waited until the write was done")
        holder.release()
        try #require(writer.wait(timeout: .now() + hangGuardSeconds) == .success)
        #expect(writeError.withLock { $0 } == nil)
        #expect(try ledger.usage("t")?.requestCount == 2)
    }
}
