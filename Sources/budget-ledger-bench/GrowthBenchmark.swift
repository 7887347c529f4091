import BudgetLedger
import Foundation
import LedgerSQLite

/// The `probe-open` mode: opens a ledger in a fresh process and reports the open's wall time
/// and the resident memory before it, after it, and after a few reads.
enum ProbeOpenMode {
    static func run(_ arguments: [String]) throws {
        var cursor = ArgumentCursor(arguments)
        var path: String?
        while let flag = try cursor.nextFlag() {
            guard flag == "--db" else { throw UsageError(message: "probe-open: unknown argument \(flag)") }
            path = try cursor.value(for: flag)
        }
        guard let path else { throw UsageError(message: "probe-open needs --db PATH") }
        let before = ProcessFacts.residentKilobytes() ?? 0
        let (ledger, openSeconds) = try MonotonicClock.timed {
            try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        }
        defer { ledger.close() }
        let opened = ProcessFacts.residentKilobytes() ?? 0
        let (_, readSeconds) = try MonotonicClock.timed {
            for threadID in WorkloadNames.threadIDs.prefix(10) { _ = try ledger.usage(threadID) }
            _ = try ledger.usageOverview(.allTime)
            _ = try ledger.allUsage()
        }
        let afterReads = ProcessFacts.residentKilobytes() ?? 0
        ParentChannel.say(
            "result open_ms=\(openSeconds * 1_000) reads_ms=\(readSeconds * 1_000) rss_before_kb=\(before) "
                + "rss_open_kb=\(opened) rss_reads_kb=\(afterReads)")
    }
}

/// One ledger size of the growth part, as the report names it.
private struct GrowthSize {
    let rowCount: Int
    /// "1M", "10M", "0.1M".
    let label: String
    /// The reference's prefix for this size ("g1m"), when it measured it.
    let referencePrefix: String?

    init(millions: Double) {
        rowCount = Int((millions * 1_000_000).rounded())
        label = millions == millions.rounded() ? "\(Int(millions))M" : "\(millions)M"
        referencePrefix = ["1M", "10M"].contains(label) ? "g" + label.lowercased() : nil
    }
}

extension BenchmarkContext {
    /// (5)–(7): consume rate, open time, memory and read times at empty and at each `--events-million` size.
    func measureGrowth() throws {
        try measureEmptyBaseline()
        let sizes = options.eventsMillions.map(GrowthSize.init(millions:))
        guard let largest = sizes.last?.rowCount else { return }
        let path = path("growth.db")
        removeLedgerFiles(at: path)
        defer { if !options.keepFiles { removeLedgerFiles(at: path) } }
        let builder = try BulkBuilder.create(
            path: path, largestRowCount: largest, idempotencyKeys: options.bulkIdempotencyKeys)
        var built = 0
        var builtLabel = "0"
        for size in sizes where size.rowCount > built {
            log("(5) bulk-building \(size.label) consume events (raw inserts, synchronous=OFF, triggers on)")
            let seconds = try builder.append(rows: built..<size.rowCount)
            report.add(
                "5", "growth.build.\(size.label).rows_per_s",
                "bulk build \(builtLabel) → \(size.label) events (raw, triggers on)", Double(size.rowCount - built) / seconds,
                .rowsPerSecond,
                reference: Self.buildReference(from: builtLabel, to: size.label))
            built = size.rowCount
            builtLabel = size.label
            try probeOpen(path: path, label: size.label)
            try measureGrowthRate(path: path, size: size)
            try measureReads(path: path, size: size.label)
            if Double(size.rowCount) <= options.verifyUpToMillions * 1_000_000 {
                verify(
                    path: path, after: "growth to \(size.label) events", timeoutSeconds: options.verifyBigTimeoutSeconds)
            } else {
                quickConsistencyCheck(path: path, after: "growth to \(size.label) events")
                log("  (verify() skipped at \(size.label): above --verify-up-to-million \(options.verifyUpToMillions))")
            }
        }
    }

