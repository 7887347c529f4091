@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Synchronization
import Testing

/// Issue 21: group commit records a batch of plain consumes with its derived state per batch
/// (`Ledger.recordBatch`); the row path (`Ledger.record`, one consume at a time) is the reference.
@Suite("A batch of consumes leaves what the same consumes leave one at a time")
struct ConsumeBatchTests {
    /// Every table of the ledger kept from the events, and the events themselves.
    private static let tables = [
        "events", "thread_state", "ledger_settings", "thread_thresholds", "usage_rollup", "usage_agent_model", "holds",
    ]

    /// A ledger at `path` whose clock moves one second per reading, with thread t (max 10,000)
    /// at event 1, a price for m, and 1,020 events in all, so that a batch crosses the fold at 1,024.
    private func preparedLedger(at path: String) throws -> Ledger {
        let time = Atomic<Int64>(1_800_000_000_000_000)
        let ledger = try Ledger(
            path: path,
            configuration: Ledger.Configuration(
                synchronous: .normal, clock: { time.add(1_000_000, ordering: .relaxed).newValue }))
        _ = try ledger.setLimit("t", maxTokens: 10_000)
        _ = try ledger.setPrice(model: "m", promptUSDPerMillion: "1", completionUSDPerMillion: "2")
        for call in 0..<1_018 {
            try ledger.consume("filler", promptTokens: 1, idempotencyKey: "filler-\(call)")
        }
        return ledger
    }

