internal import LedgerSQLite

extension Ledger {
    /// The longest alert webhook URL stored, in UTF-8 bytes.
    public static let alertURLBytesMax = 2048

    /// The kinds of event an alert webhook posts: a thread's or a scope window's threshold
    /// crossing, and the first refusal of a window.
    public static let alertKinds: Set<String> = ["threshold", "scope_threshold", "refusal"]

    /// Where delivery to `url` resumes: the last event id whose alert `url` acknowledged.
    ///
    /// A URL seen for the first time starts at the end of the feed (the events committed so far),
    /// stored at once, so that no alert recorded after this call is missed, even across a restart,
    /// and a webhook added to an old ledger is not sent its whole history.
    ///
    /// - Throws: `LedgerError.invalidInput` for an empty URL or one longer than `alertURLBytesMax`.
    public func alertCursor(for url: String) throws -> Int64 {
        try Validate.alertURL(url)
        return try write { [self] connection in
            try connection.execute(AlertCursorSQL.insertAtFeedEnd, [url, configuration.clock()])
            guard let cursor = try connection.cachedStatement(AlertCursorSQL.select).fetchOne([url], { try $0[0] as Int64 })
            else { preconditionFailure("alert_cursors has no row for a URL just inserted") }
            return cursor
        }
    }

    /// Records that `url` acknowledged every alert up to `eventID`; a cursor never moves back
    /// (a late acknowledgement of an older alert changes nothing).
    ///
    /// - Throws: `LedgerError.invalidInput` for a negative id or a bad URL.
    public func advanceAlertCursor(for url: String, to eventID: Int64) throws {
        try Validate.alertURL(url)
        try Validate.alertCursorEventID(eventID)
        try write { [self] connection in
            try connection.execute(AlertCursorSQL.advance, [url, eventID, configuration.clock()])
        }
    }
}

/// The rules of an alert cursor's key and position, applied by both stores.
extension Validate {
    /// A URL of 1…`Ledger.alertURLBytesMax` UTF-8 bytes.
    package static func alertURL(_ url: String) throws {
        guard !url.isEmpty, url.utf8.count <= Ledger.alertURLBytesMax else {
            throw LedgerError.invalidInput(
                field: "url", reason: "must be 1…\(Ledger.alertURLBytesMax) bytes (got \(url.utf8.count))")
        }
    }

    /// An event id a cursor may move to: not negative.
    package static func alertCursorEventID(_ eventID: Int64) throws {
        guard eventID >= 0 else {
            throw LedgerError.invalidInput(field: "eventId", reason: "must not be negative (got \(eventID))")
        }
    }
}

/// The statements of `alert_cursors` (migration 0011).
enum AlertCursorSQL {
    /// `?1` the URL, `?2` now: a new URL starts at the last event id.
    static let insertAtFeedEnd = """
        INSERT INTO alert_cursors (url, last_event_id, updated_at_us)
        SELECT ?1, coalesce((SELECT max(id) FROM events), 0), ?2 WHERE true
        ON CONFLICT (url) DO NOTHING
        """

    static let select = "SELECT last_event_id FROM alert_cursors WHERE url = ?"

    /// `?1` the URL, `?2` the event id, `?3` now.
    static let advance = """
        INSERT INTO alert_cursors (url, last_event_id, updated_at_us) VALUES (?1, ?2, ?3)
        ON CONFLICT (url) DO UPDATE SET last_event_id = max(last_event_id, excluded.last_event_id),
                                        updated_at_us = excluded.updated_at_us
        """
}
