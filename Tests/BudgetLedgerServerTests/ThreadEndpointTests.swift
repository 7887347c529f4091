import BudgetLedger
import BudgetLedgerWire
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

/// Event ids and timestamps differ from run to run; everything else in a body is compared exactly.
func normalized(_ text: String) -> String {
    text.replacing(/"timestamp":"[^"]+"/, with: #""timestamp":"T""#)
        .replacing(/"event":\{"id":\d+/, with: #""event":{"id":0"#)
}

@Suite("The write path of a thread")
struct ThreadEndpointTests {
    @Test func consumeRecordsUsageOnANewThreadAndAnswersTheConsumeResult() async throws {
        // Proves: POST consume opens a new thread at the default max, records the usage with its
        // details, and answers ConsumeResult.json with exactly the CLI's keys, in order.
        try await withServer { client, folder in
            let response = try await client.post(
                "/api/v1/threads/t1/consume",
                json: #"""
                    {"promptTokens":600,"completionTokens":400,"agentId":"a1","model":"m1","provider":"p1",
                     "latencyMs":20,"metadata":{"user_id":"u","org_id":"o","n":1.5}}
                    """#)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType] == "application/json")
            // The budget is the library's rendering (what the CLI prints); the event's fields, in order.
            let budget = try #require(try folder.withLedger { try $0.usage("t1") })
            #expect(budget.totalTokens == 1_000 && budget.maxTokens == 100_000)
            let text = normalized(response.text)
            #expect(text.hasPrefix(#"{"budget":"# + budget.json.serialized() + #","crossedThresholds":[],"event":{"id":0,"#))
            #expect(
                text.contains(
                    #""timestamp":"T","agentId":"a1","model":"m1","provider":"p1","latencyMs":20,"cost":null,"#
                        + #""metadata":{"n":1.5,"org_id":"o","user_id":"u"}"#))
            #expect(text.hasSuffix(#"},"replayed":false,"crossedScopeThresholds":[]}"#))
            let page = try folder.withLedger { try $0.events(after: 0) }
            let consume = try #require(page.events.last)
            #expect(consume.kind == "consume" && consume.threadID == "t1" && consume.organizationID == "o")
            #expect(consume.usage.latencyMilliseconds == 20 && consume.usage.agentID == "a1")
        }
    }

    @Test func aConsumeThatCrossesThresholdsListsThem() async throws {
        // Proves: the crossed thresholds of a consume are in its response, in the library's shape.
        try await withServer { client, _ in
            #expect(try await client.send(.put, "/api/v1/threads/t/limit", json: #"{"maxTokens":100}"#).status == .ok)
            let response = try await client.post("/api/v1/threads/t/consume", json: #"{"promptTokens":80}"#)
            let crossings = try #require(try response.object()["crossedThresholds"] as? [[String: Any]])
            #expect(crossings.count == 1)
            #expect(int64(crossings.first?["thresholdPercent"]) == 75)
            #expect(crossings.first?["severity"] as? String == "warning")
        }
    }

    @Test func anIdempotencyKeyFromTheHeaderReplaysInsteadOfRecordingTwice() async throws {
        // Proves: a retried consume with the same Idempotency-Key header records one event and
        // answers the original with replayed true.
        try await withServer { client, folder in
            let headers: HTTPFields = [HTTPField.Name("Idempotency-Key")!: "key-1"]
            let first = try await client.post("/api/v1/threads/t/consume", json: #"{"promptTokens":10}"#, headers: headers)
            let second = try await client.post("/api/v1/threads/t/consume", json: #"{"promptTokens":10}"#, headers: headers)
            #expect(first.status == .ok && second.status == .ok)
            #expect(try first.object()["replayed"] as? Bool == false)
            #expect(try second.object()["replayed"] as? Bool == true)
            let firstEvent = try #require(try first.object()["event"] as? [String: Any])
            let secondEvent = try #require(try second.object()["event"] as? [String: Any])
            #expect(int64(firstEvent["id"]) == int64(secondEvent["id"]))
            let budget = try folder.withLedger { try $0.usage("t") }
            #expect(budget?.totalTokens == 10 && budget?.requestCount == 1)
        }
    }

    @Test func theBodyKeyAndTheHeaderKeyMustAgree() async throws {
        // Proves: equal body and header keys are accepted; different ones are a 409 conflict (two
        // keys for one consume, as a key reused for another consume), and nothing is recorded.
        try await withServer { client, folder in
            let headers: HTTPFields = [HTTPField.Name("Idempotency-Key")!: "header-key"]
            let agreeing = try await client.post(
                "/api/v1/threads/t/consume", json: #"{"promptTokens":1,"idempotencyKey":"header-key"}"#, headers: headers)
            #expect(agreeing.status == .ok)
            let differing = try await client.post(
                "/api/v1/threads/t/consume", json: #"{"promptTokens":1,"idempotencyKey":"body-key"}"#, headers: headers)
            #expect(differing.status == .conflict)
            #expect(try differing.object()["error"] as? String == "conflict")
            #expect(try differing.detail().contains(#"idempotencyKey "body-key" differs"#))
            #expect(try folder.withLedger { try $0.usage("t") }?.requestCount == 1)
        }
    }

    @Test func reusingAKeyForADifferentConsumeIsAConflict() async throws {
        // Proves: LedgerError.conflict maps to 409 {"error": "conflict", "detail": …}.
        try await withServer { client, _ in
            _ = try await client.post("/api/v1/threads/t/consume", json: #"{"promptTokens":1,"idempotencyKey":"k"}"#)
            let response = try await client.post("/api/v1/threads/t/consume", json: #"{"promptTokens":2,"idempotencyKey":"k"}"#)
            #expect(response.status == .conflict)
            #expect(try response.object()["error"] as? String == "conflict")
            #expect(try response.detail().contains("idempotency key k"))
        }
    }

    @Test func checkAnswersTheBudgetWhenTheEstimateFitsAnd409WhenItDoesNot() async throws {
        // Proves: check answers ThreadBudget.json, defaults the estimate to 0 (empty body), and
        // refuses an estimate over the remaining tokens with the exhausted body.
        try await withServer { client, folder in
            _ = try await client.send(.put, "/api/v1/threads/t/limit", json: #"{"maxTokens":100}"#)
            let fits = try await client.post("/api/v1/threads/t/check", json: #"{"estimatedTokens":100}"#)
            #expect(fits.status == .ok)
            let budget = try #require(try folder.withLedger { try $0.usage("t") })
            #expect(fits.text == budget.json.serialized())
            #expect(
                fits.text.hasPrefix(
                    #"{"threadId":"t","maxTokens":100,"promptTokens":0,"completionTokens":0,"totalTokens":0,"#
                        + #""remaining":100,"requestCount":0,"percentUsed":0.0,"isExhausted":false"#))
            #expect(try await client.post("/api/v1/threads/t/check").status == .ok)
            let refused = try await client.post("/api/v1/threads/t/check", json: #"{"estimatedTokens":101}"#)
            #expect(refused.status == .conflict)
            #expect(
                refused.text.hasPrefix(
                    #"{"error":"budget exhausted","detail":"budget exhausted for thread t: 0 of 100 tokens used, "#
                        + #"101 more requested","threadId":"t","used":0,"maxTokens":100"#))
        }
    }

    @Test func checkAndConsumeRecordsOnlyWhatFits() async throws {
        // Proves: check-and-consume records a call that fits and refuses (409, nothing recorded)
        // one that does not.
        try await withServer { client, folder in
            _ = try await client.send(.put, "/api/v1/threads/t/limit", json: #"{"maxTokens":100}"#)
            let fits = try await client.post("/api/v1/threads/t/check-and-consume", json: #"{"promptTokens":50,"completionTokens":10}"#)
            #expect(fits.status == .ok)
            #expect(try fits.object()["replayed"] as? Bool == false)
            let refused = try await client.post("/api/v1/threads/t/check-and-consume", json: #"{"promptTokens":41}"#)
            #expect(refused.status == .conflict)
            #expect(
                refused.text.hasPrefix(
                    #"{"error":"budget exhausted","detail":"budget exhausted for thread t: 60 of 100 tokens used, "#
                        + #"41 more requested","threadId":"t","used":60,"maxTokens":100"#))
            let budget = try folder.withLedger { try $0.usage("t") }
            #expect(budget?.totalTokens == 60 && budget?.requestCount == 1)
        }
    }

    @Test func putLimitSetsTheMaxAndRequiresIt() async throws {
        // Proves: PUT limit answers the budget under the new max; a missing or negative max is a 400.
        try await withServer { client, _ in
            let response = try await client.send(.put, "/api/v1/threads/t/limit", json: #"{"maxTokens":500}"#)
            #expect(response.status == .ok)
            #expect(int64(try response.object()["maxTokens"]) == 500)
            let missing = try await client.send(.put, "/api/v1/threads/t/limit", json: "{}")
            #expect(missing.text == errorBody("invalid input", "invalid maxTokens: is required"))
            let negative = try await client.send(.put, "/api/v1/threads/t/limit", json: #"{"maxTokens":-1}"#)
            #expect(negative.text == errorBody("invalid input", "invalid maxTokens: must not be negative (got -1)"))
        }
    }

    @Test func resetZeroesAnOpenThreadAnd404sAnUnknownOne() async throws {
        // Proves: POST reset answers the fresh budget (max kept); an unknown thread is the
        // reference's 404 body and is not opened.
        try await withServer { client, folder in
            let unknown = try await client.post("/api/v1/threads/nope/reset")
            #expect(unknown.status == .notFound)
            #expect(unknown.text == errorBody("not found", "No budget found for thread: nope"))
            #expect(try folder.withLedger { try $0.hasBudget("nope") } == false)
            _ = try await client.send(.put, "/api/v1/threads/t/limit", json: #"{"maxTokens":70}"#)
            _ = try await client.post("/api/v1/threads/t/consume", json: #"{"promptTokens":30}"#)
            let reset = try await client.post("/api/v1/threads/t/reset")
            #expect(reset.status == .ok)
            #expect(int64(try reset.object()["totalTokens"]) == 0)
            #expect(int64(try reset.object()["maxTokens"]) == 70)
        }
    }

    @Test func deleteEndsAThreadAndAnswersItsFinalBudget() async throws {
        // Proves: DELETE answers the final budget and closes the thread (a later GET is a 404);
        // an unknown thread is a 404.
        try await withServer { client, _ in
            #expect(try await client.send(.delete, "/api/v1/threads/t").status == .notFound)
            _ = try await client.post("/api/v1/threads/t/consume", json: #"{"promptTokens":30}"#)
            let deleted = try await client.send(.delete, "/api/v1/threads/t")
            #expect(deleted.status == .ok)
            #expect(int64(try deleted.object()["totalTokens"]) == 30)
            let after = try await client.get("/api/v1/usage/threads/t")
            #expect(after.text == errorBody("not found", "No budget found for thread: t"))
        }
    }
}

/// A request body the consume endpoint must refuse, and the field the 400 must name.
struct BadConsumeBody: Sendable, CustomTestStringConvertible {
    let body: String
    let field: String
    var testDescription: String { "\(field): \(body.prefix(60))" }
}

@Suite("Bad input is refused with 400, 413, naming the field")
struct BadInputTests {
    static let cases: [BadConsumeBody] = [
        .init(body: #"{"promptTokens":-1}"#, field: "promptTokens"),
        .init(body: #"{"promptTokens":true}"#, field: "promptTokens"),
        .init(body: #"{"promptTokens":"5"}"#, field: "promptTokens"),
        .init(body: #"{"promptTokens":1.5}"#, field: "promptTokens"),
        .init(body: #"{"promptTokens":9223372036854775808}"#, field: "promptTokens"),
        .init(body: #"{"completionTokens":1}"#, field: "promptTokens"),
        .init(body: #"{"promptTokens":1,"completionTokens":-2}"#, field: "completionTokens"),
        .init(body: #"{"promptTokens":1,"colour":"red"}"#, field: "colour"),
        .init(body: #"{"promptTokens":1,"agentId":5}"#, field: "agentId"),
        .init(body: #"{"promptTokens":1,"agentId":""}"#, field: "agentId"),
        .init(body: #"{"promptTokens":1,"model":"\#(String(repeating: "m", count: 300))"}"#, field: "model"),
        .init(body: #"{"promptTokens":1,"provider":"a\u0007b"}"#, field: "provider"),
        .init(body: #"{"promptTokens":1,"latencyMs":-5}"#, field: "latencyMs"),
        .init(body: #"{"promptTokens":1,"metadata":[1]}"#, field: "metadata"),
        .init(body: #"{"promptTokens":1,"metadata":"{}"}"#, field: "metadata"),
        .init(body: #"{"promptTokens":1,"metadata":{"org_id":5}}"#, field: "metadata.org_id"),
        .init(body: #"{"promptTokens":1,"idempotencyKey":7}"#, field: "idempotencyKey"),
        .init(body: #"[1]"#, field: "body"),
        .init(body: #"{"promptTokens":"#, field: "body"),
        .init(body: #"{"promptTokens":1} trailing"#, field: "body"),
    ]

    @Test(arguments: cases)
    func aBadConsumeBodyIsA400NamingTheFieldAndRecordsNothing(_ bad: BadConsumeBody) async throws {
        // Proves: wrong types, negatives, unknown and oversized fields, malformed JSON are each a
        // 400 {"error": "invalid input", "detail": "invalid FIELD: …"}, and nothing is written.
        try await withServer { client, folder in
            for path in ["/api/v1/threads/t/consume", "/api/v1/threads/t/check-and-consume"] {
                let response = try await client.post(path, json: bad.body)
                #expect(response.status == .badRequest, "\(path): \(response.text)")
                #expect(try response.object()["error"] as? String == "invalid input")
                #expect(try response.detail().hasPrefix("invalid \(bad.field):"), "\(response.text)")
            }
            #expect(try folder.withLedger { try $0.hasBudget("t") } == false)
        }
    }

    @Test func aBodyOverTheLimitIsA413() async throws {
        // Proves: a body over 64 KiB is refused with 413 and the error shape, and nothing is written.
        try await withServer { client, folder in
            let padding = String(repeating: "x", count: ServerConfiguration.defaultRequestBodyBytesMax)
            let response = try await client.post(
                "/api/v1/threads/t/consume", json: #"{"promptTokens":1,"metadata":{"pad":"\#(padding)"}}"#)
            #expect(response.status == .contentTooLarge)
            #expect(response.text == errorBody("payload too large", "the request body exceeds 65536 bytes"))
            #expect(try folder.withLedger { try $0.hasBudget("t") } == false)
        }
    }

    @Test func metadataOverTheLedgersLimitIsA400() async throws {
        // Proves: a body under the HTTP limit whose metadata is over the ledger's 16 KiB is a 400
        // naming metadata.
        try await withServer { client, _ in
            let padding = String(repeating: "x", count: LedgerLimits.metadataBytesMax)
            let response = try await client.post(
                "/api/v1/threads/t/consume", json: #"{"promptTokens":1,"metadata":{"pad":"\#(padding)"}}"#)
            #expect(response.status == .badRequest)
            #expect(try response.detail().hasPrefix("invalid metadata:"))
        }
    }

    @Test(arguments: [
        ("/api/v1/threads/\(String(repeating: "x", count: 257))/consume", "threadId"),
        ("/api/v1/threads/a%07b/consume", "threadId"),
        ("/api/v1/threads/a%ZZ/consume", "threadId"),
        ("/api/v1/usage/threads/a%0Ab", "threadId"),
        ("/api/v1/usage/agents/\(String(repeating: "a", count: 257))", "agentId"),
        ("/api/v1/usage/models/m%00", "model"),
        ("/api/v1/threads/\(String(repeating: "%C3%A9", count: 65))/consume", "threadId"),
        ("/api/v1/usage/agents/a%C2%85", "agentId"),
    ])
    func aBadPathIdIsA400NamingIt(_ path: String, _ field: String) async throws {
        // Proves: path ids obey the REST id rule (256 ASCII or 64 other characters, no control
        // characters, C1 included) and bad percent-encoding, each a 400 naming the id.
        try await withServer { client, _ in
            let method: HTTPRequest.Method = path.hasSuffix("/consume") ? .post : .get
            let response = try await client.send(method, path, json: method == .post ? #"{"promptTokens":1}"# : nil)
            #expect(response.status == .badRequest, "\(response.text)")
            #expect(try response.detail().hasPrefix("invalid \(field):"), "\(response.text)")
        }
    }

    @Test func idsAtTheRulesEdgesAreServed() async throws {
        // Proves: a 256-character ASCII id and a 64-character id of 4-byte characters (256 bytes,
        // the ledger's limit) are served as path ids and as body ids.
        try await withServer { client, folder in
            let ascii = String(repeating: "a", count: 256)
            let rockets = String(repeating: "🚀", count: 64)
            let encoded = try #require(rockets.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
            for (path, id) in [(ascii, ascii), (encoded, rockets)] {
                let response = try await client.post(
                    "/api/v1/threads/\(path)/consume", json: #"{"promptTokens":1,"agentId":"\#(id)","model":"\#(id)"}"#)
                #expect(response.status == .ok, "\(response.text)")
                #expect(try folder.withLedger { try $0.usage(id) }?.requestCount == 1)
            }
        }
    }

    @Test func aBadIdempotencyKeyHeaderIsA400() async throws {
        // Proves: the Idempotency-Key header takes 1…256 printable ASCII characters.
        try await withServer { client, _ in
            let long: HTTPFields = [HTTPField.Name("Idempotency-Key")!: String(repeating: "k", count: 257)]
            let response = try await client.post("/api/v1/threads/t/consume", json: #"{"promptTokens":1}"#, headers: long)
            #expect(response.status == .badRequest)
            #expect(try response.detail().hasPrefix("invalid Idempotency-Key:"), "\(response.text)")
        }
    }

    @Test func anUnknownQueryParameterIsA400NamingIt() async throws {
        // Proves: query parameters are checked as strictly as bodies.
        try await withServer { client, _ in
            let response = try await client.get("/api/v1/usage?window=all")
            #expect(response.status == .badRequest)
            #expect(try response.detail().hasPrefix("invalid window:"))
            let badBool = try await client.get("/api/v1/usage?allTime=yes")
            #expect(try badBool.detail() == #"invalid allTime: must be true or false (got "yes")"#)
        }
    }

    @Test func anUnknownRouteIsA404WithTheErrorShape() async throws {
        // Proves: the router's own 404 has the {"error", "detail"} shape too.
        try await withServer { client, _ in
            let response = try await client.get("/api/v1/nothing")
            #expect(response.status == .notFound)
            #expect(response.text == errorBody("not found", "No route for GET /api/v1/nothing"))
        }
    }
}
