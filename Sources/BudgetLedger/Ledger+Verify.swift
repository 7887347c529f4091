internal import LedgerSQLite

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

    /// A report, as another store's verify makes it (`PostgresLedger.verify()`).
    public init(eventCount: Int64, threadCount: Int64, problems: [String]) {
        self.eventCount = eventCount
        self.threadCount = threadCount
        self.problems = problems
    }
}

extension Ledger {
    /// The triggers that keep `events` append-only (`events_check_insert` refuses replacing inserts).
    private static let guardTriggers = [
        "events_forbid_update", "events_forbid_delete", "events_check_insert",
        "model_prices_forbid_update", "model_prices_forbid_delete", "legacy_pricing_forbid_update",
        "legacy_pricing_forbid_delete", "price_withdrawals_forbid_update", "price_withdrawals_forbid_delete",
        "events_check_reprice",
        // Since 0014 events_check_reprice runs only through it (an INSTEAD OF trigger on a view).
        "events_check_refusal_or_reprice",
        // Since 0015 events_check_insert runs only through it (an INSTEAD OF trigger on a view).
        "events_guard_insert",
    ]

    /// The unique indexes on `events` that `events_check_insert` guards against INSERT OR REPLACE.
    private static let guardedUniqueIndexes: Set<String> = ["events_idempotency_key", "events_reservation_end"]

    /// Recomputes every derived total from the raw events and runs SQLite's integrity check.
    ///
    /// One pass over `events` in id order (`Recomputation`) rebuilds thread state, thresholds,
    /// holds, settings, both rollups (with reprices applied), the time blocks of the folded
    /// events (migration 0016), scope budgets, the windows that have a refusal, and each billed
    /// consume's and reprice's cost (a consume recorded unpriced may be priced later; migration
    /// 0012); then every derived table is compared with it row by row (the rollups as readers
    /// see them: folded plus pending, the `*_live` views). Also reported: gaps in the ids
    /// (nothing is ever deleted, so a gap is tampering), a unique index on `events` that the
    /// insert guard does not cover, and a missing guard trigger. Reads one snapshot on a connection of its own (file ledgers): writers are
    /// not blocked. `progress` is called with the events read so far and the total, every 65,536.
    /// See <https://www.sqlite.org/pragma.html#pragma_integrity_check>.
    public func verify(progress: ((_ eventsRead: Int64, _ eventCount: Int64) -> Void)? = nil) throws -> VerifyReport {
        try withReadSnapshot { connection in
            var problems: [String] = []
            let integrity = try connection.prepare("PRAGMA integrity_check").fetchAll { try $0[0] as String }
            problems += integrity.filter { $0 != "ok" }.map { "integrity: \($0)" }
            let total = try connection.prepare("SELECT count(*) FROM events").fetchOne { try $0[0] as Int64 } ?? 0
            // The all-time sums hold the consumes up to the fold's mark (migration 0017), and
            // the time blocks the events up to it (0016).
            // (Read without FoldMark.read, which traps on a missing row: verify reads damaged files.)
            let foldedThrough = try connection.prepare("SELECT rolled_up_to FROM ledger_settings WHERE id = 1")
                .fetchOne { try $0[0] as Int64 } ?? 0
            var recomputed = Recomputation(prices: try PriceTable(on: connection), foldedThrough: foldedThrough)
            var cursor = try connection.prepare("SELECT \(Recomputation.columns) FROM events ORDER BY id").rows()
            while let row = try cursor.next() {
                try recomputed.apply(row)
                if recomputed.eventCount % 65_536 == 0 { progress?(recomputed.eventCount, total) }
            }
            progress?(recomputed.eventCount, total)
            problems += try DerivedTables(recomputed, on: connection).differences()
            problems += recomputed.mispricedEventIDs.map { "events: event \($0) has a cost that differs from the price table" }
            problems += recomputed.strayConsumeEventIDs.map { "events: consume event \($0) is of a thread that was not open" }
            problems += recomputed.strayRepriceEventIDs.map {
                "events: reprice event \($0) names no consume recorded unpriced, or one already repriced"
            }
            problems += try appendOnlyProblems(recomputed, on: connection)
            if foldedThrough > recomputed.lastID {
                problems.append("ledger_settings: rolled_up_to \(foldedThrough) is past the last event, \(recomputed.lastID)")
            }
            let threads = try connection.prepare("SELECT count(*) FROM thread_state").fetchOne { try $0[0] as Int64 } ?? 0
            return VerifyReport(eventCount: recomputed.eventCount, threadCount: threads, problems: problems)
        }
    }

