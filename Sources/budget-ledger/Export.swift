import ArgumentParser
import BudgetLedger
import BudgetLedgerWire
import Foundation

extension ExportFormat: ExpressibleByArgument {}

extension ExportGrouping: ExpressibleByArgument {}

extension BudgetLedgerCommand {
    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export consume events, or rollups, for a time range.",
            discussion: """
                --from is inclusive, --to exclusive; both ISO 8601 UTC (2026-11-29 or 2026-11-29T08:00:00Z).
                CSV is RFC 4180 with a header row; amounts are exact decimal USD.
                """)

        @OptionGroup var options: LedgerOptions

        @Option(help: "Start of the range, inclusive.")
        var from: String?

        @Option(help: "End of the range, exclusive.")
        var to: String?

        @Option(help: "Only events of this org id.")
        var org: String?

        @Option(name: .customLong("group-by"), help: "Roll up by org, agent, model, thread or day instead of listing events.")
        var groupBy: ExportGrouping?

        @Option(help: "csv, json or ndjson.")
        var format: ExportFormat

        @Option(help: "Write to this file (atomically) instead of standard output.")
        var out: String?

        func run() throws {
            try options.withLedger { ledger in
                let query = ExportQuery(
                    from: try from.map { try Timestamps.parse($0, field: "from") },
                    to: try to.map { try Timestamps.parse($0, field: "to") }, organizationID: org)
                let sink = try ExportSink(path: out)
                do {
                    if let groupBy {
                        sink.write(format.render(try ledger.rollup(query, by: groupBy), grouping: groupBy))
                    } else {
                        try ledger.exportEvents(query, format: format, to: sink.write, progress: sink.progress)
                    }
                    try sink.finish()
                } catch {
                    sink.abandon()
                    throw error
                }
            }
        }
    }

    struct Events: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The billing feed: events after an id, in id order (remember lastId to resume).")

        @OptionGroup var options: LedgerOptions

        @Option(parsing: .unconditional, help: "Return events with a greater id (0: from the start).")
        var after: Int64 = 0

        @Option(parsing: .unconditional, help: "At most this many events (1…10000).")
        var limit: Int = 1_000

        func run() throws {
            try options.withLedger { ledger in
                let page = try ledger.events(after: after, limit: limit)
                let json = JSONValue.object([("events", .array(page.events.map(\.json))), ("lastId", .integer(page.lastID))])
                let lines = page.events.map { event in
                    "\(event.id) \(Timestamps.iso8601(microseconds: event.timestampMicroseconds)) \(event.kind) "
                        + "\(event.threadID ?? "-") \(event.promptTokens)+\(event.completionTokens)"
                } + ["lastId \(page.lastID)"]
                Output.emit(json, text: lines.joined(separator: "\n"), asJSON: options.json)
            }
        }
    }
}

/// Where an export goes: standard output, or a file written beside its final name and renamed
/// into place only when complete, so a failed export never leaves half a file.
final class ExportSink {
    private let handle: FileHandle
    private let finalPath: String?
    private let partialPath: String?
    private var buffer = ""
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
        buffer += text
        if buffer.utf8.count >= 1 << 16 { flush() }
    }

    /// Every 100,000 rows, on a terminal only, when writing to a file.
    func progress(_ rows: Int) {
        if showsProgress && rows % 100_000 == 0 {
            FileHandle.standardError.write(Data("\rexported \(rows) events".utf8))
        }
    }

    private func flush() {
        handle.write(Data(buffer.utf8))
        buffer = ""
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
