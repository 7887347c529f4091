import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import Testing

@Suite("PostgresLedger holds, settles and releases as the SQLite Ledger does")
struct PostgresReservationTests {
    @Test("reserve, settle, release, expiry and cleanup give the same answers on both stores")
    func holdsLikeSQLite() async throws {
        // Proves Ledger+Reservations' rules hold on PostgreSQL: every answer (values or errors,
        // as text, ids aside: each store numbers its events) is the same at the same clock readings.
        let clock = TestClock()
        let sqlite = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        defer { sqlite.close() }
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { postgres, _ in
            var mismatches: [String] = []
            var answers = 0
            func normalized(_ text: String) -> String {
                text.replacingOccurrences(of: #"(id: |event |reservation |with id: )\d+"#, with: "$1N", options: .regularExpression)
                    .replacingOccurrences(of: #"reservationID: Optional\(\d+\)"#, with: "reservationID: R", options: .regularExpression)
            }
            func step<A, B>(_ name: String, _ left: () throws -> A, _ right: () async throws -> B) async {
                let sqliteAnswer = normalized(await outcome { try left() })
                let postgresAnswer = normalized(await outcome { try await right() })
                if sqliteAnswer != postgresAnswer { mismatches.append("\(name):\n  sqlite   \(sqliteAnswer)\n  postgres \(postgresAnswer)") }
                answers += 1
                clock.advance(microseconds: 1_000)
            }
            func ids(_ left: () throws -> ReserveResult, _ right: () async throws -> ReserveResult) async throws -> (Int64, Int64) {
                let sqliteHold = try left()
                let postgresHold = try await right()
                #expect(normalized("\(sqliteHold)") == normalized("\(postgresHold)"))
                return (sqliteHold.reservation.id, postgresHold.reservation.id)
            }
            try sqlite.setLimit("t", maxTokens: 1_000)
            try await postgres.setLimit("t", maxTokens: 1_000)
            let details = try UsageDetails(agentID: "a", model: "gpt-4o", metadataJSON: #"{"org_id":"o"}"#)
            let first = try await ids(
                { try sqlite.reserve("t", tokens: 600, ttlSeconds: 60, usage: details) },
                { try await postgres.reserve("t", tokens: 600, ttlSeconds: 60, usage: details) })
            await step("a hold that does not fit", { try sqlite.reserve("t", tokens: 401) }, { try await postgres.reserve("t", tokens: 401) })
            await step("a check counts the hold", { try sqlite.checkBudget("t", estimatedTokens: 401) }, { try await postgres.checkBudget("t", estimatedTokens: 401) })
            await step("a checked consume counts it", { try sqlite.checkAndConsume("t", promptTokens: 401) }, { try await postgres.checkAndConsume("t", promptTokens: 401) })
            await step("holds", { try sqlite.holds("t") }, { try await postgres.holds("t") })
            await step("bad ttl", { try sqlite.reserve("t", tokens: 1, ttlSeconds: 0) }, { try await postgres.reserve("t", tokens: 1, ttlSeconds: 0) })
            await step(
                "settle", { try sqlite.settle(first.0, promptTokens: 500, completionTokens: 20, idempotencyKey: "s1", usage: details) },
                { try await postgres.settle(first.1, promptTokens: 500, completionTokens: 20, idempotencyKey: "s1", usage: details) })
            await step(
                "settle retried", { try sqlite.settle(first.0, promptTokens: 500, completionTokens: 20, idempotencyKey: "s1", usage: details) },
                { try await postgres.settle(first.1, promptTokens: 500, completionTokens: 20, idempotencyKey: "s1", usage: details) })
            await step("settle again", { try sqlite.settle(first.0, promptTokens: 1) }, { try await postgres.settle(first.1, promptTokens: 1) })
            await step("release a settled hold", { try sqlite.release(first.0) }, { try await postgres.release(first.1) })
            await step("unknown reservation", { try sqlite.release(999_999) }, { try await postgres.release(999_999) })
            let second = try await ids({ try sqlite.reserve("t", tokens: 100, ttlSeconds: 5) }, { try await postgres.reserve("t", tokens: 100, ttlSeconds: 5) })
            await step("release", { try sqlite.release(second.0) }, { try await postgres.release(second.1) })
            await step("release again", { try sqlite.release(second.0) }, { try await postgres.release(second.1) })
            let third = try await ids({ try sqlite.reserve("t", tokens: 300, ttlSeconds: 1) }, { try await postgres.reserve("t", tokens: 300, ttlSeconds: 1) })
            clock.advance(microseconds: 2_000_000)
            await step("an expired hold no longer counts", { try sqlite.usage("t") }, { try await postgres.usage("t") })
            await step("a consume records the expiry", { try sqlite.consume("t", promptTokens: 1).budget }, { try await postgres.consume("t", promptTokens: 1).budget })
            await step("release after expiry", { try sqlite.release(third.0) }, { try await postgres.release(third.1) })
            await step("settle after expiry", { try sqlite.settle(third.0, promptTokens: 10) }, { try await postgres.settle(third.1, promptTokens: 10) })
            let fourth = try await ids({ try sqlite.reserve("t", tokens: 10) }, { try await postgres.reserve("t", tokens: 10) })
            await step("cleanup", { try sqlite.cleanupThread("t") }, { try await postgres.cleanupThread("t") })
            await step("settle after cleanup", { try sqlite.settle(fourth.0, promptTokens: 1) }, { try await postgres.settle(fourth.1, promptTokens: 1) })
            await step("no holds left", { try sqlite.holds() }, { try await postgres.holds() })
            await step("totals", { try sqlite.usageOverview(.allTime).totals }, { try await postgres.usageTotals(.allTime) })
            #expect(mismatches.isEmpty, "\(mismatches.joined(separator: "\n"))")
            #expect(answers == 20)
        }
    }
}
