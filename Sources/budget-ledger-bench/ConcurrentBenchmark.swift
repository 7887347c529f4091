import BudgetLedger
import Dispatch
import Foundation
import Synchronization

/// Starts many caller threads at the same moment and collects what each measured.
///
/// Real threads, not `DispatchQueue.concurrentPerform`, whose width is the core count: the
/// point is 64 callers blocked in the ledger at once.
private final class CallerPool: Sendable {
    private let gate = DispatchSemaphore(value: 0)
    private let finished = DispatchGroup()
    private let deadlineNanoseconds = Mutex<UInt64>(0)
    private let results = Mutex<[CallerStats]>([])

    /// Runs `callerCount` threads of `body` for `seconds`, all released together; returns each one's stats.
    func run(
        callerCount: Int, seconds: Double,
        _ body: @escaping @Sendable (_ caller: Int, _ deadlineNanoseconds: UInt64) -> CallerStats
    ) -> [CallerStats] {
        for caller in 0..<callerCount {
            finished.enter()
            let thread = Thread { [self] in
                gate.wait()
                let stats = body(caller, deadlineNanoseconds.withLock { $0 })
                results.withLock { $0.append(stats) }
                finished.leave()
            }
            thread.start()
        }
        deadlineNanoseconds.withLock { $0 = MonotonicClock.deadline(afterSeconds: seconds) }
        for _ in 0..<callerCount { gate.signal() }
        finished.wait()
        return results.withLock { $0 }
    }
}

extension BenchmarkContext {
    /// (3) `--threads` threads hammering checkAndConsume on one shared `Ledger` at FULL.
    func measureConcurrentCallers() throws {
        let callers = options.concurrentCallers
        log("(3) checkAndConsume, \(callers) threads sharing one Ledger, FULL")
        let path = try createLedger(named: "concurrent-full.db")
        defer { if !options.keepFiles { removeLedgerFiles(at: path) } }
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .full))
        defer { ledger.close() }
        let keys = options.idempotencyKeys
        let expected = max(expectedCallsPerCaller / callers, 1_000)
        let seconds = options.secondsPerMeasurement
        let perCaller = CallerPool().run(callerCount: callers, seconds: seconds) { caller, deadline in
            var workload = Workload(seed: 0xC0C0_0000 + UInt64(caller), idempotencyKeys: keys)
            return runCalls(until: deadline, workload: &workload, expectedCalls: expected) {
                try ledger.checkAndConsume($0)
            }
        }
        var total = CallerStats()
        for stats in perCaller { total.merge(stats) }
        let rate = Double(total.accepted) / total.elapsedSeconds
        let latency = LatencySummary(nanoseconds: total.latenciesNanoseconds)
        let title = "checkAndConsume, \(callers) threads, FULL"
        report.add(
            "3", "concurrent.full.txn_per_s", "\(title): aggregate throughput", rate, .transactionsPerSecond,
            reference: .figure("c1_full.tps"))
        report.add("3", "concurrent.full.p50_us", "\(title): p50 per call", latency.p50Microseconds, .microseconds)
        report.add("3", "concurrent.full.p99_us", "\(title): p99 per call", latency.p99Microseconds, .microseconds)
        report.add("3", "concurrent.full.max_us", "\(title): max per call", latency.maxMicroseconds, .microseconds)
        addCPUPerCall("3", key: "concurrent.full", title: title, total)
        let batching = ledger.statistics
        report.add(
            "3", "concurrent.full.writes_per_transaction", "\(title): writes per transaction (group commit; largest \(batching.largestBatch))",
            Double(batching.writes) / Double(max(batching.transactions, 1)), .count)
        report.add(
            "3", "concurrent.full.batched_share", "\(title): writes recorded per batch (Ledger.recordBatch), share",
            Double(batching.batchedWrites) / Double(max(batching.writes, 1)), .ratio)
        let counts = perCaller.map(\.completed)
        report.add(
            "3", "concurrent.full.fairness", "\(title): fairness (min ÷ max calls per thread)",
            Double(counts.min() ?? 0) / Double(max(counts.max() ?? 1, 1)), .ratio)
        if let single = report.value(of: "single.full.txn_per_s") {
            report.add("3", "concurrent.full.vs_single", "\(title) ÷ (1) FULL 1 caller", rate / single, .ratio)
        }
        checkFailures(total, in: "\(callers) concurrent callers")
        verify(
            path: path, after: "\(callers) concurrent callers (\(total.accepted) calls)",
            timeoutSeconds: options.verifyTimeoutSeconds)
    }
}
