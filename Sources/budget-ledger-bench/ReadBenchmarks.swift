import BudgetLedger
import Foundation
import LedgerSQLite

/// Runs `body` once, and again while the runs are quick (under 0.1 s each, at most 10 runs or
/// one second in all); returns the median seconds and what the last run returned.
private func medianTime<Result>(_ body: () throws -> Result) rethrows -> (seconds: Double, runs: Int, result: Result) {
    var (result, first) = try MonotonicClock.timed(body)
    var times = [first]
    while first < 0.1 && times.count < 10 && times.reduce(0, +) < 1 {
        let (again, seconds) = try MonotonicClock.timed(body)
        result = again
        times.append(seconds)
    }
    times.sort()
    first = times[times.count / 2]
    return (first, times.count, result)
}

extension BenchmarkContext {
    /// (7) The usage overview (trigger-kept rollups), the billing rollups that scan events, and
    /// the billing views over the rollup table, on the big ledger.
    func measureReads(path: String, size label: String) throws {
        log("(7) usage overview and billing reads over \(label) events")
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        defer { ledger.close() }
        let isReferenceSize = label == "1M"
        let overview = try medianTime { try ledger.usageOverview(.allTime) }
        report.add(
            "7", "reads.\(label).usage_overview_ms",
            "usageOverview(.allTime) over \(label) (agent x model rollup; median of \(overview.runs))", overview.seconds * 1_000,
            .milliseconds)
        let byModel = try medianTime { try ledger.rollup(ExportQuery(), by: .model) }
        report.add(
            "7", "reads.\(label).rollup_model_ms", "rollup(all time, by: .model) over \(label) (scans events)",
            byModel.seconds * 1_000, .milliseconds, reference: isReferenceSize ? .figure("q1m.billing_ms") : nil)
        let byDay = try medianTime { try ledger.rollup(ExportQuery(), by: .day) }
        report.add(
            "7", "reads.\(label).rollup_day_ms", "rollup(all time, by: .day) over \(label) (scans events)",
            byDay.seconds * 1_000, .milliseconds, reference: isReferenceSize ? .figure("q1m.daily_ms") : nil)
        try measureBillingViews(path: path, label: label, isReferenceSize: isReferenceSize)
        let totals = overview.result.totals
        let scanned = byModel.result.reduce(Int64(0)) { $0 + $1.totals.requestCount }
        report.check(
            "overview equals the events scan at \(label)", passed: totals.requestCount == scanned,
            detail: "usageOverview counts \(totals.requestCount) consumes, rollup(by: .model) \(scanned)")
    }

    /// The SQL views billing reads (`billing_by_agent_model`: the reference's billing summary,
    /// `billing_by_org_model_day`, `usage_by_model`), on a raw connection.
    private func measureBillingViews(path: String, label: String, isReferenceSize: Bool) throws {
        let connection = try Connection(path: path, options: Connection.Options(synchronous: .normal))
        defer { connection.close() }
        let views: [(key: String, select: String, title: (Int) -> String, reference: String?)] = [
            (
                "billing_summary", "SELECT agent_id, model, total_tokens, cost_nanos FROM billing_by_agent_model",
                { "billing summary: SELECT … FROM billing_by_agent_model over \(label) (\($0) rows) vs C GROUP BY scan" },
                "q1m.billing_ms"
            ),
            (
                "billing_view", "SELECT org_id, model, day, total_tokens, cost_nanos FROM billing_by_org_model_day",
                { "SELECT … FROM billing_by_org_model_day over \(label) (\($0) rows, rollup table)" }, nil
            ),
            (
                "usage_by_model", "SELECT model, total_tokens, cost_nanos FROM usage_by_model",
                { _ in "SELECT … FROM usage_by_model over \(label) (rollup table)" }, nil
            ),
        ]
        for view in views {
            let timed = try medianTime { try connection.prepare(view.select).fetchAll { try $0[0] as String? }.count }
            report.add(
                "7", "reads.\(label).\(view.key)_ms", view.title(timed.result), timed.seconds * 1_000, .milliseconds,
                reference: isReferenceSize ? view.reference.map { .figure($0) } : nil)
        }
    }
}
