-- 0011: a refused call's refusal event, once per window, and the cursors of alert webhooks.
--
-- A checked consume or a hold that a budget refuses records nothing of the call, but its
-- refusal is a fact an operator wants to hear of: the first refusal of a window is recorded as a
-- 'refusal' event (the kind 0010 admitted), in the transaction that refused the call:
--   refusal  thread_id (the caller's thread), tokens_used and max_tokens (the thread's total and
--            max when refused; for a scope: the window's tokens), and for a scope refusal the
--            scope, window_start_us, cost_used_nanos and max_cost_nanos (the budget then).
-- A thread refusal belongs to the thread's window (thread_state.window_event_id: its open, limit
-- that opened it, or last reset; 0 while the thread is not open); a scope refusal to the scope's
-- window (scope, window_start_us). The tables below say which windows already have one: the
-- ledger records a refusal only when its window has none. They are derived (kept by the trigger
-- below, recomputed by verify), one row per thread and per scope, the latest window's.

CREATE TABLE thread_refusals (
    thread_id TEXT PRIMARY KEY,
    -- The window the last refusal belongs to: thread_state.window_event_id then, or 0.
    window_event_id INTEGER NOT NULL,
    event_id INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE scope_refusals (
    scope TEXT PRIMARY KEY,
    window_start_us INTEGER NOT NULL,
    event_id INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- A trigger of its own, like 0010's scope trigger: a fourth trigger costs other events under
-- 1 µs, where statements added to events_apply_other cost every event.
-- A cleanup ends the thread's windows and a budget_remove the scope's (as their thresholds).
CREATE TRIGGER events_apply_refusal AFTER INSERT ON events
WHEN NEW.kind = 'refusal' OR NEW.kind = 'cleanup' OR NEW.kind = 'budget_remove'
BEGIN
    INSERT INTO thread_refusals (thread_id, window_event_id, event_id)
    SELECT NEW.thread_id,
           coalesce((SELECT window_event_id FROM thread_state WHERE thread_id = NEW.thread_id), 0), NEW.id
    WHERE NEW.kind = 'refusal' AND NEW.scope IS NULL
    ON CONFLICT (thread_id) DO UPDATE SET window_event_id = excluded.window_event_id, event_id = excluded.event_id;
    INSERT INTO scope_refusals (scope, window_start_us, event_id)
    SELECT NEW.scope, NEW.window_start_us, NEW.id
    WHERE NEW.kind = 'refusal' AND NEW.scope IS NOT NULL
    ON CONFLICT (scope) DO UPDATE SET window_start_us = excluded.window_start_us, event_id = excluded.event_id;
    DELETE FROM thread_refusals WHERE NEW.kind = 'cleanup' AND thread_id = NEW.thread_id;
    DELETE FROM scope_refusals WHERE NEW.kind = 'budget_remove' AND scope = NEW.scope;
END;

-- A scope refusal names its window; a thread refusal has none of a scope's figures.
CREATE TRIGGER events_check_refusal BEFORE INSERT ON events WHEN NEW.kind = 'refusal'
BEGIN
    SELECT RAISE(ABORT, 'a scope refusal needs window_start_us; a thread refusal takes no window_start_us, cost_used_nanos or max_cost_nanos')
    WHERE (NEW.scope IS NOT NULL AND NEW.window_start_us IS NULL)
       OR (NEW.scope IS NULL AND (NEW.window_start_us IS NOT NULL OR NEW.cost_used_nanos IS NOT NULL
                                  OR NEW.max_cost_nanos IS NOT NULL));
END;

-- Alert webhooks (`budget-ledger serve --alert-webhook URL`): per URL, the last event id whose
-- alert the URL acknowledged (a 2xx), or the end of the feed when the URL was first configured.
-- Delivery resumes after it. Not derived from the events: operational state, like the WAL.
CREATE TABLE alert_cursors (
    url TEXT PRIMARY KEY,
    last_event_id INTEGER NOT NULL CHECK (last_event_id >= 0),
    updated_at_us INTEGER NOT NULL
) STRICT;
