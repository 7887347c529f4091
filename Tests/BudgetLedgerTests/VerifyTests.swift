@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// `verify` recomputes in one pass in Swift; the `*_from_events` views say the same in SQL for
/// the sqlite3 shell. These tests prove the two agree, and that verify finds each kind of damage.
@Suite("verify: one pass, the SQL views, and the damage it finds")
struct VerifyTests {
    /// A file ledger with every kind of event: limits that re-arm thresholds, resets, cleanups and
    /// reuse, holds settled, released and expired, usage resets, prices, configure, folds.
    private func busyLedger(_ folder: TemporaryFolder) throws -> (Ledger, String) {
        let path = folder.path("l.db")
        let clock = ManualClock()
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(clock: clock.read))
        _ = try ledger.setPrice(model: "gpt-x-*", promptUSDPerMillion: "2.5", completionUSDPerMillion: "10")
        for step in 0..<2_300 {
            let thread = "t\(step % 7)"
            let usage = try UsageDetails(
                agentID: step % 3 == 0 ? nil : "agent\(step % 3)", model: step % 4 == 0 ? "GPT-X-mini" : "other",
                latencyMilliseconds: step % 5 == 0 ? nil : Int64(step), metadataJSON: step % 6 == 0 ? #"{"org_id":"o1","user_id":"u"}"# : nil)
            _ = try? ledger.checkAndConsume(thread, promptTokens: Int64(step % 40), completionTokens: 3, usage: usage)
            clock.advance(microseconds: 3_600_000_000)
            switch step % 97 {
            case 5: try ledger.setLimit(thread, maxTokens: Int64(step % 3) * 500)
            case 17: _ = try ledger.resetThread(thread)
            case 29: _ = try ledger.cleanupThread(thread)
            case 41: try ledger.configure(maxTokensPerThread: Int64(1_000 + step))
            case 53: try ledger.resetUsageWindow()
            case 61:
                if let hold = try? ledger.reserve(thread, tokens: 10, ttlSeconds: 60) {
                    try ledger.settle(hold.reservation.id, promptTokens: 4)
                }
            case 67: if let hold = try? ledger.reserve(thread, tokens: 5) { try ledger.release(hold.reservation.id) }
            case 73: _ = try? ledger.reserve(thread, tokens: 7, ttlSeconds: 1)
            default: break
            }
        }
        return (ledger, path)
    }

    @Test("the one-pass recomputation and the *_from_events views agree with the tables on a busy ledger")
    func recomputationAgreesWithViews() throws {
        // Proves verify's Swift pass and the SQL views describe the same rules: on a ledger with
        // every kind of event both find the derived tables equal to the events.
        let folder = try TemporaryFolder()
        let (ledger, path) = try busyLedger(folder)
        #expect(try ledger.verify().problems == [])
        let raw = try Connection(path: path)
        defer { raw.close() }
        let pairs = [
            ("thread_state", "thread_state_from_events",
             "thread_id, max_tokens, prompt_tokens, completion_tokens, request_count, opened_event_id, window_event_id"),
            ("thread_thresholds", "thread_thresholds_from_events", "thread_id, threshold_percent, event_id"),
            ("ledger_settings", "ledger_settings_from_events",
             "id, default_max_tokens, usage_window, all_time_prompt_tokens, all_time_completion_tokens, all_time_cost_nanos, all_time_latency_ms"),
            ("holds", "holds_from_events", "reservation_id, thread_id, tokens, expires_at_us"),
            ("usage_rollup_live", "usage_rollup_from_events", "*"),
            ("usage_agent_model_live", "usage_agent_model_from_events", "*"),
            ("event_time_blocks", "event_time_blocks_from_events", "*"),
        ]
        var rows = 0
        for (table, view, columns) in pairs {
            rows += try raw.prepare("SELECT count(*) FROM \(table)").fetchOne { try $0[0] as Int } ?? 0
            for (left, right) in [(table, view), (view, table)] {
                let extra = try raw.prepare("SELECT count(*) FROM (SELECT \(columns) FROM \(left) EXCEPT SELECT \(columns) FROM \(right))")
                    .fetchOne { try $0[0] as Int64 }
                #expect(extra == 0, "\(left) has rows \(right) lacks")
            }
        }
        #expect(rows > 50)
        let mispriced = try raw.prepare(
            "SELECT count(*) FROM events JOIN event_prices ON event_id = id WHERE events.cost_nanos IS NOT event_prices.cost_nanos"
        ).fetchOne { try $0[0] as Int64 }
        #expect(mispriced == 0)
    }

