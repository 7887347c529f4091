import BudgetLedger
import BudgetLedgerWire
import NIOPosix
import ServiceLifecycle

/// The server's ledger and the threads its calls run on.
///
/// Ledger calls are blocking SQLite calls: they run on a thread pool of their own, never on an
/// event loop or the cooperative executor. As a `Service` it is shut down after the HTTP server
/// (a `ServiceGroup` stops services in reverse order), so requests in flight finish before the
/// pool stops and the ledger closes.
final class LedgerService: Service, Sendable {
    let ledger: Ledger
    private let threadPool: NIOThreadPool

    /// Takes ownership of `ledger`: it is closed when the service shuts down.
    init(ledger: Ledger, threadCount: Int) {
        self.ledger = ledger
        threadPool = NIOThreadPool(numberOfThreads: threadCount)
        threadPool.start()
    }

    /// Runs `body` with the ledger on the ledger's thread pool.
    ///
    /// - Throws: what `body` throws; `NIOThreadPoolError.ThreadPoolInactive` once shutting down.
    func run<Result: Sendable>(_ body: @escaping @Sendable (Ledger) throws -> Result) async throws -> Result {
        let ledger = ledger
        return try await threadPool.runIfActive { try body(ledger) }
    }

    /// Waits for graceful shutdown, then stops the pool (a call already running finishes) and
    /// closes the ledger.
    func run() async throws {
        try? await gracefulShutdown()
        defer { ledger.close() }
        try await threadPool.shutdownGracefully()
    }
}
