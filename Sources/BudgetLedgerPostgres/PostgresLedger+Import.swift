import BudgetLedger
import PostgresNIO

extension PostgresLedger {
    /// Records `batch` as consumes, in order, in one transaction, as `Ledger.importConsumes(_:)`
    /// does on SQLite (`budget-ledger import`): each at its own timestamp and priced then,
    /// unchecked, keyed `import:<source event id>` so that a line already recorded is skipped
    /// and counted, and a batch is recorded whole or not at all.
    ///
    /// A batch locks the rows of every thread it names, in line order, until it commits: unlike
    /// the store's other writes, which lock one thread each, two imports, or an import and a
    /// write of another server, can meet in a deadlock, which PostgreSQL breaks by rolling one
    /// back and `write` runs again (docs/postgres.md). Import with writers stopped, as a migration.
    ///
    /// - Throws: as `Ledger.importConsumes(_:)`: `LedgerError.invalidInput` for more than
    ///   `Ledger.importBatchMax` consumes or a cost past the per-call limit, `LedgerError.conflict`
    ///   for a key recorded for a different consume or at the ledger's capacity, each naming the
    ///   line; `PostgresLedgerError` for the server or the connection.
    @discardableResult
    public func importConsumes(_ batch: [ImportedConsume]) async throws -> ImportBatchResult {
        try Ledger.checkImportBatch(batch)
        guard !batch.isEmpty else { return ImportBatchResult(imported: 0, skipped: 0) }
        return try await write { [self] connection in
            var imported = 0
            for consume in batch {
                do {
                    let result = try await record(consume.request, at: consume.timestampMicroseconds, on: connection)
                    if !result.isReplay { imported += 1 }
                } catch let error as LedgerError {
                    throw error.onLine(consume.line)
                }
            }
            return ImportBatchResult(imported: imported, skipped: batch.count - imported)
        }
    }
}
