import BudgetLedger
import Logging
import PostgresNIO

extension PostgresLedger {
    /// Recomputes every derived table from `events` by SQL and compares it with the stored one:
    /// thread state, thresholds, refusals, holds, the settings, and both usage rollups (as readers
    /// see them, the `*_live` views over the shards, at each consume's billed cost); and the scope
    /// tables (scope_budgets, scope_thresholds, scope_refusals) by the domain's
    /// `ScopeRecomputation`, the rules SQLite's verify applies. Each reprice is checked against
    /// the price table at its consume's timestamp, and a reprice that names no unpriced consume,
    /// or one already repriced, is reported. Also reported: a missing guard trigger. The
    /// same `VerifyReport` as `Ledger.verify()`, with the same wording for a difference.
    ///
    /// Reads one snapshot (a REPEATABLE READ, READ ONLY transaction): writers are not blocked.
    /// Ids are not checked for gaps, unlike on SQLite: an identity value taken by a transaction
    /// that rolled back is never used, so gaps are normal here. A consume whose transaction
    /// raced a usage reset's may be reported in the other usage window (the rollups take the
    /// window the consume's transaction read; the recomputation, the one its id falls in).
    /// See <https://www.postgresql.org/docs/current/transaction-iso.html#XACT-REPEATABLE-READ>.
    public func verify() async throws -> VerifyReport {
        guard !isClosed.load(ordering: .sequentiallyConsistent) else { throw PostgresLedgerError.closed }
        do {
            return try await pool.withConnection { [logger] connection in
                try await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
                do {
                    let report = try await Self.verify(on: connection, logger: logger)
                    try await connection.execute("COMMIT", logger: logger)
                    return report
                } catch {
                    await connection.rollBack(after: error, logger: logger)
                    throw error
                }
            }
        } catch {
            throw PostgresLedgerError.wrapping(error, url: url)
        }
    }

    private static func verify(on connection: PostgresConnection, logger: Logger) async throws -> VerifyReport {
        let events = try await connection.fetchOne("SELECT count(*) FROM events", as: Int64.self, logger: logger) ?? Int64(0)
        let threads = try await connection.fetchOne("SELECT count(*) FROM thread_state", as: Int64.self, logger: logger) ?? Int64(0)
        var problems: [String] = []
        for table in PostgresVerifySQL.tables {
            let stale = try await names(in: table.stored, notIn: table.recomputed, on: connection, logger: logger)
            problems += stale.map { "\(table.name): row \($0) differs from the events" }
            let missing = try await names(in: table.recomputed, notIn: table.stored, on: connection, logger: logger)
            problems += missing.map { "\(table.name): row \($0) that the events imply is missing or different" }
        }
        problems += try await scopeDifferences(on: connection, logger: logger)
        problems += try await eventIDs(PostgresVerifySQL.selectMispricedReprices, on: connection, logger: logger).map {
            "events: event \($0) has a cost that differs from the price table"
        }
        problems += try await eventIDs(PostgresVerifySQL.selectStrayReprices, on: connection, logger: logger).map {
            "events: reprice event \($0) names no consume recorded unpriced, or one already repriced"
        }
        var present: Set<String> = []
        let rows = try await connection.query(PostgresQuery(unsafeSQL: PostgresVerifySQL.selectGuardTriggers), logger: logger)
        for try await name in rows.decode(String.self) { present.insert(name) }
        for name in PostgresVerifySQL.guardTriggers where !present.contains(name) {
            problems.append("trigger \(name) is missing: events is no longer protected against rewrites")
        }
        return VerifyReport(eventCount: events, threadCount: threads, problems: problems)
    }

    /// The event ids `query` selects (at most 20, in id order).
    private static func eventIDs(_ query: String, on connection: PostgresConnection, logger: Logger) async throws -> [Int64] {
        var ids: [Int64] = []
        let rows = try await connection.query(PostgresQuery(unsafeSQL: query), logger: logger)
        for try await id in rows.decode(Int64.self) { ids.append(id) }
        return ids
    }

