@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

@Suite("Unpriced tokens beside unpriced requests in every summary (migration 0013)")
struct UnpricedTokensTests {
    private static let day: Int64 = 86_400_000_000
    private static let minute: Int64 = 60_000_000

    /// One consume as recorded, with what the expected figures need.
    private struct Call {
        var id: Int64
        var timestamp: Int64
        var thread: String
        var agent: String?
        /// Normalised, as every summary groups it.
        var model: String?
        var organization: String?
        var user: String?
        var tokens: Int64
        var priced: Bool
        var window: Int64
    }

    /// Per key (nil: "NULL"): [unpriced requests, unpriced tokens] over `calls`, every key present.
    private static func expected(_ calls: [Call], _ key: (Call) -> String?) -> [String: [Int64]] {
        var sums: [String: [Int64]] = [:]
        for call in calls {
            var row = sums[key(call) ?? "NULL"] ?? [0, 0]
            if !call.priced {
                row[0] += 1
                row[1] += call.tokens
            }
            sums[key(call) ?? "NULL"] = row
        }
        return sums
    }

    /// `SELECT key, unpriced_requests, unpriced_tokens …` as the same shape.
    private static func actual(_ ledger: Ledger, _ sql: String) throws -> [String: [Int64]] {
        try ledger.withConnection { connection in
            Dictionary(uniqueKeysWithValues: try connection.prepare(sql).fetchAll { row in
                (try row[0] as String? ?? "NULL", [try row[1] as Int64, try row[2] as Int64])
            })
        }
    }

    private static func figures(_ rows: [(key: String?, totals: UsageTotals)]) -> [String: [Int64]] {
        Dictionary(uniqueKeysWithValues: rows.map { ($0.key ?? "NULL", [$0.totals.unpricedRequests, $0.totals.unpricedTokens]) })
    }

    /// Every view, the overview, the per-agent and per-model reads and every export grouping
    /// against `calls`; `stage` names the moment in failure messages.
    private static func expectEverySurface(_ ledger: Ledger, _ calls: [Call], currentWindow: Int64, _ stage: String) throws {
        let date = { (call: Call) in Timestamps.date(day: call.timestamp / day) }
        let views: [(String, (Call) -> String?)] = [
            ("SELECT 'all', unpriced_requests, unpriced_tokens FROM usage_totals", { _ in "all" }),
            ("SELECT agent_id, unpriced_requests, unpriced_tokens FROM usage_by_agent", \.agent),
            ("SELECT model, unpriced_requests, unpriced_tokens FROM usage_by_model", \.model),
            ("SELECT org_id, unpriced_requests, unpriced_tokens FROM usage_by_org", \.organization),
            ("SELECT user_id, unpriced_requests, unpriced_tokens FROM usage_by_user", \.user),
            ("SELECT day, unpriced_requests, unpriced_tokens FROM usage_by_day", date),
            ("SELECT thread_id, unpriced_requests, unpriced_tokens FROM usage_by_thread", \.thread),
            (
                "SELECT coalesce(agent_id, 'NULL') || '|' || coalesce(model, 'NULL'), unpriced_requests, unpriced_tokens FROM billing_by_agent_model",
                { "\($0.agent ?? "NULL")|\($0.model ?? "NULL")" }
            ),
            (
                """
                SELECT coalesce(org_id, 'NULL') || '|' || coalesce(model, 'NULL') || '|' || day, unpriced_requests, unpriced_tokens
                FROM billing_by_org_model_day
                """,
                { "\($0.organization ?? "NULL")|\($0.model ?? "NULL")|\(date($0))" }
            ),
        ]
        for (sql, key) in views {
            #expect(try actual(ledger, sql) == expected(calls, key), "\(stage): \(sql)")
        }

        let overview = try ledger.usageOverview(.allTime)
        let all = expected(calls) { _ in "all" }["all"]
        #expect([overview.totals.unpricedRequests, overview.totals.unpricedTokens] == all, "\(stage): overview")
        #expect(figures(overview.byAgent.map { (key: $0.agentID, totals: $0.totals) }) == expected(calls, \.agent), "\(stage)")
        #expect(figures(overview.byModel.map { (key: $0.model, totals: $0.totals) }) == expected(calls, \.model), "\(stage)")
        let window = try ledger.usageOverview(.currentWindow).totals
        let windowExpected = expected(calls.filter { $0.window == currentWindow }) { _ in "all" }["all"]
        #expect([window.unpricedRequests, window.unpricedTokens] == windowExpected, "\(stage): current window")
        let agentA = try ledger.usage(agent: "a", scope: .allTime)
        #expect([agentA.unpricedRequests, agentA.unpricedTokens] == expected(calls, \.agent)["a"], "\(stage): usage(agent:)")
        let acme = try ledger.usage(model: " ACME-9", scope: .allTime)
        #expect([acme.unpricedRequests, acme.unpricedTokens] == expected(calls, \.model)["acme-9"], "\(stage): usage(model:)")

        let groupings: [(ExportGrouping, (Call) -> String?)] = [
            (.org, \.organization), (.agent, \.agent), (.model, \.model), (.thread, \.thread), (.day, date),
        ]
        for (grouping, key) in groupings {
            #expect(figures(try ledger.rollup(ExportQuery(), by: grouping)) == expected(calls, key), "\(stage): export by \(grouping)")
        }
    }

