import BudgetLedger
import Foundation

/// JSON and CSV shapes shared by the CLI and the REST API. Amounts are exact decimals of USD.

extension JSONValue {
    /// A cost in nano-dollars as an exact decimal number of USD, or null when unknown.
    public static func cost(_ nanos: Int64?) -> JSONValue {
        nanos.map { .decimal(Money.decimalString(nanodollars: $0)) } ?? .null
    }

    /// Metadata text (validated as a JSON object when recorded) embedded as JSON, or null.
    static func metadata(_ text: String?) -> JSONValue {
        text.map(JSONValue.decimal) ?? .null
    }
}

extension ConsumeEvent {
    /// `{id, timestamp, agentId, model, provider, latencyMs, cost, metadata, reservationId}`.
    public var json: JSONValue {
        .object([
            ("id", .integer(id)),
            ("timestamp", .string(Timestamps.iso8601(microseconds: timestampMicroseconds))),
            ("agentId", .optional(usage.agentID)),
            ("model", .optional(usage.model)),
            ("provider", .optional(usage.provider)),
            ("latencyMs", .optional(usage.latencyMilliseconds)),
            ("cost", .cost(costNanodollars)),
            ("metadata", .metadata(usage.metadataJSON)),
            ("reservationId", .optional(reservationID)),
        ])
    }

    /// `json`, written straight into `writer` (the same members in the same order).
    public func write(to writer: inout JSONWriter) {
        writer.beginObject()
        writer.name("id")
        writer.integer(id)
        writer.name("timestamp")
        writer.timestamp(microseconds: timestampMicroseconds)
        writer.name("agentId")
        writer.string(usage.agentID)
        writer.name("model")
        writer.string(usage.model)
        writer.name("provider")
        writer.string(usage.provider)
        writer.name("latencyMs")
        writer.integer(usage.latencyMilliseconds)
        writer.name("cost")
        writer.cost(costNanodollars)
        writer.name("metadata")
        if let metadata = usage.metadataJSON { writer.raw(metadata) } else { writer.null() }
        writer.name("reservationId")
        writer.integer(reservationID)
        writer.endObject()
    }
}

extension LedgerEvent {
    /// Every field of the event; fields that do not apply to its kind are null.
    public var json: JSONValue {
        .object([
            ("id", .integer(id)),
            ("timestamp", .string(Timestamps.iso8601(microseconds: timestampMicroseconds))),
            ("kind", .string(kind)),
            ("threadId", .optional(threadID)),
            ("promptTokens", .integer(promptTokens)),
            ("completionTokens", .integer(completionTokens)),
            ("totalTokens", .integer(promptTokens.saturatingAdd(completionTokens))),
            ("agentId", .optional(usage.agentID)),
            ("model", .optional(usage.model)),
            ("provider", .optional(usage.provider)),
            ("latencyMs", .optional(usage.latencyMilliseconds)),
            // reprice (migration 0012): the corrected cost of the consume named by causedBy.
            ("cost", kind == "consume" || kind == "reprice" ? .cost(costNanodollars) : .null),
            ("orgId", .optional(organizationID)),
            ("userId", .optional(userID)),
            ("metadata", .metadata(usage.metadataJSON)),
            ("idempotencyKey", .optional(idempotencyKey)),
            ("maxTokens", .optional(maxTokens)),
            ("thresholdPercent", .optional(thresholdPercent.map(Int64.init))),
            ("severity", .optional(severity)),
            ("causedBy", .optional(causedBy)),
            ("heldTokens", .optional(heldTokens)),
            ("expiresAt", .optional(expiresAtMicroseconds.map { Timestamps.iso8601(microseconds: $0) })),
            ("reservationId", .optional(reservationID)),
        ])
    }

    /// The CSV header for consume events.
    public static let csvHeader = [
        "id", "timestamp", "thread_id", "agent_id", "model", "provider", "org_id", "user_id", "prompt_tokens",
        "completion_tokens", "total_tokens", "latency_ms", "cost", "metadata",
    ]

    /// The CSV fields of a consume event, in `csvHeader` order; the cost is empty when unpriced.
    public var csvFields: [String] {
        [
            String(id), Timestamps.iso8601(microseconds: timestampMicroseconds), threadID ?? "", usage.agentID ?? "",
            usage.model ?? "", usage.provider ?? "", organizationID ?? "", userID ?? "", String(promptTokens),
            String(completionTokens), String(promptTokens.saturatingAdd(completionTokens)),
            usage.latencyMilliseconds.map { String($0) } ?? "", costNanodollars.map { Money.decimalString(nanodollars: $0) } ?? "",
            usage.metadataJSON ?? "",
        ]
    }
}

