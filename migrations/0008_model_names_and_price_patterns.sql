-- 0008: one model is one row everywhere, and a price names an exact model or an explicit pattern.
--
-- 1. Model names are normalised once, by one rule written here and in `ModelName.normalized`
--    (Swift; SchemaFloorTests-style `ModelNameTests` proves the two agree): ASCII whitespace
--    (space, tab, LF, VT, FF, CR) trimmed from both ends, then ASCII letters lowercased (SQLite's
--    `lower()` is ASCII-only, so nothing else is folded). `events.model` keeps the text as
--    recorded (history is never rewritten); every derived table, view, filter and price lookup
--    uses the normalised name, so `GPT-4o` and ` gpt-4o` are one row with gpt-4o's sums. The
--    rollups are regrouped under the rule here; the pending and `*_from_events` views group by it.
--
-- 2. Prices: a row of `model_prices` names an exact (normalised) model, or a pattern: a literal
--    followed by one trailing `*` (`gpt-4o-20*`). The most specific row wins: an exact name beats
--    every pattern, a longer literal beats a shorter one; among the rows of that name or pattern,
--    the latest start not after the event. There are no implicit prefixes any more, so `o1` no
--    longer prices `o1-mini`.
--
--    Consumes recorded before this migration were priced by the old rule (the longest prefix of
--    `lower(model)`, untrimmed) and keep that cost. `legacy_pricing.last_event_id` is the last
--    event the old rule priced; the rows of the old table are kept as they were, marked
--    `legacy_prefix = 1`, and the cost check (`event_prices` here, `PriceTable` in Swift) uses
--    them with the old rule up to that event and the new rows with the new rule after it. Each
--    old row becomes, from its own start, an exact row plus the dated-variant pattern `NAME-20*`
--    (so a ledger's own prefix prices carry on for the name and its dated variants, and nothing
--    else). model_prices is rebuilt (same ids, same values) because its UNIQUE constraint must
--    now tell a legacy row from a new row of the same text.

-- Part 1: the rollups under the rule (derived tables only).
CREATE TABLE usage_rollup_regrouped AS
SELECT usage_window, day, org_id, user_id, agent_id, lower(trim(model, char(32, 9, 10, 11, 12, 13))) AS model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(request_count) AS request_count, sum(cost_nanos) AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(latency_ms_sum) AS latency_ms_sum,
       sum(latency_count) AS latency_count
FROM usage_rollup GROUP BY 1, 2, 3, 4, 5, 6;
DELETE FROM usage_rollup;
INSERT INTO usage_rollup SELECT * FROM usage_rollup_regrouped;
DROP TABLE usage_rollup_regrouped;

CREATE TABLE usage_agent_model_regrouped AS
SELECT usage_window, agent_id, lower(trim(model, char(32, 9, 10, 11, 12, 13))) AS model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(request_count) AS request_count, sum(cost_nanos) AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(latency_ms_sum) AS latency_ms_sum,
       sum(latency_count) AS latency_count
FROM usage_agent_model GROUP BY 1, 2, 3;
DELETE FROM usage_agent_model;
INSERT INTO usage_agent_model SELECT * FROM usage_agent_model_regrouped;
DROP TABLE usage_agent_model_regrouped;

DROP VIEW usage_rollup_pending;
CREATE VIEW usage_rollup_pending AS
SELECT (SELECT usage_window FROM ledger_settings WHERE id = 1) AS usage_window,
       timestamp_us / 86400000000 AS day,
       coalesce(org_id, '') AS org_id, coalesce(user_id, '') AS user_id,
       coalesce(agent_id, '') AS agent_id, coalesce(lower(trim(model, char(32, 9, 10, 11, 12, 13))), '') AS model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, count(*) AS request_count,
       coalesce(sum(cost_nanos), 0) AS cost_nanos, sum(cost_nanos IS NULL) AS unpriced_requests,
       coalesce(sum(latency_ms), 0) AS latency_ms_sum, count(latency_ms) AS latency_count
FROM events
WHERE id > (SELECT rolled_up_to FROM ledger_settings WHERE id = 1) AND kind = 'consume'
GROUP BY 5, 6, 2, 3, 4;

DROP VIEW usage_agent_model_pending;
CREATE VIEW usage_agent_model_pending AS
SELECT (SELECT usage_window FROM ledger_settings WHERE id = 1) AS usage_window,
       coalesce(agent_id, '') AS agent_id, coalesce(lower(trim(model, char(32, 9, 10, 11, 12, 13))), '') AS model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, count(*) AS request_count,
       coalesce(sum(cost_nanos), 0) AS cost_nanos, sum(cost_nanos IS NULL) AS unpriced_requests,
       coalesce(sum(latency_ms), 0) AS latency_ms_sum, count(latency_ms) AS latency_count
FROM events
WHERE id > (SELECT rolled_up_to FROM ledger_settings WHERE id = 1) AND kind = 'consume'
GROUP BY 2, 3;

DROP VIEW usage_rollup_from_events;
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
    coalesce(lower(trim(model, char(32, 9, 10, 11, 12, 13))), '') AS model,
    sum(min(prompt_tokens, 1000000000)) AS prompt_tokens,
    sum(min(completion_tokens, 1000000000)) AS completion_tokens,
    count(*) AS request_count,
    coalesce(sum(min(cost_nanos, 20000000000000000)), 0) AS cost_nanos,
    sum(cost_nanos IS NULL) AS unpriced_requests,
    coalesce(sum(min(latency_ms, 604800000)), 0) AS latency_ms_sum,
    count(latency_ms) AS latency_count
FROM numbered
WHERE kind = 'consume'
GROUP BY 1, 2, 3, 4, 5, 6;

