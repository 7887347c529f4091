import BudgetLedger
import BudgetLedgerWire
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The server's ledger and the threads its calls run on.
///
/// Ledger calls are blocking SQLite calls: they run on a thread pool of their own, never on an
/// event loop or the cooperative executor. A write blocks its thread until its group commit is
/// durable, and group commit can only batch the writes whose calls hold a thread, so the pool is
/// sized for the concurrent requests expected, not for the cores (see `ServerConfiguration`).
///
/// Calls are admitted up to a bound: at most `threadCount` run and `waitingCallsMax` wait for a
/// thread; one more is refused at once with `LedgerServiceOverloadedError` (a 503), before it
/// reaches the ledger, so it recorded nothing and a retry is safe.
///
/// As a `Service` it is shut down after the HTTP server (a `ServiceGroup` stops services in
/// reverse order), so requests in flight finish before the pool stops and the ledger closes.
final class LedgerService: Service, Sendable {
    let ledger: Ledger
    /// The most calls running or waiting for a thread at once.
    let admittedCallsMax: Int
    private let threadPool: NIOThreadPool
    private let admittedCalls = Atomic<Int>(0)
    private let refusedCalls = Atomic<Int>(0)
    private let logger: Logger

    /// Takes ownership of `ledger`: it is closed when the service shuts down.
    ///
    /// - Parameters:
    ///   - threadCount: threads that run ledger calls (at least 1).
    ///   - waitingCallsMax: calls that may wait for a thread beyond those running (at least 0).
    ///   - logger: where the write statistics are logged at shutdown.
    init(ledger: Ledger, threadCount: Int, waitingCallsMax: Int, logger: Logger = Logger(label: "budget-ledger")) {
        precondition(threadCount >= 1 && waitingCallsMax >= 0, "the configuration validates both bounds")
        self.ledger = ledger
        self.logger = logger
        admittedCallsMax = threadCount + waitingCallsMax
        threadPool = NIOThreadPool(numberOfThreads: threadCount)
        threadPool.start()
    }

    /// Runs `body` with the ledger on the ledger's thread pool.
    ///
    /// - Throws: what `body` throws; `LedgerServiceOverloadedError` when `admittedCallsMax` calls
    ///   are already running or waiting (`body` did not run); `NIOThreadPoolError.ThreadPoolInactive`
    ///   once shutting down.
    func run<Result: Sendable>(_ body: @escaping @Sendable (Ledger) throws -> Result) async throws -> Result {
        try await admitted { [ledger, threadPool] in try await threadPool.runIfActive { try body(ledger) } }
    }

    /// Runs `body`, a ledger call that suspends instead of blocking (a write joining the group
    /// commit: `Ledger.consume(suspending:…)`), on the caller's executor, under the same bound as
    /// `run(_:)`: it holds no thread of the pool while it waits for its batch to commit.
    ///
    /// - Throws: what `body` throws; `LedgerServiceOverloadedError` as `run(_:)`.
    func suspending<Result: Sendable>(_ body: @Sendable (Ledger) async throws -> Result) async throws -> Result {
        try await admitted { try await body(ledger) }
    }

    /// Runs `call` when fewer than `admittedCallsMax` calls are running or waiting, else throws
    /// `LedgerServiceOverloadedError` without running it.
    private func admitted<Result: Sendable>(_ call: () async throws -> Result) async throws -> Result {
        // Counting up first and backing out when over the bound keeps the count exact without a
        // lock: a call that sees itself over the bound leaves without running.
        guard admittedCalls.add(1, ordering: .relaxed).newValue <= admittedCallsMax else {
            admittedCalls.subtract(1, ordering: .relaxed)
            refusedCalls.add(1, ordering: .relaxed)
            throw LedgerServiceOverloadedError(admittedCallsMax: admittedCallsMax)
        }
        defer { admittedCalls.subtract(1, ordering: .relaxed) }
        return try await call()
    }

    /// Calls running or waiting for a thread now.
    var admittedCallCount: Int { admittedCalls.load(ordering: .relaxed) }

    /// Calls refused because the bound was reached, since the service started.
    var refusedCallCount: Int { refusedCalls.load(ordering: .relaxed) }

    /// Waits for graceful shutdown, then stops the pool (a call already running finishes),
    /// logs how much group commit coalesced, and closes the ledger.
    func run() async throws {
        try? await gracefulShutdown()
        defer { ledger.close() }
        try await threadPool.shutdownGracefully()
        let statistics = ledger.statistics
        let perTransaction = statistics.transactions == 0 ? 0 : Double(statistics.writes) / Double(statistics.transactions)
        logger.info(
            "ledger writes",
            metadata: [
                "writes": "\(statistics.writes)", "transactions": "\(statistics.transactions)",
                "writesPerTransaction": "\((perTransaction * 100).rounded() / 100)",
                "largestBatch": "\(statistics.largestBatch)", "refusedOverloaded": "\(refusedCallCount)",
            ])
    }
}

/// A ledger call refused because the server already runs or queues as many as it may: nothing
/// was recorded; the client may retry (HTTP 503 with `Retry-After`).
struct LedgerServiceOverloadedError: Error, Sendable, CustomStringConvertible {
    /// The bound that was reached: calls running plus calls waiting for a thread.
    let admittedCallsMax: Int

    var description: String {
        "the server already runs or queues \(admittedCallsMax) ledger calls; nothing was recorded"
    }
}
