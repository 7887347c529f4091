import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import NIOPosix

/// Opens the ledger at `location` as one asynchronous API, whichever store holds it.
///
/// `location` is a `postgres://` or `postgresql://` URL naming a database (`PostgresLedger(url:)`:
/// it connects and applies pending migrations), or else a SQLite file path, or `:memory:`
/// (`Ledger(path:)` behind a `SQLiteLedgerStore`). Opening a file path creates a missing file
/// (and migrates it), as `Ledger(path:)` does and as PostgreSQL's migrations fill an empty
/// database, unless `options.createsMissingFile` is false; its folder must exist, never created.
/// Any other `scheme://` is refused rather than taken for a file name.
///
/// ```swift
/// let store = try await openLedgerStore("postgres://ledger@db.internal/ledger")
/// let result = try await store.consume(
///     "thread-1", promptTokens: 120, completionTokens: 30, idempotencyKey: "call-1", usage: .none, checked: true)
/// await store.close()
/// ```
///
/// - Parameters:
///   - location: where the ledger is (see above).
///   - options: the default max, the SQLite thread pool, each store's configuration.
/// - Throws: `LedgerLocationError` when `location` breaks the rule above (nothing is opened,
///   created or written); `LedgerError.invalidInput` for unusable options; then what
///   `Ledger(path:)` or `PostgresLedger(url:)` throws.
public func openLedgerStore(_ location: String, options: LedgerStoreOptions = LedgerStoreOptions()) async throws
    -> any LedgerStore
{
    let parsed = try LedgerLocation(location)
    try options.validate()
    switch parsed {
    case .postgres(let url):
        return try await PostgresLedger(
            url: url, maxTokensPerThread: options.maxTokensPerThread, configuration: options.postgres)
    case .sqlite(let path):
        try checkFile(path, createsMissingFile: options.createsMissingFile)
        // Opening may migrate a file: blocking work, kept off the cooperative pool.
        let ledger = try await NIOThreadPool.singleton.runIfActive {
            try Ledger(path: path, maxTokensPerThread: options.maxTokensPerThread, configuration: options.sqlite)
        }
        return SQLiteLedgerStore(
            ledger: ledger, threadCount: options.sqliteThreadCount, waitingCallsMax: options.sqliteWaitingCallsMax)
    }
}

/// How `openLedgerStore(_:options:)` opens a store.
public struct LedgerStoreOptions: Sendable {
    /// The SQLite store's default thread count: enough for 64 concurrent writes to meet in one
    /// group commit (`budget-ledger serve`'s default too).
    public static let defaultSQLiteThreadCount = 64
    /// The SQLite store's default number of calls that may wait for a thread.
    public static let defaultSQLiteWaitingCallsMax = 1024
    /// The most threads for SQLite calls (more than `Ledger.groupCommitBatchMax` cannot enlarge a batch).
    public static let sqliteThreadCountMax = 256
    /// The most SQLite calls that may wait for a thread.
    public static let sqliteWaitingCallsMaxLimit = 65_536

    /// When given and different from the stored default max, it is recorded as the new default
    /// (as `Ledger(path:maxTokensPerThread:)`); nil keeps the stored one.
    public var maxTokensPerThread: Int64?
    /// Whether a file path that names no file yet creates a new ledger there (the default), or
    /// is refused with `LedgerLocationError` (the CLI's rule for its reading commands).
    public var createsMissingFile: Bool
    /// Threads that run SQLite ledger calls (1…`sqliteThreadCountMax`): the most writes one group commit can batch.
    public var sqliteThreadCount: Int
    /// SQLite calls that may wait for a thread (0…`sqliteWaitingCallsMaxLimit`); one more is
    /// `LedgerStoreOverloadedError`.
    public var sqliteWaitingCallsMax: Int
    /// How a SQLite ledger is opened (durability, clock, thresholds).
    public var sqlite: Ledger.Configuration
    /// How a PostgreSQL ledger is opened (pool, timeouts, clock, thresholds).
    public var postgres: PostgresLedger.Configuration

    /// Options with the defaults of each field (see each).
    public init(
        maxTokensPerThread: Int64? = nil, createsMissingFile: Bool = true,
        sqliteThreadCount: Int = LedgerStoreOptions.defaultSQLiteThreadCount,
        sqliteWaitingCallsMax: Int = LedgerStoreOptions.defaultSQLiteWaitingCallsMax,
        sqlite: Ledger.Configuration = Ledger.Configuration(),
        postgres: PostgresLedger.Configuration = PostgresLedger.Configuration()
    ) {
        self.maxTokensPerThread = maxTokensPerThread
        self.createsMissingFile = createsMissingFile
        self.sqliteThreadCount = sqliteThreadCount
        self.sqliteWaitingCallsMax = sqliteWaitingCallsMax
        self.sqlite = sqlite
        self.postgres = postgres
    }

