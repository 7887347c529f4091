-- 0014: a consume's derived state written by the ledger's own writer, and the other kinds'
-- triggers out of a consume's way (issue 21, first step).
--
-- Half of a write's CPU was its triggers (docs/performance.md, "Where a write's CPU goes"): the
-- consume trigger ran nine statements per row (the thread, the all-time sums, five scope
-- budgets, the hold it settles, the fold) inside a trigger frame that SQLite allocates and
-- zeroes on every insert, whether or not a statement has anything to do.
--
-- The ledger's writer now applies a consume's derived state itself, in the same transaction and
-- right after the insert, with only the statements the call needs (Ledger+Consume's
-- `applyDerivedState`: the thread and the all-time sums always; the scope budgets only when a
-- budget applies; the hold only for a settle; the fold at every 1,024th event). Every other
-- writer still goes through the same statements in SQL:
--   - `events_apply_consume` keeps its name and its `WHEN` for consumes, and steps aside only for
--     a connection whose `connection_role()` is 'ledger writer' (LedgerSQLite defines the
--     function on every connection it opens: NULL unless the opener names a role, and only
--     `Ledger` names this one). Its body is one INSERT into the view `consumes_to_apply`, so the
--     frame SQLite zeroes for it on every consume is a small one.
--   - `consumes_to_apply_insert`, an INSTEAD OF trigger on that view, holds the former body of
--     `events_apply_consume`, unchanged (the same statements, in the same order, on the same
--     values): a plain-SQL writer's consume updates the derived tables exactly as before.
--   - A connection that does not define `connection_role()` at all (another program, the
--     sqlite3 shell) is refused outright: SQLite cannot prepare an insert into events there
--     ("no such function: connection_role"). It cannot record anything the derived tables miss.
-- So the derived tables never silently disagree with the events; verify recomputes them from
-- the events as before (`Recomputation`).
--
-- The view shows no rows: it exists for its trigger. Its columns are the consume's columns the
-- body reads.

DROP TRIGGER events_apply_consume;

CREATE VIEW consumes_to_apply AS
SELECT id, timestamp_us, thread_id, prompt_tokens, completion_tokens, agent_id, model, latency_ms, org_id, user_id,
       cost_nanos, reservation_id
FROM events WHERE 0;

