import CSQLite

/// How `Connection.checkpoint(_:)` copies WAL frames back into the database file.
/// See <https://www.sqlite.org/c3ref/wal_checkpoint_v2.html>.
public enum CheckpointMode: Sendable {
    /// Copies what it can without waiting for readers or writers.
    case passive
    /// Waits for writers, copies everything, and truncates the WAL to zero bytes.
    case truncate

    var rawValue: Int32 {
        switch self {
        case .passive: return SQLITE_CHECKPOINT_PASSIVE
        case .truncate: return SQLITE_CHECKPOINT_TRUNCATE
        }
    }
}

/// What a checkpoint found and did, in WAL frames (one frame per page written).
public struct CheckpointResult: Sendable, Equatable {
    /// Frames in the WAL.
    public let logFrames: Int
    /// Of those, frames now copied into the database file.
    public let checkpointedFrames: Int
}

/// What the connection does after a commit, as `Connection.onWALCommit(_:)`'s handler decides.
public enum WALCommitAction: Sendable {
    /// Nothing: someone else checkpoints.
    case none
    /// A passive checkpoint on this connection, now, as SQLite's auto-checkpoint would.
    case checkpointNow
}

/// Keeps the handler alive for as long as the connection holds the hook.
final class WALHookBox {
    let handler: @Sendable (Int) -> WALCommitAction
    /// Calls of the hook so far: commits that appended frames to the WAL.
    var framedCommits = 0

    init(_ handler: @escaping @Sendable (Int) -> WALCommitAction) {
        self.handler = handler
    }
}

/// The C callback: finds the box in the context pointer and runs its handler.
private let walHookTrampoline: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<CChar>?, Int32) -> Int32 = {
    context, database, _, frames in
    guard let context else { return SQLITE_OK }
    let box = Unmanaged<WALHookBox>.fromOpaque(context).takeUnretainedValue()
    box.framedCommits += 1
    if box.handler(Int(frames)) == .checkpointNow {
        // Errors are ignored here as SQLite's own auto-checkpoint ignores them: the commit has
        // already succeeded, and a later checkpoint copies whatever this one did not.
        sqlite3_wal_checkpoint_v2(database, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
    }
    return SQLITE_OK
}

extension Connection {
    /// Copies WAL frames into the database file.
    ///
    /// - Throws: `SQLiteError` (`.busy` when another connection is checkpointing and the mode
    ///   does not wait). See <https://www.sqlite.org/c3ref/wal_checkpoint_v2.html>.
    @discardableResult
    public func checkpoint(_ mode: CheckpointMode = .passive) throws -> CheckpointResult {
        var logFrames: Int32 = 0
        var checkpointedFrames: Int32 = 0
        let resultCode = sqlite3_wal_checkpoint_v2(liveHandle, nil, mode.rawValue, &logFrames, &checkpointedFrames)
        guard resultCode == SQLITE_OK else {
            throw SQLiteError.lastError(of: liveHandle, resultCode: resultCode, sql: "checkpoint")
        }
        return CheckpointResult(logFrames: Int(logFrames), checkpointedFrames: Int(checkpointedFrames))
    }

    /// Commits of this connection that appended frames to the WAL since `onWALCommit(_:)` was
    /// called; 0 without it.
    ///
    /// SQLite calls the WAL hook after exactly those commits (`sqlite3WalFrames` with the commit
    /// flag): a commit that changed no page appends no frame, calls no hook and, at
    /// `synchronous = FULL`, syncs nothing. See <https://www.sqlite.org/c3ref/wal_hook.html>.
    public var framedWALCommits: Int { walHook?.framedCommits ?? 0 }

    /// Calls `handler` after every commit with the number of frames in the WAL, in place of
    /// SQLite's auto-checkpoint (which this turns off for this connection).
    ///
    /// The handler runs on the committing thread while the connection is in use: it must not
    /// use this connection, only decide. See <https://www.sqlite.org/c3ref/wal_hook.html>.
    public func onWALCommit(_ handler: @escaping @Sendable (_ logFrames: Int) -> WALCommitAction) {
        let box = WALHookBox(handler)
        sqlite3_wal_hook(liveHandle, walHookTrampoline, Unmanaged.passUnretained(box).toOpaque())
        walHook = box
    }
}
