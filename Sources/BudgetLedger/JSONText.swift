/// The pieces of compact JSON text, written into UTF-8 bytes: the ledger writes metadata with
/// them, and `BudgetLedgerWire`'s `JSONWriter` and `JSONValue` write every answer with them
/// (`@inlinable`, so that the server's answers are specialised there as when they lived in it).
package enum JSONText {
    @inlinable package static func append(_ value: Bool, to bytes: inout [UInt8]) {
        if value {
            bytes.append(contentsOf: [0x74, 0x72, 0x75, 0x65])  // true
        } else {
            bytes.append(contentsOf: [0x66, 0x61, 0x6C, 0x73, 0x65])  // false
        }
    }

    /// Decimal digits, as `String(value)`.
    @inlinable package static func append(_ value: Int64, to bytes: inout [UInt8]) {
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
    @inlinable package static func append(_ value: Double, to bytes: inout [UInt8]) {
        if value.isFinite {
            bytes.append(contentsOf: value.description.utf8)
        } else {
            bytes.append(contentsOf: [0x6E, 0x75, 0x6C, 0x6C])  // null
        }
    }

    /// A JSON string: `"` and `\` escaped, `\n`, `\r`, `\t` by name, other C0 controls and DEL as
    /// `\u00XX`, everything else (all of Unicode beyond ASCII) as its UTF-8.
    @inlinable package static func append(_ text: String, to bytes: inout [UInt8]) {
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

    @usableFromInline static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == 0x22 || byte == 0x5C || byte == 0x7F
    }
}
