// ledger-crash-worker: one of the processes the crash and power-loss tests run on a shared
// ledger file and kill with SIGKILL at random moments.
//
//     ledger-crash-worker --db PATH --worker N --seed S [--threads K] [--max M] [--tasks T]
//                         [--ttl SECONDS] [--operations COUNT] [--synchronous full|normal]
//                         [--wait-when-done]
//
// Each of T tasks (threads sharing one `Ledger`, so group commit batches their writes) loops
// doing a seeded random mix on the shared threads "crash-0"…"crash-(K-1)": checked consumes
// with a unique idempotency key, and holds that are settled (never above the hold), released,
// or abandoned to expire. Only checked paths spend, so no thread's spend may ever pass its max.
//
// The ledger commits at `--synchronous` (default: NORMAL for even workers, FULL for odd ones).
// With `--operations`, each task stops after that many operations; the worker then closes the
// ledger and exits, or, with `--wait-when-done`, prints `done` and sleeps until it is killed
// without closing anything (closing checkpoints, and so syncs, what a power loss would take).
//
// A line goes to stdout only after the call has returned, that is after its transaction
// committed, in one write(2) of less than PIPE_BUF bytes, so a kill never leaves half a line
// and never loses a line for a commit that was acknowledged:
//
//     ack consume KEY THREAD PROMPT COMPLETION EVENT_ID
//     ack reserve RESERVATION_ID THREAD TOKENS EXPIRES_AT_US
//     ack settle RESERVATION_ID KEY PROMPT COMPLETION EVENT_ID EXPIRED(0|1)
//     ack release RESERVATION_ID
//     refused consume KEY THREAD PROMPT COMPLETION
//     refused reserve THREAD TOKENS CALLED_AT_US RETURNED_AT_US
//     done
//
// A refused reserve has no key: the clock readings around the call bound the timestamp any
// event it had recorded would carry (the ledger stamps events with the same clock).
//
// Other failures go to stderr as `error OPERATION KIND …` and the loop goes on. KIND is
// `busy` (the writer lock was held past the busy timeout), `hold-expired` (a release of a hold
// whose ttl had run out by the time the call returned) or `unexpected` (anything else; the
// tests fail on it). Exit status 64 for bad arguments, 70 when the ledger cannot be opened.

import BudgetLedger
import Foundation

/// The command line, parsed.
struct WorkerOptions: Sendable {
    var databasePath = ""
    var worker = -1
    var seed: UInt64 = 0
    var threadCount = 4
    /// When given: the max of every thread this worker finds not open (set once, so all workers
    /// on a file must pass the same value).
    var maxTokens: Int64?
    var taskCount = 2
    var holdSeconds: Int64 = 2
    /// Operations per task before the worker exits on its own; nil: loop until killed.
    var operations: Int?
    /// The synchronous level: true for NORMAL, false for FULL; nil: NORMAL for even workers,
    /// FULL for odd ones.
    var synchronousNormal: Bool?
    /// After `operations`, print `done` and sleep until killed instead of closing the ledger.
    var waitWhenDone = false

    static let usage = """
        usage: ledger-crash-worker --db PATH --worker N --seed S [--threads K] [--max M] [--tasks T] \
        [--ttl SECONDS] [--operations COUNT] [--synchronous full|normal] [--wait-when-done]
        """

    init(arguments: [String]) throws(UsageError) {
        var remaining = arguments[...]
        var seedGiven = false
        while let name = remaining.popFirst() {
            if name == "--wait-when-done" {
                waitWhenDone = true
                continue
            }
            guard let value = remaining.popFirst() else { throw UsageError("\(name) needs a value") }
            switch name {
            case "--db": databasePath = value
            case "--worker": worker = try Self.number(value, name, in: 0...999_999)
            case "--seed":
                seed = try UInt64(Self.number(value, name, in: 0...Int.max))
                seedGiven = true
            case "--threads": threadCount = try Self.number(value, name, in: 1...1_000)
            case "--max": maxTokens = Int64(try Self.number(value, name, in: 0...Int.max))
            case "--tasks": taskCount = try Self.number(value, name, in: 1...64)
            case "--ttl": holdSeconds = Int64(try Self.number(value, name, in: 1...3_600))
            case "--operations": operations = try Self.number(value, name, in: 1...Int.max)
            case "--synchronous":
                switch value {
                case "full": synchronousNormal = false
                case "normal": synchronousNormal = true
                default: throw UsageError("--synchronous must be full or normal (got \(value))")
                }
            default: throw UsageError("unknown option \(name)")
            }
        }
        if databasePath.isEmpty { throw UsageError("--db is required") }
        if worker < 0 { throw UsageError("--worker is required") }
        // The seed is part of every idempotency key: a default would repeat keys across runs.
        if !seedGiven { throw UsageError("--seed is required") }
        if waitWhenDone && operations == nil { throw UsageError("--wait-when-done needs --operations") }
    }

