import BudgetLedger
import BudgetLedgerWire
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

@Suite("Billing: the feed and exports")
struct BillingEndpointTests {
    @Test func theFeedPagesThroughEveryEventOnce() async throws {
        // Proves: GET /api/v1/events?after=&limit= pages in id order; following lastId visits
        // every event exactly once and an exhausted feed answers its `after` as lastId.
        try await withServer { client, folder in
            for index in 0..<5 {
                _ = try await client.post("/api/v1/threads/t\(index)/consume", json: #"{"promptTokens":1}"#)
            }
            let expected = try folder.withLedger { try $0.events(after: 0, limit: 100).events.map(\.id) }
            var seen: [Int64] = []
            var after: Int64 = 0
            for _ in 0..<20 {
                let page = try await client.get("/api/v1/events?after=\(after)&limit=3").object()
                let ids = try #require(page["events"] as? [[String: Any]]).compactMap { int64($0["id"]) }
                let lastID = try #require(int64(page["lastId"]))
                if ids.isEmpty {
                    #expect(lastID == after)
                    break
                }
                #expect(lastID == ids.last)
                seen += ids
                after = lastID
            }
            #expect(seen == expected)
            #expect(expected.count == 10)  // an open and a consume per thread
        }
    }

    @Test(arguments: [
        ("limit=0", "limit"), ("limit=10001", "limit"), ("limit=ten", "limit"), ("after=-1", "after"),
        ("after=1&after=2", "after"), ("page=2", "page"), ("limit=", "limit"), ("limit=+5", "limit"),
        ("after=%2B1", "after"), ("limit=1.0", "limit"), ("limit=%205", "limit"), ("after", "after"),
    ])
    func badFeedParametersAre400s(_ query: String, _ field: String) async throws {
        // Proves: the feed's parameters are validated, each failure naming its parameter: an
        // empty value is none, and a number is digits with an optional minus, as JSON writes it.
        try await withServer { client, _ in
            let response = try await client.get("/api/v1/events?\(query)")
            #expect(response.status == .badRequest, "\(response.text)")
            #expect(try response.detail().hasPrefix("invalid \(field):"), "\(response.text)")
        }
    }

    @Test func groupedExportsCountUnpricedRequestsAndTokensBeforeAndAfterAReprice() async throws {
        // Proves: a rollup export (CSV and JSON, by model) gives each row's priced cost beside its
        // unpriced requests and tokens (an all-unpriced row's cost is empty / null, never 0), and
        // after a reprice the same row is priced with both figures at 0.
        try await withServer { client, _ in
            for body in [
                #"{"promptTokens":1000,"completionTokens":200,"model":"acme-x"}"#,
                #"{"promptTokens":300,"model":"Acme-X"}"#,
                #"{"promptTokens":1000,"model":"gpt-4o"}"#,
            ] {
                #expect(try await client.post("/api/v1/threads/e/consume", json: body).status == .ok)
            }
            let csv = try await client.get("/api/v1/usage/export?format=csv&groupBy=model").text
            #expect(csv == "model,prompt_tokens,completion_tokens,total_tokens,request_count,cost,unpriced_requests,"
                + "unpriced_tokens,cost_complete,avg_latency_ms\r\n"
                + "acme-x,1300,200,1500,2,,2,1500,false,\r\ngpt-4o,1000,0,1000,1,0.0025,0,0,true,\r\n")
            let json = try await client.get("/api/v1/usage/export?format=json&groupBy=model").text
            #expect(json.contains(#"{"model":"acme-x","totalTokens":1500,"promptTokens":1300,"completionTokens":200,"#
                + #""requestCount":2,"totalCost":null,"unpricedRequests":2,"unpricedTokens":1500,"costComplete":false}"#), "\(json)")

            let price = #"{"promptPerMillion":"1","completionPerMillion":"1","effectiveFrom":"2020-01-01"}"#
            #expect(try await client.send(.put, "/api/v1/prices/acme-x", json: price).status == .ok)
            let reprice = #"{"model":"acme-x","from":"2020-01-01","to":"2100-01-01"}"#
            #expect(try await client.post("/api/v1/prices/reprice", json: reprice).status == .ok)
            let after = try await client.get("/api/v1/usage/export?format=csv&groupBy=model").text
            #expect(after.contains("\r\nacme-x,1300,200,1500,2,0.0015,0,0,true,\r\n"), "\(after)")
        }
    }

