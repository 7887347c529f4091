-- 0002 (PostgreSQL): unpriced tokens beside unpriced requests (SQLite's 0013_unpriced_tokens.sql).
--
-- Each rollup row and each summary view carries unpriced_tokens, the prompt plus completion
-- tokens of the consumes recorded with no price, as its last column, as on SQLite, so the views
-- keep SQLite's names and columns (PostgresSchemaParityTests). Reprices are not on PostgreSQL
-- yet (0001 refuses them), so a consume recorded unpriced stays unpriced here.
--   - usage_rollup and usage_agent_model gain the column; the rows already there are brought
--     under it from the events (events are not rewritten). A consume's usage window is taken as
--     the number of usage_reset events with a smaller id: what the trigger read, unless the
--     consume's transaction raced a usage reset's.
--   - events_apply adds it for every consume, in the consume's transaction.
--   - the views that show unpriced_requests are replaced with the column appended (CREATE OR
--     REPLACE VIEW keeps their owner and the privileges granted on them, such as a server
--     role's SELECT on usage_agent_model_live; dropping them would not).
-- The migrator runs this in one transaction.

ALTER TABLE usage_rollup ADD COLUMN unpriced_tokens bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_agent_model ADD COLUMN unpriced_tokens bigint NOT NULL DEFAULT 0;

CREATE TEMPORARY TABLE unpriced_consumes AS
SELECT (SELECT count(*) FROM events AS r WHERE r.kind = 'usage_reset' AND r.id < c.id) AS usage_window,
       c.timestamp_us / 86400000000 AS day, coalesce(c.org_id, '') AS org_id, coalesce(c.user_id, '') AS user_id,
       coalesce(c.agent_id, '') AS agent_id, coalesce(ledger_model_name(c.model), '') AS model,
       c.prompt_tokens + c.completion_tokens AS tokens
FROM events AS c
WHERE c.kind = 'consume' AND c.cost_nanos IS NULL;

UPDATE usage_rollup AS u SET unpriced_tokens = sums.tokens
FROM (SELECT usage_window, day, org_id, user_id, agent_id, model, sum(tokens)::bigint AS tokens
      FROM unpriced_consumes GROUP BY usage_window, day, org_id, user_id, agent_id, model) AS sums
WHERE u.usage_window = sums.usage_window AND u.day = sums.day AND u.org_id = sums.org_id
  AND u.user_id = sums.user_id AND u.agent_id = sums.agent_id AND u.model = sums.model;

UPDATE usage_agent_model AS u SET unpriced_tokens = sums.tokens
FROM (SELECT usage_window, agent_id, model, sum(tokens)::bigint AS tokens
      FROM unpriced_consumes GROUP BY usage_window, agent_id, model) AS sums
WHERE u.usage_window = sums.usage_window AND u.agent_id = sums.agent_id AND u.model = sums.model;

DROP TABLE unpriced_consumes;

-- 0001's events_apply, with unpriced_tokens in both rollups.
CREATE OR REPLACE FUNCTION events_apply() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    current_window bigint;
    -- The consume's tokens when it has no price, else 0.
    unpriced_token_count bigint := CASE WHEN NEW.cost_nanos IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END;
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
                                       unpriced_tokens, latency_ms_sum, latency_count)
        VALUES (current_window, NEW.timestamp_us / 86400000000, coalesce(NEW.org_id, ''), coalesce(NEW.user_id, ''),
                coalesce(NEW.agent_id, ''), coalesce(ledger_model_name(NEW.model), ''), NEW.prompt_tokens,
                NEW.completion_tokens, 1, coalesce(NEW.cost_nanos, 0), (NEW.cost_nanos IS NULL)::integer,
                unpriced_token_count, coalesce(NEW.latency_ms, 0), (NEW.latency_ms IS NOT NULL)::integer)
        ON CONFLICT (usage_window, day, org_id, user_id, agent_id, model) DO UPDATE SET
            prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = r.completion_tokens + excluded.completion_tokens,
            request_count = r.request_count + 1,
            cost_nanos = r.cost_nanos + excluded.cost_nanos,
            unpriced_requests = r.unpriced_requests + excluded.unpriced_requests,
            unpriced_tokens = r.unpriced_tokens + excluded.unpriced_tokens,
            latency_ms_sum = r.latency_ms_sum + excluded.latency_ms_sum,
            latency_count = r.latency_count + excluded.latency_count;
        INSERT INTO usage_agent_model AS r (usage_window, agent_id, model, prompt_tokens, completion_tokens,
                                            request_count, cost_nanos, unpriced_requests, unpriced_tokens, latency_ms_sum,
                                            latency_count)
        VALUES (current_window, coalesce(NEW.agent_id, ''), coalesce(ledger_model_name(NEW.model), ''),
                NEW.prompt_tokens, NEW.completion_tokens, 1, coalesce(NEW.cost_nanos, 0),
                (NEW.cost_nanos IS NULL)::integer, unpriced_token_count, coalesce(NEW.latency_ms, 0),
                (NEW.latency_ms IS NOT NULL)::integer)
        ON CONFLICT (usage_window, agent_id, model) DO UPDATE SET
            prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = r.completion_tokens + excluded.completion_tokens,
            request_count = r.request_count + 1,
            cost_nanos = r.cost_nanos + excluded.cost_nanos,
            unpriced_requests = r.unpriced_requests + excluded.unpriced_requests,
            unpriced_tokens = r.unpriced_tokens + excluded.unpriced_tokens,
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
-- 0001's views, with unpriced_tokens appended.

CREATE OR REPLACE VIEW usage_rollup_rows AS
SELECT usage_window, day, org_id, user_id, agent_id, model, prompt_tokens, completion_tokens, request_count,
       cost_nanos, unpriced_requests, latency_ms_sum, latency_count, unpriced_tokens
FROM usage_rollup;

CREATE OR REPLACE VIEW usage_rollup_live AS
SELECT usage_window, day, org_id, user_id, agent_id, model,
       sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
       sum(request_count)::bigint AS request_count, sum(cost_nanos)::bigint AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, sum(latency_ms_sum)::bigint AS latency_ms_sum,
       sum(latency_count)::bigint AS latency_count, sum(unpriced_tokens)::bigint AS unpriced_tokens
FROM usage_rollup_rows
GROUP BY usage_window, day, org_id, user_id, agent_id, model;

CREATE OR REPLACE VIEW usage_agent_model_live AS
SELECT usage_window, agent_id, model,
       sum(prompt_tokens)::bigint AS prompt_tokens, sum(completion_tokens)::bigint AS completion_tokens,
       sum(request_count)::bigint AS request_count, sum(cost_nanos)::bigint AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, sum(latency_ms_sum)::bigint AS latency_ms_sum,
       sum(latency_count)::bigint AS latency_count, sum(unpriced_tokens)::bigint AS unpriced_tokens
FROM usage_agent_model
GROUP BY usage_window, agent_id, model;

CREATE OR REPLACE VIEW billing_by_agent_model AS
SELECT nullif(agent_id, '') AS agent_id, nullif(model, '') AS model,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete,
       sum(unpriced_tokens)::bigint AS unpriced_tokens
FROM usage_agent_model_live GROUP BY agent_id, model;

CREATE OR REPLACE VIEW billing_by_org_model_day AS
SELECT nullif(org_id, '') AS org_id, nullif(model, '') AS model,
       to_char(date '1970-01-01' + day::integer, 'YYYY-MM-DD') AS day,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete,
       sum(unpriced_tokens)::bigint AS unpriced_tokens
FROM usage_rollup_rows AS r GROUP BY r.org_id, r.model, r.day;

CREATE OR REPLACE VIEW usage_by_agent AS
SELECT nullif(agent_id, '') AS agent_id,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete,
       sum(unpriced_tokens)::bigint AS unpriced_tokens
FROM usage_agent_model_live GROUP BY agent_id;

CREATE OR REPLACE VIEW usage_by_model AS
SELECT nullif(model, '') AS model,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete,
       sum(unpriced_tokens)::bigint AS unpriced_tokens
FROM usage_agent_model_live GROUP BY model;

CREATE OR REPLACE VIEW usage_by_org AS
SELECT nullif(org_id, '') AS org_id,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete,
       sum(unpriced_tokens)::bigint AS unpriced_tokens
FROM usage_rollup_rows GROUP BY org_id;

CREATE OR REPLACE VIEW usage_by_user AS
SELECT nullif(user_id, '') AS user_id,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete,
       sum(unpriced_tokens)::bigint AS unpriced_tokens
FROM usage_rollup_rows GROUP BY user_id;

CREATE OR REPLACE VIEW usage_by_day AS
SELECT to_char(date '1970-01-01' + r.day::integer, 'YYYY-MM-DD') AS day,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, sum(request_count)::bigint AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos)::bigint END AS cost_nanos,
       sum(unpriced_requests)::bigint AS unpriced_requests, (sum(unpriced_requests) = 0)::integer AS cost_complete,
       sum(unpriced_tokens)::bigint AS unpriced_tokens
FROM usage_rollup_rows AS r GROUP BY r.day;

CREATE OR REPLACE VIEW usage_by_thread AS
SELECT thread_id,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, count(*) AS request_count,
       sum(cost_nanos)::bigint AS cost_nanos, count(*) FILTER (WHERE cost_nanos IS NULL) AS unpriced_requests,
       (count(*) FILTER (WHERE cost_nanos IS NULL) = 0)::integer AS cost_complete,
       coalesce(sum(prompt_tokens + completion_tokens) FILTER (WHERE cost_nanos IS NULL), 0)::bigint AS unpriced_tokens
FROM events WHERE kind = 'consume' GROUP BY thread_id;

CREATE OR REPLACE VIEW usage_totals AS
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
    END AS avg_latency_ms,
    coalesce(sum(unpriced_tokens), 0)::bigint AS unpriced_tokens
FROM usage_agent_model_live;
