import Foundation

/// UTC timestamps in microseconds, written and read as ISO 8601.
public enum Timestamps {
    /// The last instant the ledger takes from a caller: 9999-12-31T23:59:59.999999Z (the first
    /// is 1970-01-01T00:00:00Z, 0). Past it a date no longer has four digits of year, and a
    /// far-future start would stand in the way of every later check against it.
    public static let maxMicroseconds: Int64 = 253_402_300_799_999_999

    /// `2026-11-29T08:25:20.123456Z`.
    public static func iso8601(microseconds: Int64) -> String {
        var seconds = time_t(microseconds / 1_000_000)
        let fraction = microseconds % 1_000_000
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let year = Int(parts.tm_year) + 1900
        guard (0...9999).contains(year), fraction >= 0 else {
            // Outside the ledger's range (before 1970, past 9999): printf's widths decide.
            return String(
                format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", year, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(fraction))
        }
        // The same text without `String(format:)`, which costs more than the rest of a consume's
        // answer: 27 ASCII bytes, each field zero-padded to its width.
        return String(unsafeUninitializedCapacity: 27) { text in
            var index = 0
            func put(_ value: Int, width: Int, then separator: UInt8?) {
                var value = value
                for position in stride(from: index + width - 1, through: index, by: -1) {
                    text[position] = UInt8(ascii: "0") + UInt8(value % 10)
                    value /= 10
                }
                index += width
                if let separator {
                    text[index] = separator
                    index += 1
                }
            }
            put(year, width: 4, then: UInt8(ascii: "-"))
            put(Int(parts.tm_mon) + 1, width: 2, then: UInt8(ascii: "-"))
            put(Int(parts.tm_mday), width: 2, then: UInt8(ascii: "T"))
            put(Int(parts.tm_hour), width: 2, then: UInt8(ascii: ":"))
            put(Int(parts.tm_min), width: 2, then: UInt8(ascii: ":"))
            put(Int(parts.tm_sec), width: 2, then: UInt8(ascii: "."))
            put(Int(fraction), width: 6, then: UInt8(ascii: "Z"))
            return index
        }
    }

    /// `2026-11-29` for a UTC day number (days since 1970-01-01).
    public static func date(day: Int64) -> String {
        String(iso8601(microseconds: day * 86_400_000_000).prefix(10))
    }

    /// Parses an ISO 8601 date (`2026-11-29`, midnight UTC) or date-time (`2026-11-29T08:00:00Z`,
    /// optional fraction, `Z`, `+HH:MM` or no zone meaning UTC) into UTC microseconds.
    ///
    /// - Throws: `LedgerError.invalidInput` naming `field`.
    public static func parse(_ text: String, field: String) throws -> Int64 {
        if let microseconds = parseWritten(text) { return microseconds }
        let invalid = LedgerError.invalidInput(
            field: field, reason: "\"\(text)\" is not an ISO 8601 UTC date (2026-11-29) or date-time (2026-11-29T08:00:00Z)")
        let pattern = #/^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?(Z|[+-]\d{2}:\d{2})?)?$/#
        guard let match = text.wholeMatch(of: pattern) else { throw invalid }
        let number = { (part: Substring?) in part.flatMap { Int($0) } ?? 0 }
        let (year, month, day) = (number(match.1), number(match.2), number(match.3))
        let (hour, minute, second) = (number(match.4), number(match.5), number(match.6))
        guard (1970...9999).contains(year), (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60,
            second < 60
        else { throw invalid }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let seconds = Int64(timegm(&parts))
        // timegm normalizes 2026-02-31 into March: refuse dates that do not exist.
        var check = time_t(seconds)
        var roundTrip = tm()
        gmtime_r(&check, &roundTrip)
        guard roundTrip.tm_mday == Int32(day), roundTrip.tm_mon == Int32(month - 1) else { throw invalid }
        var microseconds = seconds * 1_000_000
        if let fraction = match.7 {
            microseconds += Int64(fraction + String(repeating: "0", count: 6 - fraction.count)) ?? 0
        }
        if let zone = match.8, zone != "Z" {
            let sign: Int64 = zone.hasPrefix("-") ? -1 : 1
            let hours = Int64(zone.dropFirst().prefix(2)) ?? 0
            let minutes = Int64(zone.suffix(2)) ?? 0
            microseconds -= sign * (hours * 3_600 + minutes * 60) * 1_000_000
        }
        guard microseconds >= 0 else { throw invalid }
        return microseconds
    }

    /// The form `iso8601(microseconds:)` writes (`2026-11-29T08:25:20.123456Z`, or with a shorter
    /// fraction, or none), read without the pattern; nil for any other text, and for a date that
    /// does not exist, which `parse` then reads (or refuses) by its pattern. Every exported event
    /// carries such a timestamp, and the pattern, compiled again at every call, cost about 60 µs,
    /// most of an import line (docs/performance.md, issue 21, import).
    private static func parseWritten(_ text: String) -> Int64? {
        var text = text
        return text.withUTF8 { bytes -> Int64? in
            let count = bytes.count
            guard count >= 20, count <= 27, bytes[count - 1] == UInt8(ascii: "Z"), bytes[4] == UInt8(ascii: "-"),
                bytes[7] == UInt8(ascii: "-"), bytes[10] == UInt8(ascii: "T"), bytes[13] == UInt8(ascii: ":"),
                bytes[16] == UInt8(ascii: ":"), count == 20 || (count > 21 && bytes[19] == UInt8(ascii: "."))
            else { return nil }
            func digits(_ range: Range<Int>) -> Int64? {
                var value: Int64 = 0
                for index in range {
                    let digit = bytes[index] &- UInt8(ascii: "0")
                    guard digit < 10 else { return nil }
                    value = value * 10 + Int64(digit)
                }
                return value
            }
            guard let year = digits(0..<4), let month = digits(5..<7), let day = digits(8..<10),
                let hour = digits(11..<13), let minute = digits(14..<16), let second = digits(17..<19),
                let fraction = count == 20 ? 0 : digits(20..<(count - 1)),
                (1970...9999).contains(year), (1...12).contains(month), hour < 24, minute < 60, second < 60,
                day >= 1, day <= daysIn(month: month, year: year)
            else { return nil }
            var scale: Int64 = 1
            if count > 20 { for _ in 0..<(27 - count) { scale *= 10 } }
            let seconds = ((daysSince1970(year: year, month: month, day: day) * 24 + hour) * 60 + minute) * 60 + second
            return seconds * 1_000_000 + fraction * scale
        }
    }

    private static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (year ≥ 1970), by
    /// Howard Hinnant's `days_from_civil` (<https://howardhinnant.github.io/date_algorithms.html>).
    private static func daysSince1970(year: Int64, month: Int64, day: Int64) -> Int64 {
        let shiftedYear = month <= 2 ? year - 1 : year
        let era = shiftedYear / 400
        let yearOfEra = shiftedYear - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
