import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import PostgresNIO
import Testing

@Suite("The PostgreSQL schema keeps the ledger's rules")
struct PostgresSchemaTests {
    @Test("events (and model_prices) refuse UPDATE, DELETE and TRUNCATE, even from a superuser")
    func eventsIsAppendOnly() async throws {
        // Proves the append-only rule is the database's, not the store's: a superuser's plain SQL is refused.
        try await withPostgresLedger { ledger, url in
            try await ledger.consume("t", promptTokens: 5)
            try await ledger.setPrice(model: "m", promptUSDPerMillion: "1", completionUSDPerMillion: "1")
            try await withDatabase(url) { client in
                #expect(await sqlState { try await client.query("UPDATE events SET prompt_tokens = 0") } == "23001")
                #expect(await sqlState { try await client.query("DELETE FROM events") } == "23001")
                #expect(await sqlState { try await client.query("TRUNCATE events CASCADE") } == "23001")
                #expect(await sqlState { try await client.query("UPDATE model_prices SET source = 'x'") } == "23001")
            }
            #expect(try await ledger.usage("t")?.totalTokens == 5)
        }
    }

    @Test("a role with only INSERT and SELECT on events can run the ledger, reprices included")
    func narrowRoleSuffices() async throws {
        // Proves the server's role needs no UPDATE or DELETE on events: the derived tables are
        // kept by SECURITY DEFINER triggers, and the role's own UPDATE is refused by privilege.
        // A reprice locks the rollup rows it changes through 0008's SECURITY DEFINER function,
        // since the role may not lock them FOR UPDATE itself.
        try await withPostgresLedger { owner, url in
            let role = "ledger_writer_\(UInt32.random(in: 0...UInt32.max))"
            try await withDatabase(url) { client in
                try await client.query(PostgresQuery(unsafeSQL: "CREATE ROLE \(role) LOGIN"))
                try await client.query(PostgresQuery(unsafeSQL: "GRANT SELECT, INSERT ON events TO \(role)"))
                try await client.query(PostgresQuery(unsafeSQL: "GRANT SELECT, INSERT, UPDATE ON thread_locks TO \(role)"))
                try await client.query(
                    PostgresQuery(
                        unsafeSQL: """
                            GRANT SELECT ON thread_state, thread_thresholds, holds, ledger_settings, model_prices,
                                price_withdrawals, usage_rollup, usage_agent_model, schema_migrations,
                                usage_agent_model_live, scope_budgets, scope_thresholds, scope_refusals,
                                thread_refusals TO \(role)
                            """))
            }
            let narrowURL = url.replacingOccurrences(of: "postgres://postgres@", with: "postgres://\(role)@")
            let ledger = try await PostgresLedger(url: narrowURL)
            try await ledger.setLimit("t", maxTokens: 100)
            // Scope rows are locked and refusals recorded through SECURITY DEFINER code too.
            try await ledger.setBudget(try BudgetScope(parsing: "org:o"), maxTokens: 90)
            let usage = try UsageDetails(metadataJSON: #"{"org_id":"o"}"#)
            let result = try await ledger.checkAndConsume("t", promptTokens: 80, usage: usage)
            #expect(result.crossedThresholds.map(\.thresholdPercent) == [75])
            #expect(result.crossedScopeThresholds.map(\.thresholdPercent) == [75])
            await #expect(throws: BudgetExhaustedError.self) {
                try await ledger.checkAndConsume("t", promptTokens: 11, usage: usage)
            }
            #expect(try await ledger.events(after: 0, limit: 100).events.contains { $0.kind == "refusal" })
            #expect(try await ledger.usageTotals().totalTokens == 80)
            let start = try await ledger.consume("t", promptTokens: 10, usage: UsageDetails(model: "acme-narrow")).event.timestampMicroseconds
            try await owner.setPrice(model: "acme-narrow", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: start)
            let repriced = await outcome { try await ledger.reprice(model: "acme-narrow", from: start, to: start + 1) }
            #expect(repriced == "ok \(RepriceResult(repricedCount: 1, costNanodollars: 10_000, unpricedCount: 0, isComplete: true))")
            await ledger.close()
        }
    }

