import BudgetLedger
import BudgetLedgerWire
import Foundation
import Testing

@testable import BudgetLedgerServer

/// The decoder the server used before `JSONBodyParser` (Foundation's `JSONDecoder` into the same
/// cases, tried in the same order): the reference the parser is compared with.
private struct FoundationDecoded: Decodable {
    let value: JSONInput

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            value = .null
        } else if let bool = try? container.decode(Bool.self) {
            value = .bool(bool)
        } else if let integer = try? container.decode(Int64.self) {
            value = .integer(integer)
        } else if let double = try? container.decode(Double.self) {
            value = .number(double)
        } else if let string = try? container.decode(String.self) {
            value = .string(string)
        } else if let items = try? container.decode([FoundationDecoded].self) {
            value = .array(items.map(\.value))
        } else {
            value = .object(try container.decode([String: FoundationDecoded].self).mapValues(\.value))
        }
    }

    /// Foundation's reading of `bytes`, or nil when it refuses them.
    static func decode(_ bytes: [UInt8]) -> JSONInput? {
        try? JSONDecoder().decode(Self.self, from: Data(bytes)).value
    }
}

/// The parser's reading of `bytes`, or nil when it refuses them.
private func parsed(_ bytes: [UInt8]) -> JSONInput? {
    try? JSONBodyParser.parse(bytes)
}

private func failure(_ text: String) -> JSONBodyParser.Failure? {
    do {
        _ = try JSONBodyParser.parse(Array(text.utf8))
        return nil
    } catch {
        return error
    }
}

@Suite("The request body parser reads JSON as Foundation's decoder did, and refuses what it refused")
struct JSONBodyParserTests {
    static let agreeing: [String] = [
        // Values and whitespace.
        "{}", "[]", " {} ", "\t\n\r {\"a\" : [ 1 , 2 ] }\t\n\r", "null", "true", "false", "0", "-0", "\"\"",
        #"{"promptTokens":1,"completionTokens":2,"idempotencyKey":"k-1","metadata":{"org_id":"acme","n":[1,2.5,null]}}"#,
        #"{"":1}"#, #"{"a\u0000":1}"#, #"{"é":1}"#, #"[[],[[]],{},{"a":{}}]"#,
        // Numbers: whole numbers however written, fractions, beyond Int64, bad forms.
        "1e3", "1E3", "1E+2", "1.0", "-0.0", "0e0", "-0e0", "1.5", "1e-2", "1.5e1", "0.1e1", "100e-2", "1e18",
        "123456789012345678.0", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
        "-9223372036854775809", "18446744073709551616", "123456789012345678901234567890", "0.000001", "-1.25e-3",
        "1e400", "-1e400", "01", "-01", "00", "-", "+1", ".5", "1.", "1e", "1e+", "1.e3", "--1", "0x10", "NaN",
        "Infinity", "-Infinity", "1 2",
        // Strings: escapes, surrogates, control characters.
        #""\ud83d\ude00""#, #""\uD83D\uDE00""#, #""\u00e9""#, #""\u0000""#, #""\/""#, #""\b\f\n\r\t\"\\""#,
        #""\ud800""#, #""\udc00""#, #""\ud800\u0041""#, #""\ud800\udbff""#, #""\ud800x""#, #""\u12""#, #""\u12g4""#,
        #""\x""#, #""\'""#, "\"a\tb\"", "\"a\nb\"", "\"a\u{7F}b\"", "\"é😀\"",
        // Broken documents.
        "", "{", "[", "{\"a\"", "{\"a\":", "{\"a\":1", "\"abc", "tru", "nul", "True", "[1 2]", "{1:2}", "{'a':1}",
        "/* c */{}", "{} x", "{},", "{\"a\":1}\u{0}", "\u{0C}{}", "{\"a\" 1}", "{\"a\":1 \"b\":2}", "[,1]", "{,}",
    ]

    @Test(arguments: agreeing)
    func parsesAsFoundationDid(_ text: String) {
        // Proves: for valid and broken documents alike the parser reaches the same value as the
        // decoder it replaced, or refuses what that decoder refused.
        let bytes = Array(text.utf8)
        #expect(parsed(bytes) == FoundationDecoded.decode(bytes), "\(text.debugDescription)")
    }

