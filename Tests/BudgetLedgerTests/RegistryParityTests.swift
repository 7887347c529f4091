import BudgetLedger
import Foundation
import Testing

/// The behaviours of the reference in-memory registry, on the durable ledger.
@Suite("Registry parity with the reference")
struct RegistryParityTests {
    @Test("a new ledger's default max per thread is 100,000 and a new thread opens at it")
    func defaultMax() throws {
        // Proves the reference's default (100,000) and get-or-create of budget(for:).
        let ledger = try Ledger.inMemory()
        #expect(try ledger.maxTokensPerThread == 100_000)
        let budget = try ledger.budget(for: "t1")
        #expect(budget == ThreadBudget(threadID: "t1", maxTokens: 100_000))
        #expect(try ledger.hasBudget("t1"))
    }

    @Test("configure changes the default for new threads only")
    func configureAffectsNewThreadsOnly() throws {
        // Proves existing threads keep their max when the default changes, as the reference.
        let ledger = try Ledger.inMemory()
        _ = try ledger.budget(for: "old")
        try ledger.configure(maxTokensPerThread: 500)
        #expect(try ledger.maxTokensPerThread == 500)
        #expect(try ledger.budget(for: "old").maxTokens == 100_000)
        #expect(try ledger.budget(for: "new").maxTokens == 500)
    }

    @Test("opening with maxTokensPerThread sets the stored default")
    func initialMax() throws {
        // Proves the registry constructor's max_tokens_per_thread maps to the ledger's stored default.
        let ledger = try Ledger.inMemory(maxTokensPerThread: 1_234)
        #expect(try ledger.maxTokensPerThread == 1_234)
        #expect(try ledger.budget(for: "t").maxTokens == 1_234)
    }

    @Test("derived fields: total, remaining never negative, exhausted, percent, canConsume")
    func derivedFields() {
        // Proves ThreadBudget's arithmetic matches the reference's, including overshoot and max 0.
        let budget = ThreadBudget(threadID: "t", maxTokens: 1_000, promptTokens: 700, completionTokens: 200, requestCount: 2)
        #expect(budget.totalTokens == 900)
        #expect(budget.remaining == 100)
        #expect(!budget.isExhausted)
        #expect(budget.percentUsed == 90)
        #expect(budget.canConsume(100))
        #expect(!budget.canConsume(101))
        #expect(!budget.canConsume(Int64.max))
        let over = ThreadBudget(threadID: "t", maxTokens: 1_000, promptTokens: 1_200)
        #expect(over.remaining == 0)
        #expect(over.isExhausted)
        #expect(over.percentUsed == 120)
        let blocked = ThreadBudget(threadID: "t", maxTokens: 0)
        #expect(blocked.percentUsed == 0)
        #expect(blocked.isExhausted)
        #expect(blocked.canConsume(0))
        #expect(!blocked.canConsume(1))
    }