    /// Signs that events were removed or could be: a gap in the ids (they are contiguous from 1
    /// when nothing is ever deleted; INSERT OR REPLACE deletes without firing the delete
    /// trigger), a unique index that `events_check_insert` does not guard, a missing guard trigger.
    private func appendOnlyProblems(_ recomputed: Recomputation, on connection: Connection) throws -> [String] {
        var problems: [String] = []
        if recomputed.eventCount != recomputed.lastID {
            problems.append(
                "events: \(recomputed.lastID - recomputed.eventCount) event ids are missing (ids are contiguous when "
                    + "nothing is deleted), the first missing: \(recomputed.firstMissingIDs.map(String.init).joined(separator: ", "))")
        }
        let unguarded = try connection.prepare(
            "SELECT name FROM pragma_index_list('events') WHERE \"unique\" = 1 AND origin = 'c' ORDER BY name"
        ).fetchAll { try $0[0] as String }.filter { !Self.guardedUniqueIndexes.contains($0) }
        problems += unguarded.map {
            "events: unique index \($0) is not guarded by events_check_insert, so INSERT OR REPLACE could delete through it"
        }
        for name in Self.guardTriggers {
            let count = try connection.prepare("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?")
                .fetchOne([name]) { try $0[0] as Int64 } ?? 0
            if count == 0 {
                problems.append("trigger \(name) is missing: events is no longer protected against rewrites")
            }
        }
        return problems
    }
}

/// The derived tables as stored, compared with a recomputation, each difference named by its key.
private struct DerivedTables {
    let recomputed: Recomputation
    let connection: Connection

    init(_ recomputed: Recomputation, on connection: Connection) {
        self.recomputed = recomputed
        self.connection = connection
    }

    func differences() throws -> [String] {
        var problems: [String] = []
        let threads = try Dictionary(uniqueKeysWithValues: connection.prepare(
            """
            SELECT thread_id, max_tokens, prompt_tokens, completion_tokens, request_count, opened_event_id, window_event_id
            FROM thread_state
            """
        ).fetchAll { row in
            (try row[0] as String, Recomputation.ThreadState(
                maxTokens: try row[1], promptTokens: try row[2], completionTokens: try row[3], requestCount: try row[4],
                openedEventID: try row[5], windowEventID: try row[6]))
        })
        problems += tableDifferences("thread_state", stored: threads, recomputed: recomputed.threads) { $0 }
        var thresholds: [String: [Int64: Int64]] = [:]
        for (thread, percent, event) in try connection.prepare(
            "SELECT thread_id, threshold_percent, event_id FROM thread_thresholds"
        ).fetchAll({ (try $0[0] as String, try $0[1] as Int64, try $0[2] as Int64) }) {
            thresholds[thread, default: [:]][percent] = event
        }
        problems += tableDifferences("thread_thresholds", stored: thresholds, recomputed: recomputed.thresholds.filter { !$0.value.isEmpty }) { $0 }
        let holds = try Dictionary(uniqueKeysWithValues: connection.prepare(
            "SELECT reservation_id, thread_id, tokens, expires_at_us, agent_id, model, org_id, user_id, cost_nanos FROM holds"
        ).fetchAll { row in
            (try row[0] as Int64, Recomputation.Hold(
                threadID: try row[1], tokens: try row[2], expiresAtMicroseconds: try row[3], agentID: try row[4],
                model: try row[5], organizationID: try row[6], userID: try row[7], costNanodollars: try row[8]))
        })
        problems += tableDifferences("holds", stored: holds, recomputed: recomputed.holds) { String($0) }
        let settings = try connection.prepare(
            """
            SELECT default_max_tokens, usage_window, all_time_prompt_tokens, all_time_completion_tokens,
                   all_time_cost_nanos, all_time_latency_ms, consume_cost_bound_nanos
            FROM ledger_settings WHERE id = 1
            """
        ).fetchOne { row in
            Recomputation.Settings(
                defaultMaxTokens: try row[0], usageWindow: try row[1], allTimePromptTokens: try row[2],
                allTimeCompletionTokens: try row[3], allTimeCostNanodollars: try row[4], allTimeLatencyMilliseconds: try row[5],
                consumeCostBoundNanodollars: try row[6])
        }
        problems += tableDifferences("ledger_settings", stored: [1: settings], recomputed: [1: recomputed.settings]) { String($0) }
        problems += try rollupDifferences()
        problems += try timeBlockDifferences()
        problems += try scopeDifferences()
        problems += try refusalDifferences()
        return problems
    }

    /// The windows that already have a refusal (migration 0011), per thread and per scope.
    private func refusalDifferences() throws -> [String] {
        let read = { (sql: String) throws -> [String: Recomputation.RefusalWindow] in
            try Dictionary(uniqueKeysWithValues: connection.prepare(sql).fetchAll { row in
                (try row[0] as String, Recomputation.RefusalWindow(window: try row[1], eventID: try row[2]))
            })
        }
        let threads = try read("SELECT thread_id, window_event_id, event_id FROM thread_refusals")
        let scopes = try read("SELECT scope, window_start_us, event_id FROM scope_refusals")
        return tableDifferences("thread_refusals", stored: threads, recomputed: recomputed.threadRefusals) { $0 }
            + tableDifferences("scope_refusals", stored: scopes, recomputed: recomputed.scopeRefusals) { $0 }
    }

