-- 0004 (PostgreSQL): a thread's refusal events may be stored, so that a SQLite ledger's history
-- can be copied whole (`budget-ledger copy`, docs/postgres.md "Moving up from SQLite").
--
-- SQLite records the first refused call of each thread window as a `refusal` event (its 0011);
-- nearly every ledger that enforced a budget has some. They change no total: SQLite derives from
-- them only thread_refusals, which decides whether the next refusal of the window is recorded
-- (an alert is sent once per window). This store does not record refusals yet and derives
-- nothing from them; a later migration can derive thread_refusals from the events it now keeps.
-- A refusal that names a scope stays refused, with the scope budgets it belongs to (budget,
-- budget_remove, scope_threshold) and reprices, which would change totals this store does not
-- derive yet. Only 0001's events_check_insert changes; the migrator runs this in one transaction.

CREATE OR REPLACE FUNCTION events_check_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF NEW.kind IN ('budget', 'budget_remove', 'scope_threshold', 'reprice')
       OR (NEW.kind = 'refusal' AND NEW.scope IS NOT NULL) THEN
        RAISE EXCEPTION 'events of kind % are not supported on PostgreSQL yet', NEW.kind
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF NEW.kind IN ('consume', 'reset', 'cleanup', 'threshold', 'reserve', 'release', 'expire')
       AND NOT EXISTS (SELECT 1 FROM thread_state WHERE thread_id = NEW.thread_id) THEN
        RAISE EXCEPTION 'event for a thread that is not open' USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.kind = 'open' AND EXISTS (SELECT 1 FROM thread_state WHERE thread_id = NEW.thread_id) THEN
        RAISE EXCEPTION 'open event for a thread that is already open' USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.reservation_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM events
                       WHERE id = NEW.reservation_id AND kind = 'reserve' AND thread_id = NEW.thread_id) THEN
        RAISE EXCEPTION 'reservation_id does not name a reserve event of this thread' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
