import BudgetLedgerPostgres
import BudgetLedgerStore
import Logging
import ServiceLifecycle

/// Closes the SQLite store on graceful shutdown and logs how much group commit coalesced.
///
/// A `ServiceGroup` stops services in reverse order, and this one is added before the HTTP
/// server's, so requests in flight finish before the pool stops and the ledger closes.
struct SQLiteStoreService: Service {
    let store: SQLiteLedgerStore
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        await store.close()
        let statistics = store.ledger.statistics
        let perTransaction = statistics.transactions == 0 ? 0 : Double(statistics.writes) / Double(statistics.transactions)
        logger.info(
            "ledger writes",
            metadata: [
                "writes": "\(statistics.writes)", "transactions": "\(statistics.transactions)",
                "writesPerTransaction": "\((perTransaction * 100).rounded() / 100)",
                "largestBatch": "\(statistics.largestBatch)", "refusedOverloaded": "\(store.refusedCallCount)",
            ])
    }
}

/// Closes the PostgreSQL store on graceful shutdown, after the HTTP server has finished the
/// requests in flight (a `ServiceGroup` stops services in reverse order).
struct PostgresStoreService: Service {
    let ledger: PostgresLedger
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        await ledger.close()
        logger.info("ledger closed", metadata: ["poolReplacements": "\(ledger.poolReplacements)"])
    }
}
