import Dispatch
internal import LedgerSQLite
import Synchronization

/// Copies the WAL back into the database file on a background queue, so that commits do not
/// wait for it.
///
/// SQLite's auto-checkpoint runs inside the commit that crosses 1,000 WAL frames: that one
/// call then waits for two syncs and thousands of page writes (the reference measures 7–8 ms
/// stalls under NORMAL, and about 40% of all the time of a NORMAL check-and-consume here).
/// Instead, the writer connection's WAL hook asks this queue for a passive checkpoint on a
/// connection of its own, which runs beside the next commits. If the WAL still grows past
/// `writerFrames` (the queue cannot keep up, or another process holds the checkpoint lock),
/// the writer checkpoints itself as SQLite would, so the WAL stays bounded either way.
///
/// At FULL the checkpoint stays in the writer (`inBackground` false: a background one beside
/// FULL commits slowed them), but it is asked for every 4,000 *new* frames (`writerFrames
/// PerCheckpoint`): each checkpoint copies a page once however often the WAL holds it, so
/// fewer, longer checkpoints do less work in all (64 callers: 9.1-9.3k -> 10.4-10.5k txn/s;
/// one caller unchanged within noise). SQLite's own
/// auto-checkpoint retries after every commit while the WAL holds 1,000 frames or more, and
/// with several processes a reader often keeps a checkpoint from finishing (so the WAL cannot
/// restart): then every commit paid a checkpoint with two syncs, inside the write lock.
///
/// Durability is unchanged: a commit is durable (at the configured level) in the WAL before it
/// returns; checkpointing only moves committed pages into the main file.
final class Checkpointer: @unchecked Sendable {
    /// WAL frames after which a background checkpoint is asked for (SQLite's own default).
    static let backgroundFrames = 1_000
    /// New WAL frames after which the writer checkpoints, when checkpoints are not in the background.
    static let writerFramesPerCheckpoint = 4_000
    /// WAL frames after which the writer checkpoints itself (64 MiB of 4 KiB pages).
    static let writerFrames = 16_000

    private let path: String
    private let options: Connection.Options
    /// Where background checkpoints run; nil when the writer checkpoints itself.
    private let queue: DispatchQueue?
    private let state = Mutex(State())
    /// Used only on `queue`: that is what makes this class safe to share.
    private var connection: Connection?

    private struct State {
        var scheduled = false
        /// The WAL's frame count when the last background checkpoint was asked for.
        var framesAtLastRequest = 0
        var closed = false
        var checkpoints = 0
    }

    init(path: String, options: Connection.Options, inBackground: Bool) {
        self.path = path
        self.options = options
        queue = inBackground ? DispatchQueue(label: "budget-ledger.checkpoint") : nil
    }

    /// Whether checkpoints run on `queue` rather than in the writer.
    private var inBackground: Bool { queue != nil }

    /// Checkpoints run in the background so far.
    var completedCheckpoints: Int { state.withLock { $0.checkpoints } }

    /// The writer's WAL hook: decides after each commit, never blocks on a checkpoint.
    ///
    /// A checkpoint is asked for every `backgroundFrames` (in the writer:
    /// `writerFramesPerCheckpoint`) new frames, not after every commit
    /// past the mark: under steady writes a background checkpoint rarely copies the very last
    /// commit, so SQLite cannot restart the WAL and its frame count keeps growing; asking
    /// after every commit would then add two syncs to each one. The WAL restarts after the
    /// writer's own checkpoint at `writerFrames` (or any complete one).
    func committed(logFrames: Int) -> WALCommitAction {
        if logFrames >= Self.writerFrames {
            state.withLock { $0.framesAtLastRequest = 0 }
            return .checkpointNow
        }
        let inBackground = inBackground
        let schedule = state.withLock { state -> Bool in
            if logFrames < state.framesAtLastRequest { state.framesAtLastRequest = 0 }
            let interval = inBackground ? Self.backgroundFrames : Self.writerFramesPerCheckpoint
            guard logFrames - state.framesAtLastRequest >= interval else { return false }
            guard !state.scheduled && !state.closed else { return false }
            state.framesAtLastRequest = logFrames
            state.scheduled = inBackground
            return true
        }
        if schedule && !inBackground {
            return .checkpointNow
        }
        if schedule {
            queue?.async { [self] in run() }
        }
        return .none
    }

    private func run() {
        guard state.withLock({ state in
            state.scheduled = false
            return !state.closed
        }) else { return }
        do {
            if connection == nil {
                connection = try Connection(path: path, options: options)
            }
            try connection?.checkpoint(.passive)
            state.withLock { $0.checkpoints += 1 }
        } catch {
            // Busy (another process is checkpointing) or an I/O error: the next commit past
            // the threshold asks again, and the writer's own checkpoint bounds the WAL.
        }
    }

    /// Waits for a running checkpoint, then closes the checkpoint connection. Idempotent.
    func close() {
        state.withLock { $0.closed = true }
        queue?.sync {
            connection?.close()
            connection = nil
        }
    }
}
