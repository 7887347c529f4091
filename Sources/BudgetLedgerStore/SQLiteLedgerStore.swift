import BudgetLedger
import NIOPosix
import Synchronization

/// The SQLite `Ledger` behind the asynchronous `LedgerStore` API, and the threads its calls run on.
///
/// Ledger calls are blocking SQLite calls: they run on a thread pool of their own, never on an
/// event loop or the cooperative executor. A write blocks its thread until its group commit is
/// durable, and group commit can only batch the writes whose calls hold a thread, so the pool is
/// sized for the concurrent calls expected, not for the cores. The consume is the exception: it
/// suspends while its write waits for the group commit (`suspending(_:)`), holding no thread.
///
/// Calls are admitted up to a bound: at most `threadCount` run and `waitingCallsMax` wait for a
/// thread; one more is refused at once with `LedgerStoreOverloadedError` (the server's 503),
/// before it reaches the ledger, so it recorded nothing and a retry is safe.
public final class SQLiteLedgerStore: Sendable {
    /// The ledger; call it through `run(_:)` or `suspending(_:)`, never from the cooperative pool.
    public let ledger: Ledger
    /// The most calls running or waiting for a thread at once.
    public let admittedCallsMax: Int
    private let threadPool: NIOThreadPool
    private let admittedCalls = Atomic<Int>(0)
    private let refusedCalls = Atomic<Int>(0)
    private let isClosed = Atomic<Bool>(false)

    /// Takes ownership of `ledger`: `close()` closes it.
    ///
    /// - Parameters:
    ///   - threadCount: threads that run ledger calls (at least 1).
    ///   - waitingCallsMax: calls that may wait for a thread beyond those running (at least 0).
    public init(ledger: Ledger, threadCount: Int, waitingCallsMax: Int) {
        precondition(threadCount >= 1 && waitingCallsMax >= 0, "the callers validate both bounds")
        self.ledger = ledger
        admittedCallsMax = threadCount + waitingCallsMax
        threadPool = NIOThreadPool(numberOfThreads: threadCount)
        threadPool.start()
    }

    /// Runs `body` with the ledger on the store's thread pool.
    ///
    /// - Throws: what `body` throws; `LedgerStoreOverloadedError` when `admittedCallsMax` calls
    ///   are already running or waiting (`body` did not run); `NIOThreadPoolError.ThreadPoolInactive`
    ///   once closed.
    public func run<Result: Sendable>(_ body: @escaping @Sendable (Ledger) throws -> Result) async throws -> Result {
        try await admitted { [ledger, threadPool] in try await threadPool.runIfActive { try body(ledger) } }
    }

    /// Runs `body`, a ledger call that suspends instead of blocking (a write joining the group
    /// commit: `Ledger.consume(suspending:…)`), on the caller's executor, under the same bound as
    /// `run(_:)`: it holds no thread of the pool while it waits for its batch to commit.
    ///
    /// - Throws: what `body` throws; `LedgerStoreOverloadedError` as `run(_:)`.
    public func suspending<Result: Sendable>(_ body: @Sendable (Ledger) async throws -> Result) async throws -> Result {
        try await admitted { try await body(ledger) }
    }

    /// Runs `call` when fewer than `admittedCallsMax` calls are running or waiting, else throws
    /// `LedgerStoreOverloadedError` without running it.
    private func admitted<Result: Sendable>(_ call: () async throws -> Result) async throws -> Result {
        // Counting up first and backing out when over the bound keeps the count exact without a
        // lock: a call that sees itself over the bound leaves without running.
        guard admittedCalls.add(1, ordering: .relaxed).newValue <= admittedCallsMax else {
            admittedCalls.subtract(1, ordering: .relaxed)
            refusedCalls.add(1, ordering: .relaxed)
            throw LedgerStoreOverloadedError(admittedCallsMax: admittedCallsMax)
        }
        defer { admittedCalls.subtract(1, ordering: .relaxed) }
        return try await call()
    }

    /// Calls running or waiting for a thread now.
    public var admittedCallCount: Int { admittedCalls.load(ordering: .relaxed) }

    /// Calls refused because the bound was reached, since the store opened.
    public var refusedCallCount: Int { refusedCalls.load(ordering: .relaxed) }

    /// Stops the pool (a call already running finishes; later ones throw
    /// `NIOThreadPoolError.ThreadPoolInactive`), then closes the ledger. Idempotent.
    public func close() async {
        guard !isClosed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // The pool can only fail to stop when it already has, which the flag above rules out.
        try? await threadPool.shutdownGracefully()
        ledger.close()
    }
}

/// A ledger call refused because the store already runs or queues as many as it may: nothing
/// was recorded; the caller may retry (the server answers 503 with `Retry-After`).
public struct LedgerStoreOverloadedError: Error, Sendable, CustomStringConvertible {
    /// The bound that was reached: calls running plus calls waiting for a thread.
    public let admittedCallsMax: Int

    /// Says the bound and that nothing was recorded.
    public var description: String {
        "the store already runs or queues \(admittedCallsMax) ledger calls; nothing was recorded"
    }
}
