internal import LedgerSQLite

/// Which path recorded an import batch (`package`: tests check that a batch took the one they
/// mean to prove).
package enum ImportRoute: Sendable, Equatable {
    /// Derived state per batch (`Ledger.importAsBatch`).
    case batch
    /// One consume at a time (`Ledger.record`, the reference), and why.
    case rowByRow(ImportFallback)
}

/// Why a batch was recorded row by row: whatever the batch path would have to do differently
/// from a plain append, the row path does exactly as a consume does.
package enum ImportFallback: Error, Sendable, Equatable {
    /// The caller asked for the row path (the equivalence tests' reference).
    case asked
    /// The ledger has a scope budget: each consume's window and thresholds are the row path's.
    case scopeBudget
    /// A touched thread has holds, live or expired (expiries to record, held tokens to count).
    case holds
    /// An insert was refused: a line's key is already recorded, in the ledger or earlier in the
    /// batch (the row path skips a replay and names a conflict's line), or another constraint.
    case insertRefused
    /// A line was refused (its cost above the per-call limit): the row path names it.
    case lineRefused
    /// The batch would take an all-time sum past the capacity: the row path names the line.
    case capacity
}

extension ImportFallback {
    /// The import's name for why the batch path handed a batch back.
    init(_ fallback: ConsumeBatchFallback) {
        switch fallback {
        case .scopeBudget: self = .scopeBudget
        case .holds: self = .holds
        case .insertRefused: self = .insertRefused
        case .capacity: self = .capacity
        // An import's consumes are unchecked, so none is refused for its budget; its cost is.
        case .priceRefused, .refused: self = .lineRefused
        }
    }
}

extension Ledger {
    /// Records `batch` with its derived state applied per batch (`recordBatch`, group commit's
    /// batch path too), in the caller's write, each consume at its own time.
    ///
    /// - Throws: an `ImportFallback` when the batch needs the row path (scope budgets, holds, a
    ///   recorded key, a refused line, the capacity), which then records it as a consume would
    ///   and names any line refused; the connection's errors. Either way the caller's write must
    ///   roll back what the batch wrote (a throw out of `write` does).
    func importAsBatch(_ batch: [ImportedConsume], on connection: Connection) throws {
        do {
            _ = try recordBatch(
                batch.map { BatchedConsume(request: $0.request, time: $0.timestampMicroseconds) }, on: connection)
        } catch let fallback as ConsumeBatchFallback {
            throw ImportFallback(fallback)
        }
    }
}
