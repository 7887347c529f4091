import BudgetLedger
import PostgresNIO

/// The exports, as `Ledger.forEachConsumeEvent(_:_:)` and `Ledger.rollup(_:by:)`: the same
/// validation, rows, keys, totals and order. A consume's cost is its billed cost: as recorded, or
/// its reprice's when it was recorded unpriced and repriced since (migration 0008).
extension PostgresLedger {
    /// Events fetched from the export's cursor at a time: the most an export holds in memory.
    public static let exportPageEventsMax = 1_000

    /// Calls `body` with the consume events in the range, in id order, a page (at most
    /// `pageEventsMax`, by default `exportPageEventsMax`, events) at a time, all read from one snapshot.
    ///
    /// The snapshot is a `REPEATABLE READ READ ONLY` transaction and the rows come through a
    /// cursor, so a range of any size streams in bounded memory and a consume that commits
    /// during the export is either wholly in it or not at all. The transaction (and a pooled
    /// connection) is held until the last page is handed over: a caller that stops taking pages
    /// throws from `body`, which ends it. See
    /// <https://www.postgresql.org/docs/current/sql-declare.html>.
    ///
    /// - Throws: `LedgerError.invalidInput` for a bad `org` or a range that ends before it
    ///   starts (before any connection is taken); `PostgresLedgerError` for the database; what
    ///   `body` throws.
    public func forEachConsumeEventPage(
        _ query: ExportQuery, pageEventsMax: Int = exportPageEventsMax,
        _ body: @escaping @Sendable ([LedgerEvent]) async throws -> Void
    ) async throws {
        try Validate.exportQuery(query)
        precondition((1...Self.exportPageEventsMax).contains(pageEventsMax), "a page holds 1…\(Self.exportPageEventsMax) events")
        let pageMax = pageEventsMax
        // Untimed: an export lasts as long as its reader takes (`Configuration.callTimeout`).
        try await read(timed: false) { [logger] connection in
            try await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
            do {
                try await connection.execute(
                    Self.rangeQuery(
                        "DECLARE export_events NO SCROLL CURSOR FOR SELECT * FROM \(PostgresSQL.billedEvents)",
                        query, then: "ORDER BY id"), logger: logger)
                while true {
                    var page: [LedgerEvent] = []
                    page.reserveCapacity(pageMax)
                    let rows = try await connection.query(
                        .sql("FETCH FORWARD \(pageMax) FROM export_events") { _ in }, logger: logger)
                    for try await row in rows { page.append(try Self.event(from: row)) }
                    if !page.isEmpty { try await body(page) }
                    if page.count < pageMax { break }
                }
                try await connection.execute("COMMIT", logger: logger)
            } catch {
                await connection.rollBack(after: error, logger: logger)
                throw error
            }
        }
    }

    /// Consume totals in the range, grouped (nil key: events without that field), ordered by
    /// key as SQLite orders it: no key first, then text in byte order (`COLLATE "C"`, SQLite's
    /// BINARY), days in date order. Every value is counted at most at its limit, as on SQLite.
    ///
    /// - Throws: `LedgerError.invalidInput` as `forEachConsumeEventPage`; `PostgresLedgerError`.
    public func rollup(_ query: ExportQuery, by grouping: ExportGrouping) async throws -> [(key: String?, totals: UsageTotals)] {
        try Validate.exportQuery(query)
        let statement = Self.rangeQuery(
            "SELECT \(PostgresSQL.rollupKey(grouping)) AS key, \(PostgresSQL.rollupTotals) FROM \(PostgresSQL.billedEvents)", query,
            then: "GROUP BY 1 ORDER BY 1 NULLS FIRST")
        return try await read { [logger] connection in
            var groups: [(key: String?, totals: UsageTotals)] = []
            let rows = try await connection.query(statement, logger: logger)
            for try await row in rows {
                let cells = row.makeRandomAccess()
                let key =
                    grouping == .day
                    ? Timestamps.date(day: try cells[0].decode(Int64.self)) : try cells[0].decode(String?.self)
                var totals = UsageTotals()
                totals.promptTokens = try cells[1].decode(Int64.self)
                totals.completionTokens = try cells[2].decode(Int64.self)
                totals.requestCount = try cells[3].decode(Int64.self)
                totals.costNanodollars = try cells[4].decode(Int64.self)
                totals.unpricedRequests = try cells[5].decode(Int64.self)
                totals.unpricedTokens = try cells[6].decode(Int64.self)
                totals.latencyMillisecondsSum = try cells[7].decode(Int64.self)
                totals.latencyCount = try cells[8].decode(Int64.self)
                groups.append((key: key, totals: totals))
            }
            return groups
        }
    }

    /// `head`, the consumes of `query` (`$1` from, `$2` to, `$3` org), then `tail`.
    static func rangeQuery(_ head: String, _ query: ExportQuery, then tail: String) -> PostgresQuery {
        .sql(
            """
            \(head)
            WHERE kind = 'consume' AND timestamp_us >= $1 AND timestamp_us < $2 AND ($3::text IS NULL OR org_id = $3)
            \(tail)
            """
        ) {
            $0.append(query.from ?? 0)
            $0.append(query.to ?? Int64.max)
            $0.append(query.organizationID)
        }
    }
}
