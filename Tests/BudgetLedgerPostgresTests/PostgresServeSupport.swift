import AsyncHTTPClient
import Foundation
import NIOHTTP1
import NIOCore
import Synchronization
import Testing

/// A `budget-ledger serve --db postgres://… --port 0` process on 127.0.0.1, stopped by `stop()`
/// (SIGTERM, then waited for) or, if a test forgets, when the object goes away.
final class ServeProcess: @unchecked Sendable {
    // Unchecked: `Process` is not marked Sendable; it is only read and signalled here.
    private let process: Process
    private let output: OutputCollector
    /// `http://127.0.0.1:PORT`.
    let baseURL: String

    /// Starts the server and waits for the line that names its URL.
    ///
    /// - Throws: when the server exits before listening (its output is in the error).
    init(databaseURL: String, extraArguments: [String] = []) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try cliBinaryPath())
        process.arguments = ["serve", "--db", databaseURL, "--host", "127.0.0.1", "--port", "0", "--json"] + extraArguments
        var environment = ProcessInfo.processInfo.environment
        environment["BUDGET_LEDGER_DB"] = nil
        environment["BUDGET_LEDGER_TOKEN"] = nil
        environment["LOG_LEVEL"] = "warning"
        process.environment = environment
        let (stdout, stderr) = (Pipe(), Pipe())
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        self.process = process
        output = OutputCollector(stdout: stdout.fileHandleForReading, stderr: stderr.fileHandleForReading)
        guard let line = output.firstStdoutLine(withinSeconds: 120),
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
            let url = object["url"] as? String
        else {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            throw ServeProcessError("serve did not listen within 120 s or exited first (status \(process.terminationStatus)): \(output.stderrText())")
        }
        baseURL = url
    }

    /// SIGTERM and wait: the server finishes the requests in flight, closes the ledger, exits 0.
    /// A server still running 60 s after SIGTERM is a failure of the test (recorded with its
    /// log) and is killed, so that a server that hangs in shutdown never hangs the test run.
    @discardableResult
    func stop() -> Int32 {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        if !waitForExit(process, seconds: 60) {
            Issue.record("serve was still running 60 s after SIGTERM; killed. Its log: \(stderrText.suffix(4_000))")
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// SIGKILL and wait: the server dies at once, mid-request, as in a crash.
    func kill9() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// What the server wrote to stderr so far (its log).
    var stderrText: String { output.stderrText() }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// Waits for `process` to exit, at most `seconds`; whether it did.
func waitForExit(_ process: Process, seconds: Double) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while process.isRunning {
        if Date() >= deadline { return false }
        usleep(20_000)
    }
    return true
}

struct ServeProcessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The built `budget-ledger`, beside the test executable.
func cliBinaryPath() throws -> String {
    let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var directory = URL(fileURLWithPath: executable).resolvingSymlinksInPath().deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = directory.appendingPathComponent("budget-ledger").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        directory.deleteLastPathComponent()
    }
    throw ServeProcessError("the budget-ledger binary is missing: build with swift build --build-tests")
}

/// Reads both pipes to their ends on threads of their own; the first stdout line is announced.
private final class OutputCollector: Sendable {
    private let stdout = Mutex(Data())
    private let stderr = Mutex(Data())
    private let firstLine = DispatchSemaphore(value: 0)

    init(stdout stdoutHandle: FileHandle, stderr stderrHandle: FileHandle) {
        Thread.detachNewThread { [self] in
            var announced = false
            while true {
                let chunk = stdoutHandle.availableData
                if chunk.isEmpty { break }
                let hasLine = stdout.withLock { data in
                    data.append(chunk)
                    return data.contains(0x0A)
                }
                if hasLine && !announced {
                    announced = true
                    firstLine.signal()
                }
            }
            if !announced { firstLine.signal() }
        }
        Thread.detachNewThread { [self] in
            while true {
                let chunk = stderrHandle.availableData
                if chunk.isEmpty { break }
                stderr.withLock { $0.append(chunk) }
            }
        }
    }

    /// The first line, or nil when stdout ended without one or none came within `seconds`.
    func firstStdoutLine(withinSeconds seconds: Int) -> String? {
        guard firstLine.wait(timeout: .now() + .seconds(seconds)) == .success else { return nil }
        firstLine.signal()
        let text = stdout.withLock { String(decoding: $0, as: UTF8.self) }
        return text.firstIndex(of: "\n").map { String(text[..<$0]) }
    }

    func stderrText() -> String { stderr.withLock { String(decoding: $0, as: UTF8.self) } }
}

/// One HTTP answer: its status, its Retry-After and ETag headers, and its body parsed as JSON (when it is).
struct HTTPAnswer: Sendable, CustomStringConvertible {
    let status: Int
    let retryAfter: String?
    let eTag: String?
    let body: String

    /// The body as a JSON object, or an empty one.
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
    }

    var description: String { "\(status) \(body)" }
}

/// Sends `method path` with `json` as the body (when given) and reads the whole answer. The
/// timeout only keeps a hung server from hanging the test run; no test asserts on time.
func call(
    _ method: HTTPMethod, _ baseURL: String, _ path: String, json: String? = nil, headers: [(String, String)] = [],
    timeout: TimeAmount = .seconds(120)
) async throws -> HTTPAnswer {
    var request = HTTPClientRequest(url: baseURL + path)
    request.method = method
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    if let json {
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: json))
    }
    let response = try await HTTPClient.shared.execute(request, timeout: timeout)
    let body = try await response.body.collect(upTo: 4 * 1024 * 1024)
    return HTTPAnswer(
        status: Int(response.status.code), retryAfter: response.headers.first(name: "Retry-After"),
        eTag: response.headers.first(name: "ETag"), body: String(buffer: body))
}

/// JSON numbers are `NSNumber`s; reads one as Int64.
func number(_ value: Any?) -> Int64? {
    (value as? NSNumber)?.int64Value
}
