-- 0013: unpriced tokens beside unpriced requests (issue 15).
--
-- Every summary reported the priced cost and how many requests had no price, but not how much
-- usage those requests were: 2 unpriced requests may be 20 tokens or 2 billion. Each rollup row
-- and each summary view now carries unpriced_tokens: the prompt plus completion tokens of the
-- consumes whose cost is unknown (recorded with cost_nanos NULL and not repriced since), each
-- value counted at most at its limit as everywhere derived (0006). It is the last column of
-- every table and view that has it: the tables gain it by ADD COLUMN (a rebuild would have to
-- drop and recreate every trigger that names them), and PostgreSQL's views, which must keep
-- these views' columns (its 0002), can then append it with CREATE OR REPLACE VIEW, which keeps
-- the privileges granted on them.
--   - usage_rollup and usage_agent_model gain the column. Their folded rows are brought under it
--     here from the events they hold (id <= rolled_up_to; events are not rewritten); pending
--     consumes are read by the *_pending views, and the next fold adds them.
--   - the fold (ledger_settings_fold_usage) adds it; a reprice of a folded consume
--     (events_check_reprice) takes the consume's tokens off as it takes off its request.
--   - every view that shows unpriced_requests shows unpriced_tokens last, with explicit column
--     lists where 0002/0004 used `SELECT *`.
--   - scope_budgets and budget_windows are left as they are: a budget gates calls as they were
--     made (0012), and its unpriced_requests is a gate's figure, not a billing summary.
-- verify (Recomputation) recomputes the column from the events and compares it with the rollups.

-- The views that read the rollups go first (SQLite checks views when a table is altered), and
-- every view that shows unpriced_requests, to be created again with unpriced_tokens last.
DROP VIEW usage_totals;
DROP VIEW usage_by_agent;
DROP VIEW usage_by_model;
DROP VIEW billing_by_agent_model;
DROP VIEW usage_by_org;
DROP VIEW usage_by_user;
DROP VIEW usage_by_day;
DROP VIEW billing_by_org_model_day;
DROP VIEW usage_rollup_live;
DROP VIEW usage_rollup_rows;
DROP VIEW usage_agent_model_live;
DROP VIEW usage_rollup_pending;
DROP VIEW usage_agent_model_pending;
DROP VIEW usage_agent_model_from_events;
DROP VIEW usage_rollup_from_events;
DROP VIEW usage_by_thread;

ALTER TABLE usage_rollup ADD COLUMN unpriced_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_agent_model ADD COLUMN unpriced_tokens INTEGER NOT NULL DEFAULT 0;

