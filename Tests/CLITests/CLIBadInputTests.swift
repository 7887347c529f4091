import Foundation
import Testing

/// One command line that must be refused as bad input.
struct BadInput: Sendable, CustomTestStringConvertible {
    /// The subcommand and its arguments; `--db LEDGER` is inserted after the subcommand.
    let arguments: [String]
    /// A word the first `Error:` line must contain, so that it names what was wrong.
    let names: String
    /// False for a line that is wrong before any subcommand is chosen, where `--db` has no place.
    var insertsDatabase = true

    var testDescription: String {
        String(arguments.map(\.debugDescription).joined(separator: " ").prefix(80)) + " → names \(names)"
    }

    static let all: [BadInput] = [
        BadInput(arguments: ["consume", "t", "--prompt", "-5"], names: "--prompt"),
        BadInput(arguments: ["consume", "t", "--prompt=-5"], names: "--prompt"),
        BadInput(arguments: ["consume", "t", "--prompt", "1", "--completion", "-1"], names: "--completion"),
        BadInput(arguments: ["consume", "t", "--prompt", "-5", "--enforce"], names: "--prompt"),
        BadInput(arguments: ["consume", "t", "--prompt", "9000000000000000000"], names: "invalid --prompt: must be at most 1000000000"),
        BadInput(arguments: ["consume", "t", "--prompt", "1", "--completion", "1000000001"], names: "--completion"),
        BadInput(arguments: ["consume", "t", "--prompt", "1", "--latency-ms", "9000000000000000000"], names: "invalid --latency-ms"),
        BadInput(arguments: ["set-limit", "t", "1000000000000001"], names: "invalid N: must be at most 1000000000000000"),
        BadInput(arguments: ["reserve", "t", "--tokens", "2000000001"], names: "invalid --tokens"),
        BadInput(arguments: ["consume", "t", "--prompt", "9223372036854775808"], names: "--prompt"),
        BadInput(arguments: ["consume", "", "--prompt", "1"], names: "invalid THREAD"),
        BadInput(arguments: ["consume", String(repeating: "x", count: 257), "--prompt", "1"], names: "invalid THREAD"),
        // 129 two-byte characters: 258 bytes, though only 129 characters.
        BadInput(arguments: ["consume", String(repeating: "é", count: 129), "--prompt", "1"], names: "invalid THREAD"),
        BadInput(arguments: ["consume", "a\u{1}b", "--prompt", "1"], names: "invalid THREAD"),
        BadInput(arguments: ["consume", "line\nbreak", "--prompt", "1"], names: "invalid THREAD"),
        BadInput(arguments: ["consume", "t", "--prompt", "abc"], names: "--prompt"),
        BadInput(arguments: ["consume", "t"], names: "--prompt"),
        BadInput(arguments: ["consume", "t", "--prompt", "1", "--idempotency-key", ""], names: "invalid --idempotency-key"),
        BadInput(
            arguments: ["consume", "t", "--prompt", "1", "--idempotency-key", String(repeating: "k", count: 257)],
            names: "invalid --idempotency-key"),
        BadInput(arguments: ["check", "t", "--estimate", "-1"], names: "invalid --estimate"),
        BadInput(arguments: ["check", ""], names: "invalid THREAD"),
        BadInput(arguments: ["usage", "a\u{7}b"], names: "invalid THREAD"),
        BadInput(arguments: ["reset", ""], names: "invalid THREAD"),
        BadInput(arguments: ["cleanup", String(repeating: "x", count: 257)], names: "invalid THREAD"),
        BadInput(arguments: ["set-limit", "t", "-1"], names: "invalid N: must not be negative (got -1)"),
        BadInput(arguments: ["set-limit", "t", "-1", "--json"], names: "invalid N: must not be negative (got -1)"),
        BadInput(arguments: ["set-limit", "t", "--", "-1"], names: "invalid N"),
        BadInput(arguments: ["set-limit", "t", "abc"], names: "max-tokens"),
        BadInput(arguments: ["set-limit", "", "10"], names: "invalid THREAD"),
        BadInput(arguments: ["configure", "--default-max", "-1"], names: "invalid --default-max"),
        BadInput(arguments: ["configure", "--default-max", "lots"], names: "--default-max"),
        BadInput(arguments: ["no-such-command"], names: "no-such-command", insertsDatabase: false),
        BadInput(arguments: ["consum", "t", "--prompt", "1"], names: "did you mean 'consume'", insertsDatabase: false),
        BadInput(arguments: ["export", "--format", "csv", "--from", "yesterday"], names: "--from"),
        BadInput(arguments: ["price", "set", "m", "--prompt", "1", "--completion", "1", "--from", "soon"], names: "--from"),
        BadInput(arguments: ["consume", "t", "--prompt", "1", "--meta", "novalue"], names: "--meta"),
        BadInput(arguments: ["budget", "set", "org:acme", "--max-usd", "1.0000000001"], names: "--max-usd"),
        BadInput(arguments: ["budget", "set", "org:acme", "--max-usd", "5e2"], names: "--max-usd"),
        BadInput(arguments: ["budget", "set", "org:acme", "--max-usd", "-1"], names: "--max-usd"),
        BadInput(arguments: ["budget", "set", "org:acme", "--max-usd", "1000000000.01"], names: "--max-usd"),
        BadInput(arguments: ["budget", "set", "org:acme", "--max-tokens", "-1"], names: "--max-tokens"),
        BadInput(arguments: ["budget", "set", "org:acme", "--max-tokens", "1", "--period", "year"], names: "--period"),
        BadInput(arguments: ["budget", "set", "org:acme"], names: "--max-tokens"),
        BadInput(arguments: ["budget", "set", "team:acme", "--max-tokens", "1"], names: "SCOPE"),
        BadInput(arguments: ["budget", "remove", "org:"], names: "SCOPE"),
        BadInput(arguments: ["reserve", "t", "--tokens", "1", "--meta", "novalue"], names: "--meta"),
        BadInput(arguments: ["consume", "t", "--prompt", "1", "--model", ""], names: "invalid --model"),
        BadInput(arguments: ["consume", "t", "--prompt", "1", "--meta", "org_id="], names: "invalid --meta org_id"),
        BadInput(arguments: ["price", "set", "", "--prompt", "1", "--completion", "1"], names: "invalid MODEL"),
    ]
}