    @Test func aLargeExportStreamsEveryEventInOrder() async throws {
        // Proves: an export larger than one 64 KiB chunk arrives whole: the header, then every
        // consume event once, in id order.
        let eventCount = 2_000
        try await withServer(seed: { folder in
            let ledger = try Ledger(path: folder.databasePath, configuration: .init(synchronous: .normal))
            defer { ledger.close() }
            for index in 0..<eventCount {
                try ledger.consume(
                    "thread-\(index % 7)", promptTokens: Int64(index), completionTokens: 1,
                    usage: try UsageDetails(agentID: "agent-with-a-longish-name", model: "model-\(index % 3)", metadataJSON: #"{"org_id":"acme"}"#))
            }
        }) { client, _ in
            let response = try await client.get("/api/v1/usage/export?format=csv")
            #expect(response.status == .ok)
            #expect(response.headers[.contentType] == "text/csv; charset=utf-8")
            #expect(response.body.readableBytes > ChunkWriter.chunkBytes * 2)
            let lines = response.text.split(separator: "\r\n")
            #expect(lines.first.map(String.init) == LedgerEvent.csvHeader.joined(separator: ","))
            #expect(lines.count == eventCount + 1)
            let prompts = lines.dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false)[8] }
            #expect(prompts == (0..<eventCount).map { Substring(String($0)) })
        }
    }

    @Test(arguments: [
        ("format=xml", "format"), ("groupBy=colour", "groupBy"), ("from=yesterday", "from"),
        ("to=2026-02-30", "to"), ("org=%07", "org"), ("limit=5", "limit"), ("from=", "from"),
        ("org=a%FFb", "org"),
    ])
    func badExportParametersAre400sBeforeAnyByteIsSent(_ query: String, _ field: String) async throws {
        // Proves: export parameters are validated (an empty value and bytes that are not UTF-8
        // included) with a 400 naming the parameter, not a cut-short 200.
        try await withServer { client, _ in
            let response = try await client.get("/api/v1/usage/export?\(query)")
            #expect(response.status == .badRequest, "\(response.text)")
            #expect(try response.detail().hasPrefix("invalid \(field):"), "\(response.text)")
        }
    }

    @Test func aRangeThatEndsBeforeItStartsIsEmpty() async throws {
        // Proves: `to` before `from` reads as the empty range [from, from): a 200 with no events,
        // while the same `from` alone finds the event (so the emptiness comes from `to`).
        try await withServer(seed: { folder in
            try folder.withLedger { _ = try $0.consume("t", promptTokens: 1, completionTokens: 0) }
        }) { client, _ in
            let reversed = try await client.get("/api/v1/usage/export?from=2000-01-02&to=2000-01-01")
            #expect(reversed.status == .ok)
            #expect(reversed.text == "{\"events\":[],\"count\":0}\n")
            let open = try await client.get("/api/v1/usage/export?from=2000-01-02")
            #expect(int64(try open.object()["count"]) == 1)
        }
    }

    @Test func aPlusInAQueryIsASpace() async throws {
        // Proves: query values are decoded as HTML forms and HTTP clients encode them, `+` as a
        // space and `%2B` as a plus: "2000-01-01+00:00" is the date-time "2000-01-01 00:00".
        try await withServer { client, _ in
            let spaced = try await client.get("/api/v1/usage/export?from=2000-01-01+00:00&to=2000-01-01+00:00%2B01:00")
            #expect(spaced.status == .ok, "\(spaced.text)")
            let literal = try await client.get("/api/v1/usage/export?from=2000-01-01T00:00%2B01:00")
            #expect(literal.status == .ok, "\(literal.text)")
        }
    }

    @Test func anEmptyExportIsJustItsFrame() async throws {
        // Proves: with no events, JSON is {"events":[],"count":0} and NDJSON is empty.
        try await withServer { client, _ in
            let json = try await client.get("/api/v1/usage/export?format=json")
            #expect(json.text == "{\"events\":[],\"count\":0}\n")
            let ndjson = try await client.get("/api/v1/usage/export?format=ndjson")
            #expect(ndjson.status == .ok && ndjson.text.isEmpty)
            #expect(ndjson.headers[.contentType] == "application/x-ndjson")
        }
    }
}