    @Test("a database whose schema is newer is refused and left as it was")
    func newerSchemaIsRefused() async throws {
        // Proves the migrator refuses what it does not know instead of writing over it.
        let url = try await PostgresTestCluster.freshDatabase()
        try await PostgresLedger(url: url).close()
        try await withDatabase(url) { client in
            try await client.query("INSERT INTO schema_migrations (version, name) VALUES (999, '0999_future.sql')")
        }
        await #expect(throws: PostgresLedgerError.self) { try await PostgresLedger(url: url) }
        do {
            _ = try await PostgresLedger(url: url)
        } catch {
            #expect("\(error)".contains("newer than this binary's"))
        }
        let versions = try await withDatabase(url) { client in
            let rows = try await client.query("SELECT count(*) FROM schema_migrations")
            var count: Int64 = 0
            for try await value in rows.decode(Int64.self) { count = value }
            return count
        }
        #expect(versions == Int64(PostgresLedger.migrations.count) + 1)
    }

    @Test("a database at 0001 with unpriced usage gets its unpriced tokens from 0002, and a server role keeps its grants")
    func unpricedTokensMigration() async throws {
        // Proves 0002 fills the rollup rows already there from the events (two usage windows; a
        // priced consume left out), the views show the figures, events are untouched, and the
        // views are replaced, not dropped: a role granted SELECT on usage_agent_model_live before
        // the migration still reads the usage totals after it.
        let url = try await PostgresTestCluster.freshDatabase()
        let role = "ledger_reader_\(UInt32.random(in: 0...UInt32.max))"
        let first = try #require(PostgresLedger.migrations.first { $0.version == 1 })
        try await withDatabase(url) { client in
            // As PostgresMigrator runs a migration: one DO block around the file's text.
            try await client.query(PostgresQuery(
                unsafeSQL: "DO $test_block$ BEGIN EXECUTE $test_sql$\(first.sql)$test_sql$; END $test_block$"))
            for statement in [
                """
                CREATE TABLE schema_migrations (
                    version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                """,
                "INSERT INTO schema_migrations (version, name) VALUES (1, '0001_ledger.sql')",
                "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (1, 'limit', 't', 1000000)",
                """
                INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, agent_id, model, cost_nanos)
                VALUES (2, 'consume', 't', 1000, 500, 'a', 'Acme-9', NULL), (3, 'consume', 't', 10, 10, 'a', 'gpt-4o', 125000)
                """,
                "INSERT INTO events (timestamp_us, kind) VALUES (4, 'usage_reset')",
                """
                INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, agent_id, model, cost_nanos)
                VALUES (5, 'consume', 't', 7, 0, 'a', 'acme-9', NULL), (6, 'consume', 't', 300, 0, 'b', 'zeta-5', NULL)
                """,
                "CREATE ROLE \(role) LOGIN",
                "GRANT SELECT ON ledger_settings, model_prices, schema_migrations, usage_agent_model_live TO \(role)",
            ] {
                try await client.query(PostgresQuery(unsafeSQL: statement))
            }
        }

        let ledger = try await PostgresLedger(url: url)
        let totals = try await ledger.usageTotals(.allTime)
        #expect([totals.unpricedRequests, totals.unpricedTokens] == [3, 1_807])
        let window = try await ledger.usageTotals()
        #expect([window.unpricedRequests, window.unpricedTokens] == [2, 307])
        await ledger.close()
        let rows = try await withDatabase(url) { client in
            let rows = try await client.query(
                """
                SELECT usage_window || ' ' || agent_id || ' ' || model || ': ' || unpriced_requests || ', ' || unpriced_tokens
                FROM usage_agent_model ORDER BY usage_window, agent_id, model
                """)
            var result: [String] = []
            for try await text in rows.decode(String.self) { result.append(text) }
            let summary = try await client.query("SELECT count(*)::text || ' events' FROM events")
            for try await text in summary.decode(String.self) { result.append(text) }
            return result
        }
        #expect(rows == ["0 a acme-9: 1, 1500", "0 a gpt-4o: 0, 0", "1 a acme-9: 1, 7", "1 b zeta-5: 1, 300", "6 events"])

        let reader = try await PostgresLedger(url: url.replacingOccurrences(of: "postgres://postgres@", with: "postgres://\(role)@"))
        #expect(try await reader.usageTotals(.allTime).unpricedTokens == 1_807)
        await reader.close()
    }