/// Bad input is refused with exit 64 and changes nothing.
@Suite("CLI bad input")
struct CLIBadInputTests {
    @Test("Bad input exits 64 with an Error naming what was wrong, and writes nothing", arguments: BadInput.all)
    func refusedAndNothingWritten(input: BadInput) throws {
        // Proves validation happens before any write: the ledger reads the same before and after.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "100")
        try ledger.consume("t", "--prompt", "10")
        let before = try ledger.snapshot()

        let result =
            input.insertsDatabase
            ? try ledger.run(input.arguments)
            : try runCLI(input.arguments, environment: ["BUDGET_LEDGER_DB": ledger.databasePath], in: ledger.directory)
        #expect(result.status == 64, "\(result)")
        #expect(result.firstErrorLine.hasPrefix("Error:"), "\(result)")
        #expect(result.firstErrorLine.contains(input.names), "\(result)")

        #expect(try ledger.snapshot() == before)
        #expect(try ledger.budget("t").totalTokens == 10)
    }

    @Test("The issue's overflow repro is refused at the first command, and usage and verify keep working")
    func overflowReproRefused() throws {
        // Proves issue 13's repro: two oversized consumes on two threads used to be accepted and then
        // broke `usage`, `verify` and, at the next fold, every consume. Now the first is refused.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        for thread in ["a", "b"] {
            let oversized = try ledger.run("consume", thread, "--prompt", "9000000000000000000")
            #expect(oversized.status == 64, "\(oversized)")
            #expect(oversized.firstErrorLine == "Error: invalid --prompt: must be at most 1000000000 (got 9000000000000000000)")
        }
        _ = try ledger.consume("c", "--prompt", "1000000000", "--completion", "1000000000")
        _ = try ledger.succeed("usage")
        _ = try ledger.succeed("verify")
    }
}
