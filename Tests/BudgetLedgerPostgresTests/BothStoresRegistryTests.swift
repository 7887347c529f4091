import BudgetLedger
import BudgetLedgerStore
@testable import BudgetLedgerServer
import Testing

/// The reference registry's behaviours (RegistryParityTests on SQLite alone), run on both stores
/// through the server's `LedgerStore` seam. The seam has no `budget(for:)` or `hasBudget`: its
/// `checkBudget` gets-or-creates as `get_budget` does, and `usage` is nil exactly when `hasBudget`
/// is false.
@Suite("Registry behaviours on both stores")
struct BothStoresRegistryTests {
    @Test("a new store's default max is 100,000; a check opens an unknown thread at it; reads never open one", arguments: StoreKind.allCases)
    func defaultMaxAndGetOrCreate(_ kind: StoreKind) async throws {
        // Proves the reference's default max, get-or-create by a check, and that usage and the
        // thread list are pure reads (nothing opened, nothing written).
        try await withStore(kind) { subject in
            let store = subject.store
            #expect(try await store.maxTokensPerThread == 100_000)
            #expect(try await store.usage("t1") == nil)
            #expect(try await store.threadList().budgets.isEmpty)
            #expect(try await subject.feed().isEmpty)
            let opened = try await store.checkBudget("t1", estimatedTokens: 10)
            #expect(opened == ThreadBudget(threadID: "t1", maxTokens: 100_000))
            #expect(try await store.usage("t1") == opened)
            let list = try await store.threadList()
            #expect(list.budgets == [opened])
            #expect(list.defaultMaxTokens == 100_000)
            #expect(try await subject.feed().map(\.kind) == ["open"])
        }
    }