    /// The names (first column) of the rows of `rows` that `other` does not hold, at most 20, sorted.
    private static func names(
        in rows: String, notIn other: String, on connection: PostgresConnection, logger: Logger
    ) async throws -> [String] {
        let query = PostgresQuery(
            unsafeSQL: "SELECT name FROM ((\(rows)) EXCEPT (\(other))) AS difference ORDER BY name COLLATE \"C\" LIMIT 20")
        var names: [String] = []
        for try await name in try await connection.query(query, logger: logger).decode(String.self) { names.append(name) }
        return names
    }
}

/// Verify's statements: each derived table as stored and as the events imply it, with the same
/// columns (the first, `name`, says which row it is, as SQLite's verify names it).
enum PostgresVerifySQL {
    struct Table {
        let name: String
        let stored: String
        let recomputed: String
    }

    /// The triggers that keep `events` and `model_prices` append-only and the state derived.
    static let guardTriggers = [
        "events_accrue_scopes", "events_apply", "events_apply_reprices", "events_apply_thread_refusal",
        "events_check_insert", "events_check_reprice", "events_forbid_truncate", "events_forbid_update",
        "model_prices_forbid_truncate", "model_prices_forbid_update",
    ]

    /// A consume's billed cost, for a query over `events` aliased `e`: as recorded, or its first
    /// reprice's (migration 0008; a second one is reported by `selectStrayReprices`).
    static let billedCost = """
        coalesce(e.cost_nanos, (SELECT r.cost_nanos FROM events AS r WHERE r.caused_by = e.id AND r.kind = 'reprice'
                                ORDER BY r.id LIMIT 1))
        """

    /// Reprices whose cost is not the price table's at their consume's timestamp (SQLite's
    /// `Recomputation.mispricedEventIDs` for reprices; the cost recorded on a consume is not
    /// re-checked here). The first 20, in id order.
    static let selectMispricedReprices = """
        SELECT r.id FROM events AS r
        JOIN events AS c ON c.id = r.caused_by AND c.kind = 'consume' AND c.cost_nanos IS NULL
        LEFT JOIN LATERAL (\(PostgresSQL.priceInForce(model: "c.model", at: "c.timestamp_us"))) AS p ON true
        WHERE r.kind = 'reprice'
          AND r.cost_nanos IS DISTINCT FROM c.prompt_tokens * p.prompt_nanos_per_token
                                            + c.completion_tokens * p.completion_nanos_per_token
        ORDER BY r.id LIMIT 20
        """

    /// Reprices that name no consume recorded unpriced, or one an earlier reprice already billed.
    /// The first 20, in id order.
    static let selectStrayReprices = """
        SELECT r.id FROM events AS r
        WHERE r.kind = 'reprice'
          AND (NOT EXISTS (SELECT 1 FROM events AS c WHERE c.id = r.caused_by AND c.kind = 'consume' AND c.cost_nanos IS NULL)
               OR EXISTS (SELECT 1 FROM events AS o WHERE o.kind = 'reprice' AND o.caused_by = r.caused_by AND o.id < r.id))
        ORDER BY r.id LIMIT 20
        """

    static let selectGuardTriggers = """
        SELECT tgname::text FROM pg_trigger
        WHERE tgrelid IN ('events'::regclass, 'model_prices'::regclass) AND NOT tgisinternal AND tgenabled <> 'D'
        """

    /// Each thread's events since its last cleanup (its current life, if it is open).
    static let lifeEvents = """
        life AS (
            SELECT e.* FROM events AS e
            JOIN (SELECT thread_id, coalesce(max(id) FILTER (WHERE kind = 'cleanup'), 0) AS ended_after
                  FROM events WHERE thread_id IS NOT NULL GROUP BY thread_id) AS ends
                ON ends.thread_id = e.thread_id AND e.id > ends.ended_after
        )
        """