-- Part 2: prices. The view that reads model_prices goes first: renaming a table checks the views.
DROP VIEW event_prices;

CREATE TABLE model_prices_rebuilt (
    id INTEGER PRIMARY KEY,
    -- A normalised model name (exact), or a normalised literal followed by one trailing '*' (a
    -- pattern). Legacy rows (before 0008): a prefix of lower(model), matched by the old rule.
    model_pattern TEXT NOT NULL CHECK (
        length(model_pattern) > 0 AND model_pattern = lower(model_pattern)
        AND (legacy_prefix = 1
             OR (model_pattern = trim(model_pattern, char(32, 9, 10, 11, 12, 13)) AND model_pattern <> '*'
                 AND instr(substr(model_pattern, 1, length(model_pattern) - 1), '*') = 0))),
    prompt_nanos_per_token INTEGER NOT NULL CHECK (prompt_nanos_per_token >= 0),
    completion_nanos_per_token INTEGER NOT NULL CHECK (completion_nanos_per_token >= 0),
    -- UTC microseconds: the price holds for events at or after this time.
    effective_from_us INTEGER NOT NULL CHECK (effective_from_us >= 0),
    source TEXT NOT NULL,
    -- 1: a row of the old longest-prefix rule, which prices only the events up to
    -- legacy_pricing.last_event_id; 0: an exact name or a pattern, for every later event.
    legacy_prefix INTEGER NOT NULL DEFAULT 0 CHECK (legacy_prefix IN (0, 1)),
    UNIQUE (model_pattern, effective_from_us, legacy_prefix)
) STRICT;
INSERT INTO model_prices_rebuilt (id, model_pattern, prompt_nanos_per_token, completion_nanos_per_token,
                                  effective_from_us, source, legacy_prefix)
SELECT id, model_prefix, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source, 1
FROM model_prices ORDER BY id;
DROP TRIGGER model_prices_forbid_delete;
DROP TRIGGER model_prices_forbid_update;
DROP TABLE model_prices;
ALTER TABLE model_prices_rebuilt RENAME TO model_prices;

-- Each old row, from its own start, as an exact name and its dated variants (trimmed; a legacy
-- prefix that holds a '*' or only spaces has no counterpart, and of two that trim to the same
-- name at the same start the first is kept).
INSERT OR IGNORE INTO model_prices (model_pattern, prompt_nanos_per_token, completion_nanos_per_token,
                                    effective_from_us, source)
SELECT name || suffix, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source
FROM (SELECT id, trim(model_pattern, char(32, 9, 10, 11, 12, 13)) AS name, prompt_nanos_per_token,
             completion_nanos_per_token, effective_from_us, source
      FROM model_prices WHERE legacy_prefix = 1)
CROSS JOIN (SELECT '' AS suffix UNION ALL SELECT '-20*')
WHERE name <> '' AND instr(name, '*') = 0
ORDER BY id, suffix;

CREATE TRIGGER model_prices_forbid_delete BEFORE DELETE ON model_prices
BEGIN
    SELECT RAISE(ABORT, 'model_prices is append-only: add a row with a later effective_from_us');
END;

CREATE TRIGGER model_prices_forbid_update BEFORE UPDATE ON model_prices
BEGIN
    SELECT RAISE(ABORT, 'model_prices is append-only: add a row with a later effective_from_us');
END;

CREATE TABLE legacy_pricing (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    -- The last event recorded before 0008: consumes up to it were priced by the legacy rows.
    last_event_id INTEGER NOT NULL
) STRICT;
INSERT INTO legacy_pricing (id, last_event_id) VALUES (1, (SELECT coalesce(max(id), 0) FROM events));

CREATE TRIGGER legacy_pricing_forbid_delete BEFORE DELETE ON legacy_pricing
BEGIN
    SELECT RAISE(ABORT, 'legacy_pricing is fixed by migration 0008');
END;

CREATE TRIGGER legacy_pricing_forbid_update BEFORE UPDATE ON legacy_pricing
BEGIN
    SELECT RAISE(ABORT, 'legacy_pricing is fixed by migration 0008');
END;

-- The price of each consume event, recomputed from model_prices (verify compares it with
-- cost_nanos): the old rule up to legacy_pricing.last_event_id, the new one after it.
CREATE VIEW event_prices AS
SELECT
    events.id AS event_id,
    CASE WHEN events.id <= (SELECT last_event_id FROM legacy_pricing WHERE id = 1) THEN
        (SELECT events.prompt_tokens * p.prompt_nanos_per_token + events.completion_tokens * p.completion_nanos_per_token
         FROM model_prices AS p
         WHERE p.legacy_prefix = 1
           AND substr(lower(events.model), 1, length(p.model_pattern)) = p.model_pattern
           AND p.effective_from_us <= events.timestamp_us
         ORDER BY length(p.model_pattern) DESC, p.effective_from_us DESC
         LIMIT 1)
    ELSE
        (SELECT events.prompt_tokens * p.prompt_nanos_per_token + events.completion_tokens * p.completion_nanos_per_token
         FROM model_prices AS p
         WHERE p.legacy_prefix = 0
           AND p.effective_from_us <= events.timestamp_us
           AND (p.model_pattern = lower(trim(events.model, char(32, 9, 10, 11, 12, 13)))
                OR (substr(p.model_pattern, -1) = '*'
                    AND substr(lower(trim(events.model, char(32, 9, 10, 11, 12, 13))), 1, length(p.model_pattern) - 1)
                        = substr(p.model_pattern, 1, length(p.model_pattern) - 1)))
         ORDER BY substr(p.model_pattern, -1) = '*', length(p.model_pattern) DESC, p.effective_from_us DESC
         LIMIT 1)
    END AS cost_nanos
FROM events
WHERE events.kind = 'consume';
