import CSQLite
import Foundation
import Synchronization

/// Makes the commits already written to a database's WAL durable, from outside the connection
/// that wrote them: `fdatasync(2)` of the `-wal` file, on a descriptor of its own.
///
/// With `PRAGMA synchronous = FULL`, SQLite syncs the WAL inside every commit, while it still
/// holds the write lock, so no other write can start until the disk has answered. A writer
/// can instead commit at `NORMAL` (the frames reach the WAL, unsynced) and call `sync()` after
/// it has let the lock go, before it tells anyone the commit happened: the next transaction
/// runs while the disk works, and one sync covers every commit written before it started.
/// Frames are appended in order and SQLite's recovery keeps only an unbroken, checksummed
/// prefix of them, so no later commit can survive a power loss without the earlier ones.
///
/// A failed sync is final. After `fsync(2)` reports an error, the kernel may already have
/// dropped the dirty pages it could not write (marking them clean), so a later sync can
/// succeed without them: PostgreSQL's "fsyncgate". So after one failure every later sync
/// throws, and `writesRefused` tells the writer to take no more writes; only closing and
/// reopening (SQLite's recovery then reads what the WAL really holds) starts afresh.
///
/// The WAL must stay the same file while commits wait for it, as it does while the writer's
/// connection is open (SQLite deletes it only when the last connection closes). One deleted
/// under the writer is an error, not something to reopen: the commits went to the deleted
/// file, and a new file at the same path would not hold them.
///
/// See <https://www.sqlite.org/wal.html> and <https://www.sqlite.org/pragma.html#pragma_synchronous>.
public final class WALSync: Sendable {
    /// The `-wal` file beside the database.
    public let walPath: String
    /// The descriptor and the sync in progress. Its mutex is never held while the disk syncs:
    /// `syncing` says a sync runs, and callers wait on its condition (`ConditionLock`).
    private let file = ConditionLock(OpenFile())
    private let state = Mutex(Progress())

    private struct OpenFile {
        /// The WAL's descriptor; -1 until the first sync, and after `close()`.
        var descriptor: Int32 = -1
        /// Whether a sync runs now (one at a time: it owns `descriptor` until it ends).
        var syncing = false
        /// Syncs ended, successful or not: `syncFile()` waits for one that began after its call.
        var ended = 0
        var syncs = 0
        /// Syncs begun (successful or not), numbered for `injectSyncFault(_:)`.
        var attempts = 0
        /// See `injectSyncFault(_:)`.
        var fault: (@Sendable (_ attempt: Int) -> Int32?)?
    }

    /// Kept apart from `OpenFile`, whose lock is held while the disk syncs: reading these must
    /// never wait for a sync.
    private struct Progress {
        /// Commits counted by `committed()`.
        var written: Int64 = 0
        /// Commits known to be on the disk.
        var durable: Int64 = 0
        /// The first sync that failed, here or in SQLite (`syncFailed(_:)`); nil while none has.
        var failure: SQLiteError?
    }

    /// Syncs done so far (fewer than the commits they covered when writers overlap).
    public var syncs: Int { file.withLock { $0.syncs } }
    /// Commits counted by `committed()`, and of those, the ones known to be on the disk.
    public var commits: (written: Int64, durable: Int64) { state.withLock { ($0.written, $0.durable) } }

    /// Nil while every sync has succeeded. After one failed, the error for every write from then
    /// on (`SQLITE_IOERR_FSYNC`): nothing may be written until the database is reopened.
    public var writesRefused: SQLiteError? {
        guard let failure = state.withLock({ $0.failure }) else { return nil }
        return SQLiteError(
            extendedCode: .ioErrorFsync,
            message: "writes refused since a sync of \(walPath) failed (\(failure.message)); "
                + "reopen the ledger, and SQLite's recovery decides what the WAL holds")
    }

    /// Prepares to sync the WAL of the database file at `databasePath`.
    public init(databasePath: String) {
        walPath = databasePath + "-wal"
    }

    deinit {
        close()
    }

    /// Counts a commit whose frames are now written to the WAL; returns its number for `sync(through:)`.
    ///
    /// Call it after the commit has returned (its frames are in the file) and before the write
    /// lock is released, so that the numbers follow the order of the commits.
    public func committed() -> Int64 {
        state.withLock { state in
            state.written += 1
            return state.written
        }
    }

    /// Counts a commit that SQLite already synced inside the commit (`synchronous = FULL`):
    /// it and every frame before it are on the disk. Returns its number, as `committed()`.
    public func committedDurably() -> Int64 {
        state.withLock { state in
            state.written += 1
            state.durable = state.written
            return state.written
        }
    }

    /// Makes commit `commit` (a number from `committed()`) and every one before it durable.
    ///
    /// Syncs at most once for many callers: a sync covers every commit counted before it
    /// began, so a caller that finds its commit already covered returns at once, callers that
    /// arrive during a sync wait for it (all woken together when it ends) and share the next one
    /// if it did not cover them.
    ///
    /// - Throws: `SQLiteError` with the extended code `SQLITE_IOERR_FSYNC` when the sync fails,
    ///   or failed before (see `writesRefused`): then nothing written since the last successful
    ///   sync may be taken as durable.
    public func sync(through commit: Int64) throws {
        try sync { _ in self.state.withLock { $0.durable } >= commit }
    }

