import BudgetLedger
import BudgetLedgerPostgres
import BudgetLedgerWire
import Foundation
import LedgerSQLite
import Synchronization
import Testing

/// Text collected from an asynchronous export's writes.
private final class Collected: Sendable {
    let text = Mutex("")
    func append(_ piece: String) { text.withLock { $0 += piece } }
    var value: String { text.withLock { $0 } }
}

/// The PostgreSQL export of `query`, rendered as the server and the CLI render it.
private func postgresExport(
    _ postgres: PostgresLedger, _ query: ExportQuery, format: ExportFormat, pageEventsMax: Int
) async throws -> String {
    let collected = Collected()
    try await format.exportEvents(
        pages: { body in try await postgres.forEachConsumeEventPage(query, pageEventsMax: pageEventsMax, body) },
        to: { collected.append($0) })
    return collected.value
}

/// The SQLite export of `query`, as `budget-ledger export` and the route write it.
private func sqliteExport(_ sqlite: Ledger, _ query: ExportQuery, format: ExportFormat) throws -> String {
    var text = ""
    try sqlite.exportEvents(query, format: format, to: { text += $0 })
    return text
}

@Suite("usage exports on PostgreSQL")
struct PostgresExportTests {
    /// The same calls on both stores, at the same clock readings, across four UTC days: priced
    /// and unpriced models, case and space variants of one model name, two orgs and none, agents
    /// and none, latencies and none, a settled hold, events that are not consumes, and one
    /// model's usage recorded unpriced and repriced since (exported at its corrected cost).
    private static func record(sqlite: Ledger, postgres: PostgresLedger, clock: TestClock) async throws {
        let start = clock.read()
        _ = try sqlite.setPrice(model: "gpt-4o*", promptUSDPerMillion: "2.5", completionUSDPerMillion: "10")
        _ = try await postgres.setPrice(model: "gpt-4o*", promptUSDPerMillion: "2.5", completionUSDPerMillion: "10")
        let acme = #"{"org_id":"acme","user_id":"ann"}"#
        let beta = #"{"org_id":"beta"}"#
        let calls: [(String, Int64, Int64, UsageDetails)] = [
            ("t-a", 1_000, 200, try UsageDetails(agentID: "planner", model: "GPT-4o-mini", latencyMilliseconds: 120, metadataJSON: acme)),
            ("t-b", 10, 0, try UsageDetails(agentID: "coder", model: "other-model", metadataJSON: beta)),
            ("T-a", 300, 30, try UsageDetails(model: " gpt-4o-mini  ", latencyMilliseconds: 40, metadataJSON: acme)),
            ("t-a", 7, 3, UsageDetails()),
            ("t-c", 50, 5, try UsageDetails(agentID: "Planner", model: "gpt-4O-MINI", metadataJSON: beta)),
            ("t-b", 0, 9, UsageDetails(agentID: "coder", model: "Other-Model", latencyMilliseconds: 7)),
        ]
        for (index, (thread, prompt, completion, usage)) in calls.enumerated() {
            if index == 1 {
                _ = try sqlite.setLimit("t-b", maxTokens: 10_000)
                _ = try await postgres.setLimit("t-b", maxTokens: 10_000)
            }
            _ = try sqlite.consume(thread, promptTokens: prompt, completionTokens: completion, usage: usage)
            _ = try await postgres.consume(thread, promptTokens: prompt, completionTokens: completion, usage: usage)
            clock.advance(microseconds: 11 * 3_600_000_000)
        }
        let hold = try UsageDetails(agentID: "coder", model: "gpt-4o", metadataJSON: acme)
        let sqliteHold = try sqlite.reserve("t-d", tokens: 500, usage: hold)
        let postgresHold = try await postgres.reserve("t-d", tokens: 500, usage: hold)
        #expect(sqliteHold.reservation.id == postgresHold.reservation.id)
        _ = try sqlite.settle(sqliteHold.reservation.id, promptTokens: 400, completionTokens: 20, usage: hold)
        _ = try await postgres.settle(postgresHold.reservation.id, promptTokens: 400, completionTokens: 20, usage: hold)
        _ = try sqlite.setPrice(model: "other-model", promptUSDPerMillion: "3", completionUSDPerMillion: "7", effectiveFrom: start)
        _ = try await postgres.setPrice(model: "other-model", promptUSDPerMillion: "3", completionUSDPerMillion: "7", effectiveFrom: start)
        let sqliteReprice = try sqlite.reprice(model: "other-model", from: start, to: clock.read())
        #expect(try await postgres.reprice(model: "other-model", from: start, to: clock.read()) == sqliteReprice)
        #expect(sqliteReprice.repricedCount == 2)
    }