-- The folded rows: the unpriced consumes each holds. A consume's usage window is the number of
-- usage_reset events before it (the fold writes each pending consume under the window current
-- then, and a usage_reset folds first; 0012's reprice trigger finds it the same way).
CREATE TEMP TABLE unpriced_folded AS
SELECT (SELECT count(*) FROM events AS r WHERE r.kind = 'usage_reset' AND r.id < c.id) AS usage_window,
       c.timestamp_us / 86400000000 AS day, coalesce(c.org_id, '') AS org_id, coalesce(c.user_id, '') AS user_id,
       coalesce(c.agent_id, '') AS agent_id, coalesce(lower(trim(c.model, char(32, 9, 10, 11, 12, 13))), '') AS model,
       min(c.prompt_tokens, 1000000000) + min(c.completion_tokens, 1000000000) AS tokens
FROM events AS c
WHERE c.kind = 'consume' AND c.cost_nanos IS NULL
  AND c.id <= (SELECT rolled_up_to FROM ledger_settings WHERE id = 1)
  AND NOT EXISTS (SELECT 1 FROM events AS r WHERE r.caused_by = c.id AND r.kind = 'reprice');

UPDATE usage_rollup SET unpriced_tokens = sums.tokens
FROM (SELECT usage_window, day, org_id, user_id, agent_id, model, sum(tokens) AS tokens
      FROM temp.unpriced_folded GROUP BY usage_window, day, org_id, user_id, agent_id, model) AS sums
WHERE usage_rollup.usage_window = sums.usage_window AND usage_rollup.day = sums.day
  AND usage_rollup.org_id = sums.org_id AND usage_rollup.user_id = sums.user_id
  AND usage_rollup.agent_id = sums.agent_id AND usage_rollup.model = sums.model;

UPDATE usage_agent_model SET unpriced_tokens = sums.tokens
FROM (SELECT usage_window, agent_id, model, sum(tokens) AS tokens
      FROM temp.unpriced_folded GROUP BY usage_window, agent_id, model) AS sums
WHERE usage_agent_model.usage_window = sums.usage_window AND usage_agent_model.agent_id = sums.agent_id
  AND usage_agent_model.model = sums.model;

DROP TABLE temp.unpriced_folded;

-- The pending parts (0012's), with each consume's corrected cost, and the unpriced tokens.
CREATE VIEW usage_rollup_pending AS
SELECT (SELECT usage_window FROM ledger_settings WHERE id = 1) AS usage_window,
       timestamp_us / 86400000000 AS day,
       coalesce(org_id, '') AS org_id, coalesce(user_id, '') AS user_id,
       coalesce(agent_id, '') AS agent_id, coalesce(lower(trim(model, char(32, 9, 10, 11, 12, 13))), '') AS model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, count(*) AS request_count,
       coalesce(sum(coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r
                                          WHERE r.caused_by = events.id AND r.kind = 'reprice'))), 0) AS cost_nanos,
       sum(coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r
                                 WHERE r.caused_by = events.id AND r.kind = 'reprice')) IS NULL) AS unpriced_requests,
       coalesce(sum(latency_ms), 0) AS latency_ms_sum, count(latency_ms) AS latency_count,
       coalesce(sum(CASE WHEN coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r
                                                    WHERE r.caused_by = events.id AND r.kind = 'reprice')) IS NULL
                         THEN prompt_tokens + completion_tokens ELSE 0 END), 0) AS unpriced_tokens
FROM events
WHERE id > (SELECT rolled_up_to FROM ledger_settings WHERE id = 1) AND kind = 'consume'
GROUP BY 5, 6, 2, 3, 4;

CREATE VIEW usage_agent_model_pending AS
SELECT (SELECT usage_window FROM ledger_settings WHERE id = 1) AS usage_window,
       coalesce(agent_id, '') AS agent_id, coalesce(lower(trim(model, char(32, 9, 10, 11, 12, 13))), '') AS model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, count(*) AS request_count,
       coalesce(sum(coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r
                                          WHERE r.caused_by = events.id AND r.kind = 'reprice'))), 0) AS cost_nanos,
       sum(coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r
                                 WHERE r.caused_by = events.id AND r.kind = 'reprice')) IS NULL) AS unpriced_requests,
       coalesce(sum(latency_ms), 0) AS latency_ms_sum, count(latency_ms) AS latency_count,
       coalesce(sum(CASE WHEN coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r
                                                    WHERE r.caused_by = events.id AND r.kind = 'reprice')) IS NULL
                         THEN prompt_tokens + completion_tokens ELSE 0 END), 0) AS unpriced_tokens
FROM events
WHERE id > (SELECT rolled_up_to FROM ledger_settings WHERE id = 1) AND kind = 'consume'
GROUP BY 2, 3;

-- Folded plus pending.
CREATE VIEW usage_rollup_rows AS
SELECT usage_window, day, org_id, user_id, agent_id, model, prompt_tokens, completion_tokens, request_count,
       cost_nanos, unpriced_requests, latency_ms_sum, latency_count, unpriced_tokens
FROM usage_rollup
UNION ALL
SELECT usage_window, day, org_id, user_id, agent_id, model, prompt_tokens, completion_tokens, request_count,
       cost_nanos, unpriced_requests, latency_ms_sum, latency_count, unpriced_tokens
FROM usage_rollup_pending;

CREATE VIEW usage_rollup_live AS
SELECT usage_window, day, org_id, user_id, agent_id, model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(request_count) AS request_count, sum(cost_nanos) AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(latency_ms_sum) AS latency_ms_sum,
       sum(latency_count) AS latency_count, sum(unpriced_tokens) AS unpriced_tokens
FROM usage_rollup_rows
GROUP BY usage_window, day, org_id, user_id, agent_id, model;

CREATE VIEW usage_agent_model_live AS
SELECT usage_window, agent_id, model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(request_count) AS request_count, sum(cost_nanos) AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(latency_ms_sum) AS latency_ms_sum,
       sum(latency_count) AS latency_count, sum(unpriced_tokens) AS unpriced_tokens
