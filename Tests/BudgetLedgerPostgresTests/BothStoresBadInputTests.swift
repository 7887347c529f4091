import BudgetLedger
import BudgetLedgerStore
@testable import BudgetLedgerServer
import Testing

/// Bad input (LimitsTests and CheckAndConsumeTests' bad input on SQLite alone), run on both
/// stores through the seam: each limit passes at the limit, one past it is
/// `LedgerError.invalidInput` naming the field, and the refusal writes nothing.
@Suite("Bad input on both stores")
struct BothStoresBadInputTests {
    /// A call at a limit and the same call one past it, named by the field the refusal names.
    private struct LimitCase {
        let field: String
        let atLimit: () async throws -> Void
        let pastLimit: () async throws -> Void
    }

    /// A JSON object of exactly `bytes` UTF-8 bytes: `{"p":"xxx…"}`.
    private static func metadata(bytes: Int) -> String {
        #"{"p":""# + String(repeating: "x", count: bytes - 8) + #""}"#
    }

    /// The consume limits: tokens, latency, metadata and every identifier a consume carries.
    private func consumeCases(_ store: any LedgerStore) -> [LimitCase] {
        let perCall = LedgerLimits.tokensPerCallMax
        let latency = LedgerLimits.latencyMillisecondsMax
        let metadata = LedgerLimits.metadataBytesMax
        let long = String(repeating: "x", count: LedgerLimits.identifierBytesMax)
        func consume(_ prompt: Int64, _ completion: Int64 = 0, thread: String = "t", key: String? = nil, usage: UsageDetails = .none)
            -> () async throws -> Void
        {
            { try await store.consume(thread, prompt: prompt, completion: completion, key: key, usage: usage) }
        }
        return [
            LimitCase(field: "promptTokens", atLimit: consume(perCall), pastLimit: consume(perCall + 1)),
            LimitCase(field: "completionTokens", atLimit: consume(0, perCall), pastLimit: consume(0, perCall + 1)),
            LimitCase(
                field: "latencyMs", atLimit: consume(1, usage: UsageDetails(latencyMilliseconds: latency)),
                pastLimit: consume(1, usage: UsageDetails(latencyMilliseconds: latency + 1))),
            LimitCase(
                // The details are made inside the call: metadata is checked where it is made.
                field: "metadata",
                atLimit: { try await consume(1, usage: try UsageDetails(metadataJSON: Self.metadata(bytes: metadata)))() },
                pastLimit: { try await consume(1, usage: try UsageDetails(metadataJSON: Self.metadata(bytes: metadata + 1)))() }),
            // 256 bytes pass; 129 "é" are 258 bytes: the limit counts UTF-8 bytes, not characters.
            LimitCase(field: "threadId", atLimit: consume(1, thread: long), pastLimit: consume(1, thread: String(repeating: "é", count: 129))),
            LimitCase(field: "idempotencyKey", atLimit: consume(1, key: long), pastLimit: consume(1, key: long + "x")),
            LimitCase(
                field: "agentId", atLimit: consume(1, usage: UsageDetails(agentID: long)),
                pastLimit: consume(1, usage: UsageDetails(agentID: long + "x"))),
            LimitCase(
                field: "model", atLimit: consume(1, usage: UsageDetails(model: long)),
                pastLimit: consume(1, usage: UsageDetails(model: long + "x"))),
            LimitCase(
                field: "provider", atLimit: consume(1, usage: UsageDetails(provider: long)),
                pastLimit: consume(1, usage: UsageDetails(provider: long + "x"))),
        ]
    }

    /// The other writes' limits: estimates, holds, maxes, prices, and the feed's page.
    private func otherCases(_ store: any LedgerStore) -> [LimitCase] {
        let request = LedgerLimits.tokensPerRequestMax
        let maxTokens = LedgerLimits.maxTokensMax
        let hold = LedgerLimits.holdSecondsMax
        let page = LedgerLimits.feedPageLimitMax
        func price(_ model: String, _ prompt: String, _ completion: String) -> () async throws -> Void {
            { _ = try await store.setPrice(model: model, promptUSDPerMillion: prompt, completionUSDPerMillion: completion, effectiveFrom: nil, source: "test") }
        }
        return [
            LimitCase(
                field: "estimatedTokens", atLimit: { _ = try await store.checkBudget("t", estimatedTokens: request) },
                pastLimit: { _ = try await store.checkBudget("t", estimatedTokens: request + 1) }),
            LimitCase(
                field: "tokens", atLimit: { _ = try await store.reserve("t", tokens: request) },
                pastLimit: { _ = try await store.reserve("t", tokens: request + 1) }),
            LimitCase(
                field: "ttlSeconds", atLimit: { _ = try await store.reserve("t", tokens: 1, ttlSeconds: hold) },
                pastLimit: { _ = try await store.reserve("t", tokens: 1, ttlSeconds: hold + 1) }),
            LimitCase(
                field: "maxTokens", atLimit: { _ = try await store.setLimit("u", maxTokens: maxTokens) },
                pastLimit: { _ = try await store.setLimit("v", maxTokens: maxTokens + 1) }),
            LimitCase(
                field: "maxTokensPerThread", atLimit: { _ = try await store.setDefaultMaxTokens(maxTokens) },
                pastLimit: { _ = try await store.setDefaultMaxTokens(maxTokens + 1) }),
            LimitCase(field: "prompt price", atLimit: price("m", "10000", "1"), pastLimit: price("n", "10000.001", "1")),
            LimitCase(field: "completion price", atLimit: price("o", "1", "10000"), pastLimit: price("p", "1", "10000.001")),
            LimitCase(
                field: "limit", atLimit: { _ = try await store.events(after: 0, limit: page) },
                pastLimit: { _ = try await store.events(after: 0, limit: page + 1) }),
        ]
    }

