-- 0015: the append-only guard steps aside for the ledger's own writer's consumes (issue 21).
--
-- `events_check_insert` ran on every insert into events, the ledger's consumes included: the
-- per-event limits, the check that an insert replaces no event (INSERT OR REPLACE), that a
-- thread event names an open thread, that a settle names a reserve of its thread, and the
-- scope rules. A BEFORE trigger with six subqueries: SQLite allocates and zeroes its frame and
-- runs its lookups for every row (docs/performance.md, issue 21).
--
-- For a consume the ledger's writer records, each of those is already decided before the
-- insert, in the same transaction: the limits by the request's validation (tokens, latency)
-- and the price check (cost); the idempotency key by the thread read (a recorded key replays,
-- it is never inserted again), and the unique index refuses a duplicate all the same, since
-- the writer never uses INSERT OR REPLACE; an unopened thread is opened first; a settle's hold
-- is read from `holds`, and `events_reservation_end` refuses a second settle; a consume has no
-- scope (its CHECK). So, as 0014 did for a consume's derived state, the guard moves behind a
-- forwarder that steps aside only for a consume by the connection whose `connection_role()` is
-- 'ledger writer':
--   - `events_check_insert` keeps its name and its body, unchanged, as an INSTEAD OF trigger on
--     the view `events_to_guard` (it shows no rows; it exists for its trigger).
--   - `events_guard_insert`, a BEFORE trigger on events, forwards every other row to it: every
--     other kind from the ledger, and every row from any other writer (a plain-SQL writer, our
--     own `Connection` without the role). A program without `connection_role()` cannot prepare
--     an insert into events at all (0014).
-- Every guarantee against a writer using plain SQL is as before (`AppendOnlyTests`,
-- `PlainSQLConsumeTests`); verify still refuses a ledger without either trigger.
--
-- Order: triggers of one kind on one table fire newest first. `events_check_refusal_or_reprice`
-- is created again after the new forwarder, unchanged, so a refusal's or reprice's own check
-- still runs before the guard (the same error for an event that breaks both).

CREATE VIEW events_to_guard AS
SELECT id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens, threshold_percent,
       severity, caused_by, tokens_used, idempotency_key, agent_id, model, provider, latency_ms, metadata,
       org_id, user_id, cost_nanos, held_tokens, expires_at_us, reservation_id, scope, period, max_cost_nanos,
       cost_used_nanos, window_start_us
FROM events WHERE 0;

DROP TRIGGER events_check_insert;

CREATE TRIGGER events_check_insert INSTEAD OF INSERT ON events_to_guard
BEGIN
    -- The per-event limits (see 0006); the ledger's API checks them first with a message
    -- that names the field, so this guards writers that use plain SQL.
    -- (RAISE takes one string literal, hence the long line.)
    SELECT RAISE(ABORT, 'events: a value is above its limit (prompt_tokens and completion_tokens <= 1000000000, held_tokens <= 2000000000, max_tokens <= 1000000000000000, latency_ms <= 604800000, cost_nanos <= 20000000000000000, max_cost_nanos <= 1000000000000000000)')
    WHERE NEW.prompt_tokens > 1000000000 OR NEW.completion_tokens > 1000000000
       OR NEW.held_tokens > 2000000000 OR NEW.max_tokens > 1000000000000000
       OR NEW.latency_ms > 604800000 OR NEW.cost_nanos > 20000000000000000
       OR NEW.max_cost_nanos > 1000000000000000000;
    -- INSERT OR REPLACE deletes the rows it conflicts with without firing delete triggers
    -- (https://www.sqlite.org/lang_conflict.html), so an insert may not conflict with any unique
    -- key of events: the id, the idempotency key, or a hold's end (events_reservation_end).
    -- verify also refuses any other unique index on events, and any gap in the ids.
    SELECT RAISE(ABORT, 'events is append-only: an insert may not replace an existing event')
    WHERE (NEW.id IS NOT NULL AND NEW.id >= 0 AND EXISTS (SELECT 1 FROM events WHERE id = NEW.id))
       OR (NEW.idempotency_key IS NOT NULL
           AND EXISTS (SELECT 1 FROM events WHERE idempotency_key = NEW.idempotency_key))
       OR (NEW.reservation_id IS NOT NULL
           AND EXISTS (SELECT 1 FROM events WHERE reservation_id = NEW.reservation_id
                                              AND (kind = 'consume') = (NEW.kind = 'consume')));
    -- A thread event needs an open thread; an open needs a thread that is not open.
    SELECT RAISE(ABORT, 'event for a thread that is not open')
    WHERE (NEW.kind = 'consume' OR NEW.kind = 'reset' OR NEW.kind = 'cleanup' OR NEW.kind = 'threshold'
           OR NEW.kind = 'reserve' OR NEW.kind = 'release' OR NEW.kind = 'expire')
      AND NOT EXISTS (SELECT 1 FROM thread_state WHERE thread_id = NEW.thread_id);
    SELECT RAISE(ABORT, 'open event for a thread that is already open')
    WHERE NEW.kind = 'open' AND EXISTS (SELECT 1 FROM thread_state WHERE thread_id = NEW.thread_id);
    -- A settle, release or expire names a reserve event of the same thread.
    SELECT RAISE(ABORT, 'reservation_id does not name a reserve event of this thread')
    WHERE NEW.reservation_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM events
                      WHERE id = NEW.reservation_id AND kind = 'reserve' AND thread_id = NEW.thread_id);
    -- A scope is 'global' or a kind and a non-empty id; a model scope names a normalised model.
    SELECT RAISE(ABORT, 'scope must be global, org:ID, user:ID, agent:ID or model:NAME (a normalised model name)')
    WHERE NEW.scope IS NOT NULL
      AND NOT (NEW.scope = 'global'
               OR (substr(NEW.scope, 1, 4) = 'org:' AND length(NEW.scope) > 4)
               OR (substr(NEW.scope, 1, 5) = 'user:' AND length(NEW.scope) > 5)
               OR (substr(NEW.scope, 1, 6) = 'agent:' AND length(NEW.scope) > 6)
               OR (substr(NEW.scope, 1, 6) = 'model:' AND length(NEW.scope) > 6
                   AND substr(NEW.scope, 7) = lower(trim(substr(NEW.scope, 7), char(32, 9, 10, 11, 12, 13)))));
    SELECT RAISE(ABORT, 'budget_remove for a scope that has no budget')
    WHERE NEW.kind = 'budget_remove' AND NOT EXISTS (SELECT 1 FROM scope_budgets WHERE scope = NEW.scope);
