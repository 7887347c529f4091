@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// Issue 20, finding 10: history cannot be rewritten from the plain sqlite3 shell, and what
/// slips past the triggers is found by verify.
@Suite("Append-only against plain SQL")
struct AppendOnlyTests {
    /// A file ledger with hold 2 on thread t released as event 3, and a raw connection to it.
    private func ledgerWithReleasedHold(_ folder: TemporaryFolder) throws -> (Ledger, Connection, String) {
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        let hold = try ledger.reserve("t", tokens: 5)
        #expect(hold.reservation.id == 2)
        try ledger.release(hold.reservation.id)
        return (ledger, try Connection(path: path), path)
    }

    @Test("INSERT OR REPLACE that conflicts on a hold's end is refused, and the event it would delete stays")
    func replaceThroughReservationEndIsRefused() throws {
        // Proves the review's repro: events_reservation_end was a conflict target that the guard missed.
        let folder = try TemporaryFolder()
        let (ledger, raw, path) = try ledgerWithReleasedHold(folder)
        defer { raw.close() }
        let before = try eventCount(at: path)
        do {
            try raw.execute(
                sql: "INSERT OR REPLACE INTO events (timestamp_us, kind, thread_id, reservation_id) VALUES (1, 'expire', 't', 2)")
            Issue.record("the replacing insert was accepted")
        } catch let error as SQLiteError {
            #expect(error.message == "events is append-only: an insert may not replace an existing event")
        }
        #expect(try eventCount(at: path) == before)
        #expect(try raw.prepare("SELECT kind FROM events WHERE id = 3").fetchOne { try $0[0] as String } == "release")
        #expect(try ledger.verify().problems == [])
    }

    @Test("verify finds a gap in the event ids")
    func verifyFindsMissingEvents() throws {
        // Proves ids are checked for contiguity: an explicit id past the end (what a REPLACE that got
        // through, or a delete with the triggers dropped, leaves behind) is reported as tampering.
        let folder = try TemporaryFolder()
        let (ledger, raw, _) = try ledgerWithReleasedHold(folder)
        defer { raw.close() }
        #expect(try ledger.verify().problems == [])
        try raw.execute(sql: "INSERT INTO events (id, timestamp_us, kind, max_tokens) VALUES (7, 1, 'configure', 10)")
        let problems = try ledger.verify().problems
        #expect(problems.contains { $0.hasPrefix("events: 3 event ids are missing") && $0.hasSuffix("the first missing: 4, 5, 6") })
    }

    @Test("verify finds a unique index on events that the insert guard does not cover")
    func verifyFindsUnguardedUniqueIndex() throws {
        // Proves a future unique index cannot silently reopen the REPLACE hole.
        let folder = try TemporaryFolder()
        let (ledger, raw, _) = try ledgerWithReleasedHold(folder)
        defer { raw.close() }
        try raw.execute(sql: "CREATE UNIQUE INDEX events_extra ON events (id, kind)")
        let problems = try ledger.verify().problems
        #expect(problems == [
            "events: unique index events_extra is not guarded by events_check_insert, so INSERT OR REPLACE could delete through it"
        ])
    }
}

/// Issue 20, finding 5: the feed never serves an event that a power loss could take back.
@Suite("The feed serves only durable events")
struct DurableFeedTests {
    @Test("a feed page and an export sync the WAL after fixing their snapshot and before handing rows on")
    func feedAndExportsSyncBeforeServing() throws {
        // Proves both read paths of the feed run the WAL sync that makes what they read durable
        // (a power loss cannot be simulated in-process; this is the step that makes it safe).
        let folder = try TemporaryFolder()
        let ledger = try Ledger(path: folder.path("l.db"), configuration: Ledger.Configuration(synchronous: .normal))
        try ledger.consume("t", promptTokens: 5)
        let before = ledger.readerLogSyncs.load(ordering: .relaxed)
        let page = try ledger.events(after: 0, limit: 10)
        #expect(page.events.count == 2)
        #expect(ledger.readerLogSyncs.load(ordering: .relaxed) == before + 1)
        var rowsSeenBeforeSync = -1
        try ledger.forEachConsumeEvent(ExportQuery()) { _ in
            if rowsSeenBeforeSync < 0 { rowsSeenBeforeSync = ledger.readerLogSyncs.load(ordering: .relaxed) - before - 1 }
        }
        #expect(rowsSeenBeforeSync == 1)
        _ = try ledger.rollup(ExportQuery(), by: .day)
        #expect(ledger.readerLogSyncs.load(ordering: .relaxed) == before + 3)
    }
}

@Suite("A closed ledger reads nothing")
struct ClosedLedgerTests {
    @Test("exports, rollups and verify of a closed file ledger throw closed, like every other call")
    func closedLedgerServesNoExports() throws {
        // Proves the read paths with a connection of their own check the ledger is open: they used to
        // answer after close(), since they never touched the closed connection.
        let folder = try TemporaryFolder()
        let ledger = try Ledger(path: folder.path("l.db"))
        try ledger.consume("t", promptTokens: 3)
        ledger.close()
        #expect(ledgerErrorCase { try ledger.forEachConsumeEvent(ExportQuery()) { _ in } } == .closed)
        #expect(ledgerErrorCase { _ = try ledger.rollup(ExportQuery(), by: .model) } == .closed)
        #expect(ledgerErrorCase { _ = try ledger.verify() } == .closed)
        #expect(ledgerErrorCase { _ = try ledger.usage("t") } == .closed)
    }
}