extension UsageTotals {
    /// The totals' fields, after an optional leading key field such as `("agentId", …)`.
    public func json(key: (String, JSONValue)? = nil) -> JSONValue {
        var members: [(String, JSONValue)] = key.map { [$0] } ?? []
        members += [
            ("totalTokens", .integer(totalTokens)),
            ("promptTokens", .integer(promptTokens)),
            ("completionTokens", .integer(completionTokens)),
            ("requestCount", .integer(requestCount)),
            // Null when no request is priced (unknown, never $0); with costComplete false, the
            // priced requests' cost only.
            ("totalCost", .cost(knownCostNanodollars)),
            ("unpricedRequests", .integer(unpricedRequests)),
            // The prompt plus completion tokens of those requests: the usage totalCost leaves out.
            ("unpricedTokens", .integer(unpricedTokens)),
            ("costComplete", .bool(isCostComplete)),
        ]
        return .object(members)
    }

    /// The overview's totals: adds `avgLatencyMs` (one decimal; null when no event carries a latency).
    public var overviewJSON: JSONValue {
        guard case .object(var members) = json() else { return json() }
        members.append(("avgLatencyMs", averageLatencyMilliseconds.map { .double($0.roundedToOneDecimal) } ?? .null))
        return .object(members)
    }

    /// The CSV header of a rollup grouped by `group`.
    public static func csvHeader(group: String) -> [String] {
        [
            group, "prompt_tokens", "completion_tokens", "total_tokens", "request_count", "cost", "unpriced_requests",
            "unpriced_tokens", "cost_complete", "avg_latency_ms",
        ]
    }

    /// The CSV fields of one rollup row.
    public func csvFields(key: String?) -> [String] {
        [
            key ?? "", String(promptTokens), String(completionTokens), String(totalTokens), String(requestCount),
            knownCostNanodollars.map { Money.decimalString(nanodollars: $0) } ?? "", String(unpricedRequests),
            String(unpricedTokens), isCostComplete ? "true" : "false",
            averageLatencyMilliseconds.map { String($0.roundedToOneDecimal) } ?? "",
        ]
    }
}

extension UsageOverview {
    /// `{"usage": {"totals": …, "byAgent": […], "byModel": […], "activeThreads": N}}`, the reference's shape.
    public var json: JSONValue {
        .object([
            (
                "usage",
                .object([
                    ("totals", totals.overviewJSON),
                    ("byAgent", .array(byAgent.map { $0.totals.json(key: ("agentId", .optional($0.agentID))) })),
                    ("byModel", .array(byModel.map { $0.totals.json(key: ("model", .optional($0.model))) })),
                    ("activeThreads", .integer(activeThreads)),
                ])
            )
        ])
    }
}

extension ModelPrice {
    /// `{model, promptPerMillion, completionPerMillion, effectiveFrom, source}`, prices as exact USD decimals.
    public var json: JSONValue {
        .object([
            ("model", .string(modelPattern)),
            ("promptPerMillion", .decimal(Money.usdPerMillion(nanodollarsPerToken: promptNanodollarsPerToken))),
            ("completionPerMillion", .decimal(Money.usdPerMillion(nanodollarsPerToken: completionNanodollarsPerToken))),
            ("effectiveFrom", .string(Timestamps.iso8601(microseconds: effectiveFromMicroseconds))),
            ("source", .string(source)),
        ])
    }
}

extension RepriceResult {
    /// `{repriced, cost, costNanos, unpriced, complete}`: the reprice events appended, their total
    /// cost as an exact USD decimal and in nano-dollars, the consumes of the range still unpriced,
    /// and false when the call stopped at its limit (call it again).
    public var json: JSONValue {
        .object([
            ("repriced", .integer(repricedCount)),
            ("cost", .decimal(Money.decimalString(nanodollars: costNanodollars))),
            ("costNanos", .integer(costNanodollars)),
            ("unpriced", .integer(unpricedCount)),
            ("complete", .bool(isComplete)),
        ])
    }
}

/// RFC 4180 CSV.
public enum CSV {
    /// One record: fields quoted when they hold a comma, quote, CR or LF; ends with CRLF.
    public static func record(_ fields: [String]) -> String {
        fields.map(field).joined(separator: ",") + "\r\n"
    }

