internal import LedgerSQLite

/// The statements of the write path and of the common reads (thread state, holds, prices,
/// threshold and consume events), in one place. Reads that serve one feature keep their SQL
/// beside it: the feed and exports (`Ledger+Feed`), the usage overview (`Ledger+Usage`),
/// verify (`Ledger+Verify`, `Recomputation`), and group commit's savepoints (`Storage/`).
/// The schema itself is in `migrations/` (all of it in `migrations/schema.sql`).
enum LedgerSQL {
    /// A thread's cached state, the ledger's default max, the thread's live held tokens, its
    /// expired-but-unrecorded holds, the version of the price table (`PriceCache`) and the
    /// consume already recorded under idempotency key `?3` (NULL: none, or no key), whether any
    /// scope budget exists and the fold's mark (`FoldMark`), in one statement; `?1` is the
    /// thread, `?2` now. The thread columns are NULL for a thread that is not open.
    static let selectThreadAndDefault = """
        SELECT s.max_tokens, s.prompt_tokens, s.completion_tokens, s.request_count,
               (SELECT group_concat(t.threshold_percent) FROM thread_thresholds AS t WHERE t.thread_id = s.thread_id),
               g.default_max_tokens,
               (SELECT coalesce(sum(h.tokens), 0) FROM holds AS h WHERE h.thread_id = ?1 AND h.expires_at_us > ?2),
               (SELECT count(*) FROM holds AS h WHERE h.thread_id = ?1 AND h.expires_at_us <= ?2),
               (SELECT coalesce(max(id), 0) FROM model_prices) + (SELECT coalesce(max(id), 0) FROM price_withdrawals),
               (SELECT e.id FROM events AS e WHERE e.idempotency_key = ?3),
               EXISTS (SELECT 1 FROM scope_budgets),
               \(FoldMark.columns(of: "g"))
        FROM ledger_settings AS g LEFT JOIN thread_state AS s ON s.thread_id = ?1
        WHERE g.id = 1
        """

    /// The columns `ThreadRow.budget(from:)` decodes; `now` names the parameter holding the time.
    static func threadColumns(now: String) -> String {
        """
        s.thread_id, s.max_tokens, s.prompt_tokens, s.completion_tokens, s.request_count,
        (SELECT group_concat(t.threshold_percent) FROM thread_thresholds AS t WHERE t.thread_id = s.thread_id),
        (SELECT coalesce(sum(h.tokens), 0) FROM holds AS h WHERE h.thread_id = s.thread_id AND h.expires_at_us > \(now))
        """
    }

    /// `?1` the thread, `?2` now.
    static let selectThread = "SELECT \(threadColumns(now: "?2")) FROM thread_state AS s WHERE s.thread_id = ?1"

    /// Every open thread, hottest (highest percent used) first; `?1` now.
    static let selectAllThreads = """
        SELECT \(threadColumns(now: "?1")) FROM thread_state AS s
        ORDER BY CASE WHEN s.max_tokens = 0 THEN 0.0
                      ELSE (s.prompt_tokens + s.completion_tokens) * 1.0 / s.max_tokens END DESC,
                 s.thread_id
        """

    static let selectDefaultMax = "SELECT default_max_tokens FROM ledger_settings WHERE id = 1"

    static let insertOpen = "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (?, 'open', ?, ?)"
    static let insertLimit = "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (?, 'limit', ?, ?)"
    static let insertReset = "INSERT INTO events (timestamp_us, kind, thread_id) VALUES (?, 'reset', ?)"
    static let insertCleanup = "INSERT INTO events (timestamp_us, kind, thread_id) VALUES (?, 'cleanup', ?)"
    static let insertConfigure = "INSERT INTO events (timestamp_us, kind, max_tokens) VALUES (?, 'configure', ?)"

    static let insertConsume = """
        INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, idempotency_key,
                            agent_id, model, provider, latency_ms, metadata, org_id, user_id, cost_nanos, reservation_id)
        VALUES (?, 'consume', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """

    static let insertThreshold = """
        INSERT INTO events (timestamp_us, kind, thread_id, threshold_percent, severity, caused_by, tokens_used, max_tokens)
        VALUES (?, 'threshold', ?, ?, ?, ?, ?, ?)
        """

    static let consumeEventColumns = """
        id, timestamp_us, thread_id, prompt_tokens, completion_tokens, idempotency_key,
        agent_id, model, provider, latency_ms, metadata, cost_nanos, reservation_id, org_id, user_id
        """

    static let selectConsumeByKey =
        "SELECT \(consumeEventColumns) FROM events WHERE idempotency_key = ? AND kind = 'consume'"

