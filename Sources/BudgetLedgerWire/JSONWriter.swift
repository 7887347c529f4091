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
    // The primitives live beside the ledger's metadata writer (`JSONText`), so that metadata the
    // server records and the answers it writes spell numbers and strings alike.
    static func append(_ value: Bool, to bytes: inout [UInt8]) { JSONText.append(value, to: &bytes) }
    static func append(_ value: Int64, to bytes: inout [UInt8]) { JSONText.append(value, to: &bytes) }
    static func append(_ value: Double, to bytes: inout [UInt8]) { JSONText.append(value, to: &bytes) }
    static func append(_ text: String, to bytes: inout [UInt8]) { JSONText.append(text, to: &bytes) }
}
