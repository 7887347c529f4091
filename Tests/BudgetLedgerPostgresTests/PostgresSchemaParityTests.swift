import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import LedgerSQLite
import PostgresNIO
import Testing

@Suite("The PostgreSQL schema has SQLite's views, by name and column")
struct PostgresSchemaParityTests {
    /// SQLite views that PostgreSQL does not have yet, each for a reason (docs/postgres.md): the
    /// legacy price rows, verify's recomputations and the fold's pending parts;
    /// and SQLite's trigger plumbing, which no reader reads (migration 0014: views that show no
    /// rows, there for their INSTEAD OF triggers; 0015's `events_to_guard` too); and 0016's time
    /// blocks as id ranges (PostgreSQL reads time ranges through its index on events' timestamps).
    static let sqliteOnlyViews: Set<String> = [
        "event_prices", "holds_from_events", "ledger_settings_from_events", "thread_life_events",
        "thread_state_from_events", "thread_thresholds_from_events", "usage_agent_model_from_events",
        "usage_agent_model_pending", "usage_rollup_from_events", "usage_rollup_pending",
        "consumes_to_apply", "events_to_apply", "events_to_check", "events_to_guard",
        "event_id_ranges", "event_time_blocks_from_events",
    ]

    /// The views billing and the dashboards read: they must be on both stores.
    static let billingViews: Set<String> = [
        "usage_totals", "usage_by_agent", "usage_by_model", "usage_by_org", "usage_by_user", "usage_by_day",
        "usage_by_thread", "billing_by_agent_model", "billing_by_org_model_day", "thread_budgets",
        "thread_budgets_with_holds", "live_holds", "budget_windows",
    ]

    @Test("every PostgreSQL view is a SQLite view with the same columns in the same order")
    func viewsMatchSQLite() async throws {
        // Proves billing SQL written against SQLite's views names only columns PostgreSQL has:
        // the two schemas are written twice, so a view changed on one side fails here.
        let sqlite = try sqliteViews()
        let postgres = try await postgresViews()
        #expect(Self.billingViews.isSubset(of: Set(postgres.keys)))
        #expect(Set(sqlite.keys).subtracting(postgres.keys) == Self.sqliteOnlyViews)
        for (view, columns) in postgres {
            #expect(sqlite[view] == columns, "view \(view)")
        }
    }

    private func sqliteViews() throws -> [String: [String]] {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pg-parity-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("ledger.db").path
        try Ledger(path: path).close()
        let connection = try Connection(path: path)
        defer { connection.close() }
        let views = try connection.prepare("SELECT name FROM sqlite_schema WHERE type = 'view' ORDER BY name")
            .fetchAll { try $0[0] as String }
        var result: [String: [String]] = [:]
        for view in views {
            result[view] = try connection.prepare("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                .fetchAll([view]) { try $0[0] as String }
        }
        return result
    }

    private func postgresViews() async throws -> [String: [String]] {
        try await withPostgresLedger { _, url in
            let server = try await PostgresTestCluster.shared()
            let database = String(url.split(separator: "/").last!)
            return try await PostgresTestCluster.withAdminClient(server, database: database) { client in
                var result: [String: [String]] = [:]
                let rows = try await client.query(
                    """
                    SELECT c.table_name::text, c.column_name::text FROM information_schema.columns AS c
                    JOIN information_schema.views AS v ON v.table_schema = c.table_schema AND v.table_name = c.table_name
                    WHERE c.table_schema = current_schema() ORDER BY c.table_name, c.ordinal_position
                    """)
                for try await (view, column) in rows.decode((String, String).self) {
                    result[view, default: []].append(column)
                }
                return result
            }
        }
    }
}
