import Foundation
import Testing

/// The built `budget-ledger`, beside the test executable (as CLITests finds it).
func binaryPath() throws -> String {
    let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var directory = URL(fileURLWithPath: executable).resolvingSymlinksInPath().deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = directory.appendingPathComponent("budget-ledger").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        directory.deleteLastPathComponent()
    }
    return try #require(nil as String?, "build the CLI with swift build --build-tests")
}

/// Runs `budget-ledger arguments…` in an empty folder and waits for it.
func runCLI(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let binary = try binaryPath()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    environment["BUDGET_LEDGER_DB"] = nil
    process.environment = environment
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pg-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    process.currentDirectoryURL = folder
    let stdout = folder.appendingPathComponent("stdout")
    let stderr = folder.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: stdout.path, contents: nil)
    _ = FileManager.default.createFile(atPath: stderr.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: stdout)
    process.standardError = try FileHandle(forWritingTo: stderr)
    process.standardInput = FileHandle.nullDevice
    try process.run()
    // A command that hangs fails the test instead of the test run.
    if !waitForExit(process, seconds: 120) {
        Issue.record("budget-ledger \(arguments.joined(separator: " ")) was still running after 120 s; killed")
        kill(process.processIdentifier, SIGKILL)
    }
    process.waitUntilExit()
    // Nothing may be left in the working folder: a postgres:// URL is never taken for a file name.
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == ["stderr", "stdout"])
    return (
        process.terminationStatus, try String(contentsOf: stdout, encoding: .utf8), try String(contentsOf: stderr, encoding: .utf8)
    )
}

@Suite("budget-ledger --db postgres://…")
struct PostgresCLITests {
    @Test("init, set-limit, consume --enforce, check, usage, reset, cleanup and configure run on PostgreSQL with the exit codes of SQLite")
    func commandsRunOnPostgres() async throws {
        // Proves the CLI's store-independent commands reach the PostgreSQL ledger and keep the
        // documented exit codes (3 exhausted, 4 not found, 5 conflict, 64 bad input).
        let url = try await PostgresTestCluster.freshDatabase()
        let initialized = try runCLI(["init", "--db", url])
        #expect(initialized.status == 0)
        #expect(initialized.stdout.contains("ledger ready at \(url)"))
        #expect(try runCLI(["set-limit", "t1", "100", "--db", url]).status == 0)
        let consumed = try runCLI(["consume", "t1", "--prompt", "80", "--enforce", "--idempotency-key", "k", "--db", url, "--json"])
        #expect(consumed.status == 0, "\(consumed.stderr)")
        #expect(consumed.stdout.contains(#""totalTokens":80"#))
        #expect(try runCLI(["consume", "t1", "--prompt", "30", "--enforce", "--db", url]).status == 3)
        #expect(try runCLI(["consume", "t1", "--prompt", "81", "--idempotency-key", "k", "--db", url]).status == 5)
        #expect(try runCLI(["consume", "", "--prompt", "1", "--db", url]).status == 64)
        #expect(try runCLI(["check", "t1", "--estimate", "20", "--db", url]).status == 0)
        #expect(try runCLI(["check", "t1", "--estimate", "21", "--db", url]).status == 3)
        let usage = try runCLI(["usage", "t1", "--db", url])
        #expect(usage.status == 0)
        #expect(usage.stdout.contains("t1: 80 of 100 tokens used"))
        #expect(try runCLI(["usage", "nobody", "--db", url]).status == 4)
        #expect(try runCLI(["reset", "t1", "--db", url]).status == 0)
        #expect(try runCLI(["cleanup", "t1", "--db", url]).status == 0)
        #expect(try runCLI(["cleanup", "t1", "--db", url]).status == 4)
        #expect(try runCLI(["configure", "--default-max", "500", "--db", url]).status == 0)
        #expect(try runCLI(["configure", "--db", url]).stdout.contains("500 tokens"))
    }