    /// The event that began the thread's current life (nil when it is not open).
    static let selectOpenedEventID = "SELECT opened_event_id FROM thread_state WHERE thread_id = ?"

    /// A thread's events from event `?1` back to the first (`RecordedBudget` stops at its life's start).
    static let selectThreadEventsBackFrom = """
        SELECT id, kind, prompt_tokens, completion_tokens, max_tokens, threshold_percent, held_tokens, expires_at_us,
               reservation_id
        FROM events WHERE id <= ?1 AND thread_id = ?2 ORDER BY id DESC
        """

    static let selectCrossingsOfEvent = """
        SELECT threshold_percent, severity, tokens_used, max_tokens
        FROM events WHERE caused_by = ? AND kind = 'threshold' ORDER BY threshold_percent
        """

    /// The price in force for the normalised model name `?1` at `?2` (migration 0008's rule, as
    /// the `event_prices` view applies it after `legacy_pricing.last_event_id`): the exact name
    /// first, then the pattern with the longest literal; among those, the latest start. Withdrawn
    /// rows (`price_withdrawals`, migration 0012) are skipped.
    static let selectPriceForModel = """
        SELECT model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source
        FROM model_prices
        WHERE legacy_prefix = 0 AND effective_from_us <= ?2
          AND (model_pattern = ?1
               OR (substr(model_pattern, -1) = '*'
                   AND substr(?1, 1, length(model_pattern) - 1) = substr(model_pattern, 1, length(model_pattern) - 1)))
          AND id NOT IN (SELECT price_id FROM price_withdrawals)
        ORDER BY substr(model_pattern, -1) = '*', length(model_pattern) DESC, effective_from_us DESC
        LIMIT 1
        """

    /// The rows of the current rule (the legacy prefix rows before 0008 price only old events),
    /// without the withdrawn ones (migration 0012).
    static let selectPrices = """
        SELECT model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source
        FROM model_prices
        WHERE legacy_prefix = 0 AND id NOT IN (SELECT price_id FROM price_withdrawals)
        ORDER BY model_pattern, effective_from_us
        """

    /// The id and columns of the live (not withdrawn) row of pattern `?1` starting at `?2`.
    static let selectLivePrice = """
        SELECT id, model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source
        FROM model_prices
        WHERE model_pattern = ?1 AND effective_from_us = ?2 AND legacy_prefix = 0
          AND id NOT IN (SELECT price_id FROM price_withdrawals)
        """

    /// Withdraws the price row `?1` at `?2` (UTC microseconds) for reason `?3` (migration 0012).
    static let insertWithdrawal = "INSERT INTO price_withdrawals (price_id, withdrawn_at_us, source) VALUES (?, ?, ?)"


    /// Binds the normalised pattern (`ModelName.normalized`, checked by `setPrice`).
    static let insertPrice = """
        INSERT INTO model_prices (model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source)
        VALUES (?, ?, ?, ?, ?)
        """

    /// The latest billed consume (priced when recorded, or repriced) at or after `?1` whose
    /// normalised model the price row `?2` matches: the exact name `?2`, or, when `?3` is the
    /// literal of a pattern, every name starting with it. One a price for `?2` from `?1` could
    /// re-price (an unpriced consume it would price is billed later by a reprice, migration 0012).
    /// The range is read through the time blocks (`TimeRangeSQL`, migration 0016), so a start
    /// after every folded event reads only the pending tail; among consumes of one timestamp the
    /// latest id wins (as the backward scan of the timestamp index before 0016 found it).
    static let selectLatestConsumeMatching = """
        SELECT id, timestamp_us FROM \(TimeRangeSQL.events(as: "events"))
        WHERE \(TimeRangeSQL.timestamps(of: "events", from: "?1")) AND kind = 'consume'
          AND (cost_nanos IS NOT NULL
               OR EXISTS (SELECT 1 FROM events AS r WHERE r.caused_by = events.id AND r.kind = 'reprice'))
          AND (\(ModelName.sql("model")) = ?2
               OR (?3 IS NOT NULL AND substr(\(ModelName.sql("model")), 1, length(?3)) = ?3))
        ORDER BY timestamp_us DESC, id DESC LIMIT 1
        """

    /// A consume's billed cost, for a query over `events` unaliased: as recorded, or, when it was
    /// recorded unpriced, its reprice's (migration 0012; NULL while it has none).
    static let billedCost = """
        coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r WHERE r.caused_by = events.id AND r.kind = 'reprice'))
        """

    static let insertUsageReset = "INSERT INTO events (timestamp_us, kind) VALUES (?, 'usage_reset')"

