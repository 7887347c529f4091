import BudgetLedger
import BudgetLedgerWire
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Synchronization
import Testing

@testable import BudgetLedgerServer

/// A fresh folder holding one ledger file, removed by `remove()`.
struct ScratchFolder {
    let directory: URL
    let databasePath: String

    init() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("budget-ledger-server-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        databasePath = directory.appendingPathComponent("ledger.db").path
    }

    func remove() {
        try? FileManager.default.removeItem(at: directory)
    }

    /// A second connection to the server's ledger file, for seeding and for checking what the
    /// server wrote. Closed after `body`.
    func withLedger<Result>(_ body: (Ledger) throws -> Result) throws -> Result {
        let ledger = try Ledger(path: databasePath)
        defer { ledger.close() }
        return try body(ledger)
    }
}

/// A quiet logger: the tests read responses, not logs.
let testLogger: Logger = {
    var logger = Logger(label: "budget-ledger-tests")
    logger.logLevel = .warning
    return logger
}()

/// Builds the application the binary runs, on a ledger in a fresh folder, and runs `body`
/// against it with the router test client (or a real port with `.live`).
func withServer<Value>(
    token: String? = nil, testing: TestingSetup = .router,
    seed: (ScratchFolder) throws -> Void = { _ in },
    _ body: @Sendable (any TestClientProtocol, ScratchFolder) async throws -> Value
) async throws -> Value {
    let folder = try ScratchFolder()
    defer { folder.remove() }
    try folder.withLedger { _ in }
    try seed(folder)
    let app = try buildApplication(
        ServerConfiguration(databasePath: folder.databasePath, port: 0, token: token), logger: testLogger)
    return try await app.test(testing) { client in try await body(client, folder) }
}

extension TestClientProtocol {
    /// Sends `body` (JSON text, when given) and returns the response.
    func send(
        _ method: HTTPRequest.Method, _ uri: String, json body: String? = nil, headers: HTTPFields = [:]
    ) async throws -> TestResponse {
        var headers = headers
        if body != nil { headers[.contentType] = "application/json" }
        return try await execute(uri: uri, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) })
    }

    func get(_ uri: String, headers: HTTPFields = [:]) async throws -> TestResponse {
        try await send(.get, uri, headers: headers)
    }

    func post(_ uri: String, json body: String? = nil, headers: HTTPFields = [:]) async throws -> TestResponse {
        try await send(.post, uri, json: body, headers: headers)
    }
}

extension TestResponse {
    /// The body as text.
    var text: String { String(buffer: body) }

    /// The body as one JSON object.
    func object() throws -> [String: Any] {
        try #require(
            try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    /// The `detail` of an error body.
    func detail() throws -> String {
        try #require(try object()["detail"] as? String, "no detail in \(text)")
    }
}

/// The body of a `{"error": …, "detail": …}` response, exactly.
func errorBody(_ error: String, _ detail: String) -> String {
    JSONValue.object([("error", .string(error)), ("detail", .string(detail))]).serialized()
}

/// JSON numbers are `NSNumber`s; reads one as Int64.
func int64(_ value: Any?) -> Int64? {
    (value as? NSNumber)?.int64Value
}

/// The built `budget-ledger` binary, next to the test executable.
enum CLIBinary {
    static let path: String = {
        let executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("budget-ledger").path
    }()

    static func require() throws -> String {
        try #require(
            FileManager.default.isExecutableFile(atPath: path),
            "the budget-ledger binary is missing at \(path): build with `swift build --build-tests`")
        return path
    }
}

/// How a child process ended and what it printed.
struct ProcessOutput: Sendable, CustomStringConvertible {
    let status: Int32
    let stdout: String
    let stderr: String

    var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// A started `budget-ledger` process; stdout and stderr are read on threads of their own.
///
/// Unchecked: `Process` is not marked Sendable, but we only read its state and send it signals.
final class CLIProcess: @unchecked Sendable {
    private let process: Process
    private let stdoutLines: LineCollector
    private let stderrLines: LineCollector

    init(_ arguments: [String], environment: [String: String] = [:]) throws {
        let process = Process()
        let (stdoutPipe, stderrPipe) = (Pipe(), Pipe())
        process.executableURL = URL(fileURLWithPath: try CLIBinary.require())
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment
        merged["BUDGET_LEDGER_DB"] = nil
        merged["BUDGET_LEDGER_TOKEN"] = nil
        merged.merge(environment) { _, new in new }
        process.environment = merged
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        try process.run()
        self.process = process
        stdoutLines = LineCollector(stdoutPipe.fileHandleForReading)
        stderrLines = LineCollector(stderrPipe.fileHandleForReading)
    }

    /// The first line the process writes to stdout; nil when it exits without one.
    func firstStdoutLine() -> String? { stdoutLines.firstLine() }

    var isRunning: Bool { process.isRunning }

    func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    func wait() -> ProcessOutput {
        process.waitUntilExit()
        let status = process.terminationReason == .exit ? process.terminationStatus : 128 + process.terminationStatus
        return ProcessOutput(status: status, stdout: stdoutLines.all(), stderr: stderrLines.all())
    }
}

/// Reads a pipe to its end on a dedicated thread, announcing the first line as soon as it arrives.
private final class LineCollector: Sendable {
    private let collected = Mutex(Data())
    private let firstLineSeen = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            var announced = false
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                let hasLine = collected.withLock { data in
                    data.append(chunk)
                    return data.contains(0x0A)
                }
                if hasLine && !announced {
                    announced = true
                    firstLineSeen.signal()
                }
            }
            if !announced { firstLineSeen.signal() }
            finished.signal()
        }
    }

    func firstLine() -> String? {
        firstLineSeen.wait()
        firstLineSeen.signal()
        let text = collected.withLock { String(decoding: $0, as: UTF8.self) }
        guard let newline = text.firstIndex(of: "\n") else { return nil }
        return String(text[..<newline])
    }

    func all() -> String {
        finished.wait()
        finished.signal()
        return collected.withLock { String(decoding: $0, as: UTF8.self) }
    }
}
