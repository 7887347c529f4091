-- 0004: the same ledger, with less work per recorded event.
--
-- Measured with callgrind on the check-and-consume path, two things cost more than the rest of
-- SQLite's work together:
--
-- 1. `x IN ('a', 'b', 'c', …)` with more than two constants builds a temporary b-tree of the
--    constants every time the statement runs. 0001 had three of them on every insert (two
--    CHECK constraints and a trigger's WHEN): about 7 µs each. The same conditions are written
--    here as chains of `=` joined by OR, which SQLite evaluates in place and stops at the first
--    match. CHECK constraints cannot be altered, so `events` is rebuilt the way SQLite
--    documents (https://www.sqlite.org/lang_altertable.html#otheralter): create the new table,
--    copy every row (ids included), drop the old one. The migrator runs this with foreign keys
--    off and runs `PRAGMA foreign_key_check` before it commits.
-- 2. Every trigger on a table runs as a sub-program on every insert, its WHEN clause included,
--    so sixteen triggers meant sixteen sub-programs per consume. They become three: one BEFORE
--    INSERT that checks, one AFTER INSERT for consumes, one AFTER INSERT for every other kind.
--    The fold of item 3 hangs on an UPDATE of ledger_settings, which runs only when it folds.
--    Each statement in them starts with a test of NEW.kind, which SQLite checks before it
--    touches a table.
--
-- 3. Two rollup upserts per consume cost as much as the rest of the insert and dirtied two more
--    pages per commit. Consumes are now folded into the rollups in groups: every 1,024th event
--    (and before a usage_reset) adds up the consumes recorded since the last fold, in the same
--    transaction (ledger_settings_fold_usage). `ledger_settings.rolled_up_to` is the last event folded in. The `*_live`
--    views add the pending consumes (at most 1,023, a rowid range) to the folded rows, and
--    every usage and billing view reads them, so readers always see every committed consume.
--
-- And the usage overview read every row of `usage_rollup`, whose key (window, day, org, user,
-- agent, model) grows with the days the ledger spans (690,000 rows for 10M events over 900
-- days). `usage_agent_model` keeps the same totals per window, agent and model only (a few
-- hundred rows at most for a real fleet), so the overview and the billing summary read that.
--
-- Nothing about the meaning changes: the same kinds, the same rules, the same error messages.

-- The events, parked under another name while the table is built again. Views name `events`
-- and are left alone: they resolve the name when they run, not when they are created.
CREATE TABLE events_before_0004 AS SELECT * FROM events;
DROP TABLE events;

CREATE TABLE events (
    -- Rowid: strictly increasing, never reused, because rows are never deleted.
    id INTEGER PRIMARY KEY,
    -- UTC, microseconds since 1970-01-01T00:00:00Z.
    timestamp_us INTEGER NOT NULL CHECK (timestamp_us >= 0),
    -- The kinds are described in 0001_ledger.sql; consume, the common one, is tested first.
    kind TEXT NOT NULL CHECK (kind = 'consume' OR kind = 'open' OR kind = 'limit' OR kind = 'reset'
                              OR kind = 'cleanup' OR kind = 'threshold' OR kind = 'configure' OR kind = 'usage_reset'
                              OR kind = 'reserve' OR kind = 'release' OR kind = 'expire'),
    thread_id TEXT CHECK ((thread_id IS NULL) = (kind = 'configure' OR kind = 'usage_reset')),
    prompt_tokens INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    max_tokens INTEGER CHECK ((max_tokens IS NOT NULL) = (kind = 'open' OR kind = 'limit' OR kind = 'configure'
                                                          OR kind = 'threshold')
                              AND max_tokens >= 0),
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
        CHECK (CASE WHEN kind = 'release' OR kind = 'expire' THEN reservation_id IS NOT NULL
                    ELSE kind = 'consume' OR reservation_id IS NULL END)
) STRICT;

-- Every row, in id order, before any index or trigger exists (so nothing fires twice).
INSERT INTO events SELECT * FROM events_before_0004 ORDER BY id;
DROP TABLE events_before_0004;

CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_caused_by ON events (caused_by) WHERE caused_by IS NOT NULL;
CREATE INDEX events_timestamp ON events (timestamp_us);
CREATE UNIQUE INDEX events_reservation_end ON events (reservation_id, kind = 'consume') WHERE reservation_id IS NOT NULL;

-- History cannot be rewritten, not even from the sqlite3 shell: any UPDATE or DELETE aborts.
CREATE TRIGGER events_forbid_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER events_forbid_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only: DELETE is not allowed');
END;

-- Every rule an insert must meet that a CHECK cannot express, in one sub-program.
CREATE TRIGGER events_check_insert BEFORE INSERT ON events
BEGIN
    -- INSERT OR REPLACE deletes the row it conflicts with without firing delete triggers
    -- (https://www.sqlite.org/lang_conflict.html), so an insert may not reuse an id or a key.
    SELECT RAISE(ABORT, 'events is append-only: an insert may not replace an existing event')
    WHERE (NEW.id IS NOT NULL AND NEW.id >= 0 AND EXISTS (SELECT 1 FROM events WHERE id = NEW.id))
       OR (NEW.idempotency_key IS NOT NULL
           AND EXISTS (SELECT 1 FROM events WHERE idempotency_key = NEW.idempotency_key));
    -- A thread event needs an open thread; an open needs a thread that is not open.
    SELECT RAISE(ABORT, 'event for a thread that is not open')
    WHERE (NEW.kind = 'consume' OR NEW.kind = 'reset' OR NEW.kind = 'cleanup' OR NEW.kind = 'threshold'
           OR NEW.kind = 'reserve' OR NEW.kind = 'release' OR NEW.kind = 'expire')
      AND NOT EXISTS (SELECT 1 FROM thread_state WHERE thread_id = NEW.thread_id);
    SELECT RAISE(ABORT, 'open event for a thread that is already open')
    WHERE NEW.kind = 'open' AND EXISTS (SELECT 1 FROM thread_state WHERE thread_id = NEW.thread_id);
    -- A settle, release or expire names a reserve event of the same thread.
    SELECT RAISE(ABORT, 'reservation_id does not name a reserve event of this thread')
    WHERE NEW.reservation_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM events
                      WHERE id = NEW.reservation_id AND kind = 'reserve' AND thread_id = NEW.thread_id);
END;

-- Consume totals per usage window, agent and model: what the overview and the billing summary
-- read. '' stands for "none" in the key columns, as in usage_rollup.
CREATE TABLE usage_agent_model (
    usage_window INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    request_count INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,
    unpriced_requests INTEGER NOT NULL,
    latency_ms_sum INTEGER NOT NULL,
    latency_count INTEGER NOT NULL,
    PRIMARY KEY (usage_window, agent_id, model)
) STRICT, WITHOUT ROWID;

INSERT INTO usage_agent_model
SELECT usage_window, agent_id, model, sum(prompt_tokens), sum(completion_tokens), sum(request_count), sum(cost_nanos),
       sum(unpriced_requests), sum(latency_ms_sum), sum(latency_count)
FROM usage_rollup
GROUP BY usage_window, agent_id, model;

-- The last event folded into the rollups: until now they held every consume.
ALTER TABLE ledger_settings ADD COLUMN rolled_up_to INTEGER NOT NULL DEFAULT 0;
UPDATE ledger_settings SET rolled_up_to = (SELECT coalesce(max(id), 0) FROM events) WHERE id = 1;

-- The consumes recorded since the last fold (all in the current usage window), summed per rollup key.
CREATE VIEW usage_rollup_pending AS
SELECT (SELECT usage_window FROM ledger_settings WHERE id = 1) AS usage_window,
       timestamp_us / 86400000000 AS day,
       coalesce(org_id, '') AS org_id, coalesce(user_id, '') AS user_id,
       coalesce(agent_id, '') AS agent_id, coalesce(model, '') AS model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, count(*) AS request_count,
       coalesce(sum(cost_nanos), 0) AS cost_nanos, sum(cost_nanos IS NULL) AS unpriced_requests,
       coalesce(sum(latency_ms), 0) AS latency_ms_sum, count(latency_ms) AS latency_count
FROM events
WHERE id > (SELECT rolled_up_to FROM ledger_settings WHERE id = 1) AND kind = 'consume'
GROUP BY 2, 3, 4, 5, 6;

-- The small rollup's keys are a subset of the big one's: its views regroup the big one's.
CREATE VIEW usage_agent_model_pending AS
SELECT usage_window, agent_id, model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(request_count) AS request_count, sum(cost_nanos) AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(latency_ms_sum) AS latency_ms_sum,
       sum(latency_count) AS latency_count
FROM usage_rollup_pending
GROUP BY usage_window, agent_id, model;

-- A consume: the thread's totals, the hold it settles (if any), and every 1,024th event the
-- fold of the pending consumes into the rollups (ledger_settings_fold_usage).
CREATE TRIGGER events_apply_consume AFTER INSERT ON events WHEN NEW.kind = 'consume'
BEGIN
    UPDATE thread_state
    SET prompt_tokens = prompt_tokens + NEW.prompt_tokens,
        completion_tokens = completion_tokens + NEW.completion_tokens,
        request_count = request_count + 1
    WHERE thread_id = NEW.thread_id;
    DELETE FROM holds WHERE NEW.reservation_id IS NOT NULL AND reservation_id = NEW.reservation_id;
    UPDATE ledger_settings SET rolled_up_to = NEW.id WHERE NEW.id % 1024 = 0 AND id = 1;
END;

-- Every other kind: each statement applies to one kind and does nothing for the others.
CREATE TRIGGER events_apply_other AFTER INSERT ON events WHEN NEW.kind <> 'consume'
BEGIN
    -- open: a new life at the default max; limit: a new max (opening the thread if needed).
    INSERT INTO thread_state (thread_id, max_tokens, opened_event_id, window_event_id)
    SELECT NEW.thread_id, NEW.max_tokens, NEW.id, NEW.id WHERE NEW.kind = 'open';
    INSERT INTO thread_state (thread_id, max_tokens, opened_event_id, window_event_id)
    SELECT NEW.thread_id, NEW.max_tokens, NEW.id, NEW.id WHERE NEW.kind = 'limit'
    ON CONFLICT (thread_id) DO UPDATE SET max_tokens = excluded.max_tokens;
    -- reset: a new window; cleanup: the life ends. Both re-arm the thresholds.
    UPDATE thread_state
    SET prompt_tokens = 0, completion_tokens = 0, request_count = 0, window_event_id = NEW.id
    WHERE NEW.kind = 'reset' AND thread_id = NEW.thread_id;
    DELETE FROM thread_state WHERE NEW.kind = 'cleanup' AND thread_id = NEW.thread_id;
    DELETE FROM thread_thresholds WHERE (NEW.kind = 'reset' OR NEW.kind = 'cleanup') AND thread_id = NEW.thread_id;
    DELETE FROM holds WHERE NEW.kind = 'cleanup' AND thread_id = NEW.thread_id;
    INSERT INTO thread_thresholds (thread_id, threshold_percent, event_id)
    SELECT NEW.thread_id, NEW.threshold_percent, NEW.id WHERE NEW.kind = 'threshold';
    UPDATE ledger_settings SET default_max_tokens = NEW.max_tokens WHERE NEW.kind = 'configure' AND id = 1;
    -- The fold (see ledger_settings_fold_usage); usage_reset starts a new window after it.
    UPDATE ledger_settings
    SET rolled_up_to = NEW.id, usage_window = usage_window + (NEW.kind = 'usage_reset')
    WHERE (NEW.id % 1024 = 0 OR NEW.kind = 'usage_reset') AND id = 1;
    -- reserve: a new hold; release and expire end one.
    INSERT INTO holds (reservation_id, thread_id, tokens, expires_at_us)
    SELECT NEW.id, NEW.thread_id, NEW.held_tokens, NEW.expires_at_us WHERE NEW.kind = 'reserve';
    DELETE FROM holds WHERE NEW.reservation_id IS NOT NULL AND reservation_id = NEW.reservation_id;
END;

-- The fold. An UPDATE of ledger_settings.rolled_up_to (from the triggers above: every event
-- whose id is a multiple of 1,024, and every usage_reset) first adds the pending consumes to
-- both rollups, reading the old rolled_up_to and usage window, and at most 1,023 consumes are
-- ever pending. It hangs on ledger_settings, not on events, because a trigger on events costs
-- every insert a sub-program even when its WHEN is false; an UPDATE that matches no row runs
-- no trigger at all.
CREATE TRIGGER ledger_settings_fold_usage BEFORE UPDATE OF rolled_up_to ON ledger_settings
BEGIN
    INSERT INTO usage_rollup (usage_window, day, org_id, user_id, agent_id, model, prompt_tokens, completion_tokens,
                              request_count, cost_nanos, unpriced_requests, latency_ms_sum, latency_count)
    SELECT * FROM usage_rollup_pending WHERE true
    ON CONFLICT (usage_window, day, org_id, user_id, agent_id, model) DO UPDATE SET
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        request_count = request_count + excluded.request_count,
        cost_nanos = cost_nanos + excluded.cost_nanos,
        unpriced_requests = unpriced_requests + excluded.unpriced_requests,
        latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum,
        latency_count = latency_count + excluded.latency_count;
    INSERT INTO usage_agent_model (usage_window, agent_id, model, prompt_tokens, completion_tokens, request_count,
                                   cost_nanos, unpriced_requests, latency_ms_sum, latency_count)
    SELECT * FROM usage_agent_model_pending WHERE true
    ON CONFLICT (usage_window, agent_id, model) DO UPDATE SET
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        request_count = request_count + excluded.request_count,
        cost_nanos = cost_nanos + excluded.cost_nanos,
        unpriced_requests = unpriced_requests + excluded.unpriced_requests,
        latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum,
        latency_count = latency_count + excluded.latency_count;
END;

-- usage_agent_model recomputed from the events alone.
CREATE VIEW usage_agent_model_from_events AS
SELECT usage_window, agent_id, model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(request_count) AS request_count, sum(cost_nanos) AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(latency_ms_sum) AS latency_ms_sum,
       sum(latency_count) AS latency_count
FROM usage_rollup_from_events
GROUP BY usage_window, agent_id, model;

-- The rollups as of the last commit: the folded rows plus the pending consumes, one row per key.
-- verify compares these with the *_from_events views. (usage_rollup_rows is the same without
-- the GROUP BY: views that group by other columns read it, and sort once instead of twice.)
CREATE VIEW usage_rollup_rows AS
SELECT * FROM usage_rollup UNION ALL SELECT * FROM usage_rollup_pending;

CREATE VIEW usage_rollup_live AS
SELECT usage_window, day, org_id, user_id, agent_id, model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(request_count) AS request_count, sum(cost_nanos) AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(latency_ms_sum) AS latency_ms_sum,
       sum(latency_count) AS latency_count
FROM usage_rollup_rows
GROUP BY usage_window, day, org_id, user_id, agent_id, model;

CREATE VIEW usage_agent_model_live AS
SELECT usage_window, agent_id, model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(request_count) AS request_count, sum(cost_nanos) AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(latency_ms_sum) AS latency_ms_sum,
       sum(latency_count) AS latency_count
FROM (SELECT * FROM usage_agent_model UNION ALL SELECT * FROM usage_agent_model_pending)
GROUP BY usage_window, agent_id, model;

-- Every usage and billing view of 0002, now over the folded rollups plus the pending consumes;
-- the all-time views that need no day, org or user read the small rollup.
DROP VIEW usage_totals;
CREATE VIEW usage_totals AS
SELECT
    coalesce(sum(prompt_tokens + completion_tokens), 0) AS total_tokens,
    coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
    coalesce(sum(completion_tokens), 0) AS completion_tokens,
    coalesce(sum(request_count), 0) AS request_count,
    coalesce(sum(cost_nanos), 0) AS cost_nanos,
    coalesce(sum(unpriced_requests), 0) AS unpriced_requests,
    CASE WHEN sum(latency_count) > 0 THEN 1.0 * sum(latency_ms_sum) / sum(latency_count) END AS avg_latency_ms
FROM usage_agent_model_live;

DROP VIEW usage_by_agent;
CREATE VIEW usage_by_agent AS
SELECT nullif(agent_id, '') AS agent_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_agent_model_live GROUP BY agent_id;

DROP VIEW usage_by_model;
CREATE VIEW usage_by_model AS
SELECT nullif(model, '') AS model,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_agent_model_live GROUP BY model;

-- Billing summary: cost per agent and model, all time (the reference's billing query).
CREATE VIEW billing_by_agent_model AS
SELECT nullif(agent_id, '') AS agent_id, nullif(model, '') AS model,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_agent_model_live GROUP BY agent_id, model;

DROP VIEW usage_by_org;
CREATE VIEW usage_by_org AS
SELECT nullif(org_id, '') AS org_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_rollup_rows GROUP BY org_id;

DROP VIEW usage_by_user;
CREATE VIEW usage_by_user AS
SELECT nullif(user_id, '') AS user_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_rollup_rows GROUP BY user_id;

-- Per UTC day, for charts.
DROP VIEW usage_by_day;
CREATE VIEW usage_by_day AS
SELECT date(day * 86400, 'unixepoch') AS day,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_rollup_rows GROUP BY usage_rollup_rows.day;

-- Billing: org x model x UTC day.
DROP VIEW billing_by_org_model_day;
CREATE VIEW billing_by_org_model_day AS
SELECT nullif(org_id, '') AS org_id, nullif(model, '') AS model, date(day * 86400, 'unixepoch') AS day,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_rollup_rows GROUP BY org_id, model, usage_rollup_rows.day;

-- verify's recomputations from 0001 and 0003, rewritten so that SQLite scans the events once
-- and looks threads up in the small per-thread table (an automatic index), instead of scanning
-- the events once per thread (which took verify past a minute at 1M events). CROSS JOIN fixes
-- the loop order; `+events.id` keeps the id comparison from being used as a rowid range.
DROP VIEW thread_thresholds_from_events;
DROP VIEW holds_from_events;
DROP VIEW thread_state_from_events;
DROP VIEW thread_life_events;

CREATE VIEW thread_life_events AS
WITH ends AS (
    SELECT thread_id, max(CASE WHEN kind = 'cleanup' THEN id ELSE 0 END) AS ended_after
    FROM events
    WHERE thread_id IS NOT NULL
    GROUP BY thread_id
)
SELECT events.*
FROM events CROSS JOIN ends ON ends.thread_id = events.thread_id
WHERE +events.id > ends.ended_after;

CREATE VIEW thread_state_from_events AS
WITH marks AS (
    SELECT
        thread_id,
        min(CASE WHEN kind = 'open' OR kind = 'limit' THEN id END) AS opened_event_id,
        max(CASE WHEN kind = 'open' OR kind = 'limit' THEN id END) AS last_limit_event_id,
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
),
spent AS (
    SELECT events.thread_id, sum(events.prompt_tokens) AS prompt_tokens,
           sum(events.completion_tokens) AS completion_tokens, count(*) AS request_count
    FROM events CROSS JOIN windows ON windows.thread_id = events.thread_id
    WHERE events.kind = 'consume' AND +events.id > windows.window_event_id
    GROUP BY events.thread_id
)
SELECT
    windows.thread_id,
    windows.max_tokens,
    coalesce(spent.prompt_tokens, 0) AS prompt_tokens,
    coalesce(spent.completion_tokens, 0) AS completion_tokens,
    coalesce(spent.request_count, 0) AS request_count,
    windows.opened_event_id,
    windows.window_event_id
FROM windows LEFT JOIN spent ON spent.thread_id = windows.thread_id;

CREATE VIEW thread_thresholds_from_events AS
SELECT events.thread_id, events.threshold_percent, events.id AS event_id
FROM events
CROSS JOIN thread_state_from_events AS state
    ON state.thread_id = events.thread_id AND +events.id > state.window_event_id
WHERE events.kind = 'threshold';

CREATE VIEW holds_from_events AS
SELECT reserve.id AS reservation_id, reserve.thread_id, reserve.held_tokens AS tokens, reserve.expires_at_us
FROM thread_life_events AS reserve
WHERE reserve.kind = 'reserve'
  AND NOT EXISTS (SELECT 1 FROM events AS ending WHERE ending.reservation_id = reserve.id);
