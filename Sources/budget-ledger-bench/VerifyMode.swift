import BudgetLedger
import Foundation
import LedgerSQLite

/// The `verify` mode: runs `Ledger.verify()` on a file in a process of its own, so the
/// benchmark can give up on it after a timeout (it recomputes every derived table from the
/// events, which takes long on a big ledger).
enum VerifyMode {
    static func run(_ arguments: [String]) throws {
        var cursor = ArgumentCursor(arguments)
        var path: String?
        while let flag = try cursor.nextFlag() {
            guard flag == "--db" else { throw UsageError(message: "verify: unknown argument \(flag)") }
            path = try cursor.value(for: flag)
        }
        guard let path else { throw UsageError(message: "verify needs --db PATH") }
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        defer { ledger.close() }
        let (verdict, seconds) = try MonotonicClock.timed { try ledger.verify() }
        for problem in verdict.problems.prefix(20) {
            ParentChannel.say("problem " + problem.replacingOccurrences(of: "\n", with: " "))
        }
        ParentChannel.say(
            "result consistent=\(verdict.isConsistent ? 1 : 0) events=\(verdict.eventCount) threads=\(verdict.threadCount) "
                + "seconds=\(seconds)")
    }
}

extension BenchmarkContext {
    /// `ledger.verify()` on `path`, in a child process given `timeoutSeconds`; then a quick
    /// check of the sums that always finishes.
    func verify(path: String, after what: String, timeoutSeconds: Double) {
        quickConsistencyCheck(path: path, after: what)
        let name = "verify() after \(what)"
        do {
            let child = try ChildProcess(arguments: ["verify", "--db", path])
            let deadline = MonotonicClock.deadline(afterSeconds: timeoutSeconds)
            var problems: [String] = []
            var line = child.readLine(deadlineNanoseconds: deadline)
            while let text = line, text.hasPrefix("problem ") {
                problems.append(String(text.dropFirst("problem ".count)))
                line = child.readLine(deadlineNanoseconds: deadline)
            }
            guard let fields = ChildProcess.fields(ofResultLine: line) else {
                let timedOut = MonotonicClock.nowNanoseconds() >= deadline
                child.stop()
                let status = child.waitForExit()
                report.check(
                    name, outcome: timedOut ? .unfinished : .failed,
                    detail: timedOut
                        ? "did not finish in \(Report.format(timeoutSeconds)) s (stopped)" : "exit status \(status)")
                return
            }
            _ = child.waitForExit()
            let seconds = Double(fields["seconds"] ?? "") ?? 0
            report.check(
                name, passed: fields["consistent"] == "1",
                detail: "\(fields["events"] ?? "?") events, \(fields["threads"] ?? "?") threads; "
                    + "took \(Report.format(seconds)) s"
                    + (problems.isEmpty ? "" : "; problems: " + problems.prefix(5).joined(separator: "; ")))
        } catch {
            report.check(name, passed: false, detail: "could not run: \(error)")
        }
    }

    /// Totals that must agree in every benchmark ledger (no thread is ever reset or cleaned up,
    /// and the usage window never changes): consumes in `events`, in `thread_state` and in
    /// `usage_rollup_live` (the folded rollup plus the pending consumes). One pass over the
    /// events, so it runs on any size.
    func quickConsistencyCheck(path: String, after what: String) {
        let name = "sums agree after \(what)"
        do {
            let connection = try Connection(path: path, options: Connection.Options(synchronous: .normal))
            defer { connection.close() }
            let (sums, seconds) = try MonotonicClock.timed {
                try connection.prepare(
                    """
                    SELECT count(*), coalesce(sum(prompt_tokens + completion_tokens), 0),
                           (SELECT coalesce(sum(request_count), 0) FROM thread_state),
                           (SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM thread_state),
                           (SELECT coalesce(sum(request_count), 0) FROM usage_rollup_live),
                           (SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage_rollup_live)
                    FROM events WHERE kind = 'consume'
                    """
                ).fetchOne { row in try (0..<6).map { try row[$0] as Int64 } } ?? []
            }
            let agree =
                sums.count == 6 && sums[0] == sums[2] && sums[0] == sums[4] && sums[1] == sums[3] && sums[1] == sums[5]
            report.check(
                name, passed: agree,
                detail: "consumes/tokens: events \(sums[0])/\(sums[1]), thread_state \(sums[2])/\(sums[3]), "
                    + "usage_rollup_live \(sums[4])/\(sums[5]); took \(Report.format(seconds)) s")
        } catch {
            report.check(name, passed: false, detail: "could not run: \(error)")
        }
    }
}
