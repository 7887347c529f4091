@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

@Suite("WAL checkpoint decisions")
struct CheckpointerTests {
    @Test("in the writer: a checkpoint every 4,000 new frames, counting again once the WAL restarts")
    func inWriter() {
        // Proves FULL checkpoints every `writerFramesPerCheckpoint` new frames, not after every commit
        // past the mark (SQLite's auto-checkpoint), and starts counting over after a restart.
        let checkpointer = Checkpointer(path: "/nonexistent/l.db", options: Connection.Options(), inBackground: false)
        defer { checkpointer.close() }
        let every = Checkpointer.writerFramesPerCheckpoint
        let decisions = [every - 1, every, every + 4, 2 * every - 1, 2 * every, 2 * every + 1, 12, every - 1, every, every + 1].map {
            checkpointer.committed(logFrames: $0)
        }
        // 12: the WAL restarted, so its next `every` frames ask again.
        #expect(decisions == [.none, .checkpointNow, .none, .none, .checkpointNow, .none, .none, .none, .checkpointNow, .none])
    }

    @Test("in the background: past writerFrames the writer checkpoints itself, below it never")
    func writerLimit() {
        // Proves the bound on the WAL when background checkpoints cannot keep up (here they
        // cannot even open the file): the writer is told to checkpoint at 16,000 frames and
        // beyond, and below that only ever hands the work to the queue.
        let checkpointer = Checkpointer(path: "/nonexistent/l.db", options: Connection.Options(), inBackground: true)
        defer { checkpointer.close() }
        let below = stride(from: 500, to: Checkpointer.writerFrames, by: 500).map { checkpointer.committed(logFrames: $0) }
        #expect(below.allSatisfy { $0 == .none })
        #expect(checkpointer.committed(logFrames: Checkpointer.writerFrames) == .checkpointNow)
        #expect(checkpointer.committed(logFrames: Checkpointer.writerFrames + 3) == .checkpointNow)
        #expect(checkpointer.completedCheckpoints == 0, "no background checkpoint can succeed on a missing file")
    }
}
