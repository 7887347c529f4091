import BudgetLedger
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

@Suite("The API answers what the CLI prints, for the same ledger file")
struct CLIParityTests {
    /// Usage on three threads, two agents, a priced and an unpriced model, latencies, org metadata.
    static let calls: [(thread: String, body: String)] = [
        ("t1", #"{"promptTokens":1200,"completionTokens":300,"agentId":"planner","model":"gpt-4o","latencyMs":120,"metadata":{"org_id":"acme"}}"#),
        ("t1", #"{"promptTokens":800,"completionTokens":200,"agentId":"planner","model":"gpt-4o-mini","latencyMs":85}"#),
        ("t2", #"{"promptTokens":50,"completionTokens":25,"agentId":"coder","model":"gpt-4o","latencyMs":333,"metadata":{"org_id":"globex","user_id":"u7"}}"#),
        ("t3", #"{"promptTokens":9,"completionTokens":1,"agentId":"coder","model":"local-llama"}"#),
        ("t3", #"{"promptTokens":1,"provider":"none"}"#),
    ]

    static func seedPrices(_ folder: ScratchFolder) throws {
        try folder.withLedger { ledger in
            _ = try ledger.setPrice(model: "gpt-4o", promptUSDPerMillion: "2.5", completionUSDPerMillion: "10")
            _ = try ledger.setPrice(model: "gpt-4o-mini", promptUSDPerMillion: "0.15", completionUSDPerMillion: "0.6")
        }
    }

    /// `budget-ledger ARGUMENTS --db LEDGER`, which must succeed; its stdout.
    static func cli(_ arguments: [String], _ folder: ScratchFolder) async throws -> String {
        let output = try await CLIProcess.run(arguments + ["--db", folder.databasePath])
        try #require(output.status == 0, "\(arguments): \(output)")
        return output.stdout
    }

    @Test func theOverviewThreadsAndTotalsEqualTheCLIsJSON() async throws {
        // Proves: the overview (sums, average latency, exact costs), its all-time variant after a
        // window reset, per-agent and per-model totals, the thread list and one thread are the
        // bytes `budget-ledger … --json` prints for the same file.
        try await withServer(seed: Self.seedPrices) { client, folder in
            for call in Self.calls {
                #expect(try await client.post("/api/v1/threads/\(call.thread)/consume", json: call.body).status == .ok)
            }
            let pairs: [(uri: String, cli: [String])] = [
                ("/api/v1/usage", ["usage", "--json"]),
                ("/api/v1/usage/threads", ["threads", "--json"]),
                ("/api/v1/usage/threads/t1", ["usage", "t1", "--json"]),
                ("/api/v1/usage/agents/planner", ["usage", "--agent", "planner", "--json"]),
                ("/api/v1/usage/agents/nobody", ["usage", "--agent", "nobody", "--json"]),
                ("/api/v1/usage/models/gpt-4o", ["usage", "--model", "gpt-4o", "--json"]),
            ]
            for pair in pairs {
                let body = try await client.get(pair.uri).text
                #expect(body + "\n" == (try await Self.cli(pair.cli, folder)), "\(pair.uri)")
            }
            let overview = try await client.get("/api/v1/usage").object()
            let totals = try #require((overview["usage"] as? [String: Any])?["totals"] as? [String: Any])
            // Independent arithmetic: 1500 + 1000 + 75 + 10 + 1 tokens; (120 + 85 + 333) / 3 ms;
            // 1200 × $2.5/M + 300 × $10/M + 800 × $0.15/M + 200 × $0.6/M + 50 × $2.5/M + 25 × $10/M.
            #expect(int64(totals["totalTokens"]) == 2_586)
            #expect((totals["avgLatencyMs"] as? NSNumber)?.doubleValue == 179.3)
            #expect(try await client.get("/api/v1/usage").text.contains(#""totalCost":0.006615,"unpricedRequests":2"#))
            _ = try await client.post("/api/v1/usage/reset")
            _ = try await client.post("/api/v1/threads/t4/consume", json: #"{"promptTokens":3}"#)
            for pair in [("/api/v1/usage", ["usage", "--json"]), ("/api/v1/usage?allTime=true", ["usage", "--all-time", "--json"])] {
                let body = try await client.get(pair.0).text
                #expect(body + "\n" == (try await Self.cli(pair.1, folder)), "\(pair.0)")
            }
        }
    }

    @Test func theFeedAndEveryExportEqualTheCLIsOutput() async throws {
        // Proves: the billing feed and the export in every format, listed or grouped, are the
        // bytes `budget-ledger events --json` and `budget-ledger export` write for the same file.
        try await withServer(seed: Self.seedPrices) { client, folder in
            for call in Self.calls {
                _ = try await client.post("/api/v1/threads/\(call.thread)/consume", json: call.body)
            }
            let feed = try await client.get("/api/v1/events").text
            #expect(feed + "\n" == (try await Self.cli(["events", "--json"], folder)))
            let exports: [(query: String, cli: [String])] = [
                ("format=csv", ["export", "--format", "csv"]),
                ("format=json", ["export", "--format", "json"]),
                ("format=ndjson", ["export", "--format", "ndjson"]),
                ("format=csv&org=acme", ["export", "--format", "csv", "--org", "acme"]),
                ("format=json&from=2000-01-01&to=2999-01-01", ["export", "--format", "json", "--from", "2000-01-01", "--to", "2999-01-01"]),
                ("format=json&groupBy=model", ["export", "--format", "json", "--group-by", "model"]),
                ("format=csv&groupBy=agent", ["export", "--format", "csv", "--group-by", "agent"]),
                ("format=ndjson&groupBy=org", ["export", "--format", "ndjson", "--group-by", "org"]),
                ("format=csv&groupBy=day", ["export", "--format", "csv", "--group-by", "day"]),
            ]
            for export in exports {
                let response = try await client.get("/api/v1/usage/export?\(export.query)")
                #expect(response.status == .ok)
                #expect(response.text == (try await Self.cli(export.cli, folder)), "\(export.query)")
            }
        }
    }
}
