import LedgerSQLite

/// A budget refused a check, a checked consume, or a hold.
///
/// Its message contains "budget exhausted", as the reference's.
public struct BudgetExhaustedError: Error, Sendable, Equatable, CustomStringConvertible {
    public let threadID: String
    /// Tokens already spent in the thread's window.
    public let used: Int64
    public let maxTokens: Int64
    /// The tokens that were asked for.
    public let requestedTokens: Int64
    /// Tokens held by live reservations, which count against the budget too.
    public let heldTokens: Int64

    public init(threadID: String, used: Int64, maxTokens: Int64, requestedTokens: Int64, heldTokens: Int64 = 0) {
        self.threadID = threadID
        self.used = used
        self.maxTokens = maxTokens
        self.requestedTokens = requestedTokens
        self.heldTokens = heldTokens
    }

    public var description: String {
        let held = heldTokens > 0 ? " and \(heldTokens) held" : ""
        return "budget exhausted for thread \(threadID): \(used) of \(maxTokens) tokens used\(held), "
            + "\(requestedTokens) more requested"
    }
}

/// Every other way a ledger call can fail.
public enum LedgerError: Error, Sendable, CustomStringConvertible {
    /// Bad input: nothing was written. `field` names what was wrong.
    case invalidInput(field: String, reason: String)
    /// The thread is not open (never opened, or cleaned up).
    case threadNotFound(String)
    /// No reservation has this id.
    case reservationNotFound(Int64)
    /// The change is no longer possible, e.g. an idempotency key reused for a different consume.
    case conflict(String)
    /// The ledger was closed.
    case closed
    /// SQLite failed on the ledger file: I/O, disk full, corrupt, read-only, busy.
    case database(path: String, SQLiteError)
    /// The file cannot be used as a ledger: newer schema, another application's database.
    case incompatible(path: String, MigrationError)

    public var description: String {
        switch self {
        case .invalidInput(let field, let reason):
            return "invalid \(field): \(reason)"
        case .threadNotFound(let threadID):
            return "No budget found for thread: \(threadID)"
        case .reservationNotFound(let id):
            return "No reservation found with id: \(id)"
        case .conflict(let reason):
            return "conflict: \(reason)"
        case .closed:
            return "the ledger is closed"
        case .database(let path, let error):
            return "ledger \(path): \(Self.summary(of: error))"
        case .incompatible(let path, let error):
            return "ledger \(path): \(error)"
        }
    }

    private static func summary(of error: SQLiteError) -> String {
        if error.code == .notADatabase {
            return "file is not a SQLite database (\(error)); the file was left untouched"
        }
        if error.isCorrupt {
            return "database file is corrupt (\(error))"
        }
        if error.isFull {
            return "disk full, nothing was recorded (\(error))"
        }
        if error.isReadOnly || error.code == .cannotOpen {
            return "cannot open for writing (\(error))"
        }
        if error.isBusy {
            return "another process held the ledger lock past the busy timeout (\(error))"
        }
        return "\(error)"
    }
}

extension LedgerError {
    /// True when another process held the ledger's lock past the busy timeout: the call wrote
    /// nothing and may be retried. The REST server answers 503 for it, not 500.
    public var isBusy: Bool {
        if case .database(_, let error) = self { return error.isBusy }
        return false
    }
}

extension SQLiteError {
    /// The refusal of `events_apply_consume` (migration 0006) when a consume would take an
    /// all-time sum past `LedgerLimits.allTimeSumMax`.
    var isCapacityReached: Bool { code == .constraint && message.hasPrefix("ledger capacity reached") }
}
