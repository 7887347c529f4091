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

    /// Brings the database up to the last migration.
    ///
    /// - Throws: `PostgresLedgerError.incompatible` for a newer or foreign schema.
    func migrate(_ connection: PostgresConnection, logger: Logger) async throws {
        for migration in migrations.sorted(by: { $0.version < $1.version }) {
            try await connection.query("BEGIN", logger: logger)
            do {
                try await connection.query("SELECT pg_advisory_xact_lock(\(Self.lockKey))", logger: logger)
                try await connection.query(
                    """
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                    """, logger: logger)
                let applied = try await appliedVersions(connection, logger: logger)
                try checkCompatible(applied)
                if applied[migration.version] == nil {
                    // The simple query protocol: a migration is many statements.
                    _ = try await connection.simpleQuery(migration.sql).get()
                    try await connection.query(
                        "INSERT INTO schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                        logger: logger)
                }
                try await connection.query("COMMIT", logger: logger)
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    private func appliedVersions(_ connection: PostgresConnection, logger: Logger) async throws -> [Int: String] {
        var applied: [Int: String] = [:]
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
