import ArgumentParser
import BudgetLedger
import BudgetLedgerWire
import Foundation

extension BudgetLedgerCommand {
    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute every derived total from the events and check integrity (exit 1 on any difference).")

        @OptionGroup var options: LedgerOptions

        func run() throws {
            try options.withExistingLedger { ledger in
                // On a terminal, a progress line that rewrites itself; never in a pipe or a log.
                let onTerminal = isatty(STDERR_FILENO) == 1
                let report = try ledger.verify { read, total in
                    guard onTerminal else { return }
                    let end = read == total ? "\n" : ""
                    FileHandle.standardError.write(Data("\rverify: \(read) of \(total) events\(end)".utf8))
                }
                let json = JSONValue.object([
                    ("ok", .bool(report.isConsistent)),
                    ("events", .integer(report.eventCount)),
                    ("threads", .integer(report.threadCount)),
                    ("problems", .array(report.problems.map(JSONValue.string))),
                ])
                let text =
                    report.isConsistent
                    ? "ok: \(Output.count(report.eventCount, "event")), \(Output.count(report.threadCount, "open thread")); derived totals equal the events"
                    : (["FAILED: \(Output.count(report.problems.count, "problem"))"] + report.problems).joined(separator: "\n")
                Output.emit(json, text: text, asJSON: options.json)
                if !report.isConsistent {
                    FileHandle.standardError.write(Data("Error: verify found \(Output.count(report.problems.count, "problem"))\n".utf8))
                    throw ExitCode(1)
                }
            }
        }
    }
}