    /// The time blocks of the folded events (migration 0016), by block.
    private func timeBlockDifferences() throws -> [String] {
        let blocks = try Dictionary(uniqueKeysWithValues: connection.prepare(
            "SELECT block, min_timestamp_us, max_timestamp_us FROM event_time_blocks"
        ).fetchAll { row in
            (try row[0] as Int64, Recomputation.TimeBlock(minTimestamp: try row[1], maxTimestamp: try row[2]))
        })
        return tableDifferences("event_time_blocks", stored: blocks, recomputed: recomputed.timeBlocks) { "block \($0)" }
    }

    private func scopeDifferences() throws -> [String] {
        let budgets = try Dictionary(uniqueKeysWithValues: connection.prepare(
            "SELECT \(ScopeBudgetSQL.budgetColumns) FROM scope_budgets"
        ).fetchAll { row in
            (try row[0] as String, Recomputation.ScopeBudgetRow(
                period: try row[1], maxTokens: try row[2], maxNanodollars: try row[3], setEventID: try row[4],
                windowStart: try row[5], spentTokens: try row[6], spentNanodollars: try row[7], requestCount: try row[8],
                unpricedRequests: try row[9]))
        })
        let thresholds = try Dictionary(uniqueKeysWithValues: connection.prepare(
            "SELECT scope, window_start_us, threshold_percent, event_id FROM scope_thresholds"
        ).fetchAll { row in
            (Recomputation.ScopeThresholdKey(scope: try row[0], windowStart: try row[1], percent: try row[2]), try row[3] as Int64)
        })
        return tableDifferences("scope_budgets", stored: budgets, recomputed: recomputed.scopeBudgets) { $0 }
            + tableDifferences("scope_thresholds", stored: thresholds, recomputed: recomputed.scopeThresholds) {
                "\($0.scope) window \($0.windowStart) \($0.percent)%"
            }
    }

    private func rollupDifferences() throws -> [String] {
        let sums = { (row: Row, offset: Int) throws -> Recomputation.Sums in
            Recomputation.Sums(
                promptTokens: try row[offset], completionTokens: try row[offset + 1], requestCount: try row[offset + 2],
                costNanodollars: try row[offset + 3], unpricedRequests: try row[offset + 4],
                unpricedTokens: try row[offset + 5], latencyMillisecondsSum: try row[offset + 6],
                latencyCount: try row[offset + 7])
        }
        let columns = """
            prompt_tokens, completion_tokens, request_count, cost_nanos, unpriced_requests, unpriced_tokens, latency_ms_sum, \
            latency_count
            """
        let rollup = try Dictionary(uniqueKeysWithValues: connection.prepare(
            "SELECT usage_window, day, org_id, user_id, agent_id, model, \(columns) FROM usage_rollup_live"
        ).fetchAll { row in
            (Recomputation.RollupKey(
                usageWindow: try row[0], day: try row[1], organizationID: try row[2], userID: try row[3], agentID: try row[4],
                model: try row[5]), try sums(row, 6))
        })
        let agentModel = try Dictionary(uniqueKeysWithValues: connection.prepare(
            "SELECT usage_window, agent_id, model, \(columns) FROM usage_agent_model_live"
        ).fetchAll { row in
            (Recomputation.AgentModelKey(usageWindow: try row[0], agentID: try row[1], model: try row[2]), try sums(row, 3))
        })
        return tableDifferences("usage_rollup_live", stored: rollup, recomputed: recomputed.rollup) {
            "window \($0.usageWindow), day \($0.day), org \($0.organizationID), agent \($0.agentID), model \($0.model)"
        } + tableDifferences("usage_agent_model_live", stored: agentModel, recomputed: recomputed.agentModel) {
            "window \($0.usageWindow), agent \($0.agentID), model \($0.model)"
        }
    }
}

/// Rows of `table` stored that the events do not reproduce, then rows the events imply that are
/// missing or different (at most 20 of each), named by `name(key)`: verify's words on both stores.
package func tableDifferences<Key: Hashable, Value: Equatable>(
    _ table: String, stored: [Key: Value], recomputed: [Key: Value], name: (Key) -> String
) -> [String] {
    let stale = stored.filter { recomputed[$0.key] != $0.value }.keys.map(name).sorted().prefix(20)
    let missing = recomputed.filter { stored[$0.key] != $0.value }.keys.map(name).sorted().prefix(20)
    return stale.map { "\(table): row \($0) differs from the events" }
        + missing.map { "\(table): row \($0) that the events imply is missing or different" }
}