CREATE TRIGGER consumes_to_apply_insert INSTEAD OF INSERT ON consumes_to_apply
BEGIN
    UPDATE thread_state
    SET prompt_tokens = prompt_tokens + NEW.prompt_tokens,
        completion_tokens = completion_tokens + NEW.completion_tokens,
        request_count = request_count + 1
    WHERE thread_id = NEW.thread_id;
    UPDATE ledger_settings
    SET all_time_prompt_tokens =
            CASE WHEN all_time_prompt_tokens <= 4000000000000000000 - NEW.prompt_tokens
                 THEN all_time_prompt_tokens + NEW.prompt_tokens
                 ELSE RAISE(ABORT, 'ledger capacity reached: the all-time prompt_tokens would pass 4000000000000000000') END,
        all_time_completion_tokens =
            CASE WHEN all_time_completion_tokens <= 4000000000000000000 - NEW.completion_tokens
                 THEN all_time_completion_tokens + NEW.completion_tokens
                 ELSE RAISE(ABORT, 'ledger capacity reached: the all-time completion_tokens would pass 4000000000000000000') END,
        all_time_cost_nanos =
            CASE WHEN all_time_cost_nanos <= 4000000000000000000 - coalesce(NEW.cost_nanos, 0)
                 THEN all_time_cost_nanos + coalesce(NEW.cost_nanos, 0)
                 ELSE RAISE(ABORT, 'ledger capacity reached: the all-time cost_nanos would pass 4000000000000000000') END,
        all_time_latency_ms =
            CASE WHEN all_time_latency_ms <= 4000000000000000000 - coalesce(NEW.latency_ms, 0)
                 THEN all_time_latency_ms + coalesce(NEW.latency_ms, 0)
                 ELSE RAISE(ABORT, 'ledger capacity reached: the all-time latency_ms would pass 4000000000000000000') END
    WHERE id = 1;
    -- Each scope sum is a part of the all-time sums above, so it stays under their capacity.
    -- One statement per scope the consume can fall under, each a primary-key lookup: measured
    -- in the sqlite3 shell, 200,000 consumes cost 1.1 µs more each with no budget set (3.5 with
    -- three), where one UPDATE … FROM over the five candidates cost 28 µs more.
    UPDATE scope_budgets
    SET (spent_tokens, spent_cost_nanos, request_count, unpriced_requests, window_start_us) =
        (SELECT (applicable.start <= window_start_us) * spent_tokens + NEW.prompt_tokens + NEW.completion_tokens,
                (applicable.start <= window_start_us) * spent_cost_nanos + coalesce(NEW.cost_nanos, 0),
                (applicable.start <= window_start_us) * request_count + 1,
                (applicable.start <= window_start_us) * unpriced_requests + (NEW.cost_nanos IS NULL),
                max(applicable.start, window_start_us)
         FROM (SELECT CASE period
                     WHEN 'day' THEN NEW.timestamp_us - NEW.timestamp_us % 86400000000
                     WHEN 'week' THEN (NEW.timestamp_us / 86400000000 - (NEW.timestamp_us / 86400000000 + 3) % 7)
                                      * 86400000000
                     WHEN 'month' THEN CAST(strftime('%s', NEW.timestamp_us / 1000000, 'unixepoch', 'start of month')
                                            AS INTEGER) * 1000000
                     ELSE 0 END AS start) AS applicable)
    WHERE scope = 'global';
    UPDATE scope_budgets
    SET (spent_tokens, spent_cost_nanos, request_count, unpriced_requests, window_start_us) =
        (SELECT (applicable.start <= window_start_us) * spent_tokens + NEW.prompt_tokens + NEW.completion_tokens,
                (applicable.start <= window_start_us) * spent_cost_nanos + coalesce(NEW.cost_nanos, 0),
                (applicable.start <= window_start_us) * request_count + 1,
                (applicable.start <= window_start_us) * unpriced_requests + (NEW.cost_nanos IS NULL),
                max(applicable.start, window_start_us)
         FROM (SELECT CASE period
                     WHEN 'day' THEN NEW.timestamp_us - NEW.timestamp_us % 86400000000
                     WHEN 'week' THEN (NEW.timestamp_us / 86400000000 - (NEW.timestamp_us / 86400000000 + 3) % 7)
                                      * 86400000000
                     WHEN 'month' THEN CAST(strftime('%s', NEW.timestamp_us / 1000000, 'unixepoch', 'start of month')
                                            AS INTEGER) * 1000000
                     ELSE 0 END AS start) AS applicable)
    WHERE scope = 'org:' || NEW.org_id;
    UPDATE scope_budgets
    SET (spent_tokens, spent_cost_nanos, request_count, unpriced_requests, window_start_us) =
        (SELECT (applicable.start <= window_start_us) * spent_tokens + NEW.prompt_tokens + NEW.completion_tokens,
                (applicable.start <= window_start_us) * spent_cost_nanos + coalesce(NEW.cost_nanos, 0),
                (applicable.start <= window_start_us) * request_count + 1,
                (applicable.start <= window_start_us) * unpriced_requests + (NEW.cost_nanos IS NULL),
                max(applicable.start, window_start_us)
         FROM (SELECT CASE period
                     WHEN 'day' THEN NEW.timestamp_us - NEW.timestamp_us % 86400000000
                     WHEN 'week' THEN (NEW.timestamp_us / 86400000000 - (NEW.timestamp_us / 86400000000 + 3) % 7)
                                      * 86400000000
                     WHEN 'month' THEN CAST(strftime('%s', NEW.timestamp_us / 1000000, 'unixepoch', 'start of month')
                                            AS INTEGER) * 1000000
                     ELSE 0 END AS start) AS applicable)
    WHERE scope = 'user:' || NEW.user_id;
    UPDATE scope_budgets
    SET (spent_tokens, spent_cost_nanos, request_count, unpriced_requests, window_start_us) =
        (SELECT (applicable.start <= window_start_us) * spent_tokens + NEW.prompt_tokens + NEW.completion_tokens,
                (applicable.start <= window_start_us) * spent_cost_nanos + coalesce(NEW.cost_nanos, 0),
                (applicable.start <= window_start_us) * request_count + 1,
                (applicable.start <= window_start_us) * unpriced_requests + (NEW.cost_nanos IS NULL),
                max(applicable.start, window_start_us)
         FROM (SELECT CASE period
                     WHEN 'day' THEN NEW.timestamp_us - NEW.timestamp_us % 86400000000
                     WHEN 'week' THEN (NEW.timestamp_us / 86400000000 - (NEW.timestamp_us / 86400000000 + 3) % 7)
                                      * 86400000000
                     WHEN 'month' THEN CAST(strftime('%s', NEW.timestamp_us / 1000000, 'unixepoch', 'start of month')
                                            AS INTEGER) * 1000000
                     ELSE 0 END AS start) AS applicable)
    WHERE scope = 'agent:' || NEW.agent_id;
    UPDATE scope_budgets
    SET (spent_tokens, spent_cost_nanos, request_count, unpriced_requests, window_start_us) =
        (SELECT (applicable.start <= window_start_us) * spent_tokens + NEW.prompt_tokens + NEW.completion_tokens,
                (applicable.start <= window_start_us) * spent_cost_nanos + coalesce(NEW.cost_nanos, 0),
                (applicable.start <= window_start_us) * request_count + 1,
                (applicable.start <= window_start_us) * unpriced_requests + (NEW.cost_nanos IS NULL),
                max(applicable.start, window_start_us)
         FROM (SELECT CASE period
                     WHEN 'day' THEN NEW.timestamp_us - NEW.timestamp_us % 86400000000
                     WHEN 'week' THEN (NEW.timestamp_us / 86400000000 - (NEW.timestamp_us / 86400000000 + 3) % 7)
                                      * 86400000000
                     WHEN 'month' THEN CAST(strftime('%s', NEW.timestamp_us / 1000000, 'unixepoch', 'start of month')
                                            AS INTEGER) * 1000000
                     ELSE 0 END AS start) AS applicable)
    WHERE scope = 'model:' || lower(trim(NEW.model, char(32, 9, 10, 11, 12, 13)));
    DELETE FROM holds WHERE NEW.reservation_id IS NOT NULL AND reservation_id = NEW.reservation_id;
    UPDATE ledger_settings SET rolled_up_to = NEW.id WHERE NEW.id % 1024 = 0 AND id = 1;
