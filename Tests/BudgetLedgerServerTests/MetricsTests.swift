import BudgetLedger
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

/// The value of the Prometheus sample whose line starts with `series ` (name and labels).
func sample(_ series: String, in text: String) -> Double? {
    text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.dropFirst(series.count + 1)) }
}

@Suite("Prometheus metrics")
struct MetricsTests {
    @Test func metricsCountRequestsConsumesRefusalsAndTheLedgerSize() async throws {
        // Proves: /metrics counts requests by route template and status, new consumes apart from
        // replays, exhausted refusals, times requests, and reports the ledger file's size.
        try await withServer { client, _ in
            let headers: HTTPFields = [HTTPField.Name("Idempotency-Key")!: "k"]
            _ = try await client.post("/api/v1/threads/a/consume", json: #"{"promptTokens":5}"#, headers: headers)
            _ = try await client.post("/api/v1/threads/a/consume", json: #"{"promptTokens":5}"#, headers: headers)
            _ = try await client.send(.put, "/api/v1/threads/b/limit", json: #"{"maxTokens":1}"#)
            _ = try await client.post("/api/v1/threads/b/check-and-consume", json: #"{"promptTokens":5}"#)
            _ = try await client.post("/api/v1/threads/b/check", json: #"{"estimatedTokens":5}"#)
            _ = try await client.get("/api/v1/usage/threads/ghost")
            _ = try await client.get("/no/such/path")
            let response = try await client.get("/metrics")
            #expect(response.status == .ok)
            #expect(response.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
            let text = response.text
            #expect(sample("budget_ledger_consumes_total", in: text) == 1, "\(text)")
            #expect(sample("budget_ledger_consume_replays_total", in: text) == 1)
            #expect(sample("budget_ledger_exhausted_refusals_total", in: text) == 2)
            let consume = #"route="/api/v1/threads/{id}/consume",method="POST""#
            #expect(sample(#"budget_ledger_http_requests_total{\#(consume),status="200"}"#, in: text) == 2)
            #expect(
                sample(#"budget_ledger_http_requests_total{route="/api/v1/threads/{id}/check-and-consume",method="POST",status="409"}"#, in: text) == 1)
            #expect(sample(#"budget_ledger_http_requests_total{route="/api/v1/usage/threads/{id}",method="GET",status="404"}"#, in: text) == 1)
            #expect(sample(#"budget_ledger_http_requests_total{route="unmatched",method="GET",status="404"}"#, in: text) == 1)
            #expect(sample(#"budget_ledger_http_request_duration_seconds_count{\#(consume)}"#, in: text) == 2)
            #expect((sample("budget_ledger_ledger_file_bytes", in: text) ?? 0) > 0)
        }
    }

    @Test func inventedMethodsShareOneLabel() {
        // Proves: a method outside the standard ones is labelled "other", so clients cannot
        // create metric series without end.
        let label = RequestMetricsMiddleware<BasicRequestContext>.methodLabel
        #expect(label(.post) == "POST")
        #expect(label(HTTPRequest.Method("BREW")!) == "other")
    }
}

@Suite("Business metrics read from the ledger")
struct LedgerMetricsTests {
    @Test func metricsReportTheLedgersUsageThreadsHoldsAndThresholds() async throws {
        // Proves: /metrics reports what the ledger holds, written by another process before the
        // server started (not only this server's requests): tokens, requests, priced cost and
        // unpriced requests and tokens by model and agent; threads open, near (90 % and over) and at their
        // max; live holds and their tokens; threads past each threshold; the fold's lag.
        let seed: (ScratchFolder) throws -> Void = { folder in
            try folder.withLedger { ledger in
                try ledger.setPrice(model: "gpt-4o", promptUSDPerMillion: "2.5", completionUSDPerMillion: "10")
                _ = try ledger.setLimit("near", maxTokens: 100)
                _ = try ledger.setLimit("over", maxTokens: 100)
                _ = try ledger.setLimit("calm", maxTokens: 1_000)
                try ledger.consume("near", promptTokens: 91, usage: UsageDetails(agentID: "planner", model: "GPT-4o"))
                try ledger.consume("over", promptTokens: 130, usage: UsageDetails(agentID: "coder", model: "mystery"))
                try ledger.consume("calm", promptTokens: 10, completionTokens: 10, usage: UsageDetails(model: "gpt-4o"))
                _ = try ledger.reserve("calm", tokens: 300, ttlSeconds: 600)
            }
        }
        try await withServer(seed: seed) { client, _ in
            let text = try await client.get("/metrics").text
            #expect(sample(#"budget_ledger_model_tokens{model="gpt-4o"}"#, in: text) == 111, "\(text)")
            #expect(sample(#"budget_ledger_model_tokens{model="mystery"}"#, in: text) == 130)
            #expect(sample(#"budget_ledger_model_requests{model="gpt-4o"}"#, in: text) == 2)
            // 91 × 2.5 + 10 × 2.5 + 10 × 10 USD per million tokens.
            #expect(sample(#"budget_ledger_model_cost_usd{model="gpt-4o"}"#, in: text) == 0.0003525)
            #expect(sample(#"budget_ledger_model_cost_usd{model="mystery"}"#, in: text) == 0)
            #expect(sample(#"budget_ledger_model_unpriced_requests{model="mystery"}"#, in: text) == 1)
            #expect(sample(#"budget_ledger_model_unpriced_tokens{model="mystery"}"#, in: text) == 130)
            #expect(sample(#"budget_ledger_model_unpriced_tokens{model="gpt-4o"}"#, in: text) == 0)
            #expect(sample(#"budget_ledger_agent_unpriced_tokens{agent="coder"}"#, in: text) == 130)
            #expect(sample(#"budget_ledger_agent_tokens{agent="coder"}"#, in: text) == 130)
            #expect(sample(#"budget_ledger_agent_tokens{agent="planner"}"#, in: text) == 91)
            #expect(sample(#"budget_ledger_agent_tokens{agent="(none)"}"#, in: text) == 20)
            #expect(sample("budget_ledger_threads_open", in: text) == 3)
            #expect(sample("budget_ledger_threads_near_max", in: text) == 1)
            #expect(sample("budget_ledger_threads_at_or_over_max", in: text) == 1)
            #expect(sample("budget_ledger_live_holds", in: text) == 1)
            #expect(sample("budget_ledger_held_tokens", in: text) == 300)
            #expect(sample(#"budget_ledger_threads_past_threshold{threshold="75"}"#, in: text) == 2)
            #expect(sample(#"budget_ledger_threads_past_threshold{threshold="95"}"#, in: text) == 1)
            #expect(sample("budget_ledger_unfolded_consumes", in: text) == 3)
            #expect(text.contains("# TYPE budget_ledger_model_tokens gauge\n"))
        }
    }

    @Test func modelsAndAgentsPastTheCapShareOneOtherSeries() {
        // Proves: with more models than the cap, the first 100 (most tokens first) keep their
        // own series and the rest are summed under "(other)", so the series still add up.
        let rows: [(label: String?, totals: UsageTotals)] = (0..<150).map { index in
            var totals = UsageTotals()
            totals.promptTokens = Int64(1_000 - index)
            totals.requestCount = 1
            totals.costNanodollars = 5
            totals.unpricedRequests = index % 2 == 0 ? 1 : 0
            totals.unpricedTokens = index % 2 == 0 ? totals.promptTokens : 0
            return (label: index == 0 ? nil : "model-\(index)", totals: totals)
        }
        let capped = LedgerMetrics.capped(rows)
        #expect(capped.count == LedgerMetrics.seriesPerDimensionMax + 1)
        #expect(capped.first?.label == "(none)")
        #expect(capped.last?.label == "(other)")
        #expect(capped.map(\.totals.totalTokens).reduce(0, +) == rows.map(\.totals.totalTokens).reduce(0, +))
        #expect(capped.last?.totals.requestCount == 50)
        #expect(capped.last?.totals.costNanodollars == 250)
        #expect(capped.last?.totals.unpricedRequests == 25)
        #expect(capped.map(\.totals.unpricedTokens).reduce(0, +) == rows.map(\.totals.unpricedTokens).reduce(0, +))
        #expect(LedgerMetrics.capped(Array(rows.prefix(3))).count == 3)
    }

    @Test func labelValuesAreEscaped() {
        // Proves: a quote, a backslash or a line feed in a model name cannot break the format.
        #expect(LedgerMetrics.escapedLabelValue(#"a"b\c"# + "\nd") == #"a\"b\\c\nd"#)
        let family = LedgerMetrics.family("m", "help", [([("model", "x\"y")], "1")])
        #expect(family == "# HELP m help\n# TYPE m gauge\nm{model=\"x\\\"y\"} 1\n")
    }
}
