@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

@Suite("Correcting prices: withdrawals, replacements and reprices (migration 0012)")
struct PriceCorrectionTests {
    private static let day: Int64 = 86_400_000_000

    /// The price row of `model` at `time` as SQL picks it (`LedgerSQL.selectPriceForModel`) and
    /// as the consume path's cache picks it (`PriceCache.candidates` over `LedgerSQL.selectPrices`).
    private func bothLookups(_ ledger: Ledger, _ model: String, at time: Int64) throws -> (sql: ModelPrice?, swift: ModelPrice?) {
        let sql = try ledger.price(forModel: model, at: time)
        let swift = PriceCache.candidates(for: model, in: try ledger.prices()).first { $0.effectiveFromMicroseconds <= time }
        return (sql, swift)
    }

    private func count(_ ledger: Ledger, _ sql: String) throws -> Int64 {
        try ledger.withConnection { try $0.prepare(sql).fetchOne { try $0[0] as Int64 } ?? -1 }
    }

    @Test("a future price withdrawn: the lookup falls back to the earlier price; an in-force one is refused, nothing written")
    func futurePriceWithdrawn() throws {
        // Proves a withdrawal is honoured by the SQL lookup and the cache alike (the consume
        // bills the earlier price), and that a price in effect cannot be withdrawn.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        let now = clock.read()
        try ledger.setPrice(model: "acme-1", promptUSDPerMillion: "1", completionUSDPerMillion: "2", effectiveFrom: now)
        try ledger.setPrice(model: "acme-1", promptUSDPerMillion: "5", completionUSDPerMillion: "6", effectiveFrom: now + Self.day)
        #expect(try ledger.price(forModel: "acme-1", at: now + 2 * Self.day)?.promptNanodollarsPerToken == 5_000)

        let withdrawn = try ledger.withdrawPrice(model: "ACME-1 ", effectiveFrom: now + Self.day)
        #expect(withdrawn.promptNanodollarsPerToken == 5_000)
        for time in [now, now + Self.day, now + 2 * Self.day] {
            let (sql, swift) = try bothLookups(ledger, "acme-1", at: time)
            #expect(sql == swift)
            #expect(sql?.promptNanodollarsPerToken == 1_000 && sql?.effectiveFromMicroseconds == now)
        }
        #expect(try ledger.prices().filter { $0.modelPattern == "acme-1" }.count == 1, "the withdrawn row is not listed")

        // Withdrawn already: nothing to withdraw. In force: a conflict naming its start.
        #expect(ledgerErrorCase { try ledger.withdrawPrice(model: "acme-1", effectiveFrom: now + Self.day) } == .priceNotFound)
        do {
            try ledger.withdrawPrice(model: "acme-1", effectiveFrom: now)
            Issue.record("an in-force price was withdrawn")
        } catch let error as LedgerError {
            guard case .conflict(let reason) = error else { throw error }
            #expect(reason.contains(Timestamps.iso8601(microseconds: now)))
            #expect(reason.contains("superseded"))
        }
        #expect(try count(ledger, "SELECT count(*) FROM price_withdrawals") == 1, "nothing written by the refusal")

        // The consume path (the cache) bills the earlier price two days on.
        clock.advance(microseconds: 2 * Self.day)
        let consumed = try ledger.consume("t", promptTokens: 1_000, completionTokens: 100, usage: UsageDetails(model: "acme-1"))
        let expectedCost: Int64 = 1_000 * 1_000 + 100 * 2_000
        #expect(consumed.event.costNanodollars == expectedCost)
        // The price in force can only be superseded from now on.
        clock.advance(microseconds: 1)
        try ledger.setPrice(model: "acme-1", promptUSDPerMillion: "3", completionUSDPerMillion: "3")
        // The event_prices view (SQL) and verify's PriceTable (Swift) skip the withdrawn row alike.
        #expect(try count(ledger, "SELECT count(*) FROM events JOIN event_prices ON event_id = id WHERE events.cost_nanos IS NOT event_prices.cost_nanos") == 0)
        #expect(try ledger.verify().problems == [])
    }

