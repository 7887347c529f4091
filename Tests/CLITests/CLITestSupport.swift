import BudgetLedger
import Foundation
import Synchronization
import Testing

// Helpers that run the built `budget-ledger` binary as real processes and read what it printed.
// The tests link nothing from the package: they see only what a user of the CLI sees.

/// How one process ended and what it printed.
struct CLIResult: Sendable, CustomStringConvertible {
    let arguments: [String]
    let status: Int32
    let stdout: String
    let stderr: String

    /// The first line written to stderr ("" when nothing was).
    var firstErrorLine: String {
        stderr.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
    }

    /// stdout parsed as one JSON object.
    func jsonObject() throws -> [String: Any] {
        try parseJSONObject(stdout, what: "stdout of \(arguments)")
    }

    var description: String {
        "budget-ledger \(arguments) exited \(status)\nstdout: \(stdout)\nstderr: \(stderr)"
    }
}

/// Where the binary under test lives.
enum CLIBinary {
    /// `BUDGET_LEDGER_BIN` when set; else `budget-ledger` in the directory of the running test
    /// executable, or one of its parents (an Apple `.xctest` bundle nests the executable three deep).
    static let path: String = {
        if let path = ProcessInfo.processInfo.environment["BUDGET_LEDGER_BIN"], !path.isEmpty {
            return path
        }
        let executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: executable).resolvingSymlinksInPath().deletingLastPathComponent()
        let nextToTests = directory.appendingPathComponent("budget-ledger").path
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("budget-ledger").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory.deleteLastPathComponent()
        }
        return nextToTests
    }()

    /// The binary's path, or a test failure that says how to build it.
    static func require() throws -> String {
        try #require(
            FileManager.default.isExecutableFile(atPath: path),
            """
            the budget-ledger binary is missing at \(path): build it with \
            `swift build --build-tests`, or point BUDGET_LEDGER_BIN at it
            """)
        return path
    }
}

/// The environment for a child: ours, without `BUDGET_LEDGER_DB` (a developer's own ledger must
/// never leak into a test), plus `overrides`.
func childEnvironment(_ overrides: [String: String]) -> [String: String] {
    var environment = ProcessInfo.processInfo.environment
    environment["BUDGET_LEDGER_DB"] = nil
    environment.merge(overrides) { _, override in override }
    return environment
}

/// Runs `budget-ledger arguments…` in `directory` and waits for it.
func runCLI(
    _ arguments: [String], environment: [String: String] = [:], in directory: URL? = nil
) throws -> CLIResult {
    let binary = try CLIBinary.require()
    let process = try RunningProcess(
        executable: binary, arguments: arguments, environment: childEnvironment(environment), directory: directory)
    return process.wait()
}

/// A started child process whose stdout and stderr are read to the end on their own threads,
/// so that a child filling one pipe never blocks while we wait on the other.
final class RunningProcess {
    private let process: Process
    private let arguments: [String]
    private let stdoutReader: PipeReader
    private let stderrReader: PipeReader

    init(executable: String, arguments: [String], environment: [String: String], directory: URL?) throws {
        let process = Process()
        let stdoutPipe = Pipe()
        let stderrPipe = Pipe()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        if let directory { process.currentDirectoryURL = directory }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        try process.run()
        self.process = process
        self.arguments = arguments
        stdoutReader = PipeReader.start(stdoutPipe.fileHandleForReading)
        stderrReader = PipeReader.start(stderrPipe.fileHandleForReading)
    }

    /// Waits for the process to exit and for both pipes to reach end of file.
    func wait() -> CLIResult {
        process.waitUntilExit()
        let stdout = String(decoding: stdoutReader.data(), as: UTF8.self)
        let stderr = String(decoding: stderrReader.data(), as: UTF8.self)
        // A child killed by a signal has no exit status; report it as 128 + signal, as shells do.
        let status = process.terminationReason == .exit ? process.terminationStatus : 128 + process.terminationStatus
        return CLIResult(arguments: arguments, status: status, stdout: stdout, stderr: stderr)
    }
}

/// Reads a pipe to end of file on a dedicated thread (not the shared concurrency pool, which
/// has as many threads as cores and would let blocked readers starve each other).
private final class PipeReader: Sendable {
    private let collected = Mutex(Data())
    private let finished = DispatchSemaphore(value: 0)

