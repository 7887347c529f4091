import BudgetLedger
import Foundation
import LedgerSQLite

/// The `worker` mode: one process of the multi-process measurement.
///
/// Opens the ledger, says `ready`, waits for go, then runs checkAndConsume for `--seconds` on
/// the shared workload threads, every `--tight-every`-th call on the tight thread instead, and
/// prints its counts. Latencies go to `--latency-file` as raw 64-bit nanosecond counts.
enum WorkerMode {
    struct Options {
        var path = ""
        var seconds = 3.0
        var tightThreadID = WorkloadNames.tightThreadID
        var tightEvery = 10
        var synchronous = Ledger.Durability.full
        var seed: UInt64 = 1
        var latencyFile: String?
        var idempotencyKeys = true
    }

    static func parse(_ arguments: [String]) throws -> Options {
        var options = Options()
        var cursor = ArgumentCursor(arguments)
        while let flag = try cursor.nextFlag() {
            switch flag {
            case "--db": options.path = try cursor.value(for: flag)
            case "--seconds": options.seconds = try cursor.double(for: flag, in: 0.1...600)
            case "--tight-thread", "--thread": options.tightThreadID = try cursor.value(for: flag)
            case "--tight-every": options.tightEvery = try cursor.integer(for: flag, in: 0...1_000_000)
            case "--seed": options.seed = UInt64(try cursor.integer(for: flag, in: 0...Int.max))
            case "--latency-file": options.latencyFile = try cursor.value(for: flag)
            case "--no-idempotency-keys": options.idempotencyKeys = false
            case "--synchronous":
                let name = try cursor.value(for: flag)
                guard let level = Ledger.Durability(rawValue: name.uppercased()) else {
                    throw UsageError(message: "--synchronous must be full or normal (got \(name))")
                }
                options.synchronous = level
            default: throw UsageError(message: "worker: unknown argument \(flag)")
            }
        }
        if options.path.isEmpty { throw UsageError(message: "worker needs --db PATH") }
        return options
    }

    static func run(_ options: Options) throws {
        let configuration = Ledger.Configuration(synchronous: options.synchronous)
        let ledger = try Ledger(path: options.path, configuration: configuration)
        defer { ledger.close() }
        var workload = Workload(
            seed: options.seed ^ (UInt64(getpid()) << 32), idempotencyKeys: options.idempotencyKeys,
            tightThreadID: options.tightThreadID, tightEvery: options.tightEvery)
        // Built once per process: not inside the timed loop.
        _ = WorkloadNames.threadIDs.count
        ParentChannel.announceReadyAndWait()
        let deadline = MonotonicClock.deadline(afterSeconds: options.seconds)
        let stats = runCalls(until: deadline, workload: &workload, expectedCalls: Int(options.seconds * 40_000)) {
            try ledger.checkAndConsume($0)
        }
        if let file = options.latencyFile {
            let data = stats.latenciesNanoseconds.withUnsafeBytes { Data($0) }
            try data.write(to: URL(fileURLWithPath: file))
        }
        if let failure = stats.firstFailure {
            log("worker \(getpid()): \(stats.failed) calls failed; first: \(failure)")
        }
        ParentChannel.say(
            "result accepted=\(stats.accepted) replayed=\(stats.replayed) refused=\(stats.refused) failed=\(stats.failed) busy=\(stats.busyTimeouts) "
                + "tight_accepted=\(stats.tightAccepted) tight_refused=\(stats.tightRefused) "
                + "elapsed_s=\(stats.elapsedSeconds)")
    }
}

extension BenchmarkContext {
    /// (4) 2 and 4 processes (`--processes`) on one file at FULL, then a verify and the overshoot check.
    func measureMultiProcess() throws {
        for processCount in options.processCounts {
            log("(4) checkAndConsume, \(processCount) processes on one file, FULL")
            try measureProcesses(processCount)
        }
    }