    static func field(_ text: String) -> String {
        let needsQuotes = text.contains { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" || $0 == "\r\n" }
        guard needsQuotes else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

extension Reservation {
    /// `{reservationId, threadId, tokens, expiresAt}`.
    public var json: JSONValue {
        .object([
            ("reservationId", .integer(id)),
            ("threadId", .string(threadID)),
            ("tokens", .integer(tokens)),
            ("expiresAt", .string(Timestamps.iso8601(microseconds: expiresAtMicroseconds))),
        ])
    }
}

/// Live holds as `holds --json` and `GET /api/v1/reservations` answer them.
public enum HoldList {
    /// `{"holds": [reservation…], "count", "heldTokens"}`.
    public static func json(_ holds: [Reservation]) -> JSONValue {
        .object([
            ("holds", .array(holds.map(\.json))),
            ("count", .integer(Int64(holds.count))),
            ("heldTokens", .integer(heldTokens(holds))),
        ])
    }

    /// The tokens `holds` keep, saturating (each hold is at most `LedgerLimits.heldTokensMax`).
    public static func heldTokens(_ holds: [Reservation]) -> Int64 {
        holds.reduce(Int64(0)) { $0.saturatingAdd($1.tokens) }
    }
}

extension ReserveResult {
    /// `{"reservationId": …, "expiresAt": …, "budget": …, "replayed": …}`.
    public var json: JSONValue {
        .object([
            ("reservationId", .integer(reservation.id)),
            ("expiresAt", .string(Timestamps.iso8601(microseconds: reservation.expiresAtMicroseconds))),
            ("budget", budget.json),
            ("replayed", .bool(isReplay)),
        ])
    }
}

extension SettleResult {
    /// The consume's JSON (`budget`, `crossedThresholds`, `event`, `replayed`) plus `holdHadExpired`.
    public var json: JSONValue {
        guard case .object(var members) = consume.json else { return consume.json }
        members.append(("holdHadExpired", .bool(holdHadExpired)))
        return .object(members)
    }
}

/// The list of open threads, as `threads` and `GET /api/v1/usage/threads` print it.
public enum ThreadList {
    /// `{"threads": [budget…], "count", "defaultMaxTokens"}`, in the order given (hottest first).
    public static func json(_ budgets: [ThreadBudget], defaultMaxTokens: Int64) -> JSONValue {
        .object([
            ("threads", .array(budgets.map(\.json))),
            ("count", .integer(Int64(budgets.count))),
            ("defaultMaxTokens", .integer(defaultMaxTokens)),
        ])
    }
}

extension EventPage {
    /// `{"events": [event…], "lastId": N}`, as `events --json` and `GET /api/v1/events` print
    /// it: pass `lastId` as `after` for the next page.
    public var json: JSONValue {
        .object([("events", .array(events.map(\.json))), ("lastId", .integer(lastID))])
    }
}

/// The price table and one model's price, as `price list`/`price show` and
/// `GET /api/v1/prices`, `GET /api/v1/prices/{model}` print them.
public enum PriceTableJSON {
    /// `{"prices": [row + inForce…], "count": N}`; `inForce` for the rows that apply at `now`.
    public static func json(_ prices: [ModelPrice], at now: Int64) -> JSONValue {
        let rows = prices.map { price -> JSONValue in
            guard case .object(var members) = price.json else { return price.json }
            members.append(("inForce", .bool(price.isInForce(among: prices, at: now))))
            return .object(members)
        }
        return .object([("prices", .array(rows)), ("count", .integer(Int64(prices.count)))])
    }

    /// `{"model": name as asked, "normalizedModel", "match": "exact" | "pattern" | null, "price": row | null}`.
    public static func json(model: String, price: ModelPrice?) -> JSONValue {
        .object([
            ("model", .string(model)), ("normalizedModel", .string(ModelName.normalized(model))),
            ("match", price.map { .string($0.match == .exact ? "exact" : "pattern") } ?? .null),
            ("price", price?.json ?? .null),
        ])
    }
}

/// The answers of writes that return no budget of their own, the same on both surfaces.
public enum WriteAnswer {
    /// `POST /api/v1/usage/reset`, `usage reset --json`.
    public static let usageWindowReset = JSONValue.object([
        ("success", .bool(true)),
        ("message", .string("Usage window reset: the overview counts from now on; no events were deleted")),
    ])

    /// `GET`/`PUT /api/v1/config`, `configure --json`: the key `threads` uses for the same number.
    public static func config(defaultMaxTokens: Int64) -> JSONValue {
        .object([("defaultMaxTokens", .integer(defaultMaxTokens))])
    }

    /// `POST /api/v1/reservations/{id}/release`, `release --json`.
    public static func released(_ reservationID: Int64, budget: ThreadBudget) -> JSONValue {
        .object([("released", .bool(true)), ("reservationId", .integer(reservationID)), ("budget", budget.json)])
    }
}
