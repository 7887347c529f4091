import Foundation
import Testing

@testable import LedgerSQLite

@Suite("Two connections to one file")
struct ConcurrencyTests {
    @Test("A second connection sees committed data only, never an open transaction's writes")
    func readersSeeCommittedDataOnly() throws {
        // Proves isolation between connections: uncommitted rows are invisible, committed rows visible.
        try withTemporaryDirectory { directory in
            let writer = try Connection(path: directory.path())
            defer { writer.close() }
            let reader = try Connection(path: directory.path())
            defer { reader.close() }
            try writer.execute(sql: "CREATE TABLE t (x INTEGER)")
            try writer.execute(sql: "BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
            #expect(try writer.integer("SELECT count(*) FROM t") == 1)
            #expect(try reader.integer("SELECT count(*) FROM t") == 0)
            try writer.execute(sql: "COMMIT")
            #expect(try reader.integer("SELECT count(*) FROM t") == 1)
        }
    }

    @Test("A reader is not blocked by an open write transaction (WAL)")
    func readerNotBlockedByWriter() throws {
        // Proves WAL lets a reader with no busy timeout read while another connection holds the write lock.
        try withTemporaryDirectory { directory in
            let writer = try Connection(path: directory.path())
            defer { writer.close() }
            try writer.execute(sql: "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)")
            let reader = try Connection(path: directory.path(), options: Connection.Options(busyTimeoutMilliseconds: 0))
            defer { reader.close() }
            try writer.transaction {
                try writer.execute("INSERT INTO t VALUES (?)", [Int64(2)])
                #expect(try reader.integer("SELECT count(*) FROM t") == 1)
            }
        }
    }

    @Test("SQLITE_BUSY surfaces when another connection holds the write lock beyond the busy timeout")
    func busySurfaces() throws {
        // Proves a writer that cannot get the lock within its timeout gets an isBusy error, is left
        // in autocommit, and can write once the lock is released.
        try withTemporaryDirectory { directory in
            let holder = try Connection(path: directory.path())
            defer { holder.close() }
            try holder.execute(sql: "CREATE TABLE t (x INTEGER)")
            let waiter = try Connection(
                path: directory.path(), options: Connection.Options(busyTimeoutMilliseconds: 50))
            defer { waiter.close() }

            try holder.execute(sql: "BEGIN IMMEDIATE")
            let error = try #require(throws: SQLiteError.self) {
                try waiter.transaction(.immediate) {
                    try waiter.execute("INSERT INTO t VALUES (?)", [Int64(1)])
                }
            }
            #expect(error.isBusy)
            #expect(error.code == .busy)
            #expect(error.sql == "BEGIN IMMEDIATE TRANSACTION")
            #expect(waiter.isAutocommit)

            try holder.execute(sql: "COMMIT")
            try waiter.transaction(.immediate) {
                try waiter.execute("INSERT INTO t VALUES (?)", [Int64(1)])
            }
            #expect(try holder.integer("SELECT count(*) FROM t") == 1)
        }
    }

    @Test("A writer waits out another connection's write lock released within its busy timeout")
    func busyIsWaitedOut() throws {
        // Proves the busy timeout of Options makes BEGIN IMMEDIATE wait for the lock instead of failing:
        // the waiting writer gets the lock after the holder commits and sees the holder's row.
        try withTemporaryDirectory { directory in
            let path = directory.path()
            try Connection(path: path).execute(sql: "CREATE TABLE t (x INTEGER)")
            let lockTaken = DispatchSemaphore(value: 0)
            let waiterStarting = DispatchSemaphore(value: 0)
            let holder = BackgroundThread {
                // Connection is not Sendable: this thread opens and uses its own.
                let connection = try Connection(path: path)
                defer { connection.close() }
                try connection.transaction(.immediate) {
                    try connection.execute("INSERT INTO t VALUES (?)", [Int64(1)])
                    lockTaken.signal()
                    guard waitForSignal(waiterStarting) else { throw BodyError() }
                    // Hold the lock a little longer, so the waiter is blocked in BEGIN when it is released.
                    Thread.sleep(forTimeInterval: 0.1)
                }
            }
            try #require(waitForSignal(lockTaken))
            let waiter = try Connection(
                path: path, options: Connection.Options(busyTimeoutMilliseconds: 5_000))
            defer { waiter.close() }
            waiterStarting.signal()
            let seen = try waiter.transaction(.immediate) { () throws -> Int64 in
                let count = try waiter.integer("SELECT count(*) FROM t")
                try waiter.execute("INSERT INTO t VALUES (?)", [Int64(2)])
                return count
            }
            #expect(seen == 1)
            #expect(holder.join() == nil)
            #expect(try waiter.integer("SELECT count(*) FROM t") == 2)
        }
    }
}
