@testable import BudgetLedger
import Foundation
import Synchronization
import Testing

/// The refusal events of migration 0011: a refused call records one refusal per window, nothing else.
@Suite("Refusal events, once per window")
struct RefusalTests {
    /// The events after `id`, through the feed.
    private func events(of ledger: Ledger, after id: Int64) throws -> [LedgerEvent] {
        try ledger.events(after: id, limit: 1_000).events
    }

    private func lastID(of ledger: Ledger) throws -> Int64 {
        try ledger.verify().eventCount
    }

    @Test("a thread refusal records one refusal event per window; a reset opens a new window")
    func threadRefusalOncePerWindow() throws {
        // Proves: the first refused checked consume of a window records exactly one refusal event
        // (the thread's total and max then) and still throws; a second refusal in the same window,
        // by a consume or a hold, records nothing; after a reset the next refusal records again.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        try ledger.checkAndConsume("t", promptTokens: 90)
        let start = try lastID(of: ledger)
        let error = try #require(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("t", promptTokens: 20) }
        #expect(error.used == 90 && error.maxTokens == 100 && error.scope == nil)
        let recorded = try events(of: ledger, after: start)
        #expect(recorded.map(\.kind) == ["refusal"])
        let refusal = try #require(recorded.first)
        #expect(refusal.threadID == "t" && refusal.tokensUsed == 90 && refusal.maxTokens == 100 && refusal.scope == nil)
        #expect(try ledger.usage("t")?.totalTokens == 90, "the refused tokens were not recorded")

        #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("t", promptTokens: 20) }
        #expect(throws: BudgetExhaustedError.self) { try ledger.reserve("t", tokens: 20) }
        #expect(try events(of: ledger, after: refusal.id).isEmpty, "a second refusal in the window recorded something")
        #expect(try ledger.holds("t").isEmpty)

        try ledger.resetThread("t")
        try ledger.checkAndConsume("t", promptTokens: 100)
        let afterReset = try lastID(of: ledger)
        #expect(throws: BudgetExhaustedError.self) { try ledger.reserve("t", tokens: 1) }
        #expect(try events(of: ledger, after: afterReset).map(\.kind) == ["refusal"])
        #expect(try ledger.verify().isConsistent)
    }

    @Test("a refused call on a new thread records its refusal and does not open the thread")
    func refusalOfANewThread() throws {
        // Proves: the implicit open of a refused call is not recorded (checks come before any
        // write); the refusal is, once, in the window of a thread that is not open.
        let ledger = try Ledger.inMemory(maxTokensPerThread: 10)
        let start = try lastID(of: ledger)
        #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("new", promptTokens: 11) }
        #expect(throws: BudgetExhaustedError.self) { try ledger.reserve("new", tokens: 11) }
        #expect(try !ledger.hasBudget("new"))
        #expect(try events(of: ledger, after: start).map(\.kind) == ["refusal"])
        #expect(try ledger.verify().isConsistent)
    }

    @Test("a scope refusal records one refusal per scope window; the next window allows a new one")
    func scopeRefusalOncePerWindow() throws {
        // Proves: a call refused by a daily scope budget records one refusal naming the scope, its
        // window and both units; other threads refused in the same window record nothing; on the
        // next day (a new window) a refusal records again; verify recomputes scope_refusals.
        let clock = ManualClock()
        clock.set(microseconds: 1_764_400_000_000_000)
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        try ledger.setBudget(.global, period: .day, maxTokens: 50)
        try ledger.consume("a", promptTokens: 50)
        let start = try lastID(of: ledger)
        let error = try #require(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("b", promptTokens: 1) }
        #expect(error.scope == .global)
        let window = try #require(error.window)
        let recorded = try events(of: ledger, after: start)
        #expect(recorded.map(\.kind) == ["refusal"])
        let refusal = try #require(recorded.first)
        #expect(refusal.scope == "global" && refusal.threadID == "b")
        #expect(refusal.windowStartMicroseconds == window.startMicroseconds)
        #expect(refusal.tokensUsed == 50 && refusal.maxTokens == 50 && refusal.nanodollarsUsed == 0)
        #expect(try !ledger.hasBudget("b"), "the refused call opened its thread")

        #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("c", promptTokens: 1) }
        #expect(throws: BudgetExhaustedError.self) { try ledger.reserve("a", tokens: 1) }
        #expect(try events(of: ledger, after: refusal.id).isEmpty)

        clock.advance(microseconds: 86_400_000_000)
        try ledger.consume("a", promptTokens: 50)
        let nextDay = try lastID(of: ledger)
        #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("c", promptTokens: 1) }
        let again = try events(of: ledger, after: nextDay)
        #expect(again.map(\.kind) == ["refusal"])
        #expect(again.first?.windowStartMicroseconds == window.startMicroseconds + 86_400_000_000)
        #expect(try ledger.verify().isConsistent)
    }

    @Test("a refusal in a batch of writes commits with the others and is still answered as a refusal")
    func refusalInsideAGroupCommit() throws {
        // Proves: with many callers in one group commit (a savepoint each), every refused caller
        // gets BudgetExhaustedError, the thread never goes past its max, exactly one refusal event
        // is recorded for the window, and the ledger verifies.
        let folder = try TemporaryFolder()
        let ledger = try Ledger(path: folder.path("l.db"))
        defer { ledger.close() }
        try ledger.setLimit("shared", maxTokens: 100)
        let refused = Atomic<Int>(0)
        onThreads(32) { _ in
            do {
                try ledger.checkAndConsume("shared", promptTokens: 10)
            } catch is BudgetExhaustedError {
                refused.add(1, ordering: .relaxed)
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
        #expect(refused.load(ordering: .relaxed) == 22)
        #expect(try ledger.usage("shared")?.totalTokens == 100)
        let kinds = try events(of: ledger, after: 0).map(\.kind)
        #expect(kinds.filter { $0 == "refusal" }.count == 1)
        #expect(try ledger.verify().isConsistent)
    }
}
