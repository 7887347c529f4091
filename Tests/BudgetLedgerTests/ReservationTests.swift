import BudgetLedger
import Foundation
import Synchronization
import Testing

@Suite("Reservations: two-phase holds")
struct ReservationTests {
    @Test("live holds count against checks, checked consumes and other holds")
    func holdsCount() throws {
        // Proves every budget decision sees max − spent − held.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        try ledger.consume("t", promptTokens: 30)
        let held = try ledger.reserve("t", tokens: 50)
        #expect(held.budget.heldTokens == 50)
        #expect(held.budget.remainingAfterHolds == 20)
        #expect(held.budget.remaining == 70)
        #expect(try ledger.usage("t")?.heldTokens == 50)
        let refusal = try #require(throws: BudgetExhaustedError.self) { try ledger.reserve("t", tokens: 21) }
        #expect(refusal.heldTokens == 50)
        #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("t", promptTokens: 21) }
        #expect(throws: BudgetExhaustedError.self) { try ledger.checkBudget("t", estimatedTokens: 21) }
        try ledger.checkAndConsume("t", promptTokens: 20)
        #expect(try ledger.holds("t").map(\.id) == [held.reservation.id])
    }

    @Test("a check refused because of holds says how many tokens are held")
    func checkRefusalNamesHeldTokens() throws {
        // Proves the model-based test's first finding is fixed: checkBudget counted the holds but
        // reported heldTokens 0, so its message ("30 of 100 tokens used, 21 more requested") read
        // as if the estimate fitted. Every refusal that counts holds must report them.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        try ledger.consume("t", promptTokens: 30)
        _ = try ledger.reserve("t", tokens: 50)
        let refusal = try #require(throws: BudgetExhaustedError.self) { try ledger.checkBudget("t", estimatedTokens: 21) }
        #expect(refusal == BudgetExhaustedError(threadID: "t", used: 30, maxTokens: 100, requestedTokens: 21, heldTokens: 50))
        #expect(refusal.description.contains("and 50 held"))
    }

    @Test("settle records the actual spend, above or below the hold, and ends the hold")
    func settle() throws {
        // Proves settle is one transaction: the consume is recorded and the hold is gone.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 1_000)
        let below = try ledger.reserve("t", tokens: 300)
        let above = try ledger.reserve("t", tokens: 100)
        let first = try ledger.settle(below.reservation.id, promptTokens: 100, completionTokens: 50, usage: UsageDetails(model: "gpt-4o"))
        #expect(first.consume.budget.totalTokens == 150)
        #expect(first.consume.budget.heldTokens == 100)
        #expect(first.consume.event.reservationID == below.reservation.id)
        #expect(first.consume.event.costNanodollars == Int64(100 * 2_500 + 50 * 10_000))
        #expect(!first.holdHadExpired)
        let second = try ledger.settle(above.reservation.id, promptTokens: 180)
        #expect(second.consume.budget.totalTokens == 330)
        #expect(second.consume.budget.heldTokens == 0)
        #expect(try ledger.holds().isEmpty)
        #expect(try ledger.verify().isConsistent)
    }

    @Test("settling or releasing twice, or an unknown id, is a clear error that changes nothing")
    func endsOnce() throws {
        // Proves a hold ends exactly once.
        let ledger = try Ledger.inMemory()
        let settled = try ledger.reserve("t", tokens: 10).reservation.id
        let released = try ledger.reserve("t", tokens: 10).reservation.id
        try ledger.settle(settled, promptTokens: 5)
        try ledger.release(released)
        let eventsBefore = try ledger.events(after: 0, limit: 1_000).events.count
        for attempt in [
            { try ledger.settle(settled, promptTokens: 5) }, { try ledger.release(settled) },
            { try ledger.settle(released, promptTokens: 5) }, { try ledger.release(released) },
        ] as [() throws -> Any] {
            let error = try #require(throws: LedgerError.self) { _ = try attempt() }
            guard case .conflict = error else {
                Issue.record("expected a conflict, got \(error)")
                continue
            }
        }
        let unknown = try #require(throws: LedgerError.self) { try ledger.release(987_654) }
        guard case .reservationNotFound(987_654) = unknown else {
            Issue.record("expected reservationNotFound, got \(unknown)")
            return
        }
        #expect(ledgerErrorCase { try ledger.settle(987_654, promptTokens: 1) } == .reservationNotFound)
        #expect(try ledger.events(after: 0, limit: 1_000).events.count == eventsBefore)
        #expect(try ledger.usage("t")?.totalTokens == 5)
    }

