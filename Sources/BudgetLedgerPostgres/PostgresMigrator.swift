import Logging
import PostgresNIO

/// Applies `migrations/postgres/` to a database: each pending version in one transaction, and
/// refuses a database whose schema is newer than this binary's or is not this ledger's.
///
/// Servers starting together are serialized by a transaction-scoped advisory lock, so a
/// migration runs once.
struct PostgresMigrator {
    let migrations: [PostgresMigration]
    let url: String

    /// `pg_advisory_xact_lock`'s key: 'BDLG', the SQLite ledger's application id.
    static let lockKey: Int64 = 0x4244_4C47

    /// Brings the database up to the last migration. A database already there is only read
    /// (the server's role needs no CREATE on the schema).
    ///
    /// - Throws: `PostgresLedgerError.incompatible` for a newer or foreign schema.
    func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        let applied = try await appliedVersions(connection, logger: logger)
        try checkCompatible(applied)
        let pending = migrations.filter { applied[$0.version] == nil }.sorted { $0.version < $1.version }
        for migration in pending {
            try await connection.execute("BEGIN", logger: logger)
            do {
                try await connection.execute("SELECT pg_advisory_xact_lock(\(Self.lockKey))", logger: logger)
                try await connection.execute(
                    """
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                    """, logger: logger)
                let applied = try await appliedVersions(connection, logger: logger)
                try checkCompatible(applied)
                if applied[migration.version] == nil {
                    try await connection.execute(Self.statement(running: migration), logger: logger)
                    try await connection.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                        logger: logger)
                }
                try await connection.execute("COMMIT", logger: logger)
            } catch {
                await connection.rollBack(after: error, logger: logger)
                throw error
            }
        }
    }

    /// The dollar-quote tags that wrap a migration's text and the block around it; no migration may contain them.
    static let quoteTag = "$budget_ledger_migration$"
    static let blockTag = "$budget_ledger_block$"

    /// One statement that runs the many of `migration`: postgres-nio speaks only the extended
    /// protocol (one statement per query), while PL/pgSQL's EXECUTE runs a string of many.
    static func statement(running migration: PostgresMigration) -> PostgresQuery {
        guard !migration.sql.contains(quoteTag), !migration.sql.contains(blockTag) else {
            preconditionFailure("\(migration.name) contains \(quoteTag) or \(blockTag), which wrap migrations")
        }
        return PostgresQuery(unsafeSQL: "DO \(blockTag) BEGIN EXECUTE \(quoteTag)\(migration.sql)\(quoteTag); END \(blockTag)")
    }

    /// The versions recorded in `schema_migrations` (none when it does not exist yet).
    private func appliedVersions(_ connection: PostgresConnection, logger: Logger) async throws -> [Int: String] {
        var applied: [Int: String] = [:]
        let exists = try await connection.fetchOne(
            "SELECT to_regclass('schema_migrations') IS NOT NULL", as: Bool.self, logger: logger)
        guard exists == true else { return applied }
        let rows = try await connection.query("SELECT version, name FROM schema_migrations", logger: logger)
        for try await (version, name) in rows.decode((Int32, String).self) {
            applied[Int(version)] = name
        }
        return applied
    }

    /// Refuses versions this binary does not know, and known versions under another name.
    func checkCompatible(_ applied: [Int: String]) throws {
        let known = Dictionary(uniqueKeysWithValues: migrations.map { ($0.version, $0.name) })
        let latest = known.keys.max() ?? 0
        if let newer = applied.keys.filter({ $0 > latest }).max() {
            throw PostgresLedgerError.incompatible(
                url: url,
                "its schema is at version \(newer), newer than this binary's \(latest): "
                    + "use a newer budget-ledger (nothing was changed)")
        }
        for (version, name) in applied where known[version] != name {
            throw PostgresLedgerError.incompatible(
                url: url, "its migration \(version) is \(name), not \(known[version] ?? "?"): it is not this ledger's schema")
        }
    }
}
