@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// The bounds of issue 13: every number a caller sends has a limit, at the limit it passes,
/// one past it is refused with nothing written, and no sum the ledger keeps can overflow.
@Suite("Limits and sums that cannot overflow")
struct LimitsTests {
    static let cap = LedgerLimits.allTimeSumMax
    static let perCall = LedgerLimits.tokensPerCallMax

    /// A JSON object of exactly `bytes` UTF-8 bytes: `{"p":"xxx…"}`.
    static func metadata(bytes: Int) -> String {
        #"{"p":""# + String(repeating: "x", count: bytes - 8) + #""}"#
    }

    @Test("each limit passes at the limit, and one past it is refused naming the field, with nothing written")
    func limitsAreExact() throws {
        // Proves the API's limits are the documented numbers, inclusive, and that a refusal writes nothing.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        try ledger.setLimit("t", maxTokens: LedgerLimits.maxTokensMax)
        let cases: [(field: String, atLimit: () throws -> Void, pastLimit: () throws -> Void)] = [
            ("promptTokens", { try ledger.consume("t", promptTokens: Self.perCall) },
             { try ledger.consume("t", promptTokens: Self.perCall + 1) }),
            ("completionTokens", { try ledger.consume("t", promptTokens: 0, completionTokens: Self.perCall) },
             { try ledger.consume("t", promptTokens: 0, completionTokens: Self.perCall + 1) }),
            ("latencyMs",
             { try ledger.consume("t", promptTokens: 1, usage: UsageDetails(latencyMilliseconds: LedgerLimits.latencyMillisecondsMax)) },
             { try ledger.consume("t", promptTokens: 1, usage: UsageDetails(latencyMilliseconds: LedgerLimits.latencyMillisecondsMax + 1)) }),
            ("estimatedTokens", { try ledger.checkBudget("t", estimatedTokens: LedgerLimits.tokensPerRequestMax) },
             { try ledger.checkBudget("t", estimatedTokens: LedgerLimits.tokensPerRequestMax + 1) }),
            ("tokens", { _ = try ledger.reserve("t", tokens: LedgerLimits.tokensPerRequestMax) },
             { _ = try ledger.reserve("t", tokens: LedgerLimits.tokensPerRequestMax + 1) }),
            ("maxTokens", { try ledger.setLimit("u", maxTokens: LedgerLimits.maxTokensMax) },
             { try ledger.setLimit("v", maxTokens: LedgerLimits.maxTokensMax + 1) }),
            ("maxTokensPerThread", { try ledger.configure(maxTokensPerThread: LedgerLimits.maxTokensMax) },
             { try ledger.configure(maxTokensPerThread: LedgerLimits.maxTokensMax + 1) }),
            ("prompt price", { _ = try ledger.setPrice(model: "m", promptUSDPerMillion: "10000", completionUSDPerMillion: "1") },
             { _ = try ledger.setPrice(model: "n", promptUSDPerMillion: "10000.001", completionUSDPerMillion: "1") }),
            ("completion price", { _ = try ledger.setPrice(model: "o", promptUSDPerMillion: "1", completionUSDPerMillion: "10000") },
             { _ = try ledger.setPrice(model: "p", promptUSDPerMillion: "1", completionUSDPerMillion: "10000.001") }),
            ("metadata", { try ledger.consume("t", promptTokens: 1, usage: try UsageDetails(metadataJSON: Self.metadata(bytes: LedgerLimits.metadataBytesMax))) },
             { try ledger.consume("t", promptTokens: 1, usage: try UsageDetails(metadataJSON: Self.metadata(bytes: LedgerLimits.metadataBytesMax + 1))) }),
            ("ttlSeconds", { _ = try ledger.reserve("t", tokens: 1, ttlSeconds: LedgerLimits.holdSecondsMax) },
             { _ = try ledger.reserve("t", tokens: 1, ttlSeconds: LedgerLimits.holdSecondsMax + 1) }),
            ("limit", { _ = try ledger.events(after: 0, limit: LedgerLimits.feedPageLimitMax) },
             { _ = try ledger.events(after: 0, limit: LedgerLimits.feedPageLimitMax + 1) }),
        ]
        for limit in cases {
            #expect(ledgerErrorCase(limit.atLimit) == .other("no error"), "\(limit.field) at its limit")
            let before = try eventCount(at: path)
            #expect(ledgerErrorCase(limit.pastLimit) == .invalidInput(field: limit.field), "\(limit.field) past its limit")
            #expect(try eventCount(at: path) == before, "\(limit.field): a refusal wrote an event")
        }
        #expect(try ledger.verify().isConsistent)
    }

