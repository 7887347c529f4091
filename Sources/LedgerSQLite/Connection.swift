import CSQLite
import Foundation

/// How hard SQLite works to make a commit durable.
/// See <https://www.sqlite.org/pragma.html#pragma_synchronous> and <https://www.sqlite.org/wal.html>.
public enum Synchronous: String, Sendable, CaseIterable {
    /// In WAL mode, every commit is synced to disk before it returns: it survives power loss.
    case full = "FULL"
    /// In WAL mode, commits survive a crash of the process, but the last ones may be lost
    /// on power loss or an operating-system crash (the WAL is synced only at checkpoints).
    case normal = "NORMAL"
}

/// A connection to one SQLite database: a file, or `:memory:`.
///
/// Not `Sendable`: use it from one thread at a time (the ledger keeps it behind a lock).
/// Statements are cached per connection; closing finalizes them all.
/// See <https://www.sqlite.org/c3ref/sqlite3.html>.
public final class Connection {
    /// How to open a connection.
    public struct Options: Sendable {
        /// How long a statement waits for another connection's lock before failing with `SQLITE_BUSY`.
        public var busyTimeoutMilliseconds: Int32 = 5_000
        /// The durability of commits.
        public var synchronous: Synchronous = .full
        /// Opens read-only; the file must exist.
        public var readOnly = false
        /// Creates the file when it does not exist (ignored when read-only).
        public var create = true
        /// Switches a file database to WAL at open. Off lets a caller inspect a file first and
        /// call `enableWAL()` only once it knows the file is its own (WAL mode is persistent).
        public var walAtOpen = true
        /// What this connection says it is, to SQL: the value of `connection_role()` on it (NULL
        /// when nil). See `registerRole(_:)`.
        public var role: String?

        public init(
            busyTimeoutMilliseconds: Int32 = 5_000, synchronous: Synchronous = .full,
            readOnly: Bool = false, create: Bool = true, walAtOpen: Bool = true, role: String? = nil
        ) {
            self.busyTimeoutMilliseconds = busyTimeoutMilliseconds
            self.synchronous = synchronous
            self.readOnly = readOnly
            self.create = create
            self.walAtOpen = walAtOpen
            self.role = role
        }
    }

    /// The path the connection was opened on.
    public let path: String
    private var handle: OpaquePointer?
    private var statementCache: [String: Statement] = [:]
    /// The statements used last, most recent first: found by `==` on the SQL, which for the
    /// same string constant is one comparison of two words, where the dictionary would hash
    /// the whole text (about 6% of a consume's instructions under callgrind).
    private var recentStatements: [Statement] = []
    /// Since migration 0014 a consume in a batch can run nine cached statements in turn (the
    /// savepoint and its release, the thread, the scope budgets, a price, the insert, the thread's
    /// and the all-time sums' updates, a threshold); a group commit's transaction adds its
    /// `BEGIN` and `COMMIT`, and its batch path (`Ledger.recordBatch`) three statements of its
    /// own beside the row path's. A cycle longer than the list evicts each statement before its
    /// next use, so the list holds sixteen.
    private static let recentStatementsMax = 16
    private var savepointDepth = 0
    /// The SQL of the savepoint at each depth, built once: a group commit opens one per write.
    private var savepointSQLByDepth: [SavepointSQL] = []
    /// How long a statement waits for another connection's lock (`Options.busyTimeoutMilliseconds`).
    private var busyTimeoutMilliseconds: Int32 = 0
    /// The handler of `onWALCommit(_:)`, kept alive while SQLite holds a pointer to it.
    var walHook: WALHookBox?

