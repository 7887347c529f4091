import Foundation
internal import LedgerSQLite
import Synchronization

/// A durable token-budget ledger on one SQLite file.
///
/// Every state change is an event appended to the `events` table; budgets are derived from
/// them by triggers in the same transaction. Every write is one `BEGIN IMMEDIATE` transaction,
/// so budget decisions are exact across threads and across processes sharing the file.
///
/// `Ledger` is `Sendable`: share one instance across threads and tasks. It holds one SQLite
/// connection behind a lock.
public final class Ledger: Sendable {
    /// How durable a write is once it returns: SQLite's `synchronous` level in WAL mode, named
    /// here so that the API does not expose the SQLite layer's types.
    /// See <https://www.sqlite.org/pragma.html#pragma_synchronous>.
    public enum Durability: String, Sendable, CaseIterable {
        /// The WAL is synced before a write returns: it survives a power loss or an OS crash.
        case full = "FULL"
        /// It survives a crash of the process; a power loss may take back the last commits.
        case normal = "NORMAL"

        var sqliteLevel: Synchronous { self == .full ? .full : .normal }
    }

    /// How a ledger is opened.
    public struct Configuration: Sendable {
        /// Durability of each commit: `.full` (default) survives power loss (the WAL is synced
        /// before a write returns); `.normal` survives a process crash but may lose the last
        /// commits on power loss.
        public var synchronous: Durability
        /// How long a write waits for another process's lock before failing.
        public var busyTimeoutMilliseconds: Int32
        /// The warning levels, ascending or not; each fires once per thread window.
        public var thresholds: [BudgetThreshold]
        /// The clock: UTC microseconds since 1970. Tests may inject one.
        public var clock: @Sendable () -> Int64
        /// A cap on the file's size in pages (`PRAGMA max_page_count`): a quota, and the way tests
        /// simulate a full disk. Nil: no cap but the disk's. See <https://www.sqlite.org/pragma.html#pragma_max_page_count>.
        public var maxPageCount: Int64?

        public init(
            synchronous: Durability = .full,
            busyTimeoutMilliseconds: Int32 = 5_000,
            thresholds: [BudgetThreshold] = BudgetThreshold.defaults,
            clock: @escaping @Sendable () -> Int64 = Ledger.systemClockMicroseconds,
            maxPageCount: Int64? = nil
        ) {
            self.synchronous = synchronous
            self.busyTimeoutMilliseconds = busyTimeoutMilliseconds
            self.thresholds = thresholds
            self.clock = clock
            self.maxPageCount = maxPageCount
        }
    }

    /// The file the ledger lives in (`:memory:` for an in-memory ledger).
    public let path: String
    /// How the ledger was opened.
    public let configuration: Configuration
    let thresholds: [BudgetThreshold]
    let connection: Mutex<Connection>
    let writeQueue = Mutex(WriteQueue())
    /// Where a suspended writer leads its batch (`write(suspending:)`): a thread that may block,
    /// one at a time as there is one leader at a time.
    let leaderQueue = DispatchQueue(label: "budget-ledger.group-commit-leader")
    /// Transactions since one found another writer waiting (see `syncsInCommit(_:)`).
    let transactionsSinceContention = Atomic<Int>(Ledger.contendedTransactionsMemory + 1)
    let writerLock: WriterLock
    let writeStatistics = Mutex(WriteStatistics())
    /// WAL syncs run for readers of the feed and exports (`syncLogForReaders`); read by tests.
    let readerLogSyncs = Atomic<Int>(0)
    /// The price table for the consume path; used under the connection lock.
    let priceCache = Mutex(PriceCache())
    /// WAL checkpoints of a file ledger (in the background at NORMAL); nil in memory.
    let checkpointer: Checkpointer?
    /// At FULL, the sync of the WAL that makes a batch's commit durable, run after the batch has
    /// let the write lock go and before anyone is told (see `write(_:)`); nil at NORMAL and in memory.
    let walSync: WALSync?

