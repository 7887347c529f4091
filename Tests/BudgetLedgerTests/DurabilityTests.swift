@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

@Suite("Restart, append-only history, verify, migrations")
struct DurabilityTests {
    @Test("budgets, threshold crossings, resets and cleanups survive a restart")
    func restart() throws {
        // Proves everything lives in the file: a reopened ledger reads exactly what was recorded.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        do {
            let ledger = try Ledger(path: path)
            try ledger.configure(maxTokensPerThread: 400)
            try ledger.setLimit("a", maxTokens: 100)
            #expect(try ledger.consume("a", promptTokens: 76).crossedThresholds.count == 1)
            try ledger.consume("b", promptTokens: 10)
            try ledger.resetThread("b")
            try ledger.consume("c", promptTokens: 10)
            try ledger.cleanupThread("c")
            ledger.close()
        }
        let reopened = try Ledger(path: path)
        #expect(try reopened.maxTokensPerThread == 400)
        #expect(try reopened.usage("a")?.totalTokens == 76)
        #expect(try reopened.usage("a")?.triggeredThresholds == [75])
        #expect(try reopened.consume("a", promptTokens: 1).crossedThresholds.isEmpty)
        #expect(try reopened.usage("b") == ThreadBudget(threadID: "b", maxTokens: 400))
        #expect(try reopened.usage("c") == nil)
        #expect(try reopened.verify().isConsistent)
    }

    @Test("UPDATE, DELETE and INSERT OR REPLACE on events fail through a raw connection")
    func appendOnly() throws {
        // Proves history cannot be rewritten even outside the ledger API.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        try ledger.consume("t", promptTokens: 5, idempotencyKey: "k")
        ledger.close()
        let raw = try Connection(path: path)
        let attempts = [
            "UPDATE events SET prompt_tokens = prompt_tokens",
            "UPDATE events SET prompt_tokens = 0 WHERE kind = 'consume'",
            "DELETE FROM events",
            "INSERT OR REPLACE INTO events (id, timestamp_us, kind, thread_id, max_tokens) VALUES (1, 0, 'limit', 't', 9)",
            "INSERT OR REPLACE INTO events (timestamp_us, kind, thread_id, idempotency_key) VALUES (0, 'consume', 't', 'k')",
        ]
        for sql in attempts {
            let error = try #require(throws: SQLiteError.self) { try raw.execute(sql: sql) }
            #expect(error.isConstraint)
            #expect(error.message.contains("append-only"))
        }
        raw.close()
        #expect(try Ledger(path: path).verify().isConsistent)
        #expect(try Ledger(path: path).usage("t")?.totalTokens == 5)
    }

    @Test("verify catches a corrupted derived total and a dropped guard trigger")
    func verifyCatchesCorruption() throws {
        // Proves verify recomputes from the events rather than trusting the derived tables.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        try ledger.consume("t", promptTokens: 5)
        #expect(try ledger.verify().isConsistent)
        let raw = try Connection(path: path)
        try raw.execute(sql: "UPDATE thread_state SET prompt_tokens = 4 WHERE thread_id = 't'")
        try raw.execute(sql: "DROP TRIGGER events_forbid_delete")
        raw.close()
        let report = try ledger.verify()
        #expect(!report.isConsistent)
        #expect(report.problems.contains { $0.contains("thread_state") && $0.contains("t") })
        #expect(report.problems.contains { $0.contains("events_forbid_delete") })
    }

    @Test("the binary carries migrations/ byte for byte")
    func embeddedMigrations() throws {
        // Proves the schema compiled into the library is exactly the checked-in SQL.
        let folder = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("migrations")
        // schema.sql is the generated snapshot (SchemaSnapshotTests), not a migration.
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { $0.hasSuffix(".sql") && $0 != "schema.sql" }.sorted()
        #expect(!names.isEmpty)
        #expect(Ledger.migrations.map(\.name) == names)
        for migration in Ledger.migrations {
            let onDisk = try Data(contentsOf: folder.appendingPathComponent(migration.name))
            #expect(Data(migration.sql.utf8) == onDisk, "\(migration.name) differs from the embedded copy")
        }
    }

    @Test("a ledger written by a newer schema is refused and left untouched")
    func newerSchema() throws {
        // Proves an old binary never writes into a newer ledger.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        try Ledger(path: path).consume("t", promptTokens: 1)
        let raw = try Connection(path: path)
        try raw.execute(sql: "INSERT INTO schema_migrations (version, name) VALUES (9999, '9999_future.sql')")
        raw.close()
        let before = try eventCount(at: path)
        let error = try #require(throws: LedgerError.self) { try Ledger(path: path) }
        guard case .incompatible(_, .schemaTooNew(let found, _)) = error else {
            Issue.record("expected schemaTooNew, got \(error)")
            return
        }
        #expect(found == 9999)
        #expect("\(error)".contains("newer"))
        #expect(try eventCount(at: path) == before)
    }

    @Test("a file that is not a database is refused, named, and not overwritten")
    func notADatabase() throws {
        // Proves opening garbage fails clearly and writes nothing into it.
        let folder = try TemporaryFolder()
        let path = folder.path("notes.db")
        let bytes = Data("these are my notes, not a ledger\n".utf8)
        try bytes.write(to: URL(fileURLWithPath: path))
        let sqliteError = try #require(thrownDatabaseError(at: path) { _ = try Ledger(path: path) })
        #expect(sqliteError.code == .notADatabase, "\(sqliteError)")
        #expect("\(LedgerError.database(path: path, StorageFailure(sqliteError)))".contains("not a SQLite database"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == bytes)
    }

    @Test("reopening applies no migration twice")
    func migrationsIdempotent() throws {
        // Proves migrations apply once and reopening is a no-op for the schema.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        _ = try Ledger(path: path)
        _ = try Ledger(path: path)
        let raw = try Connection(path: path)
        let versions = try raw.prepare("SELECT version FROM schema_migrations ORDER BY version").fetchAll { try $0[0] as Int }
        #expect(versions == Ledger.migrations.map(\.version))
        let userVersion = try raw.prepare("PRAGMA user_version").fetchOne { try $0[0] as Int }
        #expect(userVersion == Ledger.migrations.last?.version)
    }

    @Test("a ledger written before 0004 upgrades with every event, id and derived total intact")
    func upgradeRebuildsEventsWithoutLosingAnything() throws {
        // Proves that 0004's rebuild of `events` (new CHECKs, merged triggers, a new rollup)
        // keeps every row byte for byte, fills the new rollup from the old one, and leaves a
        // ledger that verify finds consistent and that records as before.
        let folder = try TemporaryFolder()
        let path = folder.path("old.db")
        let raw = try Connection(path: path)
        let before0004 = Ledger.migrations.filter { $0.version < 4 }
        #expect(before0004.count == 3)
        try Migrator(migrations: before0004, applicationID: Ledger.applicationID).migrate(raw)
        let script = [
            "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (1000, 'open', 'a', 100)",
            "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (1001, 'limit', 'b', 50)",
            """
            INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, idempotency_key,
                                agent_id, model, metadata, org_id, cost_nanos)
            VALUES (86400000001, 'consume', 'a', 60, 20, 'k1', 'agent', 'gpt-4o', '{"org_id":"o"}', 'o', 350000)
            """,
            """
            INSERT INTO events (timestamp_us, kind, thread_id, threshold_percent, severity, caused_by, tokens_used, max_tokens)
            VALUES (86400000001, 'threshold', 'a', 75, 'warning', 3, 80, 100)
            """,
            "INSERT INTO events (timestamp_us, kind) VALUES (86400000002, 'usage_reset')",
            "INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens) VALUES (86400000003, 'consume', 'b', 7)",
            "INSERT INTO events (timestamp_us, kind, thread_id, held_tokens, expires_at_us) VALUES (86400000004, 'reserve', 'b', 9, 99999999999999)",
            "INSERT INTO events (timestamp_us, kind, thread_id, held_tokens, expires_at_us) VALUES (86400000005, 'reserve', 'b', 3, 99999999999999)",
            "INSERT INTO events (timestamp_us, kind, thread_id, reservation_id) VALUES (86400000006, 'release', 'b', 7)",
            "INSERT INTO events (timestamp_us, kind, thread_id) VALUES (86400000007, 'reset', 'a')",
            "INSERT INTO events (timestamp_us, kind, max_tokens) VALUES (86400000008, 'configure', 500)",
            "INSERT INTO events (timestamp_us, kind, thread_id) VALUES (86400000009, 'cleanup', 'b')",
        ]
        for statement in script { try raw.execute(sql: statement) }
        let dump = { (connection: Connection, table: String) throws -> [[SQLiteValue]] in
            // 0004 adds ledger_settings.rolled_up_to, 0010 columns of events and holds, 0013
            // usage_rollup.unpriced_tokens: compare the columns both versions have.
            let columns =
                switch table {
                case "ledger_settings": "id, default_max_tokens, usage_window"
                case "holds": "reservation_id, thread_id, tokens, expires_at_us"
                case "usage_rollup":
                    """
                    usage_window, day, org_id, user_id, agent_id, model, prompt_tokens, completion_tokens, request_count,
                    cost_nanos, unpriced_requests, latency_ms_sum, latency_count
                    """
                case "events":
                    """
                    id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens, threshold_percent,
                    severity, caused_by, tokens_used, idempotency_key, agent_id, model, provider, latency_ms, metadata,
                    org_id, user_id, cost_nanos, held_tokens, expires_at_us, reservation_id
                    """
                default: "*"
                }
            let statement = try connection.prepare("SELECT \(columns) FROM \(table) ORDER BY 1, 2, 3")
            return try statement.fetchAll { row in (0..<statement.columnCount).map { row.value(at: $0) } }
        }
        let derived = ["events", "thread_state", "thread_thresholds", "ledger_settings", "holds", "usage_rollup"]
        let old = try derived.map { try dump(raw, $0) }
        raw.close()

        let ledger = try Ledger(path: path)
        defer { ledger.close() }
        let report = try ledger.verify()
        #expect(report.problems == [])
        #expect(report.eventCount == Int64(script.count))
        let reopened = try Connection(path: path)
        defer { reopened.close() }
        for (table, rows) in zip(derived, old) {
            #expect(try dump(reopened, table) == rows, "\(table) changed in the upgrade")
        }
        let small = try reopened.prepare(
            "SELECT usage_window, agent_id, model, prompt_tokens, completion_tokens, request_count, cost_nanos FROM usage_agent_model ORDER BY 1"
        ).fetchAll { row in try [row[0], row[3], row[4], row[5], row[6]] as [Int64] }
        #expect(small == [[0, 60, 20, 1, 350_000], [1, 7, 0, 1, 0]])
        // The upgraded file records as before; the next id follows the last copied one.
        let result = try ledger.checkAndConsume("a", promptTokens: 10)
        #expect(result.event.id == Int64(script.count) + 1)
        #expect(result.budget.totalTokens == 10)
        #expect(try ledger.verify().problems == [])
    }

    @Test("the WAL is checkpointed in the background past 1,000 frames, and nothing is lost")
    func backgroundCheckpoints() throws {
        // Proves the writer's WAL hook hands checkpoints to the background queue (SQLite's
        // auto-checkpoint is off for the writer), that pages reach the main file while the
        // ledger stays open, and that every consume survives a reopen.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        let mainFileBefore = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
        for index in 0..<3_000 {
            try ledger.consume("t\(index % 50)", promptTokens: 1, idempotencyKey: "key-\(index)")
        }
        let deadline = Date().addingTimeInterval(10)
        while ledger.backgroundCheckpoints == 0 && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.01)
        }
        #expect(ledger.backgroundCheckpoints > 0)
        let mainFileAfter = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
        #expect(mainFileAfter > mainFileBefore, "checkpointed pages are in the main file")
        let walBytes = try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int ?? 0
        #expect(walBytes < 16_000 * 4_200, "the WAL stays bounded")
        ledger.close()
        let reopened = try Ledger(path: path)
        #expect(try reopened.usageOverview(.allTime).totals.requestCount == 3_000)
        #expect(try reopened.verify().problems == [])
    }
}

@Suite("Opening an up-to-date ledger writes nothing")
struct OpenWithoutWritingTests {
    @Test("an up-to-date ledger opens and reads while another connection holds SQLite's write lock")
    func openDoesNotWaitForAWriter() throws {
        // Proves the migrator reads what is pending in a read transaction and takes the write lock
        // only when something is: before, every open took it once per migration, so a read-only
        // command waited behind any writer and failed with SQLITE_BUSY after the busy timeout.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        try Ledger(path: path).consume("t", promptTokens: 3)
        let writer = try Connection(path: path)
        defer { writer.close() }
        try writer.execute(sql: "BEGIN IMMEDIATE")
        try writer.execute(sql: "INSERT INTO events (timestamp_us, kind, max_tokens) VALUES (1, 'configure', 7)")
        let reader = try Ledger(path: path, configuration: Ledger.Configuration(busyTimeoutMilliseconds: 100))
        #expect(try reader.usage("t")?.totalTokens == 3)
        try writer.execute(sql: "ROLLBACK")
    }
}
