-- 0001: the append-only event ledger, and the per-thread budget state derived from it.
--
-- `events` is the only source of truth. Every state change is one row, never updated or
-- deleted. `thread_state`, `thread_thresholds` and `ledger_settings` are caches kept by
-- triggers in the same transaction as each insert, so reads are one key lookup; the
-- `*_from_events` views recompute them from the events alone, and `budget-ledger verify`
-- proves the two agree.

-- 'BDLG': marks the file as a BudgetLedger database (https://www.sqlite.org/pragma.html#pragma_application_id).
PRAGMA application_id = 1111772231;

CREATE TABLE events (
    -- Rowid: strictly increasing, never reused, because rows are never deleted.
    id INTEGER PRIMARY KEY,
    -- UTC, microseconds since 1970-01-01T00:00:00Z.
    timestamp_us INTEGER NOT NULL CHECK (timestamp_us >= 0),
    -- open: a thread starts a life at max_tokens (the default then in force).
    -- consume: prompt_tokens + completion_tokens were spent on thread_id.
    -- limit: thread_id's max becomes max_tokens (opening the thread if it is not open).
    -- reset: a new budget window; spent reads zero, thresholds are armed again.
    -- cleanup: the thread's life ends; the same id later starts a new life.
    -- threshold: thread_id crossed threshold_percent (once per window); caused_by is the consume.
    -- configure: the default max for threads opened from now on becomes max_tokens.
    -- usage_reset: a new window for the usage overview (billing still sees every event).
    -- reserve, release, expire: two-phase holds (see 0003_reservations.sql); a hold is settled
    -- by a consume carrying its reservation_id.
    kind TEXT NOT NULL CHECK (kind IN ('open', 'consume', 'limit', 'reset', 'cleanup', 'threshold', 'configure',
                                       'usage_reset', 'reserve', 'release', 'expire')),
    thread_id TEXT CHECK ((thread_id IS NULL) = (kind IN ('configure', 'usage_reset'))),
    prompt_tokens INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    max_tokens INTEGER CHECK ((max_tokens IS NOT NULL) = (kind IN ('open', 'limit', 'configure', 'threshold')) AND max_tokens >= 0),
    threshold_percent INTEGER CHECK ((threshold_percent IS NOT NULL) = (kind = 'threshold') AND threshold_percent > 0),
    severity TEXT CHECK ((severity IS NOT NULL) = (kind = 'threshold')),
    -- threshold: the consume that crossed it, the thread's total after it, and the max then.
    caused_by INTEGER REFERENCES events (id),
    tokens_used INTEGER CHECK ((tokens_used IS NOT NULL) = (kind = 'threshold')),
    -- A retried consume carrying the same key records nothing new.
    idempotency_key TEXT CHECK (idempotency_key IS NULL OR kind = 'consume'),
    -- Usage fields for billing (all optional).
    agent_id TEXT,
    model TEXT,
    provider TEXT,
    latency_ms INTEGER CHECK (latency_ms >= 0),
    -- A JSON object; its org_id and user_id are copied to the indexed columns below.
    metadata TEXT CHECK (metadata IS NULL OR json_type(metadata) = 'object'),
    org_id TEXT,
    user_id TEXT,
    -- What the consume cost, in nano-dollars (10^-9 USD); NULL when the model has no price.
    cost_nanos INTEGER CHECK (cost_nanos >= 0),
    -- reserve: the tokens held and when the hold stops counting (UTC microseconds).
    held_tokens INTEGER CHECK ((held_tokens IS NOT NULL) = (kind = 'reserve') AND held_tokens > 0),
    expires_at_us INTEGER CHECK ((expires_at_us IS NOT NULL) = (kind = 'reserve')),
    -- release, expire: the reserve event they end; consume: the hold it settles, if any.
    reservation_id INTEGER REFERENCES events (id)
        CHECK (CASE WHEN kind IN ('release', 'expire') THEN reservation_id IS NOT NULL
                    ELSE kind = 'consume' OR reservation_id IS NULL END)
) STRICT;

CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Finds the threshold events of a consume (when an idempotent retry replays it); consumes add no entry.
CREATE INDEX events_caused_by ON events (caused_by) WHERE caused_by IS NOT NULL;

-- History cannot be rewritten, not even from the sqlite3 shell: any UPDATE or DELETE aborts.
CREATE TRIGGER events_forbid_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER events_forbid_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: DELETE is not allowed');
END;

-- INSERT OR REPLACE deletes the row it conflicts with without firing delete triggers
-- (https://www.sqlite.org/lang_conflict.html), so an insert may not reuse an id or a key.
CREATE TRIGGER events_forbid_replace BEFORE INSERT ON events
WHEN NEW.id IS NOT NULL AND NEW.id >= 0 OR NEW.idempotency_key IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: an insert may not replace an existing event')
    WHERE EXISTS (SELECT 1 FROM events WHERE id = NEW.id)
       OR EXISTS (SELECT 1 FROM events WHERE idempotency_key = NEW.idempotency_key);
END;

-- The current life of every open thread. Derived: see thread_state_from_events.
CREATE TABLE thread_state (
    thread_id TEXT PRIMARY KEY,
    max_tokens INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    request_count INTEGER NOT NULL DEFAULT 0,
    -- The open (or limit) event that began this life.
    opened_event_id INTEGER NOT NULL,
    -- Consumption after this event counts: the opening event, or the last reset.
    window_event_id INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Thresholds already crossed in each thread's current window. Derived: see thread_thresholds_from_events.
CREATE TABLE thread_thresholds (
    thread_id TEXT NOT NULL,
    threshold_percent INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (thread_id, threshold_percent)
) STRICT, WITHOUT ROWID;

-- The default max for new threads. Derived: the last configure event, else 100,000.
-- The usage window counts usage_reset events: the overview shows the current window.
CREATE TABLE ledger_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    default_max_tokens INTEGER NOT NULL,
    usage_window INTEGER NOT NULL
) STRICT;
INSERT INTO ledger_settings (id, default_max_tokens, usage_window) VALUES (1, 100000, 0);

-- A thread event needs an open thread; an open needs a thread that is not open.
CREATE TRIGGER events_require_open_thread BEFORE INSERT ON events
WHEN NEW.kind IN ('consume', 'reset', 'cleanup', 'threshold', 'reserve', 'release', 'expire')
BEGIN
    SELECT RAISE(ABORT, 'event for a thread that is not open')
    WHERE NOT EXISTS (SELECT 1 FROM thread_state WHERE thread_id = NEW.thread_id);
END;

CREATE TRIGGER events_require_new_thread BEFORE INSERT ON events
WHEN NEW.kind = 'open'
BEGIN
    SELECT RAISE(ABORT, 'open event for a thread that is already open')
    WHERE EXISTS (SELECT 1 FROM thread_state WHERE thread_id = NEW.thread_id);
END;

CREATE TRIGGER events_apply_open AFTER INSERT ON events WHEN NEW.kind = 'open'
BEGIN
    INSERT INTO thread_state (thread_id, max_tokens, opened_event_id, window_event_id)
    VALUES (NEW.thread_id, NEW.max_tokens, NEW.id, NEW.id);
END;

CREATE TRIGGER events_apply_consume AFTER INSERT ON events WHEN NEW.kind = 'consume'
BEGIN
    UPDATE thread_state
    SET prompt_tokens = prompt_tokens + NEW.prompt_tokens,
        completion_tokens = completion_tokens + NEW.completion_tokens,
        request_count = request_count + 1
    WHERE thread_id = NEW.thread_id;
END;

CREATE TRIGGER events_apply_limit AFTER INSERT ON events WHEN NEW.kind = 'limit'
BEGIN
    INSERT INTO thread_state (thread_id, max_tokens, opened_event_id, window_event_id)
    VALUES (NEW.thread_id, NEW.max_tokens, NEW.id, NEW.id)
    ON CONFLICT (thread_id) DO UPDATE SET max_tokens = excluded.max_tokens;
END;

CREATE TRIGGER events_apply_reset AFTER INSERT ON events WHEN NEW.kind = 'reset'
BEGIN
    UPDATE thread_state
    SET prompt_tokens = 0, completion_tokens = 0, request_count = 0, window_event_id = NEW.id
    WHERE thread_id = NEW.thread_id;
    DELETE FROM thread_thresholds WHERE thread_id = NEW.thread_id;
END;

CREATE TRIGGER events_apply_cleanup AFTER INSERT ON events WHEN NEW.kind = 'cleanup'
BEGIN
    DELETE FROM thread_state WHERE thread_id = NEW.thread_id;
    DELETE FROM thread_thresholds WHERE thread_id = NEW.thread_id;
END;

CREATE TRIGGER events_apply_threshold AFTER INSERT ON events WHEN NEW.kind = 'threshold'
BEGIN
    INSERT INTO thread_thresholds (thread_id, threshold_percent, event_id)
    VALUES (NEW.thread_id, NEW.threshold_percent, NEW.id);
END;

CREATE TRIGGER events_apply_configure AFTER INSERT ON events WHEN NEW.kind = 'configure'
BEGIN
    UPDATE ledger_settings SET default_max_tokens = NEW.max_tokens WHERE id = 1;
END;

CREATE TRIGGER events_apply_usage_reset AFTER INSERT ON events WHEN NEW.kind = 'usage_reset'
BEGIN
    UPDATE ledger_settings SET usage_window = usage_window + 1 WHERE id = 1;
END;

-- Every open thread's budget, as the reference registry reports it.
CREATE VIEW thread_budgets AS
SELECT
    thread_id,
    max_tokens,
    prompt_tokens,
    completion_tokens,
    prompt_tokens + completion_tokens AS total_tokens,
    max(0, max_tokens - (prompt_tokens + completion_tokens)) AS remaining,
    request_count,
    CASE WHEN max_tokens = 0 THEN 0.0
         ELSE round(100.0 * (prompt_tokens + completion_tokens) / max_tokens, 1) END AS percent_used,
    (prompt_tokens + completion_tokens) >= max_tokens AS is_exhausted
FROM thread_state;

-- The events of each thread's current life: everything after its last cleanup.
CREATE VIEW thread_life_events AS
WITH ends AS (
    SELECT thread_id, max(CASE WHEN kind = 'cleanup' THEN id ELSE 0 END) AS ended_after
    FROM events
    WHERE thread_id IS NOT NULL
    GROUP BY thread_id
)
SELECT events.*
FROM events JOIN ends ON ends.thread_id = events.thread_id
WHERE events.id > ends.ended_after;

-- thread_state recomputed from the events alone.
CREATE VIEW thread_state_from_events AS
WITH marks AS (
    SELECT
        thread_id,
        min(CASE WHEN kind IN ('open', 'limit') THEN id END) AS opened_event_id,
        max(CASE WHEN kind IN ('open', 'limit') THEN id END) AS last_limit_event_id,
        max(CASE WHEN kind = 'reset' THEN id ELSE 0 END) AS last_reset_event_id
    FROM thread_life_events
    GROUP BY thread_id
),
windows AS (
    SELECT
        thread_id,
        (SELECT max_tokens FROM events WHERE id = last_limit_event_id) AS max_tokens,
        opened_event_id,
        max(opened_event_id, last_reset_event_id) AS window_event_id
    FROM marks
    WHERE opened_event_id IS NOT NULL
)
SELECT
    windows.thread_id,
    windows.max_tokens,
    coalesce(sum(events.prompt_tokens), 0) AS prompt_tokens,
    coalesce(sum(events.completion_tokens), 0) AS completion_tokens,
    count(events.id) AS request_count,
    windows.opened_event_id,
    windows.window_event_id
FROM windows
LEFT JOIN events
    ON events.thread_id = windows.thread_id AND events.kind = 'consume' AND events.id > windows.window_event_id
GROUP BY windows.thread_id;

-- thread_thresholds recomputed from the events alone.
CREATE VIEW thread_thresholds_from_events AS
SELECT events.thread_id, events.threshold_percent, events.id AS event_id
FROM events
JOIN thread_state_from_events AS state
    ON state.thread_id = events.thread_id AND events.id > state.window_event_id
WHERE events.kind = 'threshold';

-- ledger_settings recomputed from the events alone.
CREATE VIEW ledger_settings_from_events AS
SELECT 1 AS id,
       coalesce((SELECT max_tokens FROM events WHERE kind = 'configure' ORDER BY id DESC LIMIT 1), 100000)
           AS default_max_tokens,
       (SELECT count(*) FROM events WHERE kind = 'usage_reset') AS usage_window;
