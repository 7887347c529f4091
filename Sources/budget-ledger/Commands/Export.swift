import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

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

        func validate() throws {
            _ = try query()
        }

        /// The range and filter; a malformed time is a `ValidationError` naming the option.
        func query() throws -> ExportQuery {
            ExportQuery(
                from: try from.map { try Timestamps.parse($0, option: "--from") },
                to: try to.map { try Timestamps.parse($0, option: "--to") }, organizationID: org)
        }

        func run() throws {
            try options.withExistingAnyLedger { ledger in
                let query = try query()
                let sink = try ExportSink(path: out)
                do {
                    if let groupBy {
                        sink.write(format.render(try ledger.rollup(query, by: groupBy), grouping: groupBy))
                    } else {
                        try ledger.exportEvents(query, format: format, into: sink)
                    }
                    try sink.finish()
                } catch {
                    sink.abandon()
                    throw error
                }
            }
        }
    }
}
