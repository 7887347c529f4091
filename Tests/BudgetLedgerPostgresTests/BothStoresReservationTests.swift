import BudgetLedger
import BudgetLedgerStore
@testable import BudgetLedgerServer
import Testing

/// Holds (ReservationTests on SQLite alone, PostgresReservationTests as a comparison), run on
/// both stores through the seam, the expiry by moving the clock both stores read.
@Suite("Reservations on both stores")
struct BothStoresReservationTests {
    @Test("a live hold counts against checks, checked consumes and other holds", arguments: StoreKind.allCases)
    func holdsCount(_ kind: StoreKind) async throws {
        // Proves every budget decision sees max − spent − held, and each refusal reports the hold.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 100)
            try await store.consume("t", prompt: 30)
            let held = try await store.reserve("t", tokens: 50)
            #expect(!held.isReplay)
            #expect(held.budget == ThreadBudget(threadID: "t", maxTokens: 100, promptTokens: 30, requestCount: 1, heldTokens: 50))
            #expect(held.budget.remainingAfterHolds == 20)
            #expect(held.budget.remaining == 70)
            #expect(try await store.usage("t")?.heldTokens == 50)
            let refusal = Outcome.exhausted(BudgetExhaustedError(threadID: "t", used: 30, maxTokens: 100, requestedTokens: 21, heldTokens: 50))
            #expect(await attempt { _ = try await store.reserve("t", tokens: 21) } == refusal)
            #expect(await attempt { try await store.consume("t", prompt: 21, checked: true) } == refusal)
            #expect(await attempt { _ = try await store.checkBudget("t", estimatedTokens: 21) } == refusal)
            #expect(try await store.consume("t", prompt: 20, checked: true).budget.remainingAfterHolds == 0)
            #expect(try await store.holds("t").map(\.id) == [held.reservation.id])
            #expect(try await store.holds(nil) == [held.reservation])
        }
    }

    @Test("64 concurrent callers × 4 holds of 10 on a max of 1,000: exactly 100 held", arguments: StoreKind.allCases)
    func concurrentHoldsAreExact(_ kind: StoreKind) async throws {
        // Proves holds are exact under contention on each store: 100 are taken, the 156 others
        // are refused with all 1,000 tokens held, and the holds listed are exactly the 100.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("shared", maxTokens: 1_000)
            let outcomes = await race(callers: 64, callsEach: 4) { _ = try await store.reserve("shared", tokens: 10) }
            let refusal = Outcome.exhausted(
                BudgetExhaustedError(threadID: "shared", used: 0, maxTokens: 1_000, requestedTokens: 10, heldTokens: 1_000))
            #expect(outcomes.count { $0 == .success } == 100)
            #expect(outcomes.count { $0 == refusal } == 156)
            #expect(try await store.holds("shared").count == 100)
            #expect(try await store.usage("shared")?.heldTokens == 1_000)
        }
    }

    @Test("settle records the actual spend, above or below the hold, and ends it; release ends one with nothing spent", arguments: StoreKind.allCases)
    func settleAndRelease(_ kind: StoreKind) async throws {
        // Proves settle is one write (the consume recorded and priced at the seeded gpt-4o
        // price, the hold gone, the event naming it) and release frees the held tokens.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 1_000)
            let below = try await store.reserve("t", tokens: 300)
            let above = try await store.reserve("t", tokens: 100)
            let released = try await store.reserve("t", tokens: 200)
            let first = try await store.settle(below.reservation.id, prompt: 100, completion: 50, usage: UsageDetails(model: "gpt-4o"))
            #expect(first.consume.budget == ThreadBudget(
                threadID: "t", maxTokens: 1_000, promptTokens: 100, completionTokens: 50, requestCount: 1, heldTokens: 300))
            #expect(first.consume.event.reservationID == below.reservation.id)
            #expect(first.consume.event.costNanodollars == 750_000, "100 × 2,500 + 50 × 10,000 nano-dollars")
            #expect(first.reservation == below.reservation)
            #expect(!first.holdHadExpired)
            let second = try await store.settle(above.reservation.id, prompt: 180)
            #expect(second.consume.budget.totalTokens == 330)
            #expect(second.consume.budget.heldTokens == 200)
            #expect(try await store.release(released.reservation.id) == ThreadBudget(
                threadID: "t", maxTokens: 1_000, promptTokens: 280, completionTokens: 50, requestCount: 2))
            #expect(try await store.holds(nil).isEmpty)
        }
    }

    @Test("a hold ends once: a second settle or release is a conflict, an unknown id is not found, nothing written", arguments: StoreKind.allCases)
    func endsOnce(_ kind: StoreKind) async throws {
        // Proves each way to end a hold twice is refused with the reason, and writes nothing.
        try await withStore(kind) { subject in
            let store = subject.store
            let settled = try await store.reserve("t", tokens: 10).reservation.id
            let released = try await store.reserve("t", tokens: 10).reservation.id
            try await store.settle(settled, prompt: 5)
            _ = try await store.release(released)
            let feed = try await subject.feed()
            #expect(await attempt { try await store.settle(settled, prompt: 5) } == .conflict("reservation \(settled) was already settled"))
            #expect(await attempt { _ = try await store.release(settled) } == .conflict("reservation \(settled) was already settled"))
            #expect(await attempt { try await store.settle(released, prompt: 5) } == .conflict("reservation \(released) was already released"))
            #expect(await attempt { _ = try await store.release(released) } == .conflict("reservation \(released) was already released"))
            #expect(await attempt { _ = try await store.release(987_654) } == .reservationNotFound(987_654))
            #expect(await attempt { try await store.settle(987_654, prompt: 1) } == .reservationNotFound(987_654))
            #expect(try await subject.feed() == feed)
            #expect(try await store.usage("t")?.totalTokens == 5)
        }
    }

    @Test("a settle retried with its key replays, once, even after the hold ended", arguments: StoreKind.allCases)
    func settleIsIdempotent(_ kind: StoreKind) async throws {
        // Proves a settle retried under its idempotency key records nothing and answers the
        // original consume, and a consume's key on another hold's settle is a conflict naming
        // the reservation (the hold stays live).
        try await withStore(kind) { subject in
            let store = subject.store
            let hold = try await store.reserve("t", tokens: 100)
            let usage = UsageDetails(agentID: "a", model: "m")
            let first = try await store.settle(hold.reservation.id, prompt: 40, completion: 2, key: "s-1", usage: usage)
            let feed = try await subject.feed()
            subject.clock.advance(microseconds: 1_000)
            let again = try await store.settle(hold.reservation.id, prompt: 40, completion: 2, key: "s-1", usage: usage)
            #expect(again.consume.isReplay)
            #expect(again.consume.event == first.consume.event)
            #expect(again.consume.budget.totalTokens == 42)
            #expect(again.reservation == first.reservation)
            #expect(!again.holdHadExpired)
            #expect(try await subject.feed() == feed)
            // A consume's key on a settle is that consume's: the settle differs by its hold.
            let call = try await store.consume("t", prompt: 7, key: "c-1")
            let other = try await store.reserve("t", tokens: 10)
            let reused = await attempt { try await store.settle(other.reservation.id, prompt: 7, key: "c-1") }
            #expect(reused == .conflict(
                "idempotency key c-1 was already used by event \(call.event.id) for a different consume (its reservation "
                    + "differs; recorded: thread t, 7 prompt + 0 completion tokens)"))
            #expect(try await store.holds("t") == [other.reservation])
        }
    }

    @Test("a reserve retried with its key holds once; the key reused for another hold is a conflict naming the field", arguments: StoreKind.allCases)
    func reserveIsIdempotent(_ kind: StoreKind) async throws {
        // Proves a retried reserve records nothing and answers the original hold (metadata as a
        // JSON object), even after the hold was settled; another thread, size, agent, model or
        // metadata under the key is a conflict naming it, with nothing written.
        try await withStore(kind) { subject in
            let store = subject.store
            let usage = try UsageDetails(agentID: "a", model: "m", metadataJSON: #"{"org_id":"o","n":1}"#)
            let first = try await store.reserve("t", tokens: 40, usage: usage, key: "hold-1")
            #expect(!first.isReplay)
            let feed = try await subject.feed()
            let again = try await store.reserve(
                "t", tokens: 40, ttlSeconds: 60, usage: try UsageDetails(agentID: "a", model: "m", metadataJSON: #"{ "n": 1, "org_id": "o" }"#),
                key: "hold-1")
            #expect(again.isReplay)
            #expect(again.reservation == first.reservation)
            #expect(again.budget.heldTokens == 40, "held once")
            let retries: [(field: String, thread: String, tokens: Int64, usage: UsageDetails)] = [
                ("thread", "u", 40, usage), ("tokens", "t", 41, usage),
                ("agent", "t", 40, UsageDetails(agentID: "b", model: "m", metadata: usage.metadata)),
                ("model", "t", 40, UsageDetails(agentID: "a", model: "n", metadata: usage.metadata)),
                ("metadata", "t", 40, try UsageDetails(agentID: "a", model: "m", metadataJSON: #"{"org_id":"o"}"#)),
            ]
            for retry in retries {
                let conflict = await attempt { _ = try await store.reserve(retry.thread, tokens: retry.tokens, usage: retry.usage, key: "hold-1") }
                #expect(conflict == .conflict(
                    "idempotency key hold-1 was already used by reserve event \(first.reservation.id) for a different hold "
                        + "(its \(retry.field) differs; recorded: thread t, 40 tokens)"), "\(retry.field)")
            }
            #expect(try await subject.feed() == feed)
            try await store.settle(first.reservation.id, prompt: 10, usage: usage)
            let afterSettle = try await store.reserve("t", tokens: 40, usage: usage, key: "hold-1")
            #expect(afterSettle.isReplay)
            #expect(afterSettle.reservation == first.reservation)
        }
    }

    @Test("an expired hold stops counting when the clock passes its ttl, cannot be released, and a late settle still records", arguments: StoreKind.allCases)
    func expiry(_ kind: StoreKind) async throws {
        // Proves liveness comes from the clock (no background job): the hold counts until 10 s
        // after it was taken and not from that instant on; then a new one fits, the old one
        // cannot be released, and a settle after expiry records the spend once, saying so.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 100)
            let hold = try await store.reserve("t", tokens: 90, ttlSeconds: 10)
            #expect(hold.reservation.expiresAtMicroseconds == subject.clock.read() + 10_000_000)
            let refusal = BudgetExhaustedError(threadID: "t", used: 0, maxTokens: 100, requestedTokens: 20, heldTokens: 90)
            #expect(await attempt { _ = try await store.reserve("t", tokens: 20) } == .exhausted(refusal))
            subject.clock.advance(microseconds: 9_999_999)
            #expect(try await store.usage("t")?.heldTokens == 90, "1 µs before its expiry the hold still counts")
            subject.clock.advance(microseconds: 1)
            #expect(try await store.usage("t")?.heldTokens == 0, "at its expiry the hold no longer counts")
            #expect(try await store.holds(nil).isEmpty)
            let second = try await store.reserve("t", tokens: 20)
            #expect(second.budget.heldTokens == 20)
            let expired = await attempt { _ = try await store.release(hold.reservation.id) }
            #expect(expired == .conflict("reservation \(hold.reservation.id) expired; there is nothing to release"))
            let late = try await store.settle(hold.reservation.id, prompt: 40)
            #expect(late.holdHadExpired)
            #expect(late.consume.budget.totalTokens == 40)
            #expect(await attempt { try await store.settle(hold.reservation.id, prompt: 40) }
                == .conflict("reservation \(hold.reservation.id) was already settled"))
            #expect(try await subject.feed().filter { $0.kind == "expire" }.map(\.reservationID) == [hold.reservation.id])
        }
    }

    @Test("cleanup ends a thread's holds; settling one afterwards is a conflict", arguments: StoreKind.allCases)
    func cleanupEndsHolds(_ kind: StoreKind) async throws {
        // Proves holds die with their thread's life, and the thread's next life starts with none.
        try await withStore(kind) { subject in
            let store = subject.store
            let hold = try await store.reserve("t", tokens: 10)
            #expect(try await store.cleanupThread("t")?.heldTokens == 10)
            #expect(try await store.holds(nil).isEmpty)
            #expect(await attempt { try await store.settle(hold.reservation.id, prompt: 1) }
                == .conflict("reservation \(hold.reservation.id) ended when thread t was cleaned up"))
            #expect(try await store.checkBudget("t", estimatedTokens: 0).heldTokens == 0)
        }
    }

    @Test("a hold whose expiry was recorded still ends with its thread's life: a settle after cleanup is a conflict", arguments: StoreKind.allCases)
    func expiredHoldEndsWithItsLife(_ kind: StoreKind) async throws {
        // Proves the model-based test's second finding holds on both stores: once an expire
        // event is recorded the hold has left the live holds, yet a settle after the thread's
        // cleanup must still be refused, before and after the id opens a new life, and charge
        // nothing to that new life.
        try await withStore(kind) { subject in
            let store = subject.store
            let hold = try await store.reserve("t", tokens: 10, ttlSeconds: 1)
            subject.clock.advance(microseconds: 2_000_000)
            try await store.consume("t", prompt: 1)
            #expect(try await subject.feed().map(\.kind) == ["open", "reserve", "expire", "consume"])
            _ = try await store.cleanupThread("t")
            let ended = Outcome.conflict("reservation \(hold.reservation.id) ended when thread t was cleaned up")
            #expect(await attempt { try await store.settle(hold.reservation.id, prompt: 5) } == ended)
            #expect(try await store.usage("t") == nil)
            _ = try await store.setLimit("t", maxTokens: 100)
            #expect(await attempt { try await store.settle(hold.reservation.id, prompt: 5) } == ended)
            #expect(try await store.usage("t")?.totalTokens == 0)
        }
    }

    @Test("a reserve replayed after its thread's cleanup answers the original hold", arguments: StoreKind.allCases)
    func reserveReplayAfterCleanup(_ kind: StoreKind) async throws {
        // Proves a retried reserve whose thread has since been cleaned up records nothing and
        // answers the original hold, with the budget both stores give for a thread no longer open.
        try await withStore(kind) { subject in
            let store = subject.store
            let first = try await store.reserve("t", tokens: 10, key: "h")
            _ = try await store.cleanupThread("t")
            let feed = try await subject.feed()
            let again = try await store.reserve("t", tokens: 10, key: "h")
            #expect(again.isReplay)
            #expect(again.reservation == first.reservation)
            #expect(again.budget == ThreadBudget(threadID: "t", maxTokens: 0))
            #expect(try await subject.feed() == feed)
            #expect(try await store.usage("t") == nil)
        }
    }
}
