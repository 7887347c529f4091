import Foundation

/// A mutex with a condition variable, whose waiters sleep at once: for state that changes when
/// the disk answers (`WALSync`).
///
/// `Synchronization.Mutex` spins before it sleeps, which is right for short sections, but a
/// caller of `WALSync.sync(through:)` waits for an `fdatasync(2)` of milliseconds: measured
/// under 64 HTTP clients, those spins took about 5 % of the server's CPU. A default
/// (`PTHREAD_MUTEX_NORMAL`) glibc mutex tries once and then waits on a futex.
///
/// The waiting is done with the condition, never by holding the mutex across the slow work:
/// when a sync ends, `broadcast()` wakes every waiter at once, and each finds its commit
/// covered and returns in parallel. (A mutex held across the sync handed itself to one waiter
/// at a time: under 64 callers about 30 waiters queued behind each sync, each woken in turn
/// to learn that its commit was already on the disk.)
///
/// Use: `lock()`, then read or change `value`, `wait()` while something is not yet so (it
/// releases the mutex while it sleeps), `unlock()`; `broadcast()` after a change others wait for.
final class ConditionLock<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    /// Read and written only with the mutex held.
    var value: Value

    init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        let mutexStatus = pthread_mutex_init(mutex, nil)
        precondition(mutexStatus == 0, "pthread_mutex_init failed: \(mutexStatus)")
        let conditionStatus = pthread_cond_init(condition, nil)
        precondition(conditionStatus == 0, "pthread_cond_init failed: \(conditionStatus)")
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }

    func unlock() { pthread_mutex_unlock(mutex) }

    /// Sleeps until `broadcast()` (or a spurious wake-up: callers check again in a loop), with
    /// the mutex released meanwhile and held again on return. Call it holding the mutex.
    func wait() { pthread_cond_wait(condition, mutex) }

    /// Wakes every `wait()`. Call it holding the mutex, after the change they wait for.
    func broadcast() { pthread_cond_broadcast(condition) }

    /// Runs `body` with the value, holding the mutex.
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock()
        defer { unlock() }
        return try body(&value)
    }
}
