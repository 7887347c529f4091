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

    @Test("usage text names the unpriced requests and their tokens, never a cost that reads complete; a reprice clears both")
    func usageTextCountsUnpricedTokens() throws {
        // Proves the operator's text: a model with no price reads "cost unknown" with its
        // unpriced requests and tokens; a total mixing priced and unpriced usage gives the priced
        // cost marked partial, naming what it leaves out; the JSON carries unpricedTokens; after a
        // reprice the cost is whole and neither figure is printed.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.consume("t", "--prompt", "1000", "--completion", "400", "--model", "acme-text")
        try ledger.consume("t", "--prompt", "90", "--completion", "10", "--model", "ACME-text ")
        // gpt-4o: 1,000 × $2.5/M = $0.0025.
        try ledger.consume("t", "--prompt", "1000", "--model", "gpt-4o")
        let model = try ledger.succeed("usage", "--model", "acme-text")
        #expect(model.stdout == "model acme-text: 1500 tokens (prompt 1090, completion 410) in 2 requests, "
            + "cost unknown (2 unpriced requests, 1500 tokens)\n", "\(model)")
        let overview = try ledger.succeed("usage")
        #expect(overview.stdout.hasPrefix("total: 2500 tokens (prompt 2090, completion 410) in 3 requests, "
            + "cost $0.0025 for the priced ones only (partial: 2 unpriced requests, 1500 tokens)\n"), "\(overview)")
        let json = try ledger.succeed("usage", "--model", "acme-text", "--json")
        #expect(json.stdout.contains(#""totalCost":null,"unpricedRequests":2,"unpricedTokens":1500,"costComplete":false"#), "\(json)")

        try ledger.succeed("price", "set", "acme-text", "--prompt", "2", "--completion", "4", "--from", "2020-01-01")
        try ledger.succeed("price", "reprice", "--model", "acme-text", "--from", "2020-01-01", "--to", "2100-01-01")
        // 1,090 × 2,000 + 410 × 4,000 nano-dollars = $0.00382.
        let repriced = try ledger.succeed("usage", "--model", "acme-text")
        #expect(repriced.stdout == "model acme-text: 1500 tokens (prompt 1090, completion 410) in 2 requests, cost $0.00382\n",
                "\(repriced)")
        #expect(try ledger.succeed("usage").stdout.hasPrefix(
            "total: 2500 tokens (prompt 2090, completion 410) in 3 requests, cost $0.00632\n"))
        #expect(try ledger.succeed("verify").status == 0)
    }
}
