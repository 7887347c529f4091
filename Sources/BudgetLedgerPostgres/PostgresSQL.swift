import BudgetLedger

/// The PostgreSQL store's statements that are more than a line, in one place (the schema is in
/// `migrations/postgres/`). They mirror `LedgerSQL`'s for SQLite.
package enum PostgresSQL {
    /// An event's columns in `LedgerEvent`'s order (SQLite's `LedgerEvent.columns`), for the feed.
    static let eventColumns = """
        id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens, threshold_percent, severity,
        caused_by, idempotency_key, agent_id, model, provider, latency_ms, metadata, org_id, user_id, cost_nanos,
        held_tokens, expires_at_us, reservation_id, tokens_used, scope, window_start_us, cost_used_nanos, max_cost_nanos,
        period
        """

    /// The advisory lock between priced consumes (shared) and the price writes (exclusive); the
    /// triggers of migration 0006 take it too, by its number.
    package static let pricesLockKey: Int64 = 0x4244_4C47_0001
    /// The advisory lock between thread writes (shared, `lockThread`) and `resetUsageWindow`
    /// (exclusive). (0x…0002 is the copy's.)
    static let usageWindowLockKey: Int64 = 0x4244_4C47_0003
    /// A thread's cached state, the default max, its live held tokens, its expired holds and
    /// the consume recorded under idempotency key `$3`; `$1` the thread, `$2` now. The thread
    /// columns are NULL for a thread that is not open.
    static let selectThreadAndDefault = """
        SELECT s.max_tokens, s.prompt_tokens, s.completion_tokens, s.request_count,
               (SELECT string_agg(t.threshold_percent::text, ',') FROM thread_thresholds AS t WHERE t.thread_id = $1),
               g.default_max_tokens,
               (SELECT coalesce(sum(h.tokens), 0)::bigint FROM holds AS h WHERE h.thread_id = $1 AND h.expires_at_us > $2),
               (SELECT count(*) FROM holds AS h WHERE h.thread_id = $1 AND h.expires_at_us <= $2),
               (SELECT e.id FROM events AS e WHERE e.idempotency_key = $3),
               s.opened_event_id
        FROM ledger_settings AS g LEFT JOIN thread_state AS s ON s.thread_id = $1
        WHERE g.id = 1
        """

    /// `$1` the thread, `$2` now.
    static let selectThread = """
        SELECT s.max_tokens, s.prompt_tokens, s.completion_tokens, s.request_count,
               (SELECT string_agg(t.threshold_percent::text, ',') FROM thread_thresholds AS t WHERE t.thread_id = s.thread_id),
               (SELECT coalesce(sum(h.tokens), 0)::bigint FROM holds AS h
                WHERE h.thread_id = s.thread_id AND h.expires_at_us > $2)
        FROM thread_state AS s WHERE s.thread_id = $1
        """

    /// Every open thread, hottest (highest percent used) first, then by id in byte order, as
    /// SQLite's `LedgerSQL.selectAllThreads`; `$1` now.
    static let selectAllThreads = """
        SELECT s.thread_id, s.max_tokens, s.prompt_tokens, s.completion_tokens, s.request_count,
               (SELECT string_agg(t.threshold_percent::text, ',') FROM thread_thresholds AS t WHERE t.thread_id = s.thread_id),
               (SELECT coalesce(sum(h.tokens), 0)::bigint FROM holds AS h
                WHERE h.thread_id = s.thread_id AND h.expires_at_us > $1)
        FROM thread_state AS s
        ORDER BY CASE WHEN s.max_tokens = 0 THEN 0.0::float8
                      ELSE (s.prompt_tokens + s.completion_tokens)::float8 / s.max_tokens END DESC,
                 s.thread_id COLLATE "C"
        """

    /// `eventColumns` with a consume's billed cost: as recorded, or, when it was recorded
    /// unpriced, its reprice's (migration 0008; NULL while it has none), for the exports
    /// (SQLite's `LedgerEvent.billedColumns`).
    static let billedEventColumns = eventColumns.replacingOccurrences(
        of: "user_id, cost_nanos,",
        with: "user_id, coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r WHERE r.caused_by = events.id AND r.kind = 'reprice')) AS cost_nanos,")

    /// The events as a billing view reads them (`billedEventColumns`), under the name `events`.
    static let billedEvents = "(SELECT \(billedEventColumns) FROM events) AS events"

    static let consumeEventColumns = """
        id, timestamp_us, thread_id, prompt_tokens, completion_tokens, idempotency_key,
        agent_id, model, provider, latency_ms, metadata, cost_nanos, reservation_id, org_id, user_id
        """

    /// The price in force for the normalised model name `$1` at `$2`: the exact name first, then
    /// the pattern with the longest literal; among those, the latest start (SQLite's
    /// `LedgerSQL.selectPriceForModel`).
    static let selectPriceForModel = """
        SELECT model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source
        FROM model_prices
        WHERE legacy_prefix = 0 AND effective_from_us <= $2
          AND (model_pattern = $1
               OR (right(model_pattern, 1) = '*' AND left($1, length(model_pattern) - 1) = left(model_pattern, -1)))
          AND NOT EXISTS (SELECT 1 FROM price_withdrawals AS w WHERE w.price_id = model_prices.id)
        ORDER BY right(model_pattern, 1) = '*', length(model_pattern) DESC, effective_from_us DESC
        LIMIT 1
        """

    /// The rates of the price in force for the model `model` (an SQL expression, normalised here)
    /// at `time` (one too), by `selectPriceForModel`'s rule: at most one row, none when unpriced.
    /// For a lookup per event (reprices, verify), as SQLite's `event_prices` view.
    static func priceInForce(model: String, at time: String) -> String {
        """
        SELECT prompt_nanos_per_token, completion_nanos_per_token
        FROM model_prices
        WHERE legacy_prefix = 0 AND effective_from_us <= \(time)
          AND (model_pattern = ledger_model_name(\(model))
               OR (right(model_pattern, 1) = '*'
                   AND left(ledger_model_name(\(model)), length(model_pattern) - 1) = left(model_pattern, -1)))
          AND NOT EXISTS (SELECT 1 FROM price_withdrawals AS w WHERE w.price_id = model_prices.id)
        ORDER BY right(model_pattern, 1) = '*', length(model_pattern) DESC, effective_from_us DESC
        LIMIT 1
        """
    }

    static let insertExpiries = """
        INSERT INTO events (timestamp_us, kind, thread_id, reservation_id)
        SELECT $1, 'expire', thread_id, reservation_id FROM holds
        WHERE thread_id = $2 AND expires_at_us <= $1 ORDER BY reservation_id
        """

    static let selectThreadEventsBackFrom = """
        SELECT id, kind, prompt_tokens, completion_tokens, max_tokens, threshold_percent, held_tokens, expires_at_us,
               reservation_id
        FROM events WHERE id <= $1 AND thread_id = $2 ORDER BY id DESC
        """

    /// Every live (not withdrawn) price row, by pattern (in byte order) and start (`LedgerSQL.selectPrices`).
    static let selectPrices = """
        SELECT model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source
        FROM model_prices
        WHERE legacy_prefix = 0 AND NOT EXISTS (SELECT 1 FROM price_withdrawals AS w WHERE w.price_id = model_prices.id)
        ORDER BY model_pattern COLLATE "C", effective_from_us
        """

    /// The id and columns of the live (not withdrawn) row of pattern `$1` starting at `$2`
    /// (`LedgerSQL.selectLivePrice`).
    static let selectLivePrice = """
        SELECT id, model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source
        FROM model_prices
        WHERE model_pattern = $1 AND effective_from_us = $2 AND legacy_prefix = 0
          AND NOT EXISTS (SELECT 1 FROM price_withdrawals AS w WHERE w.price_id = model_prices.id)
        """

    /// The latest billed consume (priced when recorded, or repriced: migration 0008) at or after
    /// `$1` whose normalised model the price row `$2` (a name, or with `$3` the literal of a
    /// pattern) matches: one a price from `$1` would re-price (`LedgerSQL.selectLatestConsumeMatching`;
    /// an unpriced consume it would price is billed later by a reprice).
    static let selectLatestConsumeMatching = """
        SELECT id, timestamp_us FROM events
        WHERE timestamp_us >= $1 AND kind = 'consume'
          AND (cost_nanos IS NOT NULL
               OR EXISTS (SELECT 1 FROM events AS r WHERE r.caused_by = events.id AND r.kind = 'reprice'))
          AND (ledger_model_name(model) = $2
               OR ($3::text IS NOT NULL AND left(ledger_model_name(model), length($3::text)) = $3::text))
        ORDER BY timestamp_us DESC LIMIT 1
        """
}

