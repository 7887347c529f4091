import Foundation
import Testing

/// State survives the process that wrote it: every step below is a separate process.
@Suite("CLI durability across processes")
struct CLIDurabilityTests {
    @Test("A later process sees the budget, fired thresholds stay fired, and reset and cleanup persist")
    func restart() throws {
        // Proves budgets, threshold state, reset and cleanup live in the file, not in a process.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "100")
        #expect(try ledger.consume("t", "--prompt", "70", "--completion", "10").crossedPercents == [75])

        // A new process reads what the first wrote.
        #expect(
            try ledger.budget("t")
                == BudgetJSON(
                    threadId: "t", maxTokens: 100, promptTokens: 70, completionTokens: 10, totalTokens: 80,
                    remaining: 20, requestCount: 1, percentUsed: 80.0, isExhausted: false))

        // 75 fired in an earlier process: it must not fire again, here or in any later process.
        let nothingNew = try ledger.consume("t", "--prompt", "5")
        #expect(nothingNew.crossedThresholds.isEmpty)
        #expect(nothingNew.budget.totalTokens == 85)
        #expect(try ledger.consume("t", "--prompt", "5").crossedPercents == [90])
        #expect(try ledger.consume("t", "--prompt", "1").crossedThresholds.isEmpty)
        #expect(try ledger.budget("t").requestCount == 4)

        try ledger.succeed("reset", "t")
        #expect(
            try ledger.budget("t")
                == BudgetJSON(
                    threadId: "t", maxTokens: 100, promptTokens: 0, completionTokens: 0, totalTokens: 0,
                    remaining: 100, requestCount: 0, percentUsed: 0.0, isExhausted: false))
        #expect(try ledger.consume("t", "--prompt", "76").crossedPercents == [75], "reset re-arms, durably")
        #expect(try ledger.consume("t", "--prompt", "1").crossedThresholds.isEmpty)

        let final = try BudgetJSON(try ledger.succeed("cleanup", "t", "--json").jsonObject())
        #expect(final.totalTokens == 77)
        let gone = try ledger.run("usage", "t")
        #expect(gone.status == 4, "\(gone)")
        #expect(try ledger.run("cleanup", "t").status == 4)
        let threads = try ledger.succeed("threads", "--json").jsonObject()
        #expect(threads["count"] as? Int64 == 0)

        let verify = try ledger.succeed("verify", "--json").jsonObject()
        #expect(verify["ok"] as? Bool == true, "\(verify)")
        if SQLiteShell.isAvailable {
            let fired = try SQLiteShell.run(
                ledger.databasePath, "SELECT group_concat(threshold_percent) FROM events WHERE kind = 'threshold'")
            #expect(fired == "75,90,75")
        }
    }

    @Test("An idempotent retry in a later process is a replay, not a second record")
    func idempotencyAcrossProcesses() throws {
        // Proves the idempotency key is stored in the ledger, so a retry after a crash does not double-count.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let first = try ledger.consume("t", "--prompt", "12", "--idempotency-key", "request-42")
        #expect(first.replayed != true)
        let retry = try ledger.consume("t", "--prompt", "12", "--idempotency-key", "request-42")
        #expect(retry.replayed == true)
        #expect(try ledger.budget("t").requestCount == 1)
        #expect(try ledger.budget("t").totalTokens == 12)
    }
}
