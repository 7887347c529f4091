/// The one rule by which model names are compared everywhere (rollups, views, filters, prices).
///
/// Written twice, here and as `lower(trim(model, char(32, 9, 10, 11, 12, 13)))` in the SQL of
/// migration 0008; `ModelNameTests` proves the two agree. `events.model` keeps the text as
/// recorded.
public enum ModelName {
    /// The SQL expression of the rule for a column or parameter.
    static func sql(_ operand: String) -> String { "lower(trim(\(operand), char(32, 9, 10, 11, 12, 13)))" }

    /// ASCII whitespace: space, tab, line feed, vertical tab, form feed, carriage return.
    private static func isTrimmed(_ byte: UInt8) -> Bool {
        byte == 0x20 || (0x09...0x0D).contains(byte)
    }

    /// `name` with ASCII whitespace trimmed from both ends and ASCII letters lowercased (SQLite's
    /// `lower()` folds nothing else).
    ///
    /// Works on the UTF-8 bytes: an ASCII byte never occurs inside a longer character's bytes, so
    /// trimming and folding ASCII bytes leaves every other character as it is. Every consume with
    /// a model runs it (its scope, its price), so a name already in normal form, the common
    /// case, is returned without a copy.
    public static func normalized(_ name: String) -> String {
        var copy = name
        let changed = copy.withUTF8 { bytes -> String? in
            guard let first = bytes.firstIndex(where: { !isTrimmed($0) }),
                let last = bytes.lastIndex(where: { !isTrimmed($0) })
            else { return "" }
            let kept = UnsafeBufferPointer(rebasing: bytes[first...last])
            if let lowered = lowercasedASCII(kept) { return lowered }
            return kept.count == bytes.count ? nil : String(decoding: kept, as: UTF8.self)
        }
        return changed ?? name
    }

    /// `bytes` (UTF-8) with ASCII letters lowercased, as SQLite's `lower()`; nil when none is
    /// uppercase (the caller keeps its string, no copy).
    static func lowercasedASCII(_ bytes: UnsafeBufferPointer<UInt8>) -> String? {
        guard bytes.contains(where: { (0x41...0x5A).contains($0) }) else { return nil }
        return String(unsafeUninitializedCapacity: bytes.count) { output in
            for (index, byte) in bytes.enumerated() {
                output[index] = (0x41...0x5A).contains(byte) ? byte + 32 : byte
            }
            return bytes.count
        }
    }
}

/// How a price row names the models it prices: one exact (normalised) name, or a pattern, a
/// literal with one trailing `*` that prices every name starting with the literal.
public enum PriceMatch: Sendable, Equatable {
    case exact
    /// The literal before the `*`.
    case pattern(literal: String)

    /// The kind of a stored pattern.
    package init(pattern: String) {
        if pattern.unicodeScalars.last == "*" {
            self = .pattern(literal: String(String.UnicodeScalarView(pattern.unicodeScalars.dropLast())))
        } else {
            self = .exact
        }
    }

    /// How specific the row `pattern` is for the normalised `name`, nil when it does not match:
    /// an exact name beats every pattern, a longer literal beats a shorter one. Compared by
    /// Unicode scalar, as SQLite's `=`, `substr` and `length` do.
    static func specificity(of pattern: String, for name: String) -> Int? {
        switch PriceMatch(pattern: pattern) {
        case .exact:
            return Array(pattern.unicodeScalars) == Array(name.unicodeScalars) ? Int.max : nil
        case .pattern(let literal):
            let literalScalars = Array(literal.unicodeScalars)
            return Array(name.unicodeScalars).starts(with: literalScalars) ? literalScalars.count : nil
        }
    }
}