/// The exports' statements (`PostgresLedger+Export.swift`), SQLite's `Ledger.rollup` in PostgreSQL.
extension PostgresSQL {
    /// A rollup's key, as SQLite's `ExportGrouping.expression`: text keys in byte order
    /// (`COLLATE "C"`), model names by the one rule (`ledger_model_name`, migration 0001), the
    /// UTC day as days since 1970.
    static func rollupKey(_ grouping: ExportGrouping) -> String {
        switch grouping {
        case .org: return #"org_id COLLATE "C""#
        case .agent: return #"agent_id COLLATE "C""#
        case .model: return #"ledger_model_name(model) COLLATE "C""#
        case .thread: return #"thread_id COLLATE "C""#
        case .day: return "timestamp_us / 86400000000"
        }
    }

    /// A rollup's totals in `UsageTotals`' order, each value at most at its limit (SQLite's
    /// `rollup`), the sums cast back to bigint (PostgreSQL's `sum(bigint)` is numeric). Unlike
    /// SQLite's `min`, `least` skips a NULL (`least(NULL, 5)` is 5), so the nullable columns
    /// filter their NULLs out first: an unpriced consume adds no cost, one without latency none.
    static let rollupTotals = """
        sum(least(prompt_tokens, \(LedgerLimits.tokensPerCallMax)))::bigint,
        sum(least(completion_tokens, \(LedgerLimits.tokensPerCallMax)))::bigint, count(*),
        coalesce(sum(least(cost_nanos, \(LedgerLimits.costNanodollarsPerCallMax))) FILTER (WHERE cost_nanos IS NOT NULL), 0)::bigint,
        count(*) FILTER (WHERE cost_nanos IS NULL),
        coalesce(sum(least(prompt_tokens, \(LedgerLimits.tokensPerCallMax))
                     + least(completion_tokens, \(LedgerLimits.tokensPerCallMax))) FILTER (WHERE cost_nanos IS NULL), 0)::bigint,
        coalesce(sum(least(latency_ms, \(LedgerLimits.latencyMillisecondsMax))) FILTER (WHERE latency_ms IS NOT NULL), 0)::bigint,
        count(latency_ms)
        """

