/// One thread's token budget in its current window, as the reference registry reports it.
public struct ThreadBudget: Sendable, Equatable {
    /// The thread this budget belongs to.
    public let threadID: String
    /// The most tokens the thread may spend in this window.
    public let maxTokens: Int64
    /// Prompt tokens spent in this window.
    public let promptTokens: Int64
    /// Completion tokens spent in this window.
    public let completionTokens: Int64
    /// Consume events recorded in this window.
    public let requestCount: Int64
    /// Thresholds (percent) already crossed in this window, ascending.
    public let triggeredThresholds: [Int]
    /// Tokens held by live reservations (not yet settled, released or expired).
    public let heldTokens: Int64

    public init(
        threadID: String, maxTokens: Int64, promptTokens: Int64 = 0, completionTokens: Int64 = 0,
        requestCount: Int64 = 0, triggeredThresholds: [Int] = [], heldTokens: Int64 = 0
    ) {
        self.heldTokens = heldTokens
        self.threadID = threadID
        self.maxTokens = maxTokens
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.requestCount = requestCount
        self.triggeredThresholds = triggeredThresholds
    }

    /// Prompt plus completion tokens. The limits keep it far below `Int64.max`
    /// (`LedgerLimits`); a value read from a damaged file saturates rather than trap.
    public var totalTokens: Int64 { promptTokens.saturatingAdd(completionTokens) }

    /// Tokens left before the max, never negative.
    public var remaining: Int64 { max(0, maxTokens.saturatingSubtract(totalTokens)) }

    /// True when the total has reached the max (a max of 0 is always exhausted).
    public var isExhausted: Bool { totalTokens >= maxTokens }

    /// Percent of the max spent; 0 when the max is 0, as the reference.
    public var percentUsed: Double {
        maxTokens == 0 ? 0 : Double(totalTokens) / Double(maxTokens) * 100
    }

    /// Tokens a new hold or checked consume may still take: max − spent − held, never negative.
    public var remainingAfterHolds: Int64 {
        max(0, maxTokens.saturatingSubtract(totalTokens.saturatingAdd(heldTokens)))
    }

    /// Whether `tokens` more fit under the max: total + held + tokens ≤ max, without overflow.
    /// (With no holds this is the reference's `can_consume`.)
    public func canConsume(_ tokens: Int64) -> Bool {
        guard tokens >= 0 else { return false }
        let (committed, heldOverflow) = totalTokens.addingReportingOverflow(heldTokens)
        let (sum, overflow) = committed.addingReportingOverflow(tokens)
        return !heldOverflow && !overflow && sum <= maxTokens
    }

    /// The same budget with other counts (for the consume path, which knows the new totals).
    func with(promptTokens: Int64, completionTokens: Int64, requestCount: Int64, triggeredThresholds: [Int]) -> ThreadBudget {
        ThreadBudget(
            threadID: threadID, maxTokens: maxTokens, promptTokens: promptTokens, completionTokens: completionTokens,
            requestCount: requestCount, triggeredThresholds: triggeredThresholds, heldTokens: heldTokens)
    }
}

/// A warning level: fires once per thread window when the spent percent reaches it.
public struct BudgetThreshold: Sendable, Equatable, Hashable {
    /// The percent of the max (1…1000) at which the threshold fires.
    public let percent: Int
    /// Its name: "warning", "critical", "final" by default.
    public let severity: String

    public init(percent: Int, severity: String) {
        self.percent = percent
        self.severity = severity
    }

    /// The reference's defaults: 75% warning, 90% critical, 95% final.
    public static let defaults = [
        BudgetThreshold(percent: 75, severity: "warning"),
        BudgetThreshold(percent: 90, severity: "critical"),
        BudgetThreshold(percent: 95, severity: "final"),
    ]

