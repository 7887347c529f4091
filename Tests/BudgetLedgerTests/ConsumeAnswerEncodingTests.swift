import BudgetLedger
import BudgetLedgerWire
import Foundation
import Testing

/// `JSONValue`'s writer as it was before `JSONWriter` (a String built through closures): the
/// reference the byte writer is compared with.
private enum LegacyJSONText {
    static func serialized(_ value: JSONValue, pretty: Bool) -> String {
        var output = ""
        write(value, to: &output, pretty: pretty, indent: 0)
        return output
    }

    private static func write(_ value: JSONValue, to output: inout String, pretty: Bool, indent: Int) {
        switch value {
        case .null: output += "null"
        case .bool(let value): output += value ? "true" : "false"
        case .integer(let value): output += String(value)
        case .double(let value): output += value.isFinite ? "\(value)" : "null"
        case .decimal(let text): output += text
        case .string(let text): writeString(text, to: &output)
        case .array(let items):
            writeContainer(
                items.map { item in { (output: inout String, indent: Int) in write(item, to: &output, pretty: pretty, indent: indent) } },
                open: "[", close: "]", pretty: pretty, indent: indent, to: &output)
        case .object(let members):
            writeContainer(
                members.map { key, value in
                    { (output: inout String, indent: Int) in
                        writeString(key, to: &output)
                        output += pretty ? ": " : ":"
                        write(value, to: &output, pretty: pretty, indent: indent)
                    }
                },
                open: "{", close: "}", pretty: pretty, indent: indent, to: &output)
        }
    }

