/// Every SQL statement the ledger runs, in one place. The schema itself is in `migrations/`.
enum LedgerSQL {
    /// A thread's cached state plus the ledger's default max, in one lookup; the thread columns
    /// are NULL for a thread that is not open.
    static let selectThreadAndDefault = """
        SELECT s.max_tokens, s.prompt_tokens, s.completion_tokens, s.request_count,
               (SELECT group_concat(t.threshold_percent) FROM thread_thresholds AS t WHERE t.thread_id = s.thread_id),
               g.default_max_tokens
        FROM ledger_settings AS g LEFT JOIN thread_state AS s ON s.thread_id = ?
        WHERE g.id = 1
        """

    static let threadColumns = """
        thread_id, max_tokens, prompt_tokens, completion_tokens, request_count,
        (SELECT group_concat(t.threshold_percent) FROM thread_thresholds AS t WHERE t.thread_id = s.thread_id)
        """

    static let selectThread = "SELECT \(threadColumns) FROM thread_state AS s WHERE s.thread_id = ?"

    /// Every open thread, hottest (highest percent used) first.
    static let selectAllThreads = """
        SELECT \(threadColumns) FROM thread_state AS s
        ORDER BY CASE WHEN max_tokens = 0 THEN 0.0
                      ELSE (prompt_tokens + completion_tokens) * 1.0 / max_tokens END DESC,
                 thread_id
        """

    static let selectDefaultMax = "SELECT default_max_tokens FROM ledger_settings WHERE id = 1"

    static let insertOpen = "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (?, 'open', ?, ?)"
    static let insertLimit = "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (?, 'limit', ?, ?)"
    static let insertReset = "INSERT INTO events (timestamp_us, kind, thread_id) VALUES (?, 'reset', ?)"
    static let insertCleanup = "INSERT INTO events (timestamp_us, kind, thread_id) VALUES (?, 'cleanup', ?)"
    static let insertConfigure = "INSERT INTO events (timestamp_us, kind, max_tokens) VALUES (?, 'configure', ?)"

    static let insertConsume = """
        INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, idempotency_key,
                            agent_id, model, provider, latency_ms, metadata, org_id, user_id, cost_nanos)
        VALUES (?, 'consume', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """

    static let insertThreshold = """
        INSERT INTO events (timestamp_us, kind, thread_id, threshold_percent, severity, caused_by, tokens_used, max_tokens)
        VALUES (?, 'threshold', ?, ?, ?, ?, ?, ?)
        """

    static let consumeEventColumns = """
        id, timestamp_us, thread_id, prompt_tokens, completion_tokens, idempotency_key,
        agent_id, model, provider, latency_ms, metadata, cost_nanos
        """

    static let selectConsumeByKey = "SELECT \(consumeEventColumns) FROM events WHERE idempotency_key = ?"

    static let selectCrossingsOfEvent = """
        SELECT threshold_percent, severity, tokens_used, max_tokens
        FROM events WHERE caused_by = ? AND kind = 'threshold' ORDER BY threshold_percent
        """

    /// The price in force for a model at a time: longest prefix first, then the latest.
    /// `lower()` is SQLite's (ASCII only), the same as in the `event_prices` view.
    static let selectPriceForModel = """
        SELECT model_prefix, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source
        FROM model_prices
        WHERE substr(lower(?1), 1, length(model_prefix)) = model_prefix AND effective_from_us <= ?2
        ORDER BY length(model_prefix) DESC, effective_from_us DESC
        LIMIT 1
        """

    static let selectPrices = """
        SELECT model_prefix, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source
        FROM model_prices ORDER BY model_prefix, effective_from_us
        """

    static let insertPrice = """
        INSERT INTO model_prices (model_prefix, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source)
        VALUES (lower(?), ?, ?, ?, ?)
        """

    static let selectLastEventTimestamp = "SELECT coalesce(max(timestamp_us), 0) FROM events"

    static let insertUsageReset = "INSERT INTO events (timestamp_us, kind) VALUES (?, 'usage_reset')"
}