    /// WAL checkpoints run in the background so far (see `Checkpointer`); 0 in memory.
    public var backgroundCheckpoints: Int { checkpointer?.completedCheckpoints ?? 0 }

    /// How many write transactions ran and how many writes they carried (group commit).
    public var statistics: WriteStatistics { writeStatistics.withLock { $0 } }
    let subscriberList = Mutex(SubscriberList())

    /// The `application_id` that marks a BudgetLedger database ('BDLG').
    public static let applicationID: Int32 = 0x4244_4C47

    /// The role the ledger's connection gives itself (`Connection.Options.role`): migration 0014's
    /// `events_apply_consume` steps aside for it, because `record` applies a consume's derived
    /// state itself (`applyDerivedState`); every other connection goes through the trigger.
    static let writerRole = "ledger writer"

    /// The migrations carried inside this binary, in order.
    static var migrations: [Migration] { EmbeddedMigrations.all }

    /// Opens (creating and migrating when needed) the ledger at `path`.
    ///
    /// - Parameters:
    ///   - path: a file path, or `:memory:`.
    ///   - maxTokensPerThread: when given and different from the ledger's stored default,
    ///     records a new default (as `configure(maxTokensPerThread:)`); nil keeps the stored one
    ///     (100,000 for a new ledger).
    /// - Throws: `LedgerError.database` when the file cannot be opened, is not a database, is
    ///   corrupt or is on a network file system (`NetworkFileSystem`); `LedgerError.incompatible` when its schema is newer or it belongs to another application.
    public init(path: String, maxTokensPerThread: Int64? = nil, configuration: Configuration = Configuration()) throws {
        try Validate.thresholds(configuration.thresholds)
        self.path = path
        self.configuration = configuration
        self.thresholds = configuration.thresholds.sorted { $0.percent < $1.percent }
        let isFile = Self.isPlainFile(path)
        if isFile, let fileSystem = NetworkFileSystem.type(holding: path) {
            throw LedgerError.database(
                path: path,
                StorageFailure(
                    SQLiteError(
                        extendedCode: .cannotOpen,
                        message: "its folder is on a network file system (\(fileSystem)), where SQLite's WAL "
                            + "corrupts databases; keep the ledger on a local disk")))
        }
        // At FULL the connection opens at NORMAL: with other writers about, durability comes
        // from `walSync`, outside the write lock; a lone writer switches SQLite to FULL for its
        // commit (see `write(_:)` and `syncsInCommit(_:)`).
        walSync = isFile && configuration.synchronous == .full ? WALSync(databasePath: path) : nil
        let options = Connection.Options(
            busyTimeoutMilliseconds: configuration.busyTimeoutMilliseconds,
            synchronous: walSync == nil ? configuration.synchronous.sqliteLevel : .normal, walAtOpen: false,
            role: Self.writerRole)
        let opened: Connection
        do {
            opened = try Connection(path: path, options: options)
            if opened.isReadOnly {
                // SQLite falls back to read-only quietly; a ledger that cannot record must say so
                // at open, not at its first consume.
                throw SQLiteError(
                    extendedCode: .readOnly, message: "the ledger file (or its folder) is read-only; nothing can be recorded")
            }
            let migrator = Migrator(migrations: Self.migrations, applicationID: Self.applicationID)
            // Only a file known to be ours (or empty) is switched to WAL: the mode is persistent,
            // and another application's database must be left exactly as it was.
            try migrator.checkCompatible(opened)
            try opened.enableWAL()
            try migrator.migrate(opened)
            if let pages = configuration.maxPageCount {
                try opened.execute(sql: "PRAGMA max_page_count = \(pages)")
            }
            // The migrations committed at NORMAL.
            try walSync?.syncAll()
        } catch let error as SQLiteError {
            throw LedgerError.database(path: path, StorageFailure(error))
        } catch let error as MigrationError {
            throw LedgerError.incompatible(path: path, Incompatibility(error))
        }
        // Under FULL every commit already waits for a sync of the WAL, and a checkpoint's syncs
        // of both files running beside it made commits slower (2.45k -> 1.6-2.1k txn/s in the
        // benchmark), so FULL checkpoints in the writer, every 4,000 new frames (`Checkpointer`).
        if isFile {
            var checkpointOptions = options
            checkpointOptions.create = false
            checkpointOptions.walAtOpen = true
            let checkpointer = Checkpointer(
                path: path, options: checkpointOptions, inBackground: configuration.synchronous == .normal)
            opened.onWALCommit { logFrames in checkpointer.committed(logFrames: logFrames) }
            self.checkpointer = checkpointer
        } else {
            checkpointer = nil
        }
        connection = Mutex(opened)
        writerLock = WriterLock(ledgerPath: path)
        if let pages = configuration.maxPageCount, pages < 1 {
            throw LedgerError.invalidInput(field: "maxPageCount", reason: "must be at least 1 (got \(pages))")
        }
        if let maxTokensPerThread, try self.maxTokensPerThread != maxTokensPerThread {
            try configure(maxTokensPerThread: maxTokensPerThread)
        }
    }

