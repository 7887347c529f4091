import BudgetLedger
/// A JSON document with ordered keys and exact numbers, for the CLI's and the server's output.
///
/// Foundation's encoders reorder keys and print some doubles in exponent form; a ledger's
/// output is a contract, so we write it ourselves.
public indirect enum JSONValue: Sendable {
    case null
    case bool(Bool)
    case integer(Int64)
    case double(Double)
    /// A number written exactly as given: an amount such as `0.00045`.
    case decimal(String)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    /// The compact (or indented) JSON text.
    public func serialized(pretty: Bool = false) -> String {
        String(decoding: serializedBytes(pretty: pretty), as: UTF8.self)
    }

    /// The compact (or indented) JSON text as UTF-8 bytes.
    public func serializedBytes(pretty: Bool = false) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(256)
        write(to: &output, pretty: pretty, indent: 0)
        return output
    }

    func write(to output: inout [UInt8], pretty: Bool, indent: Int) {
        switch self {
        case .null: output.append(contentsOf: [0x6E, 0x75, 0x6C, 0x6C])  // null
        case .bool(let value): JSONWriter.append(value, to: &output)
        case .integer(let value): JSONWriter.append(value, to: &output)
        case .double(let value): JSONWriter.append(value, to: &output)
        case .decimal(let text): output.append(contentsOf: text.utf8)
        case .string(let text): JSONWriter.append(text, to: &output)
        case .array(let items):
            output.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                Self.separate(index, pretty: pretty, indent: indent + 1, in: &output)
                item.write(to: &output, pretty: pretty, indent: indent + 1)
            }
            Self.close(UInt8(ascii: "]"), isEmpty: items.isEmpty, pretty: pretty, indent: indent, in: &output)
        case .object(let members):
            output.append(UInt8(ascii: "{"))
            for (index, (key, value)) in members.enumerated() {
                Self.separate(index, pretty: pretty, indent: indent + 1, in: &output)
                JSONWriter.append(key, to: &output)
                output.append(UInt8(ascii: ":"))
                if pretty { output.append(UInt8(ascii: " ")) }
                value.write(to: &output, pretty: pretty, indent: indent + 1)
            }
            Self.close(UInt8(ascii: "}"), isEmpty: members.isEmpty, pretty: pretty, indent: indent, in: &output)
        }
    }

    /// Before a container's item: a comma after the first, and with `pretty` a new line indented to `indent`.
    private static func separate(_ index: Int, pretty: Bool, indent: Int, in output: inout [UInt8]) {
        if index > 0 { output.append(UInt8(ascii: ",")) }
        if pretty { newLine(indent: indent, in: &output) }
    }

    /// A container's end: with `pretty`, a non-empty one closes on a line of its own.
    private static func close(_ bracket: UInt8, isEmpty: Bool, pretty: Bool, indent: Int, in output: inout [UInt8]) {
        if pretty && !isEmpty { newLine(indent: indent, in: &output) }
        output.append(bracket)
    }

    private static func newLine(indent: Int, in output: inout [UInt8]) {
        output.append(0x0A)
        output.append(contentsOf: repeatElement(UInt8(ascii: " "), count: 2 * indent))
    }
}

extension JSONValue {
    /// `value` as an integer, or null.
    public static func optional(_ value: Int64?) -> JSONValue { value.map(JSONValue.integer) ?? .null }
    /// `value` as a string, or null.
    public static func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }
}

extension Double {
    /// Rounded to one decimal, as the reference reports percentages.
    public var roundedToOneDecimal: Double { (self * 10).rounded() / 10 }
}

extension ThreadBudget {
    /// `{threadId, maxTokens, promptTokens, completionTokens, totalTokens, remaining, requestCount,
    /// percentUsed, isExhausted}`, the reference's shape.
    public var json: JSONValue {
        .object([
            ("threadId", .string(threadID)),
            ("maxTokens", .integer(maxTokens)),
            ("promptTokens", .integer(promptTokens)),
            ("completionTokens", .integer(completionTokens)),
            ("totalTokens", .integer(totalTokens)),
            ("remaining", .integer(remaining)),
            ("requestCount", .integer(requestCount)),
            ("percentUsed", .double(percentUsed.roundedToOneDecimal)),
            ("isExhausted", .bool(isExhausted)),
            ("heldTokens", .integer(heldTokens)),
            ("remainingAfterHolds", .integer(remainingAfterHolds)),
        ])
    }

    /// `json`, written straight into `writer` (the same members in the same order).
    public func write(to writer: inout JSONWriter) {
        writer.beginObject()
        writer.name("threadId")
        writer.string(threadID)
        writer.name("maxTokens")
        writer.integer(maxTokens)
        writer.name("promptTokens")
        writer.integer(promptTokens)
        writer.name("completionTokens")
        writer.integer(completionTokens)
        writer.name("totalTokens")
        writer.integer(totalTokens)
        writer.name("remaining")
        writer.integer(remaining)
        writer.name("requestCount")
        writer.integer(requestCount)
        writer.name("percentUsed")
        writer.double(percentUsed.roundedToOneDecimal)
        writer.name("isExhausted")
        writer.bool(isExhausted)
        writer.name("heldTokens")
        writer.integer(heldTokens)
        writer.name("remainingAfterHolds")
        writer.integer(remainingAfterHolds)
        writer.endObject()
    }
}