    @Test("each limit passes at the limit; one past it is invalid input naming the field, with nothing written", arguments: StoreKind.allCases)
    func limitsAreExact(_ kind: StoreKind) async throws {
        // Proves the documented limits are the same inclusive numbers on both stores, and that
        // a refusal leaves the feed exactly as it was.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: LedgerLimits.maxTokensMax)
            for limit in consumeCases(store) + otherCases(store) {
                #expect(await attempt(limit.atLimit) == .success, "\(limit.field) at its limit")
                let feed = try await subject.feed()
                #expect(await attempt(limit.pastLimit) == .invalidInput(field: limit.field), "\(limit.field) past its limit")
                #expect(try await subject.feed() == feed, "\(limit.field): a refusal wrote an event")
            }
        }
    }

    @Test("negative counts, control characters, empty ids, bad prices, pages and ranges are refused, with nothing written", arguments: StoreKind.allCases)
    func malformedInput(_ kind: StoreKind) async throws {
        // Proves the other validation paths (writes, reads, prices, the feed, rollups, a settle)
        // name the same field on both stores and write nothing: the store keeps its default
        // and its seeded prices, opens no thread, and the feed stays as it was.
        // `throws` spelled out: every `try` below is inside `#expect`, which the closure's
        // inference does not look into.
        try await withStore(kind) { subject async throws in
            let store = subject.store
            let cases: [(field: String, call: () async throws -> Void)] = [
                ("threadId", { try await store.consume("", prompt: 1) }),
                ("threadId", { try await store.consume("tab\there", prompt: 1, checked: true) }),
                ("threadId", { try await store.consume("nul\u{0}", prompt: 1) }),
                ("promptTokens", { try await store.consume("t", prompt: -1) }),
                ("completionTokens", { try await store.consume("t", prompt: 0, completion: -1, checked: true) }),
                ("promptTokens", { try await store.consume("t", prompt: .max, completion: .max) }),
                ("latencyMs", { try await store.consume("t", prompt: 1, usage: UsageDetails(latencyMilliseconds: -3)) }),
                ("metadata", { try await store.consume("t", prompt: 1, usage: UsageDetails(metadataJSON: "[1,2]")) }),
                ("maxTokens", { _ = try await store.setLimit("t", maxTokens: -1) }),
                ("maxTokensPerThread", { _ = try await store.setDefaultMaxTokens(-5) }),
                ("tokens", { _ = try await store.reserve("t", tokens: 0) }),
                ("ttlSeconds", { _ = try await store.reserve("t", tokens: 1, ttlSeconds: 0) }),
                ("idempotencyKey", { try await store.consume("t", prompt: 1, key: "") }),
                ("estimatedTokens", { _ = try await store.checkBudget("t", estimatedTokens: -1) }),
                ("metadata", { _ = try await store.reserve("t", tokens: 1, usage: UsageDetails(metadataJSON: "[]")) }),
            ]
            for (field, call) in cases + readCases(store) + priceCases(store) {
                #expect(await attempt(call) == .invalidInput(field: field), "\(field)")
            }
            #expect(try await subject.feed().isEmpty)
            #expect(try await store.threadList().budgets.isEmpty)
            #expect(try await store.maxTokensPerThread == 100_000)
            #expect(try await store.priceTable().prices.count == 18, "the seeded prices only")
            let hold = try await store.reserve("t", tokens: 10)
            let feed = try await subject.feed()
            #expect(await attempt { try await store.settle(hold.reservation.id, prompt: -1) } == .invalidInput(field: "promptTokens"))
            #expect(try await subject.feed() == feed)
        }
    }

    /// Reads and ends of threads with a bad id, and feed or rollup queries out of range.
    private func readCases(_ store: any LedgerStore) -> [(field: String, call: () async throws -> Void)] {
        [
            ("threadId", { _ = try await store.usage("") }),
            ("threadId", { _ = try await store.holds("") }),
            ("threadId", { _ = try await store.resetThread("") }),
            ("threadId", { _ = try await store.cleanupThread("") }),
            ("threadId", { _ = try await store.setLimit("", maxTokens: 1) }),
            ("agentId", { _ = try await store.usage(agent: "", scope: .allTime) }),
            ("model", { _ = try await store.usage(model: "", scope: .allTime) }),
            ("after", { _ = try await store.events(after: -1, limit: 10) }),
            ("limit", { _ = try await store.events(after: 0, limit: 0) }),
            ("org", { _ = try await store.rollup(ExportQuery(organizationID: ""), by: .org) }),
            ("to", { _ = try await store.rollup(ExportQuery(from: 10, to: 5), by: .day) }),
        ]
    }

    /// Prices that are not a price: a bad pattern, a negative or malformed amount, a start before 1970.
    private func priceCases(_ store: any LedgerStore) -> [(field: String, call: () async throws -> Void)] {
        func price(_ model: String, _ prompt: String, _ completion: String, from: Int64? = nil) -> () async throws -> Void {
            { _ = try await store.setPrice(model: model, promptUSDPerMillion: prompt, completionUSDPerMillion: completion, effectiveFrom: from, source: "test") }
        }
        return [
            ("model", price("", "1", "1")), ("model", price("a*b", "1", "1")), ("model", price("*", "1", "1")),
            ("prompt price", price("m", "-1", "1")), ("prompt price", price("m", "abc", "1")),
            ("completion price", price("m", "1", "0.0001")), ("from", price("m", "1", "1", from: -1)),
        ]
    }
}
