internal import LedgerSQLite

/// A budget refused a check, a checked consume, or a hold.
///
/// Its message contains "budget exhausted", as the reference's.
public struct BudgetExhaustedError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The units of a refusal's figures.
    public enum Unit: String, Sendable {
        case tokens
        /// Nano-dollars (10^-9 USD).
        case nanodollars
    }

    public let threadID: String
    /// Spent in the thread's (or the scope's) window, in `unit`.
    public let used: Int64
    /// The max, in `unit` (named for the thread's budget, whose unit is always tokens).
    public let maxTokens: Int64
    /// What the call asked for, in `unit`.
    public let requestedTokens: Int64
    /// Held by live reservations, which count against the budget too, in `unit`.
    public let heldTokens: Int64
    /// The scope budget that refused; nil when the thread's own budget did.
    public let scope: BudgetScope?
    /// The scope budget's window (nil for the thread's budget).
    public let window: BudgetWindow?
    public let unit: Unit
    /// A dollar budget refused because this model has no price (the call's cost is unknown).
    public let unpricedModel: String?

    public init(
        threadID: String, used: Int64, maxTokens: Int64, requestedTokens: Int64, heldTokens: Int64 = 0,
        scope: BudgetScope? = nil, window: BudgetWindow? = nil, unit: Unit = .tokens, unpricedModel: String? = nil
    ) {
        self.threadID = threadID
        self.used = used
        self.maxTokens = maxTokens
        self.requestedTokens = requestedTokens
        self.heldTokens = heldTokens
        self.scope = scope
        self.window = window
        self.unit = unit
        self.unpricedModel = unpricedModel
    }

    public var description: String {
        guard let scope else {
            let held = heldTokens > 0 ? " and \(heldTokens) held" : ""
            return "budget exhausted for thread \(threadID): \(used) of \(maxTokens) tokens used\(held), "
                + "\(requestedTokens) more requested"
        }
        let period = window.map { Self.describe($0) } ?? ""
        if let unpricedModel {
            return "budget exhausted for thread \(threadID): scope \(scope) has a dollar budget\(period) and model "
                + "\(unpricedModel) has no price, so the call's cost is unknown (set a price for it)"
        }
        func amount(_ value: Int64) -> String {
            unit == .tokens ? "\(value) tokens" : "\(Money.decimalString(nanodollars: value)) USD"
        }
        let held = heldTokens > 0 ? " and \(amount(heldTokens)) held" : ""
        return "budget exhausted for thread \(threadID) by scope \(scope)\(period): \(amount(used)) of "
            + "\(amount(maxTokens)) used\(held), \(amount(requestedTokens)) more requested"
    }

    private static func describe(_ window: BudgetWindow) -> String {
        guard let end = window.endMicroseconds else { return " (all time)" }
        return " (window \(Timestamps.iso8601(microseconds: window.startMicroseconds)) to "
            + "\(Timestamps.iso8601(microseconds: end)))"
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
    /// The model (a normalised name or pattern) has no price starting at this time (UTC
    /// microseconds) to withdraw or replace.
    case priceNotFound(model: String, from: Int64)
    /// The change is no longer possible, e.g. an idempotency key reused for a different consume.
    case conflict(String)
    /// The ledger was closed.
    case closed
    /// The ledger's file failed: I/O, disk full, corrupt, read-only, busy.
    case database(path: String, StorageFailure)
    /// The file cannot be used as a ledger: newer schema, another application's database.
    case incompatible(path: String, Incompatibility)

    public var description: String {
        switch self {
        case .invalidInput(let field, let reason):
            return "invalid \(field): \(reason)"
        case .threadNotFound(let threadID):
            return "No budget found for thread: \(threadID)"
        case .reservationNotFound(let id):
            return "No reservation found with id: \(id)"
        case .priceNotFound(let model, let from):
            return "No price for \(model) from \(Timestamps.iso8601(microseconds: from)) (nothing to withdraw or replace)"
        case .conflict(let reason):
            return "conflict: \(reason)"
        case .closed:
            return "the ledger is closed"
        case .database(let path, let failure):
            return "ledger \(path): \(failure)"
        case .incompatible(let path, let error):
            return "ledger \(path): \(error)"
        }
    }
}

extension LedgerError {
    /// True when another process held the ledger's lock past the busy timeout: the call wrote
    /// nothing and may be retried. The REST server answers 503 for it, not 500.
    public var isBusy: Bool {
        if case .database(_, let failure) = self { return failure.kind == .busy }
        return false
    }
}

extension SQLiteError {
    /// The refusal of `events_apply_consume` (migration 0006) when a consume would take an
    /// all-time sum past `LedgerLimits.allTimeSumMax`.
    var isCapacityReached: Bool { code == .constraint && message.hasPrefix("ledger capacity reached") }
}
