import Foundation
internal import LedgerSQLite

/// One consume of another ledger's history, to be recorded again in this one (`budget-ledger
/// import` of an NDJSON export): checked by the rules of a consume when it is made, so a batch
/// of them can only fail on what the ledger itself refuses.
public struct ImportedConsume: Sendable {
    /// Where it came from: the line of the source (from 1), named in every error about it.
    public let line: Int
    /// The event's id in the ledger it was exported from; its idempotency key here is made from it.
    public let sourceEventID: Int64
    /// When it happened (UTC microseconds): the timestamp it is recorded with and priced at.
    public let timestampMicroseconds: Int64
    /// The consume itself, validated (`package`: the PostgreSQL store records it too).
    package let request: ConsumeRequest

    /// Checks a consume as `Ledger.consume` checks one, and the import's own fields.
    ///
    /// - Parameters:
    ///   - line: the source's line number, for errors.
    ///   - sourceEventID: the event's id in the source ledger (at least 1).
    ///   - timestampMicroseconds: the event's own time, 0 … `Timestamps.maxMicroseconds`.
    /// - Throws: `LedgerError.invalidInput` naming the field and `line` (`promptTokens on line 3`).
    public init(
        line: Int, sourceEventID: Int64, timestampMicroseconds: Int64, threadID: String, promptTokens: Int64,
        completionTokens: Int64, usage: UsageDetails
    ) throws {
        self.line = line
        self.sourceEventID = sourceEventID
        self.timestampMicroseconds = timestampMicroseconds
        do {
            guard sourceEventID >= 1 else {
                throw LedgerError.invalidInput(field: "id", reason: "must be an event id, at least 1 (got \(sourceEventID))")
            }
            guard (0...Timestamps.maxMicroseconds).contains(timestampMicroseconds) else {
                throw LedgerError.invalidInput(field: "timestamp", reason: "must be from 1970 to 9999")
            }
            request = try ConsumeRequest(
                threadID: threadID, promptTokens: promptTokens, completionTokens: completionTokens,
                idempotencyKey: Ledger.importIdempotencyKey(sourceEventID: sourceEventID), usage: usage, enforce: false)
        } catch let error as LedgerError {
            throw error.onLine(line)
        }
    }

    /// The thread the consume is recorded on.
    public var threadID: String { request.threadID }
}

/// What one `Ledger.importConsumes(_:)` call recorded.
public struct ImportBatchResult: Sendable, Equatable {
    /// Consumes recorded now.
    public let imported: Int
    /// Consumes found already recorded under their import key (an earlier, maybe interrupted,
    /// run of the same import): nothing recorded for them.
    public let skipped: Int

    package init(imported: Int, skipped: Int) {
        self.imported = imported
        self.skipped = skipped
    }
}

extension Ledger {
    /// The most consumes one `importConsumes(_:)` call (one transaction) takes: a bounded
    /// transaction, so an import holds the write lock for a bounded time between batches.
    public static let importBatchMax = 10_000

    /// The batch the CLI's `import` uses unless told otherwise.
    public static let importBatchDefault = 2_000

    /// A batch holds at most `importBatchMax` consumes (`package`: both stores apply it).
    ///
    /// - Throws: `LedgerError.invalidInput` naming `batch`.
    package static func checkImportBatch(_ batch: [ImportedConsume]) throws {
        guard batch.count <= importBatchMax else {
            throw LedgerError.invalidInput(
                field: "batch", reason: "holds \(batch.count) consumes; the limit is \(importBatchMax)")
        }
    }

    /// The idempotency key an imported consume is recorded under: `import:<source event id>`.
    /// A second run of the same import finds each line's key and skips the line.
    public static func importIdempotencyKey(sourceEventID: Int64) -> String {
        "import:\(sourceEventID)"
    }