    /// Syncs the WAL now, whoever wrote what it holds (other processes' commits too): for readers
    /// that must not hand on a commit a power loss could take back. The same rules as
    /// `sync(through:)`: one sync at a time, and a failure is final. A sync already running
    /// when it is called may have begun before the frames it must cover, so it waits for one
    /// that begins after the call.
    public func syncFile() throws {
        let needed = file.withLock { $0.ended + ($0.syncing ? 2 : 1) }
        try sync { file in file.ended >= needed }
    }

    /// Syncs until `isDone` (asked holding the lock): waits while another caller's sync runs,
    /// runs one itself when none does, and checks again after each.
    private func sync(until isDone: (OpenFile) -> Bool) throws {
        file.lock()
        defer { file.unlock() }
        while true {
            if isDone(file.value) { return }
            if let refused = writesRefused { throw refused }
            if file.value.syncing {
                file.wait()
                continue
            }
            try syncNow()
        }
    }

    /// Runs one sync, holding the lock before and after but not while the disk works; wakes
    /// every waiter when it ends. Call it holding the lock, with no sync running.
    private func syncNow() throws {
        let target = state.withLock { $0.written }
        file.value.syncing = true
        file.value.attempts += 1
        defer {
            file.value.syncing = false
            file.value.ended += 1
            file.broadcast()
        }
        do {
            try openCurrent(&file.value.descriptor)
            let descriptor = file.value.descriptor
            let attempt = file.value.attempts
            let fault = file.value.fault
            file.unlock()
            let result = Result { try fdatasync(descriptor, attempt: attempt, fault: fault) }
            file.lock()
            try result.get()
        } catch let error as SQLiteError {
            syncFailed(error)
            throw error
        }
        file.value.syncs += 1
        state.withLock { $0.durable = max($0.durable, target) }
    }

    /// Records a sync of the WAL that failed outside `sync(through:)` (SQLite's own, inside a
    /// commit at `synchronous = FULL`): from now on, as after a failed `sync`, no sync
    /// succeeds and `writesRefused` is set.
    public func syncFailed(_ error: SQLiteError) {
        state.withLock { state in
            if state.failure == nil { state.failure = error }
        }
    }

    /// `fdatasync(2)` of `descriptor`, or the fault injected for sync number `attempt`.
    private func fdatasync(
        _ descriptor: Int32, attempt: Int, fault: (@Sendable (_ attempt: Int) -> Int32?)?
    ) throws {
        var result: Int32
        if let injected = fault?(attempt) {
            result = -1
            errno = injected
        } else {
            repeat { result = Foundation.fdatasync(descriptor) } while result != 0 && errno == EINTR
        }
        if result != 0 {
            throw SQLiteError(
                extendedCode: .ioErrorFsync,
                message: "fdatasync of \(walPath) failed: \(String(cString: strerror(errno))); "
                    + "the ledger takes no more writes until it is reopened")
        }
    }

    /// Fault injection, for tests: `fault` runs before every sync of the WAL, as the sync that
    /// runs (one at a time: a fault that blocks is a slow disk), with the sync's number counted from 1
    /// since this object was made (the sync of the migrations at open is the first). When it
    /// returns an `errno`, that sync fails as `fdatasync(2)` would with it, and the disk is not
    /// asked. Nil removes the fault.
    ///
    /// The syncs SQLite runs inside a commit do not pass through here.
    @_spi(FaultInjection) public func injectSyncFault(_ fault: (@Sendable (_ attempt: Int) -> Int32?)?) {
        file.withLock { $0.fault = fault }
    }

    /// Makes everything written to the WAL so far durable, counted by `committed()` or not
    /// (the migrations a connection ran at open, for instance).
    public func syncAll() throws {
        try sync(through: committed())
    }

    /// Closes the descriptor, once no sync is using it. A later sync opens the file again.
    public func close() {
        file.lock()
        defer { file.unlock() }
        while file.value.syncing { file.wait() }
        if file.value.descriptor >= 0 { Foundation.close(file.value.descriptor) }
        file.value.descriptor = -1
    }

    /// Opens the WAL the first time (and after `close()`); checks it is still there after that.
    private func openCurrent(_ descriptor: inout Int32) throws {
        if descriptor >= 0 {
            var status = stat()
            if fstat(descriptor, &status) == 0 && status.st_nlink > 0 { return }
            throw SQLiteError(
                extendedCode: .ioErrorFsync,
                message: "\(walPath) was deleted while the ledger was writing to it; its last commits are not on the disk")
        }
        // O_RDWR: POSIX allows fdatasync to fail with EBADF on a descriptor not open for writing.
        descriptor = open(walPath, O_RDWR | O_CLOEXEC)
        if descriptor < 0 {
            throw SQLiteError(
                extendedCode: .ioErrorFsync,
                message: "cannot open \(walPath) to sync it: \(String(cString: strerror(errno)))")
        }
    }
}
