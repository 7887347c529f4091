import ArgumentParser
import BudgetLedger
import BudgetLedgerPostgres
import BudgetLedgerWire
import Foundation

extension BudgetLedgerCommand {
    struct Copy: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy a SQLite ledger's whole history into a PostgreSQL database (the upgrade path).",
            discussion: """
                Every event keeps its id and timestamp; PostgreSQL derives the totals again from them, and the
                live price rows are copied. The target must be a new database, or one an interrupted copy of
                the same ledger left (the copy then continues). Stop writers on both first; run verify on both
                after. See docs/postgres.md, "Moving up from SQLite".
                """)

        @Option(name: .long, help: "The SQLite ledger file to copy from.")
        var from: String

        @Option(name: .long, help: "The postgres:// URL of the database to copy into.")
        var to: String

        @Flag(name: .long, help: "Print JSON instead of text.")
        var json = false

        /// Input problems, before anything is opened: nothing is created or written for them.
        func validate() throws {
            guard !PostgresLedger.isPostgresURL(from) else {
                throw ValidationError("--from must be a SQLite ledger file (copy moves a SQLite ledger to PostgreSQL)")
            }
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: from, isDirectory: &isFolder), !isFolder.boolValue else {
                throw ValidationError("--from must name an existing ledger file: there is no file at \(from)")
            }
            guard PostgresLedger.isPostgresURL(to) else {
                throw ValidationError("--to must be a postgres:// or postgresql:// URL: copy writes only to PostgreSQL")
            }
        }

        func run() throws {
            let source: Ledger
            do {
                source = try Ledger(path: from)
            } catch LedgerError.incompatible, LedgerError.database {
                throw Output.fail(
                    LedgerError.invalidInput(
                        field: "from", reason: "must be a budget-ledger SQLite ledger; \(from) is not one (or cannot be read)"),
                    json: json, fieldNames: ["from": "--from"])
            } catch {
                throw Output.fail(error, json: json)
            }
            defer { source.close() }
            let url = to
            // The target's URL without its password, for the output.
            let (report, target): (CopyReport, String)
            do {
                (report, target) = try BlockingPostgresLedger.wait {
                    let target = try await PostgresLedger(url: url)
                    do {
                        let report = try await target.copy(from: source, progress: Self.showProgress)
                        await target.close()
                        return (report, target.url)
                    } catch {
                        await target.close()
                        throw error
                    }
                }
            } catch {
                throw Output.fail(error, json: json)
            }
            let total = report.eventsAlreadyPresent + report.eventsCopied
            Output.emit(
                .object([
                    ("from", .string(from)), ("to", .string(target)),
                    ("events", .integer(total)), ("eventsCopied", .integer(report.eventsCopied)),
                    ("eventsAlreadyPresent", .integer(report.eventsAlreadyPresent)),
                    ("pricesCopied", .integer(Int64(report.pricesCopied))),
                    ("priceWithdrawalsCopied", .integer(Int64(report.priceWithdrawalsCopied))),
                    ("lastEventId", .integer(report.lastEventID)),
                ]),
                text: "copied \(Output.count(report.eventsCopied, "event"))"
                    + (report.eventsAlreadyPresent > 0 ? " (after the \(report.eventsAlreadyPresent) already there)" : "")
                    + " and \(Output.count(report.pricesCopied, "price row"))"
                    + (report.priceWithdrawalsCopied > 0 ? " (\(report.priceWithdrawalsCopied) withdrawn)" : "")
                    + " to \(target); "
                    + "last event id \(report.lastEventID); run verify on both to compare",
                asJSON: json)
        }

        /// On a terminal, one line that rewrites itself after each batch; in a pipe or a log, a
        /// line every 100,000 events; the last count always.
        static let showProgress: @Sendable (Int64, Int64) -> Void = { copied, total in
            let onTerminal = isatty(STDERR_FILENO) == 1
            let done = copied >= total
            guard onTerminal || done || copied % 100_000 < Int64(PostgresLedger.copyBatchEventsMax) else { return }
            let line = "copy: \(copied) of \(Output.count(total, "event"))"
            FileHandle.standardError.write(Data((onTerminal ? "\r" + line + (done ? "\n" : "") : line + "\n").utf8))
        }
    }
}