    @Test("unpriced tokens are exact in every view, the overview and the exports, before and after a reprice and a fold")
    func everySurfaceBeforeAndAfterAReprice() throws {
        // Proves: 1,100 consumes (priced, unpriced under case variants of one model, unpriced
        // forever, and without a model; across the fold at event 1,024 and a usage reset) give
        // each summary the exact unpriced request count and tokens; a reprice of part of the
        // range (folded and pending consumes, both windows) takes both figures down by exactly
        // the repriced consumes; the fold keeps them; verify and the SQL recomputations agree,
        // and verify catches a rollup whose unpriced tokens were changed.
        let clock = ManualClock()
        let folder = try TemporaryFolder()
        let path = folder.path("unpriced.db")
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal, clock: clock.read))
        let start = clock.read()
        let models: [String?] = ["gpt-4o", "Acme-9", "acme-9 ", "zeta-5", nil]
        var calls: [Call] = []
        var window: Int64 = 0
        for index in 0..<1_100 {
            clock.set(microseconds: start + Int64(index) * Self.minute)
            if index == 700 {
                try ledger.resetUsageWindow()
                window += 1
            }
            let organization = ["o1", "o2", nil][index % 3]
            let metadata = organization.map { #"{"org_id":"\#($0)","user_id":"u\#(index % 2)"}"# }
            let usage = try UsageDetails(
                agentID: ["a", "b", nil][index % 4 % 3], model: models[index % 5], metadataJSON: metadata)
            let prompt = Int64(100 + index % 13)
            let completion = Int64(index % 7)
            let result = try ledger.consume("t\(index % 3)", promptTokens: prompt, completionTokens: completion, usage: usage)
            calls.append(
                Call(
                    id: result.event.id, timestamp: result.event.timestampMicroseconds, thread: "t\(index % 3)",
                    agent: usage.agentID, model: usage.model.map(ModelName.normalized), organization: organization,
                    user: organization == nil ? nil : "u\(index % 2)", tokens: prompt + completion,
                    priced: result.event.costNanodollars != nil, window: window))
        }
        let pricedWhenRecorded = calls.filter { $0.priced }.count
        #expect(pricedWhenRecorded == calls.filter { $0.model == "gpt-4o" }.count && pricedWhenRecorded == 220)
        let rolledUpTo = try ledger.withConnection { try $0.prepare("SELECT rolled_up_to FROM ledger_settings").fetchOne { try $0[0] as Int64 } }
        #expect(rolledUpTo.map { $0 >= 1_024 && $0 < calls.last!.id } == true, "some consumes folded, some pending")
        try Self.expectEverySurface(ledger, calls, currentWindow: window, "recorded")
        #expect(try Self.actual(ledger, "SELECT model, unpriced_requests, unpriced_tokens FROM usage_by_model")["gpt-4o"] == [0, 0])

        // Reprice acme-9 in [200, 1,050) minutes: consumes folded and pending, in both windows.
        try ledger.setPrice(model: "acme-9", promptUSDPerMillion: "1", completionUSDPerMillion: "2", effectiveFrom: start - Self.day)
        clock.advance(microseconds: Self.day)
        let from = start + 200 * Self.minute
        let to = start + 1_050 * Self.minute
        let result = try ledger.reprice(model: "acme-9", from: from, to: to)
        var repriced = 0
        for index in calls.indices where calls[index].model == "acme-9" && calls[index].timestamp >= from && calls[index].timestamp < to {
            calls[index].priced = true
            repriced += 1
        }
        #expect(result.repricedCount == Int64(repriced) && repriced > 0)
        #expect(calls.contains { $0.priced && $0.model == "acme-9" && $0.id <= rolledUpTo! })
        #expect(calls.contains { $0.priced && $0.model == "acme-9" && $0.id > rolledUpTo! })
        try Self.expectEverySurface(ledger, calls, currentWindow: window, "repriced")
        #expect(try ledger.verify().problems == [])

        // The fold of the pending consumes carries the figures into the rollups.
        try ledger.write { try $0.execute(sql: "UPDATE ledger_settings SET rolled_up_to = (SELECT max(id) FROM events)") }
        try Self.expectEverySurface(ledger, calls, currentWindow: window, "folded")
        #expect(try Self.fromEventsDifferences(ledger) == 0)
        #expect(try ledger.verify().problems == [])

        // verify recomputes the column: a changed figure is reported, naming the rollup row.
        try ledger.write { connection in
            try connection.execute(sql: "UPDATE usage_agent_model SET unpriced_tokens = unpriced_tokens + 1 WHERE model = 'zeta-5'")
        }
        let problems = try ledger.verify().problems
        #expect(!problems.isEmpty && problems.allSatisfy { $0.hasPrefix("usage_agent_model_live: row") && $0.contains("model zeta-5") },
                "\(problems)")
    }

    /// Rows where a rollup and its `*_from_events` recomputation differ.
    private static func fromEventsDifferences(_ ledger: Ledger) throws -> Int64 {
        try ledger.withConnection { connection in
            try connection.prepare(
                """
                SELECT (SELECT count(*) FROM (SELECT * FROM usage_rollup_live EXCEPT SELECT * FROM usage_rollup_from_events))
                     + (SELECT count(*) FROM (SELECT * FROM usage_rollup_from_events EXCEPT SELECT * FROM usage_rollup_live))
                     + (SELECT count(*) FROM (SELECT * FROM usage_agent_model_live EXCEPT SELECT * FROM usage_agent_model_from_events))
                     + (SELECT count(*) FROM (SELECT * FROM usage_agent_model_from_events EXCEPT SELECT * FROM usage_agent_model_live))
                """
            ).fetchOne { try $0[0] as Int64 } ?? -1
        }
    }

    @Test("a ledger made at 0012 with unpriced usage, folded, pending and repriced, gets the right unpriced tokens from 0013")
    func migrationBringsFoldedRowsUnderTheColumn() throws {
        // Proves the migration fills the folded rollup rows from the events they hold (two usage
        // windows, a consume repriced under 0012 left out, a priced one left out), the pending
        // consumes count through the views, events are untouched, verify agrees, and a reprice
        // after the migration takes a folded consume's tokens off.
        let folder = try TemporaryFolder()
        let path = folder.path("at-0012.db")
        let old = try Connection(path: path)
        try Migrator(migrations: Ledger.migrations.filter { $0.version <= 12 }, applicationID: Ledger.applicationID).migrate(old)
        try old.execute(
            sql: """
                INSERT INTO model_prices (model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source)
                VALUES ('acme-9', 1000, 2000, 0, 'test');
                INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (1, 'limit', 't', 1000000);
                INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, agent_id, model, cost_nanos)
                VALUES (2, 'consume', 't', 1000, 500, 'a', 'Acme-9', NULL),
                       (3, 'consume', 't', 40, 2, 'a', 'acme-9', NULL),
                       (4, 'consume', 't', 300, 0, 'b', 'zeta-5', NULL),
                       (5, 'consume', 't', 10, 10, 'a', 'gpt-4o', 125000);
                INSERT INTO events (timestamp_us, kind) VALUES (6, 'usage_reset');
                INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, agent_id, model, cost_nanos)
                VALUES (7, 'consume', 't', 7, 0, 'a', 'acme-9', NULL);
                UPDATE ledger_settings SET rolled_up_to = (SELECT max(id) FROM events);
                INSERT INTO events (timestamp_us, kind, thread_id, caused_by, cost_nanos) VALUES (8, 'reprice', 't', 3, 44000);
                INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, agent_id, model, cost_nanos)
                VALUES (9, 'consume', 't', 2, 1, 'b', 'zeta-5', NULL);
                """)
        let eventsSummary = "SELECT count(*) || ' events, ' || sum(prompt_tokens) || ' prompt tokens' FROM events"
        let eventsBefore = try old.prepare(eventsSummary).fetchOne { try $0[0] as String }
        old.close()

        let ledger = try Ledger(path: path)
        let folded = try ledger.withConnection { connection in
            try connection.prepare(
                """
                SELECT usage_window || ' ' || agent_id || ' ' || model || ': ' || unpriced_requests || ', ' || unpriced_tokens
                FROM usage_agent_model ORDER BY usage_window, agent_id, model
                """
            ).fetchAll { try $0[0] as String }
        }
        // Window 0: acme-9 1,500 unpriced (the 42 were repriced under 0012), zeta-5 300, gpt-4o
        // priced; window 1: acme-9 7, and the zeta-5 consume (3 tokens) pending at 0013, which
        // 0017 folds with every pending consume.
        #expect(folded == ["0 a acme-9: 1, 1500", "0 a gpt-4o: 0, 0", "0 b zeta-5: 1, 300", "1 a acme-9: 1, 7", "1 b zeta-5: 1, 3"])
        let rollup = try Self.actual(ledger, "SELECT model, unpriced_requests, unpriced_tokens FROM usage_rollup WHERE usage_window = 0")
        #expect(rollup == ["acme-9": [1, 1_500], "zeta-5": [1, 300], "gpt-4o": [0, 0]])
        let byModel = try Self.actual(ledger, "SELECT model, unpriced_requests, unpriced_tokens FROM usage_by_model")
        #expect(byModel == ["acme-9": [2, 1_507], "zeta-5": [2, 303], "gpt-4o": [0, 0]])
        let totals = try ledger.usageOverview(.allTime).totals
        #expect([totals.unpricedRequests, totals.unpricedTokens] == [4, 1_810])
        let eventsAfter = try ledger.withConnection { try $0.prepare(eventsSummary).fetchOne { try $0[0] as String } }
        #expect(eventsAfter == eventsBefore && eventsBefore == "9 events, 1359 prompt tokens", "events are not rewritten")
        #expect(try ledger.verify().problems == [])

        let repriced = try ledger.reprice(model: "acme-9", from: 0, to: 3)
        #expect(repriced.repricedCount == 1)
        #expect(try Self.actual(ledger, "SELECT model, unpriced_requests, unpriced_tokens FROM usage_by_model")["acme-9"] == [1, 7])
        #expect(try ledger.verify().problems == [])
    }
}
