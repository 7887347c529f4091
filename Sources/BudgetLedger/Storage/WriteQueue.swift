import Foundation
internal import LedgerSQLite
import Synchronization

/// One write waiting for a transaction: its body, and, once the batch that ran it has
/// committed (or failed), its outcome.
///
/// `@unchecked Sendable`: `staged` and `outcome` are written only by the leader, which holds
/// the ledger's connection lock, before it signals `wakeUp`; the waiting caller reads them
/// only after `wakeUp` fired, and the semaphore orders the two.
final class WriteTicket: @unchecked Sendable {
    let body: @Sendable (Connection) throws -> any Sendable
    /// When the write is a plain consume: the call, so that a batch of consumes can be recorded
    /// with its derived state per batch (`Ledger.recordBatch`) instead of one `body` at a time.
    /// `body` records the same consume alone, and stays the reference (the row path).
    let batchable: BatchedConsume?
    /// Set by the body's run, kept until the batch commits.
    var staged: Result<any Sendable, any Error>?
    /// Set only once the batch's commit (or failure) is final.
    var outcome: Result<any Sendable, any Error>?
    /// Signalled once: when the outcome is final, or when this caller becomes the leader.
    private let wakeUp = DispatchSemaphore(value: 0)
    /// For a caller that suspends instead of blocking (`Ledger.write(suspending:)`): called in
    /// place of the semaphore, once, from the leader's thread.
    private let onSignal: (@Sendable (WriteTicket) -> Void)?

    init(
        _ body: @escaping @Sendable (Connection) throws -> any Sendable, batchable: BatchedConsume? = nil,
        onSignal: (@Sendable (WriteTicket) -> Void)? = nil
    ) {
        self.body = body
        self.batchable = batchable
        self.onSignal = onSignal
    }

    /// The batch's commit number for `WALSync.sync(through:)`, at FULL; set with `outcome`.
    var commitNumber: Int64 = 0

    func wait() { wakeUp.wait() }

    /// The final outcome as the caller's result, or its error.
    func answer<Result>() throws -> Result {
        switch outcome! {
        case .success(let value): return value as! Result
        case .failure(let error): throw error
        }
    }

    func signal() {
        if let onSignal { onSignal(self) } else { wakeUp.signal() }
    }
}

/// How much group commit coalesced, since the ledger was opened.
public struct WriteStatistics: Sendable, Equatable {
    /// Write transactions begun.
    public var transactions: Int64 = 0
    /// Writes run in them.
    public var writes: Int64 = 0
    /// The most writes one transaction carried.
    public var largestBatch = 0
    /// Writes recorded with their transaction's other consumes, derived state once per batch
    /// (`Ledger.recordBatch`), rather than one at a time.
    public var batchedWrites: Int64 = 0
}

/// The writes waiting for the next leader, in arrival order, and whether a leader is running.
struct WriteQueue: ~Copyable {
    var tickets: [WriteTicket] = []
    var hasLeader = false
}
