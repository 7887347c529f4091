import Foundation
import Testing

/// The documented behaviour of each subcommand, one process per command.
@Suite("CLI contract")
struct CLIContractTests {
    @Test("The built budget-ledger binary is found next to the test executable, or at BUDGET_LEDGER_BIN")
    func binaryIsFound() throws {
        // Proves the locator finds an executable file, so every other test runs the real binary.
        let path = try CLIBinary.require()
        #expect(URL(fileURLWithPath: path).lastPathComponent == "budget-ledger")
    }

    @Test("--version prints a version number and exits 0")
    func version() throws {
        // Proves `--version` is wired to a real version string, not help or an error.
        let result = try runCLI(["--version"])
        #expect(result.status == 0, "\(result)")
        let version = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(version.wholeMatch(of: /[0-9]+\.[0-9]+\.[0-9]+\S*/) != nil, "version: \(version)")
        #expect(result.stderr.isEmpty)
    }

    @Test("--help lists every subcommand")
    func helpListsSubcommands() throws {
        // Proves each documented subcommand is registered with the root command.
        let result = try runCLI(["--help"])
        #expect(result.status == 0, "\(result)")
        let listed = Set(
            result.stdout.split(separator: "\n").compactMap { line in
                line.hasPrefix("  ") ? line.split(separator: " ").first.map(String.init) : nil
            })
        let documented: Set<String> = [
            "init", "consume", "check", "usage", "threads", "reset", "cleanup", "set-limit", "configure", "verify",
        ]
        #expect(documented.isSubset(of: listed), "missing: \(documented.subtracting(listed).sorted())")
    }

    @Test("init creates a ledger with the events table, and a second init migrates nothing and writes nothing")
    func initCreatesTheLedger() throws {
        // Proves init makes a real SQLite file with the schema, idempotently.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("init")
        #expect(FileManager.default.fileExists(atPath: ledger.databasePath))
        if SQLiteShell.isAvailable {
            let schema = try SQLiteShell.run(ledger.databasePath, ".schema")
            #expect(schema.contains("CREATE TABLE events"), "schema: \(schema)")
        }
        let before = try ledger.snapshot()
        try ledger.succeed("init")
        #expect(try ledger.snapshot() == before)
        let threads = try ledger.succeed("threads", "--json").jsonObject()
        #expect(Set(threads.keys) == ["threads", "count", "defaultMaxTokens"])
        #expect(threads["count"] as? Int64 == 0)
        #expect((threads["threads"] as? [Any])?.isEmpty == true)
        #expect(threads["defaultMaxTokens"] as? Int64 == 100_000)
    }

    @Test("consume --json prints the budget and the crossings with every documented key and value")
    func consumeOutput() throws {
        // Proves the consume JSON shape, and that tokensUsed is the thread total, not this consume.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "100")
        let first = try ledger.consume("t", "--prompt", "40", "--completion", "10")
        #expect(
            first.budget
                == BudgetJSON(
                    threadId: "t", maxTokens: 100, promptTokens: 40, completionTokens: 10, totalTokens: 50,
                    remaining: 50, requestCount: 1, percentUsed: 50.0, isExhausted: false))
        #expect(first.crossedThresholds.isEmpty)