    private static func writeContainer(
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

/// Random values for the comparisons: SplitMix64, so a seed reproduces a run.
private struct Random {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    mutating func integer() -> Int64 {
        [0, 1, -1, .max, .min, Int64(bitPattern: next()), Int64(below(1_000_000))][below(7)]
    }

    mutating func double() -> Double {
        [0, -0.0, 76.0, 0.1, 1e-5, 1e21, 123.456, .infinity, .nan, Double(bitPattern: next())][below(10)]
    }

    mutating func text() -> String {
        let pieces = ["a", "Z", " ", "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1F}", "\u{7F}", "é", "😀", "\u{2028}", "/", "e\u{301}"]
        return (0..<below(6)).map { _ in pieces[below(pieces.count)] }.joined()
    }

    mutating func value(depth: Int = 0) -> JSONValue {
        switch below(depth > 3 ? 7 : 9) {
        case 0: return .null
        case 1: return .bool(below(2) == 0)
        case 2: return .integer(integer())
        case 3: return .double(double())
        case 4: return .decimal(["0", "0.00045", "-12.5", "1e3"][below(4)])
        case 5, 6: return .string(text())
        case 7: return .array((0..<below(4)).map { _ in value(depth: depth + 1) })
        default: return .object((0..<below(4)).map { _ in (text(), value(depth: depth + 1)) })
        }
    }
}

@Suite("The consume answer written straight into bytes is the JSON the tree writes")
struct ConsumeAnswerEncodingTests {
    @Test func theByteWriterWritesWhatTheStringWriterWrote() {
        // Proves: JSONValue's byte writer gives, compact and indented, byte for byte the text of
        // the String writer it replaced, over 5,000 random values (escapes, controls, non-ASCII,
        // Int64's bounds, non-finite and exponent-form doubles, nesting, empty containers).
        var random = Random(state: 16)
        for _ in 0..<5_000 {
            let value = random.value()
            for pretty in [false, true] {
                #expect(value.serialized(pretty: pretty) == LegacyJSONText.serialized(value, pretty: pretty))
            }
        }
    }

    @Test func theAnswersOfRealConsumesAreByteIdentical() throws {
        // Proves: for consumes that exercise every member (priced and unpriced, metadata with
        // escapes, null and present details, each threshold crossing, scope budgets crossed in
        // tokens and USD, a replay, a settle's reservation id), `jsonBytes` is exactly
        // `json.serialized()`.
        let ledger = try Ledger.inMemory(maxTokensPerThread: 1_000)
        defer { ledger.close() }
        try ledger.setPrice(model: "gpt-4o", promptUSDPerMillion: "2.5", completionUSDPerMillion: "10")
        try ledger.setBudget(.global, maxTokens: 2_000)
        try ledger.setBudget(try BudgetScope(parsing: "org:acme"), period: .month, maxNanodollars: 5_000_000)
        var results: [ConsumeResult] = []
        let metadata = #"{"org_id":"acme","note":"a \"quoted\"\nline é😀","n":[1,2.5,null]}"#
        results.append(try ledger.consume("t1", promptTokens: 700, completionTokens: 60))
        results.append(
            try ledger.consume(
                "t1", promptTokens: 200, completionTokens: 10, idempotencyKey: "k-1",
                usage: try UsageDetails(agentID: "planner", model: "gpt-4o", provider: "openai", latencyMilliseconds: 1_234, metadataJSON: metadata)))
        results.append(
            try ledger.consume(
                "t1", promptTokens: 200, completionTokens: 10, idempotencyKey: "k-1",
                usage: try UsageDetails(agentID: "planner", model: "gpt-4o", provider: "openai", latencyMilliseconds: 1_234, metadataJSON: metadata)))
        results.append(try ledger.checkAndConsume("t\u{e9}\"2", promptTokens: 1, usage: UsageDetails(model: "unpriced-model")))
        results.append(
            try ledger.consume("t3", promptTokens: 990, completionTokens: 0, usage: try UsageDetails(model: "gpt-4o", metadataJSON: #"{"org_id":"acme"}"#)))
        let hold = try ledger.reserve("t4", tokens: 10, ttlSeconds: 60)
        results.append(try ledger.settle(hold.reservation.id, promptTokens: 5).consume)
        #expect(results.contains { !$0.crossedThresholds.isEmpty })
        #expect(results.contains { !$0.crossedScopeThresholds.isEmpty })
        #expect(results.contains { $0.isReplay })
        #expect(results.contains { $0.event.reservationID != nil })
        for result in results {
            #expect(String(decoding: result.jsonBytes, as: UTF8.self) == result.json.serialized())
        }
    }

    @Test func constructedAnswersWithExtremeValuesAreByteIdentical() {
        // Proves: over 2,000 constructed results with Int64's bounds, every threshold, odd ids
        // and metadata text, `jsonBytes` is exactly `json.serialized()`.
        var random = Random(state: 1_616)
        for _ in 0..<2_000 {
            let budget = ThreadBudget(
                threadID: random.text(), maxTokens: random.integer(), promptTokens: random.integer(),
                completionTokens: random.integer(), requestCount: random.integer(), heldTokens: random.integer())
            let crossings = (0..<random.below(4)).map { _ in
                ThresholdCrossing(
                    thresholdPercent: [75, 90, 95, 100][random.below(4)], severity: random.text(), tokensUsed: random.integer(),
                    maxTokens: random.integer())
            }
            // Any JSON text, as a row could hold it: encoding copies recorded text as it is.
            let usage = UsageDetails(
                agentID: random.below(2) == 0 ? nil : random.text(), model: random.below(2) == 0 ? nil : random.text(),
                provider: random.below(2) == 0 ? nil : random.text(),
                latencyMilliseconds: random.below(2) == 0 ? nil : random.integer(),
                metadata: .recorded(random.below(2) == 0 ? nil : random.value().serialized(), organizationID: nil, userID: nil))
            let event = ConsumeEvent(
                id: random.integer(), timestampMicroseconds: Int64(random.below(Int(Timestamps.maxMicroseconds))),
                threadID: budget.threadID, promptTokens: budget.promptTokens, completionTokens: budget.completionTokens,
                idempotencyKey: nil, usage: usage, costNanodollars: random.below(2) == 0 ? nil : random.integer(),
                reservationID: random.below(2) == 0 ? nil : random.integer())
            let result = ConsumeResult(budget: budget, crossedThresholds: crossings, event: event, isReplay: random.below(2) == 0)
            #expect(String(decoding: result.jsonBytes, as: UTF8.self) == result.json.serialized())
        }
    }

    @Test func timestampsAreWrittenAsPrintfWroteThem() {
        // Proves: `Timestamps.iso8601` without `String(format:)` gives printf's text at the
        // ledger's bounds, around leap days and year ends, and at 20,000 random instants.
        func printf(_ microseconds: Int64) -> String {
            var seconds = time_t(microseconds / 1_000_000)
            var parts = tm()
            gmtime_r(&seconds, &parts)
            return String(
                format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(microseconds % 1_000_000))
        }
        var random = Random(state: 2_026)
        var instants: [Int64] = [0, 1, 999_999, 1_000_000, 951_782_400_000_000, 951_868_799_999_999, 1_798_761_599_999_999]
        instants += [Timestamps.maxMicroseconds, Timestamps.maxMicroseconds + 1, -1, -1_000_001]
        instants += (0..<20_000).map { _ in Int64(random.below(Int(Timestamps.maxMicroseconds))) }
        for instant in instants {
            #expect(Timestamps.iso8601(microseconds: instant) == printf(instant), "\(instant)")
        }
    }
}
