import Foundation
import Testing

/// Several OS processes writing the same thread of the same ledger file at once.
///
/// Serialized so that one test's workers compete only with each other for the two cores.
@Suite("CLI concurrency across processes", .serialized)
struct CLIConcurrencyTests {
    static let workerCount = 4

    @Test("Parallel enforced consumes never overshoot the max, and the total is exactly successes × N")
    func enforcedConsumesAcrossProcesses() throws {
        // Proves check-and-consume is one transaction across processes: no lost update, no overshoot.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let maxTokens: Int64 = 500
        let tokensPerCall: Int64 = 7
        let iterations = 25
        try ledger.succeed("set-limit", "T", String(maxTokens))

        let workers = try runWorkers(
            ledger, iterations: iterations, ["consume", "T", "--prompt", String(tokensPerCall), "--enforce", "--json"])
        let attempts = try allAttempts(of: workers, expectedEach: iterations)
        let successes = attempts.filter { $0.status == 0 }
        let refusals = attempts.filter { $0.status == 3 }
        #expect(
            successes.count + refusals.count == attempts.count,
            "only exit 0 and exit 3 are allowed; workers' stderr:\n\(workers.map(\.stderr).joined())")

        let budget = try ledger.budget("T")
        #expect(budget.totalTokens <= maxTokens)
        #expect(budget.totalTokens == Int64(successes.count) * tokensPerCall)
        #expect(budget.requestCount == Int64(successes.count))
        // Every call asks for the same amount, so exactly the calls that fit succeed: 71 × 7 = 497.
        #expect(successes.count == Int(maxTokens / tokensPerCall))
        #expect(refusals.count == attempts.count - Int(maxTokens / tokensPerCall))
        let refusalErrorLines = workers.flatMap { $0.stderr.split(separator: "\n") }.filter { $0.hasPrefix("Error:") }
        #expect(refusalErrorLines.count == refusals.count, "each refusal writes one Error: line")

        // Each success saw its own serialized state: the totals it reports are 7, 14, …, 497, each once.
        let outputs = try successes.map { try ConsumeJSON(parseJSONObject($0.stdout, what: "a worker's consume")) }
        let reportedTotals = outputs.map(\.budget.totalTokens).sorted()
        #expect(reportedTotals == (1...Int64(successes.count)).map { $0 * tokensPerCall })

        // Each threshold fired exactly once across all processes, at the first total that reached it.
        let crossings = outputs.flatMap(\.crossedThresholds).sorted { $0.thresholdPercent < $1.thresholdPercent }
        #expect(crossings.map(\.thresholdPercent) == [75, 90, 95])
        #expect(crossings.map(\.tokensUsed) == [378, 455, 476])

        let verify = try ledger.run("verify")
        #expect(verify.status == 0, "\(verify)")
    }

    @Test("Parallel plain consumes from several processes lose no update")
    func plainConsumesAcrossProcesses() throws {
        // Proves every recorded consume counts exactly once when processes race on one thread.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let iterations = 25
        let workers = try runWorkers(
            ledger, iterations: iterations, ["consume", "C", "--prompt", "3", "--completion", "2", "--json"])
        let attempts = try allAttempts(of: workers, expectedEach: iterations)
        #expect(
            attempts.allSatisfy { $0.status == 0 }, "workers' stderr:\n\(workers.map(\.stderr).joined())")

        let calls = Int64(attempts.count)
        #expect(
            try ledger.budget("C")
                == BudgetJSON(
                    threadId: "C", maxTokens: 100_000, promptTokens: 3 * calls, completionTokens: 2 * calls,
                    totalTokens: 5 * calls, remaining: 100_000 - 5 * calls, requestCount: calls,
                    percentUsed: Double(5 * calls) / 1_000, isExhausted: false))
        let outputs = try attempts.map { try ConsumeJSON(parseJSONObject($0.stdout, what: "a worker's consume")) }
        #expect(outputs.map(\.budget.totalTokens).sorted() == (1...calls).map { $0 * 5 })

        let verify = try ledger.run("verify")
        #expect(verify.status == 0, "\(verify)")
    }

    @Test("Processes racing with the same idempotency keys record each key once")
    func idempotencyKeysAcrossProcesses() throws {
        // Proves the key check and the insert are atomic across processes: one original per key.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let keys = 10
        let workers = try runWorkers(
            ledger, iterations: keys, ["consume", "I", "--prompt", "4", "--json"], keyPrefix: "request-")
        let attemptsByWorker = try workers.map { try attempts(in: $0, expected: keys) }
        #expect(
            attemptsByWorker.joined().allSatisfy { $0.status == 0 },
            "workers' stderr:\n\(workers.map(\.stderr).joined())")

        // A worker's n-th attempt used key request-n; count the originals of each key.
        for key in 0..<keys {
            let originals = try attemptsByWorker.filter { workerAttempts in
                try ConsumeJSON(parseJSONObject(workerAttempts[key].stdout, what: "a worker's consume")).replayed == false
            }
            #expect(originals.count == 1, "key request-\(key + 1) was recorded \(originals.count) times")
        }
        let budget = try ledger.budget("I")
        #expect(budget.requestCount == Int64(keys))
        #expect(budget.totalTokens == Int64(keys) * 4)

        let verify = try ledger.run("verify")
        #expect(verify.status == 0, "\(verify)")
    }
}