    @Test("configure changes the default for new threads only", arguments: StoreKind.allCases)
    func configureAffectsNewThreadsOnly(_ kind: StoreKind) async throws {
        // Proves open threads keep their max when the default changes, and the new default is stored.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.checkBudget("old", estimatedTokens: 0)
            #expect(try await store.setDefaultMaxTokens(500) == 500)
            #expect(try await store.maxTokensPerThread == 500)
            #expect(try await store.usage("old")?.maxTokens == 100_000)
            #expect(try await store.checkBudget("new", estimatedTokens: 0).maxTokens == 500)
            #expect(try await store.threadList().defaultMaxTokens == 500)
        }
    }

    @Test("consume records what was spent even past the max; remaining never goes below 0", arguments: StoreKind.allCases)
    func consumeOvershoots(_ kind: StoreKind) async throws {
        // Proves an unchecked consume never refuses (the tokens were spent) and the derived fields.
        try await withStore(kind) { subject in
            let store = subject.store
            #expect(try await store.setLimit("t", maxTokens: 100) == ThreadBudget(threadID: "t", maxTokens: 100))
            let answer = try await store.consume("t", prompt: 90, completion: 50)
            #expect(answer.budget == .init(
                threadId: "t", maxTokens: 100, promptTokens: 90, completionTokens: 50, totalTokens: 140, remaining: 0,
                requestCount: 1, isExhausted: true, heldTokens: 0, remainingAfterHolds: 0))
            #expect(!answer.replayed)
            let stored = try #require(try await store.usage("t"))
            #expect(stored.totalTokens == 140)
            #expect(stored.remaining == 0)
            #expect(stored.triggeredThresholds == [75, 90, 95])
        }
    }

    @Test("checkBudget refuses with thread, used and max when the estimate does not fit", arguments: StoreKind.allCases)
    func checkBudgetRaises(_ kind: StoreKind) async throws {
        // Proves check_budget's refusal figures and message, at the edge (20 fits, 21 does not)
        // and once exhausted (even an estimate of 0 is refused).
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 100)
            try await store.consume("t", prompt: 60, completion: 20)
            #expect(try await store.checkBudget("t", estimatedTokens: 20).totalTokens == 80)
            let refused = await attempt { _ = try await store.checkBudget("t", estimatedTokens: 21) }
            let expected = BudgetExhaustedError(threadID: "t", used: 80, maxTokens: 100, requestedTokens: 21)
            #expect(refused == .exhausted(expected))
            #expect(expected.description == "budget exhausted for thread t: 80 of 100 tokens used, 21 more requested")
            try await store.consume("t", prompt: 20)
            let exhausted = await attempt { _ = try await store.checkBudget("t", estimatedTokens: 0) }
            #expect(exhausted == .exhausted(BudgetExhaustedError(threadID: "t", used: 100, maxTokens: 100, requestedTokens: 0)))
        }
    }

    @Test("one consume can cross several thresholds, each once, with the reference's fields", arguments: StoreKind.allCases)
    func thresholds(_ kind: StoreKind) async throws {
        // Proves 749/1000 fires nothing, 750 fires 75 alone, a jump fires 90 and 95 together, and
        // a crossed threshold never fires again in the same life.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 1_000)
            #expect(try await store.consume("t", prompt: 749).crossedThresholds.isEmpty)
            #expect(try await store.consume("t", prompt: 1).crossedThresholds == [
                .init(thresholdPercent: 75, severity: "warning", tokensUsed: 750, tokensRemaining: 250, maxTokens: 1_000)
            ])
            #expect(try await store.consume("t", prompt: 210).crossedThresholds == [
                .init(thresholdPercent: 90, severity: "critical", tokensUsed: 960, tokensRemaining: 40, maxTokens: 1_000),
                .init(thresholdPercent: 95, severity: "final", tokensUsed: 960, tokensRemaining: 40, maxTokens: 1_000),
            ])
            #expect(try await store.consume("t", prompt: 100).crossedThresholds.isEmpty)
            #expect(try await store.usage("t")?.triggeredThresholds == [75, 90, 95])
        }
    }

    @Test("a threshold crossed under a lower max fires again once a raised max is crossed again", arguments: StoreKind.allCases)
    func thresholdRearmedByRaise(_ kind: StoreKind) async throws {
        // Proves the rule of migration 0007 (where this ledger departs from the reference's
        // "once per thread"): a raise the thread no longer reaches re-arms 75, so climbing to
        // 90 % of the new max crosses 75 and 90 again.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 100)
            #expect(try await store.consume("t", prompt: 80).crossedThresholds.map(\.thresholdPercent) == [75])
            #expect(try await store.setLimit("t", maxTokens: 1_000).triggeredThresholds == [])
            let crossed = try await store.consume("t", prompt: 820).crossedThresholds
            #expect(crossed.map(\.thresholdPercent) == [75, 90])
            #expect(crossed.map(\.tokensUsed) == [900, 900])
        }
    }

    @Test("reset zeroes spent, keeps the max and re-arms thresholds; an unknown thread resets to nil", arguments: StoreKind.allCases)
    func reset(_ kind: StoreKind) async throws {
        // Proves reset_thread: the next read starts from zero and 75 % fires again.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 100)
            #expect(try await store.consume("t", prompt: 80).crossedThresholds.map(\.thresholdPercent) == [75])
            let fresh = try #require(try await store.resetThread("t"))
            #expect(fresh == ThreadBudget(threadID: "t", maxTokens: 100))
            #expect(try await store.usage("t") == fresh)
            #expect(try await store.consume("t", prompt: 80).crossedThresholds.map(\.thresholdPercent) == [75])
            #expect(try await store.resetThread("unknown") == nil)
            #expect(try await store.usage("unknown") == nil)
        }
    }

    @Test("cleanup returns the final budget once, then the thread is gone and reopens at the default", arguments: StoreKind.allCases)
    func cleanup(_ kind: StoreKind) async throws {
        // Proves cleanup_thread: the final budget, then nil; the id later opens fresh.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 100)
            try await store.consume("t", prompt: 30, completion: 5)
            let final = try #require(try await store.cleanupThread("t"))
            #expect(final == ThreadBudget(threadID: "t", maxTokens: 100, promptTokens: 30, completionTokens: 5, requestCount: 1))
            #expect(try await store.cleanupThread("t") == nil)
            #expect(try await store.usage("t") == nil)
            #expect(try await store.threadList().budgets.isEmpty)
            #expect(try await store.checkBudget("t", estimatedTokens: 0) == ThreadBudget(threadID: "t", maxTokens: 100_000))
        }
    }

    @Test("setLimit opens a thread and may lower the max below what is spent", arguments: StoreKind.allCases)
    func setLimit(_ kind: StoreKind) async throws {
        // Proves per-thread limits apart from the default, including one below the spend.
        try await withStore(kind) { subject in
            let store = subject.store
            #expect(try await store.setLimit("t", maxTokens: 50).maxTokens == 50)
            try await store.consume("t", prompt: 40)
            let lowered = try await store.setLimit("t", maxTokens: 10)
            #expect(lowered == ThreadBudget(threadID: "t", maxTokens: 10, promptTokens: 40, requestCount: 1, triggeredThresholds: [75]))
            #expect(lowered.isExhausted)
            #expect(lowered.remaining == 0)
            #expect(try await store.maxTokensPerThread == 100_000)
        }
    }

    @Test("every thread is listed, hottest first", arguments: StoreKind.allCases)
    func threadListOrder(_ kind: StoreKind) async throws {
        // Proves get_all_usage's order: percent used, descending.
        try await withStore(kind) { subject in
            let store = subject.store
            for (thread, max, spent) in [("cool", Int64(1_000), Int64(10)), ("hot", 100, 90), ("warm", 100, 50)] {
                _ = try await store.setLimit(thread, maxTokens: max)
                try await store.consume(thread, prompt: spent)
            }
            #expect(try await store.threadList().budgets.map(\.threadID) == ["hot", "warm", "cool"])
            // Ties are listed by id in byte order (upper case before lower, "é" last), on both,
            // though the PostgreSQL database's own collation orders "a" before "B".
            if kind == .postgres {
                #expect(try await subject.rows("SELECT CAST('a' < 'B' AS TEXT)") == [["true"]])
            }
            for thread in ["b", "é", "B", "a"] {
                _ = try await store.setLimit(thread, maxTokens: 10)
                try await store.consume(thread, prompt: 1)
            }
            #expect(try await store.threadList().budgets.map(\.threadID) == ["hot", "warm", "B", "a", "b", "é", "cool"])
        }
    }

    @Test("a reset keeps the thread's live holds, which settle into the new window", arguments: StoreKind.allCases)
    func resetKeepsHolds(_ kind: StoreKind) async throws {
        // Proves a reset starts a new spending window without touching live holds: they still
        // count after it, and a settle records into the new window (a cleanup, which ends them,
        // is BothStoresReservationTests.cleanupEndsHolds).
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 100)
            try await store.consume("t", prompt: 50)
            let hold = try await store.reserve("t", tokens: 30)
            #expect(try await store.resetThread("t") == ThreadBudget(threadID: "t", maxTokens: 100, heldTokens: 30))
            let settled = try await store.settle(hold.reservation.id, prompt: 20)
            #expect(settled.consume.budget == ThreadBudget(threadID: "t", maxTokens: 100, promptTokens: 20, requestCount: 1))
        }
    }

    @Test("an unknown thread answers nil or empty everywhere, and asking writes nothing", arguments: StoreKind.allCases)
    func unknownThread(_ kind: StoreKind) async throws {
        // Proves reads and ends of a thread that was never opened: usage nil, reset and cleanup
        // nil, no holds, zero usage by agent; the feed stays empty.
        // `throws` spelled out: every `try` below is inside `#expect`, which the closure's
        // inference does not look into.
        try await withStore(kind) { subject async throws in
            let store = subject.store
            #expect(try await store.usage("ghost") == nil)
            #expect(try await store.resetThread("ghost") == nil)
            #expect(try await store.cleanupThread("ghost") == nil)
            #expect(try await store.holds("ghost").isEmpty)
            #expect(try await store.usage(agent: "ghost", scope: .allTime) == UsageTotals())
            #expect(try await store.threadList().budgets.isEmpty)
            #expect(try await subject.feed().isEmpty)
        }
    }

    @Test("a max of 0 refuses every checked consume and still records an unchecked one", arguments: StoreKind.allCases)
    func zeroMax(_ kind: StoreKind) async throws {
        // Proves max 0 is a valid, fully blocked budget that fires no thresholds.
        try await withStore(kind) { subject in
            let store = subject.store
            _ = try await store.setLimit("t", maxTokens: 0)
            let refused = await attempt { try await store.consume("t", prompt: 1, checked: true) }
            #expect(refused == .exhausted(BudgetExhaustedError(threadID: "t", used: 0, maxTokens: 0, requestedTokens: 1)))
            let answer = try await store.consume("t", prompt: 5)
            #expect(answer.crossedThresholds.isEmpty)
            #expect(answer.budget.isExhausted)
            #expect(answer.budget.totalTokens == 5)
        }
    }
}