    /// The ranges and filters the comparisons run over: all, a window cutting through the
    /// middle day, each org, an org with nothing, and an empty range.
    private static func queries(start: Int64) -> [ExportQuery] {
        let hour: Int64 = 3_600_000_000
        return [
            ExportQuery(), ExportQuery(from: start + 12 * hour, to: start + 40 * hour),
            ExportQuery(from: start + 11 * hour), ExportQuery(to: start + 22 * hour),
            ExportQuery(organizationID: "acme"), ExportQuery(from: start, organizationID: "beta"),
            ExportQuery(organizationID: "nobody"), ExportQuery(from: start + hour, to: start + hour),
        ]
    }

    @Test("event exports and every rollup are byte-identical to SQLite's over the same calls, for every format and filter")
    func exportsMatchSQLite() async throws {
        // Proves the PostgreSQL exports keep SQLite's semantics: the same consumes (and only
        // consumes) in id order, the same groups (model names by the one rule, the UTC day,
        // no key first, byte order), the same totals with unpriced requests and tokens, under
        // from (inclusive), to (exclusive) and org; across cursor pages of 1, 2 and 1,000.
        let clock = TestClock()
        let start = clock.read()
        let sqlite = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        defer { sqlite.close() }
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { postgres, _ in
            try await Self.record(sqlite: sqlite, postgres: postgres, clock: clock)
            var compared = 0
            for query in Self.queries(start: start) {
                for format in ExportFormat.allCases {
                    let expected = try sqliteExport(sqlite, query, format: format)
                    for pageEventsMax in [1, 2, PostgresLedger.exportPageEventsMax] {
                        let actual = try await postgresExport(postgres, query, format: format, pageEventsMax: pageEventsMax)
                        #expect(actual == expected, "\(query) \(format) pages of \(pageEventsMax)")
                        compared += 1
                    }
                    for grouping in ExportGrouping.allCases {
                        let sqliteRows = format.render(try sqlite.rollup(query, by: grouping), grouping: grouping)
                        let postgresRows = format.render(try await postgres.rollup(query, by: grouping), grouping: grouping)
                        #expect(postgresRows == sqliteRows, "\(query) \(format) by \(grouping)")
                    }
                }
            }
            // The comparisons are not vacuous: the whole export has every consume, the model
            // rollup folds the case variants into one row, unpriced usage is counted, and the
            // repriced model is billed: 10 × 3,000 + 9 × 7,000 nano-dollars, none left unpriced.
            let all = try sqliteExport(sqlite, ExportQuery(), format: .ndjson)
            #expect(all.split(separator: "\n").count == 7)
            let byModel = try await postgres.rollup(ExportQuery(), by: .model)
            #expect(byModel.map(\.key) == [nil, "gpt-4o", "gpt-4o-mini", "other-model"])
            #expect(byModel.first { $0.key == nil }?.totals.unpricedTokens == 10)
            let repriced = byModel.first { $0.key == "other-model" }?.totals
            #expect(repriced?.costNanodollars == 93_000 && repriced?.unpricedTokens == 0 && repriced?.unpricedRequests == 0)
            #expect(byModel.first { $0.key == "gpt-4o-mini" }?.totals.requestCount == 3)
            #expect(try await postgres.rollup(ExportQuery(), by: .day).count == 4)
            #expect(compared == 8 * 3 * 3)
        }
    }

    @Test("a bad org or a range that ends before it starts is the same invalid-input error as on SQLite, before any row")
    func badQueriesFailAsOnSQLite() async throws {
        // Proves the stores share the query's validation: the same error, naming the field.
        let sqlite = try Ledger.inMemory()
        defer { sqlite.close() }
        try await withPostgresLedger { postgres, _ in
            let bad = [ExportQuery(organizationID: ""), ExportQuery(organizationID: "a\tb"), ExportQuery(from: 10, to: 5)]
            for query in bad {
                let expected = await outcome { try sqliteExport(sqlite, query, format: .csv) }
                #expect(expected.hasPrefix("error LedgerError"), "\(expected)")
                #expect(await outcome { try await postgresExport(postgres, query, format: .csv, pageEventsMax: 10) } == expected)
                let expectedRollup = await outcome { try sqlite.rollup(query, by: .org).count }
                #expect(await outcome { try await postgres.rollup(query, by: .org).count } == expectedRollup)
            }
        }
    }

