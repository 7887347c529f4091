import BudgetLedger

/// Compact JSON written straight into UTF-8 bytes, member by member: the text
/// `JSONValue.serialized()` makes, without building the `JSONValue` tree first.
///
/// The server writes its most frequent answer (a consume) this way; `JSONValue` writes through
/// the same primitives, so numbers and strings come out byte for byte alike. A shape written
/// here is written twice (here and as `JSONValue`): `ConsumeAnswerEncodingTests` proves the
/// copies agree.
///
/// Commas are placed by the writer: a value (or a member's name) after another in the same
/// container gets one.
public struct JSONWriter: Sendable {
    /// The text so far.
    public private(set) var bytes: [UInt8]
    private var needsComma = false

    /// - Parameter capacity: bytes to reserve (a consume answer is about 700).
    public init(capacity: Int = 1_024) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func beginObject() {
        separate()
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }

    public mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    public mutating func beginArray() {
        separate()
        bytes.append(UInt8(ascii: "["))
        needsComma = false
    }

    public mutating func endArray() {
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }

    /// A member's name and its colon; the value follows. Names are our own literals, which
    /// need no escape.
    public mutating func name(_ name: StaticString) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        bytes.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: ":")])
        needsComma = false
    }

    public mutating func null() {
        separate()
        bytes.append(contentsOf: [0x6E, 0x75, 0x6C, 0x6C])  // null
        needsComma = true
    }

    public mutating func bool(_ value: Bool) {
        separate()
        Self.append(value, to: &bytes)
        needsComma = true
    }

    public mutating func integer(_ value: Int64) {
        separate()
        Self.append(value, to: &bytes)
        needsComma = true
    }

    public mutating func integer(_ value: Int64?) {
        guard let value else { return null() }
        integer(value)
    }

    public mutating func double(_ value: Double) {
        separate()
        Self.append(value, to: &bytes)
        needsComma = true
    }

    public mutating func string(_ value: String) {
        separate()
        Self.append(value, to: &bytes)
        needsComma = true
    }

    public mutating func string(_ value: String?) {
        guard let value else { return null() }
        string(value)
    }

    /// A number or other JSON text written exactly as given (an exact decimal amount, stored metadata).
    public mutating func raw(_ text: String) {
        separate()
        bytes.append(contentsOf: text.utf8)
        needsComma = true
    }

    /// A cost in nano-dollars as an exact decimal number of USD, or null: as `JSONValue.cost`.
    public mutating func cost(_ nanodollars: Int64?) {
        guard let nanodollars else { return null() }
        raw(Money.decimalString(nanodollars: nanodollars))
    }

    /// A UTC time as ISO 8601 text, as `Timestamps.iso8601(microseconds:)` writes it.
    public mutating func timestamp(microseconds: Int64) {
        string(Timestamps.iso8601(microseconds: microseconds))
    }

    /// Any `JSONValue`, compact.
    public mutating func value(_ value: JSONValue) {
        separate()
        value.write(to: &bytes, pretty: false, indent: 0)
        needsComma = true
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }
}

extension JSONWriter {
    static func append(_ value: Bool, to bytes: inout [UInt8]) {
        if value {
            bytes.append(contentsOf: [0x74, 0x72, 0x75, 0x65])  // true
        } else {
            bytes.append(contentsOf: [0x66, 0x61, 0x6C, 0x73, 0x65])  // false
        }
    }

    /// Decimal digits, as `String(value)`.
    static func append(_ value: Int64, to bytes: inout [UInt8]) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        // 20 digits hold UInt64.max; written backwards, then reversed into place.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var count = 0
            repeat {
                digits[count] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
                count += 1
            } while magnitude > 0
            for index in stride(from: count - 1, through: 0, by: -1) { bytes.append(digits[index]) }
        }
    }

    /// Swift's shortest round-tripping text for a finite value (`76.0`, `0.1`, `1e-05`), null otherwise.
    static func append(_ value: Double, to bytes: inout [UInt8]) {
        if value.isFinite {
            bytes.append(contentsOf: value.description.utf8)
        } else {
            bytes.append(contentsOf: [0x6E, 0x75, 0x6C, 0x6C])  // null
        }
    }

    /// A JSON string: `"` and `\` escaped, `\n`, `\r`, `\t` by name, other C0 controls and DEL as
    /// `\u00XX`, everything else (all of Unicode beyond ASCII) as its UTF-8.
    static func append(_ text: String, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { utf8 in
            // Most strings (ids, models, timestamps) need no escape: appended whole.
            guard utf8.contains(where: needsEscape) else {
                bytes.append(contentsOf: utf8)
                return
            }
            for byte in utf8 {
                guard needsEscape(byte) else {
                    bytes.append(byte)
                    continue
                }
                bytes.append(UInt8(ascii: "\\"))
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): bytes.append(byte)
                case 0x0A: bytes.append(UInt8(ascii: "n"))
                case 0x0D: bytes.append(UInt8(ascii: "r"))
                case 0x09: bytes.append(UInt8(ascii: "t"))
                default:
                    let hex: [UInt8] = Array("0123456789abcdef".utf8)
                    bytes.append(contentsOf: [UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]])
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == 0x22 || byte == 0x5C || byte == 0x7F
    }
}
