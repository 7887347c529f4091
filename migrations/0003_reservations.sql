-- 0003: two-phase holds (reservations).
--
-- A reserve event holds held_tokens against a thread's budget until expires_at_us. A hold
-- ends exactly once: settled by a consume carrying its reservation_id, released, or ended by
-- its thread's cleanup. A hold whose time has passed stops counting at once (liveness is
-- derived from the clock at read time, so no background job is needed for correctness); an
-- expire event records it when the ledger notices. A settle after expiry still records the
-- tokens actually spent.

-- Holds not yet settled, released, expired-and-recorded or ended by cleanup. Derived: see holds_from_events.
CREATE TABLE holds (
    reservation_id INTEGER PRIMARY KEY,
    thread_id TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL
) STRICT;

CREATE INDEX holds_thread ON holds (thread_id, expires_at_us);

-- At most one settle and at most one release-or-expire per hold.
CREATE UNIQUE INDEX events_reservation_end ON events (reservation_id, kind = 'consume') WHERE reservation_id IS NOT NULL;

CREATE TRIGGER events_apply_reserve AFTER INSERT ON events WHEN NEW.kind = 'reserve'
BEGIN
    INSERT INTO holds (reservation_id, thread_id, tokens, expires_at_us)
    VALUES (NEW.id, NEW.thread_id, NEW.held_tokens, NEW.expires_at_us);
END;

CREATE TRIGGER events_require_reserve BEFORE INSERT ON events WHEN NEW.reservation_id IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'reservation_id does not name a reserve event of this thread')
    WHERE NOT EXISTS (SELECT 1 FROM events WHERE id = NEW.reservation_id AND kind = 'reserve' AND thread_id = NEW.thread_id);
END;

CREATE TRIGGER events_end_hold AFTER INSERT ON events WHEN NEW.reservation_id IS NOT NULL
BEGIN
    DELETE FROM holds WHERE reservation_id = NEW.reservation_id;
END;

CREATE TRIGGER events_cleanup_holds AFTER INSERT ON events WHEN NEW.kind = 'cleanup'
BEGIN
    DELETE FROM holds WHERE thread_id = NEW.thread_id;
END;

-- holds recomputed from the events alone: reserves of each thread's current life that no
-- later event ended.
CREATE VIEW holds_from_events AS
SELECT reserve.id AS reservation_id, reserve.thread_id, reserve.held_tokens AS tokens, reserve.expires_at_us
FROM thread_life_events AS reserve
WHERE reserve.kind = 'reserve'
  AND NOT EXISTS (SELECT 1 FROM events AS ending WHERE ending.reservation_id = reserve.id);

-- Holds that count now.
CREATE VIEW live_holds AS
SELECT reservation_id, thread_id, tokens, expires_at_us
FROM holds
WHERE expires_at_us > CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER);

-- Every open thread's budget with its live holds: remaining_after_holds is what a new hold or
-- checked consume may still take.
CREATE VIEW thread_budgets_with_holds AS
SELECT budgets.*,
       coalesce(held.tokens, 0) AS held_tokens,
       max(0, budgets.max_tokens - budgets.total_tokens - coalesce(held.tokens, 0)) AS remaining_after_holds
FROM thread_budgets AS budgets
LEFT JOIN (SELECT thread_id, sum(tokens) AS tokens FROM live_holds GROUP BY thread_id) AS held
    ON held.thread_id = budgets.thread_id;
