import BudgetLedger
import Foundation
import LedgerSQLite
import Synchronization
import Testing

/// UTC microseconds of a calendar time.
private func utc(_ year: Int, _ month: Int, _ day: Int, _ hour: Int = 0, _ minute: Int = 0, _ second: Int = 0) -> Int64 {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone(identifier: "UTC")!
    let date = calendar.date(from: DateComponents(year: year, month: month, day: day, hour: hour, minute: minute, second: second))!
    return Int64(date.timeIntervalSince1970) * 1_000_000
}

private let acme = try! BudgetScope(parsing: "org:acme")
private let acmeMetadata = #"{"org_id":"acme"}"#

@Suite("Scope budgets: one decision for every budget a call falls under")
struct ScopeBudgetTests {
    @Test("a scope whose id starts with a combining mark or an emoji modifier parses, and round-trips in the ledger")
    func scopeIDsStartingWithAnExtendingScalarParse() throws {
        // Proves the colon is found by Unicode scalar: ":🏻" and ":\u{301}" are one Character each,
        // so a Character search refused these schema-valid scopes (the REST fuzzer's case).
        for (text, id) in [("org:🏻$LĘ¬", "🏻$LĘ¬"), ("agent:\u{301}a", "\u{301}a"), ("user:x:y", "x:y")] {
            let scope = try BudgetScope(parsing: text)
            #expect(scope.id == id && scope.description == text, "\(text)")
        }
        let ledger = try Ledger.inMemory()
        let scope = try BudgetScope(parsing: "org:🏻$LĘ¬")
        try ledger.setBudget(scope, maxTokens: 10)
        #expect(try ledger.budget(scope: scope)?.scope == scope)
        #expect(try ledger.budgets().map(\.scope) == [scope])
    }