    @Test("an expired hold stops counting at once, is recorded when noticed, and cannot be released")
    func expiry() throws {
        // Proves liveness comes from the clock with no background job, and expiry is audited.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        try ledger.setLimit("t", maxTokens: 100)
        let hold = try ledger.reserve("t", tokens: 90, ttlSeconds: 10)
        #expect(throws: BudgetExhaustedError.self) { try ledger.reserve("t", tokens: 20) }
        clock.advance(microseconds: 10_000_001)
        #expect(try ledger.usage("t")?.heldTokens == 0)
        #expect(try ledger.holds().isEmpty)
        let second = try ledger.reserve("t", tokens: 20)
        // The refused hold recorded only the window's refusal (migration 0011), not its expiries.
        let kinds = try ledger.events(after: hold.reservation.id, limit: 100).events.map(\.kind)
        #expect(kinds == ["refusal", "expire", "reserve"])
        let error = try #require(throws: LedgerError.self) { try ledger.release(hold.reservation.id) }
        guard case .conflict = error else {
            Issue.record("expected a conflict, got \(error)")
            return
        }
        try ledger.release(second.reservation.id)
        #expect(try ledger.verify().isConsistent)
    }

    @Test("settling after expiry still records the actual spend, once")
    func settleAfterExpiry() throws {
        // Proves the documented choice: tokens that were spent are never dropped, recorded or not.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        let unnoticed = try ledger.reserve("t", tokens: 50, ttlSeconds: 1)
        let noticed = try ledger.reserve("u", tokens: 50, ttlSeconds: 1)
        clock.advance(microseconds: 2_000_000)
        try ledger.consume("u", promptTokens: 1)
        let late = try ledger.settle(unnoticed.reservation.id, promptTokens: 40)
        #expect(late.holdHadExpired)
        #expect(late.consume.budget.totalTokens == 40)
        let lateNoticed = try ledger.settle(noticed.reservation.id, promptTokens: 30)
        #expect(lateNoticed.holdHadExpired)
        #expect(lateNoticed.consume.budget.totalTokens == 31)
        #expect(ledgerErrorCase { try ledger.settle(noticed.reservation.id, promptTokens: 30) } == .conflict)
        #expect(try ledger.verify().isConsistent)
    }

    @Test("cleanup ends a thread's holds; settling one afterwards is a conflict")
    func cleanupEndsHolds() throws {
        // Proves holds die with their thread's life.
        let ledger = try Ledger.inMemory()
        let hold = try ledger.reserve("t", tokens: 10)
        try ledger.cleanupThread("t")
        #expect(try ledger.holds().isEmpty)
        #expect(ledgerErrorCase { try ledger.settle(hold.reservation.id, promptTokens: 1) } == .conflict)
        #expect(try ledger.budget(for: "t").heldTokens == 0)
        #expect(try ledger.verify().isConsistent)
    }

    @Test("a hold whose expiry was recorded still ends with its thread's life: settling it after cleanup is a conflict")
    func expiredHoldEndsWithItsLife() throws {
        // Proves the model-based test's second finding is fixed: once an expire event was
        // recorded, the hold had left `holds`, so a cleanup no longer showed on it, and a settle
        // after the cleanup was accepted and charged the old life's spend to the thread's next
        // life (opening one when the id was unused). It must be refused as for a live hold.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        let hold = try ledger.reserve("t", tokens: 10, ttlSeconds: 1)
        clock.advance(microseconds: 2_000_000)
        try ledger.consume("t", promptTokens: 1)  // records the expiry
        try ledger.cleanupThread("t")
        let closed = try #require(throws: LedgerError.self) { try ledger.settle(hold.reservation.id, promptTokens: 5) }
        guard case .conflict = closed else { Issue.record("expected a conflict, got \(closed)"); return }
        #expect(try ledger.usage("t") == nil)
        try ledger.setLimit("t", maxTokens: 100)
        let reopened = try #require(throws: LedgerError.self) { try ledger.settle(hold.reservation.id, promptTokens: 5) }
        guard case .conflict = reopened else { Issue.record("expected a conflict, got \(reopened)"); return }
        #expect(try ledger.usage("t")?.totalTokens == 0)
        #expect(try ledger.verify().isConsistent)
    }

    @Test("holds survive a restart")
    func holdsPersist() throws {
        // Proves a hold taken by one process is seen by the next.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let id = try Ledger(path: path).reserve("t", tokens: 7, ttlSeconds: 3_600).reservation.id
        let reopened = try Ledger(path: path)
        #expect(try reopened.holds().map(\.id) == [id])
        #expect(try reopened.usage("t")?.heldTokens == 7)
        try reopened.settle(id, promptTokens: 7)
        #expect(try reopened.verify().isConsistent)
    }

