import BudgetLedger
import Foundation

/// The lines of a file or of standard input, read a block at a time, so an import of any size
/// holds one block and one line in memory. A line ends at `\n` (a `\r` before it is dropped);
/// the last line needs no newline.
final class LineReader {
    private let descriptor: Int32
    private let ownsDescriptor: Bool
    private let lineBytesMax: Int
    private var block = [UInt8](repeating: 0, count: 1 << 20)
    private var start = 0
    private var end = 0
    private var atEndOfInput = false
    /// The number of the last line returned, from 1.
    private(set) var lineNumber = 0

    /// Opens `path`, or standard input for `-`.
    ///
    /// - Throws: `LineReadError` (exit 1, I/O) when it cannot be opened.
    init(path: String, lineBytesMax: Int) throws {
        self.lineBytesMax = lineBytesMax
        if path == "-" {
            descriptor = STDIN_FILENO
            ownsDescriptor = false
        } else {
            descriptor = open(path, O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else {
                throw LineReadError(description: "cannot open \(path): \(String(cString: strerror(errno)))")
            }
            ownsDescriptor = true
        }
    }

    deinit {
        if ownsDescriptor { close(descriptor) }
    }

    /// The next line's bytes (without its end), or nil at the end of the input.
    ///
    /// - Throws: `LedgerError.invalidInput` naming the line when it is longer than
    ///   `lineBytesMax` (it is not buffered); `LineReadError` when reading fails.
    func next() throws -> ArraySlice<UInt8>? {
        while true {
            if let newline = block[start..<end].firstIndex(of: UInt8(ascii: "\n")) {
                lineNumber += 1
                return try take(upTo: newline, skipping: 1)
            }
            if atEndOfInput {
                guard start < end else { return nil }
                lineNumber += 1
                return try take(upTo: end, skipping: 0)
            }
            if end - start > lineBytesMax {
                throw LedgerError.invalidInput(
                    field: "line \(lineNumber + 1)", reason: "is longer than the limit of \(lineBytesMax) bytes")
            }
            try fill()
        }
    }

    private func take(upTo lineEnd: Int, skipping separator: Int) throws -> ArraySlice<UInt8> {
        var line = block[start..<lineEnd]
        start = lineEnd + separator
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        if line.count > lineBytesMax {
            throw LedgerError.invalidInput(
                field: "line \(lineNumber)", reason: "is longer than the limit of \(lineBytesMax) bytes")
        }
        return line
    }

    /// Moves the unread bytes to the front and reads more after them.
    private func fill() throws {
        if start > 0 {
            block.replaceSubrange(0..<(end - start), with: block[start..<end])
            end -= start
            start = 0
        }
        if end == block.count { block += [UInt8](repeating: 0, count: block.count) }
        let count = block.withUnsafeMutableBytes { buffer in
            read(descriptor, buffer.baseAddress! + end, buffer.count - end)
        }
        if count < 0 {
            if errno == EINTR { return }
            throw LineReadError(description: "the input cannot be read: \(String(cString: strerror(errno)))")
        }
        if count == 0 { atEndOfInput = true }
        end += count
    }
}

/// The input of an import could not be opened or read: an I/O failure (exit 1), not bad input.
struct LineReadError: Error, CustomStringConvertible {
    let description: String
}
