import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import PostgresNIO
import Synchronization
import Testing

/// Re-pricing usage recorded unpriced (issue 18, migration 0008) on PostgreSQL, against the SQLite `Ledger`.
@Suite("PostgresLedger reprices unpriced usage as the SQLite Ledger does")
struct PostgresRepriceTests {
    static let second: Int64 = 1_000_000
    static let day: Int64 = 86_400 * second

    /// The billing SQL compared across the stores: every view a reprice changes.
    static let billingQueries = [
        "SELECT agent_id, model, total_tokens, prompt_tokens, completion_tokens, request_count, cost_nanos, unpriced_requests, unpriced_tokens, cost_complete FROM billing_by_agent_model ORDER BY agent_id NULLS FIRST, model NULLS FIRST",
        "SELECT org_id, model, day, total_tokens, cost_nanos, unpriced_requests, unpriced_tokens, cost_complete FROM billing_by_org_model_day ORDER BY org_id NULLS FIRST, model NULLS FIRST, day",
        "SELECT day, total_tokens, request_count, cost_nanos, unpriced_requests, unpriced_tokens FROM usage_by_day ORDER BY day",
        "SELECT agent_id, cost_nanos, unpriced_requests, unpriced_tokens, cost_complete FROM usage_by_agent ORDER BY agent_id NULLS FIRST",
        "SELECT model, cost_nanos, unpriced_requests, unpriced_tokens, cost_complete FROM usage_by_model ORDER BY model NULLS FIRST",
        "SELECT org_id, cost_nanos, unpriced_requests, unpriced_tokens FROM usage_by_org ORDER BY org_id NULLS FIRST",
        "SELECT thread_id, total_tokens, cost_nanos, unpriced_requests, unpriced_tokens, cost_complete FROM usage_by_thread ORDER BY thread_id",
        "SELECT usage_window, agent_id, model, request_count, cost_nanos, unpriced_requests, unpriced_tokens FROM usage_agent_model_live ORDER BY usage_window, agent_id, model",
        "SELECT total_tokens, request_count, cost_nanos, unpriced_requests, unpriced_tokens, cost_complete FROM usage_totals",
    ]

