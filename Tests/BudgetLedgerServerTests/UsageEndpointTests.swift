import BudgetLedger
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

@Suite("Reading usage")
struct UsageEndpointTests {
    @Test func theOverviewHasTheReferenceShapeAndExactArithmetic() async throws {
        // Proves: GET /api/v1/usage answers {"usage": {totals, byAgent, byModel, activeThreads}}
        // with sums, the mean latency (one decimal) and exact decimal costs.
        try await withServer(seed: { folder in
            try folder.withLedger { ledger in
                _ = try ledger.setPrice(model: "m1", promptUSDPerMillion: "2", completionUSDPerMillion: "10")
            }
        }) { client, _ in
            let calls = [
                #"{"promptTokens":1000,"completionTokens":500,"agentId":"a1","model":"m1","latencyMs":100}"#,
                #"{"promptTokens":10,"completionTokens":5,"agentId":"a2","model":"m1","latencyMs":200}"#,
                #"{"promptTokens":7,"agentId":"a2","model":"unpriced","latencyMs":401}"#,
            ]
            for (index, call) in calls.enumerated() {
                #expect(try await client.post("/api/v1/threads/t\(index % 2)/consume", json: call).status == .ok)
            }
            let response = try await client.get("/api/v1/usage")
            #expect(response.status == .ok)
            // Costs: 1000 × $2/M + 500 × $10/M = $0.007; 10 × $2/M + 5 × $10/M = $0.00007. The unpriced
            // model's cost is null (unknown, never $0), and a total with an unpriced request is partial,
            // naming the usage it leaves out (7 unpriced tokens).
            // Mean latency: (100 + 200 + 401) / 3 = 233.666… → 233.7.
            #expect(
                response.text
                    == #"{"usage":{"totals":{"totalTokens":1522,"promptTokens":1017,"completionTokens":505,"#
                    + #""requestCount":3,"totalCost":0.00707,"unpricedRequests":1,"unpricedTokens":7,"costComplete":false,"avgLatencyMs":233.7},"#
                    + #""byAgent":[{"agentId":"a1","totalTokens":1500,"promptTokens":1000,"completionTokens":500,"#
                    + #""requestCount":1,"totalCost":0.007,"unpricedRequests":0,"unpricedTokens":0,"costComplete":true},{"agentId":"a2","totalTokens":22,"#
                    + #""promptTokens":17,"completionTokens":5,"requestCount":2,"totalCost":0.00007,"unpricedRequests":1,"unpricedTokens":7,"costComplete":false}],"#
                    + #""byModel":[{"model":"m1","totalTokens":1515,"promptTokens":1010,"completionTokens":505,"#
                    + #""requestCount":2,"totalCost":0.00707,"unpricedRequests":0,"unpricedTokens":0,"costComplete":true},{"model":"unpriced","totalTokens":7,"#
                    + #""promptTokens":7,"completionTokens":0,"requestCount":1,"totalCost":null,"unpricedRequests":1,"unpricedTokens":7,"costComplete":false}],"#
                    + #""activeThreads":2}}"#)
        }
    }

    @Test func threadsAreListedHottestFirstWithTheDefaultMax() async throws {
        // Proves: GET /api/v1/usage/threads lists every open thread by percent used, descending,
        // with count and defaultMaxTokens.
        try await withServer { client, _ in
            for (thread, tokens) in [("cool", 10), ("hot", 50), ("warm", 30)] {
                _ = try await client.send(.put, "/api/v1/threads/\(thread)/limit", json: #"{"maxTokens":100}"#)
                _ = try await client.post("/api/v1/threads/\(thread)/consume", json: #"{"promptTokens":\#(tokens)}"#)
            }
            let response = try await client.get("/api/v1/usage/threads")
            let object = try response.object()
            let threads = try #require(object["threads"] as? [[String: Any]])
            #expect(threads.map { $0["threadId"] as? String } == ["hot", "warm", "cool"])
            #expect(int64(object["count"]) == 3)
            #expect(int64(object["defaultMaxTokens"]) == 100_000)
            #expect(response.text.hasPrefix(#"{"threads":[{"threadId":"hot","maxTokens":100,"#))
            #expect(response.text.hasSuffix(#"],"count":3,"defaultMaxTokens":100000}"#))
        }
    }

    @Test func readingAnUnknownThreadIsA404AndOpensNothing() async throws {
        // Proves: GET /api/v1/usage/threads/{id} never creates a budget.
        try await withServer { client, folder in
            let response = try await client.get("/api/v1/usage/threads/ghost")
            #expect(response.status == .notFound)
            #expect(response.text == errorBody("not found", "No budget found for thread: ghost"))
            #expect(try folder.withLedger { try $0.allUsage() }.isEmpty)
            _ = try await client.post("/api/v1/threads/ghost/consume", json: #"{"promptTokens":5}"#)
            let found = try await client.get("/api/v1/usage/threads/ghost")
            #expect(found.status == .ok)
            #expect(int64(try found.object()["totalTokens"]) == 5)
        }
    }

    @Test func agentAndModelTotalsAreZerosWhenUnknown() async throws {
        // Proves: per-agent and per-model totals have the CLI's shape, zeros for an unknown one,
        // and a model name with a slash is reached percent-encoded.
        try await withServer { client, _ in
            _ = try await client.post(
                "/api/v1/threads/t/consume", json: #"{"promptTokens":4,"completionTokens":2,"agentId":"bot","model":"openai/gpt-4o"}"#)
            let agent = try await client.get("/api/v1/usage/agents/bot")
            #expect(
                agent.text
                    == #"{"agentId":"bot","totalTokens":6,"promptTokens":4,"completionTokens":2,"requestCount":1,"#
                    + #""totalCost":null,"unpricedRequests":1,"unpricedTokens":6,"costComplete":false}"#)
            let ghost = try await client.get("/api/v1/usage/agents/ghost")
            #expect(
                ghost.text
                    == #"{"agentId":"ghost","totalTokens":0,"promptTokens":0,"completionTokens":0,"requestCount":0,"#
                    + #""totalCost":0,"unpricedRequests":0,"unpricedTokens":0,"costComplete":true}"#)
            let model = try await client.get("/api/v1/usage/models/openai%2Fgpt-4o")
            #expect(model.text.hasPrefix(#"{"model":"openai/gpt-4o","totalTokens":6,"#))
        }
    }

    @Test func resettingTheUsageWindowDeletesNothing() async throws {
        // Proves: POST /api/v1/usage/reset starts a new overview window; allTime and the billing
        // feed still see every event.
        try await withServer { client, _ in
            _ = try await client.post("/api/v1/threads/t/consume", json: #"{"promptTokens":9}"#)
            let reset = try await client.post("/api/v1/usage/reset")
            #expect(reset.status == .ok)
            #expect(
                reset.text
                    == #"{"success":true,"message":"Usage window reset: the overview counts from now on; "#
                    + #"no events were deleted"}"#)
            let window = try #require(try await client.get("/api/v1/usage").object()["usage"] as? [String: Any])
            #expect(int64((window["totals"] as? [String: Any])?["totalTokens"]) == 0)
            let allTime = try #require(try await client.get("/api/v1/usage?allTime=true").object()["usage"] as? [String: Any])
            #expect(int64((allTime["totals"] as? [String: Any])?["totalTokens"]) == 9)
            let events = try #require(try await client.get("/api/v1/events").object()["events"] as? [[String: Any]])
            #expect(events.contains { $0["kind"] as? String == "consume" })
        }
    }
}
