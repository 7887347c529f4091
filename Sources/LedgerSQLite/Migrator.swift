/// One numbered schema change: the text of a `migrations/NNNN_name.sql` file.
public struct Migration: Sendable, Equatable {
    /// The number that orders migrations: `1` for `0001_….sql`.
    public let version: Int
    /// The file name, e.g. `0001_events.sql`.
    public let name: String
    /// The SQL, applied as one script in one transaction.
    public let sql: String

    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

/// Why a database cannot be migrated.
public enum MigrationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The database was written by a newer binary: its schema has versions we do not know.
    case schemaTooNew(databaseVersion: Int, knownVersion: Int)
    /// The database belongs to another application (its `application_id`, or tables of its own).
    case foreignDatabase(String)
    /// A migration this binary knows was applied under another name: the histories diverged.
    case historyMismatch(version: Int, recordedName: String, knownName: String)
    /// A migration left rows whose foreign keys point nowhere (it was rolled back).
    case foreignKeyViolation(version: Int, table: String, rowID: Int64?)

    public var description: String {
        switch self {
        case .schemaTooNew(let databaseVersion, let knownVersion):
            return "the database schema is version \(databaseVersion), newer than this binary knows "
                + "(\(knownVersion)); upgrade budget-ledger, the file was left untouched"
        case .foreignDatabase(let reason):
            return "not a BudgetLedger database: \(reason); the file was left untouched"
        case .historyMismatch(let version, let recordedName, let knownName):
            return "migration \(version) was applied as \(recordedName), but this binary knows it as \(knownName)"
        case .foreignKeyViolation(let version, let table, let rowID):
            return "migration \(version) would leave a broken foreign key in \(table) (row \(rowID.map(String.init) ?? "?")); "
                + "it was rolled back"
        }
    }
}

/// Applies numbered migrations in order, each in its own `BEGIN IMMEDIATE` transaction,
/// and records each in the `schema_migrations` table and `PRAGMA user_version`.
///
/// Several processes may migrate the same file at once: each migration re-checks, under the
/// write lock, whether another process applied it first.
public struct Migrator: Sendable {
    /// Every migration this binary knows, in version order.
    public let migrations: [Migration]
    /// The value written to `PRAGMA application_id` by the first migration; a database carrying
    /// another non-zero id is refused. See <https://www.sqlite.org/pragma.html#pragma_application_id>.
    public let applicationID: Int32

    public init(migrations: [Migration], applicationID: Int32) {
        let sorted = migrations.sorted { $0.version < $1.version }
        precondition(Set(sorted.map(\.version)).count == sorted.count, "duplicate migration versions")
        self.migrations = sorted
        self.applicationID = applicationID
    }

    /// The highest version this binary knows (0 when it knows none).
    public var knownVersion: Int { migrations.last?.version ?? 0 }

    /// Applies every pending migration and returns the versions it applied (empty when up to date).
    ///
    /// - Throws: `MigrationError` for a newer or foreign database (nothing is written),
    ///   `SQLiteError` when a migration fails (that migration is rolled back).
    ///
    /// What is pending is read once, in a read transaction; SQLite's write lock is taken only
    /// when something is, once per pending migration. Opening an up-to-date database (every
    /// open but the first after an upgrade) writes nothing and never waits for a writer.
    @discardableResult
    public func migrate(_ connection: Connection) throws -> [Int] {
        let pending = try pendingMigrations(connection)
        var applied: [Int] = []
        for migration in pending {
            if try apply(migration, on: connection) { applied.append(migration.version) }
        }
        return applied
    }

    /// The migrations not recorded yet, after checking compatibility, from one read snapshot.
    public func pendingMigrations(_ connection: Connection) throws -> [Migration] {
        let read = {
            try checkCompatibleInSnapshot(connection)
            let done = Set(try appliedVersions(connection))
            return migrations.filter { !done.contains($0.version) }
        }
        return connection.isAutocommit ? try connection.transaction(.deferred, read) : try read()
    }

