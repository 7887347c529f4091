import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import PostgresNIO
import Testing

@Suite("PostgresLedger is exact under contention")
struct PostgresConcurrencyTests {
    @Test("many connections of two ledgers (two servers) never push a thread past its max")
    func checkAndConsumeIsExact() async throws {
        // Proves the thread lock serializes check-and-consume across pools: 2 ledgers x 6 tasks
        // x 25 calls of 10 tokens against a max of 1,000 succeed exactly 100 times, and the
        // derived total equals the sum of the recorded events.
        let maxTokens: Int64 = 1_000
        try await withPostgresLedger(configuration: .init(connectionsMax: 6)) { first, url in
            let second = try await PostgresLedger(url: url, configuration: .init(connectionsMax: 6))
            try await first.setLimit("hot", maxTokens: maxTokens)
            let (successes, refusals, others) = try await withThrowingTaskGroup(of: (Int, Int, Int).self) { group in
                for task in 0..<12 {
                    let ledger = task.isMultiple(of: 2) ? first : second
                    group.addTask {
                        var counts = (0, 0, 0)
                        for _ in 0..<25 {
                            do {
                                let result = try await ledger.checkAndConsume("hot", promptTokens: 7, completionTokens: 3)
                                // An answer past the max counts as a failure below.
                                counts.0 += result.budget.totalTokens <= maxTokens ? 1 : 1_000
                            } catch is BudgetExhaustedError {
                                counts.1 += 1
                            } catch {
                                counts.2 += 1
                            }
                        }
                        return counts
                    }
                }
                return try await group.reduce((0, 0, 0)) { ($0.0 + $1.0, $0.1 + $1.1, $0.2 + $1.2) }
            }
            await second.close()
            #expect(successes == 100)
            #expect(refusals == 200)
            #expect(others == 0)
            let budget = try #require(try await first.usage("hot"))
            #expect(budget.totalTokens == maxTokens)
            #expect(budget.requestCount == 100)
            let server = try await PostgresTestCluster.shared()
            let database = String(url.split(separator: "/").last!)
            let recorded = try await PostgresTestCluster.withAdminClient(server, database: database) { client in
                let rows = try await client.query(
                    "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint FROM events WHERE kind = 'consume' AND thread_id = 'hot'")
                var total: Int64 = -1
                for try await value in rows.decode(Int64.self) { total = value }
                return total
            }
            #expect(recorded == maxTokens)
        }
    }

    @Test("one idempotency key raced by many tasks records once; on other threads it is a conflict")
    func idempotencyKeyRaces() async throws {
        // Proves the key is unique in the database and a lost race is retried into a replay
        // (same thread, same request) or a conflict (another thread), never a second event.
        try await withPostgresLedger { ledger, _ in
            let sameThread = try await withThrowingTaskGroup(of: ConsumeResult.self) { group in
                for _ in 0..<8 {
                    group.addTask { try await ledger.consume("t", promptTokens: 5, idempotencyKey: "k1") }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(sameThread.filter { !$0.isReplay }.count == 1)
            #expect(Set(sameThread.map(\.event.id)).count == 1)
            let otherThreads = await withTaskGroup(of: String.self) { group in
                for index in 0..<8 {
                    group.addTask {
                        await outcome { try await ledger.consume("thread-\(index)", promptTokens: 5, idempotencyKey: "k2").isReplay }
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            #expect(otherThreads.filter { $0 == "ok false" }.count == 1)
            #expect(otherThreads.filter { $0.contains("LedgerError: conflict: idempotency key k2") }.count == 7)
            #expect(try await ledger.usageTotals().requestCount == 2)
        }
    }

    @Test("usage resets racing consumes on many connections: every consume is in the window its id says, and verify agrees")
    func usageResetsAreOrderedWithConsumes() async throws {
        // Proves the usage window's lock: 8 tasks on two ledgers (two servers) record 40
        // consumes each while a third ledger resets the usage window 15 times. A consume that
        // raced a reset used to read the old window yet take an id after the reset's, which
        // verify (it recomputes the windows in id order) reports. Afterwards verify finds
        // nothing, the all-time totals are every consume's, and the current window holds exactly
        // the consumes with ids after the last reset.
        let url = try await PostgresTestCluster.freshDatabase()
        let ledgers = [
            try await PostgresLedger(url: url, configuration: .init(connectionsMax: 4)),
            try await PostgresLedger(url: url, configuration: .init(connectionsMax: 4)),
        ]
        let resetter = try await PostgresLedger(url: url)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for call in 0..<40 {
                        try await ledgers[task % 2].consume(
                            "t\(task % 4)", promptTokens: 3, completionTokens: 1,
                            usage: UsageDetails(agentID: "agent-\(call % 3)", model: "gpt-4o"))
                    }
                }
            }
            group.addTask {
                for _ in 0..<15 {
                    try await resetter.resetUsageWindow()
                    try await Task.sleep(for: .milliseconds(5))
                }
            }
            try await group.waitForAll()
        }
        let report = try await resetter.verify()
        #expect(report.isConsistent, "\(report.problems)")
        #expect(try await resetter.usageTotals(.allTime).requestCount == 320)
        #expect(try await resetter.usageTotals(.allTime).totalTokens == 1_280)
        let server = try await PostgresTestCluster.shared()
        let afterLastReset = try await PostgresTestCluster.withAdminClient(server, database: String(url.split(separator: "/").last!)) { session in
            var count: Int64 = -1
            let rows = try await session.query(
                """
                SELECT count(*)::bigint FROM events
                WHERE kind = 'consume' AND id > (SELECT max(id) FROM events WHERE kind = 'usage_reset')
                """)
            for try await value in rows.decode(Int64.self) { count = value }
            return count
        }
        #expect(try await resetter.usageTotals(.currentWindow).requestCount == afterLastReset)
        for ledger in ledgers + [resetter] { await ledger.close() }
    }
}
