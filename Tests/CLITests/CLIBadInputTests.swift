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
        BadInput(arguments: ["consume", "t", "--prompt", "-5"], names: "promptTokens"),
        BadInput(arguments: ["consume", "t", "--prompt=-5"], names: "promptTokens"),
        BadInput(arguments: ["consume", "t", "--prompt", "1", "--completion", "-1"], names: "completionTokens"),
        BadInput(arguments: ["consume", "t", "--prompt", "-5", "--enforce"], names: "promptTokens"),
        BadInput(arguments: ["consume", "t", "--prompt", "9223372036854775807", "--completion", "1"], names: "overflow"),
        BadInput(arguments: ["consume", "t", "--prompt", "9223372036854775808"], names: "--prompt"),
        BadInput(arguments: ["consume", "", "--prompt", "1"], names: "threadId"),
        BadInput(arguments: ["consume", String(repeating: "x", count: 257), "--prompt", "1"], names: "threadId"),
        // 129 two-byte characters: 258 bytes, though only 129 characters.
        BadInput(arguments: ["consume", String(repeating: "é", count: 129), "--prompt", "1"], names: "threadId"),
        BadInput(arguments: ["consume", "a\u{1}b", "--prompt", "1"], names: "threadId"),
        BadInput(arguments: ["consume", "line\nbreak", "--prompt", "1"], names: "threadId"),
        BadInput(arguments: ["consume", "t", "--prompt", "abc"], names: "--prompt"),
        BadInput(arguments: ["consume", "t"], names: "--prompt"),
        BadInput(arguments: ["consume", "t", "--prompt", "1", "--idempotency-key", ""], names: "idempotencyKey"),
        BadInput(
            arguments: ["consume", "t", "--prompt", "1", "--idempotency-key", String(repeating: "k", count: 257)],
            names: "idempotencyKey"),
        BadInput(arguments: ["check", "t", "--estimate", "-1"], names: "estimatedTokens"),
        BadInput(arguments: ["check", ""], names: "threadId"),
        BadInput(arguments: ["usage", "a\u{7}b"], names: "threadId"),
        BadInput(arguments: ["reset", ""], names: "threadId"),
        BadInput(arguments: ["cleanup", String(repeating: "x", count: 257)], names: "threadId"),
        BadInput(arguments: ["set-limit", "t", "-1"], names: "max-tokens"),
        BadInput(arguments: ["set-limit", "t", "--", "-1"], names: "maxTokens"),
        BadInput(arguments: ["set-limit", "t", "abc"], names: "max-tokens"),
        BadInput(arguments: ["set-limit", "", "10"], names: "threadId"),
        BadInput(arguments: ["configure", "--default-max", "-1"], names: "maxTokensPerThread"),
        BadInput(arguments: ["configure", "--default-max", "lots"], names: "--default-max"),
        BadInput(arguments: ["no-such-command"], names: "no-such-command", insertsDatabase: false),
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

    @Test("A consume that would overflow the thread's 64-bit total exits 64 and writes nothing")
    func threadTotalOverflow() throws {
        // Proves the overflow check covers the running total, not only prompt + completion.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let nearlyFull = try ledger.run("consume", "t", "--prompt", "9223372036854775000")
        #expect(nearlyFull.status == 0, "\(nearlyFull)")
        let before = try ledger.snapshot()

        let overflow = try ledger.run("consume", "t", "--prompt", "1000")
        #expect(overflow.status == 64, "\(overflow)")
        #expect(overflow.firstErrorLine.hasPrefix("Error:"), "\(overflow)")
        #expect(overflow.firstErrorLine.contains("overflow"), "\(overflow)")
        #expect(try ledger.snapshot() == before)
    }
}
