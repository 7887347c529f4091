internal import LedgerSQLite

/// What a ledger holds, by kind of event: what a copy to another store (`budget-ledger copy`)
/// checks before it writes anything.
public struct LedgerInventory: Sendable, Equatable {
    /// Events in the ledger.
    public let eventCount: Int64
    /// The largest event id, 0 when there is none.
    public let lastEventID: Int64
    /// Events per kind (`consume`, `open`, …). A refusal that names a scope budget is counted
    /// under `scope refusal`, apart from a thread's `refusal`: only the scope's depends on scope budgets.
    public let eventsByKind: [String: Int64]
}

extension Ledger {
    /// Counts the events by kind, in one snapshot.
    public func inventory() throws -> LedgerInventory {
        try withReadSnapshot { connection in
            let rows = try connection.prepare(
                """
                SELECT CASE WHEN kind = 'refusal' AND scope IS NOT NULL THEN 'scope refusal' ELSE kind END,
                       count(*), max(id)
                FROM events GROUP BY 1
                """
            ).fetchAll { (try $0[0] as String, try $0[1] as Int64, try $0[2] as Int64) }
            return LedgerInventory(
                eventCount: rows.reduce(0) { $0 + $1.1 }, lastEventID: rows.map(\.2).max() ?? 0,
                eventsByKind: Dictionary(uniqueKeysWithValues: rows.map { ($0.0, $0.1) }))
        }
    }
}