    /// Whether `used` tokens of `maxTokens` reach this threshold (never for a max of 0).
    func isReached(used: Int64, maxTokens: Int64) -> Bool {
        guard maxTokens > 0 else { return false }
        // used * 100 >= percent * max, in 128 bits so that no count can overflow.
        let left = used.multipliedFullWidth(by: 100)
        let right = Int64(percent).multipliedFullWidth(by: maxTokens)
        return (left.high, left.low) >= (right.high, right.low)
    }
}

/// A threshold that a consume crossed.
public struct ThresholdCrossing: Sendable, Equatable {
    public let thresholdPercent: Int
    public let severity: String
    /// The thread's total after the consume that crossed it.
    public let tokensUsed: Int64
    /// The thread's max when it was crossed.
    public let maxTokens: Int64

    public init(thresholdPercent: Int, severity: String, tokensUsed: Int64, maxTokens: Int64) {
        self.thresholdPercent = thresholdPercent
        self.severity = severity
        self.tokensUsed = tokensUsed
        self.maxTokens = maxTokens
    }

    public var percentUsed: Double { maxTokens == 0 ? 0 : Double(tokensUsed) / Double(maxTokens) * 100 }
    public var tokensRemaining: Int64 { max(0, maxTokens.saturatingSubtract(tokensUsed)) }
}

/// Optional usage details recorded with a consume, for billing.
public struct UsageDetails: Sendable, Equatable {
    public var agentID: String?
    public var model: String?
    public var provider: String?
    public var latencyMilliseconds: Int64?
    /// A JSON object, as text; its `org_id` and `user_id` (strings) are indexed for billing.
    public var metadataJSON: String?

    public init(
        agentID: String? = nil, model: String? = nil, provider: String? = nil,
        latencyMilliseconds: Int64? = nil, metadataJSON: String? = nil
    ) {
        self.agentID = agentID
        self.model = model
        self.provider = provider
        self.latencyMilliseconds = latencyMilliseconds
        self.metadataJSON = metadataJSON
    }

    public static let none = UsageDetails()
}

/// One recorded consume event.
public struct ConsumeEvent: Sendable, Equatable {
    /// The event id: strictly increasing across the ledger.
    public let id: Int64
    /// When it was recorded: UTC microseconds since 1970.
    public let timestampMicroseconds: Int64
    public let threadID: String
    public let promptTokens: Int64
    public let completionTokens: Int64
    public let idempotencyKey: String?
    public let usage: UsageDetails
    /// The cost in nano-dollars (10⁻⁹ USD); nil when the model has no price.
    public let costNanos: Int64?
    /// The reservation this consume settled, if any.
    public let reservationID: Int64?
}

/// What a consume did.
public struct ConsumeResult: Sendable, Equatable {
    /// The thread's budget after the consume (for a replay: as it stands now, or, once the
    /// thread's life has ended, as the original consume left it).
    public let budget: ThreadBudget
    /// The thresholds this consume crossed, ascending.
    public let crossedThresholds: [ThresholdCrossing]
    /// The recorded event.
    public let event: ConsumeEvent
    /// True when an idempotency key matched an earlier consume: nothing new was recorded,
    /// and `event` and `crossedThresholds` are the original's.
    public let isReplay: Bool
}

/// A live hold on a thread's budget.
public struct Reservation: Sendable, Equatable {
    /// The reserve event's id.
    public let id: Int64
    public let threadID: String
    public let tokens: Int64
    /// UTC microseconds after which the hold stops counting.
    public let expiresAtMicroseconds: Int64
}

/// What `reserve` did.
public struct ReserveResult: Sendable, Equatable {
    public let reservation: Reservation
    /// The thread's budget with the new hold counted.
    public let budget: ThreadBudget
}

/// What `settle` did.
public struct SettleResult: Sendable, Equatable {
    /// The recorded consumption (its event carries the reservation id).
    public let consume: ConsumeResult
    /// The hold that was settled.
    public let reservation: Reservation
    /// True when the hold had already expired: the actual spend is still recorded.
    public let holdHadExpired: Bool
}
