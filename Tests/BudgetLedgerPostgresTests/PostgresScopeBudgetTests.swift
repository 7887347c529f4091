import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import LedgerSQLite
import PostgresNIO
import Testing

@Suite("Scope budgets on PostgreSQL, as on SQLite")
struct PostgresScopeBudgetTests {
    static let day: Int64 = 86_400_000_000

    /// Event ids differ between the stores (PostgreSQL draws them from a sequence and does not
    /// record a thread's refusal yet): they are left out of the comparison.
    static func normalized(_ text: String) -> String {
        text.replacingOccurrences(of: #"(setEventID: |id: |event |reservation |with id: )\d+"#, with: "$1N", options: .regularExpression)
            .replacingOccurrences(of: #"reservationID: Optional\(\d+\)"#, with: "reservationID: R", options: .regularExpression)
    }

    @Test("the same budget calls answer the same on both stores: windows at day, week and month ends, dollar budgets, holds")
    func budgetsLikeSQLite() async throws {
        // Proves Ledger+ScopeBudgets' rules hold on PostgreSQL: set, list, show, checks, refusals,
        // thresholds, windows that start at zero when the clock passes a day, an ISO week's and a
        // month's end, unpriced calls refused under a dollar budget, holds counting, removal:
        // every answer as text (ids aside) and the scope events recorded are the same.
        let clock = TestClock()  // 2025-11-29T07:06:40Z, a Saturday
        let sqlite = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        defer { sqlite.close() }
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { postgres, _ in
            let steps = ParitySteps(clock: clock)
            try sqlite.setLimit("t", maxTokens: 10_000_000)
            try await postgres.setLimit("t", maxTokens: 10_000_000)
            let org = try BudgetScope(parsing: "org:acme")
            let bot = try BudgetScope(parsing: "agent:bot")
            let model = try BudgetScope(parsing: "model:GPT-4o")
            let acme = try UsageDetails(agentID: "planner", model: "gpt-4o", metadataJSON: #"{"org_id":"acme"}"#)
            let botCall = UsageDetails(agentID: "bot", model: "gpt-4o")
            try await setBudgets(steps, sqlite, postgres, org: org, bot: bot, model: model)
            await steps.step("a plain consume under the org", { try sqlite.consume("t", promptTokens: 300, usage: acme) }, { try await postgres.consume("t", promptTokens: 300, usage: acme) })
            await steps.step("crosses 75 %", { try sqlite.checkAndConsume("t", promptTokens: 500, usage: acme) }, { try await postgres.checkAndConsume("t", promptTokens: 500, usage: acme) })
            await steps.step("does not fit the org", { try sqlite.checkAndConsume("t", promptTokens: 300, usage: acme) }, { try await postgres.checkAndConsume("t", promptTokens: 300, usage: acme) })
            await steps.step("refused again (one refusal event a window)", { try sqlite.checkAndConsume("t", promptTokens: 300, usage: acme) }, { try await postgres.checkAndConsume("t", promptTokens: 300, usage: acme) })
            await steps.step("a hold under the org", { try sqlite.reserve("t", tokens: 150, usage: acme) }, { try await postgres.reserve("t", tokens: 150, usage: acme) })
            await steps.step("the hold counts", { try sqlite.budget(scope: org) }, { try await postgres.budget(scope: org) })
            await steps.step("a consume the hold leaves no room for", { try sqlite.checkAndConsume("t", promptTokens: 60, usage: acme) }, { try await postgres.checkAndConsume("t", promptTokens: 60, usage: acme) })
            await steps.step("a second hold that does not fit", { try sqlite.reserve("t", tokens: 100, usage: acme) }, { try await postgres.reserve("t", tokens: 100, usage: acme) })
            await steps.step("an unpriced model under a dollar budget", { try sqlite.checkAndConsume("t", promptTokens: 1, usage: UsageDetails(agentID: "bot", model: "mystery-1")) }, { try await postgres.checkAndConsume("t", promptTokens: 1, usage: UsageDetails(agentID: "bot", model: "mystery-1")) })
            await steps.step("no model under a dollar budget", { try sqlite.checkAndConsume("t", promptTokens: 1, usage: UsageDetails(agentID: "bot")) }, { try await postgres.checkAndConsume("t", promptTokens: 1, usage: UsageDetails(agentID: "bot")) })
            await steps.step("an unpriced hold under a dollar budget", { try sqlite.reserve("t", tokens: 1, usage: UsageDetails(agentID: "bot", model: "mystery-1")) }, { try await postgres.reserve("t", tokens: 1, usage: UsageDetails(agentID: "bot", model: "mystery-1")) })
            await steps.step("a priced call of the bot", { try sqlite.checkAndConsume("t", promptTokens: 1_000, usage: botCall) }, { try await postgres.checkAndConsume("t", promptTokens: 1_000, usage: botCall) })
            await steps.step("past the bot's dollars", { try sqlite.checkAndConsume("t", promptTokens: 1_000, usage: botCall) }, { try await postgres.checkAndConsume("t", promptTokens: 1_000, usage: botCall) })
            await steps.step("plain consume overshoots", { try sqlite.consume("t", promptTokens: 1_000, usage: botCall) }, { try await postgres.consume("t", promptTokens: 1_000, usage: botCall) })
            await steps.step("list", { try sqlite.budgets() }, { try await postgres.budgets() })
            try await passWindowEnds(steps, sqlite, postgres, clock: clock, org: org, acme: acme)
            await steps.step("remove", { try sqlite.removeBudget(org) }, { try await postgres.removeBudget(org) })
            await steps.step("remove again", { try sqlite.removeBudget(org) }, { try await postgres.removeBudget(org) })
            await steps.step("show a removed budget", { try sqlite.budget(scope: org) }, { try await postgres.budget(scope: org) })
            await steps.step("list at the end", { try sqlite.budgets() }, { try await postgres.budgets() })
            let mismatches = steps.steps.filter { Self.normalized($0.sqlite) != Self.normalized($0.postgres) }
            #expect(mismatches.isEmpty, "\(mismatches.map { "\($0.name):\n  sqlite   \($0.sqlite)\n  postgres \($0.postgres)" }.joined(separator: "\n"))")
            #expect(steps.steps.contains { $0.sqlite.contains("by scope org:acme") })
            #expect(steps.steps.contains { $0.sqlite.contains("has a dollar budget") })
            // The scope events (thresholds, refusals, budgets) are recorded alike.
            let sqliteEvents = try sqlite.events(after: 0, limit: 1_000).events.map(Self.scopeEventLine).filter { !$0.isEmpty }
            let postgresEvents = try await postgres.events(after: 0, limit: 1_000).events.map(Self.scopeEventLine).filter { !$0.isEmpty }
            #expect(sqliteEvents == postgresEvents)
            #expect(sqliteEvents.contains { $0.hasPrefix("scope_threshold org:acme") })
            #expect(sqliteEvents.filter { $0.hasPrefix("refusal org:acme") }.count == 1, "one a window: \(sqliteEvents)")
            #expect(sqliteEvents.filter { $0.hasPrefix("refusal agent:bot") }.count == 1, "\(sqliteEvents)")
            #expect(try sqlite.verify().problems == [])
            #expect(try await postgres.verify().problems == [])
        }
    }

    private func setBudgets(
        _ steps: ParitySteps, _ sqlite: Ledger, _ postgres: PostgresLedger, org: BudgetScope, bot: BudgetScope,
        model: BudgetScope
    ) async throws {
        await steps.step("no max", { try sqlite.setBudget(org, period: .day) }, { try await postgres.setBudget(org, period: .day) })
        await steps.step("max out of range", { try sqlite.setBudget(org, maxNanodollars: -1) }, { try await postgres.setBudget(org, maxNanodollars: -1) })
        await steps.step("remove a budget never set", { try sqlite.removeBudget(org) }, { try await postgres.removeBudget(org) })
        await steps.step("show a budget never set", { try sqlite.budget(scope: org) }, { try await postgres.budget(scope: org) })
        await steps.step("org per day", { try sqlite.setBudget(org, period: .day, maxTokens: 1_000) }, { try await postgres.setBudget(org, period: .day, maxTokens: 1_000) })
        await steps.step("global per week", { try sqlite.setBudget(.global, period: .week, maxTokens: 1_000_000) }, { try await postgres.setBudget(.global, period: .week, maxTokens: 1_000_000) })
        await steps.step("model per month, both units", { try sqlite.setBudget(model, period: .month, maxTokens: 1_000_000, maxNanodollars: 100_000_000_000) }, { try await postgres.setBudget(model, period: .month, maxTokens: 1_000_000, maxNanodollars: 100_000_000_000) })
        await steps.step("the bot in dollars", { try sqlite.setBudget(bot, maxNanodollars: 3_000_000) }, { try await postgres.setBudget(bot, maxNanodollars: 3_000_000) })
    }

    /// Moves the shared clock past the day's end (a Saturday), the week's (Sunday night) and
    /// the month's (November's last day), checking that each window starts at zero.
    private func passWindowEnds(
        _ steps: ParitySteps, _ sqlite: Ledger, _ postgres: PostgresLedger, clock: TestClock, org: BudgetScope,
        acme: UsageDetails
    ) async throws {
        let now = clock.read()
        clock.advance(microseconds: (now / Self.day + 1) * Self.day - now - 1_500)  // 1.5 ms before midnight
        await steps.step("the day's last call", { try sqlite.checkAndConsume("t", promptTokens: 10, usage: acme) }, { try await postgres.checkAndConsume("t", promptTokens: 10, usage: acme) })
        await steps.step("a new day: the org's window is empty", { try sqlite.budgets() }, { try await postgres.budgets() })
        await steps.step("the new day's first call", { try sqlite.checkAndConsume("t", promptTokens: 900, usage: acme) }, { try await postgres.checkAndConsume("t", promptTokens: 900, usage: acme) })
        // Sunday 2025-11-30: its end is the ISO week's and November's.
        let sunday = clock.read()
        clock.advance(microseconds: (sunday / Self.day + 1) * Self.day - sunday - 1_500)
        await steps.step("the week's last call", { try sqlite.consume("t", promptTokens: 7, usage: acme) }, { try await postgres.consume("t", promptTokens: 7, usage: acme) })
        await steps.step("the week and the month before their end", { try sqlite.budgets() }, { try await postgres.budgets() })
        clock.advance(microseconds: 3_000)
        await steps.step("Monday 1 December: new week, month and day", { try sqlite.budgets() }, { try await postgres.budgets() })
        await steps.step("the month's first call", { try sqlite.checkAndConsume("t", promptTokens: 20, usage: acme) }, { try await postgres.checkAndConsume("t", promptTokens: 20, usage: acme) })
        await steps.step("a budget changed mid-window counts the window's spend", { try sqlite.setBudget(org, period: .month, maxTokens: 25) }, { try await postgres.setBudget(org, period: .month, maxTokens: 25) })
        await steps.step("show", { try sqlite.budget(scope: org) }, { try await postgres.budget(scope: org) })
    }

    /// A scope event's fields that both stores must record alike (no ids); empty for other kinds.
    static func scopeEventLine(_ event: LedgerEvent) -> String {
        guard ["budget", "budget_remove", "scope_threshold", "refusal"].contains(event.kind) else { return "" }
        return [
            event.kind, event.scope ?? "-", event.period ?? "-", "\(event.timestampMicroseconds)",
            "\(event.windowStartMicroseconds ?? -1)", "\(event.thresholdPercent ?? -1)", "\(event.tokensUsed ?? -1)",
            "\(event.nanodollarsUsed ?? -1)", "\(event.maxTokens ?? -1)", "\(event.maxNanodollars ?? -1)",
        ].joined(separator: " ")
    }

    @Test("16 tasks on two ledgers (two servers) making 160 checked consumes under an org dollar budget: exactly 50 succeed")
    func orgDollarBudgetIsExact() async throws {
        // Proves the scope row's lock makes a scope exact across connections and servers: the
        // calls are spread over 8 threads, so the threads' own locks do not serialize them; only
        // the scope row does. 50 calls of 100 gpt-4o prompt tokens (250,000 nano-dollars each)
        // fit a budget of 12,500,000; the other 110 are refused naming the scope, one refusal
        // event is recorded for the window, the budget and the events both say exactly the max,
        // and verify agrees.
        try await withPostgresLedger { first, url in
            let second = try await PostgresLedger(url: url)
            let org = try BudgetScope(parsing: "org:acme")
            try await first.setBudget(org, period: .month, maxNanodollars: 12_500_000)
            let usage = try UsageDetails(agentID: "a", model: "gpt-4o", metadataJSON: #"{"org_id":"acme"}"#)
            let final = try await withThrowingTaskGroup(of: (Int, Int, Int).self) { group in
                for task in 0..<16 {
                    let ledger = task % 2 == 0 ? first : second
                    group.addTask {
                        var counts = (0, 0, 0)  // succeeded, refused by the org, anything else
                        for call in 0..<10 {
                            do {
                                _ = try await ledger.checkAndConsume("t\((task + call) % 8)", promptTokens: 100, usage: usage)
                                counts.0 += 1
                            } catch let refusal as BudgetExhaustedError where refusal.scope == org {
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
            #expect(final.0 == 50)
            #expect(final.1 == 110)
            #expect(final.2 == 0)
            let budget = try #require(try await first.budget(scope: org))
            #expect(budget.spentNanodollars == 12_500_000)
            #expect(budget.requestCount == 50)
            let events = try await first.events(after: 0, limit: 1_000).events
            #expect(events.filter { $0.kind == "consume" }.compactMap(\.costNanodollars).reduce(0, +) == 12_500_000)
            #expect(events.filter { $0.kind == "refusal" && $0.scope == org.description }.count == 1)
            #expect(try await first.verify().problems == [])
        }
    }

    @Test("holds and checked consumes of many threads racing under one org token budget never pass it")
    func holdsAndConsumesRaceExactly() async throws {
        // Proves holds take the same scope lock as checked consumes: 12 tasks alternating holds of
        // 30 and checked consumes of 20 under an org budget of 600 tokens end with spent + held
        // at most 600, each success counted, and verify passes.
        try await withPostgresLedger { ledger, _ in
            let org = try BudgetScope(parsing: "org:o")
            try await ledger.setBudget(org, maxTokens: 600)
            let usage = try UsageDetails(metadataJSON: #"{"org_id":"o"}"#)
            let taken = try await withThrowingTaskGroup(of: Int64.self) { group in
                for task in 0..<12 {
                    group.addTask {
                        var taken: Int64 = 0
                        for call in 0..<10 {
                            do {
                                if (task + call) % 2 == 0 {
                                    _ = try await ledger.reserve("h\(task)", tokens: 30, ttlSeconds: 600, usage: usage)
                                    taken += 30
                                } else {
                                    _ = try await ledger.checkAndConsume("c\(task)", promptTokens: 20, usage: usage)
                                    taken += 20
                                }
                            } catch is BudgetExhaustedError {}
                        }
                        return taken
                    }
                }
                return try await group.reduce(0, +)
            }
            let budget = try #require(try await ledger.budget(scope: org))
            #expect(budget.spentTokens + budget.heldTokens == taken)
            #expect(budget.spentTokens + budget.heldTokens <= 600)
            #expect(budget.spentTokens + budget.heldTokens > 560, "the budget is filled, not left mostly empty")
            #expect(try await ledger.verify().problems == [])
        }
    }

    @Test("a budget removed and set again and again while 8 tasks consume under it counts every consume once")
    func settingBudgetsRacesConsumesExactly() async throws {
        // Proves the usage-window lock orders budget events with consumes: a budget event sums
        // its window's spend from the rollups while no consume is in flight, and every later
        // consume adds itself to the row, so the row ends equal to the events' sum and verify
        // (which replays them in id order) agrees. Without the lock a consume committing while
        // the budget summed would be missed or counted twice.
        try await withPostgresLedger { ledger, _ in
            let org = try BudgetScope(parsing: "org:o")
            let usage = try UsageDetails(model: "gpt-4o", metadataJSON: #"{"org_id":"o"}"#)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<8 {
                    group.addTask {
                        for _ in 0..<20 { _ = try await ledger.consume("t\(task)", promptTokens: 10, usage: usage) }
                    }
                }
                group.addTask {
                    // Removed and set again: a new row each time, which no consume in flight has
                    // locked (changing an existing row would wait for their row locks anyway).
                    for round in 0..<20 {
                        try await ledger.setBudget(org, period: .month, maxTokens: 1_000_000 + Int64(round))
                        if round < 19 { try await ledger.removeBudget(org) }
                    }
                }
                try await group.waitForAll()
            }
            let budget = try #require(try await ledger.budget(scope: org))
            #expect(budget.spentTokens == 8 * 20 * 10)
            #expect(budget.requestCount == 160)
            #expect(budget.spentNanodollars == 160 * 25_000)
            #expect(try await ledger.verify().problems == [])
        }
    }

    @Test("verify on PostgreSQL names a damaged scope_budgets, scope_thresholds or scope_refusals row")
    func verifyFindsDamagedScopeRows() async throws {
        // Proves verify recomputes the scope tables from the events rather than trusting them.
        try await withPostgresLedger { ledger, url in
            let org = try BudgetScope(parsing: "org:acme")
            try await ledger.setBudget(org, period: .day, maxTokens: 100)
            let usage = try UsageDetails(metadataJSON: #"{"org_id":"acme"}"#)
            _ = try await ledger.checkAndConsume("t", promptTokens: 80, usage: usage)
            _ = try? await ledger.checkAndConsume("t", promptTokens: 80, usage: usage)
            #expect(try await ledger.verify().problems == [])
            try await withDatabase(url) { client in
                try await client.query("UPDATE scope_budgets SET spent_tokens = spent_tokens - 1 WHERE scope = 'org:acme'")
                try await client.query("DELETE FROM scope_thresholds WHERE threshold_percent = 75")
                try await client.query("UPDATE scope_refusals SET window_start_us = 0")
            }
            let problems = try await ledger.verify().problems
            #expect(problems.contains("scope_budgets: row org:acme differs from the events"), "\(problems)")
            #expect(problems.contains { $0.hasPrefix("scope_thresholds: row org:acme window ") && $0.contains("75% that the events imply") }, "\(problems)")
            #expect(problems.contains("scope_refusals: row org:acme differs from the events"), "\(problems)")
        }
    }

    @Test("budget_windows reads the budgets and their holds on PostgreSQL as on SQLite")
    func budgetWindowsViewMatchesSQLite() async throws {
        // Proves the view has SQLite's rows, not only its columns: the same calls at the real
        // time, then the same SELECT on both, compared row by row.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pg-windows-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("ledger.db").path
        let sqlite = try Ledger(path: path)
        defer { sqlite.close() }
        try await withPostgresLedger { postgres, url in
            let usage = try UsageDetails(agentID: "a", model: "gpt-4o", metadataJSON: #"{"org_id":"o","user_id":"u"}"#)
            for scope in ["global", "org:o", "user:u", "agent:a", "model:gpt-4o"] {
                try sqlite.setBudget(try BudgetScope(parsing: scope), period: .day, maxTokens: 1_000, maxNanodollars: 10_000_000)
                try await postgres.setBudget(try BudgetScope(parsing: scope), period: .day, maxTokens: 1_000, maxNanodollars: 10_000_000)
            }
            try sqlite.setBudget(try BudgetScope(parsing: "org:other"), period: .month, maxTokens: 0)
            try await postgres.setBudget(try BudgetScope(parsing: "org:other"), period: .month, maxTokens: 0)
            _ = try sqlite.checkAndConsume("t", promptTokens: 300, completionTokens: 33, usage: usage)
            _ = try await postgres.checkAndConsume("t", promptTokens: 300, completionTokens: 33, usage: usage)
            _ = try sqlite.reserve("t", tokens: 200, ttlSeconds: 600, usage: usage)
            _ = try await postgres.reserve("t", tokens: 200, ttlSeconds: 600, usage: usage)
            let select = """
                SELECT scope, period, window_start_us, window_end_us, max_tokens, max_cost_nanos, spent_tokens,
                       spent_cost_nanos, request_count, unpriced_requests, held_tokens, held_cost_nanos, remaining_tokens,
                       remaining_cost_nanos, percent_used, is_exhausted
                FROM budget_windows ORDER BY scope
                """
            let connection = try Connection(path: path)
            defer { connection.close() }
            let sqliteRows = try connection.prepare(select).fetchAll { row in
                let optional = { (index: Int) throws -> String in (try row[index] as Int64?).map(String.init) ?? "NULL" }
                return "\(try row[0] as String)|\(try row[1] as String)|\(try row[2] as Int64)|\(try optional(3))|"
                    + "\(try optional(4))|\(try optional(5))|\(try row[6] as Int64)|\(try row[7] as Int64)|"
                    + "\(try row[8] as Int64)|\(try row[9] as Int64)|\(try row[10] as Int64)|\(try row[11] as Int64)|"
                    + "\(try optional(12))|\(try optional(13))|\(try row[14] as Double)|\(try row[15] as Int64)"
            }
            let postgresRows = try await withDatabase(url) { client in
                var lines: [String] = []
                let rows = try await client.query(PostgresQuery(unsafeSQL: select))
                for try await row in rows.decode(
                    (String, String, Int64, Int64?, Int64?, Int64?, Int64, Int64, Int64, Int64, Int64, Int64, Int64?, Int64?, Double, Int32).self)
                {
                    lines.append(
                        "\(row.0)|\(row.1)|\(row.2)|\(row.3.map(String.init) ?? "NULL")|\(row.4.map(String.init) ?? "NULL")|"
                            + "\(row.5.map(String.init) ?? "NULL")|\(row.6)|\(row.7)|\(row.8)|\(row.9)|\(row.10)|\(row.11)|"
                            + "\(row.12.map(String.init) ?? "NULL")|\(row.13.map(String.init) ?? "NULL")|\(row.14)|\(row.15)")
                }
                return lines
            }
            #expect(sqliteRows.count == 6)
            #expect(sqliteRows == postgresRows)
        }
    }
}
