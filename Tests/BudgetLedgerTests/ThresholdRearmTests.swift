@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

@Suite("A limit change re-arms the thresholds above the thread's new percentage")
struct ThresholdRearmTests {
    @Test("crossed at max 100, raised to 1,000: warning, critical and final fire again")
    func raisingTheMaxRearms() throws {
        // Proves the review's case: a thread that crossed 75/90/95 at max 100 and then had its max
        // raised to 1,000 warns again on its way to 1,000/1,000.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        #expect(try ledger.consume("t", promptTokens: 96).crossedThresholds.map(\.thresholdPercent) == [75, 90, 95])
        let raised = try ledger.setLimit("t", maxTokens: 1_000)
        #expect(raised.triggeredThresholds == [])
        #expect(try ledger.consume("t", promptTokens: 600).crossedThresholds.isEmpty)
        let warning = try ledger.consume("t", promptTokens: 54).crossedThresholds
        #expect(warning.map(\.severity) == ["warning"])
        #expect(warning.map(\.maxTokens) == [1_000])
        #expect(try ledger.consume("t", promptTokens: 150).crossedThresholds.map(\.severity) == ["critical"])
        let last = try ledger.consume("t", promptTokens: 100)
        #expect(last.budget.totalTokens == 1_000)
        #expect(last.crossedThresholds.map(\.severity) == ["final"])
        #expect(try ledger.verify().problems == [])
    }

    @Test("a raise re-arms only the thresholds above the new percentage")
    func partialRaiseKeepsThoseStillReached() throws {
        // Proves 96/100 raised to 120 (80%) keeps 75 crossed and re-arms 90 and 95, and that 75
        // does not fire a second time.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        try ledger.consume("t", promptTokens: 96)
        #expect(try ledger.setLimit("t", maxTokens: 120).triggeredThresholds == [75])
        #expect(try ledger.consume("t", promptTokens: 12).crossedThresholds.map(\.thresholdPercent) == [90])
        #expect(try ledger.consume("t", promptTokens: 6).crossedThresholds.map(\.thresholdPercent) == [95])
        #expect(try ledger.verify().problems == [])
    }

    @Test("lowering the max keeps what was crossed; the next consume crosses what it now reaches")
    func loweringTheMax() throws {
        // Proves a lower max never re-fires a crossed threshold and never fires one by itself
        // (crossings are caused by consumes); the next consume fires the ones now reached, once.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 1_000)
        #expect(try ledger.consume("t", promptTokens: 800).crossedThresholds.map(\.thresholdPercent) == [75])
        #expect(try ledger.setLimit("t", maxTokens: 880).triggeredThresholds == [75])
        let next = try ledger.consume("t", promptTokens: 1)
        #expect(next.crossedThresholds.map(\.thresholdPercent) == [90])
        #expect(next.crossedThresholds.map(\.maxTokens) == [880])
        #expect(try ledger.setLimit("t", maxTokens: 500).triggeredThresholds == [75, 90])
        #expect(try ledger.consume("t", promptTokens: 1).crossedThresholds.map(\.thresholdPercent) == [95])
        #expect(try ledger.consume("t", promptTokens: 1).crossedThresholds.isEmpty)
        #expect(try ledger.verify().problems == [])
    }

    @Test("a max of 0 re-arms every threshold (0 percent used); they fire again once a max is set")
    func zeroMaxRearmsAll() throws {
        // Proves the rule at its edge: with max 0 nothing is reached (percentUsed is 0), so
        // nothing stays crossed.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        try ledger.consume("t", promptTokens: 80)
        #expect(try ledger.setLimit("t", maxTokens: 0).triggeredThresholds == [])
        #expect(try ledger.setLimit("t", maxTokens: 100).triggeredThresholds == [])
        #expect(try ledger.consume("t", promptTokens: 1).crossedThresholds.map(\.thresholdPercent) == [75])
        #expect(try ledger.verify().problems == [])
    }