    @Test("a future price replaced, at the same start and at a new one; SQL and the cache agree throughout")
    func futurePriceReplaced() throws {
        // Proves a replacement is a withdrawal plus a new row (the same start is allowed once the
        // old row is withdrawn) and that both lookups see only the live rows, patterns included.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        let now = clock.read()
        try ledger.setPrice(model: "acme-2*", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: now)
        try ledger.setPrice(model: "acme-2-pro", promptUSDPerMillion: "9", completionUSDPerMillion: "9", effectiveFrom: now + Self.day)
        #expect(ledgerErrorCase {
            try ledger.setPrice(model: "acme-2-pro", promptUSDPerMillion: "8", completionUSDPerMillion: "8", effectiveFrom: now + Self.day)
        } == .conflict, "a live row of that start exists")

        let same = try ledger.replacePrice(
            model: "acme-2-pro", effectiveFrom: now + Self.day, promptUSDPerMillion: "7", completionUSDPerMillion: "7")
        #expect(same.effectiveFromMicroseconds == now + Self.day && same.promptNanodollarsPerToken == 7_000)
        #expect(try ledger.price(forModel: "acme-2-pro", at: now + Self.day)?.promptNanodollarsPerToken == 7_000)

        let moved = try ledger.replacePrice(
            model: "acme-2-pro", effectiveFrom: now + Self.day, promptUSDPerMillion: "4", completionUSDPerMillion: "4",
            newEffectiveFrom: now + 3 * Self.day)
        #expect(moved.effectiveFromMicroseconds == now + 3 * Self.day)
        for model in ["acme-2-pro", "acme-2-mini", " ACME-2-PRO"] {
            for offset in [Int64(0), Self.day, 2 * Self.day, 3 * Self.day, 4 * Self.day] {
                let (sql, swift) = try bothLookups(ledger, model, at: now + offset)
                #expect(sql == swift, "\(model) at +\(offset)")
            }
        }
        #expect(try ledger.price(forModel: "acme-2-pro", at: now + 2 * Self.day)?.modelPattern == "acme-2*", "falls back to the pattern")
        #expect(try ledger.price(forModel: "acme-2-pro", at: now + 3 * Self.day)?.promptNanodollarsPerToken == 4_000)
        // A replacement of a price in effect is refused, and writes nothing.
        let withdrawals = try count(ledger, "SELECT count(*) FROM price_withdrawals")
        #expect(ledgerErrorCase {
            try ledger.replacePrice(model: "acme-2*", effectiveFrom: now, promptUSDPerMillion: "2", completionUSDPerMillion: "2")
        } == .conflict)
        #expect(try count(ledger, "SELECT count(*) FROM price_withdrawals") == withdrawals)
        #expect(try ledger.verify().problems == [])
    }

    /// usage_by_model's cost (NULL: unknown) and unpriced requests for `model`.
    private func byModel(_ ledger: Ledger, _ model: String) throws -> (cost: Int64?, unpriced: Int64, complete: Int64) {
        try ledger.withConnection { connection in
            try connection.prepare("SELECT cost_nanos, unpriced_requests, cost_complete FROM usage_by_model WHERE model = ?")
                .fetchOne([model]) { (try $0[0] as Int64?, try $0[1] as Int64, try $0[2] as Int64) }
        } ?? (nil, -1, -1)
    }

    private func totals(_ ledger: Ledger) throws -> (cost: Int64?, unpriced: Int64, allTime: Int64) {
        try ledger.withConnection { connection in
            try connection.prepare(
                "SELECT cost_nanos, unpriced_requests, (SELECT all_time_cost_nanos FROM ledger_settings) FROM usage_totals"
            ).fetchOne { (try $0[0] as Int64?, try $0[1] as Int64, try $0[2] as Int64) }
        } ?? (nil, -1, -1)
    }

    /// Rows where a rollup and its `*_from_events` recomputation differ, and settings likewise.
    private func fromEventsDifferences(_ ledger: Ledger) throws -> Int64 {
        try count(
            ledger,
            """
            SELECT (SELECT count(*) FROM (SELECT * FROM usage_rollup_live EXCEPT SELECT * FROM usage_rollup_from_events))
                 + (SELECT count(*) FROM (SELECT * FROM usage_rollup_from_events EXCEPT SELECT * FROM usage_rollup_live))
                 + (SELECT count(*) FROM (SELECT * FROM usage_agent_model_live EXCEPT SELECT * FROM usage_agent_model_from_events))
                 + (SELECT count(*) FROM (SELECT * FROM usage_agent_model_from_events EXCEPT SELECT * FROM usage_agent_model_live))
                 + (SELECT all_time_cost_nanos FROM ledger_settings) - (SELECT all_time_cost_nanos FROM ledger_settings_from_events)
            """)
    }

    @Test("a reprice of unpriced usage across a fold boundary: billing views before and after, exact to the nano-dollar")
    func repriceAcrossFold() throws {
        // Proves the finance case: 1,500 consumes of a model with no price (ids past 1,024, so
        // most are folded and the rest pending, with a usage window reset between them) are
        // billed by a reprice at two prices by their own timestamps; usage_by_model,
        // usage_totals, the export rollup and exported events show the corrected cost, the
        // SQL recomputations agree, a second reprice is a no-op, and verify passes.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        let start = clock.read()
        let second: Int64 = 1_000_000
        let priced = try ledger.consume("t", promptTokens: 1_000, completionTokens: 500, usage: UsageDetails(model: "gpt-4o"))
        let pricedCost = try #require(priced.event.costNanodollars)
        // Price A from an hour before the usage, price B from its 750th second.
        let (promptA, completionA, promptB, completionB): (Int64, Int64, Int64, Int64) = (1_500, 3_000, 2_250, 4_125)
        var expected: Int64 = 0
        for index in 0..<1_500 {
            clock.set(microseconds: start + Int64(index) * second)
            let prompt = Int64(1_000 + index % 7)
            let completion = Int64(10 + index % 3)
            if index == 600 { try ledger.resetUsageWindow() }
            let result = try ledger.consume(
                "t", promptTokens: prompt, completionTokens: completion,
                usage: UsageDetails(agentID: index % 2 == 0 ? "a" : "b", model: index % 3 == 0 ? "Acme-3" : "acme-3"))
            #expect(result.event.costNanodollars == nil)
            let later = Int64(index) * second >= 750 * second
            expected += prompt * (later ? promptB : promptA) + completion * (later ? completionB : completionA)
        }
        let rolledUpTo = try count(ledger, "SELECT rolled_up_to FROM ledger_settings")
        let lastID = try count(ledger, "SELECT max(id) FROM events")
        #expect(rolledUpTo >= 1_024 && rolledUpTo < lastID, "some consumes folded, some pending")

        #expect(try byModel(ledger, "acme-3") == (nil, 1_500, 0))
        #expect(try totals(ledger) == (pricedCost, 1_500, pricedCost))
        try ledger.setPrice(
            model: "acme-3", promptUSDPerMillion: "1.5", completionUSDPerMillion: "3", effectiveFrom: start - 3_600 * second)
        try ledger.setPrice(
            model: "acme-3", promptUSDPerMillion: "2.25", completionUSDPerMillion: "4.125", effectiveFrom: start + 750 * second)
        #expect(try ledger.verify().problems == [], "unpriced consumes a later price covers are not mispriced")

        let modelScope = try BudgetScope(kind: .model, id: "acme-3")
        try ledger.setBudget(modelScope, maxNanodollars: 1_000_000_000_000)
        clock.advance(microseconds: Self.day)
        let result = try ledger.reprice(model: "ACME-3", from: start - Self.day, to: start + Self.day)
        #expect(result == RepriceResult(repricedCount: 1_500, costNanodollars: expected, unpricedCount: 0, isComplete: true))
        #expect(try byModel(ledger, "acme-3") == (expected, 0, 1))
        #expect(try totals(ledger) == (pricedCost + expected, 0, pricedCost + expected))
        let exported = try ledger.rollup(ExportQuery(), by: .model).first { $0.key == "acme-3" }?.totals
        #expect(exported?.costNanodollars == expected && exported?.unpricedRequests == 0 && exported?.requestCount == 1_500)
        var exportedCost: Int64 = 0
        try ledger.forEachConsumeEvent(ExportQuery()) { event in exportedCost += event.costNanodollars ?? 0 }
        #expect(exportedCost == pricedCost + expected)
        #expect(try count(ledger, "SELECT cost_nanos FROM usage_by_thread WHERE thread_id = 't'") == pricedCost + expected)
        // The feed shows both events as recorded: the consume unpriced, the reprice with its cost.
        let feed = try ledger.events(after: lastID, limit: 10).events
        let firstReprice = feed.first { $0.kind == "reprice" }
        #expect(firstReprice?.causedBy != nil && firstReprice?.costNanodollars != nil)
        let consumeID = try #require(firstReprice?.causedBy)
        let consume = try ledger.events(after: consumeID - 1, limit: 1).events.first
        #expect(consume?.kind == "consume" && consume?.costNanodollars == nil, "the consume as recorded")
        #expect(try fromEventsDifferences(ledger) == 0)
        #expect(try ledger.verify().problems == [])

        // Scope budgets keep the spend their calls were gated on; one set after the reprice reads
        // its window from the corrected rollups (verify recomputes both alike).
        #expect(try ledger.budget(scope: modelScope).map { ($0.spentNanodollars, $0.unpricedRequests) } ?? (-1, -1) == (0, 1_500))
        let global = try ledger.setBudget(.global, maxNanodollars: 1_000_000_000_000)
        #expect(global.spentNanodollars == pricedCost + expected && global.unpricedRequests == 0)
        #expect(try ledger.verify().problems == [])

        // Twice is a no-op, and the schema refuses a second reprice written in plain SQL.
        let events = try count(ledger, "SELECT count(*) FROM events")
        #expect(try ledger.reprice(model: "acme-3", from: start - Self.day, to: start + Self.day)
            == RepriceResult(repricedCount: 0, costNanodollars: 0, unpricedCount: 0, isComplete: true))
        #expect(try count(ledger, "SELECT count(*) FROM events") == events)
        #expect(throws: (any Error).self) {
            try ledger.write { connection in
                try connection.execute(
                    sql: """
                        INSERT INTO events (timestamp_us, kind, thread_id, caused_by, cost_nanos)
                        SELECT timestamp_us, 'reprice', thread_id, id, 1 FROM events WHERE kind = 'consume' AND cost_nanos IS NULL LIMIT 1
                        """)
            }
        }
        // Billed usage is never repriced, and a price may not start under it any more.
        #expect(ledgerErrorCase {
            try ledger.setPrice(model: "acme-3", promptUSDPerMillion: "9", completionUSDPerMillion: "9", effectiveFrom: start)
        } == .conflict)
        // The fold of the pending consumes keeps the corrected figures.
        try ledger.write { try $0.execute(sql: "UPDATE ledger_settings SET rolled_up_to = (SELECT max(id) FROM events)") }
        #expect(try byModel(ledger, "acme-3") == (expected, 0, 1))
        #expect(try ledger.verify().problems == [])
    }

    @Test("a reprice by pattern bills what the table prices and counts what stays unpriced; an empty range reprices nothing, a reversed one is refused")
    func repriceByPattern() throws {
        // Proves `model` may be a pattern (every normalised name starting with its literal), that
        // only the consumes the table prices are billed, that the rest are reported, and that a
        // range whose end is not after its start is bad input naming `to`.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        let start = clock.read()
        for model in ["Zeta-1", "zeta-2 ", "zeta-3", "other"] {
            try ledger.consume("t", promptTokens: 1_000, completionTokens: 1, usage: UsageDetails(model: model))
        }
        try ledger.setPrice(model: "zeta-1", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: start)
        try ledger.setPrice(model: "zeta-2", promptUSDPerMillion: "2", completionUSDPerMillion: "2", effectiveFrom: start)
        try ledger.setPrice(model: "other", promptUSDPerMillion: "2", completionUSDPerMillion: "2", effectiveFrom: start)
        clock.advance(microseconds: 1)
        let result = try ledger.reprice(model: "zeta-*", from: start, to: start + 1)
        #expect(result == RepriceResult(repricedCount: 2, costNanodollars: 1_001_000 + 2_002_000, unpricedCount: 1, isComplete: true))
        #expect(try ledger.reprice(model: "zeta-3", from: start, to: start + 1)
            == RepriceResult(repricedCount: 0, costNanodollars: 0, unpricedCount: 1, isComplete: true))
        #expect(try byModel(ledger, "other") == (nil, 1, 0), "a model the pattern does not match stays unpriced")
        #expect(try ledger.reprice(model: "zeta-3", from: start, to: start).repricedCount == 0)
        #expect(ledgerErrorCase { try ledger.reprice(model: "zeta-3", from: start, to: start - 1) } == .invalidInput(field: "to"))
        #expect(try ledger.verify().problems == [])
    }

    @Test("a reprice stops at its per-call limit, says it is not complete, and the next call finishes the range")
    func repriceStopsAtItsLimit() throws {
        // Proves the limit on reprice events per call (`LedgerLimits.repricesPerCallMax`, here 2):
        // a range holding one more than the limit reprices exactly the limit with
        // `isComplete: false`, the next call bills the rest, and nothing is repriced twice.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        let start = clock.read()
        for _ in 0..<3 {
            try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "kappa-1"))
        }
        try ledger.setPrice(model: "kappa-1", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: start)
        clock.advance(microseconds: 1)
        let first = try ledger.reprice(model: "kappa-1", from: start, to: start + 1, limit: 2)
        #expect(first == RepriceResult(repricedCount: 2, costNanodollars: 2_000_000, unpricedCount: 1, isComplete: false))
        let second = try ledger.reprice(model: "kappa-1", from: start, to: start + 1, limit: 2)
        #expect(second == RepriceResult(repricedCount: 1, costNanodollars: 1_000_000, unpricedCount: 0, isComplete: true))
        #expect(try byModel(ledger, "kappa-1") == (3_000_000, 0, 1))
        #expect(try ledger.verify().problems == [])
    }

    @Test("verify catches a reprice whose cost differs from the price table, and one that names a billed consume")
    func verifyCatchesDamagedReprice() throws {
        // Proves verify checks each reprice against the price table at the consume's timestamp:
        // a plain-SQL writer's reprice one nano-dollar off is reported by its id; a reprice
        // naming a priced consume (with the schema's check dropped) is reported as stray.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        let start = clock.read()
        try ledger.consume("t", promptTokens: 100, completionTokens: 10, usage: UsageDetails(model: "acme-4"))
        try ledger.consume("t", promptTokens: 100, completionTokens: 10, usage: UsageDetails(model: "gpt-4o"))
        try ledger.setPrice(model: "acme-4", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: start)
        let damagedID = try ledger.write { connection in
            try connection.execute(
                sql: """
                    INSERT INTO events (timestamp_us, kind, thread_id, caused_by, cost_nanos)
                    SELECT timestamp_us, 'reprice', thread_id, id, 110 * 1000 + 1 FROM events
                    WHERE kind = 'consume' AND model = 'acme-4'
                    """)
            return connection.lastInsertRowID
        }
        #expect(try ledger.verify().problems == ["events: event \(damagedID) has a cost that differs from the price table"])

        let strayID = try ledger.write { connection in
            try connection.execute(sql: "DROP TRIGGER events_check_reprice")
            try connection.execute(
                sql: """
                    INSERT INTO events (timestamp_us, kind, thread_id, caused_by, cost_nanos)
                    SELECT timestamp_us, 'reprice', thread_id, id, 5 FROM events WHERE kind = 'consume' AND model = 'gpt-4o'
                    """)
            return connection.lastInsertRowID
        }
        let problems = try ledger.verify().problems
        #expect(problems.contains("events: reprice event \(strayID) names no consume recorded unpriced, or one already repriced"))
        #expect(problems.contains("trigger events_check_reprice is missing: events is no longer protected against rewrites"))
    }
}
