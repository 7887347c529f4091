import Foundation
import Testing

@Suite("CLI: correcting prices (price withdraw, price reprice)")
struct CLIPriceCorrectionTests {
    @Test("price withdraw takes back a future price and refuses one in effect (exit 5); price reprice bills unpriced usage once")
    func withdrawAndReprice() throws {
        // Proves the operator's path: a price set for later is withdrawn; one already in effect
        // is refused with exit 5 naming its start; a consume recorded unpriced is billed by
        // `price reprice` at a price set since (starting before it), exactly, and only once.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("price", "set", "acme-cli", "--prompt", "1", "--completion", "1", "--from", "2999-01-01")
        let withdrawn = try ledger.succeed("price", "withdraw", "acme-cli", "--from", "2999-01-01")
        #expect(withdrawn.stdout.hasPrefix("price withdrawn: acme-cli: $1 prompt, $1 completion per million tokens"))
        #expect(try ledger.succeed("price", "list").stdout.contains("acme-cli") == false)

        try ledger.succeed("price", "set", "acme-now", "--prompt", "1", "--completion", "1", "--from", "2020-01-01")
        let refused = try ledger.run(["price", "withdraw", "acme-now", "--from", "2020-01-01"])
        #expect(refused.status == 5, "\(refused)")
        #expect(refused.firstErrorLine.contains("2020-01-01T00:00:00"), "\(refused)")

        try ledger.consume("t", "--prompt", "1000", "--completion", "100", "--model", "acme-late")
        try ledger.succeed("price", "set", "acme-late", "--prompt", "2", "--completion", "4", "--from", "2020-01-01")
        let range = ["--model", "acme-late", "--from", "2020-01-01", "--to", "2100-01-01"]
        // 1,000 × 2,000 + 100 × 4,000 nano-dollars.
        let repriced = try ledger.run(["price", "reprice"] + range)
        #expect(repriced.stdout == "repriced 1 consume: $0.0024; 0 consumes still unpriced\n", "\(repriced)")
        let again = try ledger.run(["price", "reprice", "--json"] + range)
        #expect(again.stdout == #"{"repriced":0,"cost":0,"costNanos":0,"unpriced":0,"complete":true}"# + "\n", "\(again)")
        #expect(try ledger.succeed("verify").status == 0)
    }
}
