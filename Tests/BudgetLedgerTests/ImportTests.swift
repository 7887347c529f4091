import BudgetLedger
import BudgetLedgerWire
import Foundation
import LedgerSQLite
import Testing

/// `Ledger.importConsumes` and `ConsumeImport`: an NDJSON export recorded again in another ledger.
@Suite struct ImportTests {
    static let day: Int64 = 86_400_000_000
    /// 2026-12-01T00:00:00Z.
    static let start: Int64 = 1_796_083_200_000_000

    /// A source ledger with several agents, models (priced, priced differently from day 3, and
    /// unpriced), orgs and days, more than one fold (1,024 events) long; returns its NDJSON export.
    static func sourceExport(at path: String, consumes: Int = 1_300) throws -> String {
        let clock = ManualClock()
        clock.set(microseconds: start)
        let source = try Ledger(path: path, configuration: .init(synchronous: .normal, clock: clock.read))
        defer { source.close() }
        try setCustomPrices(source)
        let agents: [String?] = ["planner", "coder", nil]
        let models: [String?] = ["gpt-4o", "claude-sonnet-4", "custom-model", "mystery-model", nil]
        for index in 0..<consumes {
            clock.set(microseconds: start + Int64(index) * (5 * day / Int64(consumes)))
            let metadata = index % 4 == 0 ? nil : try Metadata(json: #"{"org_id":"org-\#(index % 3)","note":[1,2.5,"x"]}"#)
            try source.consume(
                "thread-\(index % 17)", promptTokens: Int64(100 + index), completionTokens: Int64(index % 50),
                usage: UsageDetails(
                    agentID: agents[index % 3], model: models[index % 5], provider: index % 2 == 0 ? "openai" : nil,
                    latencyMilliseconds: index % 3 == 0 ? nil : Int64(index), metadata: metadata))
        }
        var text = ""
        try source.exportEvents(ExportQuery(), format: .ndjson) { text += $0 }
        return text
    }

    /// `custom-model` at $1/$2 per million from the start and $3/$4 from day 3, in any ledger.
    static func setCustomPrices(_ ledger: Ledger) throws {
        try ledger.setPrice(model: "custom-model", promptUSDPerMillion: "1", completionUSDPerMillion: "2", effectiveFrom: 0)
        try ledger.setPrice(
            model: "custom-model", promptUSDPerMillion: "3", completionUSDPerMillion: "4", effectiveFrom: start + 3 * day)
    }

    /// Parses `text` (NDJSON) and imports it in batches of `batchSize`; returns imported and skipped.
    @discardableResult
    static func importText(_ text: String, into ledger: Ledger, batchSize: Int = 500) throws -> (imported: Int, skipped: Int) {
        var batch: [ImportedConsume] = []
        var totals = (imported: 0, skipped: 0)
        func flush() throws {
            let result = try ledger.importConsumes(batch)
            totals.imported += result.imported
            totals.skipped += result.skipped
            batch.removeAll()
        }
        for (offset, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            batch.append(try ConsumeImport.consume(line: Array(line.utf8), number: offset + 1))
            if batch.count == batchSize { try flush() }
        }
        try flush()
        return totals
    }

    /// Every row of a view, every column quoted, sorted: equal results mean equal views.
    static func rows(of view: String, at path: String) throws -> [String] {
        let connection = try Connection(path: path)
        defer { connection.close() }
        let columns = try connection.prepare("SELECT name FROM pragma_table_info(?)").fetchAll([view]) { try $0[0] as String }
        let expression = columns.map { "quote(\($0))" }.joined(separator: " || '|' || ")
        return try connection.prepare("SELECT \(expression) FROM \(view)").fetchAll { try $0[0] as String }.sorted()
    }

    static let billingViews = [
        "usage_by_agent", "usage_by_model", "usage_by_day", "usage_by_org", "usage_by_thread", "usage_totals",
        "billing_by_agent_model", "billing_by_org_model_day",
    ]

    @Test("an export imported into a fresh ledger gives the same billing views, and verify passes")
    func roundTripKeepsTheBillingViews() throws {
        let folder = try TemporaryFolder()
        let export = try Self.sourceExport(at: folder.path("source.db"))
        let target = try Ledger(path: folder.path("target.db"), configuration: .init(synchronous: .normal))
        try Self.setCustomPrices(target)
        let result = try Self.importText(export, into: target)
        #expect(result.imported == 1_300 && result.skipped == 0)
        let report = try target.verify()
        #expect(report.isConsistent, "verify: \(report.problems)")
        target.close()
        for view in Self.billingViews {
            let source = try Self.rows(of: view, at: folder.path("source.db"))
            #expect(!source.isEmpty, "\(view) is empty in the source")
            #expect(try Self.rows(of: view, at: folder.path("target.db")) == source, "\(view) differs")
        }
        // The custom model is billed at each line's own time's price: both prices appear.
        let reopened = try Ledger(path: folder.path("target.db"))
        defer { reopened.close() }
        let events = try allImported(reopened)
        #expect(events.count == 1_300)
        #expect(events.allSatisfy { $0.idempotencyKey?.hasPrefix("import:") == true })
        let custom = events.filter { $0.usage.model == "custom-model" }
        let early = custom.filter { $0.timestampMicroseconds < Self.start + 3 * Self.day }
        #expect(early.allSatisfy { $0.costNanodollars == $0.promptTokens * 1_000 + $0.completionTokens * 2_000 })
        #expect(custom.count > early.count && !early.isEmpty)
    }

    /// The consume events of `ledger`, through its export.
    func allImported(_ ledger: Ledger) throws -> [LedgerEvent] {
        var events: [LedgerEvent] = []
        try ledger.forEachConsumeEvent(ExportQuery()) { events.append($0) }
        return events
    }

    @Test("an import stopped after a prefix, then run whole, records every event exactly once")
    func resumingRecordsNothingTwice() throws {
        let folder = try TemporaryFolder()
        let export = try Self.sourceExport(at: folder.path("source.db"), consumes: 300)
        let lines = export.split(separator: "\n")
        let target = try Ledger(path: folder.path("target.db"), configuration: .init(synchronous: .normal))
        defer { target.close() }
        try Self.setCustomPrices(target)
        let prefix = lines.prefix(137).joined(separator: "\n")
        #expect(try Self.importText(prefix, into: target, batchSize: 50) == (137, 0))
        #expect(try Self.importText(export, into: target, batchSize: 64) == (163, 137))
        #expect(try Self.importText(export, into: target) == (0, 300))
        let events = try allImported(target)
        #expect(events.count == 300)
        #expect(Set(events.compactMap(\.idempotencyKey)).count == 300)
        #expect(try target.verify().isConsistent)
    }

    @Test("a bad line is refused naming its line and field, and nothing of its batch is written")
    func badLineWritesNothingOfItsBatch() throws {
        let target = try Ledger.inMemory()
        defer { target.close() }
        let good = #"{"id":1,"timestamp":"2026-12-01T10:00:00.000001Z","threadId":"t","promptTokens":5,"completionTokens":1}"#
        let cases: [(line: String, field: String)] = [
            ("{not json", "line 2"),
            ("[1]", "line 2"),
            (#"{"id":2,"id":3,"timestamp":"2026-12-01T10:00:00Z","threadId":"t","promptTokens":5,"completionTokens":1}"#, "id on line 2"),
            (#"{"id":2.5,"timestamp":"2026-12-01T10:00:00Z","threadId":"t","promptTokens":5,"completionTokens":1}"#, "id on line 2"),
            (#"{"id":2,"timestamp":"2026-12-01T10:00:00Z","threadId":"t","promptTokens":-5,"completionTokens":1}"#,
             "promptTokens on line 2"),
            (#"{"id":2,"timestamp":"2026-12-01T10:00:00Z","threadId":"\#(String(repeating: "x", count: 257))","promptTokens":5,"completionTokens":1}"#,
             "threadId on line 2"),
            (#"{"id":2,"timestamp":"yesterday","threadId":"t","promptTokens":5,"completionTokens":1}"#, "timestamp on line 2"),
            (#"{"id":2,"timestamp":"2026-12-01T10:00:00Z","promptTokens":5,"completionTokens":1}"#, "threadId on line 2"),
            (#"{"id":2,"timestamp":"2026-12-01T10:00:00Z","threadId":"t","promptTokens":"5","completionTokens":1}"#,
             "promptTokens on line 2"),
            (#"{"id":2,"timestamp":"2026-12-01T10:00:00Z","threadId":"t","promptTokens":5,"completionTokens":1,"metadata":{"org_id":7}}"#,
             "metadata.org_id on line 2"),
            (#"{"id":2,"kind":"limit","timestamp":"2026-12-01T10:00:00Z","threadId":"t","promptTokens":5,"completionTokens":1}"#,
             "kind on line 2"),
        ]
        for (line, field) in cases {
            let error = ledgerErrorCase { _ = try Self.importText(good + "\n" + line, into: target) }
            #expect(error == .invalidInput(field: field), "for \(line.prefix(60))")
        }
        #expect(try allImported(target).isEmpty)
        // A conflict found while recording (the same source id, another consume) takes the batch back too.
        let conflicting = good + "\n" + good.replacingOccurrences(of: #""promptTokens":5"#, with: #""promptTokens":6"#)
        #expect(ledgerErrorCase { _ = try Self.importText(conflicting, into: target) } == .conflict)
        #expect(try allImported(target).isEmpty)
        #expect(try Self.importText(good, into: target) == (1, 0))
    }

    @Test("a batch over importBatchMax is refused; an empty one records nothing")
    func batchLimits() throws {
        let target = try Ledger.inMemory()
        defer { target.close() }
        let one = try ImportedConsume(
            line: 1, sourceEventID: 1, timestampMicroseconds: Self.start, threadID: "t", promptTokens: 1,
            completionTokens: 0, usage: .none)
        let tooMany = Array(repeating: one, count: Ledger.importBatchMax + 1)
        #expect(ledgerErrorCase { _ = try target.importConsumes(tooMany) } == .invalidInput(field: "batch"))
        let empty = try target.importConsumes([])
        #expect(empty.imported == 0 && empty.skipped == 0)
        #expect(try allImported(target).isEmpty)
    }

    @Test("an imported consume keeps its fields and time, and counts on its thread as a consume")
    func importedConsumeKeepsItsFields() throws {
        let target = try Ledger.inMemory(maxTokensPerThread: 100)
        defer { target.close() }
        let line = #"{"id":42,"timestamp":"2026-12-02T03:04:05.678901Z","threadId":"t","promptTokens":70,"completionTokens":10,"#
            + #""agentId":"a","model":"gpt-4o","provider":"p","latencyMs":12,"cost":"999","metadata":{"org_id":"o"}}"#
        #expect(try Self.importText(line, into: target) == (1, 0))
        let event = try #require(try allImported(target).first)
        #expect(event.timestampMicroseconds == Self.start + Self.day + 11_045_678_901)
        #expect(event.idempotencyKey == "import:42")
        #expect(event.usage == UsageDetails(agentID: "a", model: "gpt-4o", provider: "p", latencyMilliseconds: 12,
                                            metadata: try Metadata(json: #"{"org_id":"o"}"#)))
        #expect(event.organizationID == "o")
        // gpt-4o at $2.5 / $10 per million, not the line's cost.
        let cost: Int64 = 70 * 2_500 + 10 * 10_000
        #expect(event.costNanodollars == cost)
        let budget = try #require(try target.usage("t"))
        #expect(budget.totalTokens == 80 && budget.triggeredThresholds == [75])
    }

    @Test("import is unchecked history: an exhausted thread still records, and a scope window counts history as a consume does")
    func importIsUncheckedAndWindowedByLineTime() throws {
        let clock = ManualClock()
        clock.set(microseconds: Self.start + Self.day + 3_600_000_000)  // day 2, 01:00
        let target = try Ledger.inMemory(maxTokensPerThread: 100, configuration: .init(clock: clock.read))
        defer { target.close() }
        _ = try target.setBudget(.global, period: .day, maxTokens: 1_000)
        let lines = (1...5).map { id in
            // Lines 1–3 on day 1, lines 4–5 on day 2: 100 tokens each.
            let time = Timestamps.iso8601(microseconds: Self.start + (id <= 3 ? 0 : Self.day) + Int64(id) * 1_000_000)
            return #"{"id":\#(id),"timestamp":"\#(time)","threadId":"t","promptTokens":90,"completionTokens":10}"#
        }
        #expect(try Self.importText(lines.joined(separator: "\n"), into: target) == (5, 0))
        let budget = try #require(try target.usage("t"))
        #expect(budget.totalTokens == 500 && budget.isExhausted)
        #expect(budget.triggeredThresholds == [75, 90, 95])
        // A scope window keeps the consume rule for a time before it (a clock stepped back): the
        // line counts in the window in force, here all five in day 2's. Setting the budget again
        // re-reads the window from the rollups, by each line's own day: the two of day 2.
        let counted = try #require(try target.budget(scope: .global))
        #expect(counted.spentTokens == 500 && counted.requestCount == 5)
        _ = try target.setBudget(.global, period: .day, maxTokens: 1_000)
        let reread = try #require(try target.budget(scope: .global))
        #expect(reread.spentTokens == 200 && reread.requestCount == 2)
        #expect(try target.verify().isConsistent)
    }
}
