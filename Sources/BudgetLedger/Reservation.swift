/// A live hold on a thread's budget.
public struct Reservation: Sendable, Equatable {
    /// The reserve event's id.
    public let id: Int64
    public let threadID: String
    public let tokens: Int64
    /// UTC microseconds after which the hold stops counting.
    public let expiresAtMicroseconds: Int64

    package init(id: Int64, threadID: String, tokens: Int64, expiresAtMicroseconds: Int64) {
        self.id = id
        self.threadID = threadID
        self.tokens = tokens
        self.expiresAtMicroseconds = expiresAtMicroseconds
    }
}

/// What `reserve` did.
public struct ReserveResult: Sendable, Equatable {
    public let reservation: Reservation
    /// The thread's budget with the new hold counted (for a replay: as it stands now).
    public let budget: ThreadBudget
    /// True when an idempotency key matched an earlier reserve: nothing new was recorded, and
    /// `reservation` is the original's.
    public let isReplay: Bool

    package init(reservation: Reservation, budget: ThreadBudget, isReplay: Bool = false) {
        self.reservation = reservation
        self.budget = budget
        self.isReplay = isReplay
    }
}

/// What `settle` did.
public struct SettleResult: Sendable, Equatable {
    /// The recorded consumption (its event carries the reservation id).
    public let consume: ConsumeResult
    /// The hold that was settled.
    public let reservation: Reservation
    /// True when the hold had already expired: the actual spend is still recorded.
    public let holdHadExpired: Bool

    package init(consume: ConsumeResult, reservation: Reservation, holdHadExpired: Bool) {
        self.consume = consume
        self.reservation = reservation
        self.holdHadExpired = holdHadExpired
    }
}

/// How a reservation stands, and the one rule for what may still be done with it (both stores).
package enum HoldEnding: Equatable, Sendable {
    case live, settled, released, expired, cleanedUp

    /// Refuses a settle of a hold that already ended by a settle, a release or its thread's
    /// cleanup; an expired hold may still be settled (its tokens were spent).
    ///
    /// - Throws: `LedgerError.conflict` naming why.
    package func checkSettleable(_ reservationID: Int64, threadID: String) throws {
        switch self {
        case .settled: throw LedgerError.conflict("reservation \(reservationID) was already settled")
        case .released: throw LedgerError.conflict("reservation \(reservationID) was already released")
        case .cleanedUp:
            throw LedgerError.conflict("reservation \(reservationID) ended when thread \(threadID) was cleaned up")
        case .live, .expired: break
        }
    }

    /// Refuses a release of a hold that is not live at `now`.
    ///
    /// - Throws: `LedgerError.conflict` naming why.
    package func checkReleasable(_ reservation: Reservation, at now: Int64) throws {
        switch self {
        case .live where reservation.expiresAtMicroseconds > now: return
        case .live, .expired:
            throw LedgerError.conflict("reservation \(reservation.id) expired; there is nothing to release")
        default: try checkSettleable(reservation.id, threadID: reservation.threadID)
        }
    }
}
