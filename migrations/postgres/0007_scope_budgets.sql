-- 0007 (PostgreSQL): scope budgets (issue 18), as SQLite's 0010 and 0011 (with 0014's split of
-- who applies a consume) keep them: budgets on 'global', 'org:ID', 'user:ID', 'agent:ID' and
-- 'model:NAME' per UTC calendar window ('none', 'day', ISO 'week', 'month'), set and removed
-- by events, with their thresholds (once per window) and their refusals (the first of a
-- window). docs/design.md "Scope budgets" says what they mean; docs/postgres.md how they lock.
--
-- Events admitted now (0001's CHECKs already had the kinds; events_check_insert refused them):
--   budget           scope, period, max_tokens and/or max_cost_nanos.
--   budget_remove    scope (refused when the scope has no budget).
--   scope_threshold  scope, window_start_us, threshold_percent, severity, caused_by, tokens_used,
--                    cost_used_nanos (the window's spend after the consume), max_tokens, max_cost_nanos.
--   refusal          with a scope: the scope's window (window_start_us) and the window's spend
--                    and maxes; a thread's refusal (no scope) stays as 0004 stores it, derived
--                    into nothing yet.
-- `reprice` stays refused (another migration adds it). The column rules SQLite writes as CHECKs
-- on those kinds are CHECKs here too; existing rows (none of those kinds) pass them.
--
-- Derived, in the insert's transaction, by the trigger events_accrue_scopes: scope_budgets (the
-- budget in force and the spend of the window holding the latest consume under the scope),
-- scope_thresholds (fired per window) and scope_refusals (the last refusal's window per scope).
-- Its name sorts before events_apply on purpose: PostgreSQL fires a table's row triggers of one
-- event in name order, so a consume locks its scope rows before its rollup rows, the order the
-- store takes them (thread row, scope rows in BudgetScope.candidates order, then the rollups):
-- writers of any kind never wait for each other in a cycle.
--
-- A budget event reads the window's spend so far from the rollups; it takes the usage-window
-- advisory lock exclusive (0x4244_4C47_0003, `PostgresSQL.usageWindowLockKey`, which every
-- thread write holds shared until it commits), so no consume is in flight while the spend is
-- summed: none is counted twice or missed. The store takes the same lock first (setBudget,
-- removeBudget); the trigger covers plain SQL writers.
--
-- The window arithmetic is SQLite's (and `BudgetPeriod`'s), as two functions; the view
-- budget_windows has SQLite's name and columns (PostgresSchemaParityTests). Types as 0001's
-- rule: figures bigint, times bigint UTC microseconds. The migrator runs this in one transaction.

-- The start of the window of `period` holding `us` (UTC microseconds, >= 0 as events' CHECK).
CREATE FUNCTION ledger_window_start(period text, us bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE period
    WHEN 'day' THEN us - us % 86400000000
    -- 1970-01-01 was a Thursday: day + 3 counts from a Monday (ISO weeks).
    WHEN 'week' THEN (us / 86400000000 - (us / 86400000000 + 3) % 7) * 86400000000
    -- A timestamp without time zone is read in UTC by extract(epoch …), whatever the session's TimeZone.
    WHEN 'month' THEN extract(epoch FROM date_trunc('month', (date '1970-01-01' + (us / 86400000000)::integer)::timestamp))::bigint
                      * 1000000
    ELSE 0 END;

-- The end (exclusive) of that window; NULL for 'none'.
CREATE FUNCTION ledger_window_end(period text, us bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE period
    WHEN 'day' THEN ledger_window_start(period, us) + 86400000000
    WHEN 'week' THEN ledger_window_start(period, us) + 604800000000
    WHEN 'month' THEN extract(epoch FROM date_trunc('month', (date '1970-01-01' + (us / 86400000000)::integer)::timestamp)
                                         + interval '1 month')::bigint * 1000000
    END;

ALTER TABLE events
    ADD CONSTRAINT events_scope_check CHECK (CASE WHEN kind = 'consume' THEN scope IS NULL
                                                  WHEN kind IN ('budget', 'budget_remove', 'scope_threshold')
                                                      THEN scope IS NOT NULL
                                                  WHEN kind = 'refusal' THEN true
                                                  ELSE scope IS NULL END),
    ADD CONSTRAINT events_budget_max_check CHECK (CASE WHEN kind = 'consume' THEN max_cost_nanos IS NULL
                                                       WHEN kind = 'budget'
                                                           THEN max_cost_nanos IS NOT NULL OR max_tokens IS NOT NULL
                                                       WHEN kind IN ('scope_threshold', 'refusal') THEN true
                                                       ELSE max_cost_nanos IS NULL END),
    ADD CONSTRAINT events_cost_used_check CHECK (CASE WHEN kind IN ('scope_threshold', 'refusal') THEN true
                                                      ELSE cost_used_nanos IS NULL END),
    ADD CONSTRAINT events_window_start_check CHECK (CASE WHEN kind = 'scope_threshold' THEN window_start_us IS NOT NULL
                                                         WHEN kind = 'refusal' THEN true
                                                         ELSE window_start_us IS NULL END);

-- The budgets in force, one row per scope: what the store locks (FOR UPDATE) to decide a call.
CREATE TABLE scope_budgets (
    scope text PRIMARY KEY,
    period text NOT NULL,
    -- NULL: no max in that unit.
    max_tokens bigint,
    max_cost_nanos bigint,
    -- The budget event that set the current values.
    set_event_id bigint NOT NULL,
    window_start_us bigint NOT NULL,
    spent_tokens bigint NOT NULL,
    spent_cost_nanos bigint NOT NULL,
    request_count bigint NOT NULL,
    unpriced_requests bigint NOT NULL
);

-- The thresholds each scope window has crossed (each fires once per window).
CREATE TABLE scope_thresholds (
    scope text NOT NULL,
    window_start_us bigint NOT NULL,
    threshold_percent integer NOT NULL,
    event_id bigint NOT NULL,
    PRIMARY KEY (scope, window_start_us, threshold_percent)
);

-- Locks the budget rows of `scopes` (a call's candidates) in the order of the array, for the
-- rest of the transaction, and returns them: the store's one way to lock scope rows. PostgreSQL
-- locks rows as they leave the sort, so the ORDER BY is the lock order
-- (https://www.postgresql.org/docs/current/sql-select.html#SQL-FOR-UPDATE-SHARE). SECURITY
-- DEFINER because FOR UPDATE needs the UPDATE privilege: the server's role keeps only SELECT on
-- the derived tables (PostgresSchemaTests runs the ledger as such a role).
CREATE FUNCTION ledger_lock_scope_budgets(scopes text[]) RETURNS SETOF scope_budgets
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path FROM CURRENT
AS $$
    SELECT * FROM scope_budgets WHERE scope = ANY (scopes) ORDER BY array_position(scopes, scope) FOR UPDATE
$$;

-- Per scope, the window of its last refusal: a window records its first refusal only.
CREATE TABLE scope_refusals (
    scope text PRIMARY KEY,
    window_start_us bigint NOT NULL,
    event_id bigint NOT NULL
);

-- 0004's checks with the scope kinds admitted, plus SQLite's checks of a scope's form, of a
-- budget_remove and of a refusal's window.
CREATE OR REPLACE FUNCTION events_check_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.kind = 'reprice' THEN
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
    IF NEW.scope IS NOT NULL
       AND NOT (NEW.scope = 'global'
                OR (left(NEW.scope, 4) = 'org:' AND length(NEW.scope) > 4)
                OR (left(NEW.scope, 5) = 'user:' AND length(NEW.scope) > 5)
                OR (left(NEW.scope, 6) = 'agent:' AND length(NEW.scope) > 6)
                OR (left(NEW.scope, 6) = 'model:' AND length(NEW.scope) > 6
                    AND substr(NEW.scope, 7) = ledger_model_name(substr(NEW.scope, 7)))) THEN
        RAISE EXCEPTION 'scope must be global, org:ID, user:ID, agent:ID or model:NAME (a normalised model name)'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.kind = 'budget_remove' AND NOT EXISTS (SELECT 1 FROM scope_budgets WHERE scope = NEW.scope) THEN
        RAISE EXCEPTION 'budget_remove for a scope that has no budget' USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.kind = 'refusal'
       AND ((NEW.scope IS NOT NULL AND NEW.window_start_us IS NULL)
            OR (NEW.scope IS NULL AND (NEW.window_start_us IS NOT NULL OR NEW.cost_used_nanos IS NOT NULL
                                       OR NEW.max_cost_nanos IS NOT NULL))) THEN
        RAISE EXCEPTION 'a scope refusal needs window_start_us; a thread refusal takes no window_start_us, cost_used_nanos or max_cost_nanos'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION events_accrue_scopes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    accrued text;
BEGIN
    CASE NEW.kind
    WHEN 'consume' THEN
        -- One primary-key UPDATE per scope, in BudgetScope.candidates order (global, org, user,
        -- agent, model): the lock order every writer of scope rows keeps. A scope without a
        -- budget has no row (nothing to do); 'org:' || NULL is NULL (no such scope). As SQLite's
        -- 0014: a later window starts at this consume; an earlier one (a clock stepped back)
        -- counts in the row's window, so no spend is dropped.
        FOREACH accrued IN ARRAY ARRAY['global', 'org:' || NEW.org_id, 'user:' || NEW.user_id,
                                       'agent:' || NEW.agent_id, 'model:' || ledger_model_name(NEW.model)] LOOP
            CONTINUE WHEN accrued IS NULL;
            UPDATE scope_budgets
            SET (spent_tokens, spent_cost_nanos, request_count, unpriced_requests, window_start_us) =
                (CASE WHEN ledger_window_start(period, NEW.timestamp_us) <= window_start_us THEN spent_tokens ELSE 0 END
                     + NEW.prompt_tokens + NEW.completion_tokens,
                 CASE WHEN ledger_window_start(period, NEW.timestamp_us) <= window_start_us THEN spent_cost_nanos ELSE 0 END
                     + coalesce(NEW.cost_nanos, 0),
                 CASE WHEN ledger_window_start(period, NEW.timestamp_us) <= window_start_us THEN request_count ELSE 0 END
                     + 1,
                 CASE WHEN ledger_window_start(period, NEW.timestamp_us) <= window_start_us THEN unpriced_requests ELSE 0 END
                     + (NEW.cost_nanos IS NULL)::integer,
                 greatest(ledger_window_start(period, NEW.timestamp_us), window_start_us))
            WHERE scope = accrued;
        END LOOP;
    WHEN 'budget' THEN
        PERFORM pg_advisory_xact_lock(72861104930819);
        INSERT INTO scope_budgets AS b (scope, period, max_tokens, max_cost_nanos, set_event_id, window_start_us,
                                        spent_tokens, spent_cost_nanos, request_count, unpriced_requests)
        VALUES (NEW.scope, NEW.period, NEW.max_tokens, NEW.max_cost_nanos, NEW.id,
                ledger_window_start(NEW.period, NEW.timestamp_us), 0, 0, 0, 0)
        ON CONFLICT (scope) DO UPDATE SET
            period = excluded.period, max_tokens = excluded.max_tokens, max_cost_nanos = excluded.max_cost_nanos,
            set_event_id = excluded.set_event_id, window_start_us = excluded.window_start_us;
        -- The window's spend so far: every consume of the window under the scope, from the
        -- rollups (kept by UTC day; every usage window and shard).
        UPDATE scope_budgets AS b
        SET (spent_tokens, spent_cost_nanos, request_count, unpriced_requests) =
            (SELECT coalesce(sum(r.prompt_tokens + r.completion_tokens), 0)::bigint, coalesce(sum(r.cost_nanos), 0)::bigint,
                    coalesce(sum(r.request_count), 0)::bigint, coalesce(sum(r.unpriced_requests), 0)::bigint
             FROM usage_rollup AS r
             WHERE r.day >= b.window_start_us / 86400000000
               AND (NEW.scope = 'global' OR NEW.scope = 'org:' || r.org_id OR NEW.scope = 'user:' || r.user_id
                    OR NEW.scope = 'agent:' || r.agent_id OR NEW.scope = 'model:' || r.model))
        WHERE b.scope = NEW.scope;
        -- The thresholds the window no longer reaches under the new figures are armed again (a
        -- max of 0 reaches none); in numeric, so that no product can overflow.
        DELETE FROM scope_thresholds AS t
        WHERE t.scope = NEW.scope
          AND NOT EXISTS (SELECT 1 FROM scope_budgets AS b
                          WHERE b.scope = NEW.scope AND b.window_start_us = t.window_start_us
                            AND ((b.max_tokens > 0
                                  AND b.spent_tokens::numeric * 100 >= t.threshold_percent::numeric * b.max_tokens)
                                 OR (b.max_cost_nanos > 0
                                     AND b.spent_cost_nanos::numeric * 100
                                         >= t.threshold_percent::numeric * b.max_cost_nanos)));
    WHEN 'budget_remove' THEN
        PERFORM pg_advisory_xact_lock(72861104930819);
        DELETE FROM scope_budgets WHERE scope = NEW.scope;
        DELETE FROM scope_thresholds WHERE scope = NEW.scope;
        DELETE FROM scope_refusals WHERE scope = NEW.scope;
    WHEN 'scope_threshold' THEN
        INSERT INTO scope_thresholds (scope, window_start_us, threshold_percent, event_id)
        VALUES (NEW.scope, NEW.window_start_us, NEW.threshold_percent, NEW.id);
    WHEN 'refusal' THEN
        IF NEW.scope IS NOT NULL THEN
            INSERT INTO scope_refusals (scope, window_start_us, event_id)
            VALUES (NEW.scope, NEW.window_start_us, NEW.id)
            ON CONFLICT (scope) DO UPDATE SET window_start_us = excluded.window_start_us, event_id = excluded.event_id;
        END IF;
    ELSE
        NULL;
    END CASE;
    RETURN NULL;
END
$$;
CREATE TRIGGER events_accrue_scopes AFTER INSERT ON events
FOR EACH ROW WHEN (NEW.kind IN ('consume', 'budget', 'budget_remove', 'scope_threshold', 'refusal'))
EXECUTE FUNCTION events_accrue_scopes();

-- SQLite's budget_windows: each budget's current window at the real time (ledger_now_us()):
-- what it has spent, what live holds under its scope keep back, what remains, and the percent
-- used (the higher of its two units). Sums as bigint, truth values 0/1, as 0001's views.
CREATE VIEW budget_windows AS
WITH now AS (SELECT ledger_now_us() AS us),
live AS (SELECT holds.* FROM holds, now WHERE holds.expires_at_us > now.us),
held (scope, tokens, cost_nanos) AS (
    SELECT 'global', sum(tokens), sum(cost_nanos) FROM live
    UNION ALL SELECT 'org:' || org_id, sum(tokens), sum(cost_nanos) FROM live WHERE org_id IS NOT NULL GROUP BY org_id
    UNION ALL SELECT 'user:' || user_id, sum(tokens), sum(cost_nanos) FROM live WHERE user_id IS NOT NULL GROUP BY user_id
    UNION ALL SELECT 'agent:' || agent_id, sum(tokens), sum(cost_nanos) FROM live WHERE agent_id IS NOT NULL
              GROUP BY agent_id
    UNION ALL SELECT 'model:' || model, sum(tokens), sum(cost_nanos) FROM live WHERE model IS NOT NULL GROUP BY model
),
figures AS (
    SELECT b.scope, b.period, ledger_window_start(b.period, now.us) AS start_us,
           ledger_window_end(b.period, now.us) AS end_us, b.max_tokens, b.max_cost_nanos,
           CASE WHEN b.window_start_us >= ledger_window_start(b.period, now.us) THEN b.spent_tokens ELSE 0 END
               AS spent_tokens,
           CASE WHEN b.window_start_us >= ledger_window_start(b.period, now.us) THEN b.spent_cost_nanos ELSE 0 END
               AS spent_cost_nanos,
           CASE WHEN b.window_start_us >= ledger_window_start(b.period, now.us) THEN b.request_count ELSE 0 END
               AS request_count,
           CASE WHEN b.window_start_us >= ledger_window_start(b.period, now.us) THEN b.unpriced_requests ELSE 0 END
               AS unpriced_requests,
           coalesce(h.tokens, 0)::bigint AS held_tokens, coalesce(h.cost_nanos, 0)::bigint AS held_cost_nanos
    FROM scope_budgets AS b CROSS JOIN now LEFT JOIN held AS h ON h.scope = b.scope
)
SELECT scope, period, start_us AS window_start_us, end_us AS window_end_us, max_tokens, max_cost_nanos,
       spent_tokens, spent_cost_nanos, request_count, unpriced_requests, held_tokens, held_cost_nanos,
       CASE WHEN max_tokens IS NOT NULL THEN greatest(0, max_tokens - spent_tokens - held_tokens) END
           AS remaining_tokens,
       CASE WHEN max_cost_nanos IS NOT NULL THEN greatest(0, max_cost_nanos - spent_cost_nanos - held_cost_nanos) END
           AS remaining_cost_nanos,
       round(greatest(CASE WHEN max_tokens IS NULL OR max_tokens = 0 THEN 0.0
                           ELSE 100.0 * spent_tokens / max_tokens END,
                      CASE WHEN max_cost_nanos IS NULL OR max_cost_nanos = 0 THEN 0.0
                           ELSE 100.0 * spent_cost_nanos / max_cost_nanos END), 1)::double precision AS percent_used,
       (coalesce(spent_tokens + held_tokens >= max_tokens, false)
        OR coalesce(spent_cost_nanos + held_cost_nanos >= max_cost_nanos, false))::integer AS is_exhausted
FROM figures;
