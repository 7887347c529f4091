import BudgetLedger
import PostgresNIO

extension PostgresLedger {
    /// Where delivery to `url` resumes: the last event id whose alert `url` acknowledged, as
    /// `Ledger.alertCursor(for:)`, in `alert_cursors` (migration 0005).
    ///
    /// A URL seen for the first time starts at the end of the feed, stored at once, so that no
    /// alert recorded after this call is missed, even across a restart. The end is the feed's
    /// (`events(after:limit:)`): the largest id once the transactions writing to `events` have
    /// ended, so an event that commits late with a smaller id is not left behind the cursor.
    /// Every server of the database shares the row: the first to store it wins.
    ///
    /// - Throws: `LedgerError.invalidInput` for an empty URL or one longer than
    ///   `Ledger.alertURLBytesMax`; `LedgerError.conflict` when a new URL's start cannot be
    ///   fixed because a write to `events` stayed in flight longer than `Configuration.feedWaitMax`
    ///   (nothing stored: ask again).
    public func alertCursor(for url: String) async throws -> Int64 {
        try Validate.alertURL(url)
        if let stored = try await read({ [logger] connection in
            try await Self.storedAlertCursor(url, on: connection, logger: logger)
        }) {
            return stored
        }
        let waitMax = configuration.feedWaitMax
        guard
            let end = try await read({ [logger] connection in
                try await Self.settledFeedEnd(after: 0, waitMax: waitMax, on: connection, logger: logger)
            })
        else {
            throw LedgerError.conflict(
                "a write to the events stayed in flight past \(waitMax): the new alert webhook's starting point is not known yet; try again")
        }
        let now = configuration.clock()
        return try await write { [logger] connection in
            try await connection.execute(
                """
                INSERT INTO alert_cursors (url, last_event_id, updated_at_us) VALUES (\(url), \(end), \(now))
                ON CONFLICT (url) DO NOTHING
                """, logger: logger)
            guard let cursor = try await Self.storedAlertCursor(url, on: connection, logger: logger) else {
                preconditionFailure("alert_cursors has no row for a URL just inserted")
            }
            return cursor
        }
    }

    /// Records that `url` acknowledged every alert up to `eventID`, as
    /// `Ledger.advanceAlertCursor(for:to:)`: the upsert keeps `GREATEST` of the stored and the
    /// new id, so a cursor never moves back, whichever server's acknowledgement commits last.
    ///
    /// - Throws: `LedgerError.invalidInput` for a negative id or a bad URL.
    public func advanceAlertCursor(for url: String, to eventID: Int64) async throws {
        try Validate.alertURL(url)
        try Validate.alertCursorEventID(eventID)
        let now = configuration.clock()
        try await write { [logger] connection in
            try await connection.execute(
                """
                INSERT INTO alert_cursors (url, last_event_id, updated_at_us) VALUES (\(url), \(eventID), \(now))
                ON CONFLICT (url) DO UPDATE
                SET last_event_id = GREATEST(alert_cursors.last_event_id, excluded.last_event_id),
                    updated_at_us = excluded.updated_at_us
                """, logger: logger)
        }
    }

    private static func storedAlertCursor(_ url: String, on connection: PostgresConnection, logger: Logger)
        async throws -> Int64?
    {
        try await connection.fetchOne(
            "SELECT last_event_id FROM alert_cursors WHERE url = \(url)", as: Int64.self, logger: logger)
    }
}
