import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import PostgresNIO
import Testing

/// A thread's refusal events on PostgreSQL (migration 0009), as SQLite's 0011 records them.
@Suite("Thread refusals on PostgreSQL, once per window as on SQLite")
struct PostgresRefusalTests {
    /// An event as both stores can compare it: what it did, not the id each store drew.
    private static func line(_ event: LedgerEvent) -> String {
        "\(event.kind) \(event.threadID ?? "-") used \(event.tokensUsed.map(String.init) ?? "-") max \(event.maxTokens.map(String.init) ?? "-")"
    }

    @Test("the same refused calls record the same refusal events on both stores: one per thread window")
    func refusalsLikeSQLite() async throws {
        // Proves: a refused checked consume or hold records one refusal event per thread window
        // on PostgreSQL exactly as on SQLite (the thread's total and max then), a second refusal
        // in the window records nothing, a reset opens a new window, a refused call on a thread
        // that is not open records once without opening it, and a cleanup ends the window.
        // Fails if the store did not record thread refusals, or recorded every one.
        let clock = TestClock()
        let sqlite = try Ledger.inMemory(maxTokensPerThread: 10, configuration: Ledger.Configuration(clock: clock.read))
        defer { sqlite.close() }
        try await withPostgresLedger(maxTokensPerThread: 10, configuration: .init(clock: clock.read)) { postgres, _ in
            let steps = ParitySteps(clock: clock)
            await steps.step("limit", { try sqlite.setLimit("t", maxTokens: 100) }, { try await postgres.setLimit("t", maxTokens: 100) })
            await steps.step("fits", { try sqlite.checkAndConsume("t", promptTokens: 90).budget }, { try await postgres.checkAndConsume("t", promptTokens: 90).budget })
            for attempt in 0..<2 {
                await steps.step("refused \(attempt)", { try sqlite.checkAndConsume("t", promptTokens: 20) }, { try await postgres.checkAndConsume("t", promptTokens: 20) })
            }
            await steps.step("hold refused", { try sqlite.reserve("t", tokens: 20) }, { try await postgres.reserve("t", tokens: 20) })
            await steps.step("reset", { try sqlite.resetThread("t") }, { try await postgres.resetThread("t") })
            await steps.step("fills", { try sqlite.checkAndConsume("t", promptTokens: 100).budget }, { try await postgres.checkAndConsume("t", promptTokens: 100).budget })
            await steps.step("hold refused after reset", { try sqlite.reserve("t", tokens: 1) }, { try await postgres.reserve("t", tokens: 1) })
            await steps.step("new thread refused", { try sqlite.checkAndConsume("new", promptTokens: 11) }, { try await postgres.checkAndConsume("new", promptTokens: 11) })
            await steps.step("new thread refused again", { try sqlite.reserve("new", tokens: 11) }, { try await postgres.reserve("new", tokens: 11) })
            await steps.step("not opened", { try sqlite.hasBudget("new") }, { try await postgres.hasBudget("new") })
            await steps.step("cleanup", { try sqlite.cleanupThread("t") }, { try await postgres.cleanupThread("t") })
            await steps.step("refused after cleanup", { try sqlite.checkAndConsume("t", promptTokens: 11) }, { try await postgres.checkAndConsume("t", promptTokens: 11) })
            let mismatches = steps.steps.filter { $0.sqlite != $0.postgres }
            #expect(mismatches.isEmpty, "\(mismatches.map { "\($0.name):\n  sqlite   \($0.sqlite)\n  postgres \($0.postgres)" }.joined(separator: "\n"))")

            let sqliteEvents = try sqlite.events(after: 0, limit: 1_000).events.map(Self.line)
            let postgresEvents = try await postgres.events(after: 0, limit: 1_000).events.map(Self.line)
            #expect(sqliteEvents == postgresEvents)
            #expect(
                postgresEvents.filter { $0.hasPrefix("refusal") } == [
                    "refusal t used 90 max 100", "refusal t used 100 max 100", "refusal new used 0 max 10",
                    "refusal t used 0 max 10",
                ])
            #expect(try sqlite.verify().problems == [])
            #expect(try await postgres.verify().problems == [])
        }
    }

    @Test("verify on PostgreSQL names a damaged thread_refusals row")
    func verifyChecksThreadRefusals() async throws {
        // Proves verify recomputes thread_refusals from the events: a row moved to another
        // window, or removed, is reported; fails if verify left the table out.
        try await withPostgresLedger { ledger, url in
            try await ledger.setLimit("t", maxTokens: 10)
            await #expect(throws: BudgetExhaustedError.self) { try await ledger.checkAndConsume("t", promptTokens: 11) }
            #expect(try await ledger.verify().problems == [])
            try await withDatabase(url) { session in
                try await session.query("UPDATE thread_refusals SET window_event_id = window_event_id + 1000")
            }
            let moved = try await ledger.verify().problems
            #expect(moved.contains("thread_refusals: row t differs from the events"), "\(moved)")
            try await withDatabase(url) { session in try await session.query("DELETE FROM thread_refusals") }
            let missing = try await ledger.verify().problems
            #expect(missing.contains("thread_refusals: row t that the events imply is missing or different"), "\(missing)")
        }
    }
}