    @Test("checkBudget raises with thread, used and max when the estimate does not fit")
    func checkBudgetRaises() throws {
        // Proves check_budget's refusal: exhausted or estimate exceeding; message contains "budget exhausted".
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        try ledger.consume("t", promptTokens: 60, completionTokens: 20)
        #expect(try ledger.checkBudget("t", estimatedTokens: 20).totalTokens == 80)
        let error = try #require(throws: BudgetExhaustedError.self) {
            try ledger.checkBudget("t", estimatedTokens: 21)
        }
        #expect(error.threadID == "t")
        #expect(error.used == 80)
        #expect(error.maxTokens == 100)
        #expect("\(error)".contains("budget exhausted"))
        try ledger.consume("t", promptTokens: 20)
        #expect(throws: BudgetExhaustedError.self) { try ledger.checkBudget("t", estimatedTokens: 0) }
    }

    @Test("checkBudget opens an unknown thread, as get_budget does")
    func checkBudgetCreates() throws {
        // Proves check_budget gets-or-creates the thread.
        let ledger = try Ledger.inMemory()
        #expect(try !ledger.hasBudget("fresh"))
        try ledger.checkBudget("fresh", estimatedTokens: 10)
        #expect(try ledger.hasBudget("fresh"))
    }

    @Test("consume records actual usage even when it overshoots the max")
    func consumeOvershoots() throws {
        // Proves consume never refuses: the tokens were already spent.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        let result = try ledger.consume("t", promptTokens: 90, completionTokens: 50)
        #expect(result.budget.totalTokens == 140)
        #expect(result.budget.remaining == 0)
        #expect(result.budget.isExhausted)
        #expect(result.budget.requestCount == 1)
        #expect(try ledger.usage("t") == result.budget)
    }

    @Test("a single consume can cross several thresholds, each reported once")
    func severalThresholdsAtOnce() throws {
        // Proves all of 75/90/95 fire on one consume that jumps past them, with the reference's fields.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 1_000)
        let first = try ledger.consume("t", promptTokens: 700)
        #expect(first.crossedThresholds.isEmpty)
        let second = try ledger.consume("t", promptTokens: 260)
        #expect(second.crossedThresholds.map(\.thresholdPercent) == [75, 90, 95])
        #expect(second.crossedThresholds.map(\.severity) == ["warning", "critical", "final"])
        let final = try #require(second.crossedThresholds.last)
        #expect(final.tokensUsed == 960)
        #expect(final.tokensRemaining == 40)
        #expect(final.maxTokens == 1_000)
        #expect(final.percentUsed == 96)
        #expect(second.budget.triggeredThresholds == [75, 90, 95])
        let third = try ledger.consume("t", promptTokens: 100)
        #expect(third.crossedThresholds.isEmpty)
    }

    @Test("a threshold fires exactly at its percent, not before")
    func thresholdBoundary() throws {
        // Proves the comparison is percent >= threshold (749/1000 does not fire 75, 750 does).
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 1_000)
        #expect(try ledger.consume("t", promptTokens: 749).crossedThresholds.isEmpty)
        #expect(try ledger.consume("t", promptTokens: 1).crossedThresholds.map(\.thresholdPercent) == [75])
    }

    @Test("a threshold crossed while the max was lower fires again once a raised max is crossed again")
    func thresholdRearmedByRaise() throws {
        // Proves the rule of migration 0007 (issue 20), where this ledger departs from the
        // reference's "once per thread": a raise the thread no longer reaches re-arms 75, so
        // climbing to 90 % of the new max crosses 75 and 90.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        #expect(try ledger.consume("t", promptTokens: 80).crossedThresholds.map(\.thresholdPercent) == [75])
        try ledger.setLimit("t", maxTokens: 1_000)
        #expect(try ledger.consume("t", promptTokens: 820).crossedThresholds.map(\.thresholdPercent) == [75, 90])
    }

    @Test("a configured threshold list replaces the defaults")
    func customThresholds() throws {
        // Proves the threshold list is configurable.
        let ledger = try Ledger.inMemory(
            configuration: Ledger.Configuration(thresholds: [BudgetThreshold(percent: 50, severity: "half")]))
        try ledger.setLimit("t", maxTokens: 10)
        let crossed = try ledger.consume("t", promptTokens: 10).crossedThresholds
        #expect(crossed.map(\.thresholdPercent) == [50])
        #expect(crossed.map(\.severity) == ["half"])
    }

    @Test("a max of 0 blocks everything and never fires thresholds")
    func zeroMax() throws {
        // Proves max 0 is a valid fully blocked budget whose percent reads 0.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 0)
        #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("t", promptTokens: 1) }
        let result = try ledger.consume("t", promptTokens: 5)
        #expect(result.crossedThresholds.isEmpty)
        #expect(result.budget.percentUsed == 0)
        #expect(result.budget.isExhausted)
    }

    @Test("hasBudget and usage never create a thread")
    func readsNeverCreate() throws {
        // Proves has_budget / get_usage are pure reads: nil and false for an unknown thread.
        let ledger = try Ledger.inMemory()
        #expect(try !ledger.hasBudget("ghost"))
        #expect(try ledger.usage("ghost") == nil)
        #expect(try ledger.allUsage().isEmpty)
        #expect(try !ledger.hasBudget("ghost"))
    }

    @Test("allUsage lists every thread, hottest first")
    func allUsageOrder() throws {
        // Proves get_all_usage returns every thread, ordered by percent used descending.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("cool", maxTokens: 1_000)
        try ledger.setLimit("hot", maxTokens: 100)
        try ledger.setLimit("warm", maxTokens: 100)
        try ledger.consume("cool", promptTokens: 10)
        try ledger.consume("hot", promptTokens: 90)
        try ledger.consume("warm", promptTokens: 50)
        #expect(try ledger.allUsage().map(\.threadID) == ["hot", "warm", "cool"])
    }

    @Test("resetThread zeroes spent, keeps the max and re-arms thresholds")
    func reset() throws {
        // Proves reset_thread: the next read starts from zero and thresholds can fire again.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        #expect(try ledger.consume("t", promptTokens: 80).crossedThresholds.count == 1)
        let fresh = try #require(try ledger.resetThread("t"))
        #expect(fresh == ThreadBudget(threadID: "t", maxTokens: 100))
        #expect(try ledger.usage("t") == fresh)
        #expect(try ledger.consume("t", promptTokens: 80).crossedThresholds.map(\.thresholdPercent) == [75])
        #expect(try ledger.resetThread("unknown") == nil)
    }

    @Test("cleanupThread returns the final budget once, then the thread is gone")
    func cleanup() throws {
        // Proves cleanup_thread: final budget, then nil; the id later opens fresh at the default.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        try ledger.consume("t", promptTokens: 30, completionTokens: 5)
        let final = try #require(try ledger.cleanupThread("t"))
        #expect(final.totalTokens == 35)
        #expect(final.maxTokens == 100)
        #expect(try ledger.cleanupThread("t") == nil)
        #expect(try ledger.usage("t") == nil)
        #expect(try ledger.budget(for: "t") == ThreadBudget(threadID: "t", maxTokens: 100_000))
    }

    @Test("setLimit opens a thread, and may lower the max below what is spent")
    func setLimit() throws {
        // Proves per-thread limits distinct from the default, including lowering below spent.
        let ledger = try Ledger.inMemory()
        #expect(try ledger.setLimit("t", maxTokens: 50).maxTokens == 50)
        try ledger.consume("t", promptTokens: 40)
        let lowered = try ledger.setLimit("t", maxTokens: 10)
        #expect(lowered.isExhausted)
        #expect(lowered.totalTokens == 40)
        #expect(try ledger.maxTokensPerThread == 100_000)
    }

    @Test("the shared instance opens, is reused, and resets")
    func sharedInstance() throws {
        // Proves the process-wide shared ledger with configure/reset helpers, over a real file.
        let folder = try TemporaryFolder()
        let path = folder.path("shared.db")
        let configured = try Ledger.configureShared(path: path, maxTokensPerThread: 777)
        #expect(try Ledger.shared() === configured)
        try Ledger.shared().consume("t", promptTokens: 7)
        Ledger.resetShared()
        #expect(ledgerErrorCase { _ = try configured.usage("t") } == .closed)
        let reopened = try Ledger.configureShared(path: path)
        #expect(reopened !== configured)
        #expect(try reopened.usage("t")?.totalTokens == 7)
        #expect(try reopened.maxTokensPerThread == 777)
        Ledger.resetShared()
    }
}
