import Foundation
import Testing

@testable import BudgetLedgerServer

@Suite("The REST rule for a price's model, written once for the server and the document")
struct PricePatternRuleTests {
    @Test("the document states the server's pattern, and the server's check agrees with it on every edge")
    func documentAndServerAgree() throws {
        // Proves PUT /api/v1/prices/{model} refuses exactly what its parameter's schema refuses:
        // the fuzzer found `*H90E76` valid by the old schema (an id) but refused by the ledger.
        #expect(OpenAPIDocument.yaml.contains("pattern: '\(APIIdentifier.pricePattern)'"))
        let regex = try Regex(APIIdentifier.pricePattern)
        let samples = [
            "gpt-4o", "gpt-4o-20*", " a", "a *", "*", "**", "a*b", "*H90E76", " ", "   *", "a* ", "é", "a",
            String(repeating: "a", count: 256), String(repeating: "a", count: 255) + "*", String(repeating: "a", count: 257),
        ]
        for sample in samples {
            let documented = sample.count <= 256 && sample.wholeMatch(of: regex) != nil
            let served = (try? APIIdentifier.validatePricePattern(sample, field: "model")) != nil
            #expect(documented == served, "\(sample.prefix(20))… documented \(documented), served \(served)")
        }
    }
}
