import ArgumentParser
import BudgetLedger
import BudgetLedgerPostgres
import BudgetLedgerWire
import Foundation

extension BudgetLedgerCommand {
    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute every derived total from the events and check integrity (exit 1 on any difference).")

        @OptionGroup var options: LedgerOptions

        func run() throws {
            if PostgresLedger.isPostgresURL(options.path) {
                try runOnPostgres()
                return
            }
            try options.withExistingLedger { ledger in
                // On a terminal, a progress line that rewrites itself; never in a pipe or a log.
                let onTerminal = isatty(STDERR_FILENO) == 1
                let report = try ledger.verify { read, total in
                    guard onTerminal else { return }
                    let end = read == total ? "\n" : ""
                    FileHandle.standardError.write(Data("\rverify: \(read) of \(total) events\(end)".utf8))
                }
                try emit(report)
            }
        }

        /// The same report from the PostgreSQL store, recomputed there by SQL in one snapshot.
        private func runOnPostgres() throws {
            let url = options.path
            let report: VerifyReport
            do {
                report = try BlockingPostgresLedger.wait {
                    let ledger = try await PostgresLedger(url: url)
                    do {
                        let report = try await ledger.verify()
                        await ledger.close()
                        return report
                    } catch {
                        await ledger.close()
                        throw error
                    }
                }
            } catch {
                throw Output.fail(error, json: options.json)
            }
            try emit(report)
        }

        private func emit(_ report: VerifyReport) throws {
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