END;

CREATE TRIGGER events_apply_consume AFTER INSERT ON events
WHEN NEW.kind = 'consume' AND connection_role() IS NOT 'ledger writer'
BEGIN
    INSERT INTO consumes_to_apply (id, timestamp_us, thread_id, prompt_tokens, completion_tokens, agent_id, model,
                                   latency_ms, org_id, user_id, cost_nanos, reservation_id)
    VALUES (NEW.id, NEW.timestamp_us, NEW.thread_id, NEW.prompt_tokens, NEW.completion_tokens, NEW.agent_id, NEW.model,
            NEW.latency_ms, NEW.org_id, NEW.user_id, NEW.cost_nanos, NEW.reservation_id);
END;

-- Part 2: the triggers of the other kinds, out of a consume's way.
--
-- The same cost, for the triggers a consume never fires: SQLite allocates and zeroes a frame
-- for every trigger on events on every insert, sized for the trigger's whole body, before its
-- WHEN can say no (0012's note; docs/performance.md). Five such triggers had large bodies:
-- events_apply_other, events_apply_refusal and events_apply_scope after the insert,
-- events_check_refusal and events_check_reprice before it. Each keeps its name, WHEN and body,
-- unchanged, as an INSTEAD OF trigger on a view with every column of events (events_to_apply,
-- events_to_check; they show no rows). One small trigger on events forwards the row to each
-- view, only for the kinds that use it, so a consume allocates two small frames instead of
-- five large ones. Every writer goes through them, the ledger's included.
--
-- The forwarders are created after the triggers they replace were, so they run in the same
-- order relative to events_check_insert (a refusal's or reprice's own check first), and the
-- three INSTEAD OF triggers on events_to_apply are created in their former order.

CREATE VIEW events_to_check AS
SELECT id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens, threshold_percent,
       severity, caused_by, tokens_used, idempotency_key, agent_id, model, provider, latency_ms, metadata,
       org_id, user_id, cost_nanos, held_tokens, expires_at_us, reservation_id, scope, period, max_cost_nanos,
       cost_used_nanos, window_start_us
FROM events WHERE 0;

CREATE VIEW events_to_apply AS
SELECT id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens, threshold_percent,
       severity, caused_by, tokens_used, idempotency_key, agent_id, model, provider, latency_ms, metadata,
       org_id, user_id, cost_nanos, held_tokens, expires_at_us, reservation_id, scope, period, max_cost_nanos,
       cost_used_nanos, window_start_us
FROM events WHERE 0;

DROP TRIGGER events_check_refusal;
CREATE TRIGGER events_check_refusal INSTEAD OF INSERT ON events_to_check WHEN NEW.kind = 'refusal'
BEGIN
    SELECT RAISE(ABORT, 'a scope refusal needs window_start_us; a thread refusal takes no window_start_us, cost_used_nanos or max_cost_nanos')
    WHERE (NEW.scope IS NOT NULL AND NEW.window_start_us IS NULL)
       OR (NEW.scope IS NULL AND (NEW.window_start_us IS NOT NULL OR NEW.cost_used_nanos IS NOT NULL
                                  OR NEW.max_cost_nanos IS NOT NULL));
END;

DROP TRIGGER events_check_reprice;
CREATE TRIGGER events_check_reprice INSTEAD OF INSERT ON events_to_check WHEN NEW.kind = 'reprice'
BEGIN
    SELECT RAISE(ABORT, 'reprice: cost_nanos is required, and caused_by must name a consume recorded unpriced (cost_nanos NULL)')
    WHERE NEW.cost_nanos IS NULL
       OR NOT EXISTS (SELECT 1 FROM events WHERE id = NEW.caused_by AND kind = 'consume' AND cost_nanos IS NULL);
    SELECT RAISE(ABORT, 'reprice: the consume is already repriced (each consume is repriced at most once)')
    WHERE EXISTS (SELECT 1 FROM events WHERE caused_by = NEW.caused_by AND kind = 'reprice');
    SELECT RAISE(ABORT, 'reprice: carries only thread_id, caused_by and cost_nanos (no tokens, latency or usage fields)')
    WHERE NEW.prompt_tokens <> 0 OR NEW.completion_tokens <> 0 OR NEW.latency_ms IS NOT NULL;
    UPDATE ledger_settings
    SET all_time_cost_nanos =
            CASE WHEN all_time_cost_nanos <= 4000000000000000000 - NEW.cost_nanos
                 THEN all_time_cost_nanos + NEW.cost_nanos
                 ELSE RAISE(ABORT, 'ledger capacity reached: the all-time cost_nanos would pass 4000000000000000000') END
    WHERE id = 1;
    -- The consume's folded rows, when the fold has passed it (before this event is inserted, so
    -- a fold that this event starts reads it through the pending views instead).
    UPDATE usage_rollup
    SET cost_nanos = cost_nanos + NEW.cost_nanos, unpriced_requests = unpriced_requests - 1,
        unpriced_tokens = unpriced_tokens
            - (SELECT min(c.prompt_tokens, 1000000000) + min(c.completion_tokens, 1000000000)
               FROM events AS c WHERE c.id = NEW.caused_by)
    WHERE (usage_window, day, org_id, user_id, agent_id, model) = (
        SELECT (SELECT count(*) FROM events AS r WHERE r.kind = 'usage_reset' AND r.id < c.id),
               c.timestamp_us / 86400000000, coalesce(c.org_id, ''), coalesce(c.user_id, ''), coalesce(c.agent_id, ''),
               coalesce(lower(trim(c.model, char(32, 9, 10, 11, 12, 13))), '')
        FROM events AS c
        WHERE c.id = NEW.caused_by AND c.id <= (SELECT rolled_up_to FROM ledger_settings WHERE id = 1));
    UPDATE usage_agent_model
    SET cost_nanos = cost_nanos + NEW.cost_nanos, unpriced_requests = unpriced_requests - 1,
        unpriced_tokens = unpriced_tokens
            - (SELECT min(c.prompt_tokens, 1000000000) + min(c.completion_tokens, 1000000000)
               FROM events AS c WHERE c.id = NEW.caused_by)
    WHERE (usage_window, agent_id, model) = (
        SELECT (SELECT count(*) FROM events AS r WHERE r.kind = 'usage_reset' AND r.id < c.id),
               coalesce(c.agent_id, ''), coalesce(lower(trim(c.model, char(32, 9, 10, 11, 12, 13))), '')
        FROM events AS c
        WHERE c.id = NEW.caused_by AND c.id <= (SELECT rolled_up_to FROM ledger_settings WHERE id = 1));