    /// The pool's bounds, checked before anything is opened (the server's own limits).
    func validate() throws {
        guard (1...Self.sqliteThreadCountMax).contains(sqliteThreadCount) else {
            throw LedgerError.invalidInput(
                field: "sqliteThreadCount", reason: "must be 1…\(Self.sqliteThreadCountMax) (got \(sqliteThreadCount))")
        }
        guard (0...Self.sqliteWaitingCallsMaxLimit).contains(sqliteWaitingCallsMax) else {
            throw LedgerError.invalidInput(
                field: "sqliteWaitingCallsMax",
                reason: "must be 0…\(Self.sqliteWaitingCallsMaxLimit) (got \(sqliteWaitingCallsMax))")
        }
    }
}

/// Where a ledger is, read from a location string by the rule of `openLedgerStore(_:options:)`.
public enum LedgerLocation: Sendable, Equatable {
    /// A SQLite file path, or `:memory:`.
    case sqlite(path: String)
    /// A `postgres://` or `postgresql://` URL that names a database.
    case postgres(url: String)

    /// Reads `location`; touches nothing.
    ///
    /// - Throws: `LedgerLocationError` for an empty location, a URL of another scheme, or a
    ///   PostgreSQL URL without a database name.
    public init(_ location: String) throws {
        guard !location.isEmpty else { throw LedgerLocationError(location: location, reason: "the location is empty") }
        if PostgresLedger.isPostgresURL(location) {
            // PostgreSQL would take a URL without one to mean the user's own database: a ledger
            // written where nobody meant it. The name is asked for instead.
            let path = URLComponents(string: location)?.path ?? ""
            guard !path.drop(while: { $0 == "/" }).isEmpty else {
                throw LedgerLocationError(location: location, reason: "the URL names no database (…/DATABASE)")
            }
            self = .postgres(url: location)
        } else if let scheme = Self.scheme(of: location) {
            throw LedgerLocationError(
                location: location, reason: "\(scheme):// is not a store this library opens (a file path has no scheme)")
        } else {
            self = .sqlite(path: location)
        }
    }

    /// The scheme of a `scheme://…` location (RFC 3986's letters), nil for anything else.
    private static func scheme(of location: String) -> String? {
        guard let range = location.range(of: "://") else { return nil }
        let scheme = location[..<range.lowerBound]
        guard let first = scheme.first, first.isASCII, first.isLetter,
            scheme.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.".contains($0)) })
        else { return nil }
        return String(scheme)
    }
}

/// A location that breaks the rule of `openLedgerStore(_:options:)`: nothing was opened,
/// created or written.
public struct LedgerLocationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The rule a location follows, said in every message.
    public static let rule =
        "a ledger location is a postgres:// or postgresql:// URL naming a database, or a SQLite file path (or :memory:)"

    /// The location as given, its password (if any) replaced by `***`.
    public let location: String
    /// What is wrong with it.
    public let reason: String

    /// An error for `location`, whose password is never kept.
    public init(location: String, reason: String) {
        self.location = Self.redacted(location)
        self.reason = reason
    }

    /// The location, what is wrong with it, and the rule.
    public var description: String { "cannot open a ledger at \"\(location)\": \(reason); \(Self.rule)" }

    private static func redacted(_ location: String) -> String {
        guard location.contains("://"), var components = URLComponents(string: location), components.password != nil
        else { return location }
        components.password = "***"
        return components.string ?? location
    }
}

/// Refuses a path that names a folder, sits in a missing folder, or (unless `createsMissingFile`)
/// names no file, before `Ledger(path:)` would create or fail on it less clearly.
private func checkFile(_ path: String, createsMissingFile: Bool) throws {
    guard path != ":memory:" else { return }
    var isFolder: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) {
        guard !isFolder.boolValue else { throw LedgerLocationError(location: path, reason: "it is a folder, not a file") }
        return
    }
    guard createsMissingFile else {
        throw LedgerLocationError(location: path, reason: "no ledger file is there (createsMissingFile is off)")
    }
    let folder = (path as NSString).deletingLastPathComponent
    guard !folder.isEmpty else { return }
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isFolder), isFolder.boolValue else {
        throw LedgerLocationError(location: path, reason: "its folder \(folder) does not exist")
    }
}
