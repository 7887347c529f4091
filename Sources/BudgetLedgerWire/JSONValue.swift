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
        var output = ""
        write(to: &output, pretty: pretty, indent: 0)
        return output
    }

    private func write(to output: inout String, pretty: Bool, indent: Int) {
        switch self {
        case .null: output += "null"
        case .bool(let value): output += value ? "true" : "false"
        case .integer(let value): output += String(value)
        case .double(let value): output += value.isFinite ? "\(value)" : "null"
        case .decimal(let text): output += text
        case .string(let text): Self.writeString(text, to: &output)
        case .array(let items):
            writeContainer(
                items.map { item in { (output: inout String, indent: Int) in item.write(to: &output, pretty: pretty, indent: indent) } },
                open: "[", close: "]", pretty: pretty, indent: indent, to: &output)
        case .object(let members):
            writeContainer(
                members.map { key, value in
                    { (output: inout String, indent: Int) in
                        Self.writeString(key, to: &output)
                        output += pretty ? ": " : ":"
                        value.write(to: &output, pretty: pretty, indent: indent)
                    }
                },
                open: "{", close: "}", pretty: pretty, indent: indent, to: &output)
        }
    }

    private func writeContainer(
        _ parts: [(inout String, Int) -> Void], open: String, close: String, pretty: Bool, indent: Int,
        to output: inout String
    ) {
        output += open
        guard !parts.isEmpty else {
            output += close
            return
        }
        for (index, part) in parts.enumerated() {
            if index > 0 { output += "," }
            if pretty { output += "\n" + String(repeating: "  ", count: indent + 1) }
            part(&output, indent + 1)
        }
        if pretty { output += "\n" + String(repeating: "  ", count: indent) }
        output += close
    }

    private static func writeString(_ text: String, to output: inout String) {
        output += "\""
        // Most strings (ids, models, timestamps) need no escape: appended whole.
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C || $0 == 0x7F }) {
            output += text
            output += "\""
            return
        }
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                output += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: output.unicodeScalars.append(scalar)
            }
        }
        output += "\""
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