    /// thread_state from the events: a life begins at its first open or limit; its max is the
    /// last one's; its window begins there or at its last reset; the window's consumes add up.
    static let threadStateFromEvents = """
        WITH \(lifeEvents),
        marks AS (
            SELECT thread_id, min(id) FILTER (WHERE kind IN ('open', 'limit')) AS opened_event_id,
                   max(id) FILTER (WHERE kind IN ('open', 'limit')) AS last_limit_event_id,
                   coalesce(max(id) FILTER (WHERE kind = 'reset'), 0) AS last_reset_event_id
            FROM life GROUP BY thread_id
        ),
        windows AS (
            SELECT m.thread_id, e.max_tokens, m.opened_event_id,
                   greatest(m.opened_event_id, m.last_reset_event_id) AS window_event_id
            FROM marks AS m JOIN events AS e ON e.id = m.last_limit_event_id
        )
        SELECT w.thread_id AS name, w.thread_id, w.max_tokens, coalesce(sum(c.prompt_tokens), 0)::bigint AS prompt_tokens,
               coalesce(sum(c.completion_tokens), 0)::bigint AS completion_tokens, count(c.id) AS request_count,
               w.opened_event_id, w.window_event_id
        FROM windows AS w
        LEFT JOIN events AS c ON c.thread_id = w.thread_id AND c.kind = 'consume' AND c.id > w.window_event_id
        GROUP BY w.thread_id, w.max_tokens, w.opened_event_id, w.window_event_id
        """

    /// thread_thresholds from the events: the last threshold event of each percent in the
    /// thread's current window, unless a later limit armed it again (0001's events_apply: a max
    /// of 0, or one the thread's total then no longer reached at that percent).
    static let thresholdsFromEvents = """
        WITH state AS (\(threadStateFromEvents)),
        candidates AS (
            SELECT DISTINCT ON (t.thread_id, t.threshold_percent) t.thread_id, t.threshold_percent, t.id,
                   s.window_event_id
            FROM events AS t JOIN state AS s ON s.thread_id = t.thread_id AND t.id > s.window_event_id
            WHERE t.kind = 'threshold'
            ORDER BY t.thread_id, t.threshold_percent, t.id DESC
        )
        SELECT c.thread_id || ' ' || c.threshold_percent || '%' AS name, c.thread_id, c.threshold_percent, c.id AS event_id
        FROM candidates AS c
        WHERE NOT EXISTS (
            SELECT 1 FROM events AS l
            WHERE l.kind = 'limit' AND l.thread_id = c.thread_id AND l.id > c.id
              AND (l.max_tokens = 0
                   OR (SELECT coalesce(sum(u.prompt_tokens + u.completion_tokens), 0) FROM events AS u
                       WHERE u.thread_id = c.thread_id AND u.kind = 'consume' AND u.id > c.window_event_id
                         AND u.id < l.id) * 100 < c.threshold_percent::numeric * l.max_tokens))
        """

    /// holds from the events: reserves of each thread's current life that no later event ended.
    static let holdsFromEvents = """
        WITH \(lifeEvents)
        SELECT r.id::text AS name, r.id AS reservation_id, r.thread_id, r.held_tokens AS tokens, r.expires_at_us,
               r.agent_id, ledger_model_name(r.model) AS model, r.org_id, r.user_id, r.cost_nanos
        FROM life AS r
        WHERE r.kind = 'reserve' AND NOT EXISTS (SELECT 1 FROM events AS ending WHERE ending.reservation_id = r.id)
        """

    /// thread_refusals from the events: each thread's last refusal (without a scope) of its
    /// current life, in the window the thread had then (its first open or limit of the life, or
    /// a later reset; 0 while it was not open). Migration 0009 derives stored refusals with the
    /// same rule.
    static let threadRefusalsFromEvents = """
        WITH \(lifeEvents),
        last_refusal AS (
            SELECT DISTINCT ON (thread_id) thread_id, id FROM life
            WHERE kind = 'refusal' AND scope IS NULL ORDER BY thread_id, id DESC
        )
        SELECT r.thread_id AS name, r.thread_id,
               coalesce(greatest((SELECT min(o.id) FROM life AS o
                                  WHERE o.thread_id = r.thread_id AND o.kind IN ('open', 'limit') AND o.id < r.id),
                                 (SELECT max(x.id) FROM life AS x
                                  WHERE x.thread_id = r.thread_id AND x.kind = 'reset' AND x.id < r.id)), 0)
                   AS window_event_id,
               r.id AS event_id
        FROM last_refusal AS r
        """

