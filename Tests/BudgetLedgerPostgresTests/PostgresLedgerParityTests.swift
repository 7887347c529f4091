import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import PostgresNIO
import Testing

/// The same calls on the SQLite `Ledger` and on `PostgresLedger`, at the same clock readings.
@Suite("PostgresLedger answers as the SQLite Ledger does")
struct PostgresLedgerParityTests {
    @Test("the same sequence of calls gives the same budgets, crossings, usage and errors")
    func sameAnswers() async throws {
        // Proves the domain's rules run unchanged over PostgreSQL: every answer, value or error,
        // is compared as text (events ids aside, which each store numbers itself).
        let clock = TestClock()
        let sqlite = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        defer { sqlite.close() }
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { postgres, _ in
            let parity = ParitySteps(clock: clock)
            await parity.step("configure", { try sqlite.configure(maxTokensPerThread: 1_000) }, { try await postgres.configure(maxTokensPerThread: 1_000) })
            await parity.step("default", { try sqlite.maxTokensPerThread }, { try await postgres.maxTokensPerThread })
            await parity.step("usage of a new thread", { try sqlite.usage("a") }, { try await postgres.usage("a") })
            await parity.step("budget opens", { try sqlite.budget(for: "a") }, { try await postgres.budget(for: "a") })
            for index in 0..<6 {
                await parity.step(
                    "checked consume \(index)",
                    { try sqlite.checkAndConsume("a", promptTokens: 150, completionTokens: 30).budget },
                    { try await postgres.checkAndConsume("a", promptTokens: 150, completionTokens: 30).budget })
                await parity.step(
                    "crossings \(index)", { try sqlite.usage("a")?.triggeredThresholds },
                    { try await postgres.usage("a")?.triggeredThresholds })
            }
            await parity.step("over-consume", { try sqlite.consume("a", promptTokens: 500).budget }, { try await postgres.consume("a", promptTokens: 500).budget })
            await parity.step("exhausted", { try sqlite.checkAndConsume("a", promptTokens: 1) }, { try await postgres.checkAndConsume("a", promptTokens: 1) })
            await parity.step("check budget", { try sqlite.checkBudget("a", estimatedTokens: 5) }, { try await postgres.checkBudget("a", estimatedTokens: 5) })
            await parity.step("raise limit re-arms", { try sqlite.setLimit("a", maxTokens: 5_000) }, { try await postgres.setLimit("a", maxTokens: 5_000) })
            await parity.step("limit of a new thread", { try sqlite.setLimit("b", maxTokens: 10) }, { try await postgres.setLimit("b", maxTokens: 10) })
            await parity.step(
                "does not fit", { try sqlite.checkAndConsume("b", promptTokens: 11) }, { try await postgres.checkAndConsume("b", promptTokens: 11) })
            await parity.step(
                "refused on a new thread leaves it closed",
                { try sqlite.checkAndConsume("c", promptTokens: 2_000) }, { try await postgres.checkAndConsume("c", promptTokens: 2_000) })
            await parity.step("c after the refusal", { try sqlite.usage("c") }, { try await postgres.usage("c") })
            await parity.step("reset", { try sqlite.resetThread("a") }, { try await postgres.resetThread("a") })
            await parity.step("reset of no thread", { try sqlite.resetThread("nope") }, { try await postgres.resetThread("nope") })
            await parity.step("cleanup", { try sqlite.cleanupThread("b") }, { try await postgres.cleanupThread("b") })
            await parity.step("after cleanup", { try sqlite.usage("b") }, { try await postgres.usage("b") })
            await parity.step("bad thread id", { try sqlite.consume("", promptTokens: 1) }, { try await postgres.consume("", promptTokens: 1) })
            await parity.step(
                "negative tokens", { try sqlite.consume("a", promptTokens: -1) }, { try await postgres.consume("a", promptTokens: -1) })
            await parity.step(
                "bad metadata",
                { try sqlite.consume("a", promptTokens: 1, usage: try UsageDetails(metadataJSON: "[1]")) },
                { try await postgres.consume("a", promptTokens: 1, usage: try UsageDetails(metadataJSON: "[1]")) })
            await parity.step(
                "a price", { try sqlite.setPrice(model: "GPT-4o*", promptUSDPerMillion: "2.5", completionUSDPerMillion: "10") },
                { try await postgres.setPrice(model: "GPT-4o*", promptUSDPerMillion: "2.5", completionUSDPerMillion: "10") })
            let details = try UsageDetails(
                agentID: "agent-1", model: " GPT-4o-mini ", provider: "openai", latencyMilliseconds: 120,
                metadataJSON: #"{"org_id":"acme","user_id":"ann"}"#)
            await parity.step(
                "priced consume", { try sqlite.consume("a", promptTokens: 1_000, completionTokens: 200, usage: details).event.costNanodollars },
                { try await postgres.consume("a", promptTokens: 1_000, completionTokens: 200, usage: details).event.costNanodollars })
            await parity.step(
                "re-pricing refused", { try sqlite.setPrice(model: "gpt-4o-mini", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: 0) },
                { try await postgres.setPrice(model: "gpt-4o-mini", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: 0) })
            await parity.step(
                "unpriced consume", { try sqlite.consume("a", promptTokens: 10, usage: UsageDetails(agentID: "agent-2", model: "other")).event.costNanodollars },
                { try await postgres.consume("a", promptTokens: 10, usage: UsageDetails(agentID: "agent-2", model: "other")).event.costNanodollars })
            await parity.step("totals", { try sqlite.usageOverview().totals }, { try await postgres.usageTotals() })
            await parity.step("usage reset", { try sqlite.resetUsageWindow() }, { try await postgres.resetUsageWindow() })
            await parity.step("totals after", { try sqlite.usageOverview().totals }, { try await postgres.usageTotals() })
            await parity.step("all time", { try sqlite.usageOverview(.allTime).totals }, { try await postgres.usageTotals(.allTime) })
            // Each store numbers its events itself (PostgreSQL's identity skips the ids of
            // rolled-back inserts), so event ids in messages are not compared.
            func withoutEventIDs(_ text: String) -> String {
                text.replacingOccurrences(of: #"event \d+"#, with: "event N", options: .regularExpression)
            }
            for (name, sqliteAnswer, postgresAnswer) in parity.steps {
                #expect(withoutEventIDs(sqliteAnswer) == withoutEventIDs(postgresAnswer), "\(name)")
            }
            #expect(parity.steps.contains { $0.1.hasPrefix("error BudgetExhaustedError") })
            #expect(parity.steps.contains { $0.1.hasPrefix("error LedgerError") })
        }
    }

    @Test("the reads behind the server's routes, and reserve's idempotency keys, answer as on SQLite")
    func serverReadsAgree() async throws {
        // Proves the reads `serve` needs on PostgreSQL (thread list, overview, agent and model
        // totals, the price table, one model's price, the gauges) and reserve's replay and
        // conflicts give SQLite's answers over the same calls, orders and ties included.
        let clock = TestClock()
        let sqlite = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        defer { sqlite.close() }
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { postgres, _ in
            let parity = ParitySteps(clock: clock)
            await parity.step("price", { try sqlite.setPrice(model: "m-*", promptUSDPerMillion: "1", completionUSDPerMillion: "3") },
                       { try await postgres.setPrice(model: "m-*", promptUSDPerMillion: "1", completionUSDPerMillion: "3") })
            let calls: [(String, Int64, Int64, Int64, UsageDetails)] = [
                ("t-b", 100, 50, 10, UsageDetails(agentID: "planner", model: "M-1")),
                ("t-a", 100, 50, 10, UsageDetails(agentID: "coder", model: "m-2", latencyMilliseconds: 30)),
                ("t-c", 1_000, 900, 0, UsageDetails(model: "unpriced")),
                ("t-z", 0, 3, 0, UsageDetails(agentID: "planner")),
                ("T-a", 500, 200, 100, UsageDetails(agentID: "coder", model: " M-1 ")),
            ]
            for (thread, max, prompt, completion, usage) in calls {
                await parity.step("limit \(thread)", { try sqlite.setLimit(thread, maxTokens: max) }, { try await postgres.setLimit(thread, maxTokens: max) })
                await parity.step(
                    "consume \(thread)", { try sqlite.consume(thread, promptTokens: prompt, completionTokens: completion, usage: usage).budget },
                    { try await postgres.consume(thread, promptTokens: prompt, completionTokens: completion, usage: usage).budget })
            }
            await parity.step("hold", { try sqlite.reserve("t-c", tokens: 50, idempotencyKey: "r1").budget },
                       { try await postgres.reserve("t-c", tokens: 50, idempotencyKey: "r1").budget })
            await parity.step("hold replayed", { try sqlite.reserve("t-c", tokens: 50, idempotencyKey: "r1").isReplay },
                       { try await postgres.reserve("t-c", tokens: 50, idempotencyKey: "r1").isReplay })
            await parity.step("hold key, other tokens", { try sqlite.reserve("t-c", tokens: 51, idempotencyKey: "r1") },
                       { try await postgres.reserve("t-c", tokens: 51, idempotencyKey: "r1") })
            await parity.step("consume key", { try sqlite.consume("t-a", promptTokens: 1, idempotencyKey: "k1").budget },
                       { try await postgres.consume("t-a", promptTokens: 1, idempotencyKey: "k1").budget })
            await parity.step("hold with a consume's key", { try sqlite.reserve("t-a", tokens: 1, idempotencyKey: "k1") },
                       { try await postgres.reserve("t-a", tokens: 1, idempotencyKey: "k1") })
            await parity.step("hold too big", { try sqlite.reserve("t-b", tokens: 41) }, { try await postgres.reserve("t-b", tokens: 41) })
            await parity.step("all threads", { try sqlite.allUsage() }, { try await postgres.allUsage() })
            await parity.step("overview", { try sqlite.usageOverview() }, { try await postgres.usageOverview() })
            await parity.step("agent", { try sqlite.usage(agent: "coder") }, { try await postgres.usage(agent: "coder") })
            await parity.step("unknown agent", { try sqlite.usage(agent: "nobody") }, { try await postgres.usage(agent: "nobody") })
            await parity.step("model", { try sqlite.usage(model: "M-1") }, { try await postgres.usage(model: "M-1") })
            await parity.step("bad agent", { try sqlite.usage(agent: "") }, { try await postgres.usage(agent: "") })
            await parity.step("prices", { try sqlite.prices() }, { try await postgres.prices() })
            await parity.step("model price", { try sqlite.price(forModel: " M-7 ") }, { try await postgres.price(forModel: " M-7 ") })
            await parity.step("no price", { try sqlite.price(forModel: "zzz") }, { try await postgres.price(forModel: "zzz") })
            await parity.step("gauges", { try sqlite.gauges().openThreads }, { try await postgres.gauges().openThreads })
            await parity.step("gauges near", { try sqlite.gauges().threadsNearMax }, { try await postgres.gauges().threadsNearMax })
            await parity.step("gauges over", { try sqlite.gauges().threadsAtOrOverMax }, { try await postgres.gauges().threadsAtOrOverMax })
            await parity.step("gauges holds", { try sqlite.gauges().heldTokens }, { try await postgres.gauges().heldTokens })
            await parity.step(
                "gauges thresholds", { try sqlite.gauges().threadsPastThreshold.map { "\($0.percent):\($0.threads)" } },
                { try await postgres.gauges().threadsPastThreshold.map { "\($0.percent):\($0.threads)" } })
            await parity.step("usage reset", { try sqlite.resetUsageWindow() }, { try await postgres.resetUsageWindow() })
            await parity.step("overview after reset", { try sqlite.usageOverview() }, { try await postgres.usageOverview() })
            await parity.step("all time", { try sqlite.usageOverview(.allTime) }, { try await postgres.usageOverview(.allTime) })
            func withoutIDs(_ text: String) -> String {
                text.replacingOccurrences(of: #"event \d+"#, with: "event N", options: .regularExpression)
                    .replacingOccurrences(of: #"id: \d+"#, with: "id: N", options: .regularExpression)
            }
            for (name, sqliteAnswer, postgresAnswer) in parity.steps {
                #expect(withoutIDs(sqliteAnswer) == withoutIDs(postgresAnswer), "\(name)")
            }
            #expect(parity.steps.contains { $0.1.hasPrefix("error LedgerError") })
            // The lists compared are lists, not two equal errors.
            for name in ["all threads", "overview", "prices", "model price", "hold replayed"] {
                #expect(parity.steps.first { $0.0 == name }?.1.hasPrefix("ok ") == true, "\(name)")
            }
            #expect(parity.steps.first { $0.0 == "hold replayed" }?.1 == "ok true")
        }
    }

    @Test("billing SQL runs unchanged on both stores and reads the same rows")
    func billingViewsAgree() async throws {
        // Proves the views are not only named alike: the same query text, over the same calls,
        // returns the same rows from SQLite and from PostgreSQL.
        let clock = TestClock()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pg-billing-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("ledger.db").path
        let sqlite = try Ledger(path: path, configuration: Ledger.Configuration(clock: clock.read))
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { postgres, url in
            try sqlite.setPrice(model: "m1", promptUSDPerMillion: "1", completionUSDPerMillion: "2", effectiveFrom: 0)
            try await postgres.setPrice(model: "m1", promptUSDPerMillion: "1", completionUSDPerMillion: "2", effectiveFrom: 0)
            let calls: [(String, Int64, Int64, UsageDetails)] = [
                ("t1", 100, 10, try UsageDetails(agentID: "a", model: "M1", metadataJSON: #"{"org_id":"o1","user_id":"u1"}"#)),
                ("t1", 50, 5, UsageDetails(agentID: "a", model: "m2", latencyMilliseconds: 40)),
                ("t2", 7, 0, UsageDetails()),
                ("t3", 20, 20, try UsageDetails(agentID: "b", model: "m1", metadataJSON: #"{"org_id":"o2"}"#)),
            ]
            for (index, call) in calls.enumerated() {
                if index == 2 { clock.advance(microseconds: 86_400_000_000) }
                try sqlite.consume(call.0, promptTokens: call.1, completionTokens: call.2, usage: call.3)
                try await postgres.consume(call.0, promptTokens: call.1, completionTokens: call.2, usage: call.3)
            }
            sqlite.close()
            let queries = [
                "SELECT agent_id, model, total_tokens, prompt_tokens, completion_tokens, request_count, cost_nanos, unpriced_requests, unpriced_tokens, cost_complete FROM billing_by_agent_model ORDER BY agent_id NULLS FIRST, model NULLS FIRST",
                "SELECT org_id, model, day, total_tokens, cost_nanos, cost_complete FROM billing_by_org_model_day ORDER BY org_id NULLS FIRST, model NULLS FIRST, day",
                "SELECT day, total_tokens, request_count, cost_nanos FROM usage_by_day ORDER BY day",
                "SELECT user_id, total_tokens, cost_nanos, unpriced_requests, unpriced_tokens FROM usage_by_user ORDER BY user_id NULLS FIRST",
                "SELECT thread_id, total_tokens, cost_nanos, unpriced_requests, unpriced_tokens, cost_complete FROM usage_by_thread ORDER BY thread_id",
                "SELECT thread_id, max_tokens, total_tokens, remaining, is_exhausted FROM thread_budgets ORDER BY thread_id",
                "SELECT total_tokens, request_count, cost_nanos, unpriced_requests, unpriced_tokens, cost_complete FROM usage_totals",
                "SELECT model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source FROM model_prices WHERE legacy_prefix = 0 ORDER BY id",
            ]
            for (query, rows) in zip(queries, try await queryBothStores(sqlitePath: path, postgresURL: url, queries)) {
                #expect(rows.sqlite == rows.postgres, "\(query)")
                #expect(!rows.sqlite.isEmpty, "\(query)")
            }
        }
    }
}
