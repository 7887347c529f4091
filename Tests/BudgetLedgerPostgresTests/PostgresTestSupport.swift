import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import LedgerSQLite
import PostgresNIO
import Synchronization

/// A clock the test moves by hand, in microseconds (shared by the two stores of a parity test).
final class TestClock: Sendable {
    private let now = Mutex<Int64>(1_764_400_000_000_000)

    var read: @Sendable () -> Int64 {
        { [self] in now.withLock { $0 } }
    }

    func advance(microseconds: Int64) {
        now.withLock { $0 += microseconds }
    }
}

/// A PostgresLedger on a fresh database of the shared test cluster, closed after `body`.
func withPostgresLedger<Result>(
    maxTokensPerThread: Int64? = nil, configuration: PostgresLedger.Configuration = .init(),
    _ body: (PostgresLedger, String) async throws -> Result
) async throws -> Result {
    let url = try await PostgresTestCluster.freshDatabase()
    let ledger = try await PostgresLedger(url: url, maxTokensPerThread: maxTokensPerThread, configuration: configuration)
    do {
        let result = try await body(ledger, url)
        await ledger.close()
        return result
    } catch {
        await ledger.close()
        throw error
    }
}

/// The answers of the same calls on the two stores, for a parity test: each `step` runs the
/// SQLite call, then the PostgreSQL one, records both outcomes as text (`outcome`) and moves the
/// shared clock by 1 ms, so the next call happens later on both.
final class ParitySteps {
    private let clock: TestClock
    private(set) var steps: [(name: String, sqlite: String, postgres: String)] = []

    init(clock: TestClock) { self.clock = clock }

    func step<A, B>(_ name: String, _ sqlite: () throws -> A, _ postgres: () async throws -> B) async {
        let sqliteAnswer = await outcome { try sqlite() }
        let postgresAnswer = await outcome { try await postgres() }
        steps.append((name, sqliteAnswer, postgresAnswer))
        clock.advance(microseconds: 1_000)
    }
}

/// What a call did, in a form two stores' answers can be compared by: the value, or the error's text.
func outcome<Value>(_ body: () async throws -> Value) async -> String {
    do {
        return "ok \(try await body())"
    } catch {
        return "error \(String(describing: type(of: error))): \(error)"
    }
}

/// Runs `body` with a superuser's session on the database at `url` (a ledger's), for a test's own SQL.
@discardableResult
func withDatabase<Result: Sendable>(_ url: String, _ body: (AdminSession) async throws -> Result) async throws -> Result {
    let server = try await PostgresTestCluster.shared()
    return try await PostgresTestCluster.withAdminClient(server, database: String(url.split(separator: "/").last!), body)
}

/// The SQLSTATE `body` fails with ("no state" for a PostgreSQL error without one, the error's
/// text for any other error); nil when it succeeds.
func sqlState(_ body: () async throws -> Void) async -> String? {
    do {
        try await body()
        return nil
    } catch let error as PSQLError {
        return error.serverInfo?[.sqlState] ?? "no state"
    } catch {
        return "\(error)"
    }
}

/// The rows each of `queries` reads from the SQLite ledger file at `sqlitePath` and from the
/// PostgreSQL database at `postgresURL`, each row as its values' text joined by `|` (NULL for a
/// null), so that billing SQL can be compared across the stores as text.
func queryBothStores(sqlitePath: String, postgresURL: String, _ queries: [String]) async throws
    -> [(sqlite: [String], postgres: [String])]
{
    let connection = try Connection(path: sqlitePath)
    defer { connection.close() }
    let server = try await PostgresTestCluster.shared()
    let database = String(postgresURL.split(separator: "/").last!)
    return try await PostgresTestCluster.withAdminClient(server, database: database) { client in
        var answers: [(sqlite: [String], postgres: [String])] = []
        for query in queries {
            let statement = try connection.prepare(query)
            let columns = statement.columnCount
            let fromSQLite = try statement.fetchAll { row in
                (0..<columns).map { index in sqlText(row.value(at: index)) }.joined(separator: "|")
            }
            var fromPostgres: [String] = []
            let rows = try await client.query(PostgresQuery(unsafeSQL: query))
            for try await row in rows {
                fromPostgres.append(try row.map(sqlText(_:)).joined(separator: "|"))
            }
            answers.append((fromSQLite, fromPostgres))
        }
        return answers
    }
}

/// A PostgreSQL value as `sqlText(_: SQLiteValue)` writes the same value.
func sqlText(_ cell: PostgresCell) throws -> String {
    guard cell.bytes != nil else { return "NULL" }
    switch cell.dataType {
    case .int8: return String(try cell.decode(Int64.self))
    case .int4: return String(try cell.decode(Int32.self))
    case .float8: return String(try cell.decode(Double.self))
    default: return try cell.decode(String.self)
    }
}

/// A SQLite value as text: integers and reals in Swift's notation, NULL for null.
func sqlText(_ value: SQLiteValue) -> String {
    switch value {
    case .null: return "NULL"
    case .integer(let number): return String(number)
    case .real(let number): return String(number)
    case .text(let text): return text
    case .blob(let bytes): return "\(bytes)"
    }
}
