import BudgetLedger
import BudgetLedgerWire
import Foundation
import Synchronization

/// Where an export goes: standard output, or a file written beside its final name and renamed
/// into place only when complete, so a failed export never leaves half a file. Sendable: a
/// PostgreSQL export writes to it from a task while the command's thread waits.
final class ExportSink: Sendable {
    private let handle: FileHandle
    private let finalPath: String?
    private let partialPath: String?
    private let buffer = Mutex("")
    private let showsProgress: Bool

    init(path: String?) throws {
        finalPath = path
        if let path {
            let partial = path + ".partial"
            guard FileManager.default.createFile(atPath: partial, contents: nil) else {
                throw LedgerError.invalidInput(field: "out", reason: "cannot create \(partial)")
            }
            partialPath = partial
            handle = try FileHandle(forWritingTo: URL(fileURLWithPath: partial))
            showsProgress = isatty(STDERR_FILENO) != 0
        } else {
            partialPath = nil
            handle = FileHandle.standardOutput
            showsProgress = false
        }
    }

    func write(_ text: String) {
        let full = buffer.withLock { buffer -> String? in
            buffer += text
            guard buffer.utf8.count >= 1 << 16 else { return nil }
            defer { buffer = "" }
            return buffer
        }
        if let full { handle.write(Data(full.utf8)) }
    }

    /// Every 100,000 rows, on a terminal only, when writing to a file.
    func progress(_ rows: Int) {
        if showsProgress && rows % 100_000 == 0 {
            FileHandle.standardError.write(Data("\rexported \(rows) events".utf8))
        }
    }

    private func flush() {
        let rest = buffer.withLock { buffer in
            defer { buffer = "" }
            return buffer
        }
        handle.write(Data(rest.utf8))
    }

    func finish() throws {
        flush()
        if let partialPath, let finalPath {
            try handle.close()
            if FileManager.default.fileExists(atPath: finalPath) {
                try FileManager.default.removeItem(atPath: finalPath)
            }
            try FileManager.default.moveItem(atPath: partialPath, toPath: finalPath)
            if showsProgress { FileHandle.standardError.write(Data("\n".utf8)) }
        }
    }

    func abandon() {
        if let partialPath {
            try? handle.close()
            try? FileManager.default.removeItem(atPath: partialPath)
        }
    }
}
