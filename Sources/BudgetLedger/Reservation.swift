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
