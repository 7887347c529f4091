-- 0018: usage_agent_model kept from usage_rollup's rows, so the fold reads the pending events
-- once, not twice (issue 21).
--
-- The fold (`ledger_settings_fold_usage`) grouped the pending consumes twice: into usage_rollup
-- (window × day × org × user × agent × model) and again, from the events, into
-- usage_agent_model (window × agent × model). Each pass reads and sorts every pending event:
-- measured with callgrind on a fold of 1,021 consumes, 15.4k instructions an event for the
-- first and 10.6k for the second, of 33.9k for the whole fold, which every consume pays for
-- (docs/performance.md).
--
-- usage_agent_model is a grouping of usage_rollup (the same sums, fewer keys), so it now follows
-- usage_rollup's rows: a row inserted there adds to its agent-model row, a row changed there
-- changes it by the difference. That costs a statement per *group* the fold touches, not per
-- event. The reprice's correction of a folded consume changes usage_rollup only; the trigger
-- carries it on. A row's keys never change (a change would move its sums between groups), and
-- an update that tried is refused. The tables hold the same rows as before: verify compares
-- both with the events, as before.

CREATE TRIGGER usage_rollup_adds_to_agent_model AFTER INSERT ON usage_rollup
BEGIN
    INSERT INTO usage_agent_model (usage_window, agent_id, model, prompt_tokens, completion_tokens, request_count, cost_nanos, unpriced_requests, latency_ms_sum, latency_count, unpriced_tokens)
    VALUES (NEW.usage_window, NEW.agent_id, NEW.model, NEW.prompt_tokens, NEW.completion_tokens, NEW.request_count, NEW.cost_nanos, NEW.unpriced_requests, NEW.latency_ms_sum, NEW.latency_count, NEW.unpriced_tokens)
    ON CONFLICT (usage_window, agent_id, model) DO UPDATE SET
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        request_count = request_count + excluded.request_count,
        cost_nanos = cost_nanos + excluded.cost_nanos,
        unpriced_requests = unpriced_requests + excluded.unpriced_requests,
        latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum,
        latency_count = latency_count + excluded.latency_count,
        unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens;
END;

CREATE TRIGGER usage_rollup_changes_agent_model AFTER UPDATE ON usage_rollup
BEGIN
    UPDATE usage_agent_model
    SET prompt_tokens = prompt_tokens + NEW.prompt_tokens - OLD.prompt_tokens,
        completion_tokens = completion_tokens + NEW.completion_tokens - OLD.completion_tokens,
        request_count = request_count + NEW.request_count - OLD.request_count,
        cost_nanos = cost_nanos + NEW.cost_nanos - OLD.cost_nanos,
        unpriced_requests = unpriced_requests + NEW.unpriced_requests - OLD.unpriced_requests,
        latency_ms_sum = latency_ms_sum + NEW.latency_ms_sum - OLD.latency_ms_sum,
        latency_count = latency_count + NEW.latency_count - OLD.latency_count,
        unpriced_tokens = unpriced_tokens + NEW.unpriced_tokens - OLD.unpriced_tokens
    WHERE usage_window = NEW.usage_window AND agent_id = NEW.agent_id AND model = NEW.model;
END;

CREATE TRIGGER usage_rollup_forbid_key_change BEFORE UPDATE OF usage_window, day, org_id, user_id, agent_id, model ON usage_rollup
BEGIN
    SELECT RAISE(ABORT, 'usage_rollup: a row keeps its keys (usage_agent_model follows its changes)');
END;

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
    -- The consume's folded row, when the fold has passed it (before this event is inserted, so
    -- a fold that this event starts reads it through the pending views instead); its
    -- usage_agent_model row follows (usage_rollup_changes_agent_model).
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
END;
