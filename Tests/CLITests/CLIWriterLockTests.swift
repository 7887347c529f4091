import Foundation
import Testing

/// A frozen writer of another process, as the CLI meets it.
@Suite("CLI and the cross-process write lock")
struct CLIWriterLockTests {
    @Test("a consume whose write lock another process holds fails after the busy timeout with exit 1 and records nothing")
    func heldWriteLockExitsBusy() throws {
        // Proves the CLI, a real second process, neither hangs nor records behind a writer that
        // holds `<ledger>.lock` and never lets go (this test process, as a stopped writer would):
        // after the default busy timeout (5 s) the consume exits 1 with an `Error:` line that says
        // the lock was held past the busy timeout; once the lock is free the same consume succeeds.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "100")
        let lock = open(ledger.databasePath + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        try #require(lock >= 0)
        defer { close(lock) }
        try #require(flock(lock, LOCK_EX | LOCK_NB) == 0)

        let busy = try ledger.run("consume", "t", "--prompt", "1", "--idempotency-key", "k")
        #expect(busy.status == 1, "\(busy)")
        #expect(busy.firstErrorLine.hasPrefix("Error: "), "\(busy)")
        #expect(busy.firstErrorLine.contains("past the busy timeout"), "\(busy)")
        #expect(busy.firstErrorLine.contains("ledger.db.lock"), "\(busy)")

        flock(lock, LOCK_UN)
        let consumed = try ledger.consume("t", "--prompt", "1", "--idempotency-key", "k")
        #expect(consumed.budget.requestCount == 1, "the refused consume recorded nothing")
        #expect(consumed.replayed == false)
    }
}
