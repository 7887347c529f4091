-- 0016: time ranges read through blocks of ids kept at the fold, not through an index on every
-- event's timestamp (issue 21: a consume's commit writes 3 pages, not 5).
--
-- `events_timestamp` (an index on events.timestamp_us) cost every commit a page: the index's
-- leaf that the new timestamp lands in (docs/performance.md, "Why the single caller stops
-- here"). What read it were the time ranges of exports, rollups, repricing, the check that a
-- new price would re-price a billed consume, and the same check in `price_withdrawals_check_insert`.
--
-- Those ranges now map to id ranges through `event_time_blocks`: one row per block of 1,024 ids
-- (block = (id - 1) / 1024), holding the least and greatest timestamp of the block's folded
-- events (id <= ledger_settings.rolled_up_to, every kind). It is written only at a fold, by
-- `ledger_settings_fold_time_blocks`, so a consume's commit no longer writes anything for its
-- timestamp. Timestamps are not monotonic in id (an import carries historical times; a clock
-- steps back), so a block's bounds are a min and a max, never the first and the last event's.
-- The table is canonical: it equals
--     SELECT (id - 1) / 1024, min(timestamp_us), max(timestamp_us) FROM events
--     WHERE id <= rolled_up_to GROUP BY 1
-- whenever the fold runs, over any range of ids, at any event (`event_time_blocks_from_events`
-- says it in SQL; verify recomputes it in its one pass).
--
-- `event_id_ranges` is how a reader uses it: one row per block (its first id, and its last id
-- not past the fold mark, so the block holding the mark ends there) with the block's bounds,
-- and one row for the pending tail after the mark (every event not folded yet, whatever its
-- time: at most a fold period of them). A range query keeps the rows whose bounds meet the
-- range, joins events by id between the row's first and last id (a rowid range, never a scan of
-- events), and keeps its own filter on each event's timestamp, so it returns exactly what a scan
-- of every event would. No id is in two rows: the blocks stop at the mark, the tail starts after it.
-- The join names events NOT INDEXED and the ranges first (CROSS JOIN fixes SQLite's loop order):
-- without statistics the planner would otherwise build an automatic index over all of events
-- (on kind) for each query, a full scan (https://www.sqlite.org/optoverview.html#autoindex).

CREATE TABLE event_time_blocks (
    -- (id - 1) / 1024: ids 1 … 1024 are block 0.
    block INTEGER PRIMARY KEY,
    -- UTC microseconds: the least and greatest timestamp of the block's folded events.
    min_timestamp_us INTEGER NOT NULL,
    max_timestamp_us INTEGER NOT NULL
) STRICT;

-- A range starting at a recent time (a new price's start, a recent export) finds its few blocks
-- without reading every row; written only at a fold.
CREATE INDEX event_time_blocks_max ON event_time_blocks (max_timestamp_us);

INSERT INTO event_time_blocks (block, min_timestamp_us, max_timestamp_us)
SELECT (id - 1) / 1024, min(timestamp_us), max(timestamp_us)
FROM events WHERE id <= (SELECT rolled_up_to FROM ledger_settings WHERE id = 1)
GROUP BY 1;

-- After the fold's own trigger (`ledger_settings_fold_usage`, BEFORE UPDATE), and apart from it:
-- a BEFORE trigger may not change the row being updated, and this one does not need to, it only
-- reads the new and old mark. The blocks of the newly folded ids take the least of the mins and
-- the greatest of the maxes, so a fold that ends inside a block and the next that goes on in it
-- give the block's bounds over all its folded events. The WHERE on the SELECT is what SQLite's
-- upsert grammar needs (https://www.sqlite.org/lang_upsert.html, "Parsing Ambiguity").
CREATE TRIGGER ledger_settings_fold_time_blocks AFTER UPDATE OF rolled_up_to ON ledger_settings
WHEN NEW.rolled_up_to > OLD.rolled_up_to
BEGIN
    INSERT INTO event_time_blocks (block, min_timestamp_us, max_timestamp_us)
    SELECT (id - 1) / 1024, min(timestamp_us), max(timestamp_us)
    FROM events WHERE id > OLD.rolled_up_to AND id <= NEW.rolled_up_to
    GROUP BY 1
    ON CONFLICT (block) DO UPDATE SET
        min_timestamp_us = min(min_timestamp_us, excluded.min_timestamp_us),
        max_timestamp_us = max(max_timestamp_us, excluded.max_timestamp_us);
END;

-- Every folded block as an id range with its bounds, then the pending tail (bounds that meet
-- every range). See the header for how a range query reads it.
CREATE VIEW event_id_ranges AS
SELECT b.block * 1024 + 1 AS first_id, min(b.block * 1024 + 1024, s.rolled_up_to) AS last_id,
       b.min_timestamp_us AS min_timestamp_us, b.max_timestamp_us AS max_timestamp_us
FROM event_time_blocks AS b, ledger_settings AS s
WHERE s.id = 1
UNION ALL
SELECT rolled_up_to + 1, 9223372036854775807, -9223372036854775808, 9223372036854775807
FROM ledger_settings WHERE id = 1;

-- event_time_blocks recomputed from the events alone (as the other *_from_events views).
CREATE VIEW event_time_blocks_from_events AS
SELECT (id - 1) / 1024 AS block, min(timestamp_us) AS min_timestamp_us, max(timestamp_us) AS max_timestamp_us
FROM events WHERE id <= (SELECT rolled_up_to FROM ledger_settings WHERE id = 1)
GROUP BY 1;

-- 0012's trigger with the same checks; the consumes at or after the price's start are read
-- through event_id_ranges. The join is the one Swift writes for its range queries
-- (`TimeRangeSQL` in Sources/BudgetLedger), word for word: EventTimeBlocksTests fails when the
-- two part.
DROP TRIGGER price_withdrawals_check_insert;

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
        SELECT 1
        FROM model_prices AS p,
             event_id_ranges AS ranges CROSS JOIN events AS e NOT INDEXED ON e.id BETWEEN ranges.first_id AND ranges.last_id
        WHERE p.id = NEW.price_id
          AND ranges.max_timestamp_us >= p.effective_from_us AND e.timestamp_us >= p.effective_from_us
          AND e.kind = 'consume'
          AND (e.cost_nanos IS NOT NULL
               OR EXISTS (SELECT 1 FROM events AS r WHERE r.caused_by = e.id AND r.kind = 'reprice'))
          AND (lower(trim(e.model, char(32, 9, 10, 11, 12, 13))) = p.model_pattern
               OR (substr(p.model_pattern, -1) = '*'
                   AND substr(lower(trim(e.model, char(32, 9, 10, 11, 12, 13))), 1, length(p.model_pattern) - 1)
                       = substr(p.model_pattern, 1, length(p.model_pattern) - 1))));
END;

DROP INDEX events_timestamp;