    static let insertReserve = """
        INSERT INTO events (timestamp_us, kind, thread_id, held_tokens, expires_at_us, agent_id, model, metadata, org_id,
                            user_id, cost_nanos, idempotency_key)
        VALUES (?, 'reserve', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """

    static let selectReserveByKey = """
        SELECT id, thread_id, held_tokens, expires_at_us, agent_id, model, metadata
        FROM events WHERE idempotency_key = ? AND kind = 'reserve'
        """

    static let insertRelease = "INSERT INTO events (timestamp_us, kind, thread_id, reservation_id) VALUES (?, 'release', ?, ?)"

    /// Records an expire event for each of a thread's holds whose time has passed (`?1` now, `?2` thread).
    static let insertExpiries = """
        INSERT INTO events (timestamp_us, kind, thread_id, reservation_id)
        SELECT ?1, 'expire', thread_id, reservation_id FROM holds
        WHERE thread_id = ?2 AND expires_at_us <= ?1 ORDER BY reservation_id
        """

    /// A reservation and how it ended, if it did: the reserve event, then the kinds of the
    /// events that reference it, and whether the thread life that made it goes on (the thread is
    /// open and its life began before the reserve; otherwise a cleanup ended it, whether or not
    /// an expiry had already taken the hold out of `holds`).
    static let selectReservation = """
        SELECT r.thread_id, r.held_tokens, r.expires_at_us,
               (SELECT group_concat(e.kind) FROM events AS e WHERE e.reservation_id = r.id),
               coalesce((SELECT s.opened_event_id < r.id FROM thread_state AS s WHERE s.thread_id = r.thread_id), 0)
        FROM events AS r WHERE r.id = ? AND r.kind = 'reserve'
        """

    /// Live holds, optionally of one thread (`?1` now, `?2` thread or NULL).
    static let selectLiveHolds = """
        SELECT reservation_id, thread_id, tokens, expires_at_us FROM holds
        WHERE expires_at_us > ?1 AND (?2 IS NULL OR thread_id = ?2)
        ORDER BY reservation_id
        """
}

/// Which event holds an idempotency key, whatever its kind (consumes and reserves take keys).
enum IdempotencySQL {
    static let selectEventByKey = "SELECT id, kind FROM events WHERE idempotency_key = ?"

    static func eventUsing(_ key: String, on connection: Connection) throws -> (id: Int64, kind: String)? {
        try connection.cachedStatement(selectEventByKey).fetchOne([key]) { (try $0[0] as Int64, try $0[1] as String) }
    }
}

/// A consume's derived state as the ledger's writer applies it (`Ledger.applyDerivedState`): the
/// statements of migration 0014's `consumes_to_apply_insert` (the trigger other writers go
/// through), one each, so the writer runs only those a call needs.
enum ConsumeSQL {
    /// `?1` the thread, `?2` prompt and `?3` completion tokens.
    static let addToThread = """
        UPDATE thread_state
        SET prompt_tokens = prompt_tokens + ?2, completion_tokens = completion_tokens + ?3,
            request_count = request_count + 1
        WHERE thread_id = ?1
        """

    /// `?1` the event's time, `?2` its tokens, `?3` its cost (NULL: unpriced), `?4`–`?8` the
    /// scopes it falls under (`BudgetScope.candidates`; unused ones NULL): each budget's window
    /// starts again when the consume is past it (0010's arithmetic, as in the trigger).
    static let addToScopeBudgets = """
        UPDATE scope_budgets
        SET (spent_tokens, spent_cost_nanos, request_count, unpriced_requests, window_start_us) =
            (SELECT (applicable.start <= window_start_us) * spent_tokens + ?2,
                    (applicable.start <= window_start_us) * spent_cost_nanos + coalesce(?3, 0),
                    (applicable.start <= window_start_us) * request_count + 1,
                    (applicable.start <= window_start_us) * unpriced_requests + (?3 IS NULL),
                    max(applicable.start, window_start_us)
             FROM (SELECT CASE period
                         WHEN 'day' THEN ?1 - ?1 % 86400000000
                         WHEN 'week' THEN (?1 / 86400000000 - (?1 / 86400000000 + 3) % 7) * 86400000000
                         WHEN 'month' THEN CAST(strftime('%s', ?1 / 1000000, 'unixepoch', 'start of month')
                                                AS INTEGER) * 1000000
                         ELSE 0 END AS start) AS applicable)
        WHERE scope IN (?4, ?5, ?6, ?7, ?8)
        """

    /// A settle ends its hold (`?1` the reserve event).
    static let endHold = "DELETE FROM holds WHERE reservation_id = ?1"
}
