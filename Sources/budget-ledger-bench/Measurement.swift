import BudgetLedger
import Foundation

/// The monotonic clock, in nanoseconds: never jumps with the wall clock.
enum MonotonicClock {
    static func nowNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    static func deadline(afterSeconds seconds: Double) -> UInt64 {
        nowNanoseconds() + UInt64(seconds * 1e9)
    }

    /// Runs `body` and returns its result with the wall time it took.
    static func timed<Result>(_ body: () throws -> Result) rethrows -> (result: Result, seconds: Double) {
        let start = nowNanoseconds()
        let result = try body()
        return (result, Double(nowNanoseconds() - start) / 1e9)
    }
}

/// Percentiles of a set of call latencies (nearest rank, as the reference).
struct LatencySummary: Sendable {
    let count: Int
    let p50Microseconds: Double
    let p99Microseconds: Double
    let maxMicroseconds: Double

    init(nanoseconds samples: [UInt64]) {
        let sorted = samples.sorted()
        count = sorted.count
        func percentile(_ fraction: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            let rank = Int((fraction * Double(sorted.count)).rounded(.up)) - 1
            return Double(sorted[min(max(rank, 0), sorted.count - 1)]) / 1_000
        }
        p50Microseconds = percentile(0.50)
        p99Microseconds = percentile(0.99)
        maxMicroseconds = Double(sorted.last ?? 0) / 1_000
    }
}

/// What one caller did during a timed loop.
struct CallerStats: Sendable {
    /// Calls that recorded their consume.
    var accepted = 0
    /// Of `accepted`: calls the ledger answered by replaying an earlier consume with the same
    /// idempotency key (nothing recorded; much cheaper). The workload never repeats a key, so
    /// any replay means the measurement is wrong.
    var replayed = 0
    /// Calls the budget refused (`BudgetExhaustedError`): a full transaction that recorded nothing.
    var refused = 0
    /// Calls that failed any other way (busy timeout, I/O, …).
    var failed = 0
    var busyTimeouts = 0
    var firstFailure: String?
    /// Of `accepted` and `refused`: the calls on the tight thread.
    var tightAccepted = 0
    var tightRefused = 0
    /// Every call's wall time, failures included (a busy timeout is a wait too).
    var latenciesNanoseconds: [UInt64] = []
    var elapsedSeconds = 0.0
    /// CPU time the whole process spent during the loop (every thread, so: one caller's share
    /// only when it is the only caller), user and system.
    var processUserSeconds = 0.0
    var processSystemSeconds = 0.0

    /// Calls that completed a transaction, accepted or refused.
    var completed: Int { accepted + refused }

    /// A loop stops early after this many failures: something is broken, not slow.
    static let failuresMax = 1_000

    mutating func merge(_ other: CallerStats) {
        accepted += other.accepted
        replayed += other.replayed
        refused += other.refused
        failed += other.failed
        busyTimeouts += other.busyTimeouts
        firstFailure = firstFailure ?? other.firstFailure
        tightAccepted += other.tightAccepted
        tightRefused += other.tightRefused
        latenciesNanoseconds += other.latenciesNanoseconds
        elapsedSeconds = max(elapsedSeconds, other.elapsedSeconds)
        // Callers in one process measure the same process over the same window: not additive.
        processUserSeconds = max(processUserSeconds, other.processUserSeconds)
        processSystemSeconds = max(processSystemSeconds, other.processSystemSeconds)
    }
}

/// Calls `perform` with the workload's next call until `deadlineNanoseconds`, timing each call
/// (the workload's own bookkeeping stays outside the timing). `perform` returns whether the
/// ledger replayed the call.
func runCalls(
    until deadlineNanoseconds: UInt64, workload: inout Workload, expectedCalls: Int,
    _ perform: (ConsumeCall) throws -> Bool
) -> CallerStats {
    var stats = CallerStats()
    stats.latenciesNanoseconds.reserveCapacity(min(expectedCalls, 8_000_000))
    let cpuStart = ProcessFacts.cpuSeconds()
    let start = MonotonicClock.nowNanoseconds()
    var now = start
    while now < deadlineNanoseconds && stats.failed < CallerStats.failuresMax {
        let call = workload.nextCall()
        let callStart = MonotonicClock.nowNanoseconds()
        do {
            if try perform(call) { stats.replayed += 1 }
            stats.accepted += 1
            if call.isTight { stats.tightAccepted += 1 }
        } catch is BudgetExhaustedError {
            stats.refused += 1
            if call.isTight { stats.tightRefused += 1 }
        } catch {
            stats.failed += 1
            if (error as? LedgerError)?.isBusy == true {
                stats.busyTimeouts += 1
            }
            if stats.firstFailure == nil { stats.firstFailure = "\(error)" }
        }
        now = MonotonicClock.nowNanoseconds()
        stats.latenciesNanoseconds.append(now - callStart)
    }
    stats.elapsedSeconds = Double(now - start) / 1e9
    let cpuEnd = ProcessFacts.cpuSeconds()
    stats.processUserSeconds = cpuEnd.user - cpuStart.user
    stats.processSystemSeconds = cpuEnd.system - cpuStart.system
    return stats
}

/// Facts about this process and machine.
enum ProcessFacts {
    /// The resident set size (`VmRSS` in `/proc/self/status`), in KiB; nil where there is no /proc.
    static func residentKilobytes() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }

    /// CPU seconds this process has used, user and system (every thread). See getrusage(2).
    static func cpuSeconds() -> (user: Double, system: Double) {
        var usage = rusage()
        #if os(Linux)
            getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        #else
            getrusage(RUSAGE_SELF, &usage)
        #endif
        let seconds = { (time: timeval) in Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return (seconds(usage.ru_utime), seconds(usage.ru_stime))
    }

    /// This binary, so that the multi-process part can spawn copies of itself.
    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    static var loadAverage: String {
        let text = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?"
        return text.split(separator: " ").prefix(3).joined(separator: " ")
    }
}

/// Progress and details go to stderr, so that stdout holds only the results.
func log(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
