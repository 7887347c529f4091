@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// Migration 0018: usage_agent_model follows usage_rollup's rows, so the fold groups the
/// pending events once.
@Suite("usage_agent_model follows usage_rollup (migration 0018)")
struct AgentModelFollowsRollupTests {
    /// Rows where usage_agent_model and usage_rollup grouped by window, agent and model differ.
    static let differences = """
        WITH grouped AS (
            SELECT usage_window, agent_id, model, sum(prompt_tokens), sum(completion_tokens), sum(request_count),
                   sum(cost_nanos), sum(unpriced_requests), sum(latency_ms_sum), sum(latency_count), sum(unpriced_tokens)
            FROM usage_rollup GROUP BY 1, 2, 3),
        stored AS (
            SELECT usage_window, agent_id, model, prompt_tokens, completion_tokens, request_count, cost_nanos,
                   unpriced_requests, latency_ms_sum, latency_count, unpriced_tokens
            FROM usage_agent_model)
        SELECT (SELECT count(*) FROM (SELECT * FROM grouped EXCEPT SELECT * FROM stored))
             + (SELECT count(*) FROM (SELECT * FROM stored EXCEPT SELECT * FROM grouped))
        """

    @Test("after folds, a usage reset and reprices of folded consumes, usage_agent_model is usage_rollup regrouped")
    func agentModelIsTheRollupRegrouped() throws {
        // Proves the two triggers: rows the fold inserts and rows it adds to (several days, orgs
        // and users per agent and model) reach usage_agent_model, and so does a reprice's
        // correction of a folded consume; verify agrees; a key change is refused.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let clock = ManualClock()
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(clock: clock.read))
        defer { ledger.close() }
        let start = clock.read()
        for call in 0..<2_600 {
            if call == 1_500 { try ledger.resetUsageWindow() }
            try ledger.consume(
                "t\(call % 5)", promptTokens: Int64(call % 97), completionTokens: 3,
                usage: try UsageDetails(
                    agentID: "agent-\(call % 3)", model: call % 4 == 0 ? "late-model" : "gpt-4o",
                    latencyMilliseconds: call % 2 == 0 ? Int64(call) : nil,
                    metadataJSON: #"{"org_id":"org-\#(call % 2)","user_id":"user-\#(call % 7)"}"#))
            clock.advance(microseconds: 3_600_000_000 / 4)
        }
        let raw = try Connection(path: path)
        defer { raw.close() }
        let differences = { try raw.prepare(Self.differences).fetchOne { try $0[0] as Int64 } }
        #expect(try differences() == 0)
        #expect(try raw.prepare("SELECT count(DISTINCT day) FROM usage_rollup").fetchOne { try $0[0] as Int64 } ?? 0 > 2)
        _ = try ledger.setPrice(model: "late-model", promptUSDPerMillion: "5", completionUSDPerMillion: "7", effectiveFrom: start)
        let repriced = try ledger.reprice(model: "late-model", from: start, to: clock.read())
        #expect(repriced.repricedCount == 650)
        #expect(try differences() == 0)
        #expect(try raw.prepare("SELECT sum(unpriced_requests) FROM usage_agent_model").fetchOne { try $0[0] as Int64 } == 0)
        #expect(try ledger.verify().problems == [])
        do {
            try raw.execute(sql: "UPDATE usage_rollup SET agent_id = 'someone' WHERE agent_id = 'agent-0'")
            Issue.record("a key of usage_rollup was changed")
        } catch let error as SQLiteError {
            #expect(error.message.hasPrefix("usage_rollup: a row keeps its keys"))
        }
    }
}