    @Test(arguments: [
        [0x22, 0xFF, 0x22], [0x22, 0xC0, 0x80, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xC3, 0x22],
        [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], [0x7B, 0xFF, 0x7D], [0x22, 0xC3, 0xA9, 0x22], [0xEF, 0xBB, 0xBF, 0x7B, 0x7D],
    ] as [[UInt8]])
    func refusesBytesThatAreNotUTF8AsFoundationDid(_ bytes: [UInt8]) {
        // Proves: a byte that is not UTF-8 (0xFF, an overlong form, an encoded surrogate, a cut
        // sequence, a scalar past U+10FFFF) is refused inside and outside strings; valid UTF-8 and
        // a leading byte order mark are read, as by Foundation's decoder.
        #expect(parsed(bytes) == FoundationDecoded.decode(bytes), "\(bytes)")
    }

    /// What the parser refuses on purpose although Foundation's decoder read it, with what that
    /// decoder made of it (checked too, so a change in Foundation shows here).
    static let divergences: [(text: String, foundation: JSONInput?, failure: JSONBodyParser.Failure)] = [
        (#"{"a":1,"a":2}"#, .object(["a": .integer(1)]), .duplicateName(path: "a")),
        (#"{"a":{"b":1,"b":"x"}}"#, .object(["a": .object(["b": .integer(1)])]), .duplicateName(path: "a.b")),
        (#"{"m":{"l":[0,{"x":1,"x":1}]}}"#, .object(["m": .object(["l": .array([.integer(0), .object(["x": .integer(1)])])])]),
         .duplicateName(path: "m.l[1].x")),
        // Canonically equivalent names are one name to a Swift dictionary, so one is a duplicate of the other.
        (#"{"e\u0301":1,"\u00e9":2}"#, .object(["é": .integer(1)]), .duplicateName(path: "é")),
        ("[1,]", .array([.integer(1)]), .syntax("a value", offset: 3)),
        (#"{"a":1,}"#, .object(["a": .integer(1)]), .syntax("a member name", offset: 7)),
    ]

    @Test(arguments: 0..<divergences.count)
    func refusesDuplicateNamesAndTrailingCommasThatFoundationTook(_ index: Int) {
        // Proves: a name given twice (at any depth, named by its path) and a trailing comma are
        // refused, where Foundation's decoder kept the first value or skipped the comma.
        let (text, foundation, expected) = Self.divergences[index]
        #expect(FoundationDecoded.decode(Array(text.utf8)) == foundation)
        #expect(failure(text) == expected, "\(text)")
    }

    @Test func refusesUTF16ThatFoundationGuessed() {
        // Proves: a body in UTF-16 (which Foundation's decoder detected and read) is refused:
        // JSON between systems is UTF-8 (RFC 8259 §8.1).
        let bytes = Array("{\"a\":1}".utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] })
        #expect(FoundationDecoded.decode(bytes) == .object(["a": .integer(1)]))
        #expect(parsed(bytes) == nil)
    }

    @Test(arguments: [
        ("1e3", JSONInput.integer(1000)), ("1.0", .integer(1)), ("-0", .integer(0)), ("-0.0e7", .integer(0)),
        ("25e-1", .number(2.5)), ("9223372036854775807", .integer(.max)), ("-9223372036854775808", .integer(.min)),
        ("9223372036854775807.0", .integer(.max)), ("92233720368547758070e-1", .integer(.max)),
        ("9223372036854775808", .number(9.223372036854775808e18)), ("-9223372036854775809", .number(-9.223372036854775809e18)),
        ("1e19", .number(1e19)), ("123456789012345678901234567890", .number(1.2345678901234568e29)),
        ("1e-400", .number(0)), ("0.1", .number(0.1)), ("1.7976931348623157e308", .number(.greatestFiniteMagnitude)),
        ("1\(String(repeating: "0", count: 400))e-400", .integer(1)),
    ])
    func readsANumberAsAnIntegerExactlyWhenItsValueIsWholeAndInsideInt64(_ text: String, _ expected: JSONInput) {
        // Proves: whole values inside Int64 are integers however written (JSON Schema's integer),
        // exactly, up to Int64's bounds; others are the nearest Double. Where Foundation's decoder
        // differed (9223372036854775807.0 a Double, 1e-400 the integer 0) the parser follows the value.
        #expect(parsed(Array(text.utf8)) == expected, "\(text)")
    }

    @Test(arguments: ["1e400", "-1e400", "2e308", "1e99999999999999999999"])
    func refusesANumberBeyondDoublesRangeAsFoundationDid(_ text: String) {
        // Proves: a number too large for a Double is refused (never read as infinity, which the
        // metadata would then store as null), naming where it starts.
        #expect(failure(text) == .syntax("a number inside the range of a 64-bit float", offset: 0))
        #expect(FoundationDecoded.decode(Array(text.utf8)) == nil)
    }

    @Test func nestsAtMost512DeepAsFoundationDid() {
        // Proves: 512 levels of arrays or objects are read, 513 are refused as too deep, and a
        // body of 60,000 opening brackets is refused without exhausting the stack.
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            let inner = open == "[" ? "" : "1"
            for (depth, accepted) in [(512, true), (513, false)] {
                let text = String(repeating: open, count: depth) + inner + String(repeating: close, count: depth)
                #expect((parsed(Array(text.utf8)) != nil) == accepted, "\(open) \(depth)")
                #expect((FoundationDecoded.decode(Array(text.utf8)) != nil) == accepted, "\(open) \(depth)")
            }
            #expect(failure(String(repeating: open, count: 513) + inner) == .tooDeep)
        }
        #expect(failure(String(repeating: "[", count: 60_000)) == .tooDeep)
    }

    @Test func decodesEscapesToTheScalarsTheyName() throws {
        // Proves: \u escapes (a surrogate pair as one scalar, U+0000 kept) and the short escapes
        // decode to the characters they name, beside raw UTF-8.
        let text = #"{"s":"a\u00e9\ud83d\ude00\u0000\"\\\/\b\f\n\r\té😀"}"#
        #expect(parsed(Array(text.utf8)) == .object(["s": .string("aé😀\u{0}\"\\/\u{8}\u{C}\n\r\té😀")]))
    }

    @Test func everyTruncationOfADocumentIsRefusedAsFoundationRefusedIt() {
        // Proves: each proper prefix of a body that uses every construct is refused (never read as
        // something shorter, never a crash), and Foundation's decoder refused the same prefixes.
        let text = #" {"promptTokens":12,"completionTokens":3.5e1,"agentId":"a\u00e9\ud83d\ude00","metadata":{"k":[true,false,null,-1.5E-2,{}]}} "#
        let bytes = Array(text.utf8)
        #expect(parsed(bytes) != nil)
        for length in 0..<bytes.count - 1 {
            let prefix = Array(bytes[..<length])
            #expect(parsed(prefix) == nil, "\(String(decoding: prefix, as: UTF8.self))")
            #expect(FoundationDecoded.decode(prefix) == nil, "\(String(decoding: prefix, as: UTF8.self))")
        }
    }

    @Test func randomDocumentsAndTheirMutationsParseAsFoundationDid() {
        // Proves: over 4,000 generated documents (every kind of value, escapes, numbers in many
        // forms, random whitespace) and a byte-level mutation of each (a byte dropped, changed or
        // inserted), the parser agrees with Foundation's decoder, except where the mutation made a
        // trailing comma, which the parser alone refuses. Seeded: a failure reproduces.
        var generator = JSONTextGenerator(seed: 0x5EED_16)
        var mutationsCompared = 0
        for _ in 0..<4_000 {
            let document = generator.document()
            #expect(parsed(document) == FoundationDecoded.decode(document), "\(String(decoding: document, as: UTF8.self))")
            let mutated = generator.mutated(document)
            let ours = parsed(mutated)
            let foundation = FoundationDecoded.decode(mutated)
            if ours == nil, foundation != nil, Self.hasTrailingComma(mutated) || Self.hasDuplicateName(mutated) {
                continue
            }
            mutationsCompared += 1
            #expect(ours == foundation, "\(String(decoding: mutated, as: UTF8.self).debugDescription)")
        }
        #expect(mutationsCompared > 3_000)
    }

    /// Whether `bytes` hold a ',' followed, after whitespace, by ']' or '}' (outside strings or
    /// not: only used to excuse a refusal).
    private static func hasTrailingComma(_ bytes: [UInt8]) -> Bool {
        let significant = bytes.filter { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }
        return zip(significant, significant.dropFirst()).contains { $0 == UInt8(ascii: ",") && ($1 == UInt8(ascii: "]") || $1 == UInt8(ascii: "}")) }
    }

    /// Whether the parser refuses `bytes` for a duplicate name.
    private static func hasDuplicateName(_ bytes: [UInt8]) -> Bool {
        do {
            _ = try JSONBodyParser.parse(bytes)
            return false
        } catch {
            if case .duplicateName = error { return true }
            return false
        }
    }
}

/// Random JSON texts for the differential test: SplitMix64, so a seed reproduces a run.
struct JSONTextGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    /// A document: usually an object like a request body, sometimes any value.
    mutating func document() -> [UInt8] {
        var output: [UInt8] = []
        whitespace(&output)
        if below(4) == 0 { value(&output, depth: 0) } else { object(&output, depth: 0) }
        whitespace(&output)
        return output
    }