    /// The reference built 0 → 1M and extended 1M → 10M in bulk (without triggers: it has none).
    private static func buildReference(from start: String, to end: String) -> ReferenceLink? {
        switch (start, end) {
        case ("0", "1M"): return .figure("build1m_bulk.rows_per_s")
        case ("1M", "10M"): return .figure("build10m_bulk.rows_per_s")
        default: return nil
        }
    }

    /// The same measurement on a fresh ledger with no events but the thread opens.
    private func measureEmptyBaseline() throws {
        log("(5) checkAndConsume, 1 caller, NORMAL, empty ledger")
        let path = try createLedger(named: "growth-empty.db")
        defer { if !options.keepFiles { removeLedgerFiles(at: path) } }
        try probeOpen(path: path, label: "empty")
        let stats = try runNormalSingleCaller(path: path)
        let latency = LatencySummary(nanoseconds: stats.latenciesNanoseconds)
        report.add(
            "5", "growth.empty.txn_per_s", "checkAndConsume, NORMAL, empty ledger",
            Double(stats.accepted) / stats.elapsedSeconds, .transactionsPerSecond, reference: .figure("c1_normal.tps"))
        report.addLatencies("5", key: "growth.empty", latency, referencePrefix: "c1_normal", percentiles: ["p50", "p99"]) {
            "  … \($0) at empty"
        }
        addCPUPerCall("5", key: "growth.empty", title: "  … at empty", stats)
    }

    private func runNormalSingleCaller(path: String) throws -> CallerStats {
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        defer { ledger.close() }
        var workload = Workload(seed: 0x6120_0001, idempotencyKeys: options.idempotencyKeys)
        let deadline = MonotonicClock.deadline(afterSeconds: options.secondsPerMeasurement)
        let stats = runCalls(until: deadline, workload: &workload, expectedCalls: expectedCallsPerCaller) {
            try ledger.checkAndConsume($0)
        }
        checkFailures(stats, in: "checkAndConsume at NORMAL on \(path)")
        return stats
    }

    /// (5) checkAndConsume, one caller, NORMAL, on the big ledger.
    private func measureGrowthRate(path: String, size: GrowthSize) throws {
        log("(5) checkAndConsume, 1 caller, NORMAL, \(size.label) events")
        let stats = try runNormalSingleCaller(path: path)
        let latency = LatencySummary(nanoseconds: stats.latenciesNanoseconds)
        let rate = Double(stats.accepted) / stats.elapsedSeconds
        let prefix = size.referencePrefix
        let key = "growth.\(size.label)"
        report.add(
            "5", "\(key).txn_per_s", "checkAndConsume, NORMAL, \(size.label) events", rate, .transactionsPerSecond,
            reference: prefix.map { .figure("\($0).tps") })
        report.addLatencies("5", key: key, latency, referencePrefix: prefix) { "  … \($0) at \(size.label)" }
        addCPUPerCall("5", key: key, title: "  … at \(size.label)", stats)
        if let empty = report.value(of: "growth.empty.txn_per_s") {
            report.add(
                "5", "\(key).vs_empty", "\(size.label) ÷ empty txn/s", rate / empty, .ratio,
                reference: prefix.map { .ratio("\($0).tps", over: "c1_normal.tps") })
        }
    }

    /// (6) `Ledger(path:)` wall time and resident memory, in a fresh process.
    private func probeOpen(path: String, label: String) throws {
        let child = try ChildProcess(arguments: ["probe-open", "--db", path])
        let fields = ChildProcess.fields(ofResultLine: child.readLine())
        let status = child.waitForExit()
        guard let fields, status == 0 else {
            report.check("open probe at \(label)", passed: false, detail: "exit status \(status), no result")
            return
        }
        let number = { (name: String) in Double(fields[name] ?? "") ?? 0 }
        report.add(
            "6", "open.\(label).ms", "Ledger(path:) open, \(label) ledger (fresh process)", number("open_ms"), .milliseconds)
        report.add(
            "6", "open.\(label).rss_mib", "  … resident memory after open + reads, \(label)",
            number("rss_reads_kb") / 1_024, .megabytes)
        report.add(
            "6", "open.\(label).rss_growth_mib", "  … of which open + reads added, \(label)",
            (number("rss_reads_kb") - number("rss_before_kb")) / 1_024, .megabytes)
    }
}