    @Test("threads, reserve, settle, release, holds and price set/list/show/replace/withdraw run on PostgreSQL as on SQLite")
    func holdsPricesAndThreadsRunOnPostgres() async throws {
        // Proves the next commands reach the PostgreSQL ledger with SQLite's answers and exit codes:
        // a hold that does not fit is exit 3, a second settle exit 5, an unknown reservation
        // exit 4, a bad model name exit 64 naming MODEL; a price set is listed as in force and
        // prices a settle's cost; threads lists the open threads hottest first.
        let url = try await PostgresTestCluster.freshDatabase()
        #expect(try runCLI(["set-limit", "hot", "100", "--db", url]).status == 0)
        #expect(try runCLI(["consume", "hot", "--prompt", "90", "--db", url]).status == 0)
        #expect(try runCLI(["set-limit", "cool", "100", "--db", url]).status == 0)
        let priced = try runCLI(["price", "set", "bench-model", "--prompt", "2", "--completion", "4", "--db", url])
        #expect(priced.status == 0, "\(priced.stderr)")
        let listed = try runCLI(["price", "list", "--db", url])
        #expect(listed.stdout.split(separator: "\n").contains { $0.hasPrefix("* ") && $0.contains("bench-model") }, "\(listed.stdout)")
        let shown = try runCLI(["price", "show", "bench-model", "--db", url, "--json"])
        #expect(shown.status == 0 && shown.stdout.contains("bench-model"), "\(shown)")
        let badModel = try runCLI(["price", "set", "", "--prompt", "1", "--completion", "1", "--db", url])
        #expect(badModel.status == 64 && badModel.stderr.contains("invalid MODEL"), "\(badModel.stderr)")
        // price replace and price withdraw: a future price is replaced, then withdrawn (exit 0);
        // a second withdrawal finds nothing (exit 4); the price in force cannot be withdrawn (exit 5).
        let future = "2099-01-01"
        #expect(try runCLI(["price", "set", "bench-model", "--prompt", "3", "--completion", "5", "--from", future, "--db", url]).status == 0)
        let replaced = try runCLI(
            ["price", "replace", "bench-model", "--from", future, "--prompt", "6", "--completion", "7", "--db", url, "--json"])
        #expect(replaced.status == 0 && replaced.stdout.contains(#""promptPerMillion":6"#), "\(replaced)")
        let withdrawn = try runCLI(["price", "withdraw", "bench-model", "--from", future, "--db", url])
        #expect(withdrawn.status == 0 && withdrawn.stdout.hasPrefix("price withdrawn: "), "\(withdrawn)")
        #expect(try runCLI(["price", "withdraw", "bench-model", "--from", future, "--db", url]).status == 4)
        let inForce = try #require(
            ((try JSONSerialization.jsonObject(with: Data(shown.stdout.utf8)) as? [String: Any])?["price"] as? [String: Any])?[
                "effectiveFrom"] as? String)
        let refused = try runCLI(["price", "withdraw", "bench-model", "--from", inForce, "--db", url])
        #expect(refused.status == 5 && refused.stderr.contains("already in effect"), "\(refused)")

        let reserved = try runCLI(["reserve", "cool", "--tokens", "60", "--db", url, "--json"])
        #expect(reserved.status == 0, "\(reserved.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(reserved.stdout.utf8)) as? [String: Any]
        let reservation = try #require(object?["reservationId"] as? Int)
        #expect(try runCLI(["reserve", "cool", "--tokens", "41", "--db", url]).status == 3)
        let holds = try runCLI(["holds", "cool", "--db", url, "--json"])
        #expect(holds.stdout.contains(#""heldTokens":60"#), "\(holds.stdout)")
        let settled = try runCLI(
            ["settle", "\(reservation)", "--prompt", "10", "--completion", "5", "--model", "bench-model", "--db", url, "--json"])
        #expect(settled.status == 0, "\(settled.stderr)")
        #expect(settled.stdout.contains(#""totalTokens":15"#), "\(settled.stdout)")
        // 10 prompt tokens at $2 and 5 completion tokens at $4 per million: $0.00004.
        #expect(settled.stdout.contains(#""cost":4.0e-05"#) || settled.stdout.contains(#""cost":0.00004"#), "\(settled.stdout)")
        #expect(try runCLI(["settle", "\(reservation)", "--prompt", "1", "--db", url]).status == 5)
        #expect(try runCLI(["release", "999999", "--db", url]).status == 4)
        let second = try runCLI(["reserve", "cool", "--tokens", "5", "--db", url, "--json"])
        let secondID = try #require((try JSONSerialization.jsonObject(with: Data(second.stdout.utf8)) as? [String: Any])?["reservationId"] as? Int)
        #expect(try runCLI(["release", "\(secondID)", "--db", url]).status == 0)
        #expect(try runCLI(["holds", "--db", url, "--json"]).stdout.contains(#""count":0"#))

