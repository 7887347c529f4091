/// How a query selects events by a time range since migration 0016 (there is no index on
/// `events.timestamp_us`): through `event_id_ranges`, the folded blocks of 1,024 ids whose
/// timestamps meet the range plus the pending tail after the fold mark, each joined to `events`
/// by a rowid range, with the range kept on each event's own timestamp. It returns exactly the
/// events a scan of every event would (timestamps need not grow with ids). Every such query is
/// written with these two fragments; `price_withdrawals_check_insert` (migration 0016) writes the
/// same join, and `EventTimeBlocksTests` fails when the copies part.
enum TimeRangeSQL {
    /// The ids of a block of `event_time_blocks`: block = (id - 1) / this (migration 0016 writes
    /// the number in its SQL; `verify` recomputes the blocks with this one).
    static let eventsPerBlock: Int64 = 1_024

    /// The FROM clause: the ranges, then (CROSS JOIN keeps that loop order) the events of each,
    /// named `alias`, read by rowid range only (NOT INDEXED: without statistics SQLite would
    /// otherwise build an automatic index over all of events for the query).
    /// See <https://www.sqlite.org/lang_select.html#crossjoin> and <https://www.sqlite.org/lang_indexedby.html>.
    static func events(as alias: String) -> String {
        "event_id_ranges AS ranges CROSS JOIN events AS \(alias) NOT INDEXED ON \(alias).id BETWEEN ranges.first_id AND ranges.last_id"
    }

    /// The condition for events of `alias` timestamped at or after `from` and, when `to` is
    /// given, before `to` (SQL expressions: parameters or columns): on the ranges, which skips
    /// the blocks outside the range, and on each event, which makes the answer exact.
    static func timestamps(of alias: String, from: String, to: String? = nil) -> String {
        let start = "ranges.max_timestamp_us >= \(from) AND \(alias).timestamp_us >= \(from)"
        guard let to else { return start }
        return start + " AND ranges.min_timestamp_us < \(to) AND \(alias).timestamp_us < \(to)"
    }
}
