import Dispatch
import NIOCore
import Synchronization

/// A bounded hand-off of body chunks from one producer to one async consumer (the response
/// writer). The producer is a blocking one (a SQLite ledger thread reading an export, `send`)
/// or an asynchronous one (a PostgreSQL export, `send(async:)`), never both.
///
/// The producer waits while `capacity` chunks wait, so a slow client holds back the export
/// instead of filling memory. If the consumer goes away, or stops reading for `stallLimit`, the
/// producer's next `send` throws and the export stops.
final class ChunkPipe: Sendable {
    private enum Next {
        case chunk(ByteBuffer)
        case end(Result<Void, any Error>)
        case wait
    }

    private struct State {
        var chunks: [ByteBuffer] = []
        var end: Result<Void, any Error>?
        var waiter: CheckedContinuation<ByteBuffer?, any Error>?
        var isCancelled = false
        /// Slots the consumer gave back, and the asynchronous producer waiting for one: it must
        /// not block a thread of the concurrency pool on `space`.
        var slotsReturned = 0
        var slotWaiter: CheckedContinuation<Void, Never>?
        /// Numbers the asynchronous producer's waits, and the one in progress, so that a stall
        /// timer ends only its own wait.
        var slotWaitNumber = 0
        var currentWait: Int?
        /// Slots taken from `space` less signals given to it: what `deinit` gives back.
        var slotsHeld = 0
    }

    /// The consumer stopped reading, or did not read for too long.
    struct ConsumerGone: Error, CustomStringConvertible {
        var description: String { "the client stopped reading the export" }
    }

    private let state = Mutex(State())
    /// Free slots: the producer takes one per chunk, the consumer gives it back.
    private let space: DispatchSemaphore
    private let stallLimit: DispatchTimeInterval
    private let stallDuration: Duration

    init(capacity: Int = 4, stallLimitSeconds: Int = 120) {
        space = DispatchSemaphore(value: capacity)
        stallLimit = .seconds(stallLimitSeconds)
        stallDuration = .seconds(stallLimitSeconds)
    }

    /// libdispatch crashes the process when a semaphore is freed with a value below its initial
    /// one ("Semaphore object deallocated while in use"): a pipe dropped with chunks unread (the
    /// client went away), or after a producer took a slot and found the pipe cancelled, gives
    /// its slots back first.
    deinit {
        let held = state.withLock { $0.slotsHeld }
        for _ in 0..<max(held, 0) { space.signal() }
    }

    /// Producer: hands over `chunk`, blocking while the pipe is full.
    ///
    /// - Throws: `ConsumerGone` when the consumer cancelled or stalled.
    func send(_ chunk: ByteBuffer) throws {
        if space.wait(timeout: .now() + stallLimit) == .timedOut {
            cancel()
            throw ConsumerGone()
        }
        state.withLock { $0.slotsHeld += 1 }
        try hand(chunk)
    }

    /// Asynchronous producer: hands over `chunk`, suspending (never blocking) while the pipe is full.
    ///
    /// - Throws: `ConsumerGone` when the consumer cancelled or stalled.
    func send(async chunk: ByteBuffer) async throws {
        while true {
            let seen = state.withLock { $0.slotsReturned }
            if space.wait(timeout: .now()) == .success {
                state.withLock { $0.slotsHeld += 1 }
                break
            }
            await waitForSlot(returnedSince: seen)
            guard !state.withLock({ $0.isCancelled }) else { throw ConsumerGone() }
        }
        try hand(chunk)
    }

    /// Suspends until the consumer gives a slot back after `seen` were, or the pipe is
    /// cancelled; after `stallLimit` without one, cancels the pipe (the consumer stalled). The
    /// timer and the wait may meet in either order: both look at `currentWait` under the lock.
    private func waitForSlot(returnedSince seen: Int) async {
        let number = state.withLock { state in
            state.slotWaitNumber += 1
            state.currentWait = state.slotWaitNumber
            return state.slotWaitNumber
        }
        let stallTimer = Task { [self, stallDuration] in
            guard (try? await Task.sleep(for: stallDuration)) != nil else { return }
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                guard state.currentWait == number else { return nil }
                state.isCancelled = true
                state.chunks.removeAll()
                defer { state.slotWaiter = nil }
                return state.slotWaiter
            }
            waiter?.resume()
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.isCancelled || state.slotsReturned != seen { return true }
                state.slotWaiter = continuation
                return false
            }
            if now { continuation.resume() }
        }
        state.withLock { $0.currentWait = nil }
        stallTimer.cancel()
    }

    /// Gives a slot back to the producer, waking an asynchronous one.
    private func returnSlot() {
        space.signal()
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.slotsHeld -= 1
            state.slotsReturned += 1
            defer { state.slotWaiter = nil }
            return state.slotWaiter
        }
        waiter?.resume()
    }

    /// Puts `chunk`, for which the producer holds a slot, in the consumer's hands or the queue.
    private func hand(_ chunk: ByteBuffer) throws {
        let waiter = try state.withLock { state throws(ConsumerGone) -> CheckedContinuation<ByteBuffer?, any Error>? in
            guard !state.isCancelled else { throw ConsumerGone() }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.chunks.append(chunk)
            return nil
        }
        if let waiter {
            returnSlot()
            waiter.resume(returning: chunk)
        }
    }

    /// Producer: no more chunks; `result` is the failure, if any, that the consumer receives.
    func finish(_ result: Result<Void, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<ByteBuffer?, any Error>? in
            state.end = state.end ?? result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(with: result.map { nil })
    }

    /// Consumer: the next chunk, or nil at the end.
    ///
    /// - Throws: the producer's failure.
    func next() async throws -> ByteBuffer? {
        try await withCheckedThrowingContinuation { continuation in
            let next = state.withLock { state -> Next in
                if !state.chunks.isEmpty { return .chunk(state.chunks.removeFirst()) }
                if let end = state.end { return .end(end) }
                state.waiter = continuation
                return .wait
            }
            switch next {
            case .chunk(let chunk):
                returnSlot()
                continuation.resume(returning: chunk)
            case .end(let result):
                continuation.resume(with: result.map { nil })
            case .wait:
                break
            }
        }
    }

    /// Consumer: stops the producer at its next `send`. Idempotent.
    func cancel() {
        state.withLock { state in
            state.isCancelled = true
            state.chunks.removeAll()
        }
        returnSlot()
    }
}
