@testable import BudgetLedger
import CSQLite
import Foundation
import LedgerSQLite
import Testing

/// Issue 21: since migration 0014 the ledger's writer applies a consume's derived state itself
/// and the consume trigger steps aside for it; every other writer must still keep the derived
/// tables in step with the events, or be refused.
@Suite("Consumes recorded by plain SQL")
struct PlainSQLConsumeTests {
    /// Every table kept from the events by the triggers or by the ledger's writer.
    private static let derivedTables = [
        "thread_state", "ledger_settings", "scope_budgets", "holds", "thread_thresholds", "scope_thresholds",
        "usage_rollup", "usage_agent_model",
    ]
    private static let noon: Int64 = 20_000 * 86_400_000_000 + 43_200_000_000

    /// A ledger at `path` with two threads, a price, three scope budgets and a live hold (event 6,
    /// the last).
    private func preparedLedger(at path: String) throws -> Ledger {
        let ledger = try Ledger(
            path: path, configuration: Ledger.Configuration(synchronous: .normal, clock: { Self.noon }))
        _ = try ledger.setLimit("t", maxTokens: 1_000_000_000)
        _ = try ledger.setLimit("u", maxTokens: 1_000_000_000)
        _ = try ledger.setPrice(model: "m", promptUSDPerMillion: "1", completionUSDPerMillion: "2")
        try ledger.setBudget(.global, period: .day, maxTokens: 1_000_000_000_000)
        try ledger.setBudget(try BudgetScope(parsing: "agent:a"), period: .month, maxNanodollars: 1_000_000_000_000)
        try ledger.setBudget(try BudgetScope(parsing: "model:m"), period: .week, maxTokens: 1_000_000_000_000)
        let hold = try ledger.reserve("t", tokens: 10, usage: UsageDetails(agentID: "a", model: "m"))
        #expect(hold.reservation.id == 6)
        return ledger
    }

    @Test("a consume inserted by a plain connection updates every derived table exactly as the ledger's writer does")
    func plainConnectionKeepsTheDerivedState() throws {
        // Proves that 0014 left other writers on the triggers: the same 1,101 consumes (priced
        // and unpriced, checked or not, under one to three scope budgets, one settling a hold, past a fold
        // at event 1,024), recorded through the ledger in one file and inserted with plain SQL
        // in the other, leave the same derived tables, and verify finds nothing in either. Were
        // the writer or the trigger to skip a statement, a table would differ.
        let folder = try TemporaryFolder()
        let ledgerPath = folder.path("ledger.db")
        let plainPath = folder.path("plain.db")
        let ledger = try preparedLedger(at: ledgerPath)
        for index in 0..<1_100 {
            let usage = UsageDetails(
                agentID: index % 3 == 0 ? "a" : "b", model: index % 5 == 0 ? "x" : "m",
                latencyMilliseconds: Int64(index % 11))
            try ledger.consume(
                index % 2 == 0 ? "t" : "u", promptTokens: Int64(100 + index), completionTokens: Int64(index % 7),
                usage: usage, checked: index % 4 == 0 && index % 5 != 0)
        }
        try ledger.settle(6, promptTokens: 3, usage: UsageDetails(agentID: "a", model: "m"))
        try preparedLedger(at: plainPath).close()

        let columns = "timestamp_us, thread_id, prompt_tokens, completion_tokens, agent_id, model, latency_ms, cost_nanos, reservation_id"
        let source = try Connection(path: ledgerPath)
        defer { source.close() }
        let consumes = try source.prepare("SELECT \(columns) FROM events WHERE kind = 'consume' ORDER BY id").fetchAll { row in
            try (0..<9).map { index -> any SQLiteBindable in
                let value: SQLiteValue = try row[index]
                return value
            }
        }
        #expect(consumes.count == 1_101)
        #expect(try source.prepare("SELECT count(*) FROM events WHERE kind <> 'consume' AND id > 6").fetchOne { try $0[0] as Int64 } == 0)
        let plain = try Connection(path: plainPath)
        defer { plain.close() }
        try plain.execute(sql: "BEGIN IMMEDIATE")
        for consume in consumes {
            try plain.execute("INSERT INTO events (kind, \(columns)) VALUES ('consume', ?, ?, ?, ?, ?, ?, ?, ?, ?)", consume)
        }
        try plain.execute(sql: "COMMIT")

        let recorded = try tableContents(at: ledgerPath, tables: Self.derivedTables)
        #expect(recorded["ledger_settings"]?.first?.hasPrefix("1|") == true)
        #expect(recorded["holds"] == [])
        #expect(recorded["usage_rollup"]?.isEmpty == false, "the fold at event 1,024 ran")
        #expect(try tableContents(at: plainPath, tables: Self.derivedTables) == recorded)
        #expect(try ledger.verify().problems == [])
        let reopened = try Ledger(path: plainPath)
        #expect(try reopened.verify().problems == [])
    }

    @Test("a connection that is not LedgerSQLite's cannot insert an event, so nothing escapes the derived tables")
    func foreignConnectionIsRefused() throws {
        // Proves the other half of 0014's rule: a program that opens the file without our wrapper
        // (here SQLite's C API, as the sqlite3 shell does) does not define connection_role(), so
        // SQLite refuses to prepare an insert into events at all; the ledger stays consistent.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        try ledger.consume("t", promptTokens: 5)
        let before = try eventCount(at: path)
        var handle: OpaquePointer?
        #expect(sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK)
        defer { sqlite3_close_v2(handle) }
        var statement: OpaquePointer?
        let code = sqlite3_prepare_v2(
            handle, "INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens) VALUES (1, 'consume', 't', 7)", -1,
            &statement, nil)
        sqlite3_finalize(statement)
        #expect(code == SQLITE_ERROR)
        #expect(String(cString: sqlite3_errmsg(handle)) == "no such function: connection_role")
        #expect(try eventCount(at: path) == before)
        #expect(try ledger.budget(for: "t").totalTokens == 5)
        #expect(try ledger.verify().problems == [])
    }

    @Test("verify names the trigger that forwards refusals and reprices to their checks when it is dropped")
    func verifyGuardsTheForwardingTrigger() throws {
        // Proves that 0014's forwarding of events_check_reprice is guarded as the check itself is:
        // without events_check_refusal_or_reprice a plain-SQL reprice of a priced consume slips
        // in, and verify reports both the stray event and the missing trigger.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        _ = try ledger.setPrice(model: "m", promptUSDPerMillion: "1", completionUSDPerMillion: "1")
        let consume = try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "m"))
        #expect(try ledger.verify().problems == [])
        let raw = try Connection(path: path)
        defer { raw.close() }
        try raw.execute(sql: "DROP TRIGGER events_check_refusal_or_reprice")
        try raw.execute(
            "INSERT INTO events (timestamp_us, kind, thread_id, caused_by, cost_nanos) VALUES (1, 'reprice', 't', ?, 5)",
            [consume.event.id])
        let strayID = raw.lastInsertRowID
        let problems = try ledger.verify().problems
        #expect(problems.contains("events: reprice event \(strayID) names no consume recorded unpriced, or one already repriced"))
        #expect(problems.contains(
            "trigger events_check_refusal_or_reprice is missing: events is no longer protected against rewrites"))
    }
}
