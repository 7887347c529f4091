import BudgetLedger
import BudgetLedgerWire
import Foundation

extension BenchmarkContext {
    /// (9) `budget-ledger import`'s work on a fresh ledger at FULL, as the CLI runs it: NDJSON
    /// export lines parsed (`ConsumeImport`) and recorded in batches of `Ledger.importBatchDefault`
    /// (`importConsumes`), beside the reference's plain bulk insert of 1M rows (journal and sync
    /// off, no derived state), then `verify()`. The lines are made in memory first, untimed.
    func measureImport() throws {
        let rowCount = options.importRows
        let route = options.importRowByRow ? "one consume at a time" : "derived state per batch"
        log("(9) import of \(rowCount) NDJSON export lines, batches of \(Ledger.importBatchDefault), FULL, \(route)")
        let lines = Self.exportLines(count: rowCount)
        let file = path("import.db")
        removeLedgerFiles(at: file)
        defer { if !options.keepFiles { removeLedgerFiles(at: file) } }
        let ledger = try Ledger(path: file)
        let rowByRow = options.importRowByRow
        let cpuBefore = ProcessFacts.cpuSeconds()
        let (imported, seconds) = try MonotonicClock.timed { () throws -> Int in
            var imported = 0
            var batch: [ImportedConsume] = []
            batch.reserveCapacity(Ledger.importBatchDefault)
            for (index, line) in lines.enumerated() {
                batch.append(try ConsumeImport.consume(line: line, number: index + 1))
                if batch.count == Ledger.importBatchDefault || index == lines.count - 1 {
                    imported += try ledger.importConsumes(batch, rowByRow: rowByRow).result.imported
                    batch.removeAll(keepingCapacity: true)
                }
            }
            return imported
        }
        let cpuAfter = ProcessFacts.cpuSeconds()
        ledger.close()
        report.check(
            "import recorded every line", passed: imported == rowCount, detail: "\(imported) of \(rowCount)")
        report.add(
            "9", "import.rows_per_s", "import (parse + record, FULL, \(Ledger.importBatchDefault) per transaction)",
            Double(rowCount) / seconds, .rowsPerSecond, reference: .figure("build1m_bulk.rows_per_s"))
        let cpuMicroseconds = (cpuAfter.user + cpuAfter.system - cpuBefore.user - cpuBefore.system) * 1e6
        report.add("9", "import.cpu_us_per_row", "  … CPU per row (user + system)", cpuMicroseconds / Double(rowCount), .microseconds)
        verify(path: file, after: "import of \(rowCount) lines", timeoutSeconds: options.verifyBigTimeoutSeconds)
    }

    /// `count` lines as `export --format ndjson` writes them: 1,000 threads, four agents, five
    /// models (one unpriced), metadata with an org on every other line, 30 days of timestamps.
    static func exportLines(count: Int) -> [[UInt8]] {
        let start: Int64 = 1_764_547_200_000_000
        let step = 30 * 86_400_000_000 / Int64(max(count, 1))
        let agents = ["planner", "coder", "critic", "summarizer"]
        let models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "o3-mini", "in-house-model"]
        return (0..<count).map { index in
            let metadata = index % 2 == 0 ? #"{"org_id":"org-\#(index % 7)","user_id":"u\#(index % 31)"}"# : "null"
            let line =
                #"{"id":\#(index + 1),"timestamp":"\#(Timestamps.iso8601(microseconds: start + Int64(index) * step))","#
                + #""kind":"consume","threadId":"thread-\#(index % 1_000)","promptTokens":\#(200 + index % 1_000),"#
                + #""completionTokens":\#(index % 300),"totalTokens":\#(200 + index % 1_000 + index % 300),"#
                + #""agentId":"\#(agents[index % 4])","model":"\#(models[index % 5])","provider":"openai","#
                + #""latencyMs":\#(100 + index % 900),"cost":"0.001","orgId":null,"userId":null,"#
                + #""metadata":\#(metadata),"idempotencyKey":null,"maxTokens":null,"thresholdPercent":null,"#
                + #""severity":null,"causedBy":null,"heldTokens":null,"expiresAt":null,"reservationId":null}"#
            return Array(line.utf8)
        }
    }
}