    static func start(_ handle: FileHandle) -> PipeReader {
        let reader = PipeReader()
        Thread.detachNewThread {
            let data = handle.readDataToEndOfFile()
            reader.collected.withLock { $0 = data }
            reader.finished.signal()
        }
        return reader
    }

    func data() -> Data {
        finished.wait()
        return collected.withLock { $0 }
    }
}

/// A fresh directory holding one ledger file, removed by `remove()`.
struct ScratchLedger {
    let directory: URL
    let databasePath: String

    init() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("budget-ledger-cli-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        databasePath = directory.appendingPathComponent("ledger.db").path
    }

    func remove() {
        try? FileManager.default.removeItem(at: directory)
    }

    /// `budget-ledger SUBCOMMAND --db LEDGER arguments…`, run in the scratch directory.
    func run(_ subcommand: String, _ arguments: String..., environment: [String: String] = [:]) throws -> CLIResult {
        try run([subcommand] + arguments, environment: environment)
    }

    /// `arguments[0] --db LEDGER arguments[1…]`, run in the scratch directory.
    func run(_ arguments: [String], environment: [String: String] = [:]) throws -> CLIResult {
        let withDatabase = Array(arguments.prefix(1)) + ["--db", databasePath] + arguments.dropFirst()
        return try runCLI(withDatabase, environment: environment, in: directory)
    }

    /// Runs a command that must succeed and returns its result.
    @discardableResult
    func succeed(_ subcommand: String, _ arguments: String...) throws -> CLIResult {
        let result = try run([subcommand] + arguments)
        try #require(result.status == 0, "expected exit 0: \(result)")
        return result
    }

    /// `usage THREAD --json`, which must succeed.
    func budget(_ thread: String) throws -> BudgetJSON {
        try BudgetJSON(try succeed("usage", thread, "--json").jsonObject())
    }

    /// `consume THREAD --json arguments…`, which must succeed.
    @discardableResult
    func consume(_ thread: String, _ arguments: String...) throws -> ConsumeJSON {
        let result = try run(["consume", thread, "--json"] + arguments)
        try #require(result.status == 0, "expected exit 0: \(result)")
        return try ConsumeJSON(try result.jsonObject())
    }

    /// Everything a reader can see of the ledger: `threads --json` and `verify --json` (which
    /// counts the events). Equal snapshots mean nothing was written in between.
    func snapshot() throws -> LedgerSnapshot {
        let threads = try succeed("threads", "--json")
        let verify = try succeed("verify", "--json")
        let report = try verify.jsonObject()
        return LedgerSnapshot(
            threadsJSON: threads.stdout, verifyJSON: verify.stdout,
            eventCount: try #require(report["events"] as? Int64, "verify --json has no events count: \(verify)"))
    }

    /// The file's bytes.
    func databaseBytes() throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: databasePath))
    }
}

/// See `ScratchLedger.snapshot()`.
struct LedgerSnapshot: Equatable {
    let threadsJSON: String
    let verifyJSON: String
    let eventCount: Int64
}

/// The documented JSON budget object, decoded strictly: exactly these keys, each of its type.
struct BudgetJSON: Equatable, CustomStringConvertible {
    var threadId: String
    var maxTokens: Int64
    var promptTokens: Int64
    var completionTokens: Int64
    var totalTokens: Int64
    var remaining: Int64
    var requestCount: Int64
    var percentUsed: Double
    var isExhausted: Bool

    static let keys: Set<String> = [
        "threadId", "maxTokens", "promptTokens", "completionTokens", "totalTokens", "remaining",
        "requestCount", "percentUsed", "isExhausted", "heldTokens", "remainingAfterHolds",
    ]

    init(
        threadId: String, maxTokens: Int64, promptTokens: Int64, completionTokens: Int64, totalTokens: Int64,
        remaining: Int64, requestCount: Int64, percentUsed: Double, isExhausted: Bool
    ) {
        self.threadId = threadId
        self.maxTokens = maxTokens
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens
        self.remaining = remaining
        self.requestCount = requestCount
        self.percentUsed = percentUsed
        self.isExhausted = isExhausted
    }