    @Test("verify names each damaged derived table, a mispriced event, and reports progress to the end")
    func verifyFindsEachDamage() throws {
        // Proves every comparison of the one pass can fail: each table altered behind the triggers'
        // back is reported by name, and nothing else is.
        let damages: [(sql: String, expected: String)] = [
            ("UPDATE thread_state SET request_count = request_count + 1 WHERE thread_id = 't1'", "thread_state: row t1 differs"),
            ("DELETE FROM thread_thresholds WHERE rowid IN (SELECT rowid FROM thread_thresholds LIMIT 1)", "thread_thresholds"),
            ("INSERT INTO holds (reservation_id, thread_id, tokens, expires_at_us) VALUES (999999, 't1', 5, 1)", "holds: row 999999 differs"),
            ("UPDATE ledger_settings SET all_time_latency_ms = all_time_latency_ms + 1", "ledger_settings: row 1 differs"),
            ("UPDATE usage_agent_model SET cost_nanos = cost_nanos + 1 WHERE rowid IN (SELECT rowid FROM usage_agent_model LIMIT 1)",
             "usage_agent_model_live"),
            ("UPDATE usage_rollup SET request_count = request_count + 1 WHERE rowid IN (SELECT rowid FROM usage_rollup LIMIT 1)",
             "usage_rollup_live"),
            ("UPDATE event_time_blocks SET max_timestamp_us = max_timestamp_us + 1 WHERE block = 1", "event_time_blocks: row block 1 differs"),
            ("INSERT INTO model_prices (model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source) "
                + "VALUES ('gpt-x-m*', 1, 1, 0, 'test')", "has a cost that differs from the price table"),
        ]
        let folder = try TemporaryFolder()
        let (ledger, path) = try busyLedger(folder)
        ledger.close()
        for (sql, expected) in damages {
            let copy = folder.path("copy.db")
            // Derived tables are WITHOUT ROWID: a row is picked by its key instead.
            let keyed = sql.replacingOccurrences(of: "WHERE rowid IN (SELECT rowid FROM thread_thresholds LIMIT 1)",
                                                 with: "WHERE event_id = (SELECT min(event_id) FROM thread_thresholds)")
                .replacingOccurrences(of: "WHERE rowid IN (SELECT rowid FROM usage_agent_model LIMIT 1)",
                                      with: "WHERE request_count = (SELECT max(request_count) FROM usage_agent_model)")
                .replacingOccurrences(of: "WHERE rowid IN (SELECT rowid FROM usage_rollup LIMIT 1)",
                                      with: "WHERE request_count = (SELECT max(request_count) FROM usage_rollup)")
            try damagedCopy(of: path, at: copy, running: keyed)
            let damaged = try Ledger(path: copy)
            var calls: [(Int64, Int64)] = []
            let problems = try damaged.verify { calls.append(($0, $1)) }.problems
            damaged.close()
            let named = expected.components(separatedBy: ":")[0]
            // A row of usage_rollup changed behind the fold changes its agent-model row too (0018).
            let alsoNamed = named == "usage_rollup_live" ? "usage_agent_model_live" : named
            #expect(!problems.isEmpty && problems.allSatisfy { $0.contains(named) || $0.contains(alsoNamed) || $0.contains(expected) },
                    "\(sql): \(problems)")
            #expect(problems.contains { $0.contains(expected) }, "\(sql): \(problems)")
            #expect(calls.last.map { $0.0 == $0.1 } == true)
        }
    }
}
