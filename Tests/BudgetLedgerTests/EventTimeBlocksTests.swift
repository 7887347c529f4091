@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// Migration 0016: time ranges are read through `event_time_blocks` (kept at the fold) and the
/// pending tail instead of an index on every event's timestamp. These tests prove the blocks stay
/// canonical over folds of any size and place, that every range query answers what a scan of all
/// events answers, whatever the order of the timestamps, and that verify and the migration keep them.
@Suite("event_time_blocks: time ranges through blocks kept at the fold")
struct EventTimeBlocksTests {
    static let start: Int64 = 1_764_400_000_000_000
    static let minute: Int64 = 60_000_000
    static let hour: Int64 = 3_600_000_000

    /// Rows of `event_time_blocks` that its canonical recomputation lacks, and the reverse.
    static let blocksApartFromCanonical = """
        SELECT (SELECT count(*) FROM (SELECT block, min_timestamp_us, max_timestamp_us FROM event_time_blocks
                                      EXCEPT SELECT (id - 1) / 1024, min(timestamp_us), max(timestamp_us) FROM events
                                             WHERE id <= (SELECT rolled_up_to FROM ledger_settings) GROUP BY 1))
             + (SELECT count(*) FROM (SELECT (id - 1) / 1024, min(timestamp_us), max(timestamp_us) FROM events
                                      WHERE id <= (SELECT rolled_up_to FROM ledger_settings) GROUP BY 1
                                      EXCEPT SELECT block, min_timestamp_us, max_timestamp_us FROM event_time_blocks))
        """