    private static func number(_ text: String, _ name: String, in range: ClosedRange<Int>) throws(UsageError) -> Int {
        guard let value = Int(text), range.contains(value) else {
            throw UsageError("\(name) must be an integer in \(range.lowerBound)…\(range.upperBound) (got \(text))")
        }
        return value
    }
}

/// A bad command line: the message says what was wrong.
struct UsageError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// SplitMix64: a small, seedable generator, so a run's choices follow from its seed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}

/// Writes `line` and a newline to `descriptor` in one write(2) call: a pipe write of at most
/// PIPE_BUF (4096) bytes is atomic, so lines of concurrent tasks never interleave and a kill
/// never leaves half a line. Nothing is buffered in the process.
func emit(_ line: String, to descriptor: Int32 = STDOUT_FILENO) {
    let bytes = Array((line + "\n").utf8)
    precondition(descriptor != STDOUT_FILENO || bytes.count <= 512, "an ack line must stay far below PIPE_BUF")
    var written = 0
    while written < bytes.count {
        let result = bytes.withUnsafeBytes { buffer in
            write(descriptor, buffer.baseAddress! + written, buffer.count - written)
        }
        if result < 0 {
            if errno == EINTR { continue }
            // The reader is gone: nobody can check our acknowledgements any more.
            exit(0)
        }
        written += result
    }
}

/// One task's loop over the shared ledger.
struct WorkerTask {
    let ledger: Ledger
    let options: WorkerOptions
    let task: Int
    var random: SplitMix64
    var sequence = 0

    init(ledger: Ledger, options: WorkerOptions, task: Int) {
        self.ledger = ledger
        self.options = options
        self.task = task
        random = SplitMix64(seed: options.seed &* 1_000_003 &+ UInt64(options.worker) &* 7_919 &+ UInt64(task))
    }

    mutating func run() {
        while options.operations.map({ sequence < $0 }) ?? true {
            sequence += 1
            let threadID = "crash-\(Int.random(in: 0..<options.threadCount, using: &random))"
            if Int.random(in: 0..<100, using: &random) < 60 {
                consume(on: threadID)
            } else {
                hold(on: threadID)
            }
        }
    }

    /// Unique across every worker and every round that shares the file, since the seed is.
    private var key: String { "w\(options.worker)-s\(options.seed)-t\(task)-\(sequence)" }

    /// The scopes of a call: one of two agents (the harness gives crash-agent-0 a tight token
    /// budget), a priced model and one org (with a dollar budget by day), so that checked calls
    /// meet scope budgets too.
    private mutating func usage() -> UsageDetails {
        UsageDetails(
            agentID: "crash-agent-\(Int.random(in: 0..<2, using: &random))", model: "gpt-4o-mini",
            metadata: Self.metadata)
    }

    /// Every call carries the same org, checked once (`try!`: a literal the ledger's rules accept).
    private static let metadata = try! Metadata(["org_id": .string("crash-org")])

    private mutating func consume(on threadID: String) {
        let prompt = Int64.random(in: 1...40, using: &random)
        let completion = Int64.random(in: 0...20, using: &random)
        let usage = usage()
        do {
            let result = try ledger.checkAndConsume(
                threadID, promptTokens: prompt, completionTokens: completion, idempotencyKey: key, usage: usage)
            let replay = result.isReplay ? " replay" : ""
            emit("ack consume \(key) \(threadID) \(prompt) \(completion) \(result.event.id)\(replay)")
        } catch is BudgetExhaustedError {
            emit("refused consume \(key) \(threadID) \(prompt) \(completion)")
        } catch {
            emit("error consume \(kind(of: error)) \(key): \(error)", to: STDERR_FILENO)
        }
    }

    /// Reserves, then settles (at most the hold), releases, or abandons the hold to expire.
    private mutating func hold(on threadID: String) {
        let tokens = Int64.random(in: 1...60, using: &random)
        let reservation: Reservation
        let calledAt = Ledger.systemClockMicroseconds()
        let usage = usage()
        do {
            reservation = try ledger.reserve(threadID, tokens: tokens, ttlSeconds: options.holdSeconds, usage: usage)
                .reservation
            emit("ack reserve \(reservation.id) \(threadID) \(tokens) \(reservation.expiresAtMicroseconds)")
        } catch is BudgetExhaustedError {
            emit("refused reserve \(threadID) \(tokens) \(calledAt) \(Ledger.systemClockMicroseconds())")
            return
        } catch {
            emit("error reserve \(kind(of: error)) \(threadID): \(error)", to: STDERR_FILENO)
            return
        }
        let ending = Int.random(in: 0..<100, using: &random)
        if ending < 65 {
            let actual = Int64.random(in: 1...tokens, using: &random)
            let prompt = Int64.random(in: 1...actual, using: &random)
            settle(reservation, promptTokens: prompt, completionTokens: actual - prompt, usage: usage)
        } else if ending < 95 {
            release(reservation)
        }
    }

