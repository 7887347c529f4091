import Foundation

/// A copy of this binary started in a worker mode, spoken to over its stdin and stdout.
///
/// The protocol is lines: the child prints `ready` once it has opened the ledger, waits for
/// one byte on stdin, does its work, and prints `result key=value …`.
final class ChildProcess {
    private let process = Process()
    private let output = Pipe()
    private let input = Pipe()

    /// Starts `budget-ledger-bench <arguments>`; its stderr is ours.
    init(arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: ProcessFacts.executablePath)
        process.arguments = arguments
        process.standardOutput = output
        process.standardInput = input
        try process.run()
    }

    /// The child's next line of output, without the newline; nil at end of output, or when
    /// `deadlineNanoseconds` (monotonic) passes first.
    func readLine(deadlineNanoseconds: UInt64? = nil) -> String? {
        let descriptor = output.fileHandleForReading.fileDescriptor
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            if let deadlineNanoseconds, !Self.waitReadable(descriptor, until: deadlineNanoseconds) {
                return nil
            }
            let count = read(descriptor, &byte, 1)
            if count == 1 {
                if byte == UInt8(ascii: "\n") { break }
                bytes.append(byte)
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                if bytes.isEmpty { return nil }
                break
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Waits until `descriptor` has input (or end of file); false when the deadline passes first.
    private static func waitReadable(_ descriptor: Int32, until deadlineNanoseconds: UInt64) -> Bool {
        while true {
            let now = MonotonicClock.nowNanoseconds()
            guard now < deadlineNanoseconds else { return false }
            var request = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(min((deadlineNanoseconds - now) / 1_000_000 + 1, 60_000))
            let ready = poll(&request, 1, milliseconds)
            if ready > 0 { return true }
            if ready < 0 && errno != EINTR { return true }
        }
    }

    /// Ends the child (SIGTERM, which a SQLite reader does not catch); it was ours, started by this process.
    func stop() {
        if process.isRunning {
            process.terminate()
        }
    }

    /// Tells the child to start.
    func sendGo() throws {
        try input.fileHandleForWriting.write(contentsOf: Data("g".utf8))
        try input.fileHandleForWriting.close()
    }

    /// Waits for the child to end; returns its exit status.
    func waitForExit() -> Int32 {
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Parses `result key=value key=value` into its fields.
    static func fields(ofResultLine line: String?) -> [String: String]? {
        guard let line, line.hasPrefix("result ") else { return nil }
        var fields: [String: String] = [:]
        for pair in line.dropFirst("result ".count).split(separator: " ") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        return fields
    }
}

/// Reading the worker side of the protocol.
enum ParentChannel {
    /// Tells the parent this worker is ready, then blocks until the parent says go (or goes away).
    static func announceReadyAndWait() {
        say("ready")
        var byte: UInt8 = 0
        while read(STDIN_FILENO, &byte, 1) < 0 && errno == EINTR {}
    }

    /// Writes one line to stdout, unbuffered, so the parent sees it at once.
    static func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}
