@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

@Suite("Prices: the consume path's cache and when a new price may start")
struct PriceRuleTests {
    private struct Abort: Error {}

    @Test("a price rolled back with its batch never prices a later consume, even when its id is reused")
    func rolledBackPriceIsNotCached() throws {
        // Proves the review's case: a batch inserts a price, a consume in the same batch loads it
        // into the cache, and the batch rolls back; a different price then gets the same id
        // (max(id) + 1 again). The next consume must bill the new price, not the rolled-back one.
        let ledger = try Ledger.inMemory()
        let inside = DispatchSemaphore(value: 0)
        let gate = DispatchSemaphore(value: 0)
        let done = DispatchGroup()
        func start(_ body: @escaping @Sendable () -> Void) {
            done.enter()
            Thread {
                body()
                done.leave()
            }.start()
        }
        func waitForQueue(_ count: Int) {
            while ledger.writeQueue.withLock({ $0.tickets.count }) < count { usleep(1_000) }
        }
        // The leader holds the connection while three writes queue up behind it, so that the
        // next leader runs those three in one transaction, in this order.
        start { try? ledger.write { _ in inside.signal(); gate.wait() } }
        inside.wait()
        start { _ = try? ledger.setPrice(model: "rollback-model", promptUSDPerMillion: "1000", completionUSDPerMillion: "0") }
        waitForQueue(1)
        start { _ = try? ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "rollback-model")) }
        waitForQueue(2)
        start { try? ledger.write { connection in try connection.execute(sql: "ROLLBACK"); throw Abort() } }
        waitForQueue(3)
        gate.signal()
        done.wait()
        #expect(try ledger.price(forModel: "rollback-model") == nil, "the batch was rolled back")
        #expect(try !ledger.hasBudget("t"))

        try ledger.setPrice(model: "rollback-model", promptUSDPerMillion: "2", completionUSDPerMillion: "0")
        let consumed = try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "rollback-model"))
        #expect(consumed.event.costNanodollars == 2_000_000)
        #expect(try ledger.verify().problems == [])
    }

    @Test("an event stamped far in the future does not block a price for models it would not re-price")
    func farFutureEventDoesNotBlockOtherPrices() throws {
        // Proves the review's case: one event from a clock that ran ahead (here year 2100) no
        // longer stops `price set` without --from; only a consume the new price would re-price can.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        let now = clock.read()
        let year2100: Int64 = 4_102_444_800_000_000
        clock.advance(microseconds: year2100 - now)
        try ledger.setLimit("ahead", maxTokens: 10)
        try ledger.consume("ahead", promptTokens: 1, usage: UsageDetails(model: "claude-opus-4"))
        clock.advance(microseconds: now - year2100 + 1_000)
        let price = try ledger.setPrice(model: "gpt-4o", promptUSDPerMillion: "5", completionUSDPerMillion: "20")
        #expect(price.effectiveFromMicroseconds == now + 1_000)
        #expect(try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "gpt-4o")).event.costNanodollars == 5_000_000)
        #expect(try ledger.verify().problems == [])
    }

    @Test("a price may not start at or before a recorded consume it would price; the error names that consume")
    func priceMayNotRepriceARecordedConsume() throws {
        // Proves the rule that keeps history's costs: a new price may not start at or before the
        // time of a consume whose model it matches (by the normalised name), including
        // the same microsecond, which was let through before; after that time it may.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        let recorded = try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: " GPT-4o"))
        let at = recorded.event.timestampMicroseconds
        for from in [nil, at, at - 1] {
            let error = try #require(throws: LedgerError.self, "from \(String(describing: from))") {
                try ledger.setPrice(model: "gpt-4o", promptUSDPerMillion: "5", completionUSDPerMillion: "20", effectiveFrom: from)
            }
            guard case .conflict(let reason) = error else {
                Issue.record("expected conflict, got \(error)")
                return
            }
            #expect(reason.contains("event \(recorded.event.id)"), "\(reason)")
        }
        try ledger.setPrice(model: "gpt-4o", promptUSDPerMillion: "5", completionUSDPerMillion: "20", effectiveFrom: at + 1)
        #expect(try ledger.verify().problems == [])
    }

    @Test("a start past 9999-12-31 is refused: every timestamp the ledger takes is a real date")
    func priceStartMustBeARealDate() throws {
        // Proves the bound on the one timestamp a caller gives the ledger to store.
        let ledger = try Ledger.inMemory()
        let last: Int64 = 253_402_300_799_999_999
        for from in [last + 1, Int64.max, -1] {
            let error = try #require(throws: LedgerError.self, "\(from)") {
                try ledger.setPrice(model: "m", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: from)
            }
            guard case .invalidInput(let field, _) = error else {
                Issue.record("expected invalidInput, got \(error)")
                return
            }
            #expect(field == "from")
        }
        try ledger.setPrice(model: "m", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: last)
        #expect(Timestamps.iso8601(microseconds: last) == "9999-12-31T23:59:59.999999Z")
    }
}
