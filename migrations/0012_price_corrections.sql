-- 0012: correcting prices (issue 15), by appending, like everything else.
--
-- 1. A price that has not taken effect yet can be withdrawn: a row of `price_withdrawals` names
--    it, and every lookup (`event_prices` here; `LedgerSQL.selectPriceForModel` and
--    `selectPrices`, which `PriceCache` and verify's `PriceTable` read, in Swift) skips a
--    withdrawn row, so the lookup falls back to whatever priced the model before. Replacing a
--    future price is a withdrawal and a new row in one transaction, so model_prices is rebuilt
--    (same ids, same values) without its UNIQUE (model_pattern, effective_from_us,
--    legacy_prefix): a trigger now refuses a second row of a pattern and start only while the
--    first is not withdrawn. A withdrawal is refused for a price already in effect at the
--    withdrawal's time, a legacy row, and a price whose start a recorded consume it matches has
--    reached (priced, or repriced): a price in effect can only be superseded from a later start.
--    PriceCache's version is now max(model_prices.id) + max(price_withdrawals.id): both only
--    grow, so every committed change moves it.
--
-- 2. A `reprice` event (admitted by 0010) bills a consume recorded while its model was unpriced:
--    caused_by names the consume, cost_nanos is its cost at the price in force at the consume's
--    own timestamp (verify checks it against the price table). Only unpriced consumes are
--    repriced, each at most once (events_check_reprice; plain-SQL writers included), so a billed
--    cost is never rewritten. The history stays as recorded; every billing view shows a
--    consume's corrected cost, coalesce(cost_nanos, its reprice's cost_nanos):
--      - ledger_settings.all_time_cost_nanos grows by the reprice's cost (0006's capacity rule);
--      - a consume already folded into usage_rollup and usage_agent_model (id <= rolled_up_to):
--        its rows gain the cost and lose one unpriced request, in the BEFORE trigger, so a
--        reprice that itself triggers the fold is not counted twice; its usage window is the
--        number of usage_reset events before it (events_usage_resets finds them);
--      - a pending consume: the *_pending views read the reprice, and so does the next fold;
--      - usage_by_thread, usage_rollup_from_events and ledger_settings_from_events likewise.
--    scope_budgets are left as they are: a budget gates calls as they were made, and the next
--    budget event of a scope re-reads its window from the (corrected) rollups, as verify does.

-- Part 1: withdrawals. The view that reads model_prices goes first (renaming checks the views).
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
    legacy_prefix INTEGER NOT NULL DEFAULT 0 CHECK (legacy_prefix IN (0, 1))
) STRICT;
INSERT INTO model_prices_rebuilt (id, model_pattern, prompt_nanos_per_token, completion_nanos_per_token,
                                  effective_from_us, source, legacy_prefix)
SELECT id, model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source, legacy_prefix
FROM model_prices ORDER BY id;
DROP TRIGGER model_prices_forbid_delete;
DROP TRIGGER model_prices_forbid_update;
DROP TABLE model_prices;
ALTER TABLE model_prices_rebuilt RENAME TO model_prices;
CREATE INDEX model_prices_pattern_start ON model_prices (model_pattern, effective_from_us);

CREATE TRIGGER model_prices_forbid_delete BEFORE DELETE ON model_prices
BEGIN
    SELECT RAISE(ABORT, 'model_prices is append-only: add a row with a later effective_from_us');
END;

CREATE TRIGGER model_prices_forbid_update BEFORE UPDATE ON model_prices
BEGIN
    SELECT RAISE(ABORT, 'model_prices is append-only: add a row with a later effective_from_us');
END;

