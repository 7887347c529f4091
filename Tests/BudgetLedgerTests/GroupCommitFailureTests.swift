@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Synchronization
import Testing

/// Writes queued in one group-commit batch, in a known order, on a ledger at `path`.
///
/// A first write holds the connection (its body waits inside its transaction) while the others
/// queue one after another, each only once the one before it is in the queue; releasing the
/// first write then runs all the others in one batch, in that order.
private final class Batch: Sendable {
    let ledger: Ledger
    private let gate = DispatchSemaphore(value: 0)
    private let entered = DispatchSemaphore(value: 0)
    private let finished = DispatchGroup()
    private let outcomes = Mutex<[Int: Result<String, any Error>]>([:])
    private let count = Mutex(0)

    init(_ ledger: Ledger) throws {
        self.ledger = ledger
        finished.enter()
        Thread { [self] in
            _ = try? ledger.write { [self] _ in
                entered.signal()
                gate.wait()
            }
            finished.leave()
        }.start()
        try #require(entered.wait(timeout: .now() + hangGuardSeconds) == .success)
    }

    /// Queues `body` as the batch's next write; returns its index.
    @discardableResult
    func add(_ body: @escaping @Sendable (Ledger) throws -> String) throws -> Int {
        let index = count.withLock { count in
            defer { count += 1 }
            return count
        }
        finished.enter()
        Thread { [self] in
            let outcome = Result { try body(ledger) }
            outcomes.withLock { $0[index] = outcome }
            finished.leave()
        }.start()
        try #require(eventually { ledger.writeQueue.withLock { $0.tickets.count } == index + 1 })
        return index
    }

    /// Lets the batch run and returns every write's outcome, by index.
    func run() throws -> [Result<String, any Error>] {
        gate.signal()
        try #require(finished.wait(timeout: .now() + hangGuardSeconds) == .success)
        return try outcomes.withLock { outcomes in
            try (0..<count.withLock { $0 }).map { try #require(outcomes[$0]) }
        }
    }
}

/// The `LedgerError.database` inside `outcome`, or nil (with an issue) for anything else.
private func databaseError(_ outcome: Result<String, any Error>, path: String, _ name: String) -> SQLiteError? {
    thrownDatabaseError(at: path) {
        let value = try outcome.get()
        Issue.record("\(name) returned \(value)")
    }
}

@Suite("Group commit: each caller of a failed batch hears its own truth")
struct GroupCommitFailureTests {
    @Test("when a write's database error rolls back the whole transaction, the others get that error, refusals their own")
    func transactionRolledBackEarly() throws {
        // Proves each caller of a batch whose transaction SQLite rolled back early (here a full
        // disk in a statement without a statement journal, which SQLite answers by rolling back
        // the whole transaction, as it does for I/O errors and out of memory) is told what
        // happened to its own write: a write refused before it (its savepoint ran) gets its
        // refusal; a write that succeeded before it was lost with the transaction and gets the
        // database error; the write that failed gets its own; a write queued after it never ran
        // and gets the database error too, which a retry answers, never another caller's refusal.
        // Nothing of the batch is recorded.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        do {
            let seed = try Ledger(path: path)
            try seed.setLimit("exhausted", maxTokens: 0)
            try seed.consume("lost", promptTokens: 1)
            seed.close()
        }
        let pages = try Connection(path: path).prepare("PRAGMA page_count").fetchOne { try $0[0] as Int64 } ?? 0
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(maxPageCount: pages + 64))
        defer { ledger.close() }
        let batch = try Batch(ledger)
        try batch.add { ledger in "\(try ledger.consume("lost", promptTokens: 1, idempotencyKey: "lost"))" }
        try batch.add { ledger in "\(try ledger.checkAndConsume("exhausted", promptTokens: 1))" }
        try batch.add { ledger in
            try ledger.write { connection in
                // One row, no trigger: no statement journal, so SQLITE_FULL rolls back the transaction.
                try connection.execute(sql: "CREATE TABLE filler (bytes BLOB)")
                try connection.execute(sql: "INSERT INTO filler VALUES (zeroblob(4000000))")
            }
            return "filled"
        }
        try batch.add { ledger in "\(try ledger.consume("never-ran", promptTokens: 1, idempotencyKey: "never-ran"))" }
        let outcomes = try batch.run()

        #expect(databaseError(outcomes[0], path: path, "the lost write")?.isFull == true)
        #expect(throws: BudgetExhaustedError(threadID: "exhausted", used: 0, maxTokens: 0, requestedTokens: 1)) {
            try outcomes[1].get()
        }
        #expect(databaseError(outcomes[2], path: path, "the failing write")?.isFull == true)
        #expect(databaseError(outcomes[3], path: path, "the write that never ran")?.isFull == true)
        #expect(try ledger.usage("lost")?.requestCount == 1, "the lost write is not recorded")
        #expect(try ledger.usage("never-ran") == nil)
        #expect(!(try ledger.consume("never-ran", promptTokens: 1, idempotencyKey: "never-ran").isReplay))
        #expect(try ledger.verify().isConsistent)
    }

    @Test("when a write's savepoint cannot be rolled back to, the whole batch fails and nothing of it commits")
    func failedRollbackToSavepointEndsTheBatch() throws {
        // Proves a savepoint that cannot be undone does not let its write commit with the others:
        // the body releases its own savepoint (so `ROLLBACK TO` finds none) and throws after
        // writing. The transaction is rolled back: every caller of the batch gets an error
        // (the write that ran before it the rollback's database error, the one after it too),
        // and none of their writes, the failed one's included, is in the ledger.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        defer { ledger.close() }
        try ledger.consume("before", promptTokens: 1)
        let batch = try Batch(ledger)
        try batch.add { ledger in "\(try ledger.consume("first", promptTokens: 1))" }
        try batch.add { ledger in
            try ledger.write { connection in
                try connection.execute(sql: "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (1, 'open', 'partial', 5)")
                try connection.execute(sql: "RELEASE SAVEPOINT ledger_savepoint_1")
                throw LedgerError.conflict("the body failed after writing")
            }
            return "released"
        }
        try batch.add { ledger in "\(try ledger.consume("last", promptTokens: 1))" }
        let outcomes = try batch.run()

        for (index, name) in ["first", "failed", "last"].enumerated() {
            let error = databaseError(outcomes[index], path: path, name)
            #expect(error?.code == .error, "\(name): \(String(describing: error))")
            #expect(error?.message.contains("no such savepoint") == true, "\(name): \(String(describing: error))")
        }
        for thread in ["first", "partial", "last"] {
            #expect(try ledger.usage(thread) == nil, "\(thread) was recorded")
        }
        #expect(try ledger.consume("last", promptTokens: 1).budget.requestCount == 1)
        #expect(try ledger.verify().isConsistent)
    }
}
