import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// Issue 21: `importConsumes` applies derived state per batch; the row path (`record` per line)
/// is the reference. Same input, same events and derived tables, or a fallback to the row path.
@Suite struct ImportBatchTests {
    static let day: Int64 = 86_400_000_000
    /// 2026-12-01T00:00:00Z.
    static let start: Int64 = 1_796_083_200_000_000

    /// Every table kept from the events by the triggers or by the ledger's writer.
    static let derivedTables = [
        "thread_state", "thread_thresholds", "ledger_settings", "usage_rollup", "usage_agent_model", "holds",
        "scope_budgets", "scope_thresholds",
    ]

    /// A file ledger at `path` with the same history before the import whatever the path:
    /// `custom-model` priced twice (the second from day 2), `thread-1` at a max of 20,000 with
    /// its 75 % threshold fired, `thread-2` opened then cleaned up (the import opens it again),
    /// `thread-3` with a reset after spending; thresholds at 50, 75 and 90 %.
    static func preparedLedger(at path: String, clock: ManualClock) throws -> Ledger {
        clock.set(microseconds: start - day)
        let ledger = try Ledger(
            path: path, maxTokensPerThread: 40_000,
            configuration: .init(
                synchronous: .normal,
                thresholds: [
                    BudgetThreshold(percent: 50, severity: "half"), BudgetThreshold(percent: 75, severity: "warning"),
                    BudgetThreshold(percent: 90, severity: "critical"),
                ],
                clock: clock.read))
        try ledger.setPrice(model: "custom-model", promptUSDPerMillion: "1", completionUSDPerMillion: "2", effectiveFrom: 0)
        try ledger.setPrice(
            model: "custom-model", promptUSDPerMillion: "3", completionUSDPerMillion: "4", effectiveFrom: start + 2 * day)
        _ = try ledger.setLimit("thread-1", maxTokens: 20_000)
        try ledger.consume("thread-1", promptTokens: 15_500, completionTokens: 0)
        try ledger.consume("thread-2", promptTokens: 100)
        _ = try ledger.cleanupThread("thread-2")
        try ledger.consume("thread-3", promptTokens: 30_000)
        _ = try ledger.resetThread("thread-3")
        return ledger
    }