    /// Twelve consumes: thread t crossing 75 %, 90 % and 95 % (the defaults) within the batch, two new threads
    /// (one checked), priced and unpriced models, metadata with an org and a user, keys and none,
    /// a consume that exactly fills t's max when checked.
    private func consumes() throws -> [ConsumeRequest] {
        let metadata = try Metadata(json: #"{"org_id": "acme", "user_id": "u1", "note": "x"}"#)
        let calls: [(String, Int64, Int64, String?, UsageDetails, Bool)] = [
            ("t", 3_000, 1_000, "k1", UsageDetails(agentID: "a", model: "m"), true),
            ("t", 1_000, 0, nil, UsageDetails(model: "M "), false),
            ("new-1", 10, 5, "k2", UsageDetails(agentID: "b", model: "unpriced", metadata: metadata), true),
            ("t", 1_500, 0, "k3", UsageDetails(), true),
            ("new-2", 7, 0, nil, UsageDetails(latencyMilliseconds: 120), false),
            ("t", 500, 500, "k4", UsageDetails(agentID: "a", model: "m", provider: "p"), true),
            ("new-1", 1, 1, "k5", UsageDetails(), false),
            ("filler", 2, 0, "k6", UsageDetails(metadata: metadata), true),
            ("t", 1_000, 1_000, "k7", UsageDetails(model: "m"), false),
            ("t", 0, 0, "k8", UsageDetails(), true),
            ("new-2", 3, 3, "k9", UsageDetails(model: "m"), true),
            ("t", 1, 0, nil, UsageDetails(), false),
        ]
        return try calls.map { thread, prompt, completion, key, usage, checked in
            try ConsumeRequest(
                threadID: thread, promptTokens: prompt, completionTokens: completion, idempotencyKey: key,
                usage: usage, enforce: checked)
        }
    }

    @Test("a batch of twelve consumes leaves the events, results and derived tables the row path leaves; verify passes")
    func batchEqualsRowPath() throws {
        // Proves the batch path's equivalence on real files: the same consumes recorded by
        // recordBatch in one ledger and by record, one at a time, in another (same clock) give
        // equal results and equal tables, every column, across thresholds fired mid-batch, new
        // threads, prices, metadata, and the fold at event 1,024. Were a running total, a
        // threshold, an open or the fold wrong in the batch path, a table or a result would differ.
        let folder = try TemporaryFolder()
        let batched = try preparedLedger(at: folder.path("batch.db"))
        let rowByRow = try preparedLedger(at: folder.path("rows.db"))
        let requests = try consumes()
        let batchResults = try batched.write { connection in
            try batched.recordBatch(requests.map { BatchedConsume(request: $0, time: nil) }, on: connection)
        }
        var rowResults: [ConsumeResult] = []
        for request in requests {
            rowResults.append(try rowByRow.write { connection in try rowByRow.record(request, on: connection) })
        }
        #expect(batchResults == rowResults)
        #expect(batchResults.flatMap(\.crossedThresholds).map(\.thresholdPercent) == [75, 90, 95], "t crossed the default thresholds mid-batch")
        let batchContents = try tableContents(at: folder.path("batch.db"), tables: Self.tables)
        let rowContents = try tableContents(at: folder.path("rows.db"), tables: Self.tables)
        for table in Self.tables {
            #expect(batchContents[table] == rowContents[table], "table \(table)")
        }
        #expect(batchContents["events"]?.count ?? 0 > 1_024, "the batch crossed the fold")
        #expect(try batched.verify().problems == [])
        #expect(try rowByRow.verify().problems == [])
    }

    @Test("a batch that needs the row path says why, and its write rolled back leaves nothing", arguments: [
        ConsumeBatchFallback.refused, .scopeBudget, .holds, .insertRefused,
    ])
    func fallbacksWriteNothing(_ expected: ConsumeBatchFallback) throws {
        // Proves each fallback: a checked consume past the max, a scope budget, a thread with a
        // hold, a key already recorded; thrown out of the write, the fallback rolls back what
        // the batch wrote (its first consume, which fit, is not recorded either). (A cost above the per-call limit
        // needs a price set before 0006; the row path's tests cover its error.)
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try preparedLedger(at: path)
        try ledger.consume("t", promptTokens: 1, idempotencyKey: "taken")
        var last = try ConsumeRequest(
            threadID: "u", promptTokens: 1, completionTokens: 0, idempotencyKey: nil, usage: UsageDetails(), enforce: true)
        switch expected {
        case .refused:
            last = try ConsumeRequest(
                threadID: "t", promptTokens: 20_000, completionTokens: 0, idempotencyKey: nil, usage: UsageDetails(),
                enforce: true)
        case .scopeBudget:
            try ledger.setBudget(.global, period: .day, maxTokens: 1_000_000)
        case .holds:
            _ = try ledger.reserve("u", tokens: 5)
        case .insertRefused:
            last = try ConsumeRequest(
                threadID: "t", promptTokens: 1, completionTokens: 0, idempotencyKey: "taken", usage: UsageDetails(),
                enforce: false)
        case .capacity, .priceRefused:
            Issue.record("not an argument of this test")
        }
        let first = try ConsumeRequest(
            threadID: "t", promptTokens: 1, completionTokens: 0, idempotencyKey: nil, usage: UsageDetails(), enforce: true)
        let before = try eventCount(at: path)
        let batch = [first, last].map { BatchedConsume(request: $0, time: nil) }
        do {
            _ = try ledger.write { connection in try ledger.recordBatch(batch, on: connection) }
            Issue.record("the batch was recorded")
        } catch let fallback as ConsumeBatchFallback {
            #expect(fallback == expected)
        }
        #expect(try eventCount(at: path) == before)
        #expect(try ledger.verify().problems == [])
    }

    /// Runs `calls` on threads of their own so that all but the first queue behind a leader held
    /// at the connection, and so run as one batch; returns each call's outcome, by index.
    private func queuedBehindHeldLeader(
        _ ledger: Ledger, _ calls: [@Sendable () throws -> ConsumeResult]
    ) -> [Int: Result<ConsumeResult, any Error>] {
        let outcomes = Mutex<[Int: Result<ConsumeResult, any Error>]>([:])
        let done = DispatchGroup()
        func start(_ index: Int) {
            done.enter()
            Thread {
                defer { done.leave() }
                let outcome = Result { try calls[index]() }
                outcomes.withLock { $0[index] = outcome }
            }.start()
        }
        ledger.connection.withLock { _ in
            // The first caller leads: it takes its batch (itself) and waits for this lock.
            start(0)
            while ledger.writeQueue.withLock({ !$0.hasLeader || !$0.tickets.isEmpty }) { usleep(1_000) }
            // The others queue behind it, and run as the next batch.
            for index in 1..<calls.count { start(index) }
            while ledger.writeQueue.withLock({ $0.tickets.count }) < calls.count - 1 { usleep(1_000) }
        }
        done.wait()
        return outcomes.withLock { $0 }
    }

    @Test("group commit records a queued batch of consumes through the batch path, and each caller gets its own result")
    func groupCommitUsesTheBatchPath() throws {
        // Proves the wiring: while the leader is held at the connection, fifteen more callers
        // queue; they then run as one batch through recordBatch (the statistics count it), each
        // caller's result names its own event, and the ledger verifies.
        let folder = try TemporaryFolder()
        let ledger = try Ledger(path: folder.path("l.db"), configuration: Ledger.Configuration(synchronous: .normal))
        let callers = 16
        let outcomes = queuedBehindHeldLeader(
            ledger,
            (0..<callers).map { caller in
                {
                    try ledger.checkAndConsume(
                        "thread-\(caller % 4)", promptTokens: Int64(caller + 1), idempotencyKey: "key-\(caller)")
                }
            })
        #expect(outcomes.count == callers)
        for (caller, outcome) in outcomes {
            let result = try outcome.get()
            #expect(result.event.promptTokens == Int64(caller + 1))
            #expect(result.event.idempotencyKey == "key-\(caller)")
        }
        #expect(Set(outcomes.values.compactMap { try? $0.get().event.id }).count == callers)
        #expect(ledger.statistics.batchedWrites >= Int64(callers - 1))
        #expect(try ledger.verify().problems == [])
    }

    @Test("on a ledger with a scope budget a queued batch runs one write at a time, each counted once under the budget")
    func groupCommitWithScopeBudget() throws {
        // Proves the fallback that hands a batch back before its first write: the transaction goes
        // on without a rollback, the writes run one at a time, and the global budget counts each
        // consume exactly once (a batch's writes left in place and then run again would count twice).
        let folder = try TemporaryFolder()
        let ledger = try Ledger(path: folder.path("l.db"), configuration: Ledger.Configuration(synchronous: .normal))
        try ledger.setBudget(.global, period: .none, maxTokens: 1_000)
        let outcomes = queuedBehindHeldLeader(
            ledger,
            (0..<6).map { caller in { try ledger.checkAndConsume("thread-\(caller)", promptTokens: 10) } })
        #expect(outcomes.values.allSatisfy { (try? $0.get()) != nil })
        #expect(ledger.statistics.batchedWrites == 0)
        #expect(try ledger.budget(scope: .global)?.spentTokens == 60)
        #expect(try ledger.verify().problems == [])
    }

    @Test("a queued batch with a consume that does not fit runs one write at a time: that caller alone is refused")
    func groupCommitFallsBackForARefusal() throws {
        // Proves the fallback inside group commit: the batch path hands the batch back (a checked
        // consume past its thread's max), the transaction is begun again, and the row path gives
        // every caller its own answer: the others recorded, the one refused with its refusal event.
        let folder = try TemporaryFolder()
        let ledger = try Ledger(path: folder.path("l.db"), configuration: Ledger.Configuration(synchronous: .normal))
        _ = try ledger.setLimit("small", maxTokens: 100)
        let outcomes = queuedBehindHeldLeader(
            ledger,
            [
                { try ledger.checkAndConsume("a", promptTokens: 1) },
                { try ledger.checkAndConsume("b", promptTokens: 2) },
                { try ledger.checkAndConsume("small", promptTokens: 101) },
                { try ledger.checkAndConsume("c", promptTokens: 3) },
            ])
        #expect(try outcomes[1]?.get().event.threadID == "b")
        #expect(try outcomes[3]?.get().event.threadID == "c")
        #expect(throws: BudgetExhaustedError.self) { try outcomes[2]?.get() }
        #expect(ledger.statistics.batchedWrites == 0)
        let refusals = try ledger.withConnection { connection in
            try connection.prepare("SELECT count(*) FROM events WHERE kind = 'refusal' AND thread_id = 'small'")
                .fetchOne { try $0[0] as Int64 }
        }
        #expect(refusals == 1)
        #expect(try ledger.verify().problems == [])
    }
}