END;

DROP TRIGGER events_apply_other;
CREATE TRIGGER events_apply_other INSTEAD OF INSERT ON events_to_apply WHEN NEW.kind <> 'consume'
BEGIN
    -- open: a new life at the default max; limit: a new max (opening the thread if needed).
    INSERT INTO thread_state (thread_id, max_tokens, opened_event_id, window_event_id)
    SELECT NEW.thread_id, NEW.max_tokens, NEW.id, NEW.id WHERE NEW.kind = 'open';
    INSERT INTO thread_state (thread_id, max_tokens, opened_event_id, window_event_id)
    SELECT NEW.thread_id, NEW.max_tokens, NEW.id, NEW.id WHERE NEW.kind = 'limit'
    ON CONFLICT (thread_id) DO UPDATE SET max_tokens = excluded.max_tokens;
    -- limit: the thresholds the thread no longer reaches under the new max are armed again.
    DELETE FROM thread_thresholds
    WHERE NEW.kind = 'limit' AND thread_id = NEW.thread_id
      AND (NEW.max_tokens = 0
           OR (SELECT (s.prompt_tokens + s.completion_tokens) * 100 FROM thread_state AS s WHERE s.thread_id = NEW.thread_id)
              < threshold_percent * NEW.max_tokens);
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
    INSERT INTO holds (reservation_id, thread_id, tokens, expires_at_us, agent_id, model, org_id, user_id, cost_nanos)
    SELECT NEW.id, NEW.thread_id, NEW.held_tokens, NEW.expires_at_us, NEW.agent_id,
           lower(trim(NEW.model, char(32, 9, 10, 11, 12, 13))), NEW.org_id, NEW.user_id, NEW.cost_nanos
    WHERE NEW.kind = 'reserve';
    DELETE FROM holds WHERE NEW.reservation_id IS NOT NULL AND reservation_id = NEW.reservation_id;