    /// A file ledger whose timestamps go back and forth: consumes with a clock that steps back
    /// every 97 calls, an import of consumes a month old between them, a usage reset (a fold at
    /// no multiple of 1,024), writer folds at 1,024 and 2,048, an early fold inside block 2 (as a
    /// fold may run at any event), then a pending tail with a clock stepped back a day. Models:
    /// `m-priced` (billed when recorded) and `u-1` (unpriced) in every block; `m-imported` (billed)
    /// only in the import, whose latest time is older than most of its blocks'.
    private func unorderedLedger(_ folder: TemporaryFolder) throws -> (Ledger, String, ManualClock) {
        let path = folder.path("l.db")
        let clock = ManualClock()
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal, clock: clock.read))
        try ledger.setPrice(model: "m-*", promptUSDPerMillion: "1", completionUSDPerMillion: "2", effectiveFrom: 1)
        let consume = { (index: Int) in
            let usage = UsageDetails(agentID: "a\(index % 3)", model: index % 2 == 0 ? "m-priced" : "u-1")
            _ = try ledger.consume("t\(index % 5)", promptTokens: Int64(index % 50 + 1), completionTokens: 2, usage: usage)
            clock.advance(microseconds: index % 97 == 0 ? -3 * Self.hour : Self.minute)
        }
        for index in 0..<700 { try consume(index) }
        let imported = try (0..<500).map { index in
            try ImportedConsume(
                line: index + 1, sourceEventID: Int64(index + 1),
                timestampMicroseconds: Self.start - 30 * 24 * Self.hour + Int64(index) * Self.minute,
                threadID: "old\(index % 3)", promptTokens: 7, completionTokens: 1,
                usage: UsageDetails(agentID: "importer", model: index % 2 == 0 ? "m-imported" : "u-1"))
        }
        try ledger.importConsumes(imported)
        for index in 700..<1_000 { try consume(index) }
        try ledger.resetUsageWindow()
        for index in 1_000..<1_700 { try consume(index) }
        try fold(ledger)
        clock.advance(microseconds: -24 * Self.hour)
        for index in 1_700..<1_900 { try consume(index) }
        return (ledger, path, clock)
    }

    /// A fold now, at the latest event, through the writer's own statement (0017 folds early so).
    private func fold(_ ledger: Ledger) throws {
        try ledger.withConnection { connection in
            let last = try connection.prepare("SELECT max(id) FROM events").fetchOne { try $0[0] as Int64 } ?? 0
            try connection.execute(FoldMark.foldStatement, [last])
        }
    }

    private func integers(_ ledger: Ledger, _ sql: String, _ arguments: [any SQLiteBindable] = []) throws -> [Int64] {
        try ledger.withConnection { try $0.prepare(sql).fetchAll(arguments) { try $0[0] as Int64 } }
    }

    /// Range bounds around the recorded timestamps: every 37th distinct one, one before and one
    /// after it, and both ends of time.
    private func bounds(_ ledger: Ledger) throws -> [Int64] {
        let stamps = try integers(ledger, "SELECT DISTINCT timestamp_us FROM events ORDER BY 1")
        var bounds: Set<Int64> = [0, Timestamps.maxMicroseconds]
        for (index, stamp) in stamps.enumerated() where index % 37 == 0 || index == stamps.count - 1 {
            bounds.formUnion([stamp - 1, stamp, stamp + 1])
        }
        return bounds.sorted()
    }

    @Test("the ledger under test folds inside a block and keeps a tail, with timestamps out of id order")
    func theLedgerHasEveryShape() throws {
        // Proves the fixture exercises what the range queries must get right: a fold mark inside
        // a block (a partial block), a pending tail, and timestamps that go back within the
        // folded blocks and the tail; without these the other tests could pass by accident.
        let folder = try TemporaryFolder()
        let (ledger, _, _) = try unorderedLedger(folder)
        let mark = try integers(ledger, "SELECT rolled_up_to FROM ledger_settings")[0]
        let last = try integers(ledger, "SELECT max(id) FROM events")[0]
        #expect(mark % 1_024 != 0 && mark > 2_048 && last > mark)
        let backwards = "SELECT count(*) FROM events AS e JOIN events AS p ON p.id = e.id - 1 WHERE e.timestamp_us < p.timestamp_us AND e.id "
        #expect(try integers(ledger, backwards + "<= ?", [mark])[0] > 5)
        #expect(try integers(ledger, backwards + "> ?", [mark])[0] >= 1)
        #expect(try integers(ledger, "SELECT count(*) FROM event_time_blocks")[0] == 3)
        #expect(try integers(ledger, Self.blocksApartFromCanonical)[0] == 0)
    }

    @Test("exports and rollups over any range equal a scan of every event")
    func exportAndRollupEqualAFullScan() throws {
        // Proves forEachConsumeEvent and rollup read every consume in [from, to) and nothing else,
        // in id order, across folded blocks, the partial block and the tail: compared with the
        // same filter over every event, for ranges ending at and around recorded timestamps.
        let folder = try TemporaryFolder()
        let (ledger, _, _) = try unorderedLedger(folder)
        let bounds = try bounds(ledger)
        var compared = 0
        for (index, from) in bounds.enumerated() {
            for to in [bounds[min(index + 1, bounds.count - 1)], bounds[min(index + 9, bounds.count - 1)], bounds.last!] {
                var exported: [Int64] = []
                try ledger.forEachConsumeEvent(ExportQuery(from: from, to: to)) { exported.append($0.id) }
                let scanned = try integers(
                    ledger, "SELECT id FROM events WHERE kind = 'consume' AND timestamp_us >= ? AND timestamp_us < ? ORDER BY id",
                    [from, to])
                #expect(exported == scanned, "export [\(from), \(to))")
                let rolled = try ledger.rollup(ExportQuery(from: from, to: to), by: .thread).map {
                    "\($0.key ?? "") \($0.totals.requestCount) \($0.totals.promptTokens) \($0.totals.costNanodollars)"
                }
                let expected = try ledger.withConnection { connection in
                    try connection.prepare(
                        """
                        SELECT thread_id || ' ' || count(*) || ' ' || sum(prompt_tokens) || ' ' || coalesce(sum(cost_nanos), 0)
                        FROM events WHERE kind = 'consume' AND timestamp_us >= ? AND timestamp_us < ?
                        GROUP BY thread_id ORDER BY thread_id
                        """
                    ).fetchAll([from, to]) { try $0[0] as String }
                }
                #expect(rolled == expected, "rollup [\(from), \(to))")
                compared += scanned.count
            }
        }
        #expect(compared > 10_000)
    }

    @Test("the latest billed consume from a time, and the withdrawal guard, equal a scan of every event")
    func latestConsumeAndWithdrawalEqualAFullScan() throws {
        // Proves selectLatestConsumeMatching finds the consume a scan finds (latest timestamp,
        // then latest id) from any start, for exact names whose latest consume is pending or in
        // an old block, and for a pattern, and that
        // price_withdrawals_check_insert refuses a withdrawal exactly when a scan finds a billed
        // consume at or after the price's start.
        let folder = try TemporaryFolder()
        let (ledger, path, clock) = try unorderedLedger(folder)
        // The latest time twice: a consume folded, and one pending after it (ties go to the later id).
        clock.set(microseconds: try integers(ledger, "SELECT max(timestamp_us) FROM events")[0] + Self.hour)
        try ledger.consume("t0", promptTokens: 1, usage: UsageDetails(model: "m-priced"))
        try fold(ledger)
        try ledger.consume("t1", promptTokens: 1, usage: UsageDetails(model: "m-priced"))
        let scan = """
            SELECT id, timestamp_us FROM events
            WHERE timestamp_us >= ?1 AND kind = 'consume' AND cost_nanos IS NOT NULL
              AND (model = ?2 OR (?3 IS NOT NULL AND substr(model, 1, length(?3)) = ?3))
            ORDER BY timestamp_us DESC, id DESC LIMIT 1
            """
        let raw = try Connection(path: path)
        defer { raw.close() }
        var refused = 0
        for from in try bounds(ledger) {
            for (pattern, literal) in [("m-priced", nil), ("m-imported", nil), ("m-*", "m-") as (String, String?)] {
                let (found, expected) = try ledger.withConnection { connection in
                    let pair = { (row: Row) in "\(try row[0] as Int64) \(try row[1] as Int64)" }
                    return (try connection.prepare(LedgerSQL.selectLatestConsumeMatching).fetchOne([from, pattern, literal], pair),
                            try connection.prepare(scan).fetchOne([from, pattern, literal], pair))
                }
                #expect(found == expected, "\(pattern) from \(from)")
                // A withdrawal is tried at time 0, so only a price from after 0 can be withdrawn.
                guard from > 0 else { continue }
                let withdrawn = try withdrawalAccepted(raw, pattern: pattern, from: from)
                #expect(withdrawn == (expected == nil), "withdrawal of \(pattern) from \(from)")
                refused += withdrawn ? 0 : 1
            }
        }
        #expect(refused > 20)
        #expect(throws: LedgerError.self) {
            try ledger.setPrice(model: "m-priced", promptUSDPerMillion: "3", completionUSDPerMillion: "3", effectiveFrom: Self.start)
        }
    }

    /// Whether the trigger lets a price for `pattern` from `from` be withdrawn (at time 0, so
    /// the price is not in effect yet): tried in a transaction that is rolled back.
    private func withdrawalAccepted(_ raw: Connection, pattern: String, from: Int64) throws -> Bool {
        try raw.execute(sql: "BEGIN IMMEDIATE")
        defer { try? raw.execute(sql: "ROLLBACK") }
        try raw.execute(
            """
            INSERT INTO model_prices (model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source)
            VALUES (?, 1, 1, ?, 'test')
            """, [pattern, from])
        do {
            try raw.execute(
                "INSERT INTO price_withdrawals (price_id, withdrawn_at_us, source) VALUES (last_insert_rowid(), 0, 'test')", [])
            return true
        } catch let error as SQLiteError where error.message.contains("a recorded consume has reached the price's start") {
            return false
        }
    }

    @Test("reprice bills and counts exactly the unpriced consumes a scan finds in the range")
    func repriceEqualsAFullScan() throws {
        // Proves RepriceSQL.insertReprices and countUnrepriced read every unpriced consume of the
        // range and nothing else: over ranges through every block and the tail, the reprices
        // name the first `limit` of them in id order and the count left is the rest.
        let folder = try TemporaryFolder()
        let (ledger, _, _) = try unorderedLedger(folder)
        try ledger.setPrice(model: "u-1", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: 0)
        let bounds = try bounds(ledger)
        let pending = """
            SELECT c.id FROM events AS c
            WHERE c.kind = 'consume' AND c.model = 'u-1' AND c.cost_nanos IS NULL AND c.timestamp_us >= ? AND c.timestamp_us < ?
              AND NOT EXISTS (SELECT 1 FROM events AS r WHERE r.caused_by = c.id AND r.kind = 'reprice')
            ORDER BY c.id
            """
        var repriced = 0
        for index in stride(from: 0, to: bounds.count - 1, by: 5) {
            let (from, to) = (bounds[index], bounds[min(index + 7, bounds.count - 1)])
            let expected = try integers(ledger, pending, [from, to])
            let lastID = try integers(ledger, "SELECT max(id) FROM events")[0]
            let result = try ledger.reprice(model: "u-1", from: from, to: to, limit: 3)
            let named = try integers(ledger, "SELECT caused_by FROM events WHERE id > ? AND kind = 'reprice' ORDER BY id", [lastID])
            #expect(named == Array(expected.prefix(3)), "reprice [\(from), \(to))")
            #expect(result.unpricedCount == Int64(max(expected.count - 3, 0)), "count [\(from), \(to))")
            repriced += named.count
        }
        #expect(repriced > 30)
        #expect(try ledger.verify().problems == [])
    }

    @Test("the blocks equal their recomputation after folds of every size and place")
    func blocksStayCanonicalOverFolds() throws {
        // Proves ledger_settings_fold_time_blocks keeps each block's bounds over the folded ids
        // only, whatever the fold: the writer's at 1,024, a usage reset's elsewhere, an early
        // fold of one event and of none, an import's, folds inside a block that the next fold
        // goes on in, and one fold over every block at once.
        let folder = try TemporaryFolder()
        let clock = ManualClock()
        let ledger = try Ledger(path: folder.path("l.db"), configuration: Ledger.Configuration(synchronous: .normal, clock: clock.read))
        let canonical = { try self.integers(ledger, Self.blocksApartFromCanonical)[0] }
        var folds: Set<Int64> = []
        let noteFold = { folds.insert(try self.integers(ledger, "SELECT rolled_up_to FROM ledger_settings")[0]) }
        for round in 0..<12 {
            for index in 0..<(round * 67 + 5) {
                _ = try ledger.consume("t\(index % 4)", promptTokens: 1)
                // Forward on the whole (10 hours each 11 events), back 5 hours at every 11th.
                clock.advance(microseconds: (index + round) % 11 == 0 ? -5 * Self.hour : Self.hour)
            }
            switch round % 4 {
            case 0: try ledger.resetUsageWindow()
            case 1: try fold(ledger)
            case 2:
                _ = try ledger.consume("t0", promptTokens: 1)
                try fold(ledger)
                try fold(ledger)  // nothing new: a fold of no events
            default:
                // A fold inside a block, then a clock 100 days back: the rest of the block is older.
                try fold(ledger)
                clock.advance(microseconds: -2_400 * Self.hour)
            }
            try noteFold()
            #expect(try canonical() == 0, "round \(round)")
        }
        let stamps = (0..<1_300).map { Self.start - Int64($0 % 500) * Self.hour }
        try ledger.importConsumes(stamps.enumerated().map { index, stamp in
            try ImportedConsume(
                line: index + 1, sourceEventID: Int64(index + 1), timestampMicroseconds: stamp, threadID: "imp",
                promptTokens: 1, completionTokens: 0, usage: .none)
        })
        try noteFold()
        #expect(try canonical() == 0, "after the import")
        let period = FoldMark.foldEveryEvents
        #expect(folds.contains { $0 % period != 0 } && folds.contains { $0 > 0 && $0 % period == 0 }, "\(folds.sorted())")
        #expect(try integers(ledger, "SELECT count(*) FROM event_time_blocks")[0] >= 4)
        try ledger.withConnection { connection in
            // Every block at once: empty the table and fold from 0 again, in a transaction undone after.
            try connection.execute(sql: "SAVEPOINT every_block")
            defer { try? connection.execute(sql: "ROLLBACK TO every_block; RELEASE every_block") }
            let mark = try connection.prepare("SELECT rolled_up_to FROM ledger_settings").fetchOne { try $0[0] as Int64 } ?? 0
            try connection.execute(sql: "DELETE FROM event_time_blocks")
            try connection.execute(sql: "UPDATE ledger_settings SET rolled_up_to = 0 WHERE id = 1")
            try connection.execute(FoldMark.foldStatement, [mark])
            let apart = try connection.prepare(Self.blocksApartFromCanonical).fetchOne { try $0[0] as Int64 }
            #expect(apart == 0, "one fold over every block")
        }
        #expect(try canonical() == 0)
        #expect(try ledger.verify().problems == [])
    }

    @Test("verify names event_time_blocks when a block is altered, missing or made up, and passes otherwise")
    func verifyFindsDamagedBlocks() throws {
        // Proves verify recomputes the blocks from the events in its one pass: each change behind
        // the trigger's back is reported under the table's name, and an intact ledger has no problem.
        let folder = try TemporaryFolder()
        let (ledger, path, _) = try unorderedLedger(folder)
        #expect(try ledger.verify().problems == [])
        ledger.close()
        // Each change, the row verify must name, and how (every problem names that row).
        let damages = [
            ("UPDATE event_time_blocks SET min_timestamp_us = min_timestamp_us - 1 WHERE block = 0", "block 0", "differs"),
            ("UPDATE event_time_blocks SET max_timestamp_us = max_timestamp_us + 1 WHERE block = 2", "block 2", "differs"),
            ("DELETE FROM event_time_blocks WHERE block = 1", "block 1", "that the events imply is missing"),
            ("INSERT INTO event_time_blocks VALUES (7, 0, 1)", "block 7", "differs"),
        ]
        for (sql, row, how) in damages {
            let copy = folder.path("copy.db")
            try damagedCopy(of: path, at: copy, running: sql)
            let damaged = try Ledger(path: copy)
            let problems = try damaged.verify().problems
            damaged.close()
            let named = "event_time_blocks: row \(row) "
            #expect(!problems.isEmpty && problems.allSatisfy { $0.hasPrefix(named) }, "\(sql): \(problems)")
            #expect(problems.contains { $0.hasPrefix(named + how) }, "\(sql): \(problems)")
        }
    }

    @Test("a ledger made at 0015 gets its blocks from the events and loses events_timestamp")
    func migrationFillsTheBlocks() throws {
        // Proves 0016 fills event_time_blocks from the events up to the fold mark (two folded
        // blocks, out of order, a third partly folded, a tail left pending), drops the index, and
        // that the migrated ledger verifies and exports what a scan of every event finds.
        let folder = try TemporaryFolder()
        let path = folder.path("at-0015.db")
        let old = try Connection(path: path)
        try Migrator(migrations: Ledger.migrations.filter { $0.version <= 15 }, applicationID: Ledger.applicationID).migrate(old)
        try old.execute(sql: "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (5000, 'limit', 't', 1000000000)")
        let insert = try old.prepare(
            "INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens) VALUES (?, 'consume', 't', 1, 0)")
        // Event id -> timestamp: time runs forward within a block, but every 10th event is older
        // than the one before, and block 1 is older than block 0.
        let timestamp = { (id: Int64) -> Int64 in
            let base: Int64 = id <= 1_024 ? 200_000 : (id <= 2_048 ? 100_000 : 300_000)
            return base + (id % 1_024) * 10 - (id % 10 == 0 ? 95 : 0)
        }
        var expected: [Int64: (min: Int64, max: Int64)] = [0: (5_000, 5_000)]  // the limit event, id 1
        for id in Int64(2)...2_500 {
            if id == 2_201 {
                // An early fold at the latest event, inside block 2 (the writer folds at 1,024 and 2,048).
                try old.execute(sql: "UPDATE ledger_settings SET rolled_up_to = (SELECT max(id) FROM events) WHERE id = 1")
            }
            try insert.execute([timestamp(id)])
            if id <= 2_200 {
                let bounds = expected[(id - 1) / 1_024] ?? (timestamp(id), timestamp(id))
                expected[(id - 1) / 1_024] = (min(bounds.min, timestamp(id)), max(bounds.max, timestamp(id)))
            }
        }
        #expect(try old.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'events_timestamp'").fetchOne { try $0[0] as Int64 } == 1)
        old.close()

        let selectBlocks = "SELECT block || ': ' || min_timestamp_us || '…' || max_timestamp_us FROM event_time_blocks ORDER BY block"
        let described = { (bounds: [Int64: (min: Int64, max: Int64)]) in
            bounds.keys.sorted().map { "\($0): \(bounds[$0]!.min)…\(bounds[$0]!.max)" }
        }
        // 0016 alone: the blocks up to the mark, block 2 cut at it.
        let at0016 = try Connection(path: path)
        try Migrator(migrations: Ledger.migrations.filter { $0.version <= 16 }, applicationID: Ledger.applicationID).migrate(at0016)
        #expect(try at0016.prepare(selectBlocks).fetchAll { try $0[0] as String } == described(expected))
        at0016.close()
        // 0017 folds every pending event first: block 2 then holds its tail too.
        for id in Int64(2_201)...2_500 {
            let bounds = expected[2]!
            expected[2] = (min(bounds.min, timestamp(id)), max(bounds.max, timestamp(id)))
        }
        let ledger = try Ledger(path: path)
        let blocks = try ledger.withConnection { connection in try connection.prepare(selectBlocks).fetchAll { try $0[0] as String } }
        #expect(blocks == described(expected))
        #expect(blocks.count == 3)
        #expect(try integers(ledger, Self.blocksApartFromCanonical)[0] == 0)
        #expect(try integers(ledger, "SELECT count(*) FROM sqlite_master WHERE name = 'events_timestamp'")[0] == 0)
        #expect(try ledger.verify().problems == [])
        for (from, to) in [(0, 400_000), (100_000, 110_000), (301_000, 400_000), (209_999, 300_000)] as [(Int64, Int64)] {
            var exported: [Int64] = []
            try ledger.forEachConsumeEvent(ExportQuery(from: from, to: to)) { exported.append($0.id) }
            let scanned = try integers(
                ledger, "SELECT id FROM events WHERE kind = 'consume' AND timestamp_us >= ? AND timestamp_us < ? ORDER BY id", [from, to])
            #expect(exported == scanned && !scanned.isEmpty, "export [\(from), \(to))")
        }
    }

    @Test("every range query and the withdrawal guard read events by rowid ranges, never a scan of events")
    func rangeQueriesReadRowidRanges() throws {
        // Proves the plans SQLite picks for the rewritten queries use the blocks: each reads
        // events by rowid ranges and none scans events or builds an automatic index over it
        // (which is a scan too). A plan that lost the ranges would still answer right, slowly.
        let ledger = try Ledger.inMemory()
        // Each statement with the number of its parameters (all bound NULL: a plan does not run).
        let statements = [
            ("SELECT \(LedgerEvent.billedColumns) FROM \(TimeRangeSQL.events(as: "events")) WHERE \(TimeRangeSQL.timestamps(of: "events", from: "?1", to: "?2")) AND kind = 'consume' ORDER BY id", 2),
            (LedgerSQL.selectLatestConsumeMatching, 3), (RepriceSQL.insertReprices, 6), (RepriceSQL.countUnrepriced, 5),
            ("""
            SELECT 1 FROM model_prices AS p, \(TimeRangeSQL.events(as: "e"))
            WHERE p.id = 1 AND \(TimeRangeSQL.timestamps(of: "e", from: "p.effective_from_us")) AND e.kind = 'consume'
            """, 0),
        ]
        for (sql, parameters) in statements {
            let plan = try ledger.withConnection { connection in
                try connection.prepare("EXPLAIN QUERY PLAN " + sql)
                    .fetchAll([Int64?](repeating: nil, count: parameters)) { try $0[3] as String }
            }
            #expect(plan.contains { $0.contains("USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)") }, "\(plan)")
            #expect(!plan.contains { $0.hasPrefix("SCAN events") || $0.hasPrefix("SCAN c") || $0.contains("AUTOMATIC") }, "\(plan)")
        }
    }

    @Test("price_withdrawals_check_insert reads consumes through the same join as TimeRangeSQL")
    func triggerCopiesTheSwiftJoin() throws {
        // Proves the one range query written in SQL (a trigger cannot call Swift) uses the join
        // and the conditions Swift's range queries use, word for word: a change to one that the
        // other does not follow fails here.
        let ledger = try Ledger.inMemory()
        let trigger = try ledger.withConnection { connection in
            try connection.prepare("SELECT sql FROM sqlite_master WHERE name = 'price_withdrawals_check_insert'")
                .fetchOne { try $0[0] as String } ?? ""
        }
        let words = { (sql: String) in sql.split(whereSeparator: \.isWhitespace).joined(separator: " ") }
        #expect(words(trigger).contains(words(TimeRangeSQL.events(as: "e"))))
        #expect(words(trigger).contains(words(TimeRangeSQL.timestamps(of: "e", from: "p.effective_from_us"))))
    }
}