END;

CREATE TRIGGER events_guard_insert BEFORE INSERT ON events
WHEN NEW.kind <> 'consume' OR connection_role() IS NOT 'ledger writer'
BEGIN
    INSERT INTO events_to_guard (id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens,
                                 threshold_percent, severity, caused_by, tokens_used, idempotency_key, agent_id,
                                 model, provider, latency_ms, metadata, org_id, user_id, cost_nanos, held_tokens,
                                 expires_at_us, reservation_id, scope, period, max_cost_nanos, cost_used_nanos,
                                 window_start_us)
    VALUES (NEW.id, NEW.timestamp_us, NEW.kind, NEW.thread_id, NEW.prompt_tokens, NEW.completion_tokens,
            NEW.max_tokens, NEW.threshold_percent, NEW.severity, NEW.caused_by, NEW.tokens_used,
            NEW.idempotency_key, NEW.agent_id, NEW.model, NEW.provider, NEW.latency_ms, NEW.metadata,
            NEW.org_id, NEW.user_id, NEW.cost_nanos, NEW.held_tokens, NEW.expires_at_us, NEW.reservation_id,
            NEW.scope, NEW.period, NEW.max_cost_nanos, NEW.cost_used_nanos, NEW.window_start_us);
END;

DROP TRIGGER events_check_refusal_or_reprice;

CREATE TRIGGER events_check_refusal_or_reprice BEFORE INSERT ON events
WHEN NEW.kind = 'refusal' OR NEW.kind = 'reprice'
BEGIN
    INSERT INTO events_to_check (id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens,
                                 threshold_percent, severity, caused_by, tokens_used, idempotency_key, agent_id,
                                 model, provider, latency_ms, metadata, org_id, user_id, cost_nanos, held_tokens,
                                 expires_at_us, reservation_id, scope, period, max_cost_nanos, cost_used_nanos,
                                 window_start_us)
    VALUES (NEW.id, NEW.timestamp_us, NEW.kind, NEW.thread_id, NEW.prompt_tokens, NEW.completion_tokens,
            NEW.max_tokens, NEW.threshold_percent, NEW.severity, NEW.caused_by, NEW.tokens_used,
            NEW.idempotency_key, NEW.agent_id, NEW.model, NEW.provider, NEW.latency_ms, NEW.metadata,
            NEW.org_id, NEW.user_id, NEW.cost_nanos, NEW.held_tokens, NEW.expires_at_us, NEW.reservation_id,
            NEW.scope, NEW.period, NEW.max_cost_nanos, NEW.cost_used_nanos, NEW.window_start_us);
END;
