-- 0017: the capacity checked at the fold, so a consume's commit no longer writes the settings
-- page (issue 21: a commit of 3 pages, not 5; 0016 took the timestamp index's).
--
-- Since 0006 every consume added its values to the all-time sums in `ledger_settings`, refusing
-- one that would take a sum past the capacity (4e18): one more page written by every commit, for
-- a check that only matters near $4 billion or 4e18 tokens (docs/performance.md, issue 21).
--
-- The sums now hold the *folded* consumes (id <= rolled_up_to) and every reprice, and are added
-- at the fold by `ledger_settings_fold_all_time_sums`, which refuses a fold that would pass the
-- capacity with 0006's messages. A consume since the last fold is at most its limits: 1e9
-- tokens each, 604,800,000 ms, and a cost of at most `consume_cost_bound_nanos`, 1e9 times the
-- greatest prompt + completion price ever set (model_prices is append-only, so the bound never
-- falls; a trigger keeps it). With n events since the fold, `sum + n * limit <= capacity` for
-- each sum proves the capacity kept without reading them. The writer (Ledger.applyDerivedState,
-- `FoldMark`) and `consumes_to_apply_insert` fold at once when that bound does not hold, or
-- when a plain-SQL consume costs more than the bound; the fold's exact sums then refuse the
-- consume past the capacity (its transaction takes it back). So a consume is refused exactly
-- when the sum over every consume would pass the capacity, as before; far from it (for 1,024
-- events at the bound: the folded cost under 4e18 - 1,024 * bound) a commit writes nothing of
-- ledger_settings.
--
-- A reprice adds its cost at once, as before, after the same bound (folding first when it does
-- not hold). `ledger_settings_from_events` (what verify's recomputation agrees with) counts the
-- consumes up to the mark, and recomputes the bound from the prices.

-- Everything recorded so far is folded first, by the triggers as they were: the sums then hold
-- every consume, all folded, as the new rule says.
UPDATE ledger_settings SET rolled_up_to = (SELECT max(id) FROM events)
WHERE id = 1 AND rolled_up_to < (SELECT coalesce(max(id), 0) FROM events);

-- The most one consume can cost at any price ever set (nano-dollars; 0: no price yet), at most
-- the per-call limit: a price row is at most 1e7 per token since 0006, and a cost past the
-- limit is refused.
ALTER TABLE ledger_settings ADD COLUMN consume_cost_bound_nanos INTEGER NOT NULL DEFAULT 0;
UPDATE ledger_settings
SET consume_cost_bound_nanos = (SELECT coalesce(max(min(20000000000000000, 1000000000 * (prompt_nanos_per_token + completion_nanos_per_token))), 0)
           FROM model_prices)
WHERE id = 1;

CREATE TRIGGER model_prices_bound_consume_cost AFTER INSERT ON model_prices
BEGIN
    UPDATE ledger_settings
    SET consume_cost_bound_nanos = max(consume_cost_bound_nanos, min(20000000000000000, 1000000000 * (NEW.prompt_nanos_per_token + NEW.completion_nanos_per_token)))
    WHERE id = 1;
END;

CREATE TRIGGER ledger_settings_fold_all_time_sums AFTER UPDATE OF rolled_up_to ON ledger_settings
WHEN NEW.rolled_up_to > OLD.rolled_up_to
BEGIN
    UPDATE ledger_settings
    SET (all_time_prompt_tokens, all_time_completion_tokens, all_time_cost_nanos, all_time_latency_ms) = (
        SELECT CASE WHEN ledger_settings.all_time_prompt_tokens <= 4000000000000000000 - coalesce(sum(min(folded.prompt_tokens, 1000000000)), 0)
                    THEN ledger_settings.all_time_prompt_tokens + coalesce(sum(min(folded.prompt_tokens, 1000000000)), 0)
                    ELSE RAISE(ABORT, 'ledger capacity reached: the all-time prompt_tokens would pass 4000000000000000000') END,
               CASE WHEN ledger_settings.all_time_completion_tokens <= 4000000000000000000 - coalesce(sum(min(folded.completion_tokens, 1000000000)), 0)
                    THEN ledger_settings.all_time_completion_tokens + coalesce(sum(min(folded.completion_tokens, 1000000000)), 0)
                    ELSE RAISE(ABORT, 'ledger capacity reached: the all-time completion_tokens would pass 4000000000000000000') END,
               CASE WHEN ledger_settings.all_time_cost_nanos <= 4000000000000000000 - coalesce(sum(min(folded.cost_nanos, 20000000000000000)), 0)
                    THEN ledger_settings.all_time_cost_nanos + coalesce(sum(min(folded.cost_nanos, 20000000000000000)), 0)
                    ELSE RAISE(ABORT, 'ledger capacity reached: the all-time cost_nanos would pass 4000000000000000000') END,
               CASE WHEN ledger_settings.all_time_latency_ms <= 4000000000000000000 - coalesce(sum(min(folded.latency_ms, 604800000)), 0)
                    THEN ledger_settings.all_time_latency_ms + coalesce(sum(min(folded.latency_ms, 604800000)), 0)
                    ELSE RAISE(ABORT, 'ledger capacity reached: the all-time latency_ms would pass 4000000000000000000') END
        FROM events AS folded
        WHERE folded.id > OLD.rolled_up_to AND folded.id <= NEW.rolled_up_to AND folded.kind = 'consume')
    WHERE id = 1;
END;

DROP TRIGGER consumes_to_apply_insert;

CREATE TRIGGER consumes_to_apply_insert INSTEAD OF INSERT ON consumes_to_apply
BEGIN
    UPDATE thread_state
    SET prompt_tokens = prompt_tokens + NEW.prompt_tokens,
        completion_tokens = completion_tokens + NEW.completion_tokens,
        request_count = request_count + 1
    WHERE thread_id = NEW.thread_id;
    -- Each scope sum is a part of the all-time sums, so it stays under their capacity.
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
    -- The fold: at every 1,024th event, and at once when the events since the last fold, each at
    -- its limits (its cost at most consume_cost_bound_nanos), could take an all-time sum past the capacity,
    -- or when this consume costs more than any price allows; the fold's sums
    -- (ledger_settings_fold_all_time_sums) then refuse it if it passes the capacity.
    UPDATE ledger_settings SET rolled_up_to = NEW.id
    WHERE id = 1
      AND (NEW.id % 1024 = 0
           OR coalesce(NEW.cost_nanos, 0) > consume_cost_bound_nanos
           OR all_time_prompt_tokens > 4000000000000000000 - (NEW.id - rolled_up_to) * 1000000000
           OR all_time_completion_tokens > 4000000000000000000 - (NEW.id - rolled_up_to) * 1000000000
           OR all_time_cost_nanos > 4000000000000000000 - (NEW.id - rolled_up_to) * consume_cost_bound_nanos
           OR all_time_latency_ms > 4000000000000000000 - (NEW.id - rolled_up_to) * 604800000);
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
    -- The all-time cost holds the folded consumes and every reprice: when the consumes since the
    -- last fold, each at the bound, and this cost could pass the capacity, they are folded first,
    -- so the check below is exact.
    UPDATE ledger_settings SET rolled_up_to = (SELECT max(id) FROM events)
    WHERE id = 1
      AND all_time_cost_nanos > 4000000000000000000 - ((SELECT max(id) FROM events) - rolled_up_to) * consume_cost_bound_nanos - NEW.cost_nanos;
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

DROP VIEW ledger_settings_from_events;

CREATE VIEW ledger_settings_from_events AS
WITH all_time AS (
    SELECT coalesce(sum(min(prompt_tokens, 1000000000)), 0) AS prompt_tokens,
           coalesce(sum(min(completion_tokens, 1000000000)), 0) AS completion_tokens,
           coalesce(sum(min(cost_nanos, 20000000000000000)), 0)
               + (SELECT coalesce(sum(cost_nanos), 0) FROM events WHERE kind = 'reprice') AS cost_nanos,
           coalesce(sum(min(latency_ms, 604800000)), 0) AS latency_ms
    FROM events WHERE kind = 'consume' AND id <= (SELECT rolled_up_to FROM ledger_settings WHERE id = 1)
)
SELECT 1 AS id,
       coalesce((SELECT max_tokens FROM events WHERE kind = 'configure' ORDER BY id DESC LIMIT 1), 100000)
           AS default_max_tokens,
       (SELECT count(*) FROM events WHERE kind = 'usage_reset') AS usage_window,
       all_time.prompt_tokens AS all_time_prompt_tokens,
       all_time.completion_tokens AS all_time_completion_tokens,
       all_time.cost_nanos AS all_time_cost_nanos,
       all_time.latency_ms AS all_time_latency_ms,
       (SELECT coalesce(max(min(20000000000000000, 1000000000 * (prompt_nanos_per_token + completion_nanos_per_token))), 0)
        FROM model_prices) AS consume_cost_bound_nanos
FROM all_time;