CREATE TABLE price_withdrawals (
    -- Only grows (rows are never deleted): part of PriceCache's version.
    id INTEGER PRIMARY KEY,
    -- The withdrawn row of model_prices; a row is withdrawn once.
    price_id INTEGER NOT NULL UNIQUE REFERENCES model_prices (id),
    -- UTC microseconds: when it was withdrawn (before the price's start).
    withdrawn_at_us INTEGER NOT NULL CHECK (withdrawn_at_us >= 0),
    source TEXT NOT NULL
) STRICT;

-- INSERT OR REPLACE deletes the rows it conflicts with without firing delete triggers
-- (https://www.sqlite.org/lang_conflict.html), so an insert may not conflict with any row.
CREATE TRIGGER model_prices_check_insert BEFORE INSERT ON model_prices
BEGIN
    SELECT RAISE(ABORT, 'model_prices is append-only: an insert may not replace an existing row')
    WHERE NEW.id IS NOT NULL AND EXISTS (SELECT 1 FROM model_prices WHERE id = NEW.id);
    SELECT RAISE(ABORT, 'model_prices: the pattern already has a price from that time (withdraw it first)')
    WHERE EXISTS (SELECT 1 FROM model_prices AS p
                  WHERE p.model_pattern = NEW.model_pattern AND p.effective_from_us = NEW.effective_from_us
                    AND p.legacy_prefix = NEW.legacy_prefix
                    AND NOT EXISTS (SELECT 1 FROM price_withdrawals AS w WHERE w.price_id = p.id));
END;

CREATE TRIGGER price_withdrawals_check_insert BEFORE INSERT ON price_withdrawals
BEGIN
    SELECT RAISE(ABORT, 'price_withdrawals is append-only: the price is already withdrawn, or the id is taken')
    WHERE EXISTS (SELECT 1 FROM price_withdrawals WHERE price_id = NEW.price_id OR id = NEW.id);
    SELECT RAISE(ABORT, 'price_withdrawals: price_id must name a price of the current rule (not a legacy prefix row)')
    WHERE NOT EXISTS (SELECT 1 FROM model_prices WHERE id = NEW.price_id AND legacy_prefix = 0);
    SELECT RAISE(ABORT, 'price_withdrawals: the price is already in effect; supersede it with a later start instead')
    WHERE (SELECT effective_from_us FROM model_prices WHERE id = NEW.price_id) <= NEW.withdrawn_at_us;
    SELECT RAISE(ABORT, 'price_withdrawals: a recorded consume has reached the price''s start; supersede it instead')
    WHERE EXISTS (
        SELECT 1 FROM model_prices AS p, events AS e
        WHERE p.id = NEW.price_id AND e.timestamp_us >= p.effective_from_us AND e.kind = 'consume'
          AND (e.cost_nanos IS NOT NULL
               OR EXISTS (SELECT 1 FROM events AS r WHERE r.caused_by = e.id AND r.kind = 'reprice'))
          AND (lower(trim(e.model, char(32, 9, 10, 11, 12, 13))) = p.model_pattern
               OR (substr(p.model_pattern, -1) = '*'
                   AND substr(lower(trim(e.model, char(32, 9, 10, 11, 12, 13))), 1, length(p.model_pattern) - 1)
                       = substr(p.model_pattern, 1, length(p.model_pattern) - 1))));
END;

CREATE TRIGGER price_withdrawals_forbid_delete BEFORE DELETE ON price_withdrawals
BEGIN
    SELECT RAISE(ABORT, 'price_withdrawals is append-only');
END;

CREATE TRIGGER price_withdrawals_forbid_update BEFORE UPDATE ON price_withdrawals
BEGIN
    SELECT RAISE(ABORT, 'price_withdrawals is append-only');
END;

-- 0008's view, skipping withdrawn rows (legacy rows are never withdrawn).
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
           AND p.id NOT IN (SELECT price_id FROM price_withdrawals)
         ORDER BY substr(p.model_pattern, -1) = '*', length(p.model_pattern) DESC, p.effective_from_us DESC
         LIMIT 1)
    END AS cost_nanos
FROM events
WHERE events.kind = 'consume';

-- Part 2: reprices.
CREATE INDEX events_usage_resets ON events (id) WHERE kind = 'usage_reset';

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
    SET cost_nanos = cost_nanos + NEW.cost_nanos, unpriced_requests = unpriced_requests - 1
    WHERE (usage_window, day, org_id, user_id, agent_id, model) = (
        SELECT (SELECT count(*) FROM events AS r WHERE r.kind = 'usage_reset' AND r.id < c.id),
               c.timestamp_us / 86400000000, coalesce(c.org_id, ''), coalesce(c.user_id, ''), coalesce(c.agent_id, ''),
               coalesce(lower(trim(c.model, char(32, 9, 10, 11, 12, 13))), '')
        FROM events AS c
        WHERE c.id = NEW.caused_by AND c.id <= (SELECT rolled_up_to FROM ledger_settings WHERE id = 1));
    UPDATE usage_agent_model
    SET cost_nanos = cost_nanos + NEW.cost_nanos, unpriced_requests = unpriced_requests - 1
    WHERE (usage_window, agent_id, model) = (
        SELECT (SELECT count(*) FROM events AS r WHERE r.kind = 'usage_reset' AND r.id < c.id),
               coalesce(c.agent_id, ''), coalesce(lower(trim(c.model, char(32, 9, 10, 11, 12, 13))), '')
        FROM events AS c
        WHERE c.id = NEW.caused_by AND c.id <= (SELECT rolled_up_to FROM ledger_settings WHERE id = 1));
END;

-- The pending views of 0008, with each consume's corrected cost.
DROP VIEW usage_rollup_pending;
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
       coalesce(sum(latency_ms), 0) AS latency_ms_sum, count(latency_ms) AS latency_count
FROM events
WHERE id > (SELECT rolled_up_to FROM ledger_settings WHERE id = 1) AND kind = 'consume'
GROUP BY 5, 6, 2, 3, 4;

DROP VIEW usage_agent_model_pending;
CREATE VIEW usage_agent_model_pending AS
SELECT (SELECT usage_window FROM ledger_settings WHERE id = 1) AS usage_window,
       coalesce(agent_id, '') AS agent_id, coalesce(lower(trim(model, char(32, 9, 10, 11, 12, 13))), '') AS model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens, count(*) AS request_count,
       coalesce(sum(coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r
                                          WHERE r.caused_by = events.id AND r.kind = 'reprice'))), 0) AS cost_nanos,
       sum(coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r
                                 WHERE r.caused_by = events.id AND r.kind = 'reprice')) IS NULL) AS unpriced_requests,
       coalesce(sum(latency_ms), 0) AS latency_ms_sum, count(latency_ms) AS latency_count
