import Dispatch
import NIOCore
import Synchronization

/// A bounded hand-off of body chunks from one blocking producer (a ledger thread reading an
/// export) to one async consumer (the response writer).
///
/// The producer blocks while `capacity` chunks wait, so a slow client holds back the export
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
    }

    /// The consumer stopped reading, or did not read for too long.
    struct ConsumerGone: Error, CustomStringConvertible {
        var description: String { "the client stopped reading the export" }
    }

    private let state = Mutex(State())
    /// Free slots: the producer takes one per chunk, the consumer gives it back.
    private let space: DispatchSemaphore
    private let stallLimit: DispatchTimeInterval

    init(capacity: Int = 4, stallLimit: DispatchTimeInterval = .seconds(120)) {
        space = DispatchSemaphore(value: capacity)
        self.stallLimit = stallLimit
    }

    /// Producer: hands over `chunk`, blocking while the pipe is full.
    ///
    /// - Throws: `ConsumerGone` when the consumer cancelled or stalled.
    func send(_ chunk: ByteBuffer) throws {
        if space.wait(timeout: .now() + stallLimit) == .timedOut {
            cancel()
            throw ConsumerGone()
        }
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
            space.signal()
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
                space.signal()
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
        space.signal()
    }
}
