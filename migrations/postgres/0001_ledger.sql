-- 0001 (PostgreSQL): the ledger of migrations/schema.sql (SQLite, after its migration 10) as one
-- PostgreSQL migration, for the PostgreSQL store (Sources/BudgetLedgerPostgres, docs/postgres.md).
--
-- The same rule as on SQLite: `events` is the only source of truth, append-only (UPDATE,
-- DELETE and TRUNCATE are refused by triggers); the derived tables are kept by the trigger
-- `events_apply` in the transaction of each insert; the billing views have the names and
-- columns of SQLite's (PostgresSchemaParityTests proves it), so billing SQL runs on both.
--
-- Types, on purpose: every count, token figure, id and money amount is `bigint` (SQLite's
-- INTEGER is 64-bit; money stays integer nano-dollars, never float); text is `text`; times in
-- `events` stay `timestamp_us bigint` (UTC microseconds) so that the views' columns and the
-- domain's arithmetic are the same on both stores; `timestamptz` is used where PostgreSQL
-- itself stamps the time (schema_migrations.applied_at, made by the migrator). The views cast
-- their sums back to bigint (PostgreSQL's sum(bigint) is numeric) and their truth values to
-- integer 0/1 (SQLite has no boolean), so a query reads the same types from both.
--
-- Not here yet (the SQLite schema has them): scope budgets (scope_budgets, scope_thresholds,
-- budget_windows and the budget/budget_remove/scope_threshold/refusal/reprice events, refused
-- below), the legacy price rows of SQLite's 0008, and the *_from_events views of verify.
-- The all-time capacity sums of SQLite's 0006 are not kept: a bigint sum that would overflow
-- raises an error here instead of wrapping, and one counter row updated by every consume
-- would serialize all threads.

-- The one rule for model names (SQLite: lower(trim(model, char(32, 9, 10, 11, 12, 13)))):
-- ASCII whitespace trimmed, ASCII letters lowercased (SQLite's lower() folds nothing else).
CREATE FUNCTION ledger_model_name(name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN translate(btrim(name, E' \t\n\x0B\f\r'), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz');

-- UTC microseconds since 1970 now (the views' `now`, as SQLite's julianday('now') arithmetic).
CREATE FUNCTION ledger_now_us() RETURNS bigint
LANGUAGE sql VOLATILE
RETURN (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;

CREATE TABLE events (
    -- Strictly increasing, never reused, never given by a writer (GENERATED ALWAYS). Across
    -- concurrent transactions ids are not in commit order; within one thread they are, since
    -- every write to a thread holds its lock (thread_locks) until it commits.
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- UTC, microseconds since 1970-01-01T00:00:00Z (the writer's clock, as on SQLite).
    timestamp_us bigint NOT NULL CHECK (timestamp_us >= 0),
    kind text NOT NULL CHECK (kind IN ('consume', 'open', 'limit', 'reset', 'cleanup', 'threshold', 'configure',
                                       'usage_reset', 'reserve', 'release', 'expire', 'budget', 'budget_remove',
                                       'scope_threshold', 'refusal', 'reprice')),
    thread_id text CHECK ((thread_id IS NULL) = (kind IN ('configure', 'usage_reset', 'budget', 'budget_remove',
                                                         'scope_threshold'))),
    prompt_tokens bigint NOT NULL DEFAULT 0 CHECK (prompt_tokens BETWEEN 0 AND 1000000000),
    completion_tokens bigint NOT NULL DEFAULT 0 CHECK (completion_tokens BETWEEN 0 AND 1000000000),
    max_tokens bigint CHECK (CASE WHEN kind = 'consume' THEN max_tokens IS NULL
                                  WHEN kind IN ('open', 'limit', 'configure', 'threshold') THEN max_tokens IS NOT NULL
                                  WHEN kind IN ('budget', 'scope_threshold', 'refusal') THEN true
                                  ELSE max_tokens IS NULL END
                             AND max_tokens BETWEEN 0 AND 1000000000000000),
    threshold_percent integer CHECK ((threshold_percent IS NOT NULL) = (kind IN ('threshold', 'scope_threshold'))
                                     AND threshold_percent > 0),
    severity text CHECK ((severity IS NOT NULL) = (kind IN ('threshold', 'scope_threshold'))),
    -- threshold: the consume that crossed it.
    caused_by bigint REFERENCES events (id) CHECK (kind <> 'reprice' OR caused_by IS NOT NULL),
    -- threshold: the thread's total after the consume.
    tokens_used bigint CHECK ((tokens_used IS NOT NULL) = (kind IN ('threshold', 'scope_threshold', 'refusal'))),
    -- A retried consume or reserve carrying the same key records nothing new (unique below).
    idempotency_key text CHECK (idempotency_key IS NULL OR kind IN ('consume', 'reserve')),
    agent_id text,
    model text,
    provider text,
    latency_ms bigint CHECK (latency_ms BETWEEN 0 AND 604800000),
    -- A JSON object, kept as the client wrote it (text, as on SQLite); org_id and user_id copied below.
    metadata text CHECK (metadata IS NULL OR json_typeof(metadata::json) = 'object'),
    org_id text,
    user_id text,
    -- consume: the cost in nano-dollars (10^-9 USD), NULL when the model has no price.
    cost_nanos bigint CHECK (cost_nanos BETWEEN 0 AND 20000000000000000),
    -- reserve: the tokens held and when the hold stops counting (UTC microseconds).
    held_tokens bigint CHECK ((held_tokens IS NOT NULL) = (kind = 'reserve') AND held_tokens BETWEEN 1 AND 2000000000),
    expires_at_us bigint CHECK ((expires_at_us IS NOT NULL) = (kind = 'reserve')),
    -- release, expire: the reserve event they end; consume: the hold it settles, if any.
    reservation_id bigint REFERENCES events (id)
        CHECK (CASE WHEN kind IN ('release', 'expire') THEN reservation_id IS NOT NULL
                    ELSE kind = 'consume' OR reservation_id IS NULL END),
    scope text,
    period text CHECK ((period IS NOT NULL) = (kind = 'budget') AND period IN ('none', 'day', 'week', 'month')),
    max_cost_nanos bigint CHECK (max_cost_nanos BETWEEN 0 AND 1000000000000000000),
    cost_used_nanos bigint CHECK (cost_used_nanos >= 0),
    window_start_us bigint
);

-- Idempotency keys are unique in the database: two servers racing with one key cannot both record.
CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX events_reservation_end ON events (reservation_id, (kind = 'consume')) WHERE reservation_id IS NOT NULL;
CREATE INDEX events_caused_by ON events (caused_by) WHERE caused_by IS NOT NULL;
CREATE INDEX events_timestamp ON events (timestamp_us);
CREATE INDEX events_thread ON events (thread_id, id) WHERE thread_id IS NOT NULL;

-- One row per thread id ever written to: what writers lock (SELECT … FOR UPDATE) to serialize
-- a thread's check-and-consume across connections and servers, whether or not it is open.
-- Rows are only ever inserted (INSERT … ON CONFLICT DO NOTHING).
CREATE TABLE thread_locks (
    thread_id text PRIMARY KEY
);

CREATE TABLE thread_state (
    thread_id text PRIMARY KEY,
    max_tokens bigint NOT NULL,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    request_count bigint NOT NULL DEFAULT 0,
    -- The open (or limit) event that began this life.
    opened_event_id bigint NOT NULL,
    -- Consumption after this event counts: the opening event, or the last reset.
    window_event_id bigint NOT NULL
);

CREATE TABLE thread_thresholds (
    thread_id text NOT NULL,
    threshold_percent integer NOT NULL,
    event_id bigint NOT NULL,
    PRIMARY KEY (thread_id, threshold_percent)
);

CREATE TABLE holds (
    reservation_id bigint PRIMARY KEY,
    thread_id text NOT NULL,
    tokens bigint NOT NULL,
    expires_at_us bigint NOT NULL,
    agent_id text,
    -- Normalised (ledger_model_name), as scopes name models.
    model text,
    org_id text,
    user_id text,
    cost_nanos bigint
);
CREATE INDEX holds_thread ON holds (thread_id, expires_at_us);

CREATE TABLE ledger_settings (
    id integer PRIMARY KEY CHECK (id = 1),
    default_max_tokens bigint NOT NULL,
    usage_window bigint NOT NULL
);
INSERT INTO ledger_settings (id, default_max_tokens, usage_window) VALUES (1, 100000, 0);

CREATE TABLE model_prices (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- A normalised model name (exact), or a normalised literal followed by one trailing '*'.
    model_pattern text NOT NULL CHECK (
        length(model_pattern) > 0 AND model_pattern = ledger_model_name(model_pattern) AND model_pattern <> '*'
        AND strpos(left(model_pattern, -1), '*') = 0),
    prompt_nanos_per_token bigint NOT NULL CHECK (prompt_nanos_per_token BETWEEN 0 AND 10000000),
    completion_nanos_per_token bigint NOT NULL CHECK (completion_nanos_per_token BETWEEN 0 AND 10000000),
    -- UTC microseconds: the price holds for events at or after this time.
    effective_from_us bigint NOT NULL CHECK (effective_from_us >= 0),
    source text NOT NULL,
    -- Always 0 here: SQLite keeps its pre-0008 prefix rows with 1; kept for the same columns.
    legacy_prefix integer NOT NULL DEFAULT 0 CHECK (legacy_prefix = 0),
    UNIQUE (model_pattern, effective_from_us, legacy_prefix)
);
-- The reference price table a fresh SQLite ledger starts with (its 0002, as 0008 rewrote it:
-- each name exactly and its dated variants), in the same order.
INSERT INTO model_prices (model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source)
VALUES
    ('grok-4.1', 3000, 15000, 0, 'reference price table, 2026-11-29'),
    ('grok-4.1-20*', 3000, 15000, 0, 'reference price table, 2026-11-29'),
    ('grok-3', 3000, 15000, 0, 'reference price table, 2026-11-29'),
    ('grok-3-20*', 3000, 15000, 0, 'reference price table, 2026-11-29'),
    ('claude-opus-4', 15000, 75000, 0, 'reference price table, 2026-11-29'),
    ('claude-opus-4-20*', 15000, 75000, 0, 'reference price table, 2026-11-29'),
    ('claude-sonnet-4', 3000, 15000, 0, 'reference price table, 2026-11-29'),
    ('claude-sonnet-4-20*', 3000, 15000, 0, 'reference price table, 2026-11-29'),
    ('claude-sonnet-3-5', 3000, 15000, 0, 'reference price table, 2026-11-29'),
    ('claude-sonnet-3-5-20*', 3000, 15000, 0, 'reference price table, 2026-11-29'),
    ('gpt-4o', 2500, 10000, 0, 'reference price table, 2026-11-29'),
    ('gpt-4o-20*', 2500, 10000, 0, 'reference price table, 2026-11-29'),
    ('gpt-4o-mini', 150, 600, 0, 'reference price table, 2026-11-29'),
    ('gpt-4o-mini-20*', 150, 600, 0, 'reference price table, 2026-11-29'),
    ('o1', 15000, 60000, 0, 'reference price table, 2026-11-29'),
    ('o1-20*', 15000, 60000, 0, 'reference price table, 2026-11-29'),
    ('o3-mini', 1100, 4400, 0, 'reference price table, 2026-11-29'),
    ('o3-mini-20*', 1100, 4400, 0, 'reference price table, 2026-11-29');

-- Usage rolled up per consume, in the consume's transaction (SQLite folds every 1,024 events;
-- here there is no pending part, so the *_live views read these tables alone).
CREATE TABLE usage_rollup (
    usage_window bigint NOT NULL,
    -- Days since 1970-01-01, UTC.
    day bigint NOT NULL,
    org_id text NOT NULL,
    user_id text NOT NULL,
    agent_id text NOT NULL,
    model text NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    request_count bigint NOT NULL,
    cost_nanos bigint NOT NULL,
    unpriced_requests bigint NOT NULL,
    latency_ms_sum bigint NOT NULL,
    latency_count bigint NOT NULL,
    PRIMARY KEY (usage_window, day, org_id, user_id, agent_id, model)
);

CREATE TABLE usage_agent_model (
    usage_window bigint NOT NULL,
    agent_id text NOT NULL,
    model text NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    request_count bigint NOT NULL,
    cost_nanos bigint NOT NULL,
    unpriced_requests bigint NOT NULL,
    latency_ms_sum bigint NOT NULL,
    latency_count bigint NOT NULL,
    PRIMARY KEY (usage_window, agent_id, model)
);

-- Append-only: refused for every role, whatever its privileges (the server's role needs only
-- INSERT and SELECT on events; the triggers below run as the schema's owner).
CREATE FUNCTION ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER events_forbid_update BEFORE UPDATE OR DELETE ON events
FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER events_forbid_truncate BEFORE TRUNCATE ON events
FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER model_prices_forbid_update BEFORE UPDATE OR DELETE ON model_prices
FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER model_prices_forbid_truncate BEFORE TRUNCATE ON model_prices
FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- The checks SQLite's events_check_insert makes, for writers other than the store too.
CREATE FUNCTION events_check_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.kind IN ('budget', 'budget_remove', 'scope_threshold', 'refusal', 'reprice') THEN
        RAISE EXCEPTION 'events of kind % are not supported on PostgreSQL yet', NEW.kind
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF NEW.kind IN ('consume', 'reset', 'cleanup', 'threshold', 'reserve', 'release', 'expire')
       AND NOT EXISTS (SELECT 1 FROM thread_state WHERE thread_id = NEW.thread_id) THEN
        RAISE EXCEPTION 'event for a thread that is not open' USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.kind = 'open' AND EXISTS (SELECT 1 FROM thread_state WHERE thread_id = NEW.thread_id) THEN
        RAISE EXCEPTION 'open event for a thread that is already open' USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.reservation_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM events
                       WHERE id = NEW.reservation_id AND kind = 'reserve' AND thread_id = NEW.thread_id) THEN
        RAISE EXCEPTION 'reservation_id does not name a reserve event of this thread' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER events_check_insert BEFORE INSERT ON events
FOR EACH ROW EXECUTE FUNCTION events_check_insert();

-- The derived state, in the insert's transaction (SQLite: events_apply_consume, events_apply_other).
CREATE FUNCTION events_apply() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    current_window bigint;
BEGIN
    CASE NEW.kind
    WHEN 'consume' THEN
        UPDATE thread_state
        SET prompt_tokens = prompt_tokens + NEW.prompt_tokens,
            completion_tokens = completion_tokens + NEW.completion_tokens,
            request_count = request_count + 1
        WHERE thread_id = NEW.thread_id;
        SELECT usage_window INTO current_window FROM ledger_settings WHERE id = 1;
        -- Rollup rows in one fixed order (usage_rollup, then usage_agent_model), one row each.
        INSERT INTO usage_rollup AS r (usage_window, day, org_id, user_id, agent_id, model, prompt_tokens,
                                       completion_tokens, request_count, cost_nanos, unpriced_requests,
                                       latency_ms_sum, latency_count)
        VALUES (current_window, NEW.timestamp_us / 86400000000, coalesce(NEW.org_id, ''), coalesce(NEW.user_id, ''),
                coalesce(NEW.agent_id, ''), coalesce(ledger_model_name(NEW.model), ''), NEW.prompt_tokens,
                NEW.completion_tokens, 1, coalesce(NEW.cost_nanos, 0), (NEW.cost_nanos IS NULL)::integer,
                coalesce(NEW.latency_ms, 0), (NEW.latency_ms IS NOT NULL)::integer)
        ON CONFLICT (usage_window, day, org_id, user_id, agent_id, model) DO UPDATE SET
            prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = r.completion_tokens + excluded.completion_tokens,
            request_count = r.request_count + 1,
            cost_nanos = r.cost_nanos + excluded.cost_nanos,
            unpriced_requests = r.unpriced_requests + excluded.unpriced_requests,
            latency_ms_sum = r.latency_ms_sum + excluded.latency_ms_sum,
            latency_count = r.latency_count + excluded.latency_count;
        INSERT INTO usage_agent_model AS r (usage_window, agent_id, model, prompt_tokens, completion_tokens,
                                            request_count, cost_nanos, unpriced_requests, latency_ms_sum, latency_count)
        VALUES (current_window, coalesce(NEW.agent_id, ''), coalesce(ledger_model_name(NEW.model), ''),
                NEW.prompt_tokens, NEW.completion_tokens, 1, coalesce(NEW.cost_nanos, 0),
                (NEW.cost_nanos IS NULL)::integer, coalesce(NEW.latency_ms, 0), (NEW.latency_ms IS NOT NULL)::integer)
        ON CONFLICT (usage_window, agent_id, model) DO UPDATE SET
            prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = r.completion_tokens + excluded.completion_tokens,
            request_count = r.request_count + 1,
            cost_nanos = r.cost_nanos + excluded.cost_nanos,
            unpriced_requests = r.unpriced_requests + excluded.unpriced_requests,
            latency_ms_sum = r.latency_ms_sum + excluded.latency_ms_sum,
            latency_count = r.latency_count + excluded.latency_count;
        IF NEW.reservation_id IS NOT NULL THEN
            DELETE FROM holds WHERE reservation_id = NEW.reservation_id;
        END IF;
    WHEN 'open' THEN
        INSERT INTO thread_state (thread_id, max_tokens, opened_event_id, window_event_id)
        VALUES (NEW.thread_id, NEW.max_tokens, NEW.id, NEW.id);
    WHEN 'limit' THEN
        INSERT INTO thread_state (thread_id, max_tokens, opened_event_id, window_event_id)
        VALUES (NEW.thread_id, NEW.max_tokens, NEW.id, NEW.id)
        ON CONFLICT (thread_id) DO UPDATE SET max_tokens = excluded.max_tokens;
        -- The thresholds the thread no longer reaches under the new max are armed again (0007);
        -- in numeric, so that no product can overflow.
        DELETE FROM thread_thresholds AS t
        WHERE t.thread_id = NEW.thread_id
          AND (NEW.max_tokens = 0
               OR (SELECT (s.prompt_tokens + s.completion_tokens)::numeric * 100 FROM thread_state AS s
                   WHERE s.thread_id = NEW.thread_id) < t.threshold_percent::numeric * NEW.max_tokens);
    WHEN 'reset' THEN
        UPDATE thread_state
        SET prompt_tokens = 0, completion_tokens = 0, request_count = 0, window_event_id = NEW.id
        WHERE thread_id = NEW.thread_id;
        DELETE FROM thread_thresholds WHERE thread_id = NEW.thread_id;
    WHEN 'cleanup' THEN
        DELETE FROM thread_state WHERE thread_id = NEW.thread_id;
        DELETE FROM thread_thresholds WHERE thread_id = NEW.thread_id;
        DELETE FROM holds WHERE thread_id = NEW.thread_id;
    WHEN 'threshold' THEN
        INSERT INTO thread_thresholds (thread_id, threshold_percent, event_id)
        VALUES (NEW.thread_id, NEW.threshold_percent, NEW.id);
    WHEN 'configure' THEN
        UPDATE ledger_settings SET default_max_tokens = NEW.max_tokens WHERE id = 1;
    WHEN 'usage_reset' THEN
        UPDATE ledger_settings SET usage_window = usage_window + 1 WHERE id = 1;
    WHEN 'reserve' THEN
        INSERT INTO holds (reservation_id, thread_id, tokens, expires_at_us, agent_id, model, org_id, user_id, cost_nanos)
        VALUES (NEW.id, NEW.thread_id, NEW.held_tokens, NEW.expires_at_us, NEW.agent_id, ledger_model_name(NEW.model),
                NEW.org_id, NEW.user_id, NEW.cost_nanos);
    WHEN 'release', 'expire' THEN
        DELETE FROM holds WHERE reservation_id = NEW.reservation_id;
    ELSE
        NULL;
    END CASE;
    RETURN NULL;
END
$$;
CREATE TRIGGER events_apply AFTER INSERT ON events
FOR EACH ROW EXECUTE FUNCTION events_apply();

-- The views: SQLite's names and columns (PostgresSchemaParityTests), sums as bigint, truth values as 0/1.

CREATE VIEW usage_rollup_rows AS
SELECT usage_window, day, org_id, user_id, agent_id, model, prompt_tokens, completion_tokens, request_count,
       cost_nanos, unpriced_requests, latency_ms_sum, latency_count
FROM usage_rollup;

CREATE VIEW usage_rollup_live AS
SELECT usage_window, day, org_id, user_id, agent_id, model,
       sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
       sum(request_count)::bigint AS request_count, sum(cost_nanos)::bigint AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, sum(latency_ms_sum)::bigint AS latency_ms_sum,
       sum(latency_count)::bigint AS latency_count
FROM usage_rollup_rows
GROUP BY usage_window, day, org_id, user_id, agent_id, model;

CREATE VIEW usage_agent_model_live AS
SELECT usage_window, agent_id, model,
       sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
       sum(request_count)::bigint AS request_count, sum(cost_nanos)::bigint AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, sum(latency_ms_sum)::bigint AS latency_ms_sum,
       sum(latency_count)::bigint AS latency_count
FROM usage_agent_model
GROUP BY usage_window, agent_id, model;

CREATE VIEW billing_by_agent_model AS
SELECT nullif(agent_id, '') AS agent_id, nullif(model, '') AS model,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete
FROM usage_agent_model_live GROUP BY agent_id, model;

CREATE VIEW billing_by_org_model_day AS
SELECT nullif(org_id, '') AS org_id, nullif(model, '') AS model,
       to_char(date '1970-01-01' + day::integer, 'YYYY-MM-DD') AS day,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete
FROM usage_rollup_rows AS r GROUP BY r.org_id, r.model, r.day;

CREATE VIEW usage_by_agent AS
SELECT nullif(agent_id, '') AS agent_id,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete
FROM usage_agent_model_live GROUP BY agent_id;

CREATE VIEW usage_by_model AS
SELECT nullif(model, '') AS model,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete
FROM usage_agent_model_live GROUP BY model;

CREATE VIEW usage_by_org AS
SELECT nullif(org_id, '') AS org_id,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete
FROM usage_rollup_rows GROUP BY org_id;

CREATE VIEW usage_by_user AS
SELECT nullif(user_id, '') AS user_id,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete
FROM usage_rollup_rows GROUP BY user_id;

CREATE VIEW usage_by_day AS
SELECT to_char(date '1970-01-01' + r.day::integer, 'YYYY-MM-DD') AS day,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete
FROM usage_rollup_rows AS r GROUP BY r.day;

CREATE VIEW usage_by_thread AS
SELECT thread_id,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, count(*) AS request_count,
       sum(cost_nanos)::bigint AS cost_nanos, count(*) FILTER (WHERE cost_nanos IS NULL) AS unpriced_requests,
       (count(*) FILTER (WHERE cost_nanos IS NULL) = 0)::integer AS cost_complete
FROM events WHERE kind = 'consume' GROUP BY thread_id;

CREATE VIEW usage_totals AS
SELECT
    coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint AS total_tokens,
    coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
    coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
    coalesce(sum(request_count), 0)::bigint AS request_count,
    CASE WHEN coalesce(sum(request_count), 0) > 0 AND sum(unpriced_requests) = sum(request_count) THEN NULL
         ELSE coalesce(sum(cost_nanos), 0)::bigint END AS cost_nanos,
    coalesce(sum(unpriced_requests), 0)::bigint AS unpriced_requests,
    (coalesce(sum(unpriced_requests), 0) = 0)::integer AS cost_complete,
    CASE WHEN sum(latency_count) > 0 THEN (1.0 * sum(latency_ms_sum) / sum(latency_count))::double precision
    END AS avg_latency_ms
FROM usage_agent_model_live;

CREATE VIEW thread_budgets AS
SELECT
    thread_id,
    max_tokens,
    prompt_tokens,
    completion_tokens,
    prompt_tokens + completion_tokens AS total_tokens,
    greatest(0, max_tokens - (prompt_tokens + completion_tokens)) AS remaining,
    request_count,
    CASE WHEN max_tokens = 0 THEN 0.0::double precision
         ELSE round(100.0 * (prompt_tokens + completion_tokens) / max_tokens, 1)::double precision END AS percent_used,
    ((prompt_tokens + completion_tokens) >= max_tokens)::integer AS is_exhausted
FROM thread_state;

CREATE VIEW live_holds AS
SELECT reservation_id, thread_id, tokens, expires_at_us
FROM holds
WHERE expires_at_us > ledger_now_us();

CREATE VIEW thread_budgets_with_holds AS
SELECT budgets.*,
       coalesce(held.tokens, 0)::bigint AS held_tokens,
       greatest(0, budgets.max_tokens - budgets.total_tokens - coalesce(held.tokens, 0))::bigint AS remaining_after_holds
FROM thread_budgets AS budgets
LEFT JOIN (SELECT thread_id, sum(tokens) AS tokens FROM live_holds GROUP BY thread_id) AS held
    ON held.thread_id = budgets.thread_id;
