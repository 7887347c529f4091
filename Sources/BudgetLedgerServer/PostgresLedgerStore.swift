import BudgetLedger
import BudgetLedgerPostgres
import BudgetLedgerWire
import Logging
import NIOCore
import ServiceLifecycle

/// The PostgreSQL store behind the server's routes: `PostgresLedger`'s calls, made directly.
extension PostgresLedger: LedgerStore {
    var storeName: String { "PostgreSQL" }

    func setDefaultMaxTokens(_ maxTokensPerThread: Int64) async throws -> Int64 {
        try await configure(maxTokensPerThread: maxTokensPerThread)
        return try await self.maxTokensPerThread
    }

    func threadList() async throws -> (budgets: [ThreadBudget], defaultMaxTokens: Int64) {
        // Two reads, not one snapshot: a thread opened between them is listed under the old default.
        (budgets: try await allUsage(), defaultMaxTokens: try await maxTokensPerThread)
    }

    func consumeAnswer(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails,
        checked: Bool
    ) async throws -> (isReplay: Bool, json: [UInt8]) {
        let result = try await consume(
            threadID, promptTokens: promptTokens, completionTokens: completionTokens, idempotencyKey: idempotencyKey,
            usage: usage, checked: checked)
        return (isReplay: result.isReplay, json: result.jsonBytes)
    }

    func priceTable() async throws -> (prices: [ModelPrice], now: Int64) {
        (prices: try await prices(), now: configuration.clock())
    }

    func price(forModel model: String) async throws -> ModelPrice? {
        try await price(forModel: model, at: nil)
    }

    func metricsExposition(_ metrics: ServerMetrics) async throws -> String {
        let business = LedgerMetrics.exposition(overview: try await usageOverview(.allTime), gauges: try await gauges())
        return metrics.exposition(ledgerPath: nil) + business
    }

    /// Streams from a task, a page of events (one chunk) at a time, suspending while the pipe is full.
    func startEventExport(_ query: ExportQuery, format: ExportFormat, into pipe: ChunkPipe) {
        Task {
            do {
                try await format.exportEvents(
                    pages: { body in try await self.forEachConsumeEventPage(query, body) },
                    to: { text in if !text.isEmpty { try await pipe.send(async: ByteBuffer(string: text)) } })
                pipe.finish(.success(()))
            } catch {
                pipe.finish(.failure(error))
            }
        }
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
