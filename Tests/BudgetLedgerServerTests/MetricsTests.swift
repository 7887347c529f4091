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
