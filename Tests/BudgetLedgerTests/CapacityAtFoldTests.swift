@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// Migration 0017: the all-time sums hold the folded consumes and are added at the fold, so a
/// consume's commit does not write them; the capacity is still exact (`FoldMark`).
@Suite("The capacity checked at the fold (migration 0017)")
struct CapacityAtFoldTests {
    static let capacity = LedgerLimits.allTimeSumMax

    @Test("the bound admits the pending events while each at its limits keeps every sum within the capacity")
    func boundArithmetic() {
        // Proves FoldMark.admits: with a cost bound of 2e15 a consume, 2,000 events fill 4e18
        // exactly and 2,001 do not fit; a folded sum leaves that much less room; a gap too large
        // to multiply admits nothing; and the fold is due at every 1,024th event, when the bound
        // fails, or for a cost above the bound.
        let mark = FoldMark(
            rolledUpTo: 1_000, allTimePromptTokens: 0, allTimeCompletionTokens: 0, allTimeCostNanodollars: 0,
            allTimeLatencyMilliseconds: 0, consumeCostBoundNanodollars: 2_000_000_000_000_000)
        #expect(mark.admits(through: 3_000))
        #expect(!mark.admits(through: 3_001))
        var spent = mark
        spent.allTimeCostNanodollars = Self.capacity - 10 * 2_000_000_000_000_000
        #expect(spent.admits(through: 1_010) && !spent.admits(through: 1_011))
        spent.allTimeCostNanodollars = 0
        spent.allTimePromptTokens = Self.capacity - 5 * LedgerLimits.tokensPerCallMax
        #expect(spent.admits(through: 1_005) && !spent.admits(through: 1_006))
        #expect(!mark.admits(through: Int64.max))
        #expect(mark.foldIsDue(after: 2_048, costNanodollars: nil))
        #expect(!mark.foldIsDue(after: 2_049, costNanodollars: 2_000_000_000_000_000))
        #expect(mark.foldIsDue(after: 2_049, costNanodollars: 2_000_000_000_000_001))
        #expect(mark.foldIsDue(after: 3_001, costNanodollars: nil))
    }