    // MARK: Scope budgets (migration 0007)

    /// `scope_budgets`' columns, as SQLite's `ScopeBudgetSQL.budgetColumns`.
    static let scopeBudgetColumns = """
        scope, period, max_tokens, max_cost_nanos, set_event_id, window_start_us, spent_tokens, spent_cost_nanos,
        request_count, unpriced_requests
        """

    typealias StoredScopeBudgetColumns = (String, String, Int64?, Int64?, Int64, Int64, Int64, Int64, Int64, Int64)
    /// The stored columns, then the live held tokens and most cost under the scope.
    typealias ScopeBudgetColumns = (String, String, Int64?, Int64?, Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64)

    /// The budget rows of the scopes in `$1` (a call's candidates), locked in the order of `$1`
    /// by migration 0007's `ledger_lock_scope_budgets` (which needs no UPDATE privilege of the
    /// caller), returned in that order too: the order in which they are checked, as on SQLite.
    static let selectScopeBudgetsForUpdate = """
        SELECT \(scopeBudgetColumns) FROM ledger_lock_scope_budgets($1::text[])
        ORDER BY array_position($1::text[], scope)
        """

    /// Per scope of `$2`, the live holds at `$1` under it: their tokens and most cost (SQLite's
    /// `ScopeBudgetSQL.selectHeld`, for several scopes at once).
    static let selectHeldUnderScopes = """
        SELECT s.scope, coalesce(sum(h.tokens), 0)::bigint, coalesce(sum(h.cost_nanos), 0)::bigint
        FROM unnest($2::text[]) AS s (scope)
        LEFT JOIN holds AS h
            ON h.expires_at_us > $1
           AND (s.scope = 'global' OR s.scope = 'org:' || h.org_id OR s.scope = 'user:' || h.user_id
                OR s.scope = 'agent:' || h.agent_id OR s.scope = 'model:' || h.model)
        GROUP BY s.scope
        """

    /// The budgets of the scopes in `$2` (every budget when NULL) by scope in byte order, with the
    /// live holds at `$1` under each, summed once per scope as the view budget_windows does.
    static let selectScopeBudgetsWithHolds = """
        WITH live AS (SELECT * FROM holds WHERE expires_at_us > $1),
        held (scope, tokens, cost_nanos) AS (
            SELECT 'global', sum(tokens), sum(cost_nanos) FROM live
            UNION ALL SELECT 'org:' || org_id, sum(tokens), sum(cost_nanos) FROM live WHERE org_id IS NOT NULL GROUP BY org_id
            UNION ALL SELECT 'user:' || user_id, sum(tokens), sum(cost_nanos) FROM live WHERE user_id IS NOT NULL
                      GROUP BY user_id
            UNION ALL SELECT 'agent:' || agent_id, sum(tokens), sum(cost_nanos) FROM live WHERE agent_id IS NOT NULL
                      GROUP BY agent_id
            UNION ALL SELECT 'model:' || model, sum(tokens), sum(cost_nanos) FROM live WHERE model IS NOT NULL GROUP BY model
        )
        SELECT b.scope, b.period, b.max_tokens, b.max_cost_nanos, b.set_event_id, b.window_start_us, b.spent_tokens,
               b.spent_cost_nanos, b.request_count, b.unpriced_requests, coalesce(h.tokens, 0)::bigint,
               coalesce(h.cost_nanos, 0)::bigint
        FROM scope_budgets AS b LEFT JOIN held AS h ON h.scope = b.scope
        WHERE $2::text[] IS NULL OR b.scope = ANY($2::text[])
        ORDER BY b.scope COLLATE "C"
        """

    /// A stored budget from the first ten columns of a scope budget row.
    static func storedScopeBudget(
        _ row: (String, String, Int64?, Int64?, Int64, Int64, Int64, Int64, Int64, Int64)
    ) -> StoredScopeBudget {
        StoredScopeBudget(
            scope: row.0, period: row.1, maxTokens: row.2, maxNanodollars: row.3, setEventID: row.4, windowStart: row.5,
            spentTokens: row.6, spentNanodollars: row.7, requestCount: row.8, unpricedRequests: row.9)
    }

    static func storedScopeBudget(_ row: ScopeBudgetColumns) -> StoredScopeBudget {
        storedScopeBudget((row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9))
    }
}
