@testable import BudgetLedger
import Foundation
import Testing

@Suite("Idempotent replays compare the whole request")
struct IdempotencyReplayTests {
    /// The usage of the original request in these tests: every optional field set.
    // `try!`: a literal the ledger accepts.
    static let recordedUsage = try! UsageDetails(
        agentID: "planner", model: "gpt-4o", provider: "openai", latencyMilliseconds: 120,
        metadataJSON: #"{"org_id":"acme","step":3}"#)

    /// `recordedUsage` with one field changed, named by the field.
    static let changedUsages: [(String, UsageDetails)] = {
        var agent = recordedUsage
        agent.agentID = "critic"
        var noAgent = recordedUsage
        noAgent.agentID = nil
        var model = recordedUsage
        model.model = "gpt-4o-mini"
        var provider = recordedUsage
        provider.provider = "azure"
        var latency = recordedUsage
        latency.latencyMilliseconds = 121
        var noLatency = recordedUsage
        noLatency.latencyMilliseconds = nil
        var metadata = recordedUsage
        metadata.metadata = try! Metadata(json: #"{"org_id":"acme","step":4}"#)
        var noMetadata = recordedUsage
        noMetadata.metadata = nil
        return [
            ("agent", agent), ("no agent", noAgent), ("model", model), ("provider", provider), ("latency", latency),
            ("no latency", noLatency), ("metadata", metadata), ("no metadata", noMetadata),
        ]
    }()

    @Test("a key reused with any other usage field is a conflict and records nothing", arguments: changedUsages)
    func changedUsageIsConflict(field: String, usage: UsageDetails) throws {
        // Proves that a retry differing only in the agent, model, provider, latency or metadata
        // is refused as LedgerError.conflict instead of answering with the original event.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        try ledger.consume("t", promptTokens: 10, completionTokens: 2, idempotencyKey: "k", usage: Self.recordedUsage)
        let before = try eventCount(at: path)
        for enforce in [false, true] {
            let error = try #require(throws: LedgerError.self, "\(field)") {
                if enforce {
                    try ledger.checkAndConsume("t", promptTokens: 10, completionTokens: 2, idempotencyKey: "k", usage: usage)
                } else {
                    try ledger.consume("t", promptTokens: 10, completionTokens: 2, idempotencyKey: "k", usage: usage)
                }
            }
            guard case .conflict(let reason) = error else {
                Issue.record("expected LedgerError.conflict for a different \(field), got \(error)")
                return
            }
            #expect(reason.contains("idempotency key k"), "\(reason)")
        }
        #expect(try eventCount(at: path) == before)
        #expect(try ledger.usage("t")?.totalTokens == 12)
    }

    @Test("an exact retry replays the original event and records nothing, metadata keys in any order")
    func exactRetryReplays() throws {
        // Proves the comparison does not refuse a true retry: the same fields, and metadata that is
        // the same JSON object written with its keys in another order (as a client may re-serialize it).
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        let original = try ledger.consume("t", promptTokens: 10, completionTokens: 2, idempotencyKey: "k", usage: Self.recordedUsage)
        let before = try eventCount(at: path)
        var reordered = Self.recordedUsage
        reordered.metadata = try Metadata(json: #"{ "step": 3, "org_id": "acme" }"#)
        let retry = try ledger.consume("t", promptTokens: 10, completionTokens: 2, idempotencyKey: "k", usage: reordered)
        #expect(retry.isReplay)
        #expect(retry.event == original.event)
        #expect(try eventCount(at: path) == before)
    }

    @Test("a checked retry of an unchecked consume is a replay: the mode is not recorded")
    func enforceModeIsNotCompared() throws {
        // Proves the decision documented in the README: the ledger records what was consumed, not
        // whether the caller asked for the check, so an exact retry in the other mode replays.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        let original = try ledger.consume("t", promptTokens: 90, idempotencyKey: "k")
        let checked = try ledger.checkAndConsume("t", promptTokens: 90, idempotencyKey: "k")
        #expect(checked.isReplay)
        #expect(checked.event == original.event)
        #expect(try ledger.usage("t")?.requestCount == 1)
    }

    @Test("settling a hold with a consume's key is a conflict, and the hold stays live")
    func settleWithConsumeKeyIsConflict() throws {
        // Proves the review's case: reserve 90, consume 5 with k3, then settle the hold with k3
        // must not answer with the consume's event and leave the hold live as if settled.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        let hold = try ledger.reserve("t3", tokens: 90)
        try ledger.consume("t3", promptTokens: 5, idempotencyKey: "k3")
        let before = try eventCount(at: path)
        let error = try #require(throws: LedgerError.self) {
            try ledger.settle(hold.reservation.id, promptTokens: 5, idempotencyKey: "k3")
        }
        guard case .conflict = error else {
            Issue.record("expected LedgerError.conflict, got \(error)")
            return
        }
        #expect(try eventCount(at: path) == before)
        #expect(try ledger.holds("t3").map(\.tokens) == [90])
        // The hold can still be settled under a key of its own.
        let settled = try ledger.settle(hold.reservation.id, promptTokens: 5, idempotencyKey: "k4")
        #expect(settled.consume.event.reservationID == hold.reservation.id)
        #expect(try ledger.holds("t3").isEmpty)
    }

    @Test("a settle's key reused by a plain consume, or by a settle of another hold, is a conflict")
    func settleKeyReusedElsewhereIsConflict() throws {
        // Proves the reservation is part of the request in both directions.
        let ledger = try Ledger.inMemory()
        let first = try ledger.reserve("t", tokens: 10)
        let second = try ledger.reserve("t", tokens: 10)
        try ledger.settle(first.reservation.id, promptTokens: 4, idempotencyKey: "s")
        let asConsume = try #require(throws: LedgerError.self) { try ledger.consume("t", promptTokens: 4, idempotencyKey: "s") }
        guard case .conflict = asConsume else {
            Issue.record("expected LedgerError.conflict, got \(asConsume)")
            return
        }
        let asOtherSettle = try #require(throws: LedgerError.self) {
            try ledger.settle(second.reservation.id, promptTokens: 4, idempotencyKey: "s")
        }
        guard case .conflict = asOtherSettle else {
            Issue.record("expected LedgerError.conflict, got \(asOtherSettle)")
            return
        }
        #expect(try ledger.holds("t").map(\.id) == [second.reservation.id])
        let retry = try ledger.settle(first.reservation.id, promptTokens: 4, idempotencyKey: "s")
        #expect(retry.consume.isReplay)
    }

