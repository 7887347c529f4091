import Foundation
import Testing

/// `budget set|list|show|remove` and refusals by a scope budget, as a user of the CLI sees them.
@Suite("CLI scope budgets")
struct CLIBudgetTests {
    @Test("A budget is set, listed, shown and removed, in text and in JSON")
    func setListShowRemove() throws {
        // Proves: set stores both maxes exactly and prints the wire shape; list and show print
        // the same object; text is a table with the scope, period, window and figures; remove
        // drops it, after which show exits 4 and remove exits 5.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let set = try ledger.succeed(
            "budget", "set", "org:acme", "--period", "month", "--max-usd", "500", "--max-tokens", "1000", "--json")
        let object = try set.jsonObject()
        #expect(object["scope"] as? String == "org:acme" && object["period"] as? String == "month")
        #expect(set.stdout.contains(#""maxTokens":1000,"maxUsd":500,"spentTokens":0,"spentUsd":0,"#), "\(set)")
        #expect(object["windowStart"] as? String != nil && object["windowEnd"] as? String != nil)
        #expect(object["remainingUsd"] as? Int == 500 && object["exhausted"] as? Bool == false)

        let show = try ledger.succeed("budget", "show", "org:acme", "--json")
        #expect(show.stdout == set.stdout)
        let list = try ledger.succeed("budget", "list", "--json")
        #expect(list.stdout == #"{"budgets":["# + set.stdout.trimmingCharacters(in: .newlines) + #"],"count":1}"# + "\n")

        let text = try ledger.succeed("budget", "show", "org:acme").stdout
        let lines = text.split(separator: "\n")
        #expect(lines.count == 2 && lines[0].hasPrefix("SCOPE") && lines[1].hasPrefix("org:acme  month"), "\(text)")
        #expect(text.contains("0/1000") && text.contains("$0/$500") && text.contains("0.0%"), "\(text)")
        #expect(text.contains("T00:00:00.000000Z – "), "\(text)")

        let removed = try ledger.succeed("budget", "remove", "org:acme", "--json")
        #expect(removed.stdout == #"{"removed":true,"scope":"org:acme"}"# + "\n")
        #expect(try ledger.run("budget", "show", "org:acme").status == 4)
        #expect(try ledger.run("budget", "remove", "org:acme").status == 5)
        #expect(try ledger.succeed("budget", "list").stdout == "no scope budgets\n")
    }

    @Test("A check-and-consume a scope budget refuses exits 3 naming the scope, window and figures")
    func refusedConsume() throws {
        // Proves: with a daily token budget on agent:bot, consume --enforce that does not fit
        // exits 3, prints the scope, the window and the figures, and records nothing; a plain
        // consume records past the max (it is not checked).
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("budget", "set", "agent:bot", "--period", "day", "--max-tokens", "100")
        try ledger.consume("t", "--prompt", "60", "--agent", "bot", "--enforce")
        let refused = try ledger.run("consume", "t", "--prompt", "50", "--agent", "bot", "--enforce")
        #expect(refused.status == 3, "\(refused)")
        #expect(refused.firstErrorLine.contains("budget exhausted"), "\(refused)")
        #expect(refused.firstErrorLine.contains("scope agent:bot (window "), "\(refused)")
        #expect(refused.firstErrorLine.contains("60 tokens of 100 tokens used, 50 tokens more requested"), "\(refused)")
        let json = try ledger.run("consume", "t", "--prompt", "50", "--agent", "bot", "--enforce", "--json")
        #expect(json.status == 3)
        let body = try json.jsonObject()
        #expect(body["scope"] as? String == "agent:bot" && body["unit"] as? String == "tokens")
        #expect((body["window"] as? [String: Any])?["end"] is String)
        #expect(try ledger.budget("t").totalTokens == 60)
        try ledger.consume("t", "--prompt", "50", "--agent", "bot")
        let after = try ledger.succeed("budget", "show", "agent:bot", "--json").jsonObject()
        #expect(after["spentTokens"] as? Int == 110 && after["exhausted"] as? Bool == true)
    }

    @Test("reserve falls under the scopes of --agent, --model and --meta")
    func reserveUnderScopes() throws {
        // Proves: a hold with --meta org_id=acme counts against org:acme's budget (held), and a
        // hold that does not fit it exits 3 naming the scope.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("budget", "set", "org:acme", "--max-tokens", "100")
        try ledger.succeed("reserve", "t", "--tokens", "80", "--meta", "org_id=acme", "--agent", "a", "--model", "m")
        let shown = try ledger.succeed("budget", "show", "org:acme", "--json").jsonObject()
        #expect(shown["heldTokens"] as? Int == 80 && shown["remainingTokens"] as? Int == 20)
        let refused = try ledger.run("reserve", "t2", "--tokens", "30", "--meta", "org_id=acme")
        #expect(refused.status == 3 && refused.firstErrorLine.contains("scope org:acme"), "\(refused)")
    }
}