FROM (SELECT usage_window, agent_id, model, prompt_tokens, completion_tokens, request_count, cost_nanos,
             unpriced_requests, latency_ms_sum, latency_count, unpriced_tokens
      FROM usage_agent_model
      UNION ALL
      SELECT usage_window, agent_id, model, prompt_tokens, completion_tokens, request_count, cost_nanos,
             unpriced_requests, latency_ms_sum, latency_count, unpriced_tokens
      FROM usage_agent_model_pending)
GROUP BY usage_window, agent_id, model;

-- The summaries (0009's rule for cost_nanos and cost_complete), with unpriced_tokens.
CREATE VIEW usage_totals AS
SELECT
    coalesce(sum(prompt_tokens + completion_tokens), 0) AS total_tokens,
    coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
    coalesce(sum(completion_tokens), 0) AS completion_tokens,
    coalesce(sum(request_count), 0) AS request_count,
    CASE WHEN coalesce(sum(request_count), 0) > 0 AND sum(unpriced_requests) = sum(request_count) THEN NULL
         ELSE coalesce(sum(cost_nanos), 0) END AS cost_nanos,
    coalesce(sum(unpriced_requests), 0) AS unpriced_requests,
    coalesce(sum(unpriced_requests), 0) = 0 AS cost_complete,
    CASE WHEN sum(latency_count) > 0 THEN 1.0 * sum(latency_ms_sum) / sum(latency_count) END AS avg_latency_ms,
    coalesce(sum(unpriced_tokens), 0) AS unpriced_tokens
FROM usage_agent_model_live;

CREATE VIEW usage_by_agent AS
SELECT nullif(agent_id, '') AS agent_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete,
       sum(unpriced_tokens) AS unpriced_tokens
FROM usage_agent_model_live GROUP BY agent_id;

CREATE VIEW usage_by_model AS
SELECT nullif(model, '') AS model,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete,
       sum(unpriced_tokens) AS unpriced_tokens
FROM usage_agent_model_live GROUP BY model;

CREATE VIEW billing_by_agent_model AS
SELECT nullif(agent_id, '') AS agent_id, nullif(model, '') AS model,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete,
       sum(unpriced_tokens) AS unpriced_tokens
FROM usage_agent_model_live GROUP BY agent_id, model;

CREATE VIEW usage_by_org AS
SELECT nullif(org_id, '') AS org_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete,
       sum(unpriced_tokens) AS unpriced_tokens
FROM usage_rollup_rows GROUP BY org_id;

CREATE VIEW usage_by_user AS
SELECT nullif(user_id, '') AS user_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete,
       sum(unpriced_tokens) AS unpriced_tokens
FROM usage_rollup_rows GROUP BY user_id;

CREATE VIEW usage_by_day AS
SELECT date(day * 86400, 'unixepoch') AS day,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete,
       sum(unpriced_tokens) AS unpriced_tokens
FROM usage_rollup_rows GROUP BY usage_rollup_rows.day;

CREATE VIEW billing_by_org_model_day AS
SELECT nullif(org_id, '') AS org_id, nullif(model, '') AS model, date(day * 86400, 'unixepoch') AS day,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete,
       sum(unpriced_tokens) AS unpriced_tokens
FROM usage_rollup_rows GROUP BY org_id, model, usage_rollup_rows.day;

-- 0012's per-thread view, with the unpriced tokens.
CREATE VIEW usage_by_thread AS
WITH corrected AS (
    SELECT thread_id, min(prompt_tokens, 1000000000) AS prompt_tokens,
           min(completion_tokens, 1000000000) AS completion_tokens,
           coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r WHERE r.caused_by = events.id AND r.kind = 'reprice'))
               AS cost_nanos
    FROM events WHERE kind = 'consume'
)
SELECT thread_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, count(*) AS request_count,
       sum(min(cost_nanos, 20000000000000000)) AS cost_nanos, sum(cost_nanos IS NULL) AS unpriced_requests,
       sum(cost_nanos IS NULL) = 0 AS cost_complete,
       sum(CASE WHEN cost_nanos IS NULL THEN prompt_tokens + completion_tokens ELSE 0 END) AS unpriced_tokens
FROM corrected GROUP BY thread_id;