END;

DROP TRIGGER events_apply_scope;
CREATE TRIGGER events_apply_scope INSTEAD OF INSERT ON events_to_apply
WHEN NEW.kind = 'budget' OR NEW.kind = 'budget_remove' OR NEW.kind = 'scope_threshold'
BEGIN
    -- budget: the scope's budget, with the spend of its window so far (every consume of the
    -- window under the scope, from the rollups, which are kept by UTC day).
    INSERT INTO scope_budgets (scope, period, max_tokens, max_cost_nanos, set_event_id, window_start_us,
                               spent_tokens, spent_cost_nanos, request_count, unpriced_requests)
    SELECT NEW.scope, NEW.period, NEW.max_tokens, NEW.max_cost_nanos, NEW.id,
           CASE NEW.period
               WHEN 'day' THEN NEW.timestamp_us - NEW.timestamp_us % 86400000000
               WHEN 'week' THEN (NEW.timestamp_us / 86400000000 - (NEW.timestamp_us / 86400000000 + 3) % 7) * 86400000000
               WHEN 'month' THEN CAST(strftime('%s', NEW.timestamp_us / 1000000, 'unixepoch', 'start of month') AS INTEGER)
                                 * 1000000
               ELSE 0 END,
           0, 0, 0, 0
    WHERE NEW.kind = 'budget'
    ON CONFLICT (scope) DO UPDATE SET
        period = excluded.period, max_tokens = excluded.max_tokens, max_cost_nanos = excluded.max_cost_nanos,
        set_event_id = excluded.set_event_id, window_start_us = excluded.window_start_us;
    -- The subquery runs only for the budget's row: in FROM, SQLite would compute the pending
    -- rollups for every event (30 µs per event, measured).
    UPDATE scope_budgets
    SET (spent_tokens, spent_cost_nanos, request_count, unpriced_requests) =
        (SELECT coalesce(sum(rows.prompt_tokens + rows.completion_tokens), 0), coalesce(sum(rows.cost_nanos), 0),
                coalesce(sum(rows.request_count), 0), coalesce(sum(rows.unpriced_requests), 0)
         FROM usage_rollup_rows AS rows
         WHERE rows.day >= scope_budgets.window_start_us / 86400000000
           AND (NEW.scope = 'global' OR NEW.scope = 'org:' || rows.org_id OR NEW.scope = 'user:' || rows.user_id
                OR NEW.scope = 'agent:' || rows.agent_id OR NEW.scope = 'model:' || rows.model))
    WHERE NEW.kind = 'budget' AND scope = NEW.scope;
    -- budget: the thresholds the window no longer reaches under the new figures are armed again
    -- (0007's rule for a thread's limit; a max of 0 reaches no threshold).
    DELETE FROM scope_thresholds
    WHERE NEW.kind = 'budget' AND scope = NEW.scope
      AND NOT EXISTS (SELECT 1 FROM scope_budgets AS b
                      WHERE b.scope = NEW.scope AND b.window_start_us = scope_thresholds.window_start_us
                        AND ((b.max_tokens > 0 AND b.spent_tokens * 100 >= threshold_percent * b.max_tokens)
                             OR (b.max_cost_nanos > 0
                                 AND b.spent_cost_nanos * 100 >= threshold_percent * b.max_cost_nanos)));
    DELETE FROM scope_budgets WHERE NEW.kind = 'budget_remove' AND scope = NEW.scope;
    DELETE FROM scope_thresholds WHERE NEW.kind = 'budget_remove' AND scope = NEW.scope;
    INSERT INTO scope_thresholds (scope, window_start_us, threshold_percent, event_id)
    SELECT NEW.scope, NEW.window_start_us, NEW.threshold_percent, NEW.id WHERE NEW.kind = 'scope_threshold';
