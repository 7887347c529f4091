import Foundation
import Testing

@Suite("CLI: an idempotency key names one whole request")
struct CLIIdempotencyTests {
    @Test("settle with a consume's key exits 5 and the hold stays live with its tokens")
    func settleWithConsumeKeyExitsConflict() throws {
        // Proves the review's case end to end: reserve t3 90, consume t3 with k3, settle the hold
        // with k3 must be a conflict (exit 5), write nothing, and leave the hold of 90 live.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let reserved = try ledger.succeed("reserve", "t3", "--tokens", "90", "--json").jsonObject()
        let hold = try #require(reserved["reservationId"] as? Int64, "\(reserved)")
        try ledger.consume("t3", "--prompt", "5", "--idempotency-key", "k3")
        let before = try ledger.snapshot()
        let settle = try ledger.run("settle", String(hold), "--prompt", "5", "--idempotency-key", "k3", "--json")
        #expect(settle.status == 5, "\(settle)")
        #expect(settle.firstErrorLine.hasPrefix("Error:"), "\(settle)")
        #expect(settle.firstErrorLine.contains("idempotency key k3"), "\(settle)")
        #expect(try ledger.snapshot() == before)
        let holds = try ledger.succeed("holds", "t3", "--json").jsonObject()
        #expect(holds["count"] as? Int64 == 1, "\(holds)")
        #expect((holds["holds"] as? [[String: Any]])?.first?["tokens"] as? Int64 == 90, "\(holds)")
    }

    @Test("a retry with another model exits 5; after cleanup an exact retry answers with the recorded budget")
    func modelConflictAndReplayAfterCleanup() throws {
        // Proves a usage field takes part in the comparison from the CLI, and that a replay after
        // cleanup prints the budget the original left (max 100, 80 spent), not a made-up 0 max.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "100")
        let original = try ledger.consume("t", "--prompt", "80", "--model", "gpt-4o", "--idempotency-key", "k")
        let other = try ledger.run("consume", "t", "--prompt", "80", "--model", "gpt-4o-mini", "--idempotency-key", "k")
        #expect(other.status == 5, "\(other)")
        try ledger.succeed("cleanup", "t")
        let replay = try ledger.consume("t", "--prompt", "80", "--model", "gpt-4o", "--idempotency-key", "k")
        #expect(replay.replayed == true)
        #expect(replay.budget == original.budget)
        #expect(replay.budget.maxTokens == 100)
    }
}
