import BudgetLedger
import BudgetLedgerPostgres
import BudgetLedgerStore
import BudgetLedgerWire
import NIOCore

/// The storage seam of the REST server: the library's `LedgerStore` (every ledger operation its
/// routes call) and the two things only the server needs, both tied to its own types: the
/// `/metrics` exposition (`ServerMetrics`) and the event export streamed into a route's
/// `ChunkPipe` (docs/design.md, "The storage seam").
protocol ServerLedgerStore: LedgerStore {
    /// The `/metrics` exposition: the server's own `metrics` and the ledger's business figures.
    func metricsExposition(_ metrics: ServerMetrics) async throws -> String
    /// Starts the event export of `query` in `format` into `pipe`, which it finishes with the
    /// outcome: a bad query or an unreadable store fails the pipe before its first chunk.
    func startEventExport(_ query: ExportQuery, format: ExportFormat, into pipe: ChunkPipe)
}

extension SQLiteLedgerStore: ServerLedgerStore {
    func metricsExposition(_ metrics: ServerMetrics) async throws -> String {
        // Reading the file's size is a file-system call: it runs on the ledger's threads too,
        // with the ledger's own figures (every process's usage, not only this server's).
        try await run { ledger in
            let business = LedgerMetrics.exposition(overview: try ledger.usageOverview(.allTime), gauges: try ledger.gauges())
            return metrics.exposition(ledgerPath: ledger.path) + business
        }
    }

    /// Streams from a ledger thread, which blocks while the pipe is full.
    func startEventExport(_ query: ExportQuery, format: ExportFormat, into pipe: ChunkPipe) {
        Task {
            do {
                try await run { ledger in
                    var output = ChunkWriter(pipe: pipe)
                    try ledger.exportEvents(query, format: format, to: { try output.write($0) })
                    try output.flush()
                }
                pipe.finish(.success(()))
            } catch {
                pipe.finish(.failure(error))
            }
        }
    }
}

extension PostgresLedger: ServerLedgerStore {
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
