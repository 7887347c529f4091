import BudgetLedger
import PostgresNIO

extension PostgresLedger {
    /// Events with id greater than `after`, in id order: the resumable feed, as
    /// `Ledger.events(after:limit:)`. An exporter that remembers `lastID` gets every event
    /// exactly once, although ids commit out of order across connections and servers.
    ///
    /// How a page never skips an event that commits late: it reads the largest visible id `M`,
    /// then lists the transactions that hold a write lock on `events` (`RowExclusiveLock` in
    /// `pg_locks`, this database's table), and waits until each of them has ended; then the
    /// events up to `M` are all there will ever be, and it serves them. A transaction takes that
    /// lock before its INSERT draws an id and keeps it until it ends, so every transaction that
    /// drew an id below `M` and was still running is on the list. Should one stay in flight
    /// longer than `Configuration.feedWaitMax` (a `BEGIN; INSERT INTO events …` left open in
    /// psql), the page holds nothing new (`lastID == after`) and the caller asks again later: the
    /// feed waits, it never skips.
    ///
    /// - Throws: `LedgerError.invalidInput` for a negative `after` or a limit outside 1…10,000.
    public func events(after: Int64, limit: Int = 1_000) async throws -> EventPage {
        try Validate.feedPage(after: after, limit: limit)
        let waitMax = configuration.feedWaitMax
        return try await read { [logger] connection in
            guard let newest = try await Self.settledFeedEnd(after: after, waitMax: waitMax, on: connection, logger: logger),
                newest > after
            else { return EventPage(events: [], lastID: after) }
            var events: [LedgerEvent] = []
            let rows = try await connection.query(
                """
                SELECT \(unescaped: PostgresSQL.eventColumns) FROM events
                WHERE id > \(after) AND id <= \(newest) ORDER BY id LIMIT \(limit)
                """, logger: logger)
            for try await row in rows {
                events.append(try Self.event(from: row))
            }
            return EventPage(events: events, lastID: events.last?.id ?? after)
        }
    }

    /// The largest event id up to which every event that will ever commit has committed: the
    /// largest visible id, once each transaction then writing to `events` has ended (see
    /// `events(after:limit:)`). `after` when no event past it is visible (nothing is waited
    /// for); nil when a writer stayed in flight longer than `waitMax`.
    static func settledFeedEnd(after: Int64, waitMax: Duration, on connection: PostgresConnection, logger: Logger)
        async throws -> Int64?
    {
        let newest: Int64 =
            try await connection.fetchOne("SELECT coalesce(max(id), 0)::bigint FROM events", as: Int64.self, logger: logger)
            ?? Int64(0)
        guard newest > after else { return after }
        // A later statement: every writer that drew an id up to `newest` and is still running
        // holds its lock now.
        var writers = try await writersOfEvents(among: nil, on: connection, logger: logger)
        let clock = ContinuousClock()
        let deadline = clock.now + waitMax
        var pause = Duration.milliseconds(1)
        while !writers.isEmpty {
            guard clock.now < deadline else { return nil }
            try await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(50))
            writers = try await writersOfEvents(among: writers, on: connection, logger: logger)
        }
        return newest
    }

    /// The transactions (virtual transaction ids) that hold a write lock on this database's
    /// `events` now: all of them, or those of `among` that still do.
    private static func writersOfEvents(among: [String]?, on connection: PostgresConnection, logger: Logger)
        async throws -> [String]
    {
        let rows = try await connection.query(
            """
            SELECT DISTINCT virtualtransaction FROM pg_locks
            WHERE locktype = 'relation' AND mode = 'RowExclusiveLock' AND relation = 'events'::regclass
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND (\(among)::text[] IS NULL OR virtualtransaction = ANY(\(among)::text[]))
            """, logger: logger)
        var writers: [String] = []
        for try await writer in rows.decode(String.self) { writers.append(writer) }
        return writers
    }

    /// One row of `PostgresSQL.eventColumns`.
    static func event(from row: PostgresRow) throws -> LedgerEvent {
        let cells = row.makeRandomAccess()
        return LedgerEvent(
            id: try cells[0].decode(Int64.self),
            timestampMicroseconds: try cells[1].decode(Int64.self),
            kind: try cells[2].decode(String.self),
            threadID: try cells[3].decode(String?.self),
            promptTokens: try cells[4].decode(Int64.self),
            completionTokens: try cells[5].decode(Int64.self),
            maxTokens: try cells[6].decode(Int64?.self),
            thresholdPercent: try cells[7].decode(Int32?.self).map(Int.init),
            severity: try cells[8].decode(String?.self),
            causedBy: try cells[9].decode(Int64?.self),
            idempotencyKey: try cells[10].decode(String?.self),
            usage: UsageDetails(
                agentID: try cells[11].decode(String?.self), model: try cells[12].decode(String?.self),
                provider: try cells[13].decode(String?.self), latencyMilliseconds: try cells[14].decode(Int64?.self),
                metadata: .recorded(
                    try cells[15].decode(String?.self), organizationID: try cells[16].decode(String?.self),
                    userID: try cells[17].decode(String?.self))),
            organizationID: try cells[16].decode(String?.self),
            userID: try cells[17].decode(String?.self),
            costNanodollars: try cells[18].decode(Int64?.self),
            heldTokens: try cells[19].decode(Int64?.self),
            expiresAtMicroseconds: try cells[20].decode(Int64?.self),
            reservationID: try cells[21].decode(Int64?.self),
            tokensUsed: try cells[22].decode(Int64?.self),
            scope: try cells[23].decode(String?.self),
            windowStartMicroseconds: try cells[24].decode(Int64?.self),
            nanodollarsUsed: try cells[25].decode(Int64?.self),
            maxNanodollars: try cells[26].decode(Int64?.self),
            period: try cells[27].decode(String?.self))
    }
}
