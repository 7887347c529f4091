-- 0009 (PostgreSQL): a thread's refusals recorded and derived as on SQLite (its 0011), so a
-- refused call leaves the same event on both stores and the alert webhooks post it once per
-- thread window (issue 18: the same semantics on both stores).
--
-- SQLite records the first refused call of each thread window as a `refusal` event without a
-- scope (0004 already admits such events here, for copies) and derives thread_refusals: per
-- thread, the window its last refusal fell in (thread_state.window_event_id then, 0 while the
-- thread was not open) and that refusal's id. The store inserts a refusal only when the thread's
-- current window has none (`PostgresLedger.recordRefusal`); a cleanup ends the thread's row, as
-- SQLite's trigger does. Refusals copied from SQLite before this migration are derived below
-- with the rule verify applies (PostgresVerifySQL.threadRefusalsFromEvents), so verify agrees.
-- The trigger is SECURITY DEFINER, like 0001's: the server's role needs only SELECT on the
-- table. The migrator runs this in one transaction.

CREATE TABLE thread_refusals (
    thread_id text PRIMARY KEY,
    -- The window the last refusal belongs to: thread_state.window_event_id then, or 0.
    window_event_id bigint NOT NULL,
    event_id bigint NOT NULL
);

CREATE FUNCTION events_apply_thread_refusal() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.kind = 'cleanup' THEN
        DELETE FROM thread_refusals WHERE thread_id = NEW.thread_id;
    ELSE
        INSERT INTO thread_refusals (thread_id, window_event_id, event_id)
        VALUES (NEW.thread_id,
                coalesce((SELECT window_event_id FROM thread_state WHERE thread_id = NEW.thread_id), 0), NEW.id)
        ON CONFLICT (thread_id) DO UPDATE SET window_event_id = excluded.window_event_id, event_id = excluded.event_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_apply_thread_refusal AFTER INSERT ON events
FOR EACH ROW WHEN (NEW.kind = 'cleanup' OR (NEW.kind = 'refusal' AND NEW.scope IS NULL))
EXECUTE FUNCTION events_apply_thread_refusal();

-- The refusals already stored (copied from SQLite): each thread's last refusal of its current
-- life (after its last cleanup), in the window the thread had then.
INSERT INTO thread_refusals (thread_id, window_event_id, event_id)
WITH life AS (
    SELECT e.* FROM events AS e
    JOIN (SELECT thread_id, coalesce(max(id) FILTER (WHERE kind = 'cleanup'), 0) AS ended_after
          FROM events WHERE thread_id IS NOT NULL GROUP BY thread_id) AS ends
        ON ends.thread_id = e.thread_id AND e.id > ends.ended_after
),
last_refusal AS (
    SELECT DISTINCT ON (thread_id) thread_id, id FROM life
    WHERE kind = 'refusal' AND scope IS NULL ORDER BY thread_id, id DESC
)
SELECT r.thread_id,
       coalesce(greatest((SELECT min(o.id) FROM life AS o
                          WHERE o.thread_id = r.thread_id AND o.kind IN ('open', 'limit') AND o.id < r.id),
                         (SELECT max(x.id) FROM life AS x
                          WHERE x.thread_id = r.thread_id AND x.kind = 'reset' AND x.id < r.id)), 0),
       r.id
FROM last_refusal AS r;
