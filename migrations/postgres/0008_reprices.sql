-- 0008 (PostgreSQL): re-pricing unpriced usage (issue 18), as SQLite's 0012 part 2 and 0013's
-- events_check_reprice: a `reprice` event bills a consume recorded while its model was unpriced.
-- caused_by names the consume, cost_nanos is its cost at the price in force at the consume's own
-- timestamp (`PostgresLedger.reprice`; verify checks it against the price table). History stays
-- as recorded; every billing view shows a consume's corrected cost,
-- coalesce(cost_nanos, its reprice's cost_nanos):
--   - its usage_rollup and usage_agent_model rows (so every *_live, billing_by_* and usage_by_*
--     view, usage_totals and the all-time figures, which sum every window) gain the cost and lose
--     one unpriced request and the consume's unpriced tokens, in the reprice's statement
--     (events_apply_reprices, once per statement and row changed); the rows are the consume's: the usage window it was recorded in
--     (the usage resets before it: the store orders resets and thread writes by a lock, so the
--     count is the window the consume's trigger read), its day, org, user, agent, model, and its
--     thread's shard (0003);
--   - usage_by_thread, which reads events, reads the corrected cost;
--   - the exports read it too (`PostgresSQL.billedEventColumns`).
--
-- A consume is repriced at most once: the unique index events_reprice_once (SQLite checks it in
-- its trigger; here an index, so that two servers repricing the same range cannot both commit a
-- reprice of one consume: the second waits for the first and, with ON CONFLICT DO NOTHING, skips
-- it). Only a consume recorded unpriced may be repriced, and a reprice carries no tokens or
-- latency (events_check_reprice, SQLite's wording), for plain-SQL writers too.
--
-- Composed with the other migrations rather than rewriting their functions: events_check_insert
-- (which refuses the kinds this store does not derive) no longer runs for a reprice, by a WHEN on
-- its trigger, and the reprice has triggers of its own; events_apply ignores the kind (its ELSE).
-- So a later or concurrent migration that replaces those functions keeps working with this one.
-- The cost to other writes: events_apply_reprices is a statement trigger with a transition table,
-- so every INSERT into events also keeps its new rows for it and calls it once (it returns at
-- once when none is a reprice).
--
-- Also SQLite's rule for prices: a billed consume is one priced when recorded, or repriced. A
-- withdrawal (0006's price_withdrawals_check_insert) is refused when a billed consume the price
-- matches has reached its start; an unpriced one no longer counts (a later price may bill it).
-- The migrator runs this in one transaction.

CREATE UNIQUE INDEX events_reprice_once ON events (caused_by) WHERE kind = 'reprice';
-- The usage resets before a consume: its usage window (SQLite's 0012 has the same index).
CREATE INDEX events_usage_resets ON events (id) WHERE kind = 'usage_reset';

DROP TRIGGER events_check_insert ON events;
CREATE TRIGGER events_check_insert BEFORE INSERT ON events
FOR EACH ROW WHEN (NEW.kind <> 'reprice') EXECUTE FUNCTION events_check_insert();

CREATE FUNCTION events_check_reprice() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.cost_nanos IS NULL
       OR NOT EXISTS (SELECT 1 FROM events WHERE id = NEW.caused_by AND kind = 'consume' AND cost_nanos IS NULL) THEN
        RAISE EXCEPTION 'reprice: cost_nanos is required, and caused_by must name a consume recorded unpriced (cost_nanos NULL)'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.prompt_tokens <> 0 OR NEW.completion_tokens <> 0 OR NEW.latency_ms IS NOT NULL THEN
        RAISE EXCEPTION 'reprice: carries only thread_id, caused_by and cost_nanos (no tokens, latency or usage fields)'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER events_check_reprice BEFORE INSERT ON events
FOR EACH ROW WHEN (NEW.kind = 'reprice') EXECUTE FUNCTION events_check_reprice();

-- The consumes' rollup rows gain the reprices' costs and lose them as unpriced: once per
-- statement, per row changed (a transition table), not once per reprice. Updating one row again
-- and again in one transaction makes each update walk every version the transaction left behind
-- (they cannot be pruned before it ends): a reprice of 100,000 consumes that share a few rows,
-- one row trigger per reprice, passed the store's 60 s call timeout. A consume's row is the one
-- of its own shard (0003); a consume recorded before 0003 is in shard 0, so when its own shard
-- has no row of its key, the lowest shard that has one (the views sum the shards).
CREATE FUNCTION events_apply_reprices() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    rows_expected bigint;
    rows_changed bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM inserted WHERE kind = 'reprice') THEN
        RETURN NULL;
    END IF;
    -- One fixed order, as a consume's: usage_rollup, then usage_agent_model.
    WITH corrections AS (
        SELECT (SELECT count(*) FROM events AS u WHERE u.kind = 'usage_reset' AND u.id < c.id) AS usage_window,
               c.timestamp_us / 86400000000 AS day, coalesce(c.org_id, '') AS org_id, coalesce(c.user_id, '') AS user_id,
               coalesce(c.agent_id, '') AS agent_id, coalesce(ledger_model_name(c.model), '') AS model,
               (hashtext(coalesce(c.thread_id, '')) & 63)::smallint AS own_shard,
               r.cost_nanos, c.prompt_tokens + c.completion_tokens AS tokens
        FROM inserted AS r JOIN events AS c ON c.id = r.caused_by
        WHERE r.kind = 'reprice'
    ),
    targets AS (
        SELECT k.*, coalesce(
                   (SELECT x.shard FROM usage_rollup AS x
                    WHERE (x.usage_window, x.day, x.org_id, x.user_id, x.agent_id, x.model, x.shard)
                          = (k.usage_window, k.day, k.org_id, k.user_id, k.agent_id, k.model, k.own_shard)),
                   (SELECT min(x.shard) FROM usage_rollup AS x
                    WHERE (x.usage_window, x.day, x.org_id, x.user_id, x.agent_id, x.model)
                          = (k.usage_window, k.day, k.org_id, k.user_id, k.agent_id, k.model))) AS shard
        FROM corrections AS k
    ),
    sums AS (
        SELECT usage_window, day, org_id, user_id, agent_id, model, shard, sum(cost_nanos) AS cost_nanos,
               count(*) AS requests, sum(tokens) AS tokens
        FROM targets GROUP BY usage_window, day, org_id, user_id, agent_id, model, shard
    ),
    changed AS (
        UPDATE usage_rollup AS u
        SET cost_nanos = u.cost_nanos + s.cost_nanos, unpriced_requests = u.unpriced_requests - s.requests,
            unpriced_tokens = u.unpriced_tokens - s.tokens
        FROM sums AS s
        WHERE (u.usage_window, u.day, u.org_id, u.user_id, u.agent_id, u.model, u.shard)
              = (s.usage_window, s.day, s.org_id, s.user_id, s.agent_id, s.model, s.shard)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM sums), (SELECT count(*) FROM changed) INTO rows_expected, rows_changed;
    IF rows_changed <> rows_expected THEN
        RAISE EXCEPTION 'reprice: usage_rollup has no row for a repriced consume' USING ERRCODE = 'check_violation';
    END IF;
    WITH corrections AS (
        SELECT (SELECT count(*) FROM events AS u WHERE u.kind = 'usage_reset' AND u.id < c.id) AS usage_window,
               coalesce(c.agent_id, '') AS agent_id, coalesce(ledger_model_name(c.model), '') AS model,
               (hashtext(coalesce(c.thread_id, '')) & 63)::smallint AS own_shard,
               r.cost_nanos, c.prompt_tokens + c.completion_tokens AS tokens
        FROM inserted AS r JOIN events AS c ON c.id = r.caused_by
        WHERE r.kind = 'reprice'
    ),
    targets AS (
        SELECT k.*, coalesce(
                   (SELECT x.shard FROM usage_agent_model AS x
                    WHERE (x.usage_window, x.agent_id, x.model, x.shard) = (k.usage_window, k.agent_id, k.model, k.own_shard)),
                   (SELECT min(x.shard) FROM usage_agent_model AS x
                    WHERE (x.usage_window, x.agent_id, x.model) = (k.usage_window, k.agent_id, k.model))) AS shard
        FROM corrections AS k
    ),
    sums AS (
        SELECT usage_window, agent_id, model, shard, sum(cost_nanos) AS cost_nanos, count(*) AS requests,
               sum(tokens) AS tokens
        FROM targets GROUP BY usage_window, agent_id, model, shard
    ),
    changed AS (
        UPDATE usage_agent_model AS u
        SET cost_nanos = u.cost_nanos + s.cost_nanos, unpriced_requests = u.unpriced_requests - s.requests,
            unpriced_tokens = u.unpriced_tokens - s.tokens
        FROM sums AS s
        WHERE (u.usage_window, u.agent_id, u.model, u.shard) = (s.usage_window, s.agent_id, s.model, s.shard)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM sums), (SELECT count(*) FROM changed) INTO rows_expected, rows_changed;
    IF rows_changed <> rows_expected THEN
        RAISE EXCEPTION 'reprice: usage_agent_model has no row for a repriced consume' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER events_apply_reprices AFTER INSERT ON events
REFERENCING NEW TABLE AS inserted
FOR EACH STATEMENT EXECUTE FUNCTION events_apply_reprices();

-- Locks the rollup rows that reprices of the consumes `consume_ids` will change, before the
-- first of them is inserted: every usage_rollup row, in key order, then every usage_agent_model
-- row, in key order (a consume locks one of each, in the same table order), so that reprices wait
-- for one another and for consumes instead of deadlocking (docs/postgres.md, "How locks are
-- taken"). SECURITY DEFINER: a server's role may read the rollups but not lock them FOR UPDATE.
CREATE FUNCTION ledger_lock_reprice_rows(consume_ids bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM 1 FROM usage_rollup AS u
    WHERE (u.usage_window, u.day, u.org_id, u.user_id, u.agent_id, u.model, u.shard) IN (
        SELECT (SELECT count(*) FROM events AS r WHERE r.kind = 'usage_reset' AND r.id < c.id),
               c.timestamp_us / 86400000000, coalesce(c.org_id, ''), coalesce(c.user_id, ''),
               coalesce(c.agent_id, ''), coalesce(ledger_model_name(c.model), ''),
               (hashtext(coalesce(c.thread_id, '')) & 63)::smallint
        FROM events AS c WHERE c.id = ANY (consume_ids) AND c.kind = 'consume')
    ORDER BY u.usage_window, u.day, u.org_id, u.user_id, u.agent_id, u.model, u.shard
    FOR UPDATE OF u;
    PERFORM 1 FROM usage_agent_model AS u
    WHERE (u.usage_window, u.agent_id, u.model, u.shard) IN (
        SELECT (SELECT count(*) FROM events AS r WHERE r.kind = 'usage_reset' AND r.id < c.id),
               coalesce(c.agent_id, ''), coalesce(ledger_model_name(c.model), ''),
               (hashtext(coalesce(c.thread_id, '')) & 63)::smallint
        FROM events AS c WHERE c.id = ANY (consume_ids) AND c.kind = 'consume')
    ORDER BY u.usage_window, u.agent_id, u.model, u.shard
    FOR UPDATE OF u;
END
$$;

-- 0002's per-thread view, with each consume's corrected cost (SQLite's 0012/0013 usage_by_thread).
CREATE OR REPLACE VIEW usage_by_thread AS
WITH corrected AS (
    SELECT thread_id, prompt_tokens, completion_tokens,
           coalesce(cost_nanos, (SELECT r.cost_nanos FROM events AS r WHERE r.caused_by = events.id AND r.kind = 'reprice'))
               AS cost_nanos
    FROM events WHERE kind = 'consume'
)
SELECT thread_id,
       sum(prompt_tokens + completion_tokens)::bigint AS total_tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens, count(*) AS request_count,
       sum(cost_nanos)::bigint AS cost_nanos, count(*) FILTER (WHERE cost_nanos IS NULL) AS unpriced_requests,
       (count(*) FILTER (WHERE cost_nanos IS NULL) = 0)::integer AS cost_complete,
       coalesce(sum(prompt_tokens + completion_tokens) FILTER (WHERE cost_nanos IS NULL), 0)::bigint AS unpriced_tokens
FROM corrected GROUP BY thread_id;

-- 0006's withdrawal check, counting only billed consumes (priced when recorded, or repriced), as
-- SQLite's price_withdrawals_check_insert does.
CREATE OR REPLACE FUNCTION price_withdrawals_check_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    price model_prices%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(72861104930817);
    SELECT * INTO price FROM model_prices WHERE id = NEW.price_id;
    IF price.effective_from_us <= NEW.withdrawn_at_us THEN
        RAISE EXCEPTION 'price_withdrawals: the price is already in effect; supersede it with a later start instead'
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM events AS e
               WHERE e.timestamp_us >= price.effective_from_us AND e.kind = 'consume'
                 AND (e.cost_nanos IS NOT NULL
                      OR EXISTS (SELECT 1 FROM events AS r WHERE r.caused_by = e.id AND r.kind = 'reprice'))
                 AND (ledger_model_name(e.model) = price.model_pattern
                      OR (right(price.model_pattern, 1) = '*'
                          AND left(ledger_model_name(e.model), length(price.model_pattern) - 1)
                              = left(price.model_pattern, -1)))) THEN
        RAISE EXCEPTION 'price_withdrawals: a recorded consume has reached the price''s start; supersede it instead'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