/// One CLI call made by a worker: its exit status and its stdout.
struct WorkerAttempt {
    let status: Int32
    let stdout: String
}

/// Runs `CLIConcurrencyTests.workerCount` shell workers at once, each calling `budget-ledger arguments… --db LEDGER`
/// `iterations` times in a loop (with `--idempotency-key PREFIXi` on the i-th call when `keyPrefix`
/// is given) and printing `exit:STATUS` after each call. Returns once every worker has finished.
private func runWorkers(
    _ ledger: ScratchLedger, iterations: Int, _ arguments: [String], keyPrefix: String? = nil
) throws -> [CLIResult] {
    let script = """
        i=0
        while [ "$i" -lt "$ITERATIONS" ]; do
            i=$((i + 1))
            if [ -n "$KEY_PREFIX" ]; then
                "$BIN" "$@" --db "$DB" --idempotency-key "$KEY_PREFIX$i"
            else
                "$BIN" "$@" --db "$DB"
            fi
            echo "exit:$?"
        done
        """
    let environment = childEnvironment([
        "BIN": try CLIBinary.require(), "DB": ledger.databasePath, "ITERATIONS": String(iterations),
        "KEY_PREFIX": keyPrefix ?? "",
    ])
    // Start every worker before waiting for any, so that they run in parallel.
    let running = try (0..<CLIConcurrencyTests.workerCount).map { _ in
        try RunningProcess(
            executable: "/bin/sh", arguments: ["-c", script, "worker"] + arguments, environment: environment,
            directory: ledger.directory)
    }
    let results = running.map { $0.wait() }
    for result in results {
        try #require(result.status == 0, "a worker's shell failed: \(result)")
    }
    return results
}

/// Splits a worker's stdout into its attempts: the lines before each `exit:STATUS` marker.
private func attempts(in worker: CLIResult, expected: Int) throws -> [WorkerAttempt] {
    var attempts: [WorkerAttempt] = []
    var pending: [Substring] = []
    for line in worker.stdout.split(separator: "\n") {
        if line.hasPrefix("exit:") {
            let status = try #require(Int32(line.dropFirst("exit:".count)), "bad marker \(line)")
            attempts.append(WorkerAttempt(status: status, stdout: pending.joined(separator: "\n")))
            pending = []
        } else {
            pending.append(line)
        }
    }
    try #require(pending.isEmpty, "output after the last exit marker: \(pending)")
    try #require(attempts.count == expected, "expected \(expected) attempts: \(worker)")
    return attempts
}

/// Every attempt of every worker.
private func allAttempts(of workers: [CLIResult], expectedEach: Int) throws -> [WorkerAttempt] {
    try workers.flatMap { try attempts(in: $0, expected: expectedEach) }
}
