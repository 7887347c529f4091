import BudgetLedger
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

@Suite("The default max and the price table over REST")
struct ConfigAndPricesEndpointTests {
    @Test func theDefaultMaxIsReadAndSetForNewThreadsOnly() async throws {
        // Proves: GET /config answers the stored default (100,000 in a new ledger); PUT stores a
        // new one that new threads open at, while an open thread keeps its max.
        try await withServer { client, folder in
            let initial = try await client.get("/api/v1/config")
            #expect(initial.status == .ok)
            #expect(initial.text == #"{"defaultMaxTokens":100000}"#)
            #expect(try await client.post("/api/v1/threads/old/consume", json: #"{"promptTokens":1}"#).status == .ok)
            let updated = try await client.send(.put, "/api/v1/config", json: #"{"defaultMaxTokens":500}"#)
            #expect(updated.status == .ok)
            #expect(updated.text == #"{"defaultMaxTokens":500}"#)
            #expect(try await client.get("/api/v1/config").text == #"{"defaultMaxTokens":500}"#)
            #expect(try await client.post("/api/v1/threads/new/consume", json: #"{"promptTokens":1}"#).status == .ok)
            let (stored, old, new) = try folder.withLedger { ledger in
                (try ledger.maxTokensPerThread, try ledger.usage("old")?.maxTokens, try ledger.usage("new")?.maxTokens)
            }
            #expect(stored == 500 && old == 100_000 && new == 500)
        }
    }

    @Test func repriceBillsUnpricedUsageOnceAndRefusesABadBody() async throws {
        // Proves: POST /prices/reprice appends one reprice per consume recorded unpriced that a
        // price set since (starting before them) covers, answers the figures exactly, shows the
        // corrected cost in the usage overview, and is a no-op the second time; a body without
        // `to` is a 400 that writes nothing.
        try await withServer { client, folder in
            let consume = #"{"promptTokens":1000,"completionTokens":100,"model":"acme-rest"}"#
            for _ in 0..<2 { #expect(try await client.post("/api/v1/threads/r/consume", json: consume).status == .ok) }
            let price = #"{"promptPerMillion":"2","completionPerMillion":"4","effectiveFrom":"2020-01-01"}"#
            #expect(try await client.send(.put, "/api/v1/prices/acme-rest", json: price).status == .ok)
            let bad = try await client.post("/api/v1/prices/reprice", json: #"{"model":"acme-rest","from":"2020-01-01"}"#)
            #expect(bad.status == .badRequest)
            let body = #"{"model":"acme-rest","from":"2020-01-01","to":"2100-01-01"}"#
            let first = try await client.post("/api/v1/prices/reprice", json: body)
            #expect(first.status == .ok)
            // 2 × (1,000 × 2,000 + 100 × 4,000) nano-dollars.
            #expect(first.text == #"{"repriced":2,"cost":0.0048,"costNanos":4800000,"unpriced":0,"complete":true}"#)
            let again = try await client.post("/api/v1/prices/reprice", json: body)
            #expect(again.text == #"{"repriced":0,"cost":0,"costNanos":0,"unpriced":0,"complete":true}"#)
            #expect(try await client.get("/api/v1/usage").text.contains(#""totalCost":0.0048,"unpricedRequests":0,"unpricedTokens":0"#))
            #expect(try folder.withLedger { try $0.verify().problems } == [])
        }
    }

    @Test func aModelNamedRepriceIsPricedReadAndWithdrawnWhileRepriceStillWorks() async throws {
        // Proves: the model named `reprice`, whose name is the reprice operation's path segment,
        // gets its price set (PUT), read (GET) and a future one withdrawn (DELETE) on
        // /api/v1/prices/reprice exactly as any model on /api/v1/prices/{model}; POST on that
        // path still reprices (here its own unpriced consume); any other method is a 405 naming all four.
        try await withServer { client, folder in
            let unknown = try await client.get("/api/v1/prices/reprice")
            #expect(unknown.status == .notFound, "\(unknown.text)")
            #expect(try unknown.detail() == "No price for model: reprice")
            let consume = #"{"promptTokens":1000,"completionTokens":100,"model":"Reprice"}"#
            let consumed = try await client.post("/api/v1/threads/r/consume", json: consume)
            #expect(consumed.text.contains(#""cost":null"#), "\(consumed.text)")

            let price = #"{"promptPerMillion":"2","completionPerMillion":"4","effectiveFrom":"2020-01-01"}"#
            let set = try await client.send(.put, "/api/v1/prices/reprice", json: price)
            #expect(set.status == .ok, "\(set.text)")
            #expect(set.text.hasPrefix(#"{"model":"reprice","promptPerMillion":2,"completionPerMillion":4,"#), "\(set.text)")
            let read = try await client.get("/api/v1/prices/reprice")
            #expect(read.status == .ok, "\(read.text)")
            #expect(read.text.hasPrefix(#"{"model":"reprice","normalizedModel":"reprice","match":"exact","#), "\(read.text)")

            let future = #"{"promptPerMillion":"9","completionPerMillion":"9","effectiveFrom":"2100-01-01"}"#
            #expect(try await client.send(.put, "/api/v1/prices/reprice", json: future).status == .ok)
            let withdrawn = try await client.send(.delete, "/api/v1/prices/reprice?from=2100-01-01")
            #expect(withdrawn.status == .ok, "\(withdrawn.text)")
            #expect(withdrawn.text.hasPrefix(#"{"withdrawn":{"model":"reprice","promptPerMillion":9,"#), "\(withdrawn.text)")
            #expect(try await client.send(.delete, "/api/v1/prices/reprice?from=2100-01-01").status == .notFound)
            #expect(try await client.send(.delete, "/api/v1/prices/reprice").status == .badRequest)

            let body = #"{"model":"reprice","from":"2020-01-01","to":"2100-01-01"}"#
            let repriced = try await client.post("/api/v1/prices/reprice", json: body)
            // 1,000 × 2,000 + 100 × 4,000 nano-dollars.
            #expect(repriced.text == #"{"repriced":1,"cost":0.0024,"costNanos":2400000,"unpriced":0,"complete":true}"#)
            let prices = try folder.withLedger { ledger in
                try ledger.prices().filter { $0.modelPattern == "reprice" }.map(\.promptNanodollarsPerToken)
            }
            #expect(prices == [2_000], "the withdrawn future row is not listed")
            let other = try await client.send(.patch, "/api/v1/prices/reprice")
            #expect(other.status == .methodNotAllowed && other.headers[.allow] == "DELETE, GET, POST, PUT")
            #expect(try folder.withLedger { try $0.verify().problems } == [])
        }
    }

    @Test func aFuturePriceIsWithdrawnOrReplacedAndAnInForceOneIsAConflict() async throws {
        // Proves: DELETE /prices/{model}?from= withdraws a price that has not started (the
        // lookup then finds none), a second withdrawal or an unknown start is a 404, a price in
        // force is a 409 naming its start, and PUT with `replaces` swaps a future price for
        // another in one call; nothing is written by a refused call.
        try await withServer { client, folder in
            let future = #"{"promptPerMillion":"2","completionPerMillion":"4","effectiveFrom":"2100-01-01"}"#
            #expect(try await client.send(.put, "/api/v1/prices/zeta-rest", json: future).status == .ok)
            let withdrawn = try await client.send(.delete, "/api/v1/prices/zeta-rest?from=2100-01-01")
            #expect(withdrawn.status == .ok, "\(withdrawn.text)")
            #expect(withdrawn.text.hasPrefix(#"{"withdrawn":{"model":"zeta-rest""#), "\(withdrawn.text)")
            #expect(try folder.withLedger { try $0.prices().contains { $0.modelPattern == "zeta-rest" } } == false)
            let again = try await client.send(.delete, "/api/v1/prices/zeta-rest?from=2100-01-01")
            #expect(again.status == .notFound, "\(again.text)")
            #expect(try await client.send(.delete, "/api/v1/prices/zeta-rest").status == .badRequest)
            let now = #"{"promptPerMillion":"1","completionPerMillion":"1","effectiveFrom":"2020-01-01"}"#
            #expect(try await client.send(.put, "/api/v1/prices/zeta-rest", json: now).status == .ok)
            let inForce = try await client.send(.delete, "/api/v1/prices/zeta-rest?from=2020-01-01")
            #expect(inForce.status == .conflict)
            #expect(try inForce.detail().contains("2020-01-01"))
            #expect(try await client.send(.put, "/api/v1/prices/zeta-rest", json: future).status == .ok)
            let replacement = #"{"promptPerMillion":"3","completionPerMillion":"5","effectiveFrom":"2100-02-01","replaces":"2100-01-01"}"#
            let replaced = try await client.send(.put, "/api/v1/prices/zeta-rest", json: replacement)
            #expect(replaced.status == .ok, "\(replaced.text)")
            let starts = try folder.withLedger { ledger in
                try ledger.prices().filter { $0.modelPattern == "zeta-rest" }.map(\.promptNanodollarsPerToken)
            }
            #expect(starts == [1_000, 3_000])
            let unknown = #"{"promptPerMillion":"3","completionPerMillion":"5","replaces":"2100-03-01"}"#
            #expect(try await client.send(.put, "/api/v1/prices/zeta-rest", json: unknown).status == .notFound)
            #expect(try folder.withLedger { try $0.verify().problems } == [])
        }
    }

    @Test func aBadDefaultMaxIsA400AndChangesNothing() async throws {
        // Proves: a negative, missing or over-the-limit default is refused naming the field,
        // and the stored default stays.
        try await withServer { client, folder in
            for body in [#"{"defaultMaxTokens":-1}"#, "{}", #"{"defaultMaxTokens":1000000000000001}"#, #"{"max":5}"#] {
                let response = try await client.send(.put, "/api/v1/config", json: body)
                #expect(response.status == .badRequest, "\(body)")
            }
            let missing = try await client.send(.put, "/api/v1/config", json: "{}")
            #expect(try missing.detail().contains("defaultMaxTokens"))
            #expect(try folder.withLedger { try $0.maxTokensPerThread } == 100_000)
        }
    }

    @Test func thePriceTableListsEveryRowWithWhichAreInForce() async throws {
        // Proves: GET /prices lists the seeded rows in the CLI's `price list` shape plus inForce,
        // with an ETag; a price set for later is listed but not in force.
        try await withServer { client, folder in
            let future = try folder.withLedger { ledger in
                try ledger.setPrice(
                    model: "gpt-4o", promptUSDPerMillion: "3", completionUSDPerMillion: "12",
                    effectiveFrom: Timestamps.parse("2999-01-01T00:00:00Z", field: "from"))
            }
            let response = try await client.get("/api/v1/prices")
            #expect(response.status == .ok)
            #expect(response.headers[.eTag]?.hasPrefix("\"") == true)
            let object = try response.object()
            let rows = try #require(object["prices"] as? [[String: Any]])
            #expect(int64(object["count"]) == Int64(rows.count))
            let expected = try folder.withLedger { try $0.prices() }
            #expect(rows.map { $0["model"] as? String } == expected.map(\.modelPattern))
            let gpt4o = rows.filter { $0["model"] as? String == "gpt-4o" }
            #expect(gpt4o.map { $0["inForce"] as? Bool } == [true, false])
            #expect(gpt4o.last?["effectiveFrom"] as? String == Timestamps.iso8601(microseconds: future.effectiveFromMicroseconds))
            #expect(rows.filter { $0["model"] as? String != "gpt-4o" }.allSatisfy { $0["inForce"] as? Bool == true })
            #expect(response.text.contains(#"{"model":"gpt-4o-mini","promptPerMillion":0.15,"completionPerMillion":0.6,"#))
        }
    }

    @Test func theETagAnswers304UntilAPriceIsAdded() async throws {
        // Proves: If-None-Match with the current tag answers 304 with no body; after a PUT the
        // same tag gets the new table (200) under a new tag.
        try await withServer { client, _ in
            let first = try await client.get("/api/v1/prices")
            let tag = try #require(first.headers[.eTag])
            let unchanged = try await client.get("/api/v1/prices", headers: [.ifNoneMatch: tag])
            #expect(unchanged.status == .notModified)
            #expect(unchanged.body.readableBytes == 0)
            #expect(unchanged.headers[.eTag] == tag)
            let set = try await client.send(
                .put, "/api/v1/prices/acme-1", json: #"{"promptPerMillion":"1.25","completionPerMillion":5}"#)
            #expect(set.status == .ok)
            let changed = try await client.get("/api/v1/prices", headers: [.ifNoneMatch: tag])
            #expect(changed.status == .ok)
            #expect(changed.headers[.eTag] != nil && changed.headers[.eTag] != tag)
            #expect(changed.text.contains(#""model":"acme-1","promptPerMillion":1.25,"completionPerMillion":5,"#))
        }
    }

    @Test func aModelsPriceIsTheOneTheConsumePathBillsBy() async throws {
        // Proves: GET /prices/{model} answers the row the ledger prices a consume of that name by
        // (and why: here the dated-variant pattern), the same cost a consume records; 404 unpriced.
        try await withServer { client, _ in
            let mini = try await client.get("/api/v1/prices/GPT-4o-mini-2024-07-18")
            #expect(mini.status == .ok)
            #expect(mini.text.hasPrefix(#"{"model":"GPT-4o-mini-2024-07-18","normalizedModel":"gpt-4o-mini-2024-07-18","match":"pattern","price":{"model":"gpt-4o-mini-20*","promptPerMillion":0.15,"completionPerMillion":0.6,"#))
            let consume = try await client.post(
                "/api/v1/threads/t/consume", json: #"{"promptTokens":1000,"completionTokens":500,"model":"GPT-4o-mini-2024-07-18"}"#)
            #expect(consume.text.contains(#""cost":0.00045,"#))
            let unknown = try await client.get("/api/v1/prices/llama-3")
            #expect(unknown.status == .notFound)
            #expect(unknown.text == errorBody("not found", "No price for model: llama-3"))
            let encoded = try await client.get("/api/v1/prices/org%2Fmodel")
            #expect(try encoded.detail() == "No price for model: org/model")
        }
    }

    @Test func setPriceTakesDecimalTextOrWholeNumbersAndRefusesFloats() async throws {
        // Proves: PUT /prices/{model} stores the exact decimal; a JSON fraction, a missing field or
        // an unknown field is a 400 naming it; the same model and start twice is a 409.
        try await withServer { client, folder in
            let set = try await client.send(
                .put, "/api/v1/prices/acme-2",
                json: #"{"promptPerMillion":"0.001","completionPerMillion":"2","effectiveFrom":"2030-01-01T00:00:00Z"}"#)
            #expect(set.status == .ok)
            #expect(set.text == #"{"model":"acme-2","promptPerMillion":0.001,"completionPerMillion":2,"effectiveFrom":"2030-01-01T00:00:00.000000Z","source":"budget-ledger REST API"}"#)
            let stored = try folder.withLedger { try $0.prices().filter { $0.modelPattern == "acme-2" } }
            #expect(stored.map(\.promptNanodollarsPerToken) == [1])
            let fraction = try await client.send(
                .put, "/api/v1/prices/acme-3", json: #"{"promptPerMillion":2.5,"completionPerMillion":"1"}"#)
            #expect(fraction.status == .badRequest)
            #expect(try fraction.detail().contains("promptPerMillion"))
            let missing = try await client.send(.put, "/api/v1/prices/acme-3", json: #"{"promptPerMillion":"1"}"#)
            #expect(try missing.detail().contains("completionPerMillion"))
            let unknown = try await client.send(
                .put, "/api/v1/prices/acme-3", json: #"{"promptPerMillion":"1","completionPerMillion":"1","prefix":"x"}"#)
            #expect(unknown.status == .badRequest)
            let again = try await client.send(
                .put, "/api/v1/prices/acme-2",
                json: #"{"promptPerMillion":"1","completionPerMillion":"2","effectiveFrom":"2030-01-01T00:00:00Z"}"#)
            #expect(again.status == .conflict)
            #expect(try folder.withLedger { try $0.prices().filter { $0.modelPattern.hasPrefix("acme") }.count } == 1)
        }
    }
}
