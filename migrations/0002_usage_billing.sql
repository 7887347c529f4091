-- 0002: prices, usage rollups and billing views.
--
-- Money is exact: amounts are integers in nano-dollars (1 nano-dollar = 10^-9 USD). A price is
-- stored as nano-dollars per token, which is the price in USD per million tokens times 1,000
-- (so $2.50 per million tokens is 2500), exact for any price given to $0.001 per million.
-- Each consume's cost is computed when it is recorded, from the price in force at its
-- timestamp, and stored in events.cost_nanos: a later price change never re-prices history.
-- NULL cost means the model had no price (unpriced), never zero.

CREATE TABLE model_prices (
    id INTEGER PRIMARY KEY,
    -- Matched against the lowercased model name; the longest matching prefix wins.
    model_prefix TEXT NOT NULL CHECK (length(model_prefix) > 0 AND model_prefix = lower(model_prefix)),
    prompt_nanos_per_token INTEGER NOT NULL CHECK (prompt_nanos_per_token >= 0),
    completion_nanos_per_token INTEGER NOT NULL CHECK (completion_nanos_per_token >= 0),
    -- UTC microseconds: the price holds for events at or after this time.
    effective_from_us INTEGER NOT NULL CHECK (effective_from_us >= 0),
    source TEXT NOT NULL,
    UNIQUE (model_prefix, effective_from_us)
) STRICT;

-- Prices are history too.
CREATE TRIGGER model_prices_forbid_update BEFORE UPDATE ON model_prices
BEGIN
    SELECT RAISE(ABORT, 'model_prices is append-only: add a row with a later effective_from_us');
END;

CREATE TRIGGER model_prices_forbid_delete BEFORE DELETE ON model_prices
BEGIN
    SELECT RAISE(ABORT, 'model_prices is append-only: add a row with a later effective_from_us');
END;

-- The reference's price table (USD per million prompt / completion tokens), as of 2026-11-29,
-- in force from the beginning of time.
INSERT INTO model_prices (model_prefix, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source)
VALUES
    ('grok-4.1', 3000, 15000, 0, 'reference price table, 2026-11-29'),
    ('grok-3', 3000, 15000, 0, 'reference price table, 2026-11-29'),
    ('claude-opus-4', 15000, 75000, 0, 'reference price table, 2026-11-29'),
    ('claude-sonnet-4', 3000, 15000, 0, 'reference price table, 2026-11-29'),
    ('claude-sonnet-3-5', 3000, 15000, 0, 'reference price table, 2026-11-29'),
    ('gpt-4o', 2500, 10000, 0, 'reference price table, 2026-11-29'),
    ('gpt-4o-mini', 150, 600, 0, 'reference price table, 2026-11-29'),
    ('o1', 15000, 60000, 0, 'reference price table, 2026-11-29'),
    ('o3-mini', 1100, 4400, 0, 'reference price table, 2026-11-29');

-- The price of each consume event, recomputed from model_prices (verify compares it with cost_nanos).
CREATE VIEW event_prices AS
SELECT
    events.id AS event_id,
    (SELECT events.prompt_tokens * p.prompt_nanos_per_token + events.completion_tokens * p.completion_nanos_per_token
     FROM model_prices AS p
     WHERE substr(lower(events.model), 1, length(p.model_prefix)) = p.model_prefix
       AND p.effective_from_us <= events.timestamp_us
     ORDER BY length(p.model_prefix) DESC, p.effective_from_us DESC
     LIMIT 1) AS cost_nanos
FROM events
WHERE events.kind = 'consume';

CREATE INDEX events_timestamp ON events (timestamp_us);

