/// Limits on what callers may pass in; exceeding one is a clear error naming the field and the
/// limit, never a clamp, and nothing is written.
///
/// Chosen so that no sum the ledger keeps can overflow 64 bits (the arithmetic is in
/// `migrations/0006_bounded_sums.sql`, which enforces the same numbers for plain-SQL writers):
/// every total is a sum over a subset of the consumes, each value at most its limit, and the
/// all-time sum of each summed column is held under `allTimeSumMax` (4e18), so the largest
/// expression, a sum of prompt + completion, stays under 8e18 < 2^63 − 1.
public enum LedgerLimits {
    /// Thread ids, idempotency keys, agent ids, models and providers: at most this many UTF-8 bytes.
    public static let identifierBytesMax = 256
    /// Metadata JSON: at most this many UTF-8 bytes.
    public static let metadataBytesMax = 16 * 1024
    /// Prompt tokens, and completion tokens, of one call: 1e9 (500× the largest context window today).
    public static let tokensPerCallMax: Int64 = 1_000_000_000
    /// An estimate (`checkBudget`) or a hold (`reserve`): prompt + completion of one call.
    public static let tokensPerRequestMax: Int64 = 2 * tokensPerCallMax
    /// A thread's max, and the default max for new threads: 1e15 tokens.
    public static let maxTokensMax: Int64 = 1_000_000_000_000_000
    /// The latency of one call: 7 days in milliseconds (a batch job's window, with room to spare).
    public static let latencyMillisecondsMax: Int64 = 7 * 24 * 3_600 * 1_000
    /// A price, prompt or completion: 1e7 nano-dollars per token, i.e. $10,000 per million tokens.
    public static let priceNanodollarsPerTokenMax: Int64 = 10_000_000
    /// The cost of one call: `tokensPerRequestMax` tokens at `priceNanodollarsPerTokenMax` (2e16 nano-dollars, $20M).
    public static let costNanodollarsPerCallMax: Int64 = tokensPerRequestMax * priceNanodollarsPerTokenMax
    /// A scope budget's dollar max: $1 billion (1e18 nano-dollars), under the all-time capacity.
    public static let budgetNanodollarsMax: Int64 = 1_000_000_000_000_000_000
    /// The ttl of a hold: 7 days.
    public static let holdSecondsMax: Int64 = 7 * 24 * 3_600
    /// Events per page of the feed (`events(after:limit:)`).
    public static let feedPageLimitMax = 10_000
    /// Reprice events one `reprice` call appends (one transaction); the rest wait for the next call.
    public static let repricesPerCallMax: Int64 = 100_000
    /// The ledger's capacity: the all-time sum of each of prompt tokens, completion tokens, cost
    /// (nano-dollars) and latency (ms) over every consume. 4e18 tokens last 126,000 years at a
    /// million tokens a second; 4e18 nano-dollars is $4 billion. A consume past it is refused.
    public static let allTimeSumMax: Int64 = 4_000_000_000_000_000_000
}

/// The input rules every store applies before it writes (`package`: the PostgreSQL store uses them too).
package enum Validate {
    /// A non-empty identifier of at most 256 UTF-8 bytes with no control characters.
    package static func identifier(_ value: String, field: String) throws {
        if value.isEmpty {
            throw LedgerError.invalidInput(field: field, reason: "must not be empty")
        }
        let bytes = value.utf8.count
        if bytes > LedgerLimits.identifierBytesMax {
            throw LedgerError.invalidInput(
                field: field, reason: "is \(bytes) bytes long; the limit is \(LedgerLimits.identifierBytesMax) bytes")
        }
        // Every id passes here on the hot path: ASCII is checked by value (C0 controls and DEL),
        // and only other scalars pay for a Unicode property lookup (C1 controls).
        let isControl = { (scalar: Unicode.Scalar) -> Bool in
            scalar.isASCII ? (scalar.value < 0x20 || scalar.value == 0x7F) : scalar.properties.generalCategory == .control
        }
        if let bad = value.unicodeScalars.first(where: isControl) {
            throw LedgerError.invalidInput(
                field: field, reason: "contains the control character U+\(String(bad.value, radix: 16, uppercase: true))")
        }
    }

    package static func optionalIdentifier(_ value: String?, field: String) throws {
        if let value { try identifier(value, field: field) }
    }

    /// A count in `0...max`: the message names the field and the rule.
    package static func count(_ value: Int64, field: String, max: Int64) throws {
        if value < 0 {
            throw LedgerError.invalidInput(field: field, reason: "must not be negative (got \(value))")
        }
        if value > max {
            throw LedgerError.invalidInput(field: field, reason: "must be at most \(max) (got \(value))")
        }
    }

    /// prompt + completion of one call, each in `0...tokensPerCallMax`.
    package static func tokenSum(prompt: Int64, completion: Int64) throws -> Int64 {
        try count(prompt, field: "promptTokens", max: LedgerLimits.tokensPerCallMax)
        try count(completion, field: "completionTokens", max: LedgerLimits.tokensPerCallMax)
        return prompt + completion
    }

    /// A latency in `0...latencyMillisecondsMax`, when given.
    package static func latency(_ value: Int64?) throws {
        if let value { try count(value, field: "latencyMs", max: LedgerLimits.latencyMillisecondsMax) }
    }

    /// A thread's max or the default max, in `0...maxTokensMax`.
    package static func maxTokens(_ value: Int64, field: String) throws {
        try count(value, field: field, max: LedgerLimits.maxTokensMax)
    }

    package static func thresholds(_ thresholds: [BudgetThreshold]) throws {
        var seen: Set<Int> = []
        for threshold in thresholds {
            guard (1...1000).contains(threshold.percent) else {
                throw LedgerError.invalidInput(
                    field: "thresholds", reason: "percent \(threshold.percent) is outside 1…1000")
            }
            guard seen.insert(threshold.percent).inserted else {
                throw LedgerError.invalidInput(field: "thresholds", reason: "percent \(threshold.percent) appears twice")
            }
            try identifier(threshold.severity, field: "threshold severity")
        }
    }
}