extension ThresholdCrossing {
    /// `{thresholdPercent, severity, percentUsed, tokensUsed, tokensRemaining, maxTokens}`.
    public var json: JSONValue {
        .object([
            ("thresholdPercent", .integer(Int64(thresholdPercent))),
            ("severity", .string(severity)),
            ("percentUsed", .double(percentUsed.roundedToOneDecimal)),
            ("tokensUsed", .integer(tokensUsed)),
            ("tokensRemaining", .integer(tokensRemaining)),
            ("maxTokens", .integer(maxTokens)),
        ])
    }

    /// `json`, written straight into `writer` (the same members in the same order).
    public func write(to writer: inout JSONWriter) {
        writer.beginObject()
        writer.name("thresholdPercent")
        writer.integer(Int64(thresholdPercent))
        writer.name("severity")
        writer.string(severity)
        writer.name("percentUsed")
        writer.double(percentUsed.roundedToOneDecimal)
        writer.name("tokensUsed")
        writer.integer(tokensUsed)
        writer.name("tokensRemaining")
        writer.integer(tokensRemaining)
        writer.name("maxTokens")
        writer.integer(maxTokens)
        writer.endObject()
    }
}

extension ConsumeResult {
    /// `{"budget": …, "crossedThresholds": […], "event": …, "replayed": Bool, "crossedScopeThresholds": […]}`
    /// (the scope crossings last, so the thread's fields keep their order).
    public var json: JSONValue {
        .object([
            ("budget", budget.json),
            ("crossedThresholds", .array(crossedThresholds.map(\.json))),
            ("event", event.json),
            ("replayed", .bool(isReplay)),
            ("crossedScopeThresholds", .array(crossedScopeThresholds.map(\.json))),
        ])
    }

    /// `json`, written straight into `writer` (the same members in the same order): the
    /// server's answer to a consume, without building the tree.
    public func write(to writer: inout JSONWriter) {
        writer.beginObject()
        writer.name("budget")
        budget.write(to: &writer)
        writer.name("crossedThresholds")
        writer.beginArray()
        for crossing in crossedThresholds { crossing.write(to: &writer) }
        writer.endArray()
        writer.name("event")
        event.write(to: &writer)
        writer.name("replayed")
        writer.bool(isReplay)
        writer.name("crossedScopeThresholds")
        writer.beginArray()
        for crossing in crossedScopeThresholds { crossing.write(to: &writer) }
        writer.endArray()
        writer.endObject()
    }

    /// The compact JSON text of `json`, as UTF-8, written without the tree.
    public var jsonBytes: [UInt8] {
        var writer = JSONWriter()
        write(to: &writer)
        return writer.bytes
    }
}

extension BudgetExhaustedError {
    /// A thread's refusal: `{"error": "budget exhausted", "detail": …, threadId, used, maxTokens,
    /// heldTokens, requestedTokens}`, as before scope budgets. A scope budget's refusal adds
    /// `scope`, `window` ({start, end}), `unit` ("tokens" or "usd"), `used`, `max`, `held`,
    /// `requested` in that unit (USD as exact decimals) and `unpricedModel` (null unless a dollar
    /// budget refused a model without a price); the token fields of a thread's refusal are kept
    /// only when the unit is tokens.
    public var json: JSONValue {
        var members: [(String, JSONValue)] = [
            ("error", .string("budget exhausted")),
            ("detail", .string(description)),
            ("threadId", .string(threadID)),
        ]
        guard let scope else {
            members += [
                ("used", .integer(used)),
                ("maxTokens", .integer(maxTokens)),
                ("heldTokens", .integer(heldTokens)),
                ("requestedTokens", .integer(requestedTokens)),
            ]
            return .object(members)
        }
        func amount(_ value: Int64) -> JSONValue { unit == .tokens ? .integer(value) : .cost(value) }
        members += [
            ("scope", .string(scope.description)),
            ("window", window?.json ?? .null),
            ("unit", .string(unit == .tokens ? "tokens" : "usd")),
            ("used", amount(used)),
            ("max", amount(maxTokens)),
            ("held", amount(heldTokens)),
            ("requested", amount(requestedTokens)),
            ("unpricedModel", .optional(unpricedModel)),
        ]
        if unit == .tokens {
            members += [
                ("maxTokens", .integer(maxTokens)),
                ("heldTokens", .integer(heldTokens)),
                ("requestedTokens", .integer(requestedTokens)),
            ]
        }
        return .object(members)
    }
}
