import BudgetLedger
import BudgetLedgerWire
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

@Suite("Scope budgets over REST")
struct BudgetEndpointTests {
    @Test func aScopeIDStartingWithAnEmojiModifierIsAScope() async throws {
        // Proves the fuzzer's case: `org:` then U+1F3FB (which joins the colon into one Character)
        // is a schema-valid scope: DELETE without a budget is a 409 (not a 400), PUT sets it.
        try await withServer { client, _ in
            let path = "/api/v1/budgets/org%3A%F0%9F%8F%BB%24L%C4%98%C2%AC"
            let absent = try await client.send(.delete, path)
            #expect(absent.status == .conflict, "\(absent.text)")
            let set = try await client.send(.put, path, json: #"{"maxTokens":5}"#)
            #expect(set.status == .ok, "\(set.text)")
            #expect(try set.object()["scope"] as? String == "org:🏻$LĘ¬", "\(set.text)")
        }
    }

    @Test func aBudgetIsSetReadListedAndRemoved() async throws {
        // Proves: PUT stores a budget and answers the wire shape the CLI prints (USD exact);
        // GET reads it by its plain and its percent-encoded scope; the list has it; DELETE
        // removes it, and then GET is a 404 and a second DELETE a 409.
        try await withServer { client, folder in
            let set = try await client.send(
                .put, "/api/v1/budgets/org:acme", json: #"{"period":"month","maxTokens":1000,"maxUsd":"500.00"}"#)
            #expect(set.status == .ok, "\(set.text)")
            let expected = try folder.withLedger { try #require(try $0.budget(scope: BudgetScope(parsing: "org:acme"))) }
            #expect(set.text == expected.json.serialized())
            let object = try set.object()
            #expect(object["scope"] as? String == "org:acme" && object["period"] as? String == "month")
            #expect(set.text.contains(#""maxUsd":500,"#) && int64(object["maxTokens"]) == 1000)
            #expect(object["windowEnd"] is String && object["exhausted"] as? Bool == false)
            for path in ["/api/v1/budgets/org:acme", "/api/v1/budgets/org%3Aacme", "/api/v1/budgets/org%3aacme"] {
                let read = try await client.get(path)
                #expect(read.status == .ok && read.text == set.text, "\(path): \(read.text)")
            }
            let list = try await client.get("/api/v1/budgets")
            #expect(list.text == ScopeBudgetList.json([expected]).serialized())
            let removed = try await client.send(.delete, "/api/v1/budgets/org%3Aacme")
            #expect(removed.status == .ok && removed.text == #"{"removed":true,"scope":"org:acme"}"#)
            let gone = try await client.get("/api/v1/budgets/org:acme")
            #expect(gone.status == .notFound)
            #expect(try gone.detail().contains("org:acme"))
            let again = try await client.send(.delete, "/api/v1/budgets/org:acme")
            #expect(again.status == .conflict)
            #expect(try await client.get("/api/v1/budgets").text == #"{"budgets":[],"count":0}"#)
        }
    }

    @Test("Bad input is a 400 naming the field, and nothing is written", arguments: [
        ("/api/v1/budgets/org:acme", #"{"maxUsd":"1.0000000001"}"#, "maxUsd"),
        ("/api/v1/budgets/org:acme", #"{"maxUsd":1.5}"#, "maxUsd"),
        ("/api/v1/budgets/org:acme", #"{"maxUsd":"-1"}"#, "maxUsd"),
        ("/api/v1/budgets/org:acme", #"{"maxUsd":"1000000000.01"}"#, "maxUsd"),
        ("/api/v1/budgets/org:acme", #"{"maxUsd":null,"maxTokens":5}"#, "maxUsd"),
        ("/api/v1/budgets/org:acme", #"{"maxTokens":-1}"#, "maxTokens"),
        ("/api/v1/budgets/org:acme", #"{}"#, "maxTokens"),
        ("/api/v1/budgets/org:acme", #"{"maxTokens":5,"period":"year"}"#, "period"),
        ("/api/v1/budgets/org:acme", #"{"maxTokens":5,"max":1}"#, "max"),
        ("/api/v1/budgets/team:acme", #"{"maxTokens":5}"#, "scope"),
        ("/api/v1/budgets/global:x", #"{"maxTokens":5}"#, "scope"),
        ("/api/v1/budgets/org:", #"{"maxTokens":5}"#, "scope"),
        ("/api/v1/budgets/model:%20%20", #"{"maxTokens":5}"#, "scope"),
    ])
    func badInputIsA400(path: String, body: String, field: String) async throws {
        try await withServer { client, folder in
            let response = try await client.send(.put, path, json: body)
            #expect(response.status == .badRequest, "\(response.text)")
            #expect(try response.detail().contains(field), "\(response.text)")
            #expect(try folder.withLedger { try $0.budgets() }.isEmpty)
        }
    }

    @Test func everyBudgetRouteNeedsTheToken() async throws {
        // Proves: without the bearer token each budget route is a 401 and nothing is written.
        try await withServer(token: AuthTests.token) { client, folder in
            for (method, path) in [
                (HTTPRequest.Method.get, "/api/v1/budgets"), (.get, "/api/v1/budgets/global"),
                (.put, "/api/v1/budgets/global"), (.delete, "/api/v1/budgets/global"),
            ] {
                let response = try await client.send(method, path, json: method == .put ? #"{"maxTokens":5}"# : nil)
                #expect(response.status == .unauthorized, "\(method) \(path)")
            }
            #expect(try folder.withLedger { try $0.budgets() }.isEmpty)
            let authorized = try await client.send(
                .put, "/api/v1/budgets/global", json: #"{"maxTokens":5}"#,
                headers: [.authorization: "Bearer \(AuthTests.token)"])
            #expect(authorized.status == .ok)
        }
    }

    @Test func aRefusalByAScopeNamesTheScopeWindowAndFigures() async throws {
        // Proves: check-and-consume over a monthly dollar budget is a 409 whose body names the
        // scope, the window and the figures in USD; a token budget's refusal of a hold carries
        // the figures in tokens and the thread's fields; the thread's own refusal keeps its shape.
        try await withServer { client, folder in
            _ = try await client.send(.put, "/api/v1/budgets/org:acme", json: #"{"period":"month","maxUsd":"0.001"}"#)
            let body = #"{"promptTokens":6000,"model":"gpt-4o-mini","metadata":{"org_id":"acme"}}"#
            #expect(try await client.post("/api/v1/threads/t1/check-and-consume", json: body).status == .ok)
            let refused = try await client.post("/api/v1/threads/t1/check-and-consume", json: body)
            #expect(refused.status == .conflict)
            let object = try refused.object()
            #expect(object["error"] as? String == "budget exhausted" && object["threadId"] as? String == "t1")
            #expect(object["scope"] as? String == "org:acme" && object["unit"] as? String == "usd")
            #expect(refused.text.contains(#""used":0.0009,"max":0.001,"#), "\(refused.text)")
            let window = try #require(object["window"] as? [String: Any])
            let month = BudgetPeriod.month.window(containing: try folder.withLedger { $0.configuration.clock() })
            #expect(window["start"] as? String == Timestamps.iso8601(microseconds: month.startMicroseconds))
            #expect(window["end"] as? String == month.endMicroseconds.map { Timestamps.iso8601(microseconds: $0) })
            #expect(object["maxTokens"] == nil)

            _ = try await client.send(.put, "/api/v1/budgets/agent:bot", json: #"{"maxTokens":100}"#)
            let hold = try await client.post("/api/v1/threads/t2/reserve", json: #"{"tokens":101,"agentId":"bot"}"#)
            #expect(hold.status == .conflict)
            let holdObject = try hold.object()
            #expect(holdObject["scope"] as? String == "agent:bot" && holdObject["unit"] as? String == "tokens")
            #expect(int64(holdObject["max"]) == 100 && int64(holdObject["maxTokens"]) == 100)
            #expect(int64(holdObject["requested"]) == 101)
            let fits = try await client.post("/api/v1/threads/t2/reserve", json: #"{"tokens":100,"agentId":"bot"}"#)
            #expect(fits.status == .ok)
            let budget = try await client.get("/api/v1/budgets/agent:bot").object()
            #expect(int64(budget["heldTokens"]) == 100 && budget["exhausted"] as? Bool == true)

            _ = try await client.send(.put, "/api/v1/threads/t3/limit", json: #"{"maxTokens":1}"#)
            let thread = try await client.post("/api/v1/threads/t3/check-and-consume", json: #"{"promptTokens":2}"#)
            #expect(thread.status == .conflict)
            let threadObject = try thread.object()
            #expect(Set(threadObject.keys) == ["error", "detail", "threadId", "used", "maxTokens", "heldTokens", "requestedTokens"])
        }
    }

    @Test func aConsumeAnswersTheScopeThresholdsItCrossed() async throws {
        // Proves: the consume that takes a scope window past a threshold lists the crossing
        // (scope, window, percent, severity, figures); the next consume lists none.
        try await withServer { client, _ in
            _ = try await client.send(.put, "/api/v1/budgets/user:ann", json: #"{"period":"day","maxTokens":100}"#)
            let body = #"{"promptTokens":80,"metadata":{"user_id":"ann"}}"#
            let first = try await client.post("/api/v1/threads/t/consume", json: body).object()
            let crossings = try #require(first["crossedScopeThresholds"] as? [[String: Any]])
            #expect(!crossings.isEmpty)
            #expect(crossings.allSatisfy { $0["scope"] as? String == "user:ann" && int64($0["tokensUsed"]) == 80 })
            #expect(crossings.allSatisfy { ($0["window"] as? [String: Any])?["end"] is String && $0["severity"] is String })
            let body2 = #"{"promptTokens":1,"metadata":{"user_id":"ann"}}"#
            let second = try await client.post("/api/v1/threads/t/consume", json: body2).object()
            #expect((second["crossedScopeThresholds"] as? [Any])?.isEmpty == true)
        }
    }

    @Test func theScopeRuleIsTheDocumentsPattern() throws {
        // Proves: the Scope parameter's pattern in openapi.yaml is the server's, and the pattern
        // and the server's check agree on scopes at the edges.
        #expect(try documentedPattern(of: "Scope", in: OpenAPIDocument.yaml) == APIIdentifier.scopePattern)
        let matches = try wholeMatcher(APIIdentifier.scopePattern)
        let samples = [
            "global", "org:acme", "user:a b", "agent:x:y", "model:gpt-4o", "model: gpt", "model:x ", "org: ",
            "org:" + String(repeating: "a", count: 256), "org:" + String(repeating: "a", count: 257),
            "user:" + String(repeating: "é", count: 64), "user:" + String(repeating: "é", count: 65), "global:x", "org:",
            "team:x", "Global", "org:a\u{7}", "model:\u{A0}", "model: é",
        ]
        for sample in samples {
            let served = (try? APIIdentifier.validateScope(sample, field: "scope")) != nil
            #expect(matches(sample) == served, "\(sample.debugDescription)")
            if served { #expect(throws: Never.self) { try BudgetScope(parsing: sample) } }
        }
    }
}
