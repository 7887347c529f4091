import BudgetLedger
import BudgetLedgerStore
@testable import BudgetLedgerServer
import Testing

/// Check-and-consume and idempotency keys (CheckAndConsumeTests and IdempotencyReplayTests on
/// SQLite alone, PostgresIdempotencyTests as a comparison), run on both stores through the seam.
@Suite("Check-and-consume and idempotency on both stores")
struct BothStoresConsumeTests {
    /// The recorded consumes of `threadID`, from the feed.
    private func consumes(of threadID: String, in subject: StoreUnderTest) async throws -> [LedgerEvent] {
        try await subject.feed().filter { $0.kind == "consume" && $0.threadID == threadID }
    }

    @Test("a checked consume records only what fits; a refusal records no consume and opens no thread", arguments: StoreKind.allCases)
    func refusesWhatDoesNotFit(_ kind: StoreKind) async throws {
        // Proves the check and the consume are one decision: 60+40 of 100 fits exactly, one more
        // token is refused with the figures, and a refused consume on a new thread leaves it
        // unopened (a refused check does open it).
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 100)
            #expect(try await store.consume("t", prompt: 60, completion: 40, checked: true).budget.totalTokens == 100)
            let refused = await attempt { try await store.consume("t", prompt: 1, checked: true) }
            #expect(refused == .exhausted(BudgetExhaustedError(threadID: "t", used: 100, maxTokens: 100, requestedTokens: 1)))
            #expect(try await store.usage("t") == ThreadBudget(
                threadID: "t", maxTokens: 100, promptTokens: 60, completionTokens: 40, requestCount: 1, triggeredThresholds: [75, 90, 95]))
            #expect(try await consumes(of: "t", in: subject).count == 1)

            #expect(try await store.setDefaultMaxTokens(10) == 10)
            let new = await attempt { try await store.consume("new", prompt: 11, checked: true) }
            #expect(new == .exhausted(BudgetExhaustedError(threadID: "new", used: 0, maxTokens: 10, requestedTokens: 11)))
            #expect(try await store.usage("new") == nil)
            let check = await attempt { _ = try await store.checkBudget("new", estimatedTokens: 11) }
            #expect(check == .exhausted(BudgetExhaustedError(threadID: "new", used: 0, maxTokens: 10, requestedTokens: 11)))
            // Unlike a refused consume, a check gets-or-creates first, as the reference's
            // check_budget calls get_budget: the refused check leaves the thread open, unspent.
            #expect(try await store.usage("new") == ThreadBudget(threadID: "new", maxTokens: 10))
        }
    }

    @Test("64 concurrent callers × 4 checked consumes of 10 on a max of 1,000: exactly 100 recorded", arguments: StoreKind.allCases)
    func concurrentCheckedConsumesAreExact(_ kind: StoreKind) async throws {
        // Proves check-and-consume is exact under contention on each store: 100 calls succeed,
        // the 156 others are refused at exactly 1,000 used (never a partial or stale view), and
        // only the 100 are recorded.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("shared", maxTokens: 1_000)
            let outcomes = await race(callers: 64, callsEach: 4) { try await store.consume("shared", prompt: 10, checked: true) }
            let refusal = Outcome.exhausted(BudgetExhaustedError(threadID: "shared", used: 1_000, maxTokens: 1_000, requestedTokens: 10))
            #expect(outcomes.count { $0 == .success } == 100)
            #expect(outcomes.count { $0 == refusal } == 156)
            let budget = try #require(try await store.usage("shared"))
            #expect(budget.totalTokens == 1_000)
            #expect(budget.requestCount == 100)
            #expect(try await consumes(of: "shared", in: subject).count == 100)
            // The first refusal of the thread's window is recorded, once, however many callers
            // were refused (SQLite's 0011, PostgreSQL's 0009).
            let refusals = try await subject.feed().filter { $0.kind == "refusal" }
            #expect(refusals.map(\.threadID) == ["shared"])
            #expect(refusals.first?.tokensUsed == 1_000 && refusals.first?.maxTokens == 1_000)
        }
    }

    @Test("an idempotency key records once; a retry, checked or not, replays the original", arguments: StoreKind.allCases)
    func replay(_ kind: StoreKind) async throws {
        // Proves a retried consume never double-counts: the same event and crossings, the budget
        // as it stands, metadata compared as a JSON object, and nothing written.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 100)
            let first = try await store.consume("t", prompt: 80, key: "req-1", usage: UsageDetails(metadataJSON: #"{"x":1,"y":2}"#))
            #expect(!first.replayed)
            #expect(first.crossedThresholds.map(\.thresholdPercent) == [75])
            let feed = try await subject.feed()
            let again = try await store.consume(
                "t", prompt: 80, key: "req-1", usage: UsageDetails(metadataJSON: #"{ "y": 2, "x": 1 }"#), checked: true)
            #expect(again.replayed)
            #expect(again.event == first.event)
            #expect(again.crossedThresholds == first.crossedThresholds)
            #expect(again.budget == first.budget)
            #expect(again.budget.requestCount == 1)
            #expect(try await subject.feed() == feed)
        }
    }

    @Test("16 concurrent calls with one key record once; the other 15 replay it", arguments: StoreKind.allCases)
    func racingRetriesRecordOnce(_ kind: StoreKind) async throws {
        // Proves a key raced by concurrent retries (a client's retry arriving while the first
        // call still runs) is recorded exactly once on each store, and every answer names the
        // one event.
        try await withStore(kind) { subject in
            let store = subject.store
            let answers = try await withThrowingTaskGroup(of: ConsumeAnswer.self) { group in
                for _ in 0..<16 {
                    group.addTask { try await store.consume("t", prompt: 10, key: "same", checked: true) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(answers.count { !$0.replayed } == 1)
            #expect(Set(answers.map(\.event.id)).count == 1)
            #expect(try await store.usage("t")?.requestCount == 1)
            #expect(try await consumes(of: "t", in: subject).count == 1)
        }
    }

    @Test("a key reused for a different consume is a conflict naming the first field that differs", arguments: StoreKind.allCases)
    func conflictNamesTheField(_ kind: StoreKind) async throws {
        // Proves each recorded field is compared, the conflict's message names it and the
        // original, and a conflict writes nothing (the other thread stays unopened).
        try await withStore(kind) { subject in
            let store = subject.store
            let details = try UsageDetails(agentID: "a", model: "m", provider: "p", latencyMilliseconds: 5, metadataJSON: #"{"x":1}"#)
            func changed(_ change: (inout UsageDetails) -> Void) -> UsageDetails {
                var usage = details
                change(&usage)
                return usage
            }
            let original = try await store.consume("t", prompt: 80, key: "k", usage: details)
            let feed = try await subject.feed()
            let retries: [(field: String, thread: String, prompt: Int64, completion: Int64, usage: UsageDetails)] = [
                ("thread", "u", 80, 0, details), ("prompt tokens", "t", 81, 0, details), ("completion tokens", "t", 80, 1, details),
                ("agent", "t", 80, 0, changed { $0.agentID = "b" }), ("model", "t", 80, 0, changed { $0.model = "n" }),
                ("provider", "t", 80, 0, changed { $0.provider = nil }), ("latency", "t", 80, 0, changed { $0.latencyMilliseconds = 6 }),
                ("metadata", "t", 80, 0, changed { $0.metadata = try! Metadata(json: #"{"x":2}"#) }),
            ]
            for retry in retries {
                let conflict = await attempt {
                    try await store.consume(retry.thread, prompt: retry.prompt, completion: retry.completion, key: "k", usage: retry.usage)
                }
                #expect(conflict == .conflict(
                    "idempotency key k was already used by event \(original.event.id) for a different consume (its "
                        + "\(retry.field) differs; recorded: thread t, 80 prompt + 0 completion tokens)"), "\(retry.field)")
            }
            #expect(try await subject.feed() == feed)
            #expect(try await store.usage("u") == nil)
        }
    }

    @Test("a reserve's key cannot be a consume's, nor a consume's a reserve's", arguments: StoreKind.allCases)
    func keysAreSharedAcrossKinds(_ kind: StoreKind) async throws {
        // Proves one key names one request whatever its kind: each reuse is a conflict naming
        // the event that holds the key and its kind, and writes nothing.
        try await withStore(kind) { subject in
            let store = subject.store
            let hold = try await store.reserve("t", tokens: 10, key: "hold-1")
            let call = try await store.consume("t", prompt: 1, key: "call-1")
            let feed = try await subject.feed()
            let taken = Outcome.conflict("idempotency key hold-1 was already used by event \(hold.reservation.id), a reserve, not a consume")
            let consume = await attempt { try await store.consume("t", prompt: 1, key: "hold-1") }
            #expect(consume == taken)
            // A consume of 0 tokens with nothing else matches every field a reserve event has:
            // it must still not pass for a replay of the reserve.
            let empty = await attempt { try await store.consume("t", prompt: 0, key: "hold-1") }
            #expect(empty == taken)
            let settle = await attempt { try await store.settle(hold.reservation.id, prompt: 0, key: "hold-1") }
            #expect(settle == taken)
            let reserve = await attempt { _ = try await store.reserve("t", tokens: 1, key: "call-1") }
            #expect(reserve == .conflict("idempotency key call-1 was already used by event \(call.event.id), a consume, not a reserve"))
            #expect(try await subject.feed() == feed)
        }
    }

    @Test("a replay after the thread's cleanup answers the budget the original left", arguments: StoreKind.allCases)
    func replayAfterCleanup(_ kind: StoreKind) async throws {
        // Proves a retry that arrives after the thread's life ended replays, with the old life's
        // budget rebuilt (not the new life's, not a made-up one).
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 100)
            let original = try await store.consume("t", prompt: 80, key: "k")
            #expect(try await store.cleanupThread("t") != nil)
            try await store.consume("t", prompt: 1)
            let retry = try await store.consume("t", prompt: 80, key: "k")
            #expect(retry.replayed)
            #expect(retry.event == original.event)
            #expect(retry.budget == original.budget)
            #expect(try await store.usage("t")?.totalTokens == 1)
        }
    }
}
