import BudgetLedger
import BudgetLedgerStore
@testable import BudgetLedgerServer
import Foundation
import Testing

/// The feed and the alert webhooks' cursors (Ledger+Feed and Ledger+AlertCursors' tests on
/// SQLite alone), run on both stores through the seam.
@Suite("The feed and alert cursors on both stores")
struct BothStoresFeedTests {
    @Test("the feed lists a thread's life in order, and pages resume from lastId", arguments: StoreKind.allCases)
    func feedInOrder(_ kind: StoreKind) async throws {
        // Proves both stores record the same kinds of events for the same calls, in call order,
        // and that a page of 2 resumes exactly where the last ended.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 100)
            try await store.consume("t", prompt: 80, usage: UsageDetails(agentID: "a"))
            let hold = try await store.reserve("t", tokens: 10)
            try await store.settle(hold.reservation.id, prompt: 5)
            let released = try await store.reserve("t", tokens: 5)
            _ = try await store.release(released.reservation.id)
            try await store.resetUsageWindow()
            _ = try await store.cleanupThread("t")
            let feed = try await subject.feed()
            // A limit on a new thread opens it: one `limit` event, no `open` before it.
            #expect(feed.map(\.kind) == [
                "limit", "consume", "threshold", "reserve", "consume", "reserve", "release", "usage_reset", "cleanup",
            ])
            #expect(feed.map(\.id) == feed.map(\.id).sorted())
            var paged: [LedgerEvent] = []
            var after: Int64 = 0
            while true {
                let page = try await store.events(after: after, limit: 2)
                if page.events.isEmpty { break }
                #expect(page.events.count <= 2)
                paged += page.events
                after = page.lastID
            }
            #expect(paged == feed)
        }
    }

    @Test("a consume's event carries every detail as written, with its cost, org and user; thresholds and holds name their causes", arguments: StoreKind.allCases)
    func eventFields(_ kind: StoreKind) async throws {
        // Proves the feed's events hold the same fields on both stores: the consume's details
        // and key, the org and user taken from its metadata, its cost at the seeded gpt-4o price
        // (70 × 2,500 + 10 × 10,000 nano-dollars), the threshold it crossed, and the hold's size
        // and expiry, all stamped with the store's clock.
        try await withStore(kind) { subject in
            let store = subject.store
            let now = subject.clock.read()
            _ = try await store.setLimit("t", maxTokens: 100)
            let details = try UsageDetails(
                agentID: "a", model: " GPT-4o ", provider: "openai", latencyMilliseconds: 120,
                metadataJSON: #"{"org_id":"acme","user_id":"ann","tags":[1,2]}"#)
            let consumed = try await store.consume("t", prompt: 70, completion: 10, key: "k-1", usage: details)
            let hold = try await store.reserve("t", tokens: 5, ttlSeconds: 60)
            let feed = try await subject.feed()
            #expect(feed.map(\.timestampMicroseconds) == Array(repeating: now, count: feed.count))
            let limit = try #require(feed.first)
            #expect(limit.kind == "limit" && limit.threadID == "t" && limit.maxTokens == 100)
            let consume = try #require(feed.first { $0.kind == "consume" })
            #expect(consume.id == consumed.event.id)
            #expect(consume.threadID == "t" && consume.promptTokens == 70 && consume.completionTokens == 10)
            #expect(consume.idempotencyKey == "k-1")
            #expect(consume.usage == details)
            #expect(consume.organizationID == "acme" && consume.userID == "ann")
            #expect(consume.costNanodollars == 275_000)
            // The answer the server sends carries the same event, its cost in USD.
            #expect(consumed.event == ConsumeAnswer.Event(
                id: consume.id, timestamp: Timestamps.iso8601(microseconds: now), agentId: "a", model: " GPT-4o ",
                provider: "openai", latencyMs: 120, cost: Decimal(string: "0.000275"), reservationId: nil))
            let threshold = try #require(feed.first { $0.kind == "threshold" })
            #expect(threshold.thresholdPercent == 75 && threshold.severity == "warning")
            #expect(threshold.causedBy == consume.id && threshold.tokensUsed == 80 && threshold.maxTokens == 100)
            let reserve = try #require(feed.last)
            #expect(reserve.kind == "reserve" && reserve.id == hold.reservation.id && reserve.heldTokens == 5)
            #expect(reserve.expiresAtMicroseconds == now + 60_000_000)
        }
    }

    @Test("a new webhook URL starts at the feed's end; its cursor never moves back; bad URLs and ids are refused", arguments: StoreKind.allCases)
    func alertCursors(_ kind: StoreKind) async throws {
        // Proves the alert cursor's rules on both stores: stored at the last event id when first
        // asked (0 on an empty feed), a late acknowledgement of an older alert changes nothing,
        // and a URL outside 1…2,048 bytes or a negative id is invalid input naming the field.
        try await withStore(kind) { subject in
            let store = subject.store
            #expect(try await store.alertCursor(for: "https://hooks.example/empty") == 0)
            try await store.consume("t", prompt: 1)
            try await store.consume("t", prompt: 1)
            let end = try #require(try await subject.feed().last).id
            let url = "https://hooks.example/a"
            #expect(try await store.alertCursor(for: url) == end)
            try await store.advanceAlertCursor(for: url, to: 1)
            #expect(try await store.alertCursor(for: url) == end, "a cursor never moves back")
            try await store.advanceAlertCursor(for: url, to: end + 5)
            #expect(try await store.alertCursor(for: url) == end + 5)
            #expect(try await store.alertCursor(for: "https://hooks.example/empty") == 0, "a stored cursor stays where it was")
            let longest = String(repeating: "x", count: Ledger.alertURLBytesMax)
            #expect(try await store.alertCursor(for: longest) == end)
            #expect(await attempt { _ = try await store.alertCursor(for: longest + "x") } == .invalidInput(field: "url"))
            #expect(await attempt { _ = try await store.alertCursor(for: "") } == .invalidInput(field: "url"))
            #expect(await attempt { try await store.advanceAlertCursor(for: url, to: -1) } == .invalidInput(field: "eventId"))
        }
    }
}