    @Test("a retried settle of a hold that had expired still says it had expired")
    func settleReplayKeepsExpiry() throws {
        // Proves the replay of a settle reports the original outcome, not a fixed false.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        let hold = try ledger.reserve("t", tokens: 10, ttlSeconds: 1)
        clock.advance(microseconds: 2_000_000)
        let settled = try ledger.settle(hold.reservation.id, promptTokens: 3, idempotencyKey: "late")
        #expect(settled.holdHadExpired)
        clock.advance(microseconds: 1_000_000)
        let retry = try ledger.settle(hold.reservation.id, promptTokens: 3, idempotencyKey: "late")
        #expect(retry.consume.isReplay)
        #expect(retry.holdHadExpired)
    }

    @Test("after cleanup a replay returns the budget as it was recorded, even once the id opened again")
    func replayAfterCleanupReturnsRecordedBudget() throws {
        // Proves a replay never invents a budget (0 max) for a thread whose life has ended: it
        // answers with the budget the original consume left, rebuilt from that life's events.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        try ledger.setLimit("t", maxTokens: 100)
        try ledger.consume("t", promptTokens: 30)
        try ledger.resetThread("t")
        try ledger.consume("t", promptTokens: 92)
        try ledger.setLimit("t", maxTokens: 200)
        try ledger.consume("t", promptTokens: 18)
        let expiring = try ledger.reserve("t", tokens: 5, ttlSeconds: 1)
        let live = try ledger.reserve("t", tokens: 7, ttlSeconds: 600)
        clock.advance(microseconds: 2_000_000)
        let original = try ledger.consume(
            "t", promptTokens: 40, completionTokens: 5, idempotencyKey: "k", usage: UsageDetails(model: "gpt-4o"))
        #expect(original.crossedThresholds.map(\.thresholdPercent) == [75])
        #expect(original.budget.heldTokens == 7)
        #expect(original.budget.triggeredThresholds == [75], "the raise to 200 re-armed 75 and 90")
        try ledger.consume("t", promptTokens: 20)
        try ledger.cleanupThread("t")

        let afterCleanup = try ledger.consume(
            "t", promptTokens: 40, completionTokens: 5, idempotencyKey: "k", usage: UsageDetails(model: "gpt-4o"))
        #expect(afterCleanup.isReplay)
        #expect(afterCleanup.event == original.event)
        #expect(afterCleanup.crossedThresholds == original.crossedThresholds)
        #expect(afterCleanup.budget == original.budget)
        #expect(try !ledger.hasBudget("t"), "a replay records nothing, not even an open")

        try ledger.consume("t", promptTokens: 1)
        let afterReopen = try ledger.consume(
            "t", promptTokens: 40, completionTokens: 5, idempotencyKey: "k", usage: UsageDetails(model: "gpt-4o"))
        #expect(afterReopen.budget == original.budget)
        #expect(try ledger.holds("t").isEmpty)
        _ = expiring
        _ = live
    }

    @Test("while the thread's life goes on a replay returns the budget as it stands now")
    func replayInSameLifeReturnsCurrentBudget() throws {
        // Proves the documented rule for an open thread: the replay's budget is the current one.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        try ledger.consume("t", promptTokens: 10, idempotencyKey: "k")
        try ledger.consume("t", promptTokens: 20)
        let retry = try ledger.consume("t", promptTokens: 10, idempotencyKey: "k")
        #expect(retry.isReplay)
        #expect(retry.budget.totalTokens == 30)
        #expect(retry.budget.requestCount == 2)
    }
}