    @Test("bad holds are refused: tokens below 1, ttl outside 1 s…7 days")
    func badHolds() throws {
        // Proves the limits on holds give clear errors and write nothing.
        let ledger = try Ledger.inMemory()
        #expect(ledgerErrorCase { _ = try ledger.reserve("t", tokens: 0) } == .invalidInput(field: "tokens"))
        #expect(ledgerErrorCase { _ = try ledger.reserve("t", tokens: 1, ttlSeconds: 0) } == .invalidInput(field: "ttlSeconds"))
        #expect(ledgerErrorCase { _ = try ledger.reserve("t", tokens: 1, ttlSeconds: LedgerLimits.holdSecondsMax + 1) } == .invalidInput(field: "ttlSeconds"))
        #expect(try ledger.events(after: 0).events.isEmpty)
    }
}

@Suite("A settle judges its hold at one instant")
struct SettleClockTests {
    @Test("a hold that expires between two clock readings is judged by the event's own timestamp")
    func settleReadsTheClockOnce() throws {
        // Proves the crash harness's finding: settle read the clock for holdHadExpired and again
        // for the event, so a hold expiring in between was reported live while its settle was
        // stamped after expiry (and an expire event was written for it first). Here every clock
        // reading is one microsecond later than the last, and the hold expires at the second
        // reading of the settle.
        let readings = Mutex<Int64>(1_000_000_000)
        let clock: @Sendable () -> Int64 = { readings.withLock { value in value += 1; return value } }
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock))
        let hold = try ledger.reserve("t", tokens: 10, ttlSeconds: 1)
        let expiresAt = hold.reservation.expiresAtMicroseconds
        readings.withLock { $0 = expiresAt - 2 }  // the settle's first reading is expiresAt - 1
        let settled = try ledger.settle(hold.reservation.id, promptTokens: 4)
        #expect(settled.holdHadExpired == (settled.consume.event.timestampMicroseconds >= expiresAt))
        let expires = try ledger.events(after: 0, limit: 100).events.filter { $0.kind == "expire" }
        #expect(expires.isEmpty, "an expire event was written for the hold being settled")
        #expect(try ledger.verify().problems == [])
    }

    @Test("a reserve retried with its idempotency key holds once, and a key reused differently is a conflict")
    func reserveIsIdempotentByKey() throws {
        // Proves: the retry records nothing and answers with the original hold (even after it was
        // settled); another thread, size or model under the key, or a consume's key, is a 409-kind
        // conflict that writes nothing; a consume cannot take a reserve's key either.
        let ledger = try Ledger.inMemory()
        defer { ledger.close() }
        let usage = try UsageDetails(agentID: "a", model: "gpt-4o", metadataJSON: #"{"org_id":"o"}"#)
        let first = try ledger.reserve("t", tokens: 40, usage: usage, idempotencyKey: "hold-1")
        #expect(!first.isReplay)
        let events = try ledger.events(after: 0, limit: 100).events.count
        let again = try ledger.reserve("t", tokens: 40, ttlSeconds: 60, usage: try UsageDetails(
            agentID: "a", model: "gpt-4o", metadataJSON: #"{ "org_id" : "o" }"#), idempotencyKey: "hold-1")
        #expect(again.isReplay)
        #expect(again.reservation == first.reservation)
        #expect(again.budget.heldTokens == 40, "held once")
        #expect(try ledger.events(after: 0, limit: 100).events.count == events)
        for (thread, tokens, model) in [("u", 40, "gpt-4o"), ("t", 41, "gpt-4o"), ("t", 40, "o1")] as [(String, Int64, String)] {
            #expect(throws: LedgerError.self) {
                try ledger.reserve(thread, tokens: tokens, usage: try UsageDetails(agentID: "a", model: model,
                    metadataJSON: #"{"org_id":"o"}"#), idempotencyKey: "hold-1")
            }
        }
        #expect(throws: LedgerError.self) { try ledger.consume("t", promptTokens: 1, idempotencyKey: "hold-1") }
        try ledger.consume("t", promptTokens: 1, idempotencyKey: "call-1")
        #expect(throws: LedgerError.self) { try ledger.reserve("t", tokens: 1, idempotencyKey: "call-1") }
        #expect(try ledger.events(after: 0, limit: 100).events.count == events + 1)
        try ledger.settle(first.reservation.id, promptTokens: 10, usage: usage)
        #expect(try ledger.reserve("t", tokens: 40, usage: usage, idempotencyKey: "hold-1").reservation == first.reservation)
        #expect(try ledger.verify().problems == [])
    }
}
