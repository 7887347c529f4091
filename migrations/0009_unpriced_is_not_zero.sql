-- 0009: unpriced usage is never shown as $0.
--
-- An unknown model's cost is NULL per event, but every summary view added the rollups'
-- cost_nanos, where an unpriced request counts 0, so a row made only of unpriced requests read
-- as costing nothing, and a total mixing both read as complete (issue 15). The rule, for every
-- summary view:
--   cost_nanos     the cost of the priced requests; NULL when the row has requests and none of
--                  them is priced (the cost is unknown, not zero);
--   cost_complete  1 when every request of the row is priced, else 0: a cost_nanos beside
--                  cost_complete = 0 is the priced part only (unpriced_requests says how many
--                  are missing).
-- The rollups, the fold and verify are unchanged: only what the views show.

DROP VIEW usage_totals;
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
    CASE WHEN sum(latency_count) > 0 THEN 1.0 * sum(latency_ms_sum) / sum(latency_count) END AS avg_latency_ms
FROM usage_agent_model_live;

DROP VIEW usage_by_agent;
CREATE VIEW usage_by_agent AS
SELECT nullif(agent_id, '') AS agent_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete
FROM usage_agent_model_live GROUP BY agent_id;

DROP VIEW usage_by_model;
CREATE VIEW usage_by_model AS
SELECT nullif(model, '') AS model,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete
FROM usage_agent_model_live GROUP BY model;

DROP VIEW billing_by_agent_model;
CREATE VIEW billing_by_agent_model AS
SELECT nullif(agent_id, '') AS agent_id, nullif(model, '') AS model,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete
FROM usage_agent_model_live GROUP BY agent_id, model;

DROP VIEW usage_by_org;
CREATE VIEW usage_by_org AS
SELECT nullif(org_id, '') AS org_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete
FROM usage_rollup_rows GROUP BY org_id;

DROP VIEW usage_by_user;
CREATE VIEW usage_by_user AS
SELECT nullif(user_id, '') AS user_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete
FROM usage_rollup_rows GROUP BY user_id;

DROP VIEW usage_by_day;
CREATE VIEW usage_by_day AS
SELECT date(day * 86400, 'unixepoch') AS day,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete
FROM usage_rollup_rows GROUP BY usage_rollup_rows.day;

DROP VIEW billing_by_org_model_day;
CREATE VIEW billing_by_org_model_day AS
SELECT nullif(org_id, '') AS org_id, nullif(model, '') AS model, date(day * 86400, 'unixepoch') AS day,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       CASE WHEN sum(unpriced_requests) < sum(request_count) THEN sum(cost_nanos) END AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(unpriced_requests) = 0 AS cost_complete
FROM usage_rollup_rows GROUP BY org_id, model, usage_rollup_rows.day;

DROP VIEW usage_by_thread;
CREATE VIEW usage_by_thread AS
SELECT thread_id,
       sum(min(prompt_tokens, 1000000000) + min(completion_tokens, 1000000000)) AS total_tokens,
       sum(min(prompt_tokens, 1000000000)) AS prompt_tokens,
       sum(min(completion_tokens, 1000000000)) AS completion_tokens, count(*) AS request_count,
       sum(min(cost_nanos, 20000000000000000)) AS cost_nanos, sum(cost_nanos IS NULL) AS unpriced_requests,
       sum(cost_nanos IS NULL) = 0 AS cost_complete
FROM events WHERE kind = 'consume' GROUP BY thread_id;
