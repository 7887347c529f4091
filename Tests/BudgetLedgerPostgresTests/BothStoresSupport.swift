import BudgetLedger
import BudgetLedgerPostgres
import BudgetLedgerStore
@testable import BudgetLedgerServer
import Foundation
import LedgerSQLite
import PostgresNIO

/// The two stores behind the `LedgerStore` seam. A behaviour test takes one as its argument
/// (`@Test(arguments: StoreKind.allCases)`), so one test body runs on both.
enum StoreKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case sqlite
    case postgres

    var description: String { rawValue }

    /// The name the store gives itself (`LedgerStore.storeName`).
    var storeName: String { self == .sqlite ? "SQLite" : "PostgreSQL" }
}

/// One store under test: the seam, the clock it reads, and read-only SQL on the store's own
/// database (for its views), every column read as text and NULL as nil.
struct StoreUnderTest: Sendable {
    let kind: StoreKind
    let store: any LedgerStore
    let clock: TestClock
    let rows: @Sendable (_ sql: String) async throws -> [[String?]]

    /// Every event of the feed (at most 10,000: a test's ledger is smaller).
    func feed() async throws -> [LedgerEvent] {
        try await store.events(after: 0, limit: LedgerLimits.feedPageLimitMax).events
    }

    /// The store as the server sees it, with what only the server calls (`/metrics`).
    func serverStore() throws -> any ServerLedgerStore {
        guard let store = store as? any ServerLedgerStore else {
            throw HarnessError("\(store.storeName): \(type(of: store)) is not a server store")
        }
        return store
    }
}

/// Runs `body` on a fresh store of `kind`, opened by its location as a library user opens it
/// (`openLedgerStore`): a new SQLite file's path, or the URL of a new database of the test
/// cluster; both read `clock`. The store is closed when `body` ends, whether it throws or not.
func withStore<Result: Sendable>(
    _ kind: StoreKind, clock: TestClock = TestClock(), _ body: (StoreUnderTest) async throws -> Result
) async throws -> Result {
    let place = try await kind == .sqlite ? newSQLiteLocation() : newPostgresLocation()
    defer { place.remove() }
    let options = LedgerStoreOptions(
        // 64 waiting calls: the concurrency test's 64 callers are all admitted.
        sqliteThreadCount: 4, sqliteWaitingCallsMax: 64,
        // `.normal`: a test has no power loss to survive, and 2 shared cores have no syncs to spare.
        sqlite: Ledger.Configuration(synchronous: .normal, clock: clock.read),
        postgres: PostgresLedger.Configuration(clock: clock.read))
    let store = try await openLedgerStore(place.location, options: options)
    let subject = StoreUnderTest(kind: kind, store: store, clock: clock, rows: place.rows)
    do {
        // The location alone chose the store: it must be the one the test is about.
        guard store.storeName == kind.storeName else { throw HarnessError("\(place.location) opened \(store.storeName)") }
        let result = try await body(subject)
        await store.close()
        return result
    } catch {
        await store.close()
        throw error
    }
}

/// Where a fresh store is, how to read its views, and how to remove what the harness made.
private struct StoreLocation: Sendable {
    let location: String
    let rows: @Sendable (_ sql: String) async throws -> [[String?]]
    let remove: @Sendable () -> Void
}