FROM events
WHERE id > (SELECT rolled_up_to FROM ledger_settings WHERE id = 1) AND kind = 'consume'
GROUP BY 2, 3;

-- The recomputations for the sqlite3 shell, with reprices.
DROP VIEW usage_agent_model_from_events;
DROP VIEW usage_rollup_from_events;
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
    count(latency_ms) AS latency_count
FROM numbered
WHERE kind = 'consume'
GROUP BY 1, 2, 3, 4, 5, 6;

CREATE VIEW usage_agent_model_from_events AS
SELECT usage_window, agent_id, model,
       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
       sum(request_count) AS request_count, sum(cost_nanos) AS cost_nanos,
       sum(unpriced_requests) AS unpriced_requests, sum(latency_ms_sum) AS latency_ms_sum,
       sum(latency_count) AS latency_count
FROM usage_rollup_from_events
GROUP BY usage_window, agent_id, model;

DROP VIEW ledger_settings_from_events;
CREATE VIEW ledger_settings_from_events AS
WITH all_time AS (
    SELECT coalesce(sum(min(prompt_tokens, 1000000000)), 0) AS prompt_tokens,
           coalesce(sum(min(completion_tokens, 1000000000)), 0) AS completion_tokens,
           coalesce(sum(min(cost_nanos, 20000000000000000)), 0)
               + (SELECT coalesce(sum(cost_nanos), 0) FROM events WHERE kind = 'reprice') AS cost_nanos,
           coalesce(sum(min(latency_ms, 604800000)), 0) AS latency_ms
    FROM events WHERE kind = 'consume'
)
SELECT 1 AS id,
       coalesce((SELECT max_tokens FROM events WHERE kind = 'configure' ORDER BY id DESC LIMIT 1), 100000)
           AS default_max_tokens,
       (SELECT count(*) FROM events WHERE kind = 'usage_reset') AS usage_window,
       all_time.prompt_tokens AS all_time_prompt_tokens,
       all_time.completion_tokens AS all_time_completion_tokens,
       all_time.cost_nanos AS all_time_cost_nanos,
       all_time.latency_ms AS all_time_latency_ms
FROM all_time;

-- 0009's per-thread view, with each consume's corrected cost.
DROP VIEW usage_by_thread;
CREATE VIEW usage_by_thread AS
WITH corrected AS (
    SELECT thread_id, prompt_tokens, completion_tokens,
           coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r WHERE r.caused_by = events.id AND r.kind = 'reprice'))
               AS cost_nanos
    FROM events WHERE kind = 'consume'
)
SELECT thread_id,
       sum(min(prompt_tokens, 1000000000) + min(completion_tokens, 1000000000)) AS total_tokens,
       sum(min(prompt_tokens, 1000000000)) AS prompt_tokens,
       sum(min(completion_tokens, 1000000000)) AS completion_tokens, count(*) AS request_count,
       sum(min(cost_nanos, 20000000000000000)) AS cost_nanos, sum(cost_nanos IS NULL) AS unpriced_requests,
       sum(cost_nanos IS NULL) = 0 AS cost_complete
FROM corrected GROUP BY thread_id;
