import BudgetLedger
import Foundation
import LedgerSQLite
import Synchronization

/// A temporary folder removed when the test ends.
final class TemporaryFolder: Sendable {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("budget-ledger-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(at: url)
    }

    /// A path inside the folder.
    func path(_ name: String) -> String {
        url.appendingPathComponent(name).path
    }
}

/// A clock the test moves by hand, in microseconds.
final class ManualClock: Sendable {
    private let now = Mutex<Int64>(1_764_400_000_000_000)

    var read: @Sendable () -> Int64 {
        { [self] in now.withLock { $0 } }
    }

    func advance(microseconds: Int64) {
        now.withLock { $0 += microseconds }
    }

    /// Moves the clock to `microseconds` (UTC since 1970), forward or back.
    func set(microseconds: Int64) {
        now.withLock { $0 = microseconds }
    }
}

/// Counts rows of `events` through a raw connection, bypassing the ledger.
/// Every row of each of `tables` in the ledger file at `path`, as text (every column, quoted),
/// ordered by the first column (`events` by id): for tests that compare two ledgers table by table.
func tableContents(at path: String, tables: [String]) throws -> [String: [String]] {
    let connection = try Connection(path: path)
    defer { connection.close() }
    var contents: [String: [String]] = [:]
    for table in tables {
        let columns = try connection.prepare("SELECT name FROM pragma_table_info(?) ORDER BY cid")
            .fetchAll([table]) { try $0[0] as String }
        let row = columns.map { "quote(\($0))" }.joined(separator: " || '|' || ")
        contents[table] = try connection.prepare("SELECT \(row) FROM \(table) ORDER BY 1").fetchAll { try $0[0] as String }
    }
    return contents
}

func eventCount(at path: String) throws -> Int64 {
    let connection = try Connection(path: path)
    defer { connection.close() }
    return try connection.prepare("SELECT count(*) FROM events").fetchOne { try $0[0] as Int64 } ?? -1
}

/// Runs `body(index)` on `count` real threads at once and returns when all have finished.
///
/// Real threads, not `DispatchQueue.concurrentPerform`, which runs only as many at once as
/// there are cores: two callers alternating need never meet in a transaction.
func onThreads(_ count: Int, _ body: @escaping @Sendable (_ index: Int) -> Void) {
    let finished = DispatchGroup()
    for index in 0..<count {
        finished.enter()
        Thread {
            body(index)
            finished.leave()
        }.start()
    }
    finished.wait()
}

/// A `LedgerError`'s case without its payload (`SQLiteError` is not `Equatable`), so that a test
/// names the case the contract promises instead of accepting any `LedgerError`.
enum LedgerErrorCase: Equatable, CustomStringConvertible {
    case invalidInput(field: String)
    case threadNotFound
    case reservationNotFound
    case priceNotFound
    case conflict
    case closed
    case database
    case incompatible
    /// Not a `LedgerError` at all, or no error.
    case other(String)

    var description: String {
        switch self {
        case .invalidInput(let field): return "invalidInput(\(field))"
        case .other(let text): return text
        // Not "\(self)": that calls this property again, without end (a crash on a failed expectation).
        case .threadNotFound: return "threadNotFound"
        case .reservationNotFound: return "reservationNotFound"
        case .priceNotFound: return "priceNotFound"
        case .conflict: return "conflict"
        case .closed: return "closed"
        case .database: return "database"
        case .incompatible: return "incompatible"
        }
    }
}

/// The case of the `LedgerError` that `body` throws; `.other` when it throws something else or nothing.
func ledgerErrorCase(_ body: () throws -> Void) -> LedgerErrorCase {
    do {
        try body()
        return .other("no error")
    } catch let error as LedgerError {
        switch error {
        case .invalidInput(let field, _): return .invalidInput(field: field)
        case .threadNotFound: return .threadNotFound
        case .reservationNotFound: return .reservationNotFound
        case .priceNotFound: return .priceNotFound
        case .conflict: return .conflict
        case .closed: return .closed
        case .database: return .database
        case .incompatible: return .incompatible
        }
    } catch {
        return .other("\(type(of: error)): \(error)")
    }
}

/// A copy of the ledger at `path` (`VACUUM INTO` `copy`, replaced if there) with `sql` run on it
/// through a plain connection: damage behind the ledger's back, for verify to find.
func damagedCopy(of path: String, at copy: String, running sql: String) throws {
    try? FileManager.default.removeItem(atPath: copy)
    let source = try Connection(path: path)
    try source.execute("VACUUM INTO ?", [copy])
    source.close()
    let raw = try Connection(path: copy)
    defer { raw.close() }
    try raw.execute(sql: sql)
}
