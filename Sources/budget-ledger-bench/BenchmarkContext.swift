import BudgetLedger
import Foundation
import LedgerSQLite

/// What every measurement needs: the options, the report it adds to, and the folder it works in.
struct BenchmarkContext {
    let options: BenchmarkOptions
    let report: Report
    /// A folder of this run's own, removed at the end unless `--keep-files`.
    let directory: String

    func path(_ name: String) -> String {
        directory + "/" + name
    }

    /// Calls a caller is expected to make in one measurement, to size its latency buffer.
    var expectedCallsPerCaller: Int {
        Int(options.secondsPerMeasurement * 40_000)
    }

    /// A fresh ledger file whose workload threads are open at budgets that never run out,
    /// opened through the real API (`setLimit`), at NORMAL so the setup takes no time.
    func createLedger(named name: String) throws -> String {
        let path = path(name)
        removeLedgerFiles(at: path)
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        defer { ledger.close() }
        for threadID in WorkloadNames.threadIDs {
            try ledger.setLimit(threadID, maxTokens: WorkloadNames.unlimitedTokens)
        }
        return path
    }

    /// Deletes a ledger file and its companions (WAL, shared memory, lock files).
    func removeLedgerFiles(at path: String) {
        let folder = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        let siblings = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        let isCompanion = { (sibling: String) in
            sibling == name || sibling.hasPrefix(name + "-") || sibling.hasPrefix(name + ".")
        }
        for sibling in siblings where isCompanion(sibling) {
            try? FileManager.default.removeItem(atPath: folder + "/" + sibling)
        }
    }

    /// Records the process's CPU time per completed call, user and system: where the time of a
    /// call goes when it is not waiting for the disk.
    func addCPUPerCall(_ section: String, key: String, title: String, _ stats: CallerStats) {
        let calls = Double(max(stats.completed, 1))
        report.add(
            section, "\(key).cpu_user_us", "\(title): CPU per call, user", stats.processUserSeconds * 1e6 / calls,
            .microseconds)
        report.add(
            section, "\(key).cpu_system_us", "\(title): CPU per call, system", stats.processSystemSeconds * 1e6 / calls,
            .microseconds)
    }

    /// Records a failed check when a measurement's calls failed or were refused: every budget
    /// but the tight thread's is unlimited, so a refusal there means something is wrong (and a
    /// refused call is cheaper, which would flatter the latencies).
    func checkFailures(_ stats: CallerStats, in what: String) {
        log(
            "  (\(stats.accepted) accepted of which \(stats.replayed) replayed, \(stats.refused) refused, "
                + "\(stats.failed) failed in \(what))")
        if stats.replayed > 0 {
            report.check(
                "no replayed calls in \(what)", passed: false,
                detail: "\(stats.replayed) calls reused an idempotency key and were answered as replays")
        }
        let unexpectedRefusals = stats.refused - stats.tightRefused
        if unexpectedRefusals > 0 {
            report.check(
                "no refused calls in \(what)", passed: false,
                detail: "\(unexpectedRefusals) calls on unlimited threads were refused as over budget")
        }
        if stats.failed > 0 {
            report.check(
                "no failed calls in \(what)", passed: false,
                detail: "\(stats.failed) failed (\(stats.busyTimeouts) busy timeouts); "
                    + "first: \(stats.firstFailure ?? "?")")
        }
    }
}

extension Ledger.Durability {
    /// The name the report uses.
    var label: String { rawValue }
}