    @Test("windows are UTC calendar days, ISO weeks from Monday and months, in Swift as in SQL")
    func windowsMatchTheSQLArithmetic() throws {
        // Proves BudgetPeriod and migration 0010's SQL give the same window at every boundary:
        // day, week (ISO, Monday), month and year ends, and a leap day.
        let times: [Int64] = [
            utc(2024, 2, 28, 23, 59, 59), utc(2024, 2, 29), utc(2024, 2, 29, 23, 59, 59), utc(2024, 3, 1),
            utc(2026, 12, 31, 23, 59, 59), utc(2027, 1, 1), utc(2026, 11, 29, 23, 59, 59), utc(2026, 11, 30),
            utc(2026, 12, 6, 12), utc(2027, 1, 4) - 1, utc(2000, 2, 29, 6), utc(2100, 3, 1), 0, 1, 86_400_000_000 * 4,
        ]
        let connection = try Connection(path: ":memory:")
        defer { connection.close() }
        for time in times {
            let sql = try connection.prepare(
                """
                SELECT ?1 - ?1 % 86400000000, (?1 / 86400000000 - (?1 / 86400000000 + 3) % 7) * 86400000000,
                       CAST(strftime('%s', ?1 / 1000000, 'unixepoch', 'start of month') AS INTEGER) * 1000000,
                       CAST(strftime('%s', ?1 / 1000000, 'unixepoch', 'start of month', '+1 month') AS INTEGER) * 1000000
                """
            ).fetchOne([time]) { row in try [row[0], row[1], row[2], row[3]] as [Int64] }
            let day = BudgetPeriod.day.window(containing: time)
            let week = BudgetPeriod.week.window(containing: time)
            let month = BudgetPeriod.month.window(containing: time)
            #expect(sql == [day.startMicroseconds, week.startMicroseconds, month.startMicroseconds, month.endMicroseconds!],
                    "at \(time)")
        }
        // The leap day is its own day, inside February; 2026-11-30 is a Monday.
        #expect(BudgetPeriod.day.window(containing: utc(2024, 2, 29, 13)) == BudgetWindow(
            startMicroseconds: utc(2024, 2, 29), endMicroseconds: utc(2024, 3, 1)))
        #expect(BudgetPeriod.month.window(containing: utc(2024, 2, 29, 13)).endMicroseconds == utc(2024, 3, 1))
        #expect(BudgetPeriod.week.window(containing: utc(2026, 12, 6, 23)) == BudgetWindow(
            startMicroseconds: utc(2026, 11, 30), endMicroseconds: utc(2026, 12, 7)))
        #expect(BudgetPeriod.none.window(containing: utc(2026, 1, 1)) == BudgetWindow(startMicroseconds: 0, endMicroseconds: nil))
    }

    @Test("a dollar budget refuses the call that would pass it, names the scope and window, and records only its refusal")
    func aDollarBudgetRefusesExactly() throws {
        // gpt-4o-mini: 150 nano-dollars per prompt token. $0.001 = 1,000,000 nano-dollars.
        let clock = ManualClock()
        clock.set(microseconds: utc(2026, 12, 5, 12))
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        defer { ledger.close() }
        try ledger.setBudget(acme, period: .month, maxNanodollars: 1_000_000)
        let usage = try UsageDetails(model: "gpt-4o-mini", metadataJSON: acmeMetadata)
        // 6,000 tokens cost 900,000; the next 1,000 (150,000) would pass 1,000,000.
        try ledger.checkAndConsume("t1", promptTokens: 6_000, usage: usage)
        let eventsBefore = try ledger.events(after: 0, limit: 100).events.count
        #expect {
            try ledger.checkAndConsume("t2", promptTokens: 1_000, usage: usage)
        } throws: { error in
            guard let refusal = error as? BudgetExhaustedError else { return false }
            return refusal.scope == acme && refusal.unit == .nanodollars && refusal.used == 900_000
                && refusal.maxTokens == 1_000_000 && refusal.requestedTokens == 150_000
                && refusal.window == BudgetWindow(startMicroseconds: utc(2026, 12, 1), endMicroseconds: utc(2027, 1, 1))
                && refusal.description.contains("budget exhausted") && refusal.description.contains("org:acme")
        }
        // Nothing of the call is recorded: only the scope window's refusal event (migration 0011).
        #expect(try ledger.events(after: 0, limit: 100).events.dropFirst(eventsBefore).map(\.kind) == ["refusal"])
        // What still fits is accepted: 666 tokens cost 99,900.
        try ledger.checkAndConsume("t2", promptTokens: 666, usage: usage)
        let budget = try #require(try ledger.budget(scope: acme))
        #expect(budget.spentNanodollars == 999_900)
        #expect(budget.spentTokens == 6_666)
        #expect(budget.requestCount == 2)
        #expect(budget.remainingNanodollars == 100)
        // Calls of another org, and plain consumes, are not refused by acme's budget.
        try ledger.checkAndConsume("t3", promptTokens: 1_000, usage: try UsageDetails(model: "gpt-4o-mini", metadataJSON: #"{"org_id":"other"}"#))
        try ledger.consume("t4", promptTokens: 1_000, usage: usage)
        #expect(try ledger.budget(scope: acme)?.spentNanodollars == 1_149_900)
        #expect(try ledger.verify().problems == [])
    }

    @Test("an unpriced model, or no model, under a dollar budget is refused naming the model")
    func unpricedUnderADollarBudgetIsRefused() throws {
        let ledger = try Ledger.inMemory()
        defer { ledger.close() }
        try ledger.setBudget(.global, maxNanodollars: 1_000_000_000)
        #expect {
            try ledger.checkAndConsume("t", promptTokens: 1, usage: UsageDetails(model: "house-model-7"))
        } throws: { error in
            (error as? BudgetExhaustedError)?.unpricedModel == "house-model-7"
                && "\(error)".contains("house-model-7 has no price")
        }
        #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("t", promptTokens: 1) }
        #expect(throws: BudgetExhaustedError.self) { try ledger.reserve("t", tokens: 1) }
        // A token budget alone needs no price.
        try ledger.setBudget(.global, maxTokens: 10)
        try ledger.checkAndConsume("t", promptTokens: 10, usage: UsageDetails(model: "house-model-7"))
        #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("t", promptTokens: 0) }
    }

    @Test("a day budget starts at zero exactly at UTC midnight, across a restart, with no job")
    func aNewWindowStartsAtZeroAtTheBoundary() throws {
        let folder = try TemporaryFolder()
        let path = folder.path("ledger.db")
        let clock = ManualClock()
        clock.set(microseconds: utc(2024, 2, 28, 23, 59, 59))
        let agent = try BudgetScope(parsing: "agent:planner")
        let usage = UsageDetails(agentID: "planner")
        do {
            let ledger = try Ledger(path: path, configuration: Ledger.Configuration(clock: clock.read))
            defer { ledger.close() }
            try ledger.setBudget(agent, period: .day, maxTokens: 100)
            try ledger.checkAndConsume("t", promptTokens: 100, usage: usage)
            #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("t", promptTokens: 1, usage: usage) }
        }
        // The leap day: a new window, in a new process's view of the file.
        clock.set(microseconds: utc(2024, 2, 29))
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(clock: clock.read))
        defer { ledger.close() }
        let budget = try #require(try ledger.budget(scope: agent))
        #expect(budget.spentTokens == 0)
        #expect(budget.window == BudgetWindow(startMicroseconds: utc(2024, 2, 29), endMicroseconds: utc(2024, 3, 1)))
        try ledger.checkAndConsume("t", promptTokens: 100, usage: usage)
        #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("t", promptTokens: 1, usage: usage) }
        // Monthly and weekly windows roll at month, year and ISO-week ends.
        try ledger.setBudget(agent, period: .month, maxTokens: 1_000)
        #expect(try ledger.budget(scope: agent)?.spentTokens == 200, "the month's spend so far counts when it is set")
        clock.set(microseconds: utc(2024, 3, 1))
        #expect(try ledger.budget(scope: agent)?.spentTokens == 0)
        try ledger.setBudget(agent, period: .week, maxTokens: 1_000)
        try ledger.consume("t", promptTokens: 5, usage: usage)
        clock.set(microseconds: utc(2024, 3, 3, 23, 59, 59))  // a Sunday: the same ISO week
        #expect(try ledger.budget(scope: agent)?.spentTokens == 205, "the week began on Monday 26 February")
        clock.set(microseconds: utc(2024, 3, 4))  // Monday
        #expect(try ledger.budget(scope: agent)?.spentTokens == 0)
        try ledger.setBudget(agent, period: .month, maxTokens: 1_000)
        clock.set(microseconds: utc(2024, 12, 31, 23, 59, 59))
        try ledger.consume("t", promptTokens: 7, usage: usage)
        #expect(try ledger.budget(scope: agent)?.spentTokens == 7)
        clock.set(microseconds: utc(2025, 1, 1))
        #expect(try ledger.budget(scope: agent)?.spentTokens == 0)
        try ledger.consume("t", promptTokens: 3, usage: usage)
        #expect(try ledger.budget(scope: agent)?.spentTokens == 3)
        #expect(try ledger.verify().problems == [])
    }

    @Test("holds count against every scope they fall under, and a settle replaces the hold")
    func holdsCountAgainstScopes() throws {
        let ledger = try Ledger.inMemory()
        defer { ledger.close() }
        let model = try BudgetScope(parsing: "model:GPT-4o-mini")
        #expect(model.description == "model:gpt-4o-mini")
        try ledger.setBudget(model, maxTokens: 1_000)
        let usage = UsageDetails(model: " gpt-4o-MINI ")
        let hold = try ledger.reserve("a", tokens: 800, usage: usage)
        #expect(try ledger.budget(scope: model)?.heldTokens == 800)
        #expect(try ledger.budget(scope: model)?.heldNanodollars == 800 * 600, "a hold counts at the higher rate")
        #expect(throws: BudgetExhaustedError.self) { try ledger.reserve("b", tokens: 201, usage: usage) }
        #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("b", promptTokens: 201, usage: usage) }
        try ledger.checkAndConsume("b", promptTokens: 200, usage: usage)
        try ledger.settle(hold.reservation.id, promptTokens: 300, usage: usage)
        let budget = try #require(try ledger.budget(scope: model))
        #expect(budget.heldTokens == 0)
        #expect(budget.spentTokens == 500)
        #expect(try ledger.verify().problems == [])
    }

    @Test("thresholds fire once per scope window, as events, and re-arm when the budget changes")
    func scopeThresholdsFireOncePerWindow() throws {
        let clock = ManualClock()
        clock.set(microseconds: utc(2026, 12, 5, 12))
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        defer { ledger.close() }
        try ledger.setBudget(.global, period: .day, maxTokens: 100)
        #expect(try ledger.consume("t", promptTokens: 74).crossedScopeThresholds.isEmpty)
        let first = try ledger.consume("t", promptTokens: 17)
        #expect(first.crossedScopeThresholds.map(\.thresholdPercent) == [75, 90])
        #expect(first.crossedScopeThresholds.first?.scope == .global)
        #expect(first.crossedScopeThresholds.first?.tokensUsed == 91)
        #expect(try ledger.consume("t", promptTokens: 1).crossedScopeThresholds.isEmpty, "each fires once")
        // Raising the max re-arms what is no longer reached; reaching it again fires again.
        try ledger.setBudget(.global, period: .day, maxTokens: 1_000)
        #expect(try ledger.consume("t", promptTokens: 700).crossedScopeThresholds.map(\.thresholdPercent) == [75])
        // A new day is a new window: the thresholds fire again there.
        clock.set(microseconds: utc(2026, 12, 6))
        #expect(try ledger.consume("t", promptTokens: 960).crossedScopeThresholds.map(\.thresholdPercent) == [75, 90, 95])
        #expect(try ledger.verify().problems == [])
    }

    @Test("a budget is set, changed and removed as events; bad scopes and figures are refused naming the field")
    func budgetsAreEventsAndBadInputIsRefused() throws {
        let ledger = try Ledger.inMemory()
        defer { ledger.close() }
        try ledger.setBudget(acme, period: .month, maxTokens: 10, maxNanodollars: 5)
        try ledger.setBudget(acme, period: .day, maxTokens: 20)
        try ledger.removeBudget(acme)
        #expect(try ledger.budgets().isEmpty)
        let kinds = try ledger.events(after: 0, limit: 10).events.map(\.kind)
        #expect(kinds == ["budget", "budget", "budget_remove"])
        #expect(throws: LedgerError.self) { try ledger.removeBudget(acme) }
        for bad in ["", "org:", "team:x", "global:x", "org", "ORG:x"] {
            #expect(throws: LedgerError.self, "\(bad.debugDescription)") { try BudgetScope(parsing: bad) }
        }
        #expect(throws: LedgerError.self) { try ledger.setBudget(acme) }
        #expect(throws: LedgerError.self) { try ledger.setBudget(acme, maxTokens: -1) }
        #expect(throws: LedgerError.self) { try ledger.setBudget(acme, maxTokens: LedgerLimits.maxTokensMax + 1) }
        #expect(throws: LedgerError.self) { try ledger.setBudget(acme, maxNanodollars: LedgerLimits.budgetNanodollarsMax + 1) }
        try ledger.setBudget(acme, maxNanodollars: LedgerLimits.budgetNanodollarsMax)
        #expect(try ledger.events(after: 0, limit: 10).events.count == 4)
    }

    @Test("the budget_windows view and a raw-SQL writer agree with the ledger, and verify catches a damaged row")
    func theViewAndVerifyAgree() throws {
        let folder = try TemporaryFolder()
        let path = folder.path("ledger.db")
        let ledger = try Ledger(path: path)
        defer { ledger.close() }
        try ledger.setBudget(acme, period: .month, maxTokens: 1_000, maxNanodollars: 10_000_000)
        try ledger.consume("t", promptTokens: 100, usage: try UsageDetails(model: "gpt-4o-mini", metadataJSON: acmeMetadata))
        let raw = try Connection(path: path)
        defer { raw.close() }
        // A writer using plain SQL goes through the same triggers.
        try raw.execute(sql: """
            INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, org_id, model, cost_nanos)
            VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER), 'consume', 't', 10, 'acme',
                    'gpt-4o-mini', 1500)
            """)
        let view = try raw.prepare(
            "SELECT scope, spent_tokens, spent_cost_nanos, remaining_tokens, percent_used, is_exhausted FROM budget_windows"
        ).fetchOne { row in
            (try row[0] as String, try row[1] as Int64, try row[2] as Int64, try row[3] as Int64, try row[4] as Double,
             try row[5] as Int64)
        }
        #expect(view?.0 == "org:acme")
        #expect(view?.1 == 110)
        #expect(view?.2 == 16_500)
        #expect(view?.3 == 890)
        #expect(view?.4 == 11.0)
        #expect(view?.5 == 0)
        #expect(try ledger.budget(scope: acme)?.spentTokens == 110)
        #expect(try ledger.verify().problems == [])
        try raw.execute(sql: "UPDATE scope_budgets SET spent_tokens = 0")
        #expect(try ledger.verify().problems.contains { $0.contains("scope_budgets: row org:acme") })
    }

    @Test("threads on many OS threads never push an org past its dollar budget: exactly the calls that fit succeed")
    func concurrentCallsNeverOvershootAScope() throws {
        let folder = try TemporaryFolder()
        let ledger = try Ledger(path: folder.path("ledger.db"))
        defer { ledger.close() }
        // 1,000 prompt tokens of gpt-4o-mini cost 150,000; $0.0100 allows exactly 66 of them.
        try ledger.setBudget(acme, period: .month, maxNanodollars: 10_000_000)
        let successes = Mutex(0)
        let usage = try UsageDetails(model: "gpt-4o-mini", metadataJSON: acmeMetadata)
        onThreads(16) { index in
            for call in 0..<10 {
                if (try? ledger.checkAndConsume("t\(index)-\(call % 3)", promptTokens: 1_000, usage: usage)) != nil {
                    successes.withLock { $0 += 1 }
                }
            }
        }
        #expect(successes.withLock { $0 } == 66)
        #expect(try ledger.budget(scope: acme)?.spentNanodollars == 66 * 150_000)
        #expect(try ledger.verify().problems == [])
    }
}