    /// Opens `path` (or `:memory:`) with extended result codes, WAL, foreign keys on,
    /// the busy timeout and the synchronous level of `options`.
    ///
    /// - Throws: `SQLiteError`: `.cannotOpen` for a missing folder, `.notADatabase` for a file
    ///   that is not SQLite, `.readOnly` when WAL cannot be set up on a read-only file or folder.
    public init(path: String, options: Options = Options()) throws {
        Self.configureProcess
        self.path = path
        var flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI
        if options.readOnly {
            flags |= SQLITE_OPEN_READONLY
        } else {
            flags |= SQLITE_OPEN_READWRITE
            if options.create { flags |= SQLITE_OPEN_CREATE }
        }
        var opened: OpaquePointer?
        let resultCode = sqlite3_open_v2(path, &opened, flags, nil)
        guard resultCode == SQLITE_OK, let opened else {
            let error = SQLiteError.lastError(of: opened, resultCode: resultCode, sql: nil)
            sqlite3_close_v2(opened)
            throw error
        }
        handle = opened
        sqlite3_extended_result_codes(opened, 1)
        do {
            try configure(options)
        } catch {
            close()
            throw error
        }
    }

    deinit {
        close()
    }

    /// SQLite's process-wide settings, made once, before the first connection opens (SQLite
    /// takes them only before it initializes; if another part of the process used SQLite first,
    /// they are refused and SQLite's defaults stay, which changes no result, only the speed).
    ///
    /// Memory statistics off: SQLite counts every allocation under a global mutex for
    /// `sqlite3_memory_used()`, which nothing here reads; a consume makes about a hundred
    /// allocations (this SQLite is built without lookaside), and the mutex was 4 % of a
    /// consume's instructions (docs/performance.md, issue 21). And savepoint journals kept in
    /// memory up to `statementJournalInMemoryBytes`.
    /// See https://www.sqlite.org/c3ref/c_config_covering_index_scan.html
    private static let configureProcess: Void = {
        _ = ledger_sqlite3_config_memstatus(0)
        _ = ledger_sqlite3_config_statement_journal_spill(Int32(statementJournalInMemoryBytes))
    }()

    /// How much of a savepoint's journal SQLite keeps in memory before it writes it to a
    /// temporary file (its default: 64 KiB). Under a savepoint, SQLite keeps the original of
    /// every page the savepoint changes; a group-commit batch (`Ledger.recordBatch`) or an
    /// import batch changes a few pages per consume, so 64 KiB spilled to disk within a batch:
    /// page writes to a file that is thrown away at the end. 8 MiB covers the largest batch
    /// (256 consumes) with room to spare, and is freed when the savepoint ends.
    static let statementJournalInMemoryBytes = 8 << 20

    private func configure(_ options: Options) throws {
        try registerRole(options.role)
        setBusyTimeout(milliseconds: options.busyTimeoutMilliseconds)
        // The first statement reads the file header, so a file that is not SQLite fails here,
        // before anything is written to it.
        if !options.readOnly && options.walAtOpen {
            try enableWAL()
        } else {
            _ = try fetchText("PRAGMA schema_version")
        }
        try execute(sql: "PRAGMA foreign_keys = ON")
        try applySynchronous(options.synchronous)
    }

    /// The synchronous level commits run at now.
    public private(set) var synchronous: Synchronous = .full

    /// Sets the synchronous level of the commits from now on; does nothing when it is already that.
    ///
    /// SQLite refuses to change it inside a transaction, so call it before `BEGIN`.
    /// See <https://www.sqlite.org/pragma.html#pragma_synchronous>.
    public func setSynchronous(_ level: Synchronous) throws {
        guard level != synchronous else { return }
        try applySynchronous(level)
    }

    private func applySynchronous(_ level: Synchronous) throws {
        try execute(sql: "PRAGMA synchronous = \(level.rawValue)")
        synchronous = level
    }

    /// Switches a file database to WAL journal mode (a no-op for `:memory:`, which has no WAL).
    /// WAL mode is persistent: it is recorded in the file header.
    /// See <https://www.sqlite.org/wal.html#activating_and_configuring_wal_mode>.
    public func enableWAL() throws {
        guard path != ":memory:" && !path.isEmpty else { return }
        let mode = try retryingWhileBusy { try fetchText("PRAGMA journal_mode = WAL") }
        if mode?.lowercased() != "wal" {
            throw SQLiteError(
                extendedCode: .error, message: "could not switch to WAL journal mode (got \(mode ?? "nothing"))",
                sql: "PRAGMA journal_mode = WAL")
        }
    }