    /// The measures of a rollup row, from the consumes grouped under its key.
    static let rollupSums = """
        sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
        count(*) AS request_count, coalesce(sum(billed_cost_nanos), 0)::bigint AS cost_nanos,
        count(*) FILTER (WHERE billed_cost_nanos IS NULL) AS unpriced_requests,
        coalesce(sum(prompt_tokens + completion_tokens) FILTER (WHERE billed_cost_nanos IS NULL), 0)::bigint AS unpriced_tokens,
        coalesce(sum(latency_ms), 0)::bigint AS latency_ms_sum, count(latency_ms) AS latency_count
        """

    static let rollupColumns = """
        prompt_tokens, completion_tokens, request_count, cost_nanos, unpriced_requests, unpriced_tokens, latency_ms_sum,
        latency_count
        """

    /// Consumes with their usage window (the usage resets before them) and their billed cost.
    static let windowedConsumes = """
        SELECT * FROM (
            SELECT e.*, sum((e.kind = 'usage_reset')::integer) OVER (ORDER BY e.id)::bigint AS usage_window,
                   \(billedCost) AS billed_cost_nanos,
                   coalesce(e.org_id, '') AS org_key, coalesce(e.user_id, '') AS user_key,
                   coalesce(e.agent_id, '') AS agent_key, coalesce(ledger_model_name(e.model), '') AS model_key
            FROM events AS e
        ) AS numbered WHERE kind = 'consume'
        """

    static let rollupName = "format('window %s, day %s, org %s, agent %s, model %s', usage_window, day, org_id, agent_id, model)"
    static let agentModelName = "format('window %s, agent %s, model %s', usage_window, agent_id, model)"

    static let tables = [
        Table(
            name: "thread_state",
            stored: """
                SELECT thread_id AS name, thread_id, max_tokens, prompt_tokens, completion_tokens, request_count,
                       opened_event_id, window_event_id
                FROM thread_state
                """,
            recomputed: threadStateFromEvents),
        Table(
            name: "thread_thresholds",
            stored: """
                SELECT thread_id || ' ' || threshold_percent || '%' AS name, thread_id, threshold_percent, event_id
                FROM thread_thresholds
                """,
            recomputed: thresholdsFromEvents),
        Table(
            name: "thread_refusals",
            stored: "SELECT thread_id AS name, thread_id, window_event_id, event_id FROM thread_refusals",
            recomputed: threadRefusalsFromEvents),
        Table(
            name: "holds",
            stored: """
                SELECT reservation_id::text AS name, reservation_id, thread_id, tokens, expires_at_us, agent_id, model, org_id,
                       user_id, cost_nanos
                FROM holds
                """,
            recomputed: holdsFromEvents),
        Table(
            name: "ledger_settings",
            stored: "SELECT '1' AS name, default_max_tokens, usage_window FROM ledger_settings WHERE id = 1",
            recomputed: """
                SELECT '1' AS name,
                       coalesce((SELECT max_tokens FROM events WHERE kind = 'configure' ORDER BY id DESC LIMIT 1), 100000)
                           AS default_max_tokens,
                       (SELECT count(*) FROM events WHERE kind = 'usage_reset') AS usage_window
                """),
        Table(
            name: "usage_rollup_live",
            stored: """
                SELECT \(rollupName) AS name, usage_window, day, org_id, user_id, agent_id, model, \(rollupColumns)
                FROM usage_rollup_live
                """,
            recomputed: """
                SELECT \(rollupName) AS name, * FROM (
                    SELECT usage_window, timestamp_us / 86400000000 AS day, org_key AS org_id, user_key AS user_id,
                           agent_key AS agent_id, model_key AS model, \(rollupSums)
                    FROM (\(windowedConsumes)) AS consumes
                    GROUP BY usage_window, timestamp_us / 86400000000, org_key, user_key, agent_key, model_key
                ) AS sums
                """),
        Table(
            name: "usage_agent_model_live",
            stored: """
                SELECT \(agentModelName) AS name, usage_window, agent_id, model, \(rollupColumns)
                FROM usage_agent_model_live
                """,
            recomputed: """
                SELECT \(agentModelName) AS name, * FROM (
                    SELECT usage_window, agent_key AS agent_id, model_key AS model, \(rollupSums)
                    FROM (\(windowedConsumes)) AS consumes
                    GROUP BY usage_window, agent_key, model_key
                ) AS sums
                """),
    ]
}
