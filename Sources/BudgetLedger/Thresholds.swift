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
    package func isReached(used: Int64, maxTokens: Int64) -> Bool {
        Self.isReached(percent: percent, used: used, maxTokens: maxTokens)
    }

    /// Whether `used` tokens of `maxTokens` reach `percent` (never for a max of 0): the one rule
    /// for crossings, for limits that re-arm them (0007's trigger says the same in SQL), and
    /// for verify's recomputation.
    static func isReached(percent: Int, used: Int64, maxTokens: Int64) -> Bool {
        guard maxTokens > 0 else { return false }
        // used * 100 >= percent * max, in 128 bits so that no count can overflow.
        let left = used.multipliedFullWidth(by: 100)
        let right = Int64(percent).multipliedFullWidth(by: maxTokens)
        return (left.high, left.low) >= (right.high, right.low)
    }
}

extension [BudgetThreshold] {
    /// The thresholds of this list (sorted by percent) that `budget` reaches and that have not
    /// fired in its window yet: the one rule both stores record threshold events by.
    package func crossings(by budget: ThreadBudget) -> [ThresholdCrossing] {
        let fired = Set(budget.triggeredThresholds)
        var crossings: [ThresholdCrossing] = []
        for threshold in self where !fired.contains(threshold.percent) {
            guard threshold.isReached(used: budget.totalTokens, maxTokens: budget.maxTokens) else { break }
            crossings.append(
                ThresholdCrossing(
                    thresholdPercent: threshold.percent, severity: threshold.severity,
                    tokensUsed: budget.totalTokens, maxTokens: budget.maxTokens))
        }
        return crossings
    }
}

extension ThreadBudget {
    /// This budget with `crossings` marked as fired.
    package func firing(_ crossings: [ThresholdCrossing]) -> ThreadBudget {
        guard !crossings.isEmpty else { return self }
        return with(
            promptTokens: promptTokens, completionTokens: completionTokens, requestCount: requestCount,
            triggeredThresholds: (triggeredThresholds + crossings.map(\.thresholdPercent)).sorted())
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
