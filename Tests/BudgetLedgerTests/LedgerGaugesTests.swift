import BudgetLedger
import Testing

@Suite("Ledger gauges for monitoring")
struct LedgerGaugesTests {
    @Test func gaugesCountThreadsByShareUsedHoldsAndThresholds() throws {
        // Proves: a thread at 89 % is not near, at 90 % it is, at its max it is over and no
        // longer near, a max of 0 counts as over; holds count until they expire; thresholds
        // count the threads past each percent.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: .init(clock: clock.read))
        defer { ledger.close() }
        for (thread, max, used) in [("calm", 100, 89), ("near", 100, 90), ("over", 100, 100), ("blocked", 0, 0)] as [(String, Int64, Int64)] {
            _ = try ledger.setLimit(thread, maxTokens: max)
            if used > 0 { try ledger.consume(thread, promptTokens: used) }
        }
        _ = try ledger.setLimit("held", maxTokens: 1_000)
        _ = try ledger.reserve("held", tokens: 250, ttlSeconds: 60)
        var gauges = try ledger.gauges()
        #expect(gauges.openThreads == 5)
        #expect(gauges.threadsNearMax == 1)
        #expect(gauges.threadsAtOrOverMax == 2)
        #expect(gauges.liveHolds == 1 && gauges.heldTokens == 250)
        #expect(gauges.threadsPastThreshold.map(\.percent) == [75, 90, 95])
        #expect(gauges.threadsPastThreshold.map(\.threads) == [3, 2, 1])
        #expect(gauges.unfoldedConsumes == 3)
        clock.advance(microseconds: 61_000_000)
        gauges = try ledger.gauges()
        #expect(gauges.liveHolds == 0 && gauges.heldTokens == 0)
    }

    @Test func theFoldLagFallsBackWhenTheFoldRuns() throws {
        // Proves: unfolded consumes grow with each consume and drop when the fold passes them
        // (every 1,024 events), so the gauge measures the lag, not the history.
        let ledger = try Ledger.inMemory()
        defer { ledger.close() }
        var highest: Int64 = 0
        var dropped = false
        for _ in 0..<1_100 {
            try ledger.consume("busy", promptTokens: 1)
            let lag = try ledger.gauges().unfoldedConsumes
            if lag < highest { dropped = true }
            highest = max(highest, lag)
        }
        #expect(dropped)
        #expect(highest < 1_024)
        #expect(try ledger.gauges().unfoldedConsumes < 100)
    }
}