    @Test("a reprice of unpriced usage: the billing views before and after are identical on both stores, exact to the nano-dollar")
    func repriceMatchesSQLite() async throws {
        // Proves the finance case on PostgreSQL: 1,100 consumes of a model with no price (on two
        // agents, two orgs, two spellings, two days, across a usage reset, and past SQLite's fold
        // at 1,024 events) are billed by a reprice at two prices by their own timestamps; every
        // billing view reads the same rows from both stores before and after; the answers, the
        // overview, the export rollup and the exported events agree, exactly and as computed here;
        // a second reprice is a no-op; verify passes on both.
        let clock = TestClock()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pg-reprice-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("ledger.db").path
        let sqlite = try Ledger(path: path, configuration: Ledger.Configuration(clock: clock.read))
        defer { sqlite.close() }
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { postgres, url in
            let start = clock.read()
            let parity = ParitySteps(clock: clock)
            let priced = UsageDetails(agentID: "a", model: "gpt-4o")
            await parity.step("a priced consume", { try sqlite.consume("t0", promptTokens: 1_000, completionTokens: 500, usage: priced) },
                              { try await postgres.consume("t0", promptTokens: 1_000, completionTokens: 500, usage: priced) })
            let (promptA, completionA, promptB, completionB): (Int64, Int64, Int64, Int64) = (1_500, 3_000, 2_250, 4_125)
            let secondPriceFrom = start + 700 * Self.second
            var expected: Int64 = 0
            for index in 0..<1_100 {
                if index == 600 {
                    try sqlite.resetUsageWindow()
                    try await postgres.resetUsageWindow()
                }
                let (prompt, completion) = (Int64(1_000 + index % 7), Int64(10 + index % 3))
                let usage = try UsageDetails(
                    agentID: index % 2 == 0 ? "a" : "b", model: index % 3 == 0 ? "Acme-3" : "acme-3",
                    metadataJSON: index % 5 == 0 ? #"{"org_id":"o1"}"# : #"{"org_id":"o2","user_id":"u"}"#)
                let thread = "t\(index % 4)"
                let onSQLite = try sqlite.consume(thread, promptTokens: prompt, completionTokens: completion, usage: usage)
                let onPostgres = try await postgres.consume(thread, promptTokens: prompt, completionTokens: completion, usage: usage)
                #expect(onSQLite.event.costNanodollars == nil && onPostgres.event.costNanodollars == nil)
                let later = clock.read() >= secondPriceFrom
                expected += prompt * (later ? promptB : promptA) + completion * (later ? completionB : completionA)
                // A second apart, and the last 100 a day later (another day's rollup rows).
                clock.advance(microseconds: index == 999 ? Self.day : Self.second)
            }
            let before = try await queryBothStores(sqlitePath: path, postgresURL: url, Self.billingQueries)
            for (query, rows) in zip(Self.billingQueries, before) { #expect(rows.sqlite == rows.postgres, "before: \(query)") }

            // Price A from an hour before the usage, price B from its 700th second.
            for (prompt, completion, from) in [("1.5", "3", start - 3_600 * Self.second), ("2.25", "4.125", secondPriceFrom)] {
                await parity.step(
                    "price from \(from)",
                    { try sqlite.setPrice(model: "acme-3", promptUSDPerMillion: prompt, completionUSDPerMillion: completion, effectiveFrom: from) },
                    { try await postgres.setPrice(model: "acme-3", promptUSDPerMillion: prompt, completionUSDPerMillion: completion, effectiveFrom: from) })
            }
            let (from, to) = (start - Self.day, start + 2 * Self.day)
            await parity.step("reprice", { try sqlite.reprice(model: "ACME-3", from: from, to: to) },
                              { try await postgres.reprice(model: "ACME-3", from: from, to: to) })
            await parity.step("reprice again", { try sqlite.reprice(model: "acme-*", from: from, to: to) },
                              { try await postgres.reprice(model: "acme-*", from: from, to: to) })
            await parity.step("a reversed range", { try sqlite.reprice(model: "acme-3", from: to, to: from) },
                              { try await postgres.reprice(model: "acme-3", from: to, to: from) })
            await parity.step("a bad model", { try sqlite.reprice(model: "a*b*", from: from, to: to) },
                              { try await postgres.reprice(model: "a*b*", from: from, to: to) })
            await parity.step("a price under billed usage", {
                try sqlite.setPrice(model: "acme-3", promptUSDPerMillion: "9", completionUSDPerMillion: "9", effectiveFrom: start)
            }, { try await postgres.setPrice(model: "acme-3", promptUSDPerMillion: "9", completionUSDPerMillion: "9", effectiveFrom: start) })
            await parity.step("overview", { try sqlite.usageOverview(.allTime).totals }, { try await postgres.usageOverview(.allTime).totals })
            await parity.step("model", { try sqlite.usage(model: "acme-3", scope: .allTime) },
                              { try await postgres.usage(model: "acme-3", scope: .allTime) })
            await parity.step("rollup", { try sqlite.rollup(ExportQuery(), by: .model).map { "\($0.key ?? "-") \($0.totals)" } },
                              { try await postgres.rollup(ExportQuery(), by: .model).map { "\($0.key ?? "-") \($0.totals)" } })
            for step in parity.steps { #expect(step.sqlite == step.postgres, "\(step.name)") }

            let answer = RepriceResult(repricedCount: 1_100, costNanodollars: expected, unpricedCount: 0, isComplete: true)
            #expect(parity.steps.first { $0.name == "reprice" }?.postgres == "ok \(answer)")
            #expect(parity.steps.first { $0.name == "reprice again" }?.postgres == "ok \(RepriceResult.nothing)")
            #expect(parity.steps.first { $0.name == "a reversed range" }?.postgres.contains("to") == true)
            #expect(parity.steps.first { $0.name == "a price under billed usage" }?.postgres.hasPrefix("error") == true)
            let pricedCost = Int64(1_000 * 2_500 + 500 * 10_000)
            #expect(try await postgres.usageOverview(.allTime).totals.costNanodollars == pricedCost + expected)
            #expect(try await postgres.usage(model: "acme-3", scope: .allTime).unpricedRequests == 0)

            let after = try await queryBothStores(sqlitePath: path, postgresURL: url, Self.billingQueries)
            for (query, rows) in zip(Self.billingQueries, after) { #expect(rows.sqlite == rows.postgres, "after: \(query)") }
            #expect(before.map(\.postgres) != after.map(\.postgres), "the reprice changed what the views read")

            let exported = Totals()
            try await postgres.forEachConsumeEventPage(ExportQuery()) { page in exported.add(page) }
            var exportedOnSQLite: Int64 = 0
            try sqlite.forEachConsumeEvent(ExportQuery()) { exportedOnSQLite += $0.costNanodollars ?? 0 }
            #expect(exported.cost == pricedCost + expected && exportedOnSQLite == exported.cost)
            #expect(try sqlite.verify().problems == [])
            #expect(try await postgres.verify().problems == [])
        }
    }

    @Test("a reprice stops at its per-call limit, says it is not complete, and the next call finishes the range")
    func repriceStopsAtItsLimit() async throws {
        // Proves the limit on reprice events per call (`LedgerLimits.repricesPerCallMax`, here 2)
        // on PostgreSQL, with SQLite's answers: a range holding one more than the limit reprices
        // exactly the limit with `isComplete: false`, the next call bills the rest, nothing twice.
        let clock = TestClock()
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { ledger, _ in
            let start = clock.read()
            for _ in 0..<3 {
                try await ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "kappa-1"))
            }
            try await ledger.setPrice(model: "kappa-1", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: start)
            clock.advance(microseconds: 1)
            let first = try await ledger.reprice(model: "kappa-1", from: start, to: start + 1, limit: 2)
            #expect(first == RepriceResult(repricedCount: 2, costNanodollars: 2_000_000, unpricedCount: 1, isComplete: false))
            let second = try await ledger.reprice(model: "kappa-1", from: start, to: start + 1, limit: 2)
            #expect(second == RepriceResult(repricedCount: 1, costNanodollars: 1_000_000, unpricedCount: 0, isComplete: true))
            let totals = try await ledger.usage(model: "kappa-1", scope: .allTime)
            #expect(totals.costNanodollars == 3_000_000 && totals.unpricedRequests == 0 && totals.unpricedTokens == 0)
            #expect(try await ledger.verify().problems == [])
        }
    }

    @Test("two servers repricing one range at once, beside consumes, reprice each consume exactly once")
    func concurrentRepricesBillOnce() async throws {
        // Proves the lock order and the unique index under contention: 6 reprices of one range
        // (on two ledgers, two pools, as two servers; limit 50, each called until complete) run
        // while a seventh task consumes on the same agent, model and threads. Every call succeeds
        // (no constraint error, no deadlock reaches a caller), the reprices appended add up to one
        // per unpriced consume, their costs to the exact bill, and verify passes.
        let clock = TestClock()
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { first, url in
            let second = try await PostgresLedger(url: url, configuration: .init(clock: clock.read))
            do {
                try await Self.raceReprices(first, second, url: url, clock: clock)
            } catch {
                await second.close()
                throw error
            }
            await second.close()
        }
    }

    /// `concurrentRepricesBillOnce`'s calls and checks, on two ledgers of one database.
    private static func raceReprices(_ first: PostgresLedger, _ second: PostgresLedger, url: String, clock: TestClock) async throws {
        let start = clock.read()
        var expected: Int64 = 0
        for index in 0..<200 {
            let prompt = Int64(100 + index)
            try await first.consume("t\(index % 8)", promptTokens: prompt, completionTokens: 10, usage: UsageDetails(agentID: "a", model: "race-1"))
            expected += prompt * 1_000 + 10 * 2_000
            clock.advance(microseconds: 1_000)
        }
        try await first.setPrice(model: "race-1", promptUSDPerMillion: "1", completionUSDPerMillion: "2", effectiveFrom: start)
        let end = clock.read() + 1
        let results = try await withThrowingTaskGroup(of: [RepriceResult].self) { group in
            for caller in 0..<6 {
                let ledger = caller % 2 == 0 ? first : second
                group.addTask {
                    var answers: [RepriceResult] = []
                    repeat {
                        answers.append(try await ledger.reprice(model: "race-1", from: start, to: end, limit: 50))
                    } while answers.last?.isComplete == false
                    return answers
                }
            }
            group.addTask {
                for index in 0..<60 {
                    try await second.consume("t\(index % 8)", promptTokens: 7, usage: UsageDetails(agentID: "a", model: "race-1"))
                }
                return []
            }
            var all: [RepriceResult] = []
            for try await answers in group { all += answers }
            return all
        }
        #expect(results.reduce(0) { $0 + $1.repricedCount } == 200)
        #expect(results.reduce(0) { $0 + $1.costNanodollars } == expected)
        let reprices = try await withDatabase(url) { client in
            let rows = try await client.query(
                "SELECT count(*), count(DISTINCT caused_by), coalesce(sum(cost_nanos), 0)::bigint FROM events WHERE kind = 'reprice'")
            for try await row in rows.decode((Int64, Int64, Int64).self) { return row }
            return (-1, -1, -1)
        }
        #expect(reprices == (200, 200, expected))
        let totals = try await first.usage(model: "race-1", scope: .allTime)
        #expect(totals.unpricedRequests == 0 && totals.costNanodollars == expected + 60 * 7 * 1_000)
        #expect(try await first.verify().problems == [])
    }

    @Test("verify catches a damaged reprice-derived row, a reprice off the price table, and a stray reprice")
    func verifyCatchesDamagedReprices() async throws {
        // Proves verify recomputes the rollups at the corrected cost and checks each reprice:
        // a usage_agent_model row changed behind the triggers' back after a reprice is named; a
        // plain-SQL reprice one nano-dollar off the table is named by id, with SQLite's wording;
        // with the schema's checks disabled, a reprice of a billed consume is named as stray.
        let clock = TestClock()
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { ledger, url in
            let start = clock.read()
            try await ledger.consume("t", promptTokens: 100, completionTokens: 10, usage: UsageDetails(agentID: "a", model: "acme-4"))
            try await ledger.consume("t", promptTokens: 100, completionTokens: 10, usage: UsageDetails(agentID: "a", model: "acme-5"))
            try await ledger.consume("t", promptTokens: 100, completionTokens: 10, usage: UsageDetails(agentID: "a", model: "gpt-4o"))
            try await ledger.setPrice(model: "acme-*", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: start)
            clock.advance(microseconds: 1)
            #expect(try await ledger.reprice(model: "acme-4", from: start, to: start + 1).repricedCount == 1)
            #expect(try await ledger.verify().problems == [])

            try await withDatabase(url) { client in
                try await client.query("UPDATE usage_agent_model SET cost_nanos = cost_nanos - 1 WHERE model = 'acme-4'")
            }
            #expect(try await ledger.verify().problems == [
                "usage_agent_model_live: row window 0, agent a, model acme-4 differs from the events",
                "usage_agent_model_live: row window 0, agent a, model acme-4 that the events imply is missing or different",
            ])
            try await withDatabase(url) { client in
                try await client.query("UPDATE usage_agent_model SET cost_nanos = cost_nanos + 1 WHERE model = 'acme-4'")
            }

            let damagedID = try await withDatabase(url) { client in
                let rows = try await client.query(
                    """
                    INSERT INTO events (timestamp_us, kind, thread_id, caused_by, cost_nanos)
                    SELECT timestamp_us, 'reprice', thread_id, id, 110 * 1000 + 1 FROM events WHERE model = 'acme-5'
                    RETURNING id
                    """)
                for try await id in rows.decode(Int64.self) { return id }
                return -1
            }
            #expect(try await ledger.verify().problems == ["events: event \(damagedID) has a cost that differs from the price table"])

            let strayID = try await withDatabase(url) { client in
                try await client.query("ALTER TABLE events DISABLE TRIGGER events_check_reprice")
                try await client.query("ALTER TABLE events DISABLE TRIGGER events_apply_reprices")
                let rows = try await client.query(
                    """
                    INSERT INTO events (timestamp_us, kind, thread_id, caused_by, cost_nanos)
                    SELECT timestamp_us, 'reprice', thread_id, id, cost_nanos FROM events WHERE model = 'gpt-4o'
                    RETURNING id
                    """)
                var id: Int64 = -1
                for try await value in rows.decode(Int64.self) { id = value }
                try await client.query("ALTER TABLE events ENABLE TRIGGER events_check_reprice")
                try await client.query("ALTER TABLE events ENABLE TRIGGER events_apply_reprices")
                return id
            }
            #expect(try await ledger.verify().problems == [
                "events: event \(damagedID) has a cost that differs from the price table",
                "events: reprice event \(strayID) names no consume recorded unpriced, or one already repriced",
            ])
        }
    }

    @Test("a consume of a thread cleaned up since is repriced, as on SQLite, and the thread stays closed")
    func repriceOfAClosedThread() async throws {
        // Proves a reprice needs no open thread (SQLite's events_check_insert does not ask for one
        // either; PostgreSQL's is not run for a reprice): the usage of a thread cleaned up since is
        // billed, no thread state comes back, and verify's recomputation agrees.
        let clock = TestClock()
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { ledger, _ in
            let start = clock.read()
            try await ledger.consume("gone", promptTokens: 500, usage: UsageDetails(model: "acme-9"))
            try await ledger.cleanupThread("gone")
            try await ledger.setPrice(model: "acme-9", promptUSDPerMillion: "2", completionUSDPerMillion: "2", effectiveFrom: start)
            clock.advance(microseconds: 1)
            #expect(try await ledger.reprice(model: "acme-9", from: start, to: start + 1).costNanodollars == 1_000_000)
            #expect(try await ledger.usage("gone") == nil)
            #expect(try await ledger.usage(model: "acme-9", scope: .allTime).unpricedRequests == 0)
            #expect(try await ledger.verify().problems == [])
        }
    }

    @Test("a consume recorded before 0003's shards (in shard 0) is repriced in the row that holds it")
    func repriceFindsAConsumeInShardZero() async throws {
        // Proves events_apply_reprices' fallback: 0003 moved the rollup rows it found to shard 0,
        // so a consume recorded before it is not in its thread's shard. Here its rows are moved
        // there by hand; the reprice still bills it (the lowest shard of its key), the totals
        // are exact and verify passes. Without the fallback the reprice fails, naming the table.
        let clock = TestClock()
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { ledger, url in
            let start = clock.read()
            try await ledger.consume("old", promptTokens: 1_000, completionTokens: 10, usage: UsageDetails(agentID: "a", model: "acme-8"))
            let moved = try await withDatabase(url) { client in
                let rows = try await client.query(
                    """
                    WITH r AS (UPDATE usage_rollup SET shard = 0 WHERE model = 'acme-8' RETURNING shard),
                         m AS (UPDATE usage_agent_model SET shard = 0 WHERE model = 'acme-8' RETURNING shard)
                    SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM m), hashtext('old') & 63
                    """)
                for try await row in rows.decode((Int64, Int32).self) { return row }
                return (-1, -1)
            }
            #expect(moved.0 == 2 && moved.1 != 0, "two rows moved out of the thread's own shard \(moved.1)")
            try await ledger.setPrice(model: "acme-8", promptUSDPerMillion: "1", completionUSDPerMillion: "2", effectiveFrom: start)
            clock.advance(microseconds: 1)
            #expect(try await ledger.reprice(model: "acme-8", from: start, to: start + 1)
                == RepriceResult(repricedCount: 1, costNanodollars: 1_020_000, unpricedCount: 0, isComplete: true))
            let totals = try await ledger.usage(model: "acme-8", scope: .allTime)
            #expect(totals.costNanodollars == 1_020_000 && totals.unpricedRequests == 0 && totals.unpricedTokens == 0)
            #expect(try await ledger.verify().problems == [])
        }
    }

    @Test("the schema refuses a second reprice of a consume and a reprice of a billed one, for plain SQL too")
    func schemaRefusesBadReprices() async throws {
        // Proves the at-most-once rule and the reprice's checks are the schema's, not only the
        // store's: a plain-SQL second reprice is a unique violation (23505) on events_reprice_once,
        // a reprice of a priced consume or one with tokens is a check violation (23514); nothing
        // is written by any of them.
        let clock = TestClock()
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { ledger, url in
            let start = clock.read()
            try await ledger.consume("t", promptTokens: 100, usage: UsageDetails(model: "acme-6"))
            try await ledger.consume("t", promptTokens: 100, usage: UsageDetails(model: "gpt-4o"))
            try await ledger.setPrice(model: "acme-6", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: start)
            clock.advance(microseconds: 1)
            #expect(try await ledger.reprice(model: "acme-6", from: start, to: start + 1).repricedCount == 1)
            try await withDatabase(url) { client in
                func insert(_ model: String, tokens: Int) async -> String? {
                    await sqlState {
                        _ = try await client.query(
                            PostgresQuery(unsafeSQL: """
                                INSERT INTO events (timestamp_us, kind, thread_id, caused_by, cost_nanos, prompt_tokens)
                                SELECT timestamp_us, 'reprice', thread_id, id, 100000, \(tokens) FROM events
                                WHERE kind = 'consume' AND model = '\(model)'
                                """))
                    }
                }
                #expect(await insert("acme-6", tokens: 0) == "23505")
                #expect(await insert("gpt-4o", tokens: 0) == "23514")
                let rows = try await client.query("SELECT count(*) FROM events WHERE kind = 'reprice'")
                for try await count in rows.decode(Int64.self) { #expect(count == 1) }
            }
            try await ledger.consume("t", promptTokens: 100, usage: UsageDetails(model: "acme-7"))
            try await withDatabase(url) { client in
                let state = await sqlState {
                    _ = try await client.query(
                        """
                        INSERT INTO events (timestamp_us, kind, thread_id, caused_by, cost_nanos, prompt_tokens)
                        SELECT timestamp_us, 'reprice', thread_id, id, 100000, 5 FROM events WHERE model = 'acme-7'
                        """)
                }
                #expect(state == "23514")
            }
            #expect(try await ledger.verify().problems == [])
        }
    }
}

/// The cost summed over an export's pages (they arrive on the export's task).
private final class Totals: Sendable {
    private let sum = Mutex<Int64>(0)

    var cost: Int64 { sum.withLock { $0 } }

    func add(_ page: [LedgerEvent]) {
        sum.withLock { $0 += page.reduce(0) { $0 + ($1.costNanodollars ?? 0) } }
    }
}
