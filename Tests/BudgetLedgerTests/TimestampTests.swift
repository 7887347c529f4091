import BudgetLedger
import Testing

/// `Timestamps.parse`: the written form's fast path and the general pattern read the same instants.
@Suite struct TimestampTests {
    @Test("every instant written by iso8601 reads back exactly, 1970 to 9999, leap days included")
    func writtenFormRoundTrips() throws {
        var generator = SystemRandomNumberGenerator()
        var instants: [Int64] = [0, 1, 999_999, Timestamps.maxMicroseconds, 951_782_400_000_000, 4_107_542_400_000_000]
        instants += (0..<20_000).map { _ in Int64.random(in: 0...Timestamps.maxMicroseconds, using: &generator) }
        for instant in instants {
            let written = Timestamps.iso8601(microseconds: instant)
            #expect(try Timestamps.parse(written, field: "t") == instant, "\(written)")
        }
    }

    @Test("short fractions and none, as the pattern reads them; days that do not exist are refused")
    func writtenFormVariants() throws {
        let midnight: Int64 = 1_796_083_200_000_000  // 2026-12-01T00:00:00Z
        #expect(try Timestamps.parse("2026-12-01T00:00:00Z", field: "t") == midnight)
        #expect(try Timestamps.parse("2026-12-01T00:00:00.5Z", field: "t") == midnight + 500_000)
        #expect(try Timestamps.parse("2026-12-01T00:00:00.000123Z", field: "t") == midnight + 123)
        #expect(try Timestamps.parse("2026-12-01T00:00:00+00:00", field: "t") == midnight)
        #expect(try Timestamps.parse("2000-02-29T12:00:00Z", field: "t") == 951_825_600_000_000)
        for text in ["2100-02-29T00:00:00Z", "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-12-01T24:00:00Z",
                     "2026-12-01T00:00:00.Z", "2026-12-01T00:00:00.1234567Z", "1969-12-31T23:59:59Z", "2026-13-01T00:00:00Z"] {
            #expect(throws: LedgerError.self, "\(text)") { try Timestamps.parse(text, field: "t") }
        }
    }
}