    @Test("the issue's repro is refused at the first command, and negative counts too")
    func overflowReproIsRefused() throws {
        // Proves `consume a --prompt 9000000000000000000` no longer gets into the ledger.
        let ledger = try Ledger.inMemory()
        #expect(ledgerErrorCase { try ledger.consume("a", promptTokens: 9_000_000_000_000_000_000) } == .invalidInput(field: "promptTokens"))
        #expect(ledgerErrorCase { try ledger.consume("a", promptTokens: 0, completionTokens: -1) } == .invalidInput(field: "completionTokens"))
        #expect(ledgerErrorCase {
            try ledger.consume("a", promptTokens: 1, usage: UsageDetails(latencyMilliseconds: 9_000_000_000_000_000_000))
        } == .invalidInput(field: "latencyMs"))
        #expect(try ledger.usage("a") == nil)
        #expect(try ledger.usageOverview(.allTime).totals.requestCount == 0)
    }

    @Test("the schema refuses a plain-SQL insert one past each limit and takes one at it (the SQL and LedgerLimits agree)")
    func schemaLimitsMatchLedgerLimits() throws {
        // Proves migrations/0006's constants are LedgerLimits' numbers: a writer using plain SQL meets the same bounds.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        try ledger.setLimit("t", maxTokens: 10)
        ledger.close()
        let raw = try Connection(path: path)
        defer { raw.close() }
        let reserve = "INSERT INTO events (timestamp_us, kind, thread_id, held_tokens, expires_at_us) VALUES (1, 'reserve', 't', ?, 9)"
        let consume = "INSERT INTO events (timestamp_us, kind, thread_id, %@) VALUES (1, 'consume', 't', ?)"
        let cases: [(sql: String, limit: Int64)] = [
            (consume.replacingOccurrences(of: "%@", with: "prompt_tokens"), LedgerLimits.tokensPerCallMax),
            (consume.replacingOccurrences(of: "%@", with: "completion_tokens"), LedgerLimits.tokensPerCallMax),
            (consume.replacingOccurrences(of: "%@", with: "latency_ms"), LedgerLimits.latencyMillisecondsMax),
            (consume.replacingOccurrences(of: "%@", with: "cost_nanos"), LedgerLimits.costNanodollarsPerCallMax),
            (reserve, LedgerLimits.tokensPerRequestMax),
            ("INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (1, 'limit', 't', ?)", LedgerLimits.maxTokensMax),
            ("INSERT INTO events (timestamp_us, kind, max_tokens) VALUES (1, 'configure', ?)", LedgerLimits.maxTokensMax),
        ]
        for (sql, limit) in cases {
            try raw.execute(sql, [limit])
            do {
                try raw.execute(sql, [limit + 1])
                Issue.record("\(sql) took \(limit + 1)")
            } catch let error as SQLiteError {
                #expect(error.code == .constraint)
                #expect(error.message.hasPrefix("events: a value is above its limit"), "\(error.message)")
            }
        }
    }

    @Test("every aggregate at its worst case reads without error, and the capacity refuses cleanly")
    func aggregatesAtTheirWorstCase() throws {
        // Proves the arithmetic of 0006: with every all-time sum at the capacity (4e18 per column, 8e18
        // for prompt + completion), every view, every API read and a fold work, and one more token is
        // refused as a conflict with nothing written. The history that would reach the capacity (4e9
        // calls at the limits) cannot be replayed in a test, so the derived tables are set to the state
        // it would leave, through plain SQL (they are not append-only; verify is not the point here).
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        var ledger = try Ledger(path: path)
        try ledger.setLimit("w", maxTokens: LedgerLimits.maxTokensMax)
        _ = try ledger.setPrice(model: "m", promptUSDPerMillion: "10000", completionUSDPerMillion: "10000")
        ledger.close()
        let cap = Self.cap
        let half = (cap - Self.perCall) / 2
        let raw = try Connection(path: path)
        try raw.execute(
            """
            UPDATE ledger_settings SET all_time_prompt_tokens = ?1 - ?2, all_time_completion_tokens = ?1 - ?2,
                all_time_cost_nanos = ?1 - ?3, all_time_latency_ms = ?1 - ?4
            """, [cap, Self.perCall, LedgerLimits.costNanodollarsPerCallMax, LedgerLimits.latencyMillisecondsMax])
        try raw.execute(
            "UPDATE thread_state SET prompt_tokens = ?1 - ?2, completion_tokens = ?1 - ?2, request_count = 4 WHERE thread_id = 'w'",
            [cap, Self.perCall])
        let costHalf = (cap - LedgerLimits.costNanodollarsPerCallMax) / 2
        let latencyHalf = (cap - LedgerLimits.latencyMillisecondsMax) / 2
        for (day, agent) in [(0, "a"), (1, "b")] {
            let values: [any SQLiteBindable] = [Int64(day), agent, half, costHalf, latencyHalf]
            // usage_agent_model follows (0018).
            try raw.execute(
                """
                INSERT INTO usage_rollup VALUES (0, ?1, 'o' || ?1, 'u', ?2, 'm', ?3, ?3, 2, ?4, 0, ?5, 2, 0)
                """, values)
        }
        raw.close()

        ledger = try Ledger(path: path)
        let last = try ledger.consume(
            "w", promptTokens: Self.perCall, completionTokens: Self.perCall,
            usage: UsageDetails(agentID: "a", model: "m", latencyMilliseconds: LedgerLimits.latencyMillisecondsMax))
        #expect(last.event.costNanodollars == LedgerLimits.costNanodollarsPerCallMax)
        #expect(last.budget.totalTokens == 2 * cap)
        let before = try eventCount(at: path)
        // Each summed column at its capacity refuses one more unit of its own, naming it.
        let pastCapacity: [(column: String, call: () throws -> Void)] = [
            ("prompt_tokens", { try ledger.consume("w", promptTokens: 1) }),
            ("completion_tokens", { try ledger.consume("w", promptTokens: 0, completionTokens: 1) }),
            ("latency_ms", { try ledger.consume("w", promptTokens: 0, usage: UsageDetails(latencyMilliseconds: 1)) }),
        ]
        for (column, call) in pastCapacity {
            do {
                try call()
                Issue.record("a consume past the capacity of \(column) was recorded")
            } catch LedgerError.conflict(let reason) {
                #expect(reason.hasPrefix("ledger capacity reached: the all-time \(column)"), "\(reason)")
            }
        }
        #expect(try eventCount(at: path) == before)

        func readEverything() throws {
            let overview = try ledger.usageOverview(.allTime)
            #expect(overview.totals.promptTokens == cap)
            #expect(overview.totals.totalTokens == 2 * cap)
            #expect(overview.totals.costNanodollars == cap)
            #expect(overview.totals.latencyMillisecondsSum == cap)
            _ = try ledger.usageOverview(.currentWindow)
            _ = try ledger.usage(agent: "a")
            _ = try ledger.usage(model: "m")
            #expect(try ledger.usage("w")?.totalTokens == 2 * cap)
            _ = try ledger.allUsage()
            for grouping in ExportGrouping.allCases { _ = try ledger.rollup(ExportQuery(), by: grouping) }
            let reader = try Connection(path: path)
            defer { reader.close() }
            let views = try reader.prepare("SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name")
                .fetchAll { try $0[0] as String }
            #expect(views.count > 20)
            for view in views {
                _ = try reader.prepare("SELECT * FROM \(view)").fetchAll { _ in 0 }
            }
        }
        // Near the capacity the bound on pending consumes never holds, so each consume above was
        // folded at once (0017): read with nothing pending; then again after consumes of nothing
        // (which the capacity still admits) up to a scheduled fold.
        try readEverything()
        var id = last.event.id
        while id % FoldMark.foldEveryEvents != 0 { id = try ledger.consume("w", promptTokens: 0).event.id }
        let reader = try Connection(path: path)
        #expect(try reader.prepare("SELECT rolled_up_to FROM ledger_settings").fetchOne { try $0[0] as Int64 } == id)
        reader.close()
        try readEverything()
    }

    @Test("the cost column at its capacity refuses a priced consume, naming it, and still takes an unpriced one")
    func costCapacityIsItsOwn() throws {
        // Proves the fourth summed column's guard: cost cannot be filled through prompt tokens
        // alone, so its all-time sum is set to the capacity directly (a derived table).
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        var ledger = try Ledger(path: path)
        _ = try ledger.setPrice(model: "m", promptUSDPerMillion: "1", completionUSDPerMillion: "1")
        ledger.close()
        let raw = try Connection(path: path)
        try raw.execute("UPDATE ledger_settings SET all_time_cost_nanos = ?", [Self.cap])
        raw.close()
        ledger = try Ledger(path: path)
        let before = try eventCount(at: path)
        do {
            try ledger.consume("t", promptTokens: 1, usage: UsageDetails(model: "m"))
            Issue.record("a consume past the cost capacity was recorded")
        } catch LedgerError.conflict(let reason) {
            #expect(reason.hasPrefix("ledger capacity reached: the all-time cost_nanos"), "\(reason)")
        }
        #expect(try eventCount(at: path) == before)
        #expect(try ledger.consume("t", promptTokens: 1, usage: UsageDetails(model: "unpriced")).event.costNanodollars == nil)
    }

    @Test("threshold percents are 1…1000 and each appears once")
    func thresholdLimits() throws {
        // Proves the configuration's own limits: 1000 passes, 0 and 1001 and a repeated percent are refused.
        let valid = [BudgetThreshold(percent: 1, severity: "a"), BudgetThreshold(percent: 1_000, severity: "b")]
        #expect(ledgerErrorCase { _ = try Ledger.inMemory(configuration: .init(thresholds: valid)) } == .other("no error"))
        for thresholds in [
            [BudgetThreshold(percent: 0, severity: "a")], [BudgetThreshold(percent: 1_001, severity: "a")],
            [BudgetThreshold(percent: 50, severity: "a"), BudgetThreshold(percent: 50, severity: "b")],
        ] {
            #expect(ledgerErrorCase { _ = try Ledger.inMemory(configuration: .init(thresholds: thresholds)) }
                == .invalidInput(field: "thresholds"), "\(thresholds)")
        }
    }

    @Test("a ledger written before the limits, holding oversized events, opens, folds, reads, verifies and exports")
    func oversizedLegacyLedgerKeepsWorking() throws {
        // Proves issue 13's second point: a file written under the old rules (events of 9e18 tokens and
        // latency, holds of 5e18) upgrades, counts each such value at its limit everywhere derived, and
        // works: reads, folds, verify, export. The events themselves keep their recorded numbers.
        let folder = try TemporaryFolder()
        let path = folder.path("old.db")
        let raw = try Connection(path: path)
        try Migrator(migrations: Ledger.migrations.filter { $0.version < 6 }, applicationID: Ledger.applicationID).migrate(raw)
        let huge: Int64 = 9_000_000_000_000_000_000
        try raw.transaction {
            try raw.execute(sql: "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (1, 'open', 'a', 100)")
            try raw.execute(
                "INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, latency_ms) VALUES (2, 'consume', 'a', ?1, ?1)",
                [huge])
            try raw.execute(sql: "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (3, 'open', 'c', 100)")
            // Small consumes up to event 1,024, whose insert folds the oversized one into the rollups.
            for _ in 4...1024 {
                try raw.execute(sql: "INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens) VALUES (4, 'consume', 'c', 1)")
            }
            try raw.execute(sql: "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (5, 'open', 'b', 100)")
            try raw.execute(
                "INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens) VALUES (6, 'consume', 'b', ?1, ?1)",
                [huge])
            try raw.execute("INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (7, 'limit', 'h', ?1)", [huge])
            for _ in 0..<2 {
                try raw.execute(
                    """
                    INSERT INTO events (timestamp_us, kind, thread_id, held_tokens, expires_at_us)
                    VALUES (8, 'reserve', 'h', 5000000000000000000, 9000000000000000000)
                    """, [])
            }
        }
        // The file is really broken under the old schema: this is the failure of the issue.
        #expect(throws: SQLiteError.self) { try raw.prepare("SELECT * FROM usage_totals").fetchAll { _ in 0 } }
        raw.close()

        let ledger = try Ledger(path: path)
        let perCall = Self.perCall
        let overview = try ledger.usageOverview(.allTime)
        #expect(overview.totals.promptTokens == perCall + 1021 + perCall)
        #expect(overview.totals.completionTokens == perCall)
        #expect(overview.totals.latencyMillisecondsSum == LedgerLimits.latencyMillisecondsMax)
        #expect(try ledger.usage("a")?.totalTokens == perCall)
        #expect(try ledger.usage("b")?.totalTokens == 2 * perCall)
        #expect(try ledger.usage("h")?.heldTokens == 2 * LedgerLimits.tokensPerRequestMax)
        let report = try ledger.verify()
        #expect(report.problems == [])
        var exported: [LedgerEvent] = []
        try ledger.forEachConsumeEvent(ExportQuery()) { exported.append($0) }
        #expect(exported.first?.promptTokens == huge)
        for grouping in ExportGrouping.allCases { _ = try ledger.rollup(ExportQuery(), by: grouping) }
        _ = try ledger.events(after: 0, limit: 10_000)
        // Writes go on, through another fold.
        for _ in 0..<1100 { try ledger.consume("c", promptTokens: 1) }
        #expect(try ledger.usageOverview(.allTime).totals.promptTokens == 2 * perCall + 1021 + 1100)
        #expect(try ledger.verify().problems == [])
    }

    @Test("arithmetic on stored values saturates instead of trapping")
    func storedArithmeticNeverTraps() {
        // Proves issue 20's second point: totals built from whatever a file holds cannot crash a reader.
        var totals = UsageTotals()
        totals.promptTokens = .max
        totals.completionTokens = .max
        #expect(totals.totalTokens == .max)
        let budget = ThreadBudget(threadID: "t", maxTokens: 10, promptTokens: .max, completionTokens: 5)
        #expect(budget.totalTokens == .max)
        #expect(budget.remaining == 0)
        #expect(budget.isExhausted)
        let crossing = ThresholdCrossing(thresholdPercent: 75, severity: "warning", tokensUsed: .min, maxTokens: .max)
        #expect(crossing.tokensRemaining == .max)
        #expect(Int64.max.saturatingAdd(1) == .max)
        #expect(Int64.min.saturatingSubtract(1) == .min)
        #expect(Int64(5).saturatingAdd(-7) == -2)
    }
}