    /// Runs `body` again while it fails with `SQLITE_BUSY`, for up to the busy timeout.
    ///
    /// For statements that take a lock without SQLite's busy handler: switching a file to WAL
    /// takes its exclusive lock with one try (`pagerExclusiveLock`), so a second connection
    /// opening the same fresh file at the same moment (two processes starting together) got
    /// "database is locked" at once instead of waiting its turn.
    private func retryingWhileBusy<Result>(_ body: () throws -> Result) throws -> Result {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(max(busyTimeoutMilliseconds, 0)) * 1_000_000
        var pauseMicroseconds: UInt32 = 100
        while true {
            do {
                return try body()
            } catch let error as SQLiteError where error.isBusy && DispatchTime.now().uptimeNanoseconds < deadline {
                usleep(pauseMicroseconds)
                pauseMicroseconds = min(pauseMicroseconds * 2, 10_000)
            }
        }
    }

    private func fetchText(_ sql: String) throws -> String? {
        try prepare(sql).fetchOne { row in
            switch row.value(at: 0) {
            case .text(let text): return text
            case .integer(let integer): return String(integer)
            default: return nil
            }
        } ?? nil
    }

    var liveHandle: OpaquePointer {
        guard let handle else { preconditionFailure("connection to \(path) used after close") }
        return handle
    }

    /// Whether the connection is still open.
    public var isOpen: Bool { handle != nil }

    /// Finalizes every cached statement and closes the connection. Idempotent.
    ///
    /// Uses `sqlite3_close_v2`, so a statement still held elsewhere keeps the connection alive
    /// as a zombie until it is released, instead of leaking or failing.
    /// See <https://www.sqlite.org/c3ref/close.html>.
    public func close() {
        guard let handle else { return }
        for statement in statementCache.values {
            statement.finalize()
        }
        statementCache.removeAll()
        recentStatements.removeAll()
        sqlite3_wal_hook(handle, nil, nil)
        sqlite3_close_v2(handle)
        self.handle = nil
        walHook = nil
    }

    /// Compiles one statement, uncached. The caller owns it.
    public func prepare(_ sql: String) throws -> Statement {
        var statement: OpaquePointer?
        let resultCode = sqlite3_prepare_v3(liveHandle, sql, -1, 0, &statement, nil)
        guard resultCode == SQLITE_OK, let statement else {
            throw SQLiteError.lastError(of: liveHandle, resultCode: resultCode, sql: sql)
        }
        return Statement(handle: statement, sql: sql)
    }

    /// The cached compiled statement for `sql`, compiling it on first use.
    ///
    /// Compiled with `SQLITE_PREPARE_PERSISTENT`; a statement that fails to compile is not cached.
    /// See <https://www.sqlite.org/c3ref/prepare.html>.
    public func cachedStatement(_ sql: String) throws -> Statement {
        // Found first, moved after: changing the list while a loop over it holds it copied the
        // whole array on every hit that was not already first.
        if let index = recentStatements.firstIndex(where: { $0.sql == sql }) {
            let statement = recentStatements[index]
            if index > 0 {
                recentStatements.remove(at: index)
                recentStatements.insert(statement, at: 0)
            }
            return statement
        }
        if let statement = statementCache[sql] {
            remember(statement)
            return statement
        }
        var compiled: OpaquePointer?
        let resultCode = sqlite3_prepare_v3(liveHandle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &compiled, nil)
        guard resultCode == SQLITE_OK, let compiled else {
            throw SQLiteError.lastError(of: liveHandle, resultCode: resultCode, sql: sql)
        }
        let statement = Statement(handle: compiled, sql: sql)
        statementCache[sql] = statement
        remember(statement)
        return statement
    }

    private func remember(_ statement: Statement) {
        recentStatements.insert(statement, at: 0)
        if recentStatements.count > Self.recentStatementsMax {
            recentStatements.removeLast()
        }
    }