    @Test("verify recomputes the re-armed thresholds from the events through every kind of change")
    func verifyAgreesWithTheTrigger() throws {
        // Proves thread_thresholds_from_events re-arms as the trigger does: every step below
        // leaves thread_thresholds in a state that only the new rule produces (a view that
        // ignored limits would still list the re-armed crossings), and verify must be clean at
        // each step, with several threads, a reset, a cleanup and a thread opened by a limit.
        let ledger = try Ledger.inMemory()
        var expected: [String: [Int]] = [:]
        func check(_ step: String) throws {
            #expect(try ledger.verify().problems == [], "after \(step)")
            for (thread, percents) in expected {
                #expect(try ledger.usage(thread)?.triggeredThresholds == percents, "\(thread) after \(step)")
            }
        }
        try ledger.setLimit("a", maxTokens: 100)
        try ledger.setLimit("b", maxTokens: 100)
        try ledger.consume("a", promptTokens: 96)
        try ledger.consume("b", promptTokens: 91)
        expected = ["a": [75, 90, 95], "b": [75, 90]]
        try check("crossing")
        try ledger.setLimit("a", maxTokens: 1_000)
        try ledger.setLimit("b", maxTokens: 110)
        expected = ["a": [], "b": [75]]
        try check("raising")
        try ledger.consume("a", promptTokens: 700)
        try ledger.consume("b", promptTokens: 9)
        expected = ["a": [75], "b": [75, 90]]
        try check("crossing again")
        try ledger.setLimit("a", maxTokens: 100)
        expected = ["a": [75], "b": [75, 90]]
        try check("lowering")
        try ledger.consume("a", promptTokens: 1)
        try ledger.resetThread("b")
        expected = ["a": [75, 90, 95], "b": []]
        try check("a reset")
        try ledger.consume("b", promptTokens: 80)
        try ledger.setLimit("b", maxTokens: 0)
        try ledger.setLimit("b", maxTokens: 100)
        try ledger.consume("b", promptTokens: 15)
        expected = ["a": [75, 90, 95], "b": [75, 90, 95]]
        try check("a max of 0 and back")
        try ledger.cleanupThread("a")
        try ledger.setLimit("a", maxTokens: 10)
        try ledger.consume("a", promptTokens: 8)
        try ledger.setLimit("a", maxTokens: 20)
        expected = ["a": [], "b": [75, 90, 95]]
        try check("a cleanup and a new life")
    }

    @Test("migrating re-derives thresholds that an earlier limit raise left crossed")
    func migrationRederivesExistingThresholds() throws {
        // Proves the migration brings a ledger written under the old rule (a raise kept the
        // crossings) to the new one, so verify stays clean and the thresholds fire again.
        let folder = try TemporaryFolder()
        let path = folder.path("old.db")
        let old = try Connection(path: path)
        let before = Ledger.migrations.filter { $0.version <= 5 }
        try Migrator(migrations: before, applicationID: Ledger.applicationID).migrate(old)
        try old.execute(
            sql: """
                INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (1, 'limit', 't', 100);
                INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens) VALUES (2, 'consume', 't', 96);
                INSERT INTO events (timestamp_us, kind, thread_id, threshold_percent, severity, caused_by, tokens_used, max_tokens)
                VALUES (2, 'threshold', 't', 75, 'warning', 2, 96, 100), (2, 'threshold', 't', 90, 'critical', 2, 96, 100),
                       (2, 'threshold', 't', 95, 'final', 2, 96, 100);
                INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (3, 'limit', 't', 120);
                """)
        #expect(try old.prepare("SELECT count(*) FROM thread_thresholds").fetchOne { try $0[0] as Int64 } == 3)
        old.close()

        let ledger = try Ledger(path: path)
        #expect(try ledger.usage("t")?.triggeredThresholds == [75])
        #expect(try ledger.verify().problems == [])
        #expect(try ledger.consume("t", promptTokens: 12).crossedThresholds.map(\.thresholdPercent) == [90])
    }
}
