@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// `migrations/schema.sql` is the whole schema as it stands after the last migration: every
/// table, index, trigger and view in one file, so that nobody has to replay seven migrations in
/// their head. It is generated, never edited: `make schema` rewrites it.
@Suite("migrations/schema.sql")
struct SchemaSnapshotTests {
    static let file = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("migrations/schema.sql")

    /// The schema of a fresh ledger, tables first, then indexes, triggers and views, by name.
    static func currentSchema() throws -> String {
        let folder = try TemporaryFolder()
        let path = folder.path("fresh.db")
        try Ledger(path: path).close()
        let connection = try Connection(path: path)
        defer { connection.close() }
        let statements = try connection.prepare(
            """
            SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
            ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'trigger' THEN 2 ELSE 3 END, name
            """
        ).fetchAll { try $0[0] as String }
        let version = Ledger.migrations.last?.version ?? 0
        return """
            -- The ledger's schema after migration \(version), as SQLite stores it: generated from a fresh
            -- ledger by `make schema` (SchemaSnapshotTests fails when it is stale). Read it to see every
            -- table, index, trigger and view in one place; change the schema only by a new migration.

            """ + statements.map { $0 + ";\n" }.joined(separator: "\n")
    }

    @Test("schema.sql equals the schema a fresh ledger gets from the migrations")
    func snapshotIsCurrent() throws {
        // Proves the one-file schema cannot drift from the migrations: any new migration without
        // `make schema` fails here. BUDGET_LEDGER_UPDATE_SCHEMA=1 rewrites the file instead.
        let current = try Self.currentSchema()
        if ProcessInfo.processInfo.environment["BUDGET_LEDGER_UPDATE_SCHEMA"] == "1" {
            try Data(current.utf8).write(to: Self.file)
        }
        let stored = try String(contentsOf: Self.file, encoding: .utf8)
        #expect(stored == current, "migrations/schema.sql is stale: run `make schema`")
    }
}