END;

DROP TRIGGER events_apply_refusal;
CREATE TRIGGER events_apply_refusal INSTEAD OF INSERT ON events_to_apply
WHEN NEW.kind = 'refusal' OR NEW.kind = 'cleanup' OR NEW.kind = 'budget_remove'
BEGIN
    INSERT INTO thread_refusals (thread_id, window_event_id, event_id)
    SELECT NEW.thread_id,
           coalesce((SELECT window_event_id FROM thread_state WHERE thread_id = NEW.thread_id), 0), NEW.id
    WHERE NEW.kind = 'refusal' AND NEW.scope IS NULL
    ON CONFLICT (thread_id) DO UPDATE SET window_event_id = excluded.window_event_id, event_id = excluded.event_id;
    INSERT INTO scope_refusals (scope, window_start_us, event_id)
    SELECT NEW.scope, NEW.window_start_us, NEW.id
    WHERE NEW.kind = 'refusal' AND NEW.scope IS NOT NULL
    ON CONFLICT (scope) DO UPDATE SET window_start_us = excluded.window_start_us, event_id = excluded.event_id;
    DELETE FROM thread_refusals WHERE NEW.kind = 'cleanup' AND thread_id = NEW.thread_id;
    DELETE FROM scope_refusals WHERE NEW.kind = 'budget_remove' AND scope = NEW.scope;
END;

CREATE TRIGGER events_check_refusal_or_reprice BEFORE INSERT ON events
WHEN NEW.kind = 'refusal' OR NEW.kind = 'reprice'
BEGIN
    INSERT INTO events_to_check (id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens,
                                 threshold_percent, severity, caused_by, tokens_used, idempotency_key, agent_id,
                                 model, provider, latency_ms, metadata, org_id, user_id, cost_nanos, held_tokens,
                                 expires_at_us, reservation_id, scope, period, max_cost_nanos, cost_used_nanos,
                                 window_start_us)
    VALUES (NEW.id, NEW.timestamp_us, NEW.kind, NEW.thread_id, NEW.prompt_tokens, NEW.completion_tokens,
            NEW.max_tokens, NEW.threshold_percent, NEW.severity, NEW.caused_by, NEW.tokens_used,
            NEW.idempotency_key, NEW.agent_id, NEW.model, NEW.provider, NEW.latency_ms, NEW.metadata,
            NEW.org_id, NEW.user_id, NEW.cost_nanos, NEW.held_tokens, NEW.expires_at_us, NEW.reservation_id,
            NEW.scope, NEW.period, NEW.max_cost_nanos, NEW.cost_used_nanos, NEW.window_start_us);
END;

CREATE TRIGGER events_apply_other_kinds AFTER INSERT ON events WHEN NEW.kind <> 'consume'
BEGIN
    INSERT INTO events_to_apply (id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens,
                                 threshold_percent, severity, caused_by, tokens_used, idempotency_key, agent_id,
                                 model, provider, latency_ms, metadata, org_id, user_id, cost_nanos, held_tokens,
                                 expires_at_us, reservation_id, scope, period, max_cost_nanos, cost_used_nanos,
                                 window_start_us)
    VALUES (NEW.id, NEW.timestamp_us, NEW.kind, NEW.thread_id, NEW.prompt_tokens, NEW.completion_tokens,
            NEW.max_tokens, NEW.threshold_percent, NEW.severity, NEW.caused_by, NEW.tokens_used,
            NEW.idempotency_key, NEW.agent_id, NEW.model, NEW.provider, NEW.latency_ms, NEW.metadata,
            NEW.org_id, NEW.user_id, NEW.cost_nanos, NEW.held_tokens, NEW.expires_at_us, NEW.reservation_id,
            NEW.scope, NEW.period, NEW.max_cost_nanos, NEW.cost_used_nanos, NEW.window_start_us);
END;