    /// `count` varied consumes over four days: 23 threads (new ones appearing late), priced,
    /// repriced-by-time and unpriced models, metadata with org and user on most, latency on some.
    static func lines(_ count: Int, firstSourceID: Int64 = 1) throws -> [ImportedConsume] {
        let models: [String?] = ["gpt-4o", "custom-model", "mystery-model", nil, "Custom-Model "]
        let agents: [String?] = ["planner", nil, "coder"]
        return try (0..<count).map { index in
            let metadata =
                index % 5 == 0
                ? nil : try Metadata(json: #"{"org_id":"org-\#(index % 3)","user_id":"u\#(index % 4)","n":\#(index)}"#)
            let thread = index < count / 2 ? "thread-\(index % 17)" : "thread-\(index % 23)"
            return try ImportedConsume(
                line: index + 1, sourceEventID: firstSourceID + Int64(index),
                timestampMicroseconds: start + Int64(index) * (4 * day / Int64(count)), threadID: thread,
                promptTokens: Int64(100 + (index * 37) % 500), completionTokens: Int64((index * 11) % 90),
                usage: UsageDetails(
                    agentID: agents[index % 3], model: models[index % 5], provider: index % 2 == 0 ? "p" : nil,
                    latencyMilliseconds: index % 3 == 0 ? nil : Int64(index % 700), metadata: metadata))
        }
    }

    /// Imports `lines` in batches of `batchSize`; returns the totals and every batch's route.
    static func importLines(
        _ lines: [ImportedConsume], into ledger: Ledger, batchSize: Int, rowByRow: Bool
    ) throws -> (imported: Int, skipped: Int, routes: [ImportRoute]) {
        var totals = (imported: 0, skipped: 0, routes: [ImportRoute]())
        for first in stride(from: 0, to: lines.count, by: batchSize) {
            let batch = Array(lines[first..<min(first + batchSize, lines.count)])
            let (result, route) = try ledger.importConsumes(batch, rowByRow: rowByRow)
            totals.imported += result.imported
            totals.skipped += result.skipped
            totals.routes.append(route)
        }
        return totals
    }

    /// Every row of `events` (every column, by id) and of every derived table, as text.
    static func contents(at path: String) throws -> [String: [String]] {
        try tableContents(at: path, tables: ["events"] + derivedTables)
    }

    /// Imports `lines` through the batch path into one new ledger and through the row path into
    /// another (same history before, same batches); expects equal contents and verify passing
    /// in both, and returns the batch path's routes.
    static func expectSameAsRowByRow(
        _ lines: [ImportedConsume], batchSize: Int, prepare: (Ledger) throws -> Void = { _ in },
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> (routes: [ImportRoute], contents: [String: [String]]) {
        let folder = try TemporaryFolder()
        var routes: [ImportRoute] = []
        for rowByRow in [false, true] {
            let clock = ManualClock()
            let ledger = try preparedLedger(at: folder.path("\(rowByRow).db"), clock: clock)
            defer { ledger.close() }
            try prepare(ledger)
            let totals = try importLines(lines, into: ledger, batchSize: batchSize, rowByRow: rowByRow)
            #expect(totals.imported == lines.count && totals.skipped == 0, sourceLocation: sourceLocation)
            #expect(try ledger.verify().isConsistent, sourceLocation: sourceLocation)
            if !rowByRow { routes = totals.routes }
        }
        let batched = try contents(at: folder.path("false.db"))
        let reference = try contents(at: folder.path("true.db"))
        for table in reference.keys.sorted() {
            let (left, right) = (batched[table] ?? [], reference[table] ?? [])
            #expect(left.count == right.count, "\(table) row count", sourceLocation: sourceLocation)
            let firstDifference = zip(left, right).first { $0 != $1 }
            #expect(firstDifference == nil, "\(table): batch \(firstDifference?.0 ?? "") vs row \(firstDifference?.1 ?? "")",
                    sourceLocation: sourceLocation)
        }
        return (routes, reference)
    }

    @Test("the batch path leaves the same events and derived tables as the row path, batches of 1, 7 and 2,000")
    func batchPathEqualsRowPath() throws {
        // Proves the batch path is the row path's result, not just its totals: 3,000 lines over
        // 23 threads (some new, one reopened after a cleanup, one after a reset, one with a
        // threshold fired before), thresholds crossed mid-batch, a price that changes between
        // lines' times, unpriced models, org and user metadata, three folds (events 1,024,
        // 2,048, 3,072). Every batch must have taken the batch path, or this proves nothing.
        let lines = try Self.lines(3_000)
        for batchSize in [1, 7, 2_000] {
            let (routes, contents) = try Self.expectSameAsRowByRow(lines, batchSize: batchSize)
            #expect(routes.allSatisfy { $0 == .batch }, "batch size \(batchSize): \(Set(routes.map { "\($0)" }))")
            // The input does what it claims: thresholds crossed, threads opened, folds run.
            let events = contents["events"] ?? []
            #expect(events.filter { $0.contains("|'threshold'|") }.count > 40)
            #expect(events.filter { $0.contains("|'open'|") }.count > 20)
            #expect(contents["ledger_settings"]?.first?.split(separator: "|")[3] == "3072")
        }
    }

    @Test("a thread crossing every threshold within one batch gets its threshold events right after the consume that crossed")
    func crossingsInsideOneBatch() throws {
        // Proves the running total: one thread of max 40,000 takes 100 lines of 500 tokens in
        // one batch, crossing 50 %, 75 % and 90 % at lines 40, 60 and 72, each event caused by
        // its consume and counting the tokens used then.
        let lines = try (0..<100).map { index in
            try ImportedConsume(
                line: index + 1, sourceEventID: Int64(index + 1), timestampMicroseconds: Self.start + Int64(index),
                threadID: "hot", promptTokens: 400, completionTokens: 100, usage: .none)
        }
        let (routes, contents) = try Self.expectSameAsRowByRow(lines, batchSize: 100)
        #expect(routes == [.batch])
        #expect(contents["thread_thresholds"]?.filter { $0.hasPrefix("'hot'|") }.count == 3)
    }

    @Test("a ledger with a scope budget imports row by row, with the scope's spend as a consume's")
    func scopeBudgetFallsBack() throws {
        let lines = try Self.lines(300)
        let (routes, _) = try Self.expectSameAsRowByRow(lines, batchSize: 100) { ledger in
            _ = try ledger.setBudget(.global, period: .day, maxTokens: 1_000_000)
        }
        #expect(routes == Array(repeating: .rowByRow(.scopeBudget), count: 3))
    }

    @Test("a batch touching a thread with a hold imports row by row; the others take the batch path")
    func holdsFallBack() throws {
        // thread-20 is touched from line 159 on (batches 2 and 3) and holds 1,000 tokens until
        // day 2.5 of the import: live at its first line, expired (an expiry to record) later.
        let lines = try Self.lines(300)
        let (routes, _) = try Self.expectSameAsRowByRow(lines, batchSize: 100) { ledger in
            _ = try ledger.reserve("thread-20", tokens: 1_000, ttlSeconds: 3 * 86_400 + 43_200)
        }
        #expect(routes == [.batch, .rowByRow(.holds), .rowByRow(.holds)])
    }

    @Test("running the same import again skips every line through the row path; a partly recorded batch too")
    func rerunSkips() throws {
        let folder = try TemporaryFolder()
        let ledger = try Self.preparedLedger(at: folder.path("ledger.db"), clock: ManualClock())
        defer { ledger.close() }
        let lines = try Self.lines(500)
        let first = try Self.importLines(Array(lines.prefix(130)), into: ledger, batchSize: 100, rowByRow: false)
        #expect(first.imported == 130 && first.routes == [.batch, .batch])
        let before = try Self.contents(at: folder.path("ledger.db"))
        let again = try Self.importLines(Array(lines.prefix(130)), into: ledger, batchSize: 100, rowByRow: false)
        #expect(again.imported == 0 && again.skipped == 130)
        #expect(again.routes == [.rowByRow(.insertRefused), .rowByRow(.insertRefused)])
        #expect(try Self.contents(at: folder.path("ledger.db")) == before)
        // Lines 101–130 recorded, 131–200 not: the batch goes row by row, skipping 30.
        let rest = try Self.importLines(Array(lines.dropFirst(100)), into: ledger, batchSize: 100, rowByRow: false)
        #expect(rest.imported == 370 && rest.skipped == 30)
        #expect(rest.routes == [.rowByRow(.insertRefused), .batch, .batch, .batch])
        #expect(try ledger.verify().isConsistent)
    }

    @Test("a key recorded for another consume, in the ledger or earlier in the batch, is a conflict naming the line")
    func conflictNamesTheLine() throws {
        let folder = try TemporaryFolder()
        let ledger = try Self.preparedLedger(at: folder.path("ledger.db"), clock: ManualClock())
        defer { ledger.close() }
        let lines = try Self.lines(50)
        _ = try ledger.importConsumes(Array(lines.prefix(10)))
        let before = try Self.contents(at: folder.path("ledger.db"))
        // Line 25 reuses source id 4 (recorded) for another consume.
        var changed = Array(lines.dropFirst(10))
        changed[14] = try ImportedConsume(
            line: 25, sourceEventID: 4, timestampMicroseconds: Self.start, threadID: "thread-0", promptTokens: 1,
            completionTokens: 0, usage: .none)
        do {
            _ = try ledger.importConsumes(changed)
            Issue.record("a conflict with a recorded key was recorded")
        } catch LedgerError.conflict(let reason) {
            #expect(reason.hasPrefix("line 25: idempotency key import:4 was already used by event"))
        }
        // Within one batch: lines 11 and 12 share source id 11 with different tokens.
        var twice = Array(lines.dropFirst(10))
        twice[1] = try ImportedConsume(
            line: 12, sourceEventID: 11, timestampMicroseconds: Self.start, threadID: "thread-0", promptTokens: 1,
            completionTokens: 0, usage: .none)
        do {
            _ = try ledger.importConsumes(twice)
            Issue.record("a conflict within the batch was recorded")
        } catch LedgerError.conflict(let reason) {
            #expect(reason.hasPrefix("line 12: idempotency key import:11"))
        }
        #expect(try Self.contents(at: folder.path("ledger.db")) == before)
    }

    @Test("a batch that would pass the all-time capacity falls back, and the error names the line that reached it")
    func capacityNamesTheLine() throws {
        let folder = try TemporaryFolder()
        let path = folder.path("ledger.db")
        let ledger = try Self.preparedLedger(at: path, clock: ManualClock())
        defer { ledger.close() }
        // The all-time prompt sum 400 short of the capacity (a plain connection: the sums are a
        // cache nothing guards against such a write), once every consume so far is folded in it.
        let connection = try Connection(path: path)
        try connection.execute(sql: "UPDATE ledger_settings SET rolled_up_to = (SELECT max(id) FROM events)")
        try connection.execute(
            "UPDATE ledger_settings SET all_time_prompt_tokens = ?", [4_000_000_000_000_000_000 - 400 as Int64])
        connection.close()
        // Lines 1–5 add 50, 100, 150, 200, 250 tokens: after line 3 the sums are 100 short, and
        // line 4 would pass the capacity.
        let lines = try (1...5).map { id in
            try ImportedConsume(
                line: id, sourceEventID: Int64(id), timestampMicroseconds: Self.start, threadID: "t",
                promptTokens: Int64(id * 50), completionTokens: 0, usage: .none)
        }
        do {
            _ = try ledger.importConsumes(lines)
            Issue.record("the capacity was passed")
        } catch LedgerError.conflict(let reason) {
            #expect(reason == "line 4: ledger capacity reached: the all-time prompt_tokens would pass 4000000000000000000")
        }
        #expect(try ledger.usage("t") == nil)
    }
}
