import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import Testing

@Suite("PostgresLedger replays and refuses idempotency keys as the SQLite Ledger does")
struct PostgresIdempotencyTests {
    @Test("a retry replays, a different request conflicts, a replay after cleanup rebuilds the old budget")
    func replaysLikeSQLite() async throws {
        // Proves Ledger+Consume's replay rules hold on PostgreSQL: the same answers, as text,
        // for a retry, for each kind of mismatch, and once the thread's life has ended.
        let clock = TestClock()
        let sqlite = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        defer { sqlite.close() }
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { postgres, _ in
            let details = try UsageDetails(agentID: "a", model: "m", metadataJSON: #"{"x":1,"y":2}"#)
            let reordered = try UsageDetails(agentID: "a", model: "m", metadataJSON: #"{"y":2,"x":1}"#)
            try sqlite.setLimit("t", maxTokens: 100)
            try await postgres.setLimit("t", maxTokens: 100)
            typealias Call = (String, Int64, Int64, String, UsageDetails, Bool)
            let calls: [Call] = [
                ("t", 80, 0, "k", details, true),  // records, crosses 75%
                ("t", 80, 0, "k", reordered, true),  // replay: metadata is the same object
                ("t", 80, 0, "k", details, false),  // replay: the check is not part of the request
                ("t", 81, 0, "k", details, true),  // conflict: prompt tokens
                ("u", 80, 0, "k", details, true),  // conflict: thread
                ("t", 80, 0, "k", try UsageDetails(agentID: "b", model: "m", metadataJSON: details.metadataJSON), true),
                ("t", 15, 0, "k2", .none, true),  // records, crosses 90% and 95%
            ]
            func answer(_ result: ConsumeResult) -> String {
                "\(result.budget) \(result.crossedThresholds) replay=\(result.isReplay) key=\(result.event.idempotencyKey ?? "-")"
            }
            for (index, call) in calls.enumerated() {
                let left = await outcome {
                    answer(try sqlite.consume(call.0, promptTokens: call.1, completionTokens: call.2, idempotencyKey: call.3, usage: call.4, checked: call.5))
                }
                let right = await outcome {
                    answer(try await postgres.consume(call.0, promptTokens: call.1, completionTokens: call.2, idempotencyKey: call.3, usage: call.4, checked: call.5))
                }
                #expect(left.replacingOccurrences(of: #"event \d+"#, with: "event N", options: .regularExpression)
                    == right.replacingOccurrences(of: #"event \d+"#, with: "event N", options: .regularExpression), "call \(index)")
                clock.advance(microseconds: 10)
            }
            #expect(try sqlite.cleanupThread("t") != nil)
            #expect(try await postgres.cleanupThread("t") != nil)
            try sqlite.consume("t", promptTokens: 1)
            try await postgres.consume("t", promptTokens: 1)
            let left = await outcome { answer(try sqlite.consume("t", promptTokens: 80, idempotencyKey: "k", usage: details)) }
            let right = await outcome { answer(try await postgres.consume("t", promptTokens: 80, idempotencyKey: "k", usage: details)) }
            #expect(left == right)
            #expect(left.contains("replay=true"))
            #expect(left.contains("maxTokens: 100"))
        }
    }
}
