import BudgetLedger

/// Parses a request body's bytes (or an NDJSON line's: `ConsumeImport`) as JSON (RFC 8259) into
/// `JSONInput`, in one pass, without Foundation.
///
/// It replaced `JSONDecoder` on the request path (docs/performance.md, issue 16), keeping what
/// that decoder accepted and refused, with three deliberate differences, each a refusal of
/// something RFC 8259 does not allow or leaves ambiguous:
/// - a name given twice in one object is refused (`JSONDecoder` silently kept the first; other
///   parsers keep the last, so a proxy and the ledger could read different values);
/// - a trailing comma (`[1,]`, `{"a":1,}`) is refused (`JSONDecoder` took it);
/// - the body must be UTF-8 (`JSONDecoder` also guessed UTF-16 and UTF-32); a leading UTF-8
///   byte order mark is skipped, as RFC 8259 allows.
///
/// A number is `.integer` when its value is a whole number inside Int64, however it is written
/// (`1000`, `1e3`, `1000.0`, `-0`), as JSON Schema's `integer` counts it; any other number is
/// `.number`, the nearest Double to the text. A number beyond Double's range is refused rather
/// than read as infinity. Strings must be valid UTF-8 without raw control characters; a `\u`
/// escape of a surrogate must be a high surrogate followed by a low one. Arrays and objects nest
/// at most `depthMax` deep, as `JSONDecoder` allowed, so no body can exhaust the stack.
package struct JSONBodyParser {
    /// The deepest nesting of arrays and objects accepted.
    package static let depthMax = 512

    /// Why a body is not acceptable JSON.
    package enum Failure: Error, Equatable {
        /// Not JSON: what was expected, and at which byte (from 0).
        case syntax(String, offset: Int)
        /// Arrays and objects nested deeper than `depthMax`.
        case tooDeep
        /// A member name given twice in one object; `path` names it from the top (`metadata.a`).
        case duplicateName(path: String)
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private var offset = 0
    private var depth = 0

    private init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    /// The one JSON value that `bytes` holds, with only whitespace around it.
    package static func parse(_ bytes: UnsafeBufferPointer<UInt8>) throws(Failure) -> JSONInput {
        var parser = JSONBodyParser(bytes)
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { parser.offset = 3 }
        let value = try parser.value()
        parser.skipWhitespace()
        guard parser.offset == bytes.count else { throw parser.failure("the end of the body after the value") }
        return value
    }

    /// `parse(_:)` of bytes in any collection (a `ByteBuffer`'s readable view, an array), copied
    /// once when they are not contiguous.
    package static func parse(_ bytes: some Collection<UInt8>) throws(Failure) -> JSONInput {
        let parsed = { (buffer: UnsafeBufferPointer<UInt8>) in Result { () throws(Failure) in try parse(buffer) } }
        let result = bytes.withContiguousStorageIfAvailable(parsed) ?? Array(bytes).withUnsafeBufferPointer(parsed)
        return try result.get()
    }

    /// Walks the one JSON object `bytes` holds, member by member, without building a table of
    /// its members (`ConsumeImport` picks a dozen of an export line's ~25): `body` gets each
    /// name's bytes as written and its value, in order. Names are not compared: a name given
    /// twice is the caller's to find.
    ///
    /// - Returns: false, having stopped, when the walk cannot say for sure what `parse` would:
    ///   `bytes` is not one object, a name has an escape or a byte beyond ASCII, or the syntax is
    ///   wrong at the top level. The caller then parses the whole of it (`parse`), which names
    ///   the fault; values are read by the same code as `parse`.
    /// - Throws: a value's `Failure`, or what `body` throws.
    package static func forEachMember(
        of bytes: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>, JSONInput) throws -> Void
    ) throws -> Bool {
        var parser = JSONBodyParser(bytes)
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { parser.offset = 3 }
        parser.skipWhitespace()
        guard parser.next(is: "{") else { return false }
        try parser.enter()
        parser.skipWhitespace()
        var ended = parser.next(is: "}")
        while !ended {
            parser.skipWhitespace()
            guard let name = parser.plainName() else { return false }
            parser.skipWhitespace()
            guard parser.next(is: ":") else { return false }
            try body(name, try parser.value())
            parser.skipWhitespace()
            ended = parser.next(is: "}")
            guard ended || parser.next(is: ",") else { return false }
        }
        parser.skipWhitespace()
        return parser.offset == bytes.count
    }

    /// Whether the byte at `offset` is `character`, stepping over it when it is.
    private mutating func next(is character: Unicode.Scalar) -> Bool {
        guard offset < bytes.count, bytes[offset] == UInt8(ascii: character) else { return false }
        offset += 1
        return true
    }

    /// The bytes of the member name starting at `offset` (a quote), when it is plain printable
    /// ASCII with no escape; leaves `offset` after its closing quote. Nil for any other name.
    private mutating func plainName() -> UnsafeBufferPointer<UInt8>? {
        guard offset < bytes.count, bytes[offset] == UInt8(ascii: "\"") else { return nil }
        let start = offset + 1
        var index = start
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                offset = index + 1
                return UnsafeBufferPointer(rebasing: bytes[start..<index])
            }
            if byte == UInt8(ascii: "\\") || byte < 0x20 || byte >= 0x80 { return nil }
            index += 1
        }
        return nil
    }

    // MARK: Values

    private mutating func value() throws(Failure) -> JSONInput {
        skipWhitespace()
        guard offset < bytes.count else { throw failure("a value") }
        switch bytes[offset] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw failure("a value")
        }
    }

    private mutating func object() throws(Failure) -> JSONInput {
        try enter()
        offset += 1
        var members: [String: JSONInput] = [:]
        skipWhitespace()
        if offset < bytes.count, bytes[offset] == UInt8(ascii: "}") {
            offset += 1
            depth -= 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard offset < bytes.count, bytes[offset] == UInt8(ascii: "\"") else { throw failure("a member name") }
            let name = try string()
            skipWhitespace()
            guard offset < bytes.count, bytes[offset] == UInt8(ascii: ":") else { throw failure("':' after a member name") }
            offset += 1
            let member: JSONInput
            do {
                member = try value()
            } catch .duplicateName(let path) {
                throw .duplicateName(path: Self.path(name, then: path))
            }
            guard members.updateValue(member, forKey: name) == nil else { throw .duplicateName(path: name) }
            skipWhitespace()
            guard offset < bytes.count else { throw failure("',' or '}'") }
            switch bytes[offset] {
            case UInt8(ascii: ","):
                offset += 1
            case UInt8(ascii: "}"):
                offset += 1
                depth -= 1
                return .object(members)
            default:
                throw failure("',' or '}'")
            }
        }
    }

    private mutating func array() throws(Failure) -> JSONInput {
        try enter()
        offset += 1
        var items: [JSONInput] = []
        skipWhitespace()
        if offset < bytes.count, bytes[offset] == UInt8(ascii: "]") {
            offset += 1
            depth -= 1
            return .array(items)
        }
        while true {
            do {
                items.append(try value())
            } catch .duplicateName(let path) {
                throw .duplicateName(path: "[\(items.count)]" + (path.hasPrefix("[") ? path : "." + path))
            }
            skipWhitespace()
            guard offset < bytes.count else { throw failure("',' or ']'") }
            switch bytes[offset] {
            case UInt8(ascii: ","):
                offset += 1
            case UInt8(ascii: "]"):
                offset += 1
                depth -= 1
                return .array(items)
            default:
                throw failure("',' or ']'")
            }
        }
    }

    /// `name` then the rest of a path below it: `metadata` + `a` is `metadata.a`, + `[2]` is `metadata[2]`.
    private static func path(_ name: String, then rest: String) -> String {
        rest.hasPrefix("[") ? name + rest : name + "." + rest
    }

    private mutating func enter() throws(Failure) {
        depth += 1
        guard depth <= Self.depthMax else { throw .tooDeep }
    }

    private mutating func literal(_ word: StaticString) throws(Failure) {
        let count = word.utf8CodeUnitCount
        guard bytes.count - offset >= count,
            UnsafeBufferPointer(rebasing: bytes[offset..<offset + count]).elementsEqual(
                UnsafeBufferPointer(start: word.utf8Start, count: count))
        else { throw failure("a value") }
        offset += count
    }

    // MARK: Strings

    /// The string starting at the quote at `offset`; leaves `offset` after its closing quote.
    private mutating func string() throws(Failure) -> String {
        let start = offset + 1
        var index = start
        // Most strings (names, ids, models) hold no escape: validated and copied whole.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                offset = index + 1
                return try text(UnsafeBufferPointer(rebasing: bytes[start..<index]), at: start)
            }
            if byte == UInt8(ascii: "\\") || byte < 0x20 { break }
            index += 1
        }
        var decoded = Array(bytes[start..<index])
        offset = index
        while offset < bytes.count {
            let byte = bytes[offset]
            switch byte {
            case UInt8(ascii: "\""):
                offset += 1
                return try decoded.withUnsafeBufferPointer { buffer throws(Failure) in try text(buffer, at: start) }
            case UInt8(ascii: "\\"):
                try escape(into: &decoded)
            case ..<0x20:
                throw failure("a string without raw control characters (escape them)")
            default:
                decoded.append(byte)
                offset += 1
            }
        }
        throw failure("'\"' closing a string")
    }

    /// `utf8` as a String, refusing bytes that are not UTF-8 (an overlong form, an encoded surrogate).
    private func text(_ utf8: UnsafeBufferPointer<UInt8>, at start: Int) throws(Failure) -> String {
        // ASCII is UTF-8, so `decoding` (which would repair, not refuse) reads it exactly; it is
        // specialised, where `validating` goes through generic code that looks up type metadata
        // on every call (a third of an import line's parse under callgrind).
        if utf8.allSatisfy({ $0 < 0x80 }) { return String(decoding: utf8, as: UTF8.self) }
        guard let text = String(validating: utf8, as: UTF8.self) else {
            throw .syntax("a string of valid UTF-8", offset: start)
        }
        return text
    }

    /// Decodes the escape at `offset` (a backslash) onto `decoded`, as UTF-8.
    private mutating func escape(into decoded: inout [UInt8]) throws(Failure) {
        offset += 1
        guard offset < bytes.count else { throw failure("an escape after '\\'") }
        let byte = bytes[offset]
        offset += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded.append(byte)
        case UInt8(ascii: "b"): decoded.append(0x08)
        case UInt8(ascii: "f"): decoded.append(0x0C)
        case UInt8(ascii: "n"): decoded.append(0x0A)
        case UInt8(ascii: "r"): decoded.append(0x0D)
        case UInt8(ascii: "t"): decoded.append(0x09)
        case UInt8(ascii: "u"):
            var value = try hexQuad()
            if (0xD800...0xDBFF).contains(value) {
                guard bytes.count - offset >= 2, bytes[offset] == UInt8(ascii: "\\"), bytes[offset + 1] == UInt8(ascii: "u")
                else { throw failure("a low surrogate (\\uDC00…\\uDFFF) after a high one") }
                offset += 2
                let low = try hexQuad()
                guard (0xDC00...0xDFFF).contains(low) else {
                    throw failure("a low surrogate (\\uDC00…\\uDFFF) after a high one")
                }
                value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00...0xDFFF).contains(value) {
                throw failure("a high surrogate (\\uD800…\\uDBFF) before a low one")
            }
            // Every value left is a Unicode scalar: surrogates were paired or refused above.
            UTF8.encode(Unicode.Scalar(value)!) { decoded.append($0) }
        default:
            throw failure("an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)")
        }
    }

    private mutating func hexQuad() throws(Failure) -> UInt32 {
        guard bytes.count - offset >= 4 else { throw failure("four hex digits after \\u") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[offset]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw failure("four hex digits after \\u")
            }
            value = value << 4 | UInt32(digit)
            offset += 1
        }
        return value
    }

    // MARK: Numbers

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, read as `.integer` when its value
    /// is a whole number inside Int64, else as `.number`.
    private mutating func number() throws(Failure) -> JSONInput {
        let start = offset
        let isNegative = bytes[offset] == UInt8(ascii: "-")
        if isNegative { offset += 1 }
        let integerStart = offset
        guard offset < bytes.count, isDigit(bytes[offset]) else { throw failure("a digit") }
        if bytes[offset] == UInt8(ascii: "0") {
            offset += 1
        } else {
            while offset < bytes.count, isDigit(bytes[offset]) { offset += 1 }
        }
        let integerEnd = offset
        var fractionEnd = offset
        if offset < bytes.count, bytes[offset] == UInt8(ascii: ".") {
            offset += 1
            guard offset < bytes.count, isDigit(bytes[offset]) else { throw failure("a digit after '.'") }
            while offset < bytes.count, isDigit(bytes[offset]) { offset += 1 }
            fractionEnd = offset
        }
        var exponent = 0
        if offset < bytes.count, bytes[offset] | 0x20 == UInt8(ascii: "e") {
            offset += 1
            var exponentIsNegative = false
            if offset < bytes.count, bytes[offset] == UInt8(ascii: "+") || bytes[offset] == UInt8(ascii: "-") {
                exponentIsNegative = bytes[offset] == UInt8(ascii: "-")
                offset += 1
            }
            guard offset < bytes.count, isDigit(bytes[offset]) else { throw failure("a digit in the exponent") }
            while offset < bytes.count, isDigit(bytes[offset]) {
                // Clamped: past a million the value is 0 or out of range whatever the digits.
                exponent = min(exponent * 10 + Int(bytes[offset] - UInt8(ascii: "0")), 1_000_000)
                offset += 1
            }
            if exponentIsNegative { exponent = -exponent }
        }
        if fractionEnd == integerEnd, exponent == 0, let integer = wholeNumber(integerStart..<integerEnd, isNegative) {
            return .integer(integer)
        }
        if let integer = exactInteger(integerStart..<integerEnd, fractionEnd: fractionEnd, exponent, isNegative) {
            return .integer(integer)
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<offset]), as: UTF8.self)
        guard let double = Double(text), double.isFinite else {
            throw .syntax("a number inside the range of a 64-bit float", offset: start)
        }
        return .number(double)
    }

    private func isDigit(_ byte: UInt8) -> Bool { byte &- UInt8(ascii: "0") < 10 }

    /// The digits at `range` (no sign) as an Int64 with the sign, or nil when out of range.
    private func wholeNumber(_ range: Range<Int>, _ isNegative: Bool) -> Int64? {
        guard range.count <= 19 else { return nil }
        var magnitude: UInt64 = 0
        for index in range { magnitude = magnitude * 10 + UInt64(bytes[index] - UInt8(ascii: "0")) }
        return Self.signed(magnitude, isNegative)
    }

    /// A number written with a fraction or an exponent (`1.0`, `1e3`, `25e-1`) whose value is a
    /// whole number inside Int64, else nil. The digits, leading and trailing zeros dropped, times
    /// ten to the power left.
    private func exactInteger(_ integer: Range<Int>, fractionEnd: Int, _ exponent: Int, _ isNegative: Bool) -> Int64? {
        // The significant digits: the integer's and the fraction's (after its '.').
        let fraction = integer.upperBound + 1..<max(fractionEnd, integer.upperBound + 1)
        let digits = Array(bytes[integer]) + (fraction.isEmpty ? [] : Array(bytes[fraction]))
        guard let first = digits.firstIndex(where: { $0 != UInt8(ascii: "0") }) else { return 0 }
        let last = digits.lastIndex(where: { $0 != UInt8(ascii: "0") })!
        // The value is digits[first...last] × 10^power.
        let power = exponent - fraction.count + (digits.count - 1 - last)
        let significant = last - first + 1
        guard power >= 0, significant + power <= 19 else { return nil }
        var magnitude: UInt64 = 0
        for digit in digits[first...last] { magnitude = magnitude * 10 + UInt64(digit - UInt8(ascii: "0")) }
        for _ in 0..<power {
            let (product, overflow) = magnitude.multipliedReportingOverflow(by: 10)
            guard !overflow else { return nil }
            magnitude = product
        }
        return Self.signed(magnitude, isNegative)
    }

    private static func signed(_ magnitude: UInt64, _ isNegative: Bool) -> Int64? {
        if isNegative {
            guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        return magnitude <= UInt64(Int64.max) ? Int64(magnitude) : nil
    }

    // MARK: Whitespace and failures

    private mutating func skipWhitespace() {
        while offset < bytes.count {
            switch bytes[offset] {
            case 0x20, 0x0A, 0x0D, 0x09: offset += 1
            default: return
            }
        }
    }

    private func failure(_ expected: String) -> Failure {
        .syntax(expected, offset: offset)
    }
}

/// A JSON value as the client sent it, parsed strictly by `JSONBodyParser`: a number is never
/// read as a Bool, a string never as a number.
package enum JSONInput: Sendable, Equatable {
    case null
    case bool(Bool)
    /// A number whose value is a whole number inside Int64 (`7`, `7.0`, `7e0`).
    case integer(Int64)
    /// Any other number: a fraction, or a whole number outside Int64.
    case number(Double)
    case string(String)
    case array([JSONInput])
    case object([String: JSONInput])

    /// As the ledger's metadata value (the shape is the same; the ledger writes it).
    package var metadataValue: Metadata.Value {
        switch self {
        case .null: return .null
        case .bool(let value): return .bool(value)
        case .integer(let value): return .integer(value)
        case .number(let value): return .number(value)
        case .string(let value): return .string(value)
        case .array(let items): return .array(items.map(\.metadataValue))
        case .object(let members): return .object(members.mapValues(\.metadataValue))
        }
    }

    package var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .integer, .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}