    /// Whether `path` names a file on disk (not `:memory:`, not a `file:` URI): only such a
    /// ledger gets the files beside it (`-wal` synced by `WALSync`, the writer locks) and its
    /// own checkpointer; the others keep SQLite's defaults.
    static func isPlainFile(_ path: String) -> Bool {
        path != ":memory:" && !path.isEmpty && !path.hasPrefix("file:")
    }

    /// A ledger that lives in memory only: for tests and throwaway runs.
    public static func inMemory(
        maxTokensPerThread: Int64? = nil, configuration: Configuration = Configuration()
    ) throws -> Ledger {
        try Ledger(path: ":memory:", maxTokensPerThread: maxTokensPerThread, configuration: configuration)
    }

    /// Closes the SQLite connection (after a running background checkpoint and write
    /// transaction). Later calls throw `LedgerError.closed`. Idempotent.
    ///
    /// At FULL, first syncs every commit so far: a leader whose sync of the WAL runs after this
    /// (outside the connection's lock) then finds its commit covered, instead of failing on the
    /// WAL that closing the last connection checkpoints and deletes. The WAL's descriptor closes
    /// last, after the connection.
    public func close() {
        checkpointer?.close()
        connection.withLock { connection in
            if let walSync, connection.isOpen {
                // A failure here is the leader's to report: its sync then throws too.
                try? walSync.sync(through: walSync.commits.written)
            }
            connection.close()
        }
        walSync?.close()
    }

    /// UTC microseconds since 1970, from the system's real-time clock.
    @Sendable public static func systemClockMicroseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1_000
    }

    /// Runs `body` with the connection, outside any transaction, mapping SQLite errors.
    func withConnection<Result: Sendable>(_ body: (Connection) throws -> Result) throws -> Result {
        try connection.withLock { connection throws -> Result in
            guard connection.isOpen else { throw LedgerError.closed }
            do {
                return try body(connection)
            } catch let error as SQLiteError {
                throw LedgerError.database(path: path, StorageFailure(error))
            }
        }
    }

    /// As `withConnection`, for results that are not `Sendable` and never leave the caller's thread.
    func withConnectionUnchecked<Result>(_ body: (Connection) throws -> Result) throws -> Result {
        nonisolated(unsafe) var result: Result?
        try withConnection { connection in
            result = try body(connection)
        }
        return result!
    }

    /// Runs `body` in one read transaction, so that every statement sees the same snapshot.
    func read<Result: Sendable>(_ body: (Connection) throws -> Result) throws -> Result {
        try withConnection { connection in
            try connection.transaction(.deferred) { try body(connection) }
        }
    }
}