-- The recomputations for the sqlite3 shell (0012's), with the unpriced tokens.
CREATE VIEW usage_rollup_from_events AS
WITH numbered AS (
    SELECT events.*, sum(kind = 'usage_reset') OVER (ORDER BY id) AS usage_window,
           coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r WHERE r.caused_by = events.id AND r.kind = 'reprice'))
               AS corrected_cost_nanos
    FROM events
)
SELECT
    usage_window,
    timestamp_us / 86400000000 AS day,
    coalesce(org_id, '') AS org_id,
    coalesce(user_id, '') AS user_id,
    coalesce(agent_id, '') AS agent_id,
    coalesce(lower(trim(model, char(32, 9, 10, 11, 12, 13))), '') AS model,
    sum(min(prompt_tokens, 1000000000)) AS prompt_tokens,
    sum(min(completion_tokens, 1000000000)) AS completion_tokens,
    count(*) AS request_count,
    coalesce(sum(min(corrected_cost_nanos, 20000000000000000)), 0) AS cost_nanos,
    sum(corrected_cost_nanos IS NULL) AS unpriced_requests,
    coalesce(sum(min(latency_ms, 604800000)), 0) AS latency_ms_sum,
    count(latency_ms) AS latency_count,
    sum(CASE WHEN corrected_cost_nanos IS NULL
             THEN min(prompt_tokens, 1000000000) + min(completion_tokens, 1000000000) ELSE 0 END) AS unpriced_tokens
FROM numbered
WHERE kind = 'consume'
GROUP BY 1, 2, 3, 4, 5, 6;

CREATE VIEW usage_agent_model_from_events AS
SELECT usage_window, agent_id, model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(request_count) AS request_count, sum(cost_nanos) AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(latency_ms_sum) AS latency_ms_sum,
       sum(latency_count) AS latency_count, sum(unpriced_tokens) AS unpriced_tokens
FROM usage_rollup_from_events
GROUP BY usage_window, agent_id, model;

-- The fold (0004's), naming its columns.
DROP TRIGGER ledger_settings_fold_usage;
CREATE TRIGGER ledger_settings_fold_usage BEFORE UPDATE OF rolled_up_to ON ledger_settings
BEGIN
    INSERT INTO usage_rollup (usage_window, day, org_id, user_id, agent_id, model, prompt_tokens, completion_tokens,
                              request_count, cost_nanos, unpriced_requests, latency_ms_sum, latency_count, unpriced_tokens)
    SELECT usage_window, day, org_id, user_id, agent_id, model, prompt_tokens, completion_tokens, request_count,
           cost_nanos, unpriced_requests, latency_ms_sum, latency_count, unpriced_tokens
    FROM usage_rollup_pending WHERE true
    ON CONFLICT (usage_window, day, org_id, user_id, agent_id, model) DO UPDATE SET
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        request_count = request_count + excluded.request_count,
        cost_nanos = cost_nanos + excluded.cost_nanos,
        unpriced_requests = unpriced_requests + excluded.unpriced_requests,
        unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens,
        latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum,
        latency_count = latency_count + excluded.latency_count;
    INSERT INTO usage_agent_model (usage_window, agent_id, model, prompt_tokens, completion_tokens, request_count,
                                   cost_nanos, unpriced_requests, latency_ms_sum, latency_count, unpriced_tokens)
    SELECT usage_window, agent_id, model, prompt_tokens, completion_tokens, request_count, cost_nanos,
           unpriced_requests, latency_ms_sum, latency_count, unpriced_tokens
    FROM usage_agent_model_pending WHERE true
    ON CONFLICT (usage_window, agent_id, model) DO UPDATE SET
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        request_count = request_count + excluded.request_count,
        cost_nanos = cost_nanos + excluded.cost_nanos,
        unpriced_requests = unpriced_requests + excluded.unpriced_requests,
        unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens,
        latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum,
        latency_count = latency_count + excluded.latency_count;
END;

-- 0012's reprice trigger: a folded consume's rows also lose its tokens from unpriced_tokens
-- (counted at their limits, as the fold and 0013's backfill counted them).
DROP TRIGGER events_check_reprice;
CREATE TRIGGER events_check_reprice BEFORE INSERT ON events WHEN NEW.kind = 'reprice'
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
