import BudgetLedger
import BudgetLedgerWire
import Testing

/// `ConsumeImport`'s reader picks the members it reads without building a table of the line;
/// whatever it cannot judge alone goes to the whole-line parser, so every line is accepted or
/// refused as before, with the same words.
@Suite struct ImportLineReaderTests {
    static let good =
        #"{"id":7,"timestamp":"2026-12-01T10:00:00Z","threadId":"t","promptTokens":5,"completionTokens":1,"#
        + #""cost":"0.1","metadata":{"org_id":"o","user_id":"u"}}"#

    /// The error `ConsumeImport.consume` gives for `text` on line 3, as `field: reason`; nil when it reads the line.
    static func refusal(_ text: String) -> String? {
        do {
            _ = try ConsumeImport.consume(line: Array(text.utf8), number: 3)
            return nil
        } catch LedgerError.invalidInput(let field, let reason) {
            return "\(field): \(reason)"
        } catch {
            return "\(error)"
        }
    }

    @Test("lines the picking reader hands over are read or refused as the whole-line parser reads them")
    func sameVerdicts() throws {
        // Proves the fallbacks: an escaped or non-ASCII name, a name given twice (one the
        // import ignores too), a nested duplicate, bad syntax after the members; and that a
        // plain line, a byte order mark and spaces read the same consume.
        let cases: [(line: String, refusal: String?)] = [
            (Self.good, nil),
            ("\u{FEFF} " + Self.good + " \t", nil),
            (Self.good.replacingOccurrences(of: #""id":7"#, with: #""\u0069d":7"#), nil),
            (Self.good.replacingOccurrences(of: #""cost""#, with: #""\u0069d""#), "id on line 3: is given more than once"),
            (Self.good.replacingOccurrences(of: #""cost":"0.1""#, with: #""cost":1,"cost":2"#),
             "cost on line 3: is given more than once"),
            (Self.good.replacingOccurrences(of: #""cost""#, with: #""coût""#), nil),
            (Self.good.replacingOccurrences(of: #""user_id":"u""#, with: #""org_id":"p""#),
             "metadata.org_id on line 3: is given more than once"),
            (Self.good + "x", "line 3: is not valid JSON (expected the end of the body after the value at byte 149)"),
            (Self.good.replacingOccurrences(of: #","cost""#, with: #" "cost""#),
             "line 3: is not valid JSON (expected ',' or '}' at byte 96)"),
            (Self.good.replacingOccurrences(of: #""promptTokens":5"#, with: #""promptTokens":"5""#),
             "promptTokens on line 3: must be a number, not a string"),
        ]
        for (line, refusal) in cases {
            #expect(Self.refusal(line) == refusal, "\(line)")
        }
        let read = try ConsumeImport.consume(line: Array(Self.good.utf8), number: 3)
        #expect(read.sourceEventID == 7 && read.threadID == "t" && read.line == 3)
    }
}