    @Test("the cost bound is 1e9 times the greatest price ever set, withdrawn or not, and only rises")
    func costBoundFollowsThePrices() throws {
        // Proves 0017's model_prices trigger and verify's recomputation of the bound: it starts
        // at the seeded prices' greatest; a greater price raises it to 1e9 × (prompt +
        // completion); a lower price and a withdrawal leave it; a tampered bound is named by verify.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let clock = ManualClock()
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(clock: clock.read))
        defer { ledger.close() }
        let bound = { try ledger.withConnection { try FoldMark.read(on: $0).consumeCostBoundNanodollars } }
        let seeded = try ledger.withConnection { connection in
            try connection.prepare("SELECT max(prompt_nanos_per_token + completion_nanos_per_token) FROM model_prices")
                .fetchOne { try $0[0] as Int64 } ?? 0
        }
        #expect(try bound() == 1_000_000_000 * seeded)
        _ = try ledger.setPrice(model: "a", promptUSDPerMillion: "100", completionUSDPerMillion: "200")
        #expect(try bound() == 1_000_000_000 * 300_000)
        _ = try ledger.setPrice(model: "b", promptUSDPerMillion: "1", completionUSDPerMillion: "2")
        #expect(try bound() == 1_000_000_000 * 300_000)
        let future = try ledger.setPrice(
            model: "c", promptUSDPerMillion: "500", completionUSDPerMillion: "1000",
            effectiveFrom: clock.read() + 3_600_000_000)
        #expect(try bound() == 1_000_000_000 * 1_500_000)
        _ = try ledger.withdrawPrice(model: "c", effectiveFrom: future.effectiveFromMicroseconds)
        #expect(try bound() == 1_000_000_000 * 1_500_000)
        #expect(try ledger.verify().problems == [])
        try ledger.write { try $0.execute(sql: "UPDATE ledger_settings SET consume_cost_bound_nanos = 1") }
        #expect(try ledger.verify().problems.contains { $0.hasPrefix("ledger_settings: row 1 differs") })
    }

    @Test("far from the capacity a consume leaves the sums alone; each fold adds exactly the consumes it folds")
    func sumsMoveAtTheFold() throws {
        // Proves the new meaning of ledger_settings' sums: after every consume they equal the sums
        // of the consumes up to rolled_up_to (and every reprice), the mark moves only at every
        // 1,024th event, and verify agrees throughout.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        defer { ledger.close() }
        _ = try ledger.setPrice(model: "m", promptUSDPerMillion: "2", completionUSDPerMillion: "3")
        let reader = try Connection(path: path)
        defer { reader.close() }
        let compare = """
            SELECT g.rolled_up_to, g.all_time_prompt_tokens, g.all_time_completion_tokens, g.all_time_cost_nanos,
                   g.all_time_latency_ms,
                   (SELECT coalesce(sum(prompt_tokens), 0) FROM events WHERE kind = 'consume' AND id <= g.rolled_up_to),
                   (SELECT coalesce(sum(completion_tokens), 0) FROM events WHERE kind = 'consume' AND id <= g.rolled_up_to),
                   (SELECT coalesce(sum(cost_nanos), 0) FROM events WHERE kind = 'consume' AND id <= g.rolled_up_to),
                   (SELECT coalesce(sum(latency_ms), 0) FROM events WHERE kind = 'consume' AND id <= g.rolled_up_to)
            FROM ledger_settings AS g
            """
        var marks: Set<Int64> = []
        for call in 1...1_100 {
            let result = try ledger.consume(
                "t\(call % 3)", promptTokens: Int64(call), completionTokens: 7,
                usage: UsageDetails(model: call % 4 == 0 ? "unpriced" : "m", latencyMilliseconds: Int64(call % 50)))
            guard call % 50 == 0 || (1_020...1_030).contains(call) else { continue }
            let row = try #require(try reader.prepare(compare).fetchOne { row in (0..<9).map { try? row[$0] as Int64 } })
            #expect(Array(row[1...4]) == Array(row[5...8]), "after event \(result.event.id)")
            let mark = try #require(row[0])
            #expect(mark % FoldMark.foldEveryEvents == 0 && result.event.id - mark < FoldMark.foldEveryEvents)
            marks.insert(mark)
        }
        #expect(marks == [0, 1_024], "the mark moved at the fold: \(marks.sorted())")
        #expect(try reader.prepare("SELECT all_time_prompt_tokens FROM ledger_settings").fetchOne { try $0[0] as Int64 }
            ?? 0 > 0)
        #expect(try ledger.verify().problems == [])
        #expect(try ledger.usageOverview(.allTime).totals.promptTokens == (1...1_100).reduce(0, +))
    }

    @Test("a plain-SQL consume costing more than any price allows is folded at once")
    func plainSQLCostAboveTheBoundFolds() throws {
        // Proves consumes_to_apply_insert keeps the bound true for writers that set their own
        // cost: a consume above the bound folds (the mark moves to it), one within it does not.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        defer { ledger.close() }
        _ = try ledger.setPrice(model: "m", promptUSDPerMillion: "1", completionUSDPerMillion: "1")
        try ledger.setLimit("t", maxTokens: 1_000)
        let raw = try Connection(path: path)
        defer { raw.close() }
        let insert = "INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, cost_nanos) VALUES (1, 'consume', 't', 1, ?)"
        let mark = { try raw.prepare("SELECT rolled_up_to, all_time_cost_nanos FROM ledger_settings").fetchOne {
            (try $0[0] as Int64, try $0[1] as Int64) }! }
        let bound = try ledger.withConnection { try FoldMark.read(on: $0).consumeCostBoundNanodollars }
        #expect(bound > 0)
        try raw.execute(insert, [bound])
        #expect(try mark() == (0, 0), "a cost at the bound waits for the fold")
        try raw.execute(insert, [bound + 1])
        let last = try raw.prepare("SELECT max(id) FROM events").fetchOne { try $0[0] as Int64 }!
        #expect(try mark() == (last, 2 * bound + 1), "a cost past the bound is folded at once")
        // (verify names these consumes' costs, which no price gives, and nothing else.)
        #expect(try ledger.verify().problems.allSatisfy { $0.hasSuffix("has a cost that differs from the price table") })
    }

    @Test("past the bound each consume folds first, and the capacity is exact on every write path")
    func exactNearTheCapacity() throws {
        // Proves the slow path: with the folded prompt sum 1,000 short of the capacity, a consume
        // of 600 is recorded and folded at once, 401 more are refused naming the column with
        // nothing written, 400 are recorded (the sum then at the capacity exactly), and 1 more
        // is refused. The same through the writer (`consume`), an import batch (the batch path),
        // and plain SQL (0017's consumes_to_apply_insert).
        for path in ["writer", "import", "plain SQL"] {
            let folder = try TemporaryFolder()
            let file = folder.path("l.db")
            let ledger = try Ledger(path: file)
            defer { ledger.close() }
            try ledger.setLimit("t", maxTokens: LedgerLimits.maxTokensMax)
            let raw = try Connection(path: file)
            defer { raw.close() }
            try raw.execute(sql: "UPDATE ledger_settings SET rolled_up_to = (SELECT max(id) FROM events)")
            try raw.execute("UPDATE ledger_settings SET all_time_prompt_tokens = ?", [Self.capacity - 1_000])
            var line = 0
            let record = { (tokens: Int64) throws -> Void in
                line += 1
                switch path {
                case "writer":
                    try ledger.consume("t", promptTokens: tokens)
                case "import":
                    _ = try ledger.importConsumes([
                        try ImportedConsume(
                            line: line, sourceEventID: Int64(line), timestampMicroseconds: 1, threadID: "t",
                            promptTokens: tokens, completionTokens: 0, usage: .none)
                    ])
                default:
                    try raw.execute(
                        "INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens) VALUES (1, 'consume', 't', ?)",
                        [tokens])
                }
            }
            let refused = { (tokens: Int64) throws -> Void in
                let before = try eventCount(at: file)
                do {
                    try record(tokens)
                    Issue.record("\(path): a consume past the capacity was recorded")
                } catch LedgerError.conflict(let reason) {
                    #expect(reason.hasSuffix("ledger capacity reached: the all-time prompt_tokens would pass \(Self.capacity)"),
                            "\(path): \(reason)")
                } catch let error as SQLiteError {
                    #expect(path == "plain SQL" && error.isCapacityReached, "\(path): \(error)")
                }
                #expect(try eventCount(at: file) == before, "\(path): the refused consume left an event")
            }
            let mark = { try raw.prepare("SELECT rolled_up_to, all_time_prompt_tokens FROM ledger_settings")
                .fetchOne { (try $0[0] as Int64, try $0[1] as Int64) } }
            try record(600)
            let lastID = { try raw.prepare("SELECT max(id) FROM events").fetchOne { try $0[0] as Int64 } }
            #expect(try mark()! == (try lastID()!, Self.capacity - 400), "\(path): folded at once")
            try refused(401)
            try record(400)
            #expect(try mark()!.1 == Self.capacity, "\(path)")
            try refused(1)
            #expect(try ledger.usage("t")?.totalTokens == 1_000, "\(path)")
        }
    }

    @Test("a reprice past the bound folds first, so its cost is checked against every consume")
    func repriceFoldsFirst() throws {
        // Proves 0017's reprice rule: with the folded cost near the capacity and a priced consume
        // pending, a reprice whose cost passes the capacity only with the pending consume counted
        // is refused (nothing written), and one that fits exactly is recorded.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let clock = ManualClock()
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(clock: clock.read))
        defer { ledger.close() }
        let unpriced = try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "late"))
        let raw = try Connection(path: path)
        defer { raw.close() }
        try raw.execute(sql: "UPDATE ledger_settings SET rolled_up_to = (SELECT max(id) FROM events)")
        clock.advance(microseconds: 1)
        _ = try ledger.setPrice(model: "m", promptUSDPerMillion: "1000", completionUSDPerMillion: "1000")
        clock.advance(microseconds: 1)
        let pendingCost = try #require(try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "m")).event.costNanodollars)
        // 1,000 tokens at $10,000 a million (the price limit): the reprice's cost.
        let repriceCost: Int64 = 1_000 * LedgerLimits.priceNanodollarsPerTokenMax
        try raw.execute("UPDATE ledger_settings SET all_time_cost_nanos = ?", [Self.capacity - repriceCost - pendingCost + 1])
        _ = try ledger.setPrice(
            model: "late", promptUSDPerMillion: "10000", completionUSDPerMillion: "0", effectiveFrom: unpriced.event.timestampMicroseconds)
        let before = try eventCount(at: path)
        let range = (from: unpriced.event.timestampMicroseconds, to: unpriced.event.timestampMicroseconds + 1)
        do {
            _ = try ledger.reprice(model: "late", from: range.from, to: range.to)
            Issue.record("a reprice past the capacity was recorded")
        } catch LedgerError.conflict(let reason) {
            #expect(reason.contains("ledger capacity reached: the all-time cost_nanos"), "\(reason)")
        }
        #expect(try eventCount(at: path) == before)
        try raw.execute(sql: "UPDATE ledger_settings SET all_time_cost_nanos = all_time_cost_nanos - 1")
        #expect(try ledger.reprice(model: "late", from: range.from, to: range.to).repricedCount == 1)
        #expect(try raw.prepare("SELECT all_time_cost_nanos FROM ledger_settings").fetchOne { try $0[0] as Int64 } == Self.capacity)
    }
}
