import BudgetLedger
@testable import BudgetLedgerServer
import Testing

/// The ledger's business figures on `/metrics` (LedgerGaugesTests on SQLite alone), run on both
/// stores through the seam's `metricsExposition`.
@Suite("Business metrics on both stores")
struct BothStoresMetricsTests {
    @Test("the business gauges read the same figures from both stores, except the fold's lag", arguments: StoreKind.allCases)
    func businessGauges(_ kind: StoreKind) async throws {
        // Proves the usage by model and agent (hottest first, unpriced counted apart, no model
        // as "(none)"), the thread, hold and threshold gauges, all exact; and states the one
        // figure that differs by design.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setPrice(model: "m-1", promptUSDPerMillion: "1.5", completionUSDPerMillion: "0", effectiveFrom: nil, source: "test")
            _ = try await store.setLimit("t1", maxTokens: 100)
            try await store.consume("t1", prompt: 80, usage: UsageDetails(agentID: "a", model: "m-1"))
            _ = try await store.setLimit("t2", maxTokens: 1_000)
            try await store.consume("t2", prompt: 10, usage: UsageDetails(model: "x"))
            _ = try await store.reserve("t2", tokens: 5)
            let exposition = try await subject.serverStore().metricsExposition(ServerMetrics(ledgerFile: kind == .sqlite))
            let business = exposition.split(separator: "\n").filter { line in
                ["model_", "agent_", "threads_", "live_holds", "held_tokens", "unfolded_consumes"]
                    .contains { line.hasPrefix("budget_ledger_" + $0) }
            }
            // SQLite folds consumes into its rollups every 1,024 events, so both are still
            // waiting; PostgreSQL rolls each consume up as it is recorded (its gauges() says
            // unfoldedConsumes is always 0).
            let unfolded = kind == .sqlite ? 2 : 0
            #expect(business == [
                #"budget_ledger_model_tokens{model="m-1"} 80"#, #"budget_ledger_model_tokens{model="x"} 10"#,
                #"budget_ledger_model_requests{model="m-1"} 1"#, #"budget_ledger_model_requests{model="x"} 1"#,
                #"budget_ledger_model_cost_usd{model="m-1"} 0.00012"#, #"budget_ledger_model_cost_usd{model="x"} 0"#,
                #"budget_ledger_model_unpriced_requests{model="m-1"} 0"#, #"budget_ledger_model_unpriced_requests{model="x"} 1"#,
                #"budget_ledger_model_unpriced_tokens{model="m-1"} 0"#, #"budget_ledger_model_unpriced_tokens{model="x"} 10"#,
                #"budget_ledger_agent_tokens{agent="a"} 80"#, #"budget_ledger_agent_tokens{agent="(none)"} 10"#,
                #"budget_ledger_agent_requests{agent="a"} 1"#, #"budget_ledger_agent_requests{agent="(none)"} 1"#,
                #"budget_ledger_agent_cost_usd{agent="a"} 0.00012"#, #"budget_ledger_agent_cost_usd{agent="(none)"} 0"#,
                #"budget_ledger_agent_unpriced_requests{agent="a"} 0"#, #"budget_ledger_agent_unpriced_requests{agent="(none)"} 1"#,
                #"budget_ledger_agent_unpriced_tokens{agent="a"} 0"#, #"budget_ledger_agent_unpriced_tokens{agent="(none)"} 10"#,
                "budget_ledger_threads_open 2", "budget_ledger_threads_near_max 0", "budget_ledger_threads_at_or_over_max 0",
                "budget_ledger_live_holds 1", "budget_ledger_held_tokens 5", "budget_ledger_unfolded_consumes \(unfolded)",
                #"budget_ledger_threads_past_threshold{threshold="75"} 1"#,
            ].map { Substring($0) })
        }
    }
}
