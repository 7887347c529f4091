import Foundation

/// A lock whose waiters sleep at once: for sections that wait for the disk.
///
/// `Synchronization.Mutex` spins before it sleeps, which is right for short sections, but a
/// caller of `WALSync.sync(through:)` waits for an `fdatasync(2)` of milliseconds: measured
/// under 64 HTTP clients, those spins took about 5 % of the server's CPU. A default
/// (`PTHREAD_MUTEX_NORMAL`) glibc mutex tries once and then waits on a futex.
final class SleepingLock<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    // Read and written only with `mutex` held.
    private var value: Value

    init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let status = pthread_mutex_init(mutex, nil)
        precondition(status == 0, "pthread_mutex_init failed: \(status)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value, holding the lock.
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