/// A new file in a folder of its own; the views are read by a second connection.
private func newSQLiteLocation() throws -> StoreLocation {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("both-stores-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let path = folder.appendingPathComponent("ledger.db").path
    return StoreLocation(
        location: path, rows: { sql in try sqliteRows(sql, path: path) },
        remove: { try? FileManager.default.removeItem(at: folder) })
}

/// A new database whose default collation is ICU's en-US, as a production database's often is
/// (the test cluster's own databases are C: `initdb --no-locale`). Under C, text orders by bytes
/// as SQLite's does, so a query missing its `COLLATE "C"` would still pass; under en-US
/// ("a" < "b" < "B") it orders otherwise and the tests see it. The views are read through a
/// superuser's session.
private func newPostgresLocation() async throws -> StoreLocation {
    let server = try await PostgresTestCluster.shared()
    let name = "both_stores_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
    try await PostgresTestCluster.withAdminClient(server) { session in
        try await session.query(
            PostgresQuery(unsafeSQL: "CREATE DATABASE \(name) TEMPLATE template0 LOCALE 'C' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"))
    }
    let url = server.url(database: name)
    return StoreLocation(location: url, rows: { sql in try await postgresRows(sql, url: url) }, remove: {})
}

/// `sql`'s rows through a read-only connection of its own on the ledger's file.
private func sqliteRows(_ sql: String, path: String) throws -> [[String?]] {
    let connection = try Connection(path: path, options: Connection.Options(readOnly: true))
    defer { connection.close() }
    let statement = try connection.prepare(sql)
    let columns = statement.columnCount
    return try statement.fetchAll { row in
        (0..<columns).map { column -> String? in
            switch row.value(at: column) {
            case .null: nil
            case .integer(let value): String(value)
            case .real(let value): String(value)
            case .text(let value): value
            case .blob(let value): value.base64EncodedString()
            }
        }
    }
}

/// `sql`'s rows through a superuser's session on the ledger's database; `sql` casts every
/// column to text (`CAST(… AS TEXT)` reads the same on both stores).
private func postgresRows(_ sql: String, url: String) async throws -> [[String?]] {
    do {
        return try await withDatabase(url) { session in
            var rows: [[String?]] = []
            for try await row in try await session.query(PostgresQuery(unsafeSQL: sql)) {
                rows.append(try row.map { cell in try cell.decode(String?.self) })
            }
            return rows
        }
    } catch let error as PSQLError {
        // A PSQLError describes itself generically; a test's own SQL failing should say why.
        throw HarnessError("\(String(reflecting: error))\nwhile running: \(sql)")
    }
}

/// A failure of the harness itself (its SQL, or an answer it cannot read), said in full.
struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Calls through the seam, with typed answers

/// The server's answer to a consume (`ConsumeResult.jsonBytes`), decoded: what a client reads.
struct ConsumeAnswer: Decodable, Equatable {
    struct Budget: Decodable, Equatable {
        let threadId: String
        let maxTokens: Int64
        let promptTokens: Int64
        let completionTokens: Int64
        let totalTokens: Int64
        let remaining: Int64
        let requestCount: Int64
        let isExhausted: Bool
        let heldTokens: Int64
        let remainingAfterHolds: Int64
    }

    struct Crossing: Decodable, Equatable {
        let thresholdPercent: Int
        let severity: String
        let tokensUsed: Int64
        let tokensRemaining: Int64
        let maxTokens: Int64
    }

    struct Event: Decodable, Equatable {
        let id: Int64
        let timestamp: String
        let agentId: String?
        let model: String?
        let provider: String?
        let latencyMs: Int64?
        /// USD, an exact decimal on the wire; nil when the model has no price.
        let cost: Decimal?
        let reservationId: Int64?
    }

    let budget: Budget
    let crossedThresholds: [Crossing]
    let event: Event
    let replayed: Bool
}

extension LedgerStore {
    /// A consume (`checked`: a check-and-consume) through the server's hot path, decoded.
    @discardableResult
    func consume(
        _ threadID: String, prompt: Int64, completion: Int64 = 0, key: String? = nil, usage: UsageDetails = .none,
        checked: Bool = false
    ) async throws -> ConsumeAnswer {
        let answer = try await consumeAnswer(
            threadID, promptTokens: prompt, completionTokens: completion, idempotencyKey: key, usage: usage, checked: checked)
        let decoded = try JSONDecoder().decode(ConsumeAnswer.self, from: Data(answer.json))
        guard decoded.replayed == answer.isReplay else {
            throw HarnessError("\(storeName): the body says replayed \(decoded.replayed), the flag \(answer.isReplay)")
        }
        return decoded
    }

    /// A hold with the defaults of `Ledger.reserve` (ttl 300 s).
    func reserve(_ threadID: String, tokens: Int64, ttlSeconds: Int64 = 300, usage: UsageDetails = .none, key: String? = nil)
        async throws -> ReserveResult
    {
        try await reserve(threadID, tokens: tokens, ttlSeconds: ttlSeconds, usage: usage, idempotencyKey: key)
    }

    /// A settle named by what a test varies.
    @discardableResult
    func settle(_ reservationID: Int64, prompt: Int64, completion: Int64 = 0, key: String? = nil, usage: UsageDetails = .none)
        async throws -> SettleResult
    {
        try await settle(reservationID, promptTokens: prompt, completionTokens: completion, idempotencyKey: key, usage: usage)
    }
}

// MARK: - Outcomes

/// How a call ended, for an exact expectation on either store: a `LedgerError`'s case with what
/// a caller reads of it, a refusal with all its figures, or anything else as text.
enum Outcome: Equatable, Sendable, CustomStringConvertible {
    case success
    case invalidInput(field: String)
    case conflict(String)
    case exhausted(BudgetExhaustedError)
    case reservationNotFound(Int64)
    case threadNotFound(String)
    case other(String)

    var description: String {
        switch self {
        case .success: "success"
        case .invalidInput(let field): "invalidInput(\(field))"
        case .conflict(let reason): "conflict(\(reason))"
        case .exhausted(let error): "exhausted(\(error))"
        case .reservationNotFound(let id): "reservationNotFound(\(id))"
        case .threadNotFound(let id): "threadNotFound(\(id))"
        case .other(let text): text
        }
    }
}

/// How `body` ended.
/// The outcomes of `callers` concurrent tasks, each making `callsEach` calls of `call` in turn.
func race(callers: Int, callsEach: Int, _ call: @escaping @Sendable () async throws -> Void) async -> [Outcome] {
    await withTaskGroup(of: [Outcome].self) { group in
        for _ in 0..<callers {
            group.addTask {
                var outcomes: [Outcome] = []
                for _ in 0..<callsEach { outcomes.append(await attempt(call)) }
                return outcomes
            }
        }
        return await group.reduce(into: []) { $0 += $1 }
    }
}

func attempt(_ body: () async throws -> Void) async -> Outcome {
    do {
        try await body()
        return .success
    } catch let error as BudgetExhaustedError {
        return .exhausted(error)
    } catch let error as LedgerError {
        switch error {
        case .invalidInput(let field, _): return .invalidInput(field: field)
        case .conflict(let reason): return .conflict(reason)
        case .reservationNotFound(let id): return .reservationNotFound(id)
        case .threadNotFound(let id): return .threadNotFound(id)
        default: return .other("LedgerError: \(error)")
        }
    } catch {
        return .other("\(type(of: error)): \(error)")
    }
}
