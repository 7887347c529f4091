-- 0007: a limit change re-arms the thresholds that lie above the thread's new percentage.
--
-- Thresholds fire once per window, and until now only a reset or a cleanup re-armed them. So a
-- thread that crossed 75/90/95 % at max 100 and then had its max raised to 1,000 spent its way to
-- 1,000 of 1,000 without a single warning: the crossings of the old max still counted as fired.
-- Now a `limit` event for an open thread removes from thread_thresholds every threshold the
-- thread no longer reaches under the new max (spent * 100 < percent * max, or a max of 0, under
-- which nothing is reached), so each fires again when a consume crosses it under the new max.
-- The thresholds still reached stay crossed: lowering the max never fires one again. A limit
-- fires nothing by itself; the next consume records the crossings it reaches (caused_by stays a
-- consume).
--
-- thread_thresholds_from_events, which verify compares with the table, applies the same rule:
-- a crossing in the current window counts unless a later limit of that window re-armed it,
-- judged by the thread's spent tokens in the window when the limit was recorded. It reads only
-- the limits that follow a crossing, and sums the consumes before them in one pass over the
-- events (CROSS JOIN fixes the loop order, `+id` keeps SQLite from using id as a rowid range per
-- limit, `+kind` from building an automatic index on the events), so verify stays linear in the
-- events.
--
-- events_apply_other is re-created whole (a trigger cannot be altered); only its limit statement
-- is new, the rest is 0004's text. thread_thresholds is then derived again under the new rule,
-- so a ledger that raised a limit after a crossing before this migration re-arms those
-- thresholds now, and verify agrees with it.

DROP TRIGGER events_apply_other;

-- Every other kind: each statement applies to one kind and does nothing for the others.
CREATE TRIGGER events_apply_other AFTER INSERT ON events WHEN NEW.kind <> 'consume'
BEGIN
    -- open: a new life at the default max; limit: a new max (opening the thread if needed).
    INSERT INTO thread_state (thread_id, max_tokens, opened_event_id, window_event_id)
    SELECT NEW.thread_id, NEW.max_tokens, NEW.id, NEW.id WHERE NEW.kind = 'open';
    INSERT INTO thread_state (thread_id, max_tokens, opened_event_id, window_event_id)
    SELECT NEW.thread_id, NEW.max_tokens, NEW.id, NEW.id WHERE NEW.kind = 'limit'
    ON CONFLICT (thread_id) DO UPDATE SET max_tokens = excluded.max_tokens;
    -- limit: the thresholds the thread no longer reaches under the new max are armed again.
    DELETE FROM thread_thresholds
    WHERE NEW.kind = 'limit' AND thread_id = NEW.thread_id
      AND (NEW.max_tokens = 0
           OR (SELECT (s.prompt_tokens + s.completion_tokens) * 100 FROM thread_state AS s WHERE s.thread_id = NEW.thread_id)
              < threshold_percent * NEW.max_tokens);
    -- reset: a new window; cleanup: the life ends. Both re-arm the thresholds.
    UPDATE thread_state
    SET prompt_tokens = 0, completion_tokens = 0, request_count = 0, window_event_id = NEW.id
    WHERE NEW.kind = 'reset' AND thread_id = NEW.thread_id;
    DELETE FROM thread_state WHERE NEW.kind = 'cleanup' AND thread_id = NEW.thread_id;
    DELETE FROM thread_thresholds WHERE (NEW.kind = 'reset' OR NEW.kind = 'cleanup') AND thread_id = NEW.thread_id;
    DELETE FROM holds WHERE NEW.kind = 'cleanup' AND thread_id = NEW.thread_id;
    INSERT INTO thread_thresholds (thread_id, threshold_percent, event_id)
    SELECT NEW.thread_id, NEW.threshold_percent, NEW.id WHERE NEW.kind = 'threshold';
    UPDATE ledger_settings SET default_max_tokens = NEW.max_tokens WHERE NEW.kind = 'configure' AND id = 1;
    -- The fold (see ledger_settings_fold_usage); usage_reset starts a new window after it.
    UPDATE ledger_settings
    SET rolled_up_to = NEW.id, usage_window = usage_window + (NEW.kind = 'usage_reset')
    WHERE (NEW.id % 1024 = 0 OR NEW.kind = 'usage_reset') AND id = 1;
    -- reserve: a new hold; release and expire end one.
    INSERT INTO holds (reservation_id, thread_id, tokens, expires_at_us)
    SELECT NEW.id, NEW.thread_id, NEW.held_tokens, NEW.expires_at_us WHERE NEW.kind = 'reserve';
    DELETE FROM holds WHERE NEW.reservation_id IS NOT NULL AND reservation_id = NEW.reservation_id;
END;

DROP VIEW thread_thresholds_from_events;

CREATE VIEW thread_thresholds_from_events AS
WITH windows AS MATERIALIZED (
    SELECT thread_id, window_event_id FROM thread_state_from_events
),
-- Every crossing of each open thread's current window.
crossings AS MATERIALIZED (
    SELECT events.id, events.thread_id, events.threshold_percent
    FROM events CROSS JOIN windows ON windows.thread_id = events.thread_id AND +events.id > windows.window_event_id
    WHERE events.kind = 'threshold'
),
-- The limits of those windows that follow a crossing: the only ones that can re-arm one.
limits AS MATERIALIZED (
    SELECT events.id, events.thread_id, events.max_tokens, windows.window_event_id
    FROM events CROSS JOIN windows ON windows.thread_id = events.thread_id AND +events.id > windows.window_event_id
    WHERE events.kind = 'limit'
      AND EXISTS (SELECT 1 FROM crossings WHERE crossings.thread_id = events.thread_id AND crossings.id < events.id)
),
-- The thread's spent tokens in the window when each of those limits was recorded.
spent_at_limits AS MATERIALIZED (
    SELECT limits.id, sum(events.prompt_tokens + events.completion_tokens) AS spent
    FROM events CROSS JOIN limits
        ON limits.thread_id = events.thread_id AND +events.id > limits.window_event_id AND +events.id < limits.id
    WHERE +events.kind = 'consume' AND EXISTS (SELECT 1 FROM limits)
    GROUP BY limits.id
),
rearms AS MATERIALIZED (
    SELECT limits.id, limits.thread_id, limits.max_tokens, coalesce(spent_at_limits.spent, 0) AS spent
    FROM limits LEFT JOIN spent_at_limits ON spent_at_limits.id = limits.id
)
SELECT crossings.thread_id, crossings.threshold_percent, crossings.id AS event_id
FROM crossings
WHERE NOT EXISTS (
    SELECT 1 FROM rearms
    WHERE rearms.thread_id = crossings.thread_id AND rearms.id > crossings.id
      AND (rearms.max_tokens = 0 OR rearms.spent * 100 < crossings.threshold_percent * rearms.max_tokens));

-- thread_thresholds under the new rule.
DELETE FROM thread_thresholds;
INSERT INTO thread_thresholds (thread_id, threshold_percent, event_id)
SELECT thread_id, threshold_percent, event_id FROM thread_thresholds_from_events;