    @Test("an export reads one snapshot: a consume committed while it streams is not in it")
    func exportReadsOneSnapshot() async throws {
        // Proves the export's pages come from one snapshot (its REPEATABLE READ transaction and
        // cursor): a consume in the range, committed by another connection after the first page
        // was handed over, is in no later page, while a new export sees it.
        try await withPostgresLedger { postgres, _ in
            for index in 0..<3 {
                _ = try await postgres.consume("t-\(index)", promptTokens: 10)
            }
            let pages = Collected()
            try await postgres.forEachConsumeEventPage(ExportQuery(), pageEventsMax: 1) { page in
                let isFirst = pages.value.isEmpty
                pages.append(page.map { ($0.threadID ?? "-") + "\n" }.joined())
                if isFirst { _ = try await postgres.consume("t-late", promptTokens: 5) }
            }
            #expect(pages.value == "t-0\nt-1\nt-2\n")
            let later = Collected()
            try await postgres.forEachConsumeEventPage(ExportQuery()) { page in
                later.append(page.map { ($0.threadID ?? "-") + "\n" }.joined())
            }
            #expect(later.value == "t-0\nt-1\nt-2\nt-late\n")
        }
    }

    @Test("budget-ledger export prints the same bytes from a SQLite file and a PostgreSQL database holding the same calls")
    func cliExportsMatch() async throws {
        // Proves `export --db postgres://` (events and every --group-by, every format, with
        // --from/--to/--org, and --out) prints what `export --db FILE` prints for the same
        // ledger, and refuses a bad query with exit 64 naming the option, as on SQLite.
        let clock = TestClock()
        let start = clock.read()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pg-export-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("ledger.db").path
        let sqlite = try Ledger(path: file, configuration: Ledger.Configuration(clock: clock.read))
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { postgres, url in
            try await Self.record(sqlite: sqlite, postgres: postgres, clock: clock)
            sqlite.close()
            let from = Timestamps.iso8601(microseconds: start + 12 * 3_600_000_000)
            let options: [[String]] = [
                [], ["--from", from], ["--org", "acme", "--to", Timestamps.iso8601(microseconds: start + 50 * 3_600_000_000)],
            ]
            for format in ["csv", "ndjson", "json"] {
                for grouping in [nil, "org", "agent", "model", "thread", "day"] as [String?] {
                    for extra in options {
                        let arguments = ["export", "--format", format] + (grouping.map { ["--group-by", $0] } ?? []) + extra
                        let expected = try runCLI(arguments + ["--db", file])
                        #expect(expected.status == 0, "\(expected.stderr)")
                        let actual = try runCLI(arguments + ["--db", url])
                        #expect(actual.status == 0, "\(actual.stderr)")
                        #expect(actual.stdout == expected.stdout, "\(arguments)")
                        #expect(expected.stdout.count > 40, "\(arguments): \(expected.stdout)")
                    }
                }
            }
            let out = folder.appendingPathComponent("export.csv").path
            #expect(try runCLI(["export", "--format", "csv", "--out", out, "--db", url]).status == 0)
            #expect(try String(contentsOfFile: out, encoding: .utf8) == runCLI(["export", "--format", "csv", "--db", file]).stdout)

            for (extra, option) in [
                (["--org", "a\tb"], "org"), (["--from", "2026-02-01", "--to", "2026-01-01"], "ends before it starts"), (["--from", "soon"], "--from"),
            ] {
                let expected = try runCLI(["export", "--format", "csv", "--db", file] + extra)
                let actual = try runCLI(["export", "--format", "csv", "--db", url] + extra)
                #expect(expected.status == 64 && actual.status == 64, "\(extra): \(expected.stderr) / \(actual.stderr)")
                #expect(actual.stderr.contains(option) && actual.stdout.isEmpty, "\(actual.stderr)")
                #expect(!actual.stderr.contains("SELECT") && !actual.stderr.contains("DECLARE"))
            }
        }
    }
}