    @Test("a closed ledger says so")
    func closedLedgerSaysSo() async throws {
        // Proves a call after close is `PostgresLedgerError.closed`, not a hang or a connection error.
        let ledger = try await PostgresLedger(url: try await PostgresTestCluster.freshDatabase())
        await ledger.close()
        await #expect {
            try await ledger.usage("t")
        } throws: { error in
            if case .closed = error as? PostgresLedgerError { return true }
            return false
        }
    }

    @Test("the embedded migrations are migrations/postgres/*.sql, numbered from 1")
    func migrationsAreEmbedded() {
        // Proves the build-time embedding picked up the PostgreSQL folder, not SQLite's, every
        // number once and in order.
        let migrations = PostgresLedger.migrations
        #expect(migrations.map(\.version) == Array(1...migrations.count))
        #expect(migrations.first?.name == "0001_ledger.sql")
        #expect(migrations.first?.sql.contains("GENERATED ALWAYS AS IDENTITY") == true)
    }

    @Test("one agent's calls on many threads add to sharded rollup rows, which the views sum exactly")
    func rollupRowsAreShardedByThread() async throws {
        // Proves migration 0003's shards: consumes of 200 threads under one agent and model land
        // in several usage_rollup and usage_agent_model rows (so that concurrent servers do not
        // queue on one row lock), and the views still show one row per key with the exact sums.
        try await withPostgresLedger { ledger, url in
            for thread in 0..<200 {
                try await ledger.consume(
                    "thread-\(thread)", promptTokens: 3, completionTokens: Int64(thread),
                    usage: UsageDetails(agentID: "agent", model: "GPT-4o"))
            }
            try await withDatabase(url) { client in
                let shards = try await client.query(
                    "SELECT count(*), count(DISTINCT shard) FROM usage_rollup WHERE agent_id = 'agent' AND model = 'gpt-4o'")
                for try await (rows, distinctShards) in shards.decode((Int64, Int64).self) {
                    #expect(rows > 1 && rows == distinctShards, "one row per shard, and more than one shard")
                }
                let agentShards = try await client.query("SELECT count(*) FROM usage_agent_model WHERE agent_id = 'agent'")
                for try await rows in agentShards.decode(Int64.self) { #expect(rows > 1) }
                let live = try await client.query(
                    """
                    SELECT count(*), sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint, sum(request_count)::bigint
                    FROM usage_rollup_live WHERE agent_id = 'agent'
                    """)
                for try await (keys, prompt, completion, requests) in live.decode((Int64, Int64, Int64, Int64).self) {
                    #expect(keys == 1)
                    #expect(prompt == 600 && completion == 19_900 && requests == 200)
                }
                let byAgent = try await client.query(
                    "SELECT count(*), sum(total_tokens)::bigint FROM billing_by_agent_model WHERE agent_id = 'agent'")
                for try await (keys, total) in byAgent.decode((Int64, Int64).self) {
                    #expect(keys == 1 && total == 20_500)
                }
            }
            let totals = try await ledger.usageTotals(.allTime)
            #expect(totals.totalTokens == 20_500 && totals.requestCount == 200)
        }
    }
}

