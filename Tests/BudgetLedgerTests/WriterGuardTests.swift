@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// Migration 0015: `events_check_insert` runs behind the forwarder `events_guard_insert`, which
/// steps aside only for a consume written by the ledger's own writer ('ledger writer').
@Suite("The append-only guard steps aside only for the writer's consumes")
struct WriterGuardTests {
    /// A file ledger with thread t open, and its path.
    private func ledgerWithThread(_ folder: TemporaryFolder) throws -> (Ledger, String) {
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        try ledger.setLimit("t", maxTokens: 1_000_000)
        return (ledger, path)
    }

    @Test("a plain-SQL consume past the per-event limit, or for a thread that is not open, is still refused")
    func plainSQLConsumesAreStillGuarded() throws {
        // Proves the guard still runs for a connection without the writer's role: both rules it
        // holds for consumes are refused with its messages, and nothing is written.
        let folder = try TemporaryFolder()
        let (ledger, path) = try ledgerWithThread(folder)
        let raw = try Connection(path: path)
        defer { raw.close() }
        let before = try eventCount(at: path)
        let refusals = [
            ("INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens) VALUES (1, 'consume', 't', 1000000001)",
             "events: a value is above its limit"),
            ("INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens) VALUES (1, 'consume', 'nobody', 1)",
             "event for a thread that is not open"),
        ]
        for (sql, message) in refusals {
            #expect(throws: SQLiteError.self) { try raw.execute(sql: sql) }
            do {
                try raw.execute(sql: sql)
            } catch let error as SQLiteError {
                #expect(error.message.hasPrefix(message), "\(sql)")
            }
        }
        #expect(try eventCount(at: path) == before)
        #expect(try ledger.verify().problems == [])
    }

    @Test("the writer's role skips the guard for consumes only: its other kinds are still checked")
    func writerRoleSkipsOnlyConsumes() throws {
        // Proves the forwarder's WHEN: under 'ledger writer' a consume for a thread that is not
        // open gets past the insert (the writer opens threads itself), while an open for a thread
        // that is already open is refused as before. Verify then names the stray consume.
        let folder = try TemporaryFolder()
        let (ledger, path) = try ledgerWithThread(folder)
        let writer = try Connection(path: path, options: .init(role: "ledger writer"))
        defer { writer.close() }
        do {
            try writer.execute(sql: "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (1, 'open', 't', 5)")
            Issue.record("a second open of t was accepted from the writer's role")
        } catch let error as SQLiteError {
            #expect(error.message == "open event for a thread that is already open")
        }
        try writer.execute(
            sql: "INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens) VALUES (1, 'consume', 'nobody', 1)")
        #expect(try ledger.verify().problems == ["events: consume event 2 is of a thread that was not open"])
    }

    @Test("verify names a ledger whose guard forwarder was dropped")
    func verifyNamesMissingForwarder() throws {
        // Proves that dropping events_guard_insert (which would switch the guard off for every
        // writer) is reported as tampering, as dropping the guard itself is.
        let folder = try TemporaryFolder()
        let (ledger, path) = try ledgerWithThread(folder)
        let raw = try Connection(path: path)
        defer { raw.close() }
        try raw.execute(sql: "DROP TRIGGER events_guard_insert")
        #expect(try ledger.verify().problems.contains(
            "trigger events_guard_insert is missing: events is no longer protected against rewrites"))
    }

    @Test("a refusal or reprice that breaks its own rule and the guard's gets its own rule's error, as before 0015")
    func checkOrderIsKept() throws {
        // Proves the triggers' order: a reprice that names no consume and costs more than the
        // per-event limit is refused by the reprice rule (its forwarder is created after the
        // guard's, so it fires first), not by the guard's limit.
        let folder = try TemporaryFolder()
        let (_, path) = try ledgerWithThread(folder)
        let raw = try Connection(path: path)
        defer { raw.close() }
        do {
            try raw.execute(
                sql: "INSERT INTO events (timestamp_us, kind, thread_id, caused_by, cost_nanos) VALUES (1, 'reprice', 't', 999, 30000000000000000)")
            Issue.record("a reprice of no consume was accepted")
        } catch let error as SQLiteError {
            #expect(error.message.hasPrefix("reprice: cost_nanos is required, and caused_by must name a consume"))
        }
    }
}