        let second = try ledger.consume("t", "--prompt", "30", "--completion", "16")
        #expect(
            second.budget
                == BudgetJSON(
                    threadId: "t", maxTokens: 100, promptTokens: 70, completionTokens: 26, totalTokens: 96,
                    remaining: 4, requestCount: 2, percentUsed: 96.0, isExhausted: false))
        #expect(
            second.crossedThresholds == [
                CrossingJSON(
                    thresholdPercent: 75, severity: "warning", percentUsed: 96.0, tokensUsed: 96, tokensRemaining: 4,
                    maxTokens: 100),
                CrossingJSON(
                    thresholdPercent: 90, severity: "critical", percentUsed: 96.0, tokensUsed: 96,
                    tokensRemaining: 4, maxTokens: 100),
                CrossingJSON(
                    thresholdPercent: 95, severity: "final", percentUsed: 96.0, tokensUsed: 96, tokensRemaining: 4,
                    maxTokens: 100),
            ])
        #expect(try ledger.budget("t") == second.budget)
    }

    @Test("Each threshold fires once, when the total first reaches it")
    func thresholdsFireOnce() throws {
        // Proves 75/90/95 fire one at a time at the right totals and never again in the window.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "200")
        #expect(try ledger.consume("t", "--prompt", "149").crossedPercents == [])
        #expect(try ledger.consume("t", "--prompt", "1").crossedPercents == [75])
        #expect(try ledger.consume("t", "--prompt", "29").crossedPercents == [])
        let critical = try ledger.consume("t", "--prompt", "1")
        #expect(critical.crossedThresholds.map(\.severity) == ["critical"])
        #expect(try ledger.consume("t", "--prompt", "10").crossedPercents == [95])
        #expect(try ledger.consume("t", "--prompt", "100").crossedPercents == [])
    }

    @Test("percentUsed is rounded to one decimal")
    func percentUsedRounding() throws {
        // Proves 1/3 reads 33.3 and 2/3 reads 66.7 (rounded, not truncated).
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "third", "3")
        #expect(try ledger.consume("third", "--prompt", "1").budget.percentUsed == 33.3)
        #expect(try ledger.consume("third", "--prompt", "1").budget.percentUsed == 66.7)
        #expect(try ledger.budget("third").percentUsed == 66.7)
    }

    @Test("consume --enforce refuses what does not fit with exit 3 and records only its refusal; plain consume overshoots")
    func enforce() throws {
        // Proves the refusal path changes no budget and records one event only, the window's
        // refusal event (migration 0011), while an unenforced consume records spent tokens.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "10")
        #expect(try ledger.consume("t", "--prompt", "8", "--enforce").budget.totalTokens == 8)
        let before = try ledger.snapshot()

        let refused = try ledger.run("consume", "t", "--prompt", "2", "--completion", "1", "--enforce")
        #expect(refused.status == 3, "\(refused)")
        #expect(refused.firstErrorLine.hasPrefix("Error:"))
        #expect(refused.firstErrorLine.contains("budget exhausted"), "\(refused)")
        let after = try ledger.snapshot()
        #expect(after.threadsJSON == before.threadsJSON)
        #expect(after.eventCount == before.eventCount + 1, "a refusal records its refusal event and nothing else")
        #expect(try ledger.run("consume", "t", "--prompt", "2", "--completion", "1", "--enforce").status == 3)
        #expect(try ledger.snapshot().eventCount == after.eventCount, "a second refusal in the window records nothing")

        #expect(try ledger.consume("t", "--prompt", "2", "--enforce").budget.totalTokens == 10)
        let exhausted = try ledger.run("consume", "t", "--prompt", "0", "--enforce")
        #expect(exhausted.status == 3, "an exhausted thread refuses even 0 tokens: \(exhausted)")

        let overshoot = try ledger.consume("t", "--prompt", "5")
        #expect(
            overshoot.budget
                == BudgetJSON(
                    threadId: "t", maxTokens: 10, promptTokens: 15, completionTokens: 0, totalTokens: 15,
                    remaining: 0, requestCount: 3, percentUsed: 150.0, isExhausted: true))
    }

    @Test("check exits 0 while an estimate fits, 3 when it would exceed or the thread is exhausted")
    func check() throws {
        // Proves check's exit codes and that check itself spends nothing.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "100")
        try ledger.consume("t", "--prompt", "60")

        let fits = try ledger.succeed("check", "t", "--estimate", "40", "--json")
        #expect(try BudgetJSON(fits.jsonObject()).totalTokens == 60)
        let tooMuch = try ledger.run("check", "t", "--estimate", "41")
        #expect(tooMuch.status == 3, "\(tooMuch)")
        #expect(tooMuch.firstErrorLine.hasPrefix("Error:"), "\(tooMuch)")
        #expect(tooMuch.firstErrorLine.contains("budget exhausted"), "\(tooMuch)")
        #expect(try ledger.budget("t").totalTokens == 60)

        try ledger.consume("t", "--prompt", "40")
        let exhausted = try ledger.run("check", "t")
        #expect(exhausted.status == 3, "\(exhausted)")
        #expect(exhausted.firstErrorLine.hasPrefix("Error:"), "\(exhausted)")
    }

    @Test("usage prints a bare budget; an unknown thread exits 4 with an Error naming it")
    func usage() throws {
        // Proves usage's JSON is the bare budget object and the not-found path.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.consume("known", "--prompt", "3", "--completion", "4")
        #expect(
            try ledger.budget("known")
                == BudgetJSON(
                    threadId: "known", maxTokens: 100_000, promptTokens: 3, completionTokens: 4, totalTokens: 7,
                    remaining: 99_993, requestCount: 1, percentUsed: 0.0, isExhausted: false))

        let before = try ledger.snapshot()
        let unknown = try ledger.run("usage", "nobody-here")
        #expect(unknown.status == 4, "\(unknown)")
        #expect(unknown.firstErrorLine.hasPrefix("Error:"), "\(unknown)")
        #expect(unknown.firstErrorLine.contains("nobody-here"), "\(unknown)")
        #expect(try ledger.snapshot() == before, "usage of an unknown thread must not open it")
    }

    @Test("threads lists every thread hottest first, with count and defaultMaxTokens")
    func threadsHottestFirst() throws {
        // Proves the threads JSON shape and its ordering by percent used, not by name or age.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "a-cool", "100")
        try ledger.succeed("set-limit", "b-hot", "10")
        try ledger.succeed("set-limit", "c-warm", "1000")
        try ledger.consume("a-cool", "--prompt", "10")
        try ledger.consume("b-hot", "--prompt", "9")
        try ledger.consume("c-warm", "--prompt", "500")

        let threads = try ledger.succeed("threads", "--json").jsonObject()
        #expect(Set(threads.keys) == ["threads", "count", "defaultMaxTokens"])
        #expect(threads["count"] as? Int64 == 3)
        #expect(threads["defaultMaxTokens"] as? Int64 == 100_000)
        let budgets = try (try #require(threads["threads"] as? [Any])).map(BudgetJSON.init)
        #expect(budgets.map(\.threadId) == ["b-hot", "c-warm", "a-cool"])
        #expect(budgets.map(\.percentUsed) == [90.0, 50.0, 10.0])
    }

    @Test("reset zeroes what was spent, keeps the max and re-arms the thresholds")
    func reset() throws {
        // Proves reset starts a new window rather than deleting or re-limiting the thread.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "100")
        #expect(try ledger.consume("t", "--prompt", "80", "--completion", "5").crossedPercents == [75])

        let reset = try BudgetJSON(try ledger.succeed("reset", "t", "--json").jsonObject())
        let zero = BudgetJSON(
            threadId: "t", maxTokens: 100, promptTokens: 0, completionTokens: 0, totalTokens: 0, remaining: 100,
            requestCount: 0, percentUsed: 0.0, isExhausted: false)
        #expect(reset == zero)
        #expect(try ledger.budget("t") == zero)
        #expect(try ledger.consume("t", "--prompt", "76").crossedPercents == [75])

        let unknown = try ledger.run("reset", "never-opened")
        #expect(unknown.status == 4, "\(unknown)")
        #expect(unknown.firstErrorLine.hasPrefix("Error:"), "\(unknown)")
    }

    @Test("cleanup prints the final budget; the thread is then unknown, and its id starts afresh at the default max")
    func cleanup() throws {
        // Proves cleanup ends the thread's life: a reused id neither keeps the old limit nor the old spend.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "50")
        try ledger.consume("t", "--prompt", "45")

        let final = try BudgetJSON(try ledger.succeed("cleanup", "t", "--json").jsonObject())
        #expect(
            final
                == BudgetJSON(
                    threadId: "t", maxTokens: 50, promptTokens: 45, completionTokens: 0, totalTokens: 45,
                    remaining: 5, requestCount: 1, percentUsed: 90.0, isExhausted: false))
        let usage = try ledger.run("usage", "t")
        #expect(usage.status == 4, "\(usage)")
        let again = try ledger.run("cleanup", "t")
        #expect(again.status == 4, "\(again)")
        #expect(again.firstErrorLine.hasPrefix("Error:"), "\(again)")

        try ledger.succeed("configure", "--default-max", "300")
        let reborn = try ledger.consume("t", "--prompt", "240")
        #expect(
            reborn.budget
                == BudgetJSON(
                    threadId: "t", maxTokens: 300, promptTokens: 240, completionTokens: 0, totalTokens: 240,
                    remaining: 60, requestCount: 1, percentUsed: 80.0, isExhausted: false))
        #expect(reborn.crossedPercents == [75], "the new life's thresholds are armed")
    }

    @Test("set-limit creates a thread, and may lower the max below what is spent, exhausting it")
    func setLimit() throws {
        // Proves set-limit opens unknown threads and that a lowered max makes the thread exhausted.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let created = try BudgetJSON(try ledger.succeed("set-limit", "t", "500", "--json").jsonObject())
        #expect(
            created
                == BudgetJSON(
                    threadId: "t", maxTokens: 500, promptTokens: 0, completionTokens: 0, totalTokens: 0,
                    remaining: 500, requestCount: 0, percentUsed: 0.0, isExhausted: false))
        try ledger.consume("t", "--prompt", "200")

        let lowered = try BudgetJSON(try ledger.succeed("set-limit", "t", "150", "--json").jsonObject())
        #expect(
            lowered
                == BudgetJSON(
                    threadId: "t", maxTokens: 150, promptTokens: 200, completionTokens: 0, totalTokens: 200,
                    remaining: 0, requestCount: 1, percentUsed: 133.3, isExhausted: true))
        #expect(try ledger.budget("t") == lowered)
        #expect(try ledger.run("check", "t").status == 3)
        #expect(try ledger.run("consume", "t", "--prompt", "1", "--enforce").status == 3)
    }

    @Test("configure --default-max applies to threads created afterwards; existing threads keep theirs")
    func configure() throws {
        // Proves the default is read when a thread opens, not when it is used.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.consume("before", "--prompt", "1")
        let configured = try ledger.succeed("configure", "--default-max", "500", "--json")
        #expect(try configured.jsonObject()["defaultMaxTokens"] as? Int64 == 500)

        #expect(try ledger.consume("after", "--prompt", "1").budget.maxTokens == 500)
        #expect(try ledger.budget("before").maxTokens == 100_000)
        #expect(try ledger.consume("before", "--prompt", "1").budget.maxTokens == 100_000)
        let threads = try ledger.succeed("threads", "--json").jsonObject()
        #expect(threads["defaultMaxTokens"] as? Int64 == 500)
    }

    @Test("verify exits 0 on a consistent ledger and 1 when a derived total disagrees with the events",
          .enabled(if: SQLiteShell.isAvailable, "needs /usr/bin/sqlite3 to tamper with the file"))
    func verify() throws {
        // Proves verify really recomputes the totals: a tampered cache makes it fail.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "100")
        try ledger.consume("t", "--prompt", "80")
        try ledger.succeed("reset", "t")
        try ledger.consume("t", "--prompt", "5")
        let report = try ledger.succeed("verify", "--json").jsonObject()
        #expect(report["ok"] as? Bool == true, "\(report)")

        _ = try SQLiteShell.run(ledger.databasePath, "UPDATE thread_state SET prompt_tokens = prompt_tokens + 1")
        let failed = try ledger.run("verify")
        #expect(failed.status == 1, "\(failed)")
        #expect(failed.firstErrorLine.hasPrefix("Error:"), "\(failed)")
    }

    @Test("The same idempotency key twice records once; reused with different tokens it exits 5")
    func idempotency() throws {
        // Proves a retried consume is a replay, and a mismatched reuse is a conflict that writes nothing.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "100")
        let original = try ledger.consume("t", "--prompt", "70", "--completion", "10", "--idempotency-key", "call-1")
        #expect(original.replayed != true)
        #expect(original.crossedPercents == [75])
        let afterOriginal = try ledger.snapshot()

        let retry = try ledger.consume("t", "--prompt", "70", "--completion", "10", "--idempotency-key", "call-1")
        #expect(retry.replayed == true)
        #expect(retry.budget == original.budget)
        #expect(retry.budget.requestCount == 1)
        #expect(try ledger.snapshot() == afterOriginal)

        for conflicting in [["t", "--prompt", "71", "--completion", "10"], ["other", "--prompt", "70", "--completion", "10"]] {
            let conflict = try ledger.run(["consume"] + conflicting + ["--idempotency-key", "call-1"])
            #expect(conflict.status == 5, "\(conflict)")
            #expect(conflict.firstErrorLine.hasPrefix("Error:"), "\(conflict)")
            #expect(conflict.firstErrorLine.contains("idempotency key"), "\(conflict)")
        }
        #expect(try ledger.snapshot() == afterOriginal)
    }

    @Test("BUDGET_LEDGER_DB selects the ledger when --db is absent; --db wins; else ./budget-ledger.db")
    func databaseSelection() throws {
        // Proves the three ways of naming the file, each checked through a different one.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let fromEnvironment = try runCLI(
            ["consume", "via-env", "--prompt", "3"], environment: ["BUDGET_LEDGER_DB": ledger.databasePath],
            in: ledger.directory)
        #expect(fromEnvironment.status == 0, "\(fromEnvironment)")
        #expect(try ledger.budget("via-env").totalTokens == 3)
        let defaultPath = ledger.directory.appendingPathComponent("budget-ledger.db").path
        #expect(!FileManager.default.fileExists(atPath: defaultPath))

        let elsewhere = ledger.directory.appendingPathComponent("elsewhere.db").path
        let explicit = try runCLI(
            ["consume", "via-flag", "--db", elsewhere, "--prompt", "4"],
            environment: ["BUDGET_LEDGER_DB": ledger.databasePath], in: ledger.directory)
        #expect(explicit.status == 0, "\(explicit)")
        #expect(try ledger.run("usage", "via-flag").status == 4, "--db must win over BUDGET_LEDGER_DB")

        let implicit = try runCLI(["consume", "via-default", "--prompt", "5"], in: ledger.directory)
        #expect(implicit.status == 0, "\(implicit)")
        #expect(FileManager.default.fileExists(atPath: defaultPath))
        let usage = try runCLI(["usage", "via-default", "--db", defaultPath, "--json"], in: ledger.directory)
        #expect(try BudgetJSON(usage.jsonObject()).totalTokens == 5)
    }

    @Test("A file that is not a database fails with exit 1 and an Error, and is left byte for byte unchanged",
          arguments: [["init"], ["consume", "t", "--prompt", "1"], ["usage", "t"], ["threads"], ["verify"]])
    func notADatabase(command: [String]) throws {
        // Proves no subcommand overwrites or "repairs" a file that is not ours.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let content = Data("hello".utf8)
        try content.write(to: URL(fileURLWithPath: ledger.databasePath))
        let result = try ledger.run(command)
        #expect(result.status == 1, "\(result)")
        #expect(result.firstErrorLine.hasPrefix("Error:"), "\(result)")
        #expect(result.firstErrorLine.contains("not a"), "the error should say the file is not a database: \(result)")
        #expect(try ledger.databaseBytes() == content)
    }

    @Test("Another application's SQLite database fails with exit 1 and is left byte for byte unchanged",
          .enabled(if: SQLiteShell.isAvailable, "needs /usr/bin/sqlite3 to create a foreign database"))
    func foreignDatabase() throws {
        // Proves the ledger refuses a database it did not create without modifying it.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        _ = try SQLiteShell.run(ledger.databasePath, "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine')")
        let original = try ledger.databaseBytes()
        let result = try ledger.run("init")
        #expect(result.status == 1, "\(result)")
        #expect(result.firstErrorLine.hasPrefix("Error:"), "\(result)")
        #expect(try ledger.databaseBytes() == original, "the foreign file was modified")
        #expect(try SQLiteShell.run(ledger.databasePath, "PRAGMA journal_mode") == "delete")
    }
}