    /// Records `batch` as consumes, in order, in one transaction: all of it or, on an error,
    /// nothing of it (earlier batches stay recorded). (A batch the batch path hands over is
    /// recorded in a second transaction, the first having written nothing.)
    ///
    /// Each is recorded as `consume` records one (unchecked: it is history, the tokens were
    /// spent), except that its time is its own `timestampMicroseconds`, not the clock's: the
    /// event carries it, it is priced by the price in force then (the source's cost is not
    /// taken), a thread it opens opens then at the default max, its thresholds fire as a
    /// consume's would, and a scope budget counts it in the window of that time, or in its
    /// current window when that time's is older (a consume's rule for a clock that stepped back;
    /// setting the budget again re-reads the window by each event's time).
    /// Derived state is kept per batch: each touched thread is read once and its totals written
    /// once, with the same events, ids and thresholds as one
    /// consume at a time would give. A batch that needs more than a plain append (the ledger has
    /// a scope budget, a touched thread has holds, a line's key is already recorded, a line or
    /// the capacity is refused) is recorded one consume at a time instead, exactly as a consume
    /// (see docs/performance.md, issue 21, import).
    /// Each is keyed `importIdempotencyKey(sourceEventID:)`: a consume whose key is already
    /// recorded with the same fields is skipped and counted, so re-running an import records
    /// nothing twice. Subscribers are not told: this is history, not new usage.
    ///
    /// - Throws: `LedgerError.invalidInput` for more than `importBatchMax` consumes, or when a
    ///   consume's cost at its time's price is above the per-call limit; `LedgerError.conflict`
    ///   when a key is already recorded for a different consume (another source's event with
    ///   the same id), or at the ledger's capacity; each naming the line. The storage errors.
    @discardableResult
    public func importConsumes(_ batch: [ImportedConsume]) throws -> ImportBatchResult {
        try importConsumes(batch, rowByRow: false).result
    }

    /// `importConsumes(_:)`, and the path that recorded the batch; with `rowByRow`, always one
    /// consume at a time (`package`: the reference the tests compare the batch path with).
    package func importConsumes(_ batch: [ImportedConsume], rowByRow: Bool) throws
        -> (result: ImportBatchResult, route: ImportRoute)
    {
        try Self.checkImportBatch(batch)
        guard !batch.isEmpty else { return (ImportBatchResult(imported: 0, skipped: 0), .batch) }
        var route = ImportRoute.rowByRowAsked
        if !rowByRow {
            do {
                // Derived state per batch, each consume at its own time (group commit's engine
                // too). A fallback thrown out of the write rolls back what the batch path wrote.
                let consumes = batch.map { BatchedConsume(request: $0.request, time: $0.timestampMicroseconds) }
                try write { [self] connection in _ = try recordBatch(consumes, on: connection) }
                return (ImportBatchResult(imported: batch.count, skipped: 0), .batch)
            } catch let fallback as ConsumeBatchFallback {
                route = .rowByRow(fallback)
            }
        }
        let result = try write { [self] connection in try importRowByRow(batch, on: connection) }
        return (result, route)
    }

    /// Records `batch` one consume at a time (`record`, the consume path), naming the line of
    /// any error.
    private func importRowByRow(_ batch: [ImportedConsume], on connection: Connection) throws -> ImportBatchResult {
        var imported = 0
        for consume in batch {
            do {
                let result = try record(consume.request, at: consume.timestampMicroseconds, on: connection)
                if !result.isReplay { imported += 1 }
            } catch let error as LedgerError {
                throw error.onLine(consume.line)
            }
        }
        return ImportBatchResult(imported: imported, skipped: batch.count - imported)
    }
}

/// Which path recorded an import batch (`package`: tests check that a batch took the one they
/// mean to prove).
package enum ImportRoute: Sendable, Equatable {
    /// Derived state per batch (`Ledger.recordBatch`).
    case batch
    /// One consume at a time (`Ledger.record`, the reference), because the caller asked.
    case rowByRowAsked
    /// One consume at a time, because the batch path handed the batch back: the row path then
    /// names any line it refuses (a cost past the limit, a conflicting key, the capacity).
    case rowByRow(ConsumeBatchFallback)
}

extension LedgerError {
    /// The error about input line `line`: a bad field is named `FIELD on line N`, a conflict's
    /// reason starts with `line N:`; other errors (storage) are not about the line and stay as
    /// they are.
    public func onLine(_ line: Int) -> LedgerError {
        switch self {
        case .invalidInput(let field, let reason):
            return .invalidInput(field: "\(field) on line \(line)", reason: reason)
        case .conflict(let reason):
            return .conflict("line \(line): \(reason)")
        default:
            return self
        }
    }
}
