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
    /// The budget after `request`'s consume: its tokens added (saturating: these are stored
    /// values, and a damaged file must not crash the caller) and one more request.
    package func consuming(_ request: ConsumeRequest) -> ThreadBudget {
        with(
            promptTokens: promptTokens.saturatingAdd(request.promptTokens),
            completionTokens: completionTokens.saturatingAdd(request.completionTokens), requestCount: requestCount + 1,
            triggeredThresholds: triggeredThresholds)
    }

    package func with(promptTokens: Int64, completionTokens: Int64, requestCount: Int64, triggeredThresholds: [Int]) -> ThreadBudget {
        ThreadBudget(
            threadID: threadID, maxTokens: maxTokens, promptTokens: promptTokens, completionTokens: completionTokens,
            requestCount: requestCount, triggeredThresholds: triggeredThresholds, heldTokens: heldTokens)
    }
}