    /// `bytes` with one byte dropped, replaced or inserted.
    mutating func mutated(_ bytes: [UInt8]) -> [UInt8] {
        var bytes = bytes
        let interesting: [UInt8] = Array(#"{}[],:"\ -+.eE0159tfnu"#.utf8) + [0x00, 0x1F, 0x7F, 0xC3, 0xFF]
        let position = below(bytes.count + 1)
        switch below(3) {
        case 0 where position < bytes.count: bytes.remove(at: position)
        case 1 where position < bytes.count: bytes[position] = interesting[below(interesting.count)]
        default: bytes.insert(interesting[below(interesting.count)], at: position)
        }
        return bytes
    }

    private mutating func whitespace(_ output: inout [UInt8]) {
        for _ in 0..<below(3) { output.append([0x20, 0x09, 0x0A, 0x0D][below(4)]) }
    }

    private mutating func value(_ output: inout [UInt8], depth: Int) {
        switch below(depth > 4 ? 6 : 8) {
        case 0: output += Array("null".utf8)
        case 1: output += Array((below(2) == 0 ? "true" : "false").utf8)
        case 2, 3: number(&output)
        case 4, 5: string(&output)
        case 6: array(&output, depth: depth + 1)
        default: object(&output, depth: depth + 1)
        }
    }

    private mutating func array(_ output: inout [UInt8], depth: Int) {
        output.append(UInt8(ascii: "["))
        for index in 0..<below(4) {
            if index > 0 { output.append(UInt8(ascii: ",")) }
            whitespace(&output)
            value(&output, depth: depth)
            whitespace(&output)
        }
        output.append(UInt8(ascii: "]"))
    }

    private mutating func object(_ output: inout [UInt8], depth: Int) {
        output.append(UInt8(ascii: "{"))
        // Distinct names: a duplicate is a deliberate difference, tested on its own.
        let names = ["promptTokens", "completionTokens", "agentId", "metadata", "a", "é", "k\\u00e9y", "", "x y"]
        var taken = Set<Int>()
        for index in 0..<below(5) {
            let name = below(names.count)
            guard taken.insert(name).inserted else { continue }
            if index > 0, output.last != UInt8(ascii: "{") { output.append(UInt8(ascii: ",")) }
            whitespace(&output)
            output += Array("\"\(names[name])\"".utf8)
            whitespace(&output)
            output.append(UInt8(ascii: ":"))
            whitespace(&output)
            value(&output, depth: depth)
            whitespace(&output)
        }
        output.append(UInt8(ascii: "}"))
    }

    /// Numbers in the forms clients write, kept where Foundation's decoder and the parser agree
    /// (whole values well inside Int64 and Double's exact range, no underflow); the edges have
    /// tests of their own.
    private mutating func number(_ output: inout [UInt8]) {
        let sign = below(3) == 0 ? "-" : ""
        let text: String
        switch below(6) {
        case 0: text = String(below(10))
        case 1: text = String(Int64(bitPattern: next()) / Int64(1 << below(63)))
        case 2: text = "\(below(100_000)).\(below(1_000))"
        case 3: text = "\(below(10_000))e\(["", "+", "-"][below(3)])\(below(12))"
        case 4: text = "\(below(1_000)).\(below(100))E\(below(8))"
        default: text = "0.\(String(repeating: "0", count: below(5)))\(below(1_000))"
        }
        output += Array((text.hasPrefix("-") ? text : sign + text).utf8)
    }

    private mutating func string(_ output: inout [UInt8]) {
        let pieces = [
            "a", "Z", "0", " ", "é", "😀", "\\\"", "\\\\", "\\/", "\\n", "\\t", "\\u0000", "\\u00e9", "\\ud83d\\ude00",
            "\\u2028", "\u{7F}", "\\b", "\\f", "\\r",
        ]
        output.append(UInt8(ascii: "\""))
        for _ in 0..<below(6) { output += Array(pieces[below(pieces.count)].utf8) }
        output.append(UInt8(ascii: "\""))
    }
}