    /// Retries with the same idempotency key, so a retry after an ambiguous failure is a replay.
    private func settle(_ reservation: Reservation, promptTokens: Int64, completionTokens: Int64, usage: UsageDetails) {
        let key = "\(key)-settle"
        for attempt in 1...3 {
            do {
                let result = try ledger.settle(
                    reservation.id, promptTokens: promptTokens, completionTokens: completionTokens, idempotencyKey: key,
                    usage: usage)
                emit(
                    "ack settle \(reservation.id) \(key) \(promptTokens) \(completionTokens) "
                        + "\(result.consume.event.id) \(result.holdHadExpired ? 1 : 0)")
                return
            } catch {
                emit("error settle \(kind(of: error)) \(reservation.id) attempt \(attempt): \(error)", to: STDERR_FILENO)
            }
        }
    }

    private func release(_ reservation: Reservation) {
        do {
            try ledger.release(reservation.id)
            emit("ack release \(reservation.id)")
        } catch {
            // Refused as expired only when the ttl had run out by the time the call returned;
            // a refusal of a hold still live is a bug of the ledger's.
            let expired = Ledger.systemClockMicroseconds() >= reservation.expiresAtMicroseconds
            let errorKind = expired && isConflict(error) ? "hold-expired" : kind(of: error)
            emit("error release \(errorKind) \(reservation.id): \(error)", to: STDERR_FILENO)
        }
    }

    private func isConflict(_ error: any Error) -> Bool {
        if case .conflict = error as? LedgerError { return true }
        return false
    }

    /// `busy` for the bounded wait for the writer lock, which may run out on a loaded machine;
    /// `unexpected` for everything else.
    private func kind(of error: any Error) -> String {
        if (error as? LedgerError)?.isBusy == true { return "busy" }
        return "unexpected"
    }
}

/// Opens the ledger, retrying while another process holds the lock (it may be migrating).
func openLedger(_ options: WorkerOptions) -> Ledger {
    var lastError: (any Error)?
    for _ in 1...20 {
        do {
            // By default even workers commit at NORMAL (the background checkpointer runs there),
            // odd ones at FULL: a kill -9 may lose neither's acknowledged writes.
            let normal = options.synchronousNormal ?? (options.worker % 2 == 0)
            return try Ledger(
                path: options.databasePath, configuration: Ledger.Configuration(synchronous: normal ? .normal : .full))
        } catch let error as LedgerError {
            lastError = error
            guard error.isBusy else { break }
        } catch {
            lastError = error
            break
        }
    }
    emit("error open unexpected: \(lastError.map { "\($0)" } ?? "unknown")", to: STDERR_FILENO)
    exit(70)
}

/// Gives every thread this worker finds not open the max `maxTokens`. Not atomic across
/// processes: harmless only because every worker of a file passes the same max.
func openThreads(_ ledger: Ledger, _ options: WorkerOptions) {
    guard let maxTokens = options.maxTokens else { return }
    for index in 0..<options.threadCount {
        let threadID = "crash-\(index)"
        do {
            if try !ledger.hasBudget(threadID) {
                try ledger.setLimit(threadID, maxTokens: maxTokens)
            }
        } catch {
            emit("error set-limit unexpected \(threadID): \(error)", to: STDERR_FILENO)
        }
    }
}

let options: WorkerOptions
do {
    options = try WorkerOptions(arguments: Array(CommandLine.arguments.dropFirst()))
} catch {
    emit("error usage unexpected: \(error.message)\n\(WorkerOptions.usage)", to: STDERR_FILENO)
    exit(64)
}
let ledger = openLedger(options)
openThreads(ledger, options)
let finished = DispatchGroup()
for task in 0..<options.taskCount {
    finished.enter()
    Thread.detachNewThread {
        var worker = WorkerTask(ledger: ledger, options: options, task: task)
        worker.run()
        finished.leave()
    }
}
finished.wait()
if options.waitWhenDone {
    emit("done")
    while true { sleep(3_600) }
}
ledger.close()
