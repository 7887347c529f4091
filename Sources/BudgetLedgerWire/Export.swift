import BudgetLedger
import Synchronization
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
        try write(format.eventsOpening)
        try forEachConsumeEvent(query) { event in
            try write(format.text(of: event, index: count))
            count += 1
            progress(count)
        }
        try write(format.eventsClosing(count: count))
    }
}

extension ExportFormat {
    /// What an event export begins with: CSV's header row, or the JSON object's opening.
    public var eventsOpening: String {
        switch self {
        case .csv: return CSV.record(LedgerEvent.csvHeader)
        case .json: return "{\"events\":["
        case .ndjson: return ""
        }
    }

    /// The text of `event`, the `index`-th (from 0) of an event export.
    public func text(of event: LedgerEvent, index: Int) -> String {
        switch self {
        case .csv: return CSV.record(event.csvFields)
        case .json: return (index > 0 ? "," : "") + event.json.serialized()
        case .ndjson: return event.json.serialized() + "\n"
        }
    }

    /// What an event export of `count` events ends with.
    public func eventsClosing(count: Int) -> String {
        self == .json ? "],\"count\":\(count)}\n" : ""
    }

    /// An event export from a store that hands its events over asynchronously, a page at a time
    /// (`PostgresLedger.forEachConsumeEventPage`): the bytes of `Ledger.exportEvents`, written a
    /// page's text at a time. Nothing is written before the store has read its first page (or
    /// found none), so a bad query or an unreachable store fails before a byte goes out.
    ///
    /// - Parameters:
    ///   - forEachPage: runs the store's export, calling its argument with each page.
    ///   - write: takes each piece of text.
    ///   - progress: the running count of events, after each page.
    public func exportEvents(
        pages forEachPage: (_ body: @escaping @Sendable ([LedgerEvent]) async throws -> Void) async throws -> Void,
        to write: @escaping @Sendable (String) async throws -> Void,
        progress: @escaping @Sendable (Int) -> Void = { _ in }
    ) async throws {
        let format = self
        let exported = ExportedCount()
        try await forEachPage { page in
            let first = exported.value.withLock { count in
                defer { count += page.count }
                return count
            }
            var text = first == 0 ? format.eventsOpening : ""
            for (offset, event) in page.enumerated() { text += format.text(of: event, index: first + offset) }
            try await write(text)
            progress(first + page.count)
        }
        let count = exported.value.withLock { $0 }
        try await write((count == 0 ? eventsOpening : "") + eventsClosing(count: count))
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

/// The events an asynchronous export has written so far (a class: its pages are written by an
/// escaping closure, which cannot capture a `Mutex` itself).
private final class ExportedCount: Sendable {
    let value = Mutex(0)
}
