import LedgerSQLite

/// What `Ledger.verify()` found.
public struct VerifyReport: Sendable, Equatable {
    /// Events in the ledger.
    public let eventCount: Int64
    /// Open threads.
    public let threadCount: Int64
    /// Every difference between the derived tables and the events, and every integrity problem.
    public let problems: [String]

    /// True when every derived total equals the events and SQLite's integrity check is ok.
    public var isConsistent: Bool { problems.isEmpty }
}

extension Ledger {
    /// A derived table and the view that recomputes it from the events alone. The rollups are
    /// compared as readers see them: the folded rows plus the pending consumes (`*_live`).
    private static let derivedTables: [(table: String, view: String, columns: String, key: String)] = [
        (
            "thread_state", "thread_state_from_events",
            "thread_id, max_tokens, prompt_tokens, completion_tokens, request_count, opened_event_id, window_event_id",
            "thread_id"
        ),
        ("thread_thresholds", "thread_thresholds_from_events", "thread_id, threshold_percent, event_id", "thread_id"),
        (
            "ledger_settings", "ledger_settings_from_events",
            "id, default_max_tokens, usage_window, all_time_prompt_tokens, all_time_completion_tokens, "
                + "all_time_cost_nanos, all_time_latency_ms",
            "id"
        ),
        ("holds", "holds_from_events", "reservation_id, thread_id, tokens, expires_at_us", "reservation_id"),
        (
            "usage_rollup_live", "usage_rollup_from_events",
            "usage_window, day, org_id, user_id, agent_id, model, prompt_tokens, completion_tokens, request_count, "
                + "cost_nanos, unpriced_requests, latency_ms_sum, latency_count",
            "'window ' || usage_window || ', day ' || day || ', org ' || org_id || ', agent ' || agent_id || ', model ' || model"
        ),
        (
            "usage_agent_model_live", "usage_agent_model_from_events",
            "usage_window, agent_id, model, prompt_tokens, completion_tokens, request_count, "
                + "cost_nanos, unpriced_requests, latency_ms_sum, latency_count",
            "'window ' || usage_window || ', agent ' || agent_id || ', model ' || model"
        ),
    ]

    /// The triggers that keep `events` append-only (`events_check_insert` refuses replacing inserts).
    private static let guardTriggers = [
        "events_forbid_update", "events_forbid_delete", "events_check_insert",
        "model_prices_forbid_update", "model_prices_forbid_delete",
    ]

    /// Recomputes every derived total from the raw events and runs SQLite's integrity check.
    ///
    /// Reads one snapshot; writers in other processes are not blocked.
    /// See <https://www.sqlite.org/pragma.html#pragma_integrity_check>.
    public func verify() throws -> VerifyReport {
        try read { connection in
            var problems: [String] = []
            let integrity = try connection.prepare("PRAGMA integrity_check").fetchAll { try $0[0] as String }
            problems += integrity.filter { $0 != "ok" }.map { "integrity: \($0)" }
            for derived in Self.derivedTables {
                problems += try differences(derived.table, derived.view, derived.columns, derived.key, on: connection)
            }
            let mispriced = try connection.prepare(
                """
                SELECT events.id FROM events JOIN event_prices ON event_prices.event_id = events.id
                WHERE events.cost_nanos IS NOT event_prices.cost_nanos LIMIT 20
                """
            ).fetchAll { try $0[0] as Int64 }
            problems += mispriced.map { "events: event \($0) has a cost that differs from the price table" }
            problems += try appendOnlyProblems(on: connection)
            for name in Self.guardTriggers {
                let count = try connection.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?")
                    .fetchOne([name]) { try $0[0] as Int64 } ?? 0
                if count == 0 {
                    problems.append("trigger \(name) is missing: events is no longer protected against rewrites")
                }
            }
            let events = try connection.prepare("SELECT count(*) FROM events").fetchOne { try $0[0] as Int64 } ?? 0
            let threads = try connection.prepare("SELECT count(*) FROM thread_state").fetchOne { try $0[0] as Int64 } ?? 0
            return VerifyReport(eventCount: events, threadCount: threads, problems: problems)
        }
    }

    /// The unique indexes on `events` that `events_check_insert` guards against INSERT OR REPLACE.
    private static let guardedUniqueIndexes: Set<String> = ["events_idempotency_key", "events_reservation_end"]

    /// Signs that events were removed: a gap in the ids (they are contiguous from 1 when nothing
    /// is ever deleted; INSERT OR REPLACE deletes without firing the delete trigger), and a
    /// unique index that `events_check_insert` does not guard, through which a REPLACE could.
    private func appendOnlyProblems(on connection: Connection) throws -> [String] {
        var problems: [String] = []
        let (count, maxID) = try connection.prepare("SELECT count(*), coalesce(max(id), 0) FROM events")
            .fetchOne { (try $0[0] as Int64, try $0[1] as Int64) } ?? (0, 0)
        if count != maxID {
            let missing = try connection.prepare(
                """
                SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM events WHERE id = 1) AND EXISTS (SELECT 1 FROM events)
                UNION ALL
                SELECT id + 1 FROM events AS e
                WHERE id < (SELECT max(id) FROM events) AND NOT EXISTS (SELECT 1 FROM events WHERE id = e.id + 1)
                LIMIT 20
                """
            ).fetchAll { try $0[0] as Int64 }
            problems.append(
                "events: \(maxID - count) event ids are missing (ids are contiguous when nothing is deleted), "
                    + "the first missing: \(missing.map(String.init).joined(separator: ", "))")
        }
        let unguarded = try connection.prepare(
            "SELECT name FROM pragma_index_list('events') WHERE \"unique\" = 1 AND origin = 'c' ORDER BY name"
        ).fetchAll { try $0[0] as String }.filter { !Self.guardedUniqueIndexes.contains($0) }
        problems += unguarded.map {
            "events: unique index \($0) is not guarded by events_check_insert, so INSERT OR REPLACE could delete through it"
        }
        return problems
    }

    /// Rows of `table` that `view` does not reproduce, and the reverse, named by `key`.
    private func differences(
        _ table: String, _ view: String, _ columns: String, _ key: String, on connection: Connection
    ) throws -> [String] {
        let keyOnly = { (row: Row) throws -> String in
            switch row.value(at: 0) {
            case .text(let text): return text
            case .integer(let integer): return String(integer)
            default: return "NULL"
            }
        }
        let stale = try connection.prepare(
            "SELECT \(key) FROM (SELECT \(columns) FROM \(table) EXCEPT SELECT \(columns) FROM \(view)) LIMIT 20"
        ).fetchAll(keyOnly)
        let missing = try connection.prepare(
            "SELECT \(key) FROM (SELECT \(columns) FROM \(view) EXCEPT SELECT \(columns) FROM \(table)) LIMIT 20"
        ).fetchAll(keyOnly)
        return stale.map { "\(table): row \($0) differs from the events" }
            + missing.map { "\(table): row \($0) that the events imply is missing or different" }
    }
}