    init(_ value: Any?) throws {
        let object = try #require(value as? [String: Any], "not a JSON object: \(String(describing: value))")
        #expect(Set(object.keys) == Self.keys, "budget keys: \(object.keys.sorted())")
        threadId = try #require(object["threadId"] as? String)
        maxTokens = try #require(object["maxTokens"] as? Int64)
        promptTokens = try #require(object["promptTokens"] as? Int64)
        completionTokens = try #require(object["completionTokens"] as? Int64)
        totalTokens = try #require(object["totalTokens"] as? Int64)
        remaining = try #require(object["remaining"] as? Int64)
        requestCount = try #require(object["requestCount"] as? Int64)
        percentUsed = try #require(object["percentUsed"] as? Double)
        isExhausted = try #require(object["isExhausted"] as? Bool)
    }

    var description: String {
        "\(threadId): \(totalTokens)/\(maxTokens) (prompt \(promptTokens), completion \(completionTokens)), "
            + "remaining \(remaining), \(requestCount) requests, \(percentUsed)%, exhausted \(isExhausted)"
    }
}

/// One element of `crossedThresholds`, decoded strictly.
struct CrossingJSON: Equatable {
    var thresholdPercent: Int64
    var severity: String
    var percentUsed: Double
    var tokensUsed: Int64
    var tokensRemaining: Int64
    var maxTokens: Int64

    static let keys: Set<String> = [
        "thresholdPercent", "severity", "percentUsed", "tokensUsed", "tokensRemaining", "maxTokens",
    ]

    init(
        thresholdPercent: Int64, severity: String, percentUsed: Double, tokensUsed: Int64, tokensRemaining: Int64,
        maxTokens: Int64
    ) {
        self.thresholdPercent = thresholdPercent
        self.severity = severity
        self.percentUsed = percentUsed
        self.tokensUsed = tokensUsed
        self.tokensRemaining = tokensRemaining
        self.maxTokens = maxTokens
    }

    init(_ value: Any?) throws {
        let object = try #require(value as? [String: Any], "not a JSON object: \(String(describing: value))")
        #expect(Set(object.keys) == Self.keys, "crossing keys: \(object.keys.sorted())")
        thresholdPercent = try #require(object["thresholdPercent"] as? Int64)
        severity = try #require(object["severity"] as? String)
        percentUsed = try #require(object["percentUsed"] as? Double)
        tokensUsed = try #require(object["tokensUsed"] as? Int64)
        tokensRemaining = try #require(object["tokensRemaining"] as? Int64)
        maxTokens = try #require(object["maxTokens"] as? Int64)
    }
}

/// The output of `consume --json`: the documented keys must be there; others (such as
/// "replayed") may be.
struct ConsumeJSON {
    var budget: BudgetJSON
    var crossedThresholds: [CrossingJSON]
    /// The "replayed" flag, when the output carries one.
    var replayed: Bool?

    init(_ object: [String: Any]) throws {
        budget = try BudgetJSON(object["budget"])
        let crossings = try #require(object["crossedThresholds"] as? [Any], "no crossedThresholds array: \(object)")
        crossedThresholds = try crossings.map(CrossingJSON.init)
        replayed = object["replayed"] as? Bool
    }

    /// The percents of the crossed thresholds, in output order.
    var crossedPercents: [Int64] { crossedThresholds.map(\.thresholdPercent) }
}

/// Parses `text` as one JSON object.
func parseJSONObject(_ text: String, what: String) throws -> [String: Any] {
    let value = try JSONSerialization.jsonObject(with: Data(text.utf8))
    return try #require(value as? [String: Any], "\(what) is not a JSON object: \(text)")
}

/// The sqlite3 shell, when the machine has one: an independent reader of the ledger file.
enum SQLiteShell {
    static let path = "/usr/bin/sqlite3"
    static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: path) }

    /// Runs `sqlite3 database sql` and returns its stdout, trimmed.
    static func run(_ database: String, _ sql: String) throws -> String {
        let process = try RunningProcess(
            executable: path, arguments: [database, sql], environment: childEnvironment([:]), directory: nil)
        let result = process.wait()
        try #require(result.status == 0, "sqlite3 failed: \(result)")
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Every event of `ledger`, read page by page through the feed.
func allEvents(of ledger: Ledger) throws -> [LedgerEvent] {
    var events: [LedgerEvent] = []
    var after: Int64 = 0
    while true {
        let page = try ledger.events(after: after, limit: LedgerLimits.feedPageLimitMax)
        if page.events.isEmpty { return events }
        events += page.events
        after = page.lastID
    }
}