    /// Runs one cached statement with `arguments`, ignoring any rows.
    public func execute(_ sql: String, _ arguments: [any SQLiteBindable]) throws {
        try cachedStatement(sql).execute(arguments)
    }

    /// Runs `sql`, which may hold several statements separated by semicolons, uncached.
    ///
    /// Statements run one after another; the first failure stops the rest and names the
    /// statement that failed.
    public func execute(sql: String) throws {
        let utf8 = Array(sql.utf8CString)
        try utf8.withUnsafeBufferPointer { buffer in
            guard let start = buffer.baseAddress else { return }
            var cursor: UnsafePointer<CChar>? = start
            while let current = cursor, current.pointee != 0 {
                var statement: OpaquePointer?
                var tail: UnsafePointer<CChar>?
                let resultCode = sqlite3_prepare_v2(liveHandle, current, -1, &statement, &tail)
                guard resultCode == SQLITE_OK else {
                    // A failed compile leaves `tail` at the offending word: name the rest of the
                    // script from the failing statement on, not a cut-off fragment of it.
                    let rest = Self.text(from: current, to: nil)
                    throw SQLiteError.lastError(of: liveHandle, resultCode: resultCode, sql: rest)
                }
                let text = Self.text(from: current, to: tail)
                cursor = tail
                // Whitespace or a comment compiles to no statement.
                guard let statement else { continue }
                let wrapped = Statement(handle: statement, sql: text)
                defer { wrapped.finalize() }
                while try wrapped.step() {}
            }
        }
    }

    private static func text(from start: UnsafePointer<CChar>, to end: UnsafePointer<CChar>?) -> String {
        let count = end.map { $0 - start } ?? Int(strlen(start))
        let bytes = UnsafeRawBufferPointer(start: start, count: count)
        return String(decoding: bytes, as: UTF8.self).trimmingWhitespace()
    }

    /// True when SQLite opened the main database read-only (a read-only file or folder makes a
    /// read-write open fall back to read-only). See <https://www.sqlite.org/c3ref/db_readonly.html>.
    public var isReadOnly: Bool { sqlite3_db_readonly(liveHandle, "main") == 1 }

    /// The rowid of the most recent successful INSERT on this connection.
    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(liveHandle) }

    /// Rows changed by the most recent INSERT, UPDATE or DELETE.
    public var changes: Int64 { sqlite3_changes64(liveHandle) }

    /// Rows inserted, changed or deleted since the connection opened, triggers' included.
    /// See <https://www.sqlite.org/c3ref/total_changes.html>.
    public var totalChanges: Int64 { sqlite3_total_changes64(liveHandle) }

    /// False while a transaction is open. See <https://www.sqlite.org/c3ref/get_autocommit.html>.
    public var isAutocommit: Bool { sqlite3_get_autocommit(liveHandle) != 0 }

    /// Sets how long statements wait for another connection's lock (and how long `enableWAL()`
    /// retries, since SQLite has no getter for it).
    public func setBusyTimeout(milliseconds: Int32) {
        busyTimeoutMilliseconds = milliseconds
        sqlite3_busy_timeout(liveHandle, milliseconds)
    }

    /// The statements of the next savepoint down (names repeat by depth, so their cached
    /// statements serve every savepoint at that depth).
    func nextSavepoint() -> SavepointSQL {
        savepointDepth += 1
        while savepointSQLByDepth.count < savepointDepth {
            savepointSQLByDepth.append(SavepointSQL(name: "ledger_savepoint_\(savepointSQLByDepth.count + 1)"))
        }
        return savepointSQLByDepth[savepointDepth - 1]
    }

    func savepointEnded() {
        savepointDepth -= 1
    }
}

/// The three statements of one savepoint.
struct SavepointSQL {
    let begin: String
    let rollback: String
    let release: String

    init(name: String) {
        begin = "SAVEPOINT \(name)"
        rollback = "ROLLBACK TO SAVEPOINT \(name)"
        release = "RELEASE SAVEPOINT \(name)"
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0.isWhitespace }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
            return ""
        }
        return String(self[first...last])
    }
}
