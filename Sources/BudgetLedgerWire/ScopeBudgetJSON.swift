import BudgetLedger

/// The JSON of scope budgets, the same for `budget … --json` and `/api/v1/budgets`. Amounts
/// of USD are exact decimal numbers, as every cost the ledger prints.

extension BudgetWindow {
    /// `{"start": ISO 8601, "end": ISO 8601 | null}`; `end` (exclusive) is null for a budget of all time.
    public var json: JSONValue {
        .object([
            ("start", .string(Timestamps.iso8601(microseconds: startMicroseconds))),
            ("end", endMicroseconds.map { .string(Timestamps.iso8601(microseconds: $0)) } ?? .null),
        ])
    }

    /// `json`, written straight into `writer` (the same members in the same order).
    public func write(to writer: inout JSONWriter) {
        writer.beginObject()
        writer.name("start")
        writer.timestamp(microseconds: startMicroseconds)
        writer.name("end")
        if let endMicroseconds { writer.timestamp(microseconds: endMicroseconds) } else { writer.null() }
        writer.endObject()
    }
}

extension ScopeBudget {
    /// `{scope, period, windowStart, windowEnd, maxTokens, maxUsd, spentTokens, spentUsd,
    /// requestCount, unpricedRequests, heldTokens, heldUsd, remainingTokens, remainingUsd,
    /// percentUsed, exhausted}`; a max the budget does not have, and its remaining, are null.
    public var json: JSONValue {
        .object([
            ("scope", .string(scope.description)),
            ("period", .string(period.rawValue)),
            ("windowStart", .string(Timestamps.iso8601(microseconds: window.startMicroseconds))),
            ("windowEnd", window.endMicroseconds.map { .string(Timestamps.iso8601(microseconds: $0)) } ?? .null),
            ("maxTokens", .optional(maxTokens)),
            ("maxUsd", .cost(maxNanodollars)),
            ("spentTokens", .integer(spentTokens)),
            ("spentUsd", .cost(spentNanodollars)),
            ("requestCount", .integer(requestCount)),
            ("unpricedRequests", .integer(unpricedRequests)),
            ("heldTokens", .integer(heldTokens)),
            ("heldUsd", .cost(heldNanodollars)),
            ("remainingTokens", .optional(remainingTokens)),
            ("remainingUsd", .cost(remainingNanodollars)),
            ("percentUsed", .double(percentUsed.roundedToOneDecimal)),
            ("exhausted", .bool(isExhausted)),
        ])
    }
}

/// The list of scope budgets, as `budget list --json` and `GET /api/v1/budgets` print it.
public enum ScopeBudgetList {
    /// `{"budgets": [budget…], "count": N}`, by scope.
    public static func json(_ budgets: [ScopeBudget]) -> JSONValue {
        .object([("budgets", .array(budgets.map(\.json))), ("count", .integer(Int64(budgets.count)))])
    }
}

extension WriteAnswer {
    /// `DELETE /api/v1/budgets/{scope}`, `budget remove --json`.
    public static func budgetRemoved(_ scope: BudgetScope) -> JSONValue {
        .object([("removed", .bool(true)), ("scope", .string(scope.description))])
    }
}

extension ScopeThresholdCrossing {
    /// `{scope, window, thresholdPercent, severity, tokensUsed, usdUsed, maxTokens, maxUsd}`: the
    /// window's spend after the consume that crossed the threshold.
    public var json: JSONValue {
        .object([
            ("scope", .string(scope.description)),
            ("window", window.json),
            ("thresholdPercent", .integer(Int64(thresholdPercent))),
            ("severity", .string(severity)),
            ("tokensUsed", .integer(tokensUsed)),
            ("usdUsed", .cost(nanodollarsUsed)),
            ("maxTokens", .optional(maxTokens)),
            ("maxUsd", .cost(maxNanodollars)),
        ])
    }

    /// `json`, written straight into `writer` (the same members in the same order).
    public func write(to writer: inout JSONWriter) {
        writer.beginObject()
        writer.name("scope")
        writer.string(scope.description)
        writer.name("window")
        window.write(to: &writer)
        writer.name("thresholdPercent")
        writer.integer(Int64(thresholdPercent))
        writer.name("severity")
        writer.string(severity)
        writer.name("tokensUsed")
        writer.integer(tokensUsed)
        writer.name("usdUsed")
        writer.cost(nanodollarsUsed)
        writer.name("maxTokens")
        writer.integer(maxTokens)
        writer.name("maxUsd")
        writer.cost(maxNanodollars)
        writer.endObject()
    }
}