    private func measureProcesses(_ processCount: Int) throws {
        let path = try createLedger(named: "multiprocess-\(processCount).db")
        defer { if !options.keepFiles { removeLedgerFiles(at: path) } }
        let setup = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        try setup.setLimit(WorkloadNames.tightThreadID, maxTokens: WorkloadNames.tightMaxTokens)
        setup.close()
        let latencyFiles = (0..<processCount).map { self.path("worker-\(processCount)-\($0).latencies") }
        defer { for file in latencyFiles { try? FileManager.default.removeItem(atPath: file) } }
        let children = try (0..<processCount).map { index in
            var arguments = [
                "worker", "--db", path, "--seconds", String(options.secondsPerMeasurement), "--synchronous", "full",
                "--tight-thread", WorkloadNames.tightThreadID, "--seed", String(index + 1),
                "--latency-file", latencyFiles[index],
            ]
            if !options.idempotencyKeys { arguments.append("--no-idempotency-keys") }
            return try ChildProcess(arguments: arguments)
        }
        for child in children where child.readLine() != "ready" {
            throw BenchmarkFailure("a worker process failed to open the ledger")
        }
        for child in children { try child.sendGo() }
        var perProcess: [CallerStats] = []
        for (index, child) in children.enumerated() {
            let fields = ChildProcess.fields(ofResultLine: child.readLine())
            let status = child.waitForExit()
            guard let fields, status == 0 else {
                report.check(
                    "worker \(index) of \(processCount) ran", passed: false, detail: "exit status \(status), no result")
                continue
            }
            perProcess.append(Self.stats(from: fields, latencyFile: latencyFiles[index]))
        }
        reportProcesses(perProcess, processCount: processCount)
        try checkLedgerAfterProcesses(path: path, perProcess: perProcess, processCount: processCount)
    }

    private static func stats(from fields: [String: String], latencyFile: String) -> CallerStats {
        var stats = CallerStats()
        let number = { (name: String) in Int(fields[name] ?? "") ?? 0 }
        stats.accepted = number("accepted")
        stats.replayed = number("replayed")
        stats.refused = number("refused")
        stats.failed = number("failed")
        stats.busyTimeouts = number("busy")
        stats.tightAccepted = number("tight_accepted")
        stats.tightRefused = number("tight_refused")
        stats.elapsedSeconds = Double(fields["elapsed_s"] ?? "") ?? 0
        if stats.failed > 0 { stats.firstFailure = "see the worker's stderr above" }
        if let data = FileManager.default.contents(atPath: latencyFile) {
            stats.latenciesNanoseconds = data.withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) }
        }
        return stats
    }

    private func reportProcesses(_ perProcess: [CallerStats], processCount: Int) {
        guard !perProcess.isEmpty else { return }
        var total = CallerStats()
        for stats in perProcess { total.merge(stats) }
        let counts = perProcess.map(\.completed)
        let latency = LatencySummary(nanoseconds: total.latenciesNanoseconds)
        let key = "multiprocess.p\(processCount).full"
        let reference = "c4_p\(processCount)_full"
        let title = "checkAndConsume, \(processCount) processes, FULL"
        report.add(
            "4", "\(key).txn_per_s", "\(title): aggregate throughput", Double(total.completed) / total.elapsedSeconds,
            .transactionsPerSecond, reference: .figure("\(reference).tps"))
        report.addLatencies("4", key: key, latency, referencePrefix: reference, percentiles: ["p50", "p99"]) {
            "\(title): \($0) per call"
        }
        report.add(
            "4", "\(key).worst_wait_ms", "\(title): worst wait", latency.maxMicroseconds / 1_000, .milliseconds,
            reference: .figure("\(reference).max_us", scale: 0.001))
        report.add(
            "4", "\(key).fairness", "\(title): fairness (min ÷ max calls per process)",
            Double(counts.min() ?? 0) / Double(max(counts.max() ?? 1, 1)), .ratio,
            reference: .figure("\(reference).fairness_min_over_max"))
        checkFailures(total, in: "\(processCount) processes")
    }

    /// The file after the processes: `verify()`, and the tight thread never past its max.
    private func checkLedgerAfterProcesses(path: String, perProcess: [CallerStats], processCount: Int) throws {
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        defer { ledger.close() }
        verify(path: path, after: "\(processCount) processes", timeoutSeconds: options.verifyTimeoutSeconds)
        let accepted = perProcess.reduce(0) { $0 + $1.tightAccepted }
        let refused = perProcess.reduce(0) { $0 + $1.tightRefused }
        let perCall = WorkloadNames.tightPromptTokens + WorkloadNames.tightCompletionTokens
        guard let budget = try ledger.usage(WorkloadNames.tightThreadID) else {
            report.check(
                "no overshoot, \(processCount) processes", passed: false, detail: "the tight thread is not open")
            return
        }
        let exact = budget.totalTokens == Int64(accepted) * perCall
        let reached = budget.maxTokens - budget.totalTokens < perCall
        report.check(
            "no overshoot, \(processCount) processes", passed: budget.totalTokens <= budget.maxTokens && exact,
            detail: "tight thread \(budget.totalTokens) of \(budget.maxTokens) tokens; \(accepted) calls of \(perCall) accepted, "
                + "\(refused) refused; totals \(exact ? "equal" : "DIFFER FROM") the accepted calls; "
                + (reached ? "the max was reached" : "the max was not reached (run longer to test the edge)"))
    }
}