    /// Applies one migration unless it is already recorded; returns whether it did.
    ///
    /// Foreign keys are off while it runs and checked in full before it commits (as GRDB does),
    /// so that a migration may rebuild a table the way SQLite documents
    /// (<https://www.sqlite.org/lang_altertable.html#otheralter>): with enforcement on, dropping
    /// a table runs an implicit row-by-row DELETE. The pragma is a no-op inside a transaction,
    /// hence it is switched around the transaction.
    private func apply(_ migration: Migration, on connection: Connection) throws -> Bool {
        let enforced = try connection.prepare("PRAGMA foreign_keys").fetchOne { try $0[0] as Bool } ?? false
        if enforced { try connection.execute(sql: "PRAGMA foreign_keys = OFF") }
        defer { if enforced { try? connection.execute(sql: "PRAGMA foreign_keys = ON") } }
        return try connection.transaction(.immediate) { () throws -> Bool in
            // Re-read under the write lock: another process may have just applied it.
            try checkCompatible(connection)
            try connection.execute(sql: Self.bookkeepingSQL)
            if try appliedVersions(connection).contains(migration.version) {
                return false
            }
            try connection.execute(sql: migration.sql)
            if let broken = try connection.prepare("PRAGMA foreign_key_check").fetchOne({ row in
                (table: try row[0] as String, rowID: try row[1] as Int64?)
            }) {
                throw MigrationError.foreignKeyViolation(version: migration.version, table: broken.table, rowID: broken.rowID)
            }
            try connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [migration.version, migration.name])
            try connection.execute(sql: "PRAGMA user_version = \(migration.version)")
            return true
        }
    }

    /// The versions recorded in `schema_migrations` (empty for a new database); reads only.
    public func appliedVersions(_ connection: Connection) throws -> [Int] {
        let hasBookkeeping = try connection.prepare(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchOne { try $0[0] as Int64 } ?? 0
        guard hasBookkeeping > 0 else { return [] }
        return try connection.cachedStatement("SELECT version FROM schema_migrations ORDER BY version")
            .fetchAll { row in try row[0] as Int }
    }

    /// Refuses databases of other applications and databases newer than this binary, reading only.
    ///
    /// - Throws: `MigrationError`, or `SQLiteError` (`.notADatabase` for a file that is not SQLite).
    public func checkCompatible(_ connection: Connection) throws {
        // One snapshot for all the reads: another process may commit its first migration
        // between two of them (the table count then saw its tables, the bookkeeping check not).
        if connection.isAutocommit {
            try connection.transaction(.deferred) { try checkCompatibleInSnapshot(connection) }
        } else {
            try checkCompatibleInSnapshot(connection)
        }
    }

    private func checkCompatibleInSnapshot(_ connection: Connection) throws {
        let foundID = try connection.prepare("PRAGMA application_id").fetchOne { try $0[0] as Int64 } ?? 0
        if foundID != 0 && foundID != Int64(applicationID) {
            throw MigrationError.foreignDatabase("its application_id is \(foundID)")
        }
        let hasBookkeeping = try connection.prepare(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchOne { try $0[0] as Int64 } ?? 0
        if hasBookkeeping == 0 {
            let tables = try connection.prepare(
                "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            ).fetchOne { try $0[0] as Int64 } ?? 0
            if tables > 0 {
                throw MigrationError.foreignDatabase("it holds \(tables) schema objects but no schema_migrations table")
            }
            return
        }
        let recorded = try connection.prepare("SELECT version, name FROM schema_migrations ORDER BY version")
            .fetchAll { row in (version: try row[0] as Int, name: try row[1] as String) }
        if let newest = recorded.last?.version, newest > knownVersion {
            throw MigrationError.schemaTooNew(databaseVersion: newest, knownVersion: knownVersion)
        }
        let knownNames = Dictionary(uniqueKeysWithValues: migrations.map { ($0.version, $0.name) })
        for (version, name) in recorded where knownNames[version] != name {
            throw MigrationError.historyMismatch(
                version: version, recordedName: name, knownName: knownNames[version] ?? "nothing")
        }
    }

    static let bookkeepingSQL = """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )
        """
}
