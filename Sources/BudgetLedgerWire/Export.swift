import BudgetLedger
/// The export formats shared by the CLI's `export` and the REST API's `/usage/export`, so both
/// produce the same bytes.
public enum ExportFormat: String, Sendable, CaseIterable {
    case csv, json, ndjson

    /// The HTTP content type of the format.
    public var contentType: String {
        switch self {
        case .csv: return "text/csv; charset=utf-8"
        case .json: return "application/json"
        case .ndjson: return "application/x-ndjson"
        }
    }
}

extension Ledger {
    /// Streams every consume event in `query` to `write`: CSV with a header row (RFC 4180),
    /// `{"events": […], "count": N}`, or one JSON object per line. `progress` gets the running count.
    public func exportEvents(
        _ query: ExportQuery, format: ExportFormat, to write: (String) throws -> Void, progress: (Int) -> Void = { _ in }
    ) throws {
        var count = 0
        switch format {
        case .csv: try write(CSV.record(LedgerEvent.csvHeader))
        case .json: try write("{\"events\":[")
        case .ndjson: break
        }
        try forEachConsumeEvent(query) { event in
            switch format {
            case .csv: try write(CSV.record(event.csvFields))
            case .json: try write((count > 0 ? "," : "") + event.json.serialized())
            case .ndjson: try write(event.json.serialized() + "\n")
            }
            count += 1
            progress(count)
        }
        if format == .json { try write("],\"count\":\(count)}\n") }
    }
}

extension ExportFormat {
    /// Rollup rows: CSV with a header row, `{"groupBy", "rows": […], "count"}`, or one object per line.
    public func render(_ rows: [(key: String?, totals: UsageTotals)], grouping: ExportGrouping) -> String {
        let name = grouping.rawValue
        switch self {
        case .csv:
            return CSV.record(UsageTotals.csvHeader(group: name))
                + rows.map { CSV.record($0.totals.csvFields(key: $0.key)) }.joined()
        case .json:
            let items = rows.map { $0.totals.json(key: (name, .optional($0.key))) }
            return JSONValue.object([("groupBy", .string(name)), ("rows", .array(items)), ("count", .integer(Int64(rows.count)))])
                .serialized() + "\n"
        case .ndjson:
            return rows.map { $0.totals.json(key: (name, .optional($0.key))).serialized() + "\n" }.joined()
        }
    }
}