-- Consume totals per usage window, UTC day, org, user, agent and model, kept by a trigger in
-- the same transaction as each consume, so overviews and billing never scan the events.
-- '' stands for "none" in the key columns (ids are never empty); the views turn it back to NULL.
CREATE TABLE usage_rollup (
    usage_window INTEGER NOT NULL,
    -- Days since 1970-01-01, UTC.
    day INTEGER NOT NULL,
    org_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    request_count INTEGER NOT NULL,
    cost_nanos INTEGER NOT NULL,
    unpriced_requests INTEGER NOT NULL,
    latency_ms_sum INTEGER NOT NULL,
    latency_count INTEGER NOT NULL,
    PRIMARY KEY (usage_window, day, org_id, user_id, agent_id, model)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER events_apply_usage AFTER INSERT ON events WHEN NEW.kind = 'consume'
BEGIN
    INSERT INTO usage_rollup (usage_window, day, org_id, user_id, agent_id, model, prompt_tokens, completion_tokens,
                              request_count, cost_nanos, unpriced_requests, latency_ms_sum, latency_count)
    VALUES ((SELECT usage_window FROM ledger_settings WHERE id = 1), NEW.timestamp_us / 86400000000,
            coalesce(NEW.org_id, ''), coalesce(NEW.user_id, ''), coalesce(NEW.agent_id, ''), coalesce(NEW.model, ''),
            NEW.prompt_tokens, NEW.completion_tokens, 1, coalesce(NEW.cost_nanos, 0), NEW.cost_nanos IS NULL,
            coalesce(NEW.latency_ms, 0), NEW.latency_ms IS NOT NULL)
    ON CONFLICT (usage_window, day, org_id, user_id, agent_id, model) DO UPDATE SET
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        request_count = request_count + 1,
        cost_nanos = cost_nanos + excluded.cost_nanos,
        unpriced_requests = unpriced_requests + excluded.unpriced_requests,
        latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum,
        latency_count = latency_count + excluded.latency_count;
END;

-- usage_rollup recomputed from the events alone.
CREATE VIEW usage_rollup_from_events AS
WITH numbered AS (
    SELECT events.*, sum(kind = 'usage_reset') OVER (ORDER BY id) AS usage_window
    FROM events
)
SELECT
    usage_window,
    timestamp_us / 86400000000 AS day,
    coalesce(org_id, '') AS org_id,
    coalesce(user_id, '') AS user_id,
    coalesce(agent_id, '') AS agent_id,
    coalesce(model, '') AS model,
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    count(*) AS request_count,
    coalesce(sum(cost_nanos), 0) AS cost_nanos,
    sum(cost_nanos IS NULL) AS unpriced_requests,
    coalesce(sum(latency_ms), 0) AS latency_ms_sum,
    count(latency_ms) AS latency_count
FROM numbered
WHERE kind = 'consume'
GROUP BY 1, 2, 3, 4, 5, 6;

-- Usage views. Every amount is in nano-dollars (*_nanos): divide by 1e9 for dollars, or use
-- the CLI and REST API, which print exact decimals. They cover all time; for the current usage
-- window, filter usage_rollup on usage_window = (SELECT usage_window FROM ledger_settings).

-- All-time totals.
CREATE VIEW usage_totals AS
SELECT
    coalesce(sum(prompt_tokens + completion_tokens), 0) AS total_tokens,
    coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
    coalesce(sum(completion_tokens), 0) AS completion_tokens,
    coalesce(sum(request_count), 0) AS request_count,
    coalesce(sum(cost_nanos), 0) AS cost_nanos,
    coalesce(sum(unpriced_requests), 0) AS unpriced_requests,
    CASE WHEN sum(latency_count) > 0 THEN 1.0 * sum(latency_ms_sum) / sum(latency_count) END AS avg_latency_ms
FROM usage_rollup;

CREATE VIEW usage_by_agent AS
SELECT nullif(agent_id, '') AS agent_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_rollup GROUP BY agent_id;

CREATE VIEW usage_by_model AS
SELECT nullif(model, '') AS model,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_rollup GROUP BY model;

CREATE VIEW usage_by_org AS
SELECT nullif(org_id, '') AS org_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_rollup GROUP BY org_id;

CREATE VIEW usage_by_user AS
SELECT nullif(user_id, '') AS user_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_rollup GROUP BY user_id;

-- Per UTC day, for charts.
CREATE VIEW usage_by_day AS
SELECT date(day * 86400, 'unixepoch') AS day,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_rollup GROUP BY usage_rollup.day;

-- Billing: org x model x UTC day.
CREATE VIEW billing_by_org_model_day AS
SELECT nullif(org_id, '') AS org_id, nullif(model, '') AS model, date(day * 86400, 'unixepoch') AS day,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, sum(request_count) AS request_count,
       sum(cost_nanos) AS cost_nanos, sum(unpriced_requests) AS unpriced_requests
FROM usage_rollup GROUP BY org_id, model, usage_rollup.day;

-- Per thread id, all time (across the thread's lives); scans the events.
CREATE VIEW usage_by_thread AS
SELECT thread_id,
       sum(prompt_tokens + completion_tokens) AS total_tokens, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, count(*) AS request_count,
       coalesce(sum(cost_nanos), 0) AS cost_nanos, sum(cost_nanos IS NULL) AS unpriced_requests
FROM events WHERE kind = 'consume' GROUP BY thread_id;