        let threads = try runCLI(["threads", "--db", url, "--json"])
        #expect(threads.status == 0, "\(threads.stderr)")
        let list = try #require((try JSONSerialization.jsonObject(with: Data(threads.stdout.utf8)) as? [String: Any])?["threads"] as? [[String: Any]])
        #expect(list.compactMap { $0["threadId"] as? String } == ["hot", "cool"])
    }

    @Test("processes racing with consume --enforce never push a thread past its max")
    func processesAreExact() async throws {
        // Proves exactness across processes, not only across one process's connections: 6
        // budget-ledger processes at a time, 90 in all, each a checked consume of 10 tokens
        // against a max of 500, succeed exactly 50 times (exit 0) and are refused 40 (exit 3).
        let url = try await PostgresTestCluster.freshDatabase()
        #expect(try runCLI(["set-limit", "shared", "500", "--db", url]).status == 0)
        // Six shells started at once, each running its 15 calls one after another and printing
        // each exit status: six processes in flight at any moment.
        let binary = try binaryPath()
        let workers = try (0..<6).map { _ in
            let worker = Process()
            worker.executableURL = URL(fileURLWithPath: "/bin/sh")
            worker.arguments = [
                "-c",
                "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do timeout -k 5 120 \"$0\" consume shared --prompt 6 --completion 4 "
                    + "--enforce --db \"$1\" > /dev/null 2>&1; echo $?; done",
                binary, url,
            ]
            let output = Pipe()
            worker.standardOutput = output
            worker.standardInput = FileHandle.nullDevice
            try worker.run()
            return (worker, output)
        }
        var statuses: [Int32] = []
        for (worker, output) in workers {
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            worker.waitUntilExit()
            statuses += text.split(separator: "\n").compactMap { Int32($0) }
        }
        #expect(statuses.count == 90)
        #expect(statuses.filter { $0 == 0 }.count == 50)
        #expect(statuses.filter { $0 == 3 }.count == 40)
        let usage = try runCLI(["usage", "shared", "--db", url])
        #expect(usage.stdout.contains("shared: 500 of 500 tokens used"))
    }

    @Test("usage (overview, --agent, --model, --all-time) and usage reset print on PostgreSQL what they print on SQLite")
    func usageCommandsMatchSQLite() async throws {
        // Proves the usage commands run on PostgreSQL with SQLite's output: the same calls on a
        // ledger file and on a database (priced and unpriced models, a case variant of one model
        // name, two agents), then the overview, one agent, one model, a usage reset and the
        // overview of the new window and of all time, compared as JSON, byte for byte.
        let url = try await PostgresTestCluster.freshDatabase()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pg-usage-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("ledger.db").path
        let calls: [[String]] = [
            ["consume", "a", "--prompt", "700", "--completion", "60", "--agent", "planner", "--model", "gpt-4o"],
            ["consume", "a", "--prompt", "100", "--agent", "planner", "--model", "GPT-4o"],
            ["consume", "b", "--prompt", "5", "--completion", "5", "--agent", "coder", "--model", "no-such-model"],
        ]
        for ledger in [file, url] {
            for call in calls { #expect(try runCLI(call + ["--db", ledger]).status == 0) }
        }
        let reads: [[String]] = [
            ["usage"], ["usage", "--agent", "planner"], ["usage", "--model", "gpt-4o"], ["usage", "--agent", "nobody"],
            ["usage", "reset"], ["usage"], ["usage", "--all-time"],
        ]
        for read in reads {
            let onFile = try runCLI(read + ["--db", file, "--json"])
            let onDatabase = try runCLI(read + ["--db", url, "--json"])
            #expect(onFile.status == 0 && onDatabase.status == 0, "\(read): \(onFile.stderr) \(onDatabase.stderr)")
            #expect(onDatabase.stdout == onFile.stdout, "\(read)")
        }
        let overview = try runCLI(["usage", "--all-time", "--db", url])
        #expect(overview.stdout.contains("unpriced"), "\(overview.stdout)")
    }

    @Test("budget set, list, show and remove run on PostgreSQL with SQLite's output and exit codes")
    func budgetCommandsMatchSQLite() async throws {
        // Proves the budget commands reach the PostgreSQL ledger: the same calls on a ledger file
        // and on a database print the same (text and JSON) and exit alike: 0, 3 when a checked
        // consume does not fit the org's budget, 4 for a scope without a budget, 5 removing one
        // twice, 64 for a bad period or scope.
        let url = try await PostgresTestCluster.freshDatabase()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pg-budget-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("ledger.db").path
        let calls: [(arguments: [String], status: Int32)] = [
            (["budget", "set", "org:acme", "--period", "month", "--max-tokens", "100", "--max-usd", "2.5"], 0),
            (["budget", "set", "model:GPT-4o", "--max-usd", "0.01"], 0),
            (["budget", "set", "org:acme", "--period", "fortnight", "--max-tokens", "1"], 64),
            (["budget", "set", "team:x", "--max-tokens", "1"], 64),
            (["consume", "t", "--prompt", "90", "--enforce", "--meta", "org_id=acme", "--model", "gpt-4o"], 0),
            (["consume", "t", "--prompt", "20", "--enforce", "--meta", "org_id=acme"], 3),
            (["budget", "list"], 0), (["budget", "list", "--json"], 0),
            (["budget", "show", "org:acme"], 0), (["budget", "show", "model:gpt-4o", "--json"], 0),
            (["budget", "show", "user:nobody"], 4),
            (["budget", "remove", "org:acme"], 0), (["budget", "remove", "org:acme"], 5),
            (["consume", "t", "--prompt", "20", "--enforce", "--meta", "org_id=acme"], 0),
            (["budget", "list", "--json"], 0),
        ]
        for (arguments, status) in calls {
            let onFile = try runCLI(arguments + ["--db", file])
            let onDatabase = try runCLI(arguments + ["--db", url])
            #expect(onFile.status == status && onDatabase.status == status, "\(arguments): \(onFile.stderr) \(onDatabase.stderr)")
            #expect(onDatabase.stdout == onFile.stdout, "\(arguments)")
            #expect(onDatabase.stderr == onFile.stderr, "\(arguments)")
        }
        #expect(try runCLI(["budget", "list", "--db", url]).stdout.contains("model:gpt-4o"))
        #expect(try runCLI(["verify", "--db", url]).status == 0)
    }

    @Test("price reprice bills unpriced usage on PostgreSQL once, with SQLite's output; bad input is exit 64 naming the flag")
    func repriceRunsOnPostgres() async throws {
        // Proves `price reprice --db postgres://…` reaches PostgresLedger.reprice: a consume
        // recorded unpriced is billed at a price set since (starting before it), exactly, with the
        // text and JSON of CLIPriceCorrectionTests; a second run is a no-op; a range that ends
        // before it starts is exit 64 naming --to, with nothing written; verify passes after.
        let url = try await PostgresTestCluster.freshDatabase()
        #expect(try runCLI(["consume", "t", "--prompt", "1000", "--completion", "100", "--model", "acme-late", "--db", url]).status == 0)
        #expect(try runCLI(["price", "set", "acme-late", "--prompt", "2", "--completion", "4", "--from", "2020-01-01", "--db", url]).status == 0)
        let backwards = try runCLI(["price", "reprice", "--model", "acme-late", "--from", "2100-01-01", "--to", "2020-01-01", "--db", url])
        #expect(backwards.status == 64 && backwards.stderr.contains("invalid --to: must not be before from"), "\(backwards)")
        let range = ["--model", "acme-late", "--from", "2020-01-01", "--to", "2100-01-01", "--db", url]
        // 1,000 × 2,000 + 100 × 4,000 nano-dollars.
        let repriced = try runCLI(["price", "reprice"] + range)
        #expect(repriced.status == 0 && repriced.stdout == "repriced 1 consume: $0.0024; 0 consumes still unpriced\n", "\(repriced)")
        let again = try runCLI(["price", "reprice", "--json"] + range)
        #expect(again.stdout == #"{"repriced":0,"cost":0,"costNanos":0,"unpriced":0,"complete":true}"# + "\n", "\(again)")
        let usage = try runCLI(["usage", "--model", "acme-late", "--db", url])
        #expect(usage.stdout == "model acme-late: 1100 tokens (prompt 1000, completion 100) in 1 request, cost $0.0024\n", "\(usage)")
        let verified = try runCLI(["verify", "--db", url])
        #expect(verified.status == 0, "\(verified)")
    }

    @Test("import records an export into PostgreSQL as into a ledger file: the same usage, once, and verify passes")
    func importRunsOnPostgres() async throws {
        // Proves `import --db postgres://…` reaches PostgresLedger.importConsumes: the same export
        // imported into a fresh file and a fresh database prints the same usage and rollups;
        // running it again on the database records nothing (every line skipped); a bad line is
        // exit 64 naming it, with nothing of its batch written; verify passes after.
        let url = try await PostgresTestCluster.freshDatabase()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pg-import-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = folder.appendingPathComponent("source.db").path
        let target = folder.appendingPathComponent("target.db").path
        for (thread, agent, model, prompt) in [("t1", "a", "gpt-4o", "100"), ("t2", "b", "gpt-4o-mini", "250"), ("t1", "a", "acme-x", "40")] {
            let recorded = try runCLI(["consume", thread, "--prompt", prompt, "--completion", "7", "--agent", agent, "--model", model, "--meta", "org_id=acme", "--db", source])
            #expect(recorded.status == 0, "\(recorded)")
        }
        let export = folder.appendingPathComponent("events.ndjson").path
        let exported = try runCLI(["export", "--format", "ndjson", "--db", source])
        try exported.stdout.write(toFile: export, atomically: true, encoding: .utf8)
        for db in [target, url] {
            let imported = try runCLI(["import", export, "--json", "--db", db])
            #expect(imported.stdout == #"{"imported":3,"skipped":0,"batches":1}"# + "\n", "\(db): \(imported)")
        }
        for reading in [["usage"], ["usage", "--agent", "a"], ["usage", "--model", "acme-x"], ["export", "--group-by", "agent", "--format", "csv"]] {
            let onFile = try runCLI(reading + ["--db", target])
            let onDatabase = try runCLI(reading + ["--db", url])
            #expect(onFile.status == 0 && onDatabase.stdout == onFile.stdout, "\(reading): \(onFile.stdout) \(onDatabase.stdout)")
        }
        let again = try runCLI(["import", export, "--json", "--db", url])
        #expect(again.stdout == #"{"imported":0,"skipped":3,"batches":1}"# + "\n", "\(again)")
        let bad = folder.appendingPathComponent("bad.ndjson").path
        try #"{"kind":"consume","id":900,"threadId":"t9","promptTokens":-1,"completionTokens":0,"timestamp":"2026-01-01T00:00:00Z"}"#
            .write(toFile: bad, atomically: true, encoding: .utf8)
        let refused = try runCLI(["import", bad, "--db", url])
        #expect(refused.status == 64 && refused.stderr.contains("on line 1"), "\(refused)")
        #expect(try runCLI(["usage", "t9", "--db", url]).status == 4)
        #expect(try runCLI(["verify", "--db", url]).status == 0)
    }
}
