import Foundation
import Synchronization
import Testing

@testable import LedgerSQLite

/// A fresh, empty folder under the system temporary directory: one per test, so tests never share files.
struct TemporaryDirectory {
    let url: URL

    /// The path of the file called `name` inside the folder.
    func path(_ name: String = "test.sqlite") -> String {
        url.appendingPathComponent(name).path
    }
}

/// Runs `body` with a fresh folder and removes the folder afterwards, whether `body` returns or throws.
func withTemporaryDirectory<Result>(_ body: (TemporaryDirectory) throws -> Result) throws -> Result {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("LedgerSQLiteTests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: url) }
    return try body(TemporaryDirectory(url: url))
}

/// Opens a connection on a new database file in a fresh folder, runs `body`, then closes the
/// connection and removes the folder.
func withConnection<Result>(
    options: Connection.Options = Connection.Options(),
    _ body: (Connection, TemporaryDirectory) throws -> Result
) throws -> Result {
    try withTemporaryDirectory { directory in
        let connection = try Connection(path: directory.path(), options: options)
        defer { connection.close() }
        return try body(connection, directory)
    }
}

extension Connection {
    /// The first column of the first row of `sql`, raw; nil when there is no row.
    /// Uses an uncached statement so that tests of the statement cache see only their own entries.
    func scalar(_ sql: String, _ arguments: [any SQLiteBindable] = []) throws -> SQLiteValue? {
        try prepare(sql).fetchOne(arguments) { row in row.value(at: 0) }
    }

    /// The first column of the first row of `sql` as an integer (the query must return one).
    func integer(_ sql: String, _ arguments: [any SQLiteBindable] = []) throws -> Int64 {
        let value = try #require(try prepare(sql).fetchOne(arguments) { row in try row[0] as Int64 })
        return value
    }

    /// The first column of every row of `sql` as text.
    func texts(_ sql: String, _ arguments: [any SQLiteBindable] = []) throws -> [String] {
        try prepare(sql).fetchAll(arguments) { row in try row[0] as String }
    }
}

/// A thread that runs one closure, for tests that need two connections used at the same time.
///
/// `Connection` is not `Sendable`, so each closure opens its own connection on its own thread.
final class BackgroundThread: Sendable {
    private let finished = DispatchSemaphore(value: 0)
    private let failure = Mutex<String?>(nil)

    /// Starts `body` on a new thread at once.
    init(_ body: @escaping @Sendable () throws -> Void) {
        let thread = Thread { [self] in
            do {
                try body()
            } catch {
                let description = String(describing: error)
                failure.withLock { $0 = description }
            }
            finished.signal()
        }
        thread.start()
    }

    /// Waits for the thread to finish and returns the description of the error it threw, or nil.
    ///
    /// The long limit only keeps a broken test from hanging the whole run; it is not a timing assertion.
    func join() -> String? {
        guard finished.wait(timeout: .now() + hangGuardSeconds) == .success else {
            return "the background thread did not finish"
        }
        return failure.withLock { $0 }
    }
}

/// How long a test waits for another thread before giving up: a guard against hangs, never a measurement.
let hangGuardSeconds: Double = 60

/// Waits for `semaphore`, failing the wait (instead of hanging) when it is never signalled.
func waitForSignal(_ semaphore: DispatchSemaphore) -> Bool {
    semaphore.wait(timeout: .now() + hangGuardSeconds) == .success
}

/// A value shared between test threads, behind a lock.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) {
        mutex = Mutex(value)
    }

    /// Runs `body` with exclusive access to the value.
    func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result {
        mutex.withLock { value in body(&value) }
    }
}
