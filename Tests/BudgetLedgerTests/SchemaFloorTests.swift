@testable import BudgetLedger
import Foundation
import Testing

@Suite("make bench-floor measures the SQL the ledger runs")
struct SchemaFloorTests {
    @Test("the floor harness's C copies of the hot-path statements equal LedgerSQL's")
    func floorRunsTheLedgersStatements() throws {
        // Proves Sources/schema-floor/main.c still drives the thread read and the consume insert
        // the ledger runs: C cannot share the Swift strings, so a change to either side without
        // the other would make the floor measure SQL the ledger no longer runs.
        let source = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/schema-floor/main.c")
        let text = try String(contentsOf: source, encoding: .utf8)
        #expect(try normalized(cString(named: "select_thread", in: text)) == normalized(LedgerSQL.selectThreadAndDefault))
        #expect(try normalized(cString(named: "insert_consume", in: text)) == normalized(LedgerSQL.insertConsume))
        // Since 0014 the writer's own statements for a consume's derived state, too.
        #expect(try normalized(cString(named: "add_to_thread", in: text)) == normalized(ConsumeSQL.addToThread))
        // Since 0017 the fold, which the harness runs when FoldMark would.
        #expect(try normalized(cString(named: "fold", in: text)) == normalized(FoldMark.foldStatement))
        // And FoldMark's bound and period, which C writes as numbers: the limits of prompt,
        // completion and latency (cost is the ledger's bound, read from the row) and the fold's turn.
        let limits = "{\(LedgerLimits.tokensPerCallMax)LL, \(LedgerLimits.tokensPerCallMax)LL, "
            + "sqlite3_column_int64(select, 16), \(LedgerLimits.latencyMillisecondsMax)LL}"
        #expect(text.contains("const int64_t limits[4] = \(limits);"), "main.c's limits differ from LedgerLimits")
        #expect(text.contains("event_id % \(FoldMark.foldEveryEvents) == 0"), "main.c's fold period differs from FoldMark's")
    }

    /// The text of `static const char *name = "…" "…";`: its adjacent literals joined.
    private func cString(named name: String, in source: String) throws -> String {
        let start = try #require(source.range(of: "static const char *\(name) ="), "no \(name) in main.c")
        let end = try #require(source.range(of: ";", range: start.upperBound..<source.endIndex))
        let literals = source[start.upperBound..<end.lowerBound].split(separator: "\"", omittingEmptySubsequences: false)
        // Between the quotes: every odd piece is a literal's text (none contains an escaped quote).
        return stride(from: 1, to: literals.count, by: 2).map { String(literals[$0]) }.joined()
    }

    private func normalized(_ sql: String) -> String {
        sql.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }
}
