import Foundation
internal import LedgerSQLite
import Synchronization

/// An exclusive lock on a file beside the ledger (`<ledger>.lock`), taken around every write
/// transaction, so writers in several processes queue in the kernel instead of polling
/// SQLite's lock with growing sleeps (which starves whole processes for seconds).
///
/// `flock(2)` wakes every waiter when the lock is released, and the process that released it
/// often takes it again before a woken waiter runs (one process alone never waited more than
/// 7.5 ms; two waited up to 156 ms). So a second lock, `<ledger>.lock-queue`, admits one
/// waiter at a time: a writer takes the queue lock, then the write lock, then lets the queue
/// lock go. Only the queue holder ever waits on the write lock, so it gets it next, and the
/// process that just wrote must queue behind it.
///
/// The kernel drops both locks when their holder dies, so a killed process never blocks others.
/// A process stopped while holding one (SIGSTOP, a debugger) is waited for only up to the busy
/// timeout: `flock(2)` has no timeout of its own, so a wait that would block runs on a queue of
/// its own while the writer waits for it with one, and a wait given up lets the lock go as soon
/// as it gets it. In-memory ledgers have no lock.
/// See flock(2).
final class WriterLock: Sendable {
    /// The write lock's file.
    let path: String
    private let queue: Int32
    private let resource: Int32
    /// Where waits that would block run, one at a time.
    private let waiter = DispatchQueue(label: "budget-ledger.writer-lock")
    /// Waits handed to `waiter` that have not ended, given up or not. While one is there, the
    /// writer must not touch the descriptors itself: it queues behind it.
    private let waitsInFlight = Atomic<Int>(0)

    init(ledgerPath: String) {
        path = ledgerPath + ".lock"
        if !Ledger.isPlainFile(ledgerPath) {
            queue = -1
            resource = -1
        } else {
            // A folder we cannot create the lock files in is read-only: writes fail in SQLite
            // anyway, with SQLite's clear error, so no lock is needed there.
            queue = open(ledgerPath + ".lock-queue", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            resource = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        }
    }

    deinit {
        if queue >= 0 { close(queue) }
        if resource >= 0 { close(resource) }
    }

    /// Takes the lock, waiting at most `timeoutMilliseconds`; false when it is still held by
    /// another writer then. Only one thread of a ledger calls it at a time (its leader).
    func lock(timeoutMilliseconds: Int32) -> Bool {
        guard resource >= 0 else { return true }
        if waitsInFlight.load(ordering: .acquiring) == 0 && lockWithoutWaiting() { return true }
        let wait = LockWait()
        waitsInFlight.add(1, ordering: .relaxed)
        waiter.async { [self] in
            if !wait.isAbandoned {
                lockWaiting()
                if !wait.grant() { unlock() }
            }
            waitsInFlight.subtract(1, ordering: .releasing)
        }
        return wait.awaitGrant(milliseconds: timeoutMilliseconds)
    }

    func unlock() {
        guard resource >= 0 else { return }
        flock(resource, LOCK_UN)
    }

    /// Takes both locks when both are free at once.
    private func lockWithoutWaiting() -> Bool {
        guard queue >= 0 else { return flock(resource, LOCK_EX | LOCK_NB) == 0 }
        guard flock(queue, LOCK_EX | LOCK_NB) == 0 else { return false }
        defer { flock(queue, LOCK_UN) }
        return flock(resource, LOCK_EX | LOCK_NB) == 0
    }

    /// Queues for the lock and waits for it, however long that takes.
    private func lockWaiting() {
        if queue >= 0 {
            while flock(queue, LOCK_EX) != 0 && errno == EINTR {}
        }
        while flock(resource, LOCK_EX) != 0 && errno == EINTR {}
        if queue >= 0 {
            flock(queue, LOCK_UN)
        }
    }

    /// Whether a writer of another process (or another `Ledger` on the file) waits for the
    /// write lock now. Call it while holding the lock: a waiter holds the queue lock until it
    /// gets the write lock, so the queue lock is free exactly when nobody waits.
    func hasWaiter() -> Bool {
        guard queue >= 0 else { return false }
        if flock(queue, LOCK_EX | LOCK_NB) == 0 {
            flock(queue, LOCK_UN)
            return false
        }
        return errno == EWOULDBLOCK
    }
}

/// One wait for the write lock on `WriterLock`'s queue, and the writer that may give up on it.
private final class LockWait: Sendable {
    private enum State { case waiting, granted, abandoned }
    private let state = Mutex(State.waiting)
    private let granted = DispatchSemaphore(value: 0)

    var isAbandoned: Bool { state.withLock { $0 == .abandoned } }

    /// Hands the lock, just taken, to the writer; false when it gave up (the lock must go).
    func grant() -> Bool {
        let taken = state.withLock { state -> Bool in
            guard state == .waiting else { return false }
            state = .granted
            return true
        }
        if taken { granted.signal() }
        return taken
    }

    /// Waits for `grant()`; false (and the wait given up) when it has not come in time.
    func awaitGrant(milliseconds: Int32) -> Bool {
        if granted.wait(timeout: .now() + .milliseconds(Int(max(milliseconds, 0)))) == .success { return true }
        return state.withLock { state in
            if state == .granted { return true }
            state = .abandoned
            return false
        }
    }
}
