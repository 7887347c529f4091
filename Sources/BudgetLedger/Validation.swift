/// Limits on what callers may pass in; exceeding one is a clear error, never a clamp.
public enum LedgerLimits {
    /// Thread ids, idempotency keys, agent ids, models and providers: at most this many UTF-8 bytes.
    public static let identifierBytesMax = 256
    /// Metadata JSON: at most this many UTF-8 bytes.
    public static let metadataBytesMax = 16 * 1024
}

enum Validate {
    /// A non-empty identifier of at most 256 UTF-8 bytes with no control characters.
    static func identifier(_ value: String, field: String) throws {
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

    static func optionalIdentifier(_ value: String?, field: String) throws {
        if let value { try identifier(value, field: field) }
    }

    /// A token count that is zero or more.
    static func tokens(_ value: Int64, field: String) throws {
        if value < 0 {
            throw LedgerError.invalidInput(field: field, reason: "must not be negative (got \(value))")
        }
    }

    /// prompt + completion, refusing negatives and overflow.
    static func tokenSum(prompt: Int64, completion: Int64) throws -> Int64 {
        try tokens(prompt, field: "promptTokens")
        try tokens(completion, field: "completionTokens")
        let (sum, overflow) = prompt.addingReportingOverflow(completion)
        if overflow {
            throw LedgerError.invalidInput(
                field: "completionTokens", reason: "prompt + completion tokens overflow a 64-bit count")
        }
        return sum
    }

    static func thresholds(_ thresholds: [BudgetThreshold]) throws {
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
