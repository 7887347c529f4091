-- 0003: rollup rows in shards, so that servers do not queue on one row.
--
-- Every consume added itself to one usage_rollup row (its window, day, org, user, agent, model)
-- and one usage_agent_model row (window, agent, model), under the row's lock until commit. Calls
-- that share those (all of an agent's calls to one model on one day) therefore ran one commit at
-- a time however many servers and connections there were: measured with `make bench-postgres`,
-- 64 connections reached about the rate of one. Each rollup row is now split into 64 shards by
-- the consume's thread (hashtext(thread_id) & 63): a thread's consumes are serialized by its own
-- lock anyway, and calls of different threads rarely meet on one row. The views already sum
-- rows (usage_rollup_rows may hold several rows per key, as SQLite's does with its pending
-- part, and usage_rollup_live and usage_agent_model_live group them), so their names, columns
-- and results are unchanged; the shard column is not shown. Existing rows become shard 0.

ALTER TABLE usage_rollup ADD COLUMN shard smallint NOT NULL DEFAULT 0 CHECK (shard BETWEEN 0 AND 63);
ALTER TABLE usage_rollup DROP CONSTRAINT usage_rollup_pkey;
ALTER TABLE usage_rollup ADD PRIMARY KEY (usage_window, day, org_id, user_id, agent_id, model, shard);

ALTER TABLE usage_agent_model ADD COLUMN shard smallint NOT NULL DEFAULT 0 CHECK (shard BETWEEN 0 AND 63);
ALTER TABLE usage_agent_model DROP CONSTRAINT usage_agent_model_pkey;
ALTER TABLE usage_agent_model ADD PRIMARY KEY (usage_window, agent_id, model, shard);

-- 0002's events_apply, with each consume's rollup rows in its thread's shard.
CREATE OR REPLACE FUNCTION events_apply() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    current_window bigint;
    -- The consume's tokens when it has no price, else 0.
    unpriced_token_count bigint := CASE WHEN NEW.cost_nanos IS NULL THEN NEW.prompt_tokens + NEW.completion_tokens ELSE 0 END;
    -- The consume's thread's shard of its rollup rows (0003).
    shard_number smallint := (hashtext(coalesce(NEW.thread_id, '')) & 63)::smallint;
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
                                       unpriced_tokens, latency_ms_sum, latency_count, shard)
        VALUES (current_window, NEW.timestamp_us / 86400000000, coalesce(NEW.org_id, ''), coalesce(NEW.user_id, ''),
                coalesce(NEW.agent_id, ''), coalesce(ledger_model_name(NEW.model), ''), NEW.prompt_tokens,
                NEW.completion_tokens, 1, coalesce(NEW.cost_nanos, 0), (NEW.cost_nanos IS NULL)::integer,
                unpriced_token_count, coalesce(NEW.latency_ms, 0), (NEW.latency_ms IS NOT NULL)::integer, shard_number)
        ON CONFLICT (usage_window, day, org_id, user_id, agent_id, model, shard) DO UPDATE SET
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
                                            latency_count, shard)
        VALUES (current_window, coalesce(NEW.agent_id, ''), coalesce(ledger_model_name(NEW.model), ''),
                NEW.prompt_tokens, NEW.completion_tokens, 1, coalesce(NEW.cost_nanos, 0),
                (NEW.cost_nanos IS NULL)::integer, unpriced_token_count, coalesce(NEW.latency_ms, 0),
                (NEW.latency_ms IS NOT NULL)::integer, shard_number)
        ON CONFLICT (usage_window, agent_id, model, shard) DO UPDATE SET
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
