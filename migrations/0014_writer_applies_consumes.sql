-- 0014: a consume's derived state written by the ledger's own writer (issue 21, first step).
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
