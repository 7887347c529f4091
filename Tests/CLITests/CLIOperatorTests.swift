import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The CLI as an operator types it (issue 14.10): a missing ledger, typos, options before the
/// subcommand, a busy port, readable events, plurals, the usage window, reading settings back.
@Suite("CLI for operators")
struct CLIOperatorTests {
    /// Every read, as typed after `budget-ledger`; `--db` goes after the first word.
    static let reads: [[String]] = [
        ["usage"], ["usage", "t"], ["threads"], ["check", "t"], ["holds"], ["price", "list"], ["events"],
        ["export", "--format", "csv"], ["verify"], ["configure"],
    ]

    @Test("A read on a missing ledger says so and what to run, exits 1, and creates no file", arguments: reads)
    func readOnMissingLedger(command: [String]) throws {
        // Proves a read typed in the wrong folder no longer answers from a new, empty ledger
        // (which left the database, its WAL and its lock files behind).
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let result = try ledger.run(command)
        #expect(result.status == 1, "\(result)")
        #expect(
            result.firstErrorLine
                == "Error: no ledger at \(ledger.databasePath); create one with: budget-ledger init --db \(ledger.databasePath)",
            "\(result)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: ledger.directory.path) == [])
    }

    @Test("A read on a missing ledger with --json prints the error as JSON too")
    func readOnMissingLedgerJSON() throws {
        // Proves a script sees the same refusal in JSON on stdout, and still nothing is created.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let result = try ledger.run("threads", "--json")
        #expect(result.status == 1, "\(result)")
        let error = try #require(try result.jsonObject()["error"] as? String)
        #expect(error.hasPrefix("no ledger at \(ledger.databasePath)"), "\(result)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: ledger.directory.path) == [])
    }

    @Test("A write on a missing ledger still creates it, and reads work afterwards")
    func writeCreatesTheLedger() throws {
        // Proves only reads changed: set-limit creates the file, then threads reads it.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "10")
        #expect(try ledger.succeed("threads", "--json").jsonObject()["count"] as? Int64 == 1)
    }

    @Test(
        "A mistyped subcommand exits 64 with the closest names",
        arguments: [
            (["consum", "t", "--prompt", "1"], "Error: unknown command 'consum' for budget-ledger; did you mean 'consume'?"),
            (["thread"], "Error: unknown command 'thread' for budget-ledger; did you mean 'threads'?"),
            (["price", "lst"], "Error: unknown command 'lst' for budget-ledger price; did you mean 'list'?"),
            (["--json", "verfy"], "Error: unknown command 'verfy' for budget-ledger; did you mean 'verify'?"),
        ])
    func didYouMean(arguments: [String], message: String) throws {
        // Proves the suggestion is made by edit distance at the level the word was typed, and
        // that nothing is created for a command that did not run.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let result = try runCLI(arguments, environment: ["BUDGET_LEDGER_DB": ledger.databasePath], in: ledger.directory)
        #expect(result.status == 64, "\(result)")
        #expect(result.firstErrorLine == message, "\(result)")
        #expect(!FileManager.default.fileExists(atPath: ledger.databasePath))
    }

    @Test("A word that is a thread id is not taken for a typo: usage rest reads the thread named rest")
    func threadNamedLikeASubcommand() throws {
        // Proves the suggestion only follows a line that did not parse: `usage rest` is a valid
        // line (exit 4, unknown thread), not a typo of `usage reset`.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("init")
        let result = try ledger.run("usage", "rest")
        #expect(result.status == 4, "\(result)")
        #expect(result.firstErrorLine == "Error: No budget found for thread: rest", "\(result)")
    }

    @Test(
        "--db and --json typed before the subcommand work as after it",
        arguments: [
            (["--db", "LEDGER", "threads"], ["threads", "--db", "LEDGER"]),
            (["--json", "--db", "LEDGER", "usage"], ["usage", "--db", "LEDGER", "--json"]),
            (["--db=LEDGER", "--json", "usage", "t"], ["usage", "t", "--db", "LEDGER", "--json"]),
            (["--db", "LEDGER", "price", "--json", "list"], ["price", "list", "--db", "LEDGER", "--json"]),
            (["--db", "LEDGER", "--json", "usage", "reset"], ["usage", "reset", "--db", "LEDGER", "--json"]),
        ])
    func globalOptionsBeforeTheSubcommand(typed: [String], canonical: [String]) throws {
        // Proves the global options are accepted where people type them, with the same output.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.consume("t", "--prompt", "7")
        let path = { (arguments: [String]) in
            arguments.map { $0.replacingOccurrences(of: "LEDGER", with: ledger.databasePath) }
        }
        let early = try runCLI(path(typed), in: ledger.directory)
        let late = try runCLI(path(canonical), in: ledger.directory)
        #expect(early.status == 0, "\(early)")
        #expect(late.status == 0, "\(late)")
        #expect(early.stdout == late.stdout)
        let defaultLedger = ledger.directory.appendingPathComponent("budget-ledger.db").path
        #expect(!FileManager.default.fileExists(atPath: defaultLedger), "--db was ignored for ./budget-ledger.db")
    }

    @Test("set-limit with a negative max is refused with the limit's message, wherever the flags are")
    func negativeMax() throws {
        // Proves `-1` is read as the max (not an unknown option) and refused by the limit check.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t", "10")
        for arguments in [["set-limit", "t", "-1"], ["set-limit", "t", "-1", "--json"], ["set-limit", "--json", "t", "-1"]] {
            let result = try ledger.run(arguments)
            #expect(result.status == 64, "\(result)")
            #expect(result.firstErrorLine == "Error: invalid N: must not be negative (got -1)", "\(result)")
        }
        #expect(try ledger.budget("t").maxTokens == 10)
    }

    @Test("serve on a port in use exits 1 naming the host and the port")
    func servePortInUse() throws {
        // Proves the bind failure names what the operator chose, not NIO's
        // `bind(descriptor:ptr:bytes:): Address already in use`.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let listener = try LoopbackListener()
        defer { listener.close() }
        let result = try ledger.run("serve", "--port", String(listener.port))
        #expect(result.status == 1, "\(result)")
        #expect(
            result.stderr.split(separator: "\n").contains {
                $0 == "Error: port \(listener.port) on 127.0.0.1 is already in use; pick another with --port"
            }, "\(result)")
    }

    @Test("serve with an empty token names the flag or the variable it came from, exits 64, creates nothing")
    func serveEmptyToken() throws {
        // Proves an empty secret (an unset deployment variable) is refused before anything is opened.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        let flag = try ledger.run("serve", "--port", "0", "--token", "")
        #expect(flag.status == 64, "\(flag)")
        #expect(flag.firstErrorLine.hasPrefix("Error: --token is empty"), "\(flag)")
        let variable = try ledger.run(["serve", "--port", "0"], environment: ["BUDGET_LEDGER_TOKEN": ""])
        #expect(variable.status == 64, "\(variable)")
        #expect(variable.firstErrorLine.hasPrefix("Error: $BUDGET_LEDGER_TOKEN is empty"), "\(variable)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: ledger.directory.path) == [])
    }

    @Test("events in text says what each event did, as an aligned table with a header when there are several")
    func eventsText() throws {
        // Proves each kind reads as what happened (today `threshold t1 0+0`), and the columns line up.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("set-limit", "t1", "1000")
        try ledger.consume("t1", "--prompt", "700", "--completion", "60", "--model", "gpt-4o")
        try ledger.succeed("reserve", "t1", "--tokens", "90")
        let result = try ledger.succeed("events")
        var lines = result.stdout.split(separator: "\n").map(String.init)
        let last = lines.popLast()
        let lastID = try #require(last)
        #expect(lastID.hasPrefix("lastId "), "\(result)")
        let header = try #require(lines.first)
        #expect(header.split(separator: " ") == ["id", "time", "kind", "thread", "what"], "\(result)")
        // Every line starts its kind, thread and what columns where the header does.
        for column in ["kind", "thread", "what"] {
            let offset = try #require(header.range(of: column)).lowerBound.utf16Offset(in: header)
            for line in lines.dropFirst() {
                let index = line.index(line.startIndex, offsetBy: offset)
                #expect(line[line.index(before: index)] == " " && line[index] != " ", "\(column) misaligned: \(result)")
            }
        }
        // Past id and time, the words of each event.
        let described = lines.dropFirst().map { $0.split(separator: " ").dropFirst(2).joined(separator: " ") }
        #expect(described.contains("limit t1 max 1000"), "\(result)")
        #expect(described.contains("consume t1 700+60 tokens gpt-4o $0.00235"), "\(result)")
        #expect(described.contains("threshold t1 75% (warning) at 760 of 1000 tokens"), "\(result)")
        #expect(described.contains { $0.hasPrefix("reserve t1 90 tokens until 20") }, "\(result)")

        let one = try ledger.succeed("events", "--limit", "1")
        let single = one.stdout.split(separator: "\n")
        #expect(single.count == 2 && !single[0].hasPrefix(" "), "one event is one line, no header: \(one)")
    }

    @Test("Counts read in the singular for one and the plural otherwise")
    func plurals() throws {
        // Proves `1 request`, `1 thread`, `1 hold` (never `1 requests`) and `2 requests`.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.consume("t", "--prompt", "5")
        let usage = try ledger.succeed("usage", "t").stdout
        #expect(usage.contains(", 1 request") && !usage.contains("1 requests"), "\(usage)")
        let threads = try ledger.succeed("threads").stdout
        #expect(threads.hasPrefix("1 thread (default max 100000 tokens)\n"), "\(threads)")
        let overview = try ledger.succeed("usage").stdout
        #expect(overview.hasPrefix("total: 5 tokens (prompt 5, completion 0) in 1 request,"), "\(overview)")
        try ledger.succeed("reserve", "t", "--tokens", "1")
        let holds = try ledger.succeed("holds").stdout
        #expect(holds.contains(" 1 token until ") && holds.hasSuffix("1 hold, 1 token held\n"), "\(holds)")
        try ledger.consume("t", "--prompt", "5")
        #expect(try ledger.succeed("usage", "t").stdout.contains(", 2 requests"))
    }

    @Test("usage reset starts a new usage window: the overview counts from zero, all-time keeps every event")
    func usageReset() throws {
        // Proves the CLI reaches the domain's resetUsageWindow, in text and JSON, and that
        // thread budgets and `usage THREAD` are unaffected.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.consume("t", "--prompt", "40")
        let text = try ledger.succeed("usage", "reset")
        #expect(text.stdout == "usage window reset: the overview counts from now on; no events were deleted\n")
        let window = try #require(try ledger.succeed("usage", "--json").jsonObject()["usage"] as? [String: Any])
        #expect((window["totals"] as? [String: Any])?["totalTokens"] as? Int64 == 0, "\(window)")
        let allTime = try #require(try ledger.succeed("usage", "--all-time", "--json").jsonObject()["usage"] as? [String: Any])
        #expect((allTime["totals"] as? [String: Any])?["totalTokens"] as? Int64 == 40, "\(allTime)")
        #expect(try ledger.budget("t").totalTokens == 40)

        try ledger.consume("t", "--prompt", "2")
        let json = try ledger.succeed("usage", "reset", "--json").jsonObject()
        #expect(json["success"] as? Bool == true, "\(json)")
        let after = try #require(try ledger.succeed("usage", "--json").jsonObject()["usage"] as? [String: Any])
        #expect((after["totals"] as? [String: Any])?["totalTokens"] as? Int64 == 0, "\(after)")
    }

    @Test("configure with no option prints the current settings and writes nothing")
    func configureReadsBack() throws {
        // Proves the default max can be read back, in text and JSON, after a change too.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed("init")
        let before = try ledger.snapshot()
        #expect(try ledger.succeed("configure").stdout == "default max per thread: 100000 tokens\n")
        #expect(try ledger.succeed("configure", "--json").stdout == #"{"defaultMaxTokens":100000}"# + "\n")
        #expect(try ledger.snapshot() == before)
        try ledger.succeed("configure", "--default-max", "1")
        #expect(try ledger.succeed("configure").stdout == "default max per thread: 1 token\n")
        #expect(try ledger.succeed("configure", "--json").jsonObject()["defaultMaxTokens"] as? Int64 == 1)
    }
}

/// A TCP socket listening on a free loopback port, so that the port is in use.
private final class LoopbackListener {
    let port: Int
    private let descriptor: Int32

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(descriptor >= 0, "socket: errno \(errno)")
        self.descriptor = descriptor
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(bound == 0 && listen(descriptor, 1) == 0, "bind/listen: errno \(errno)")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        try #require(named == 0, "getsockname: errno \(errno)")
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() {
        _ = Glibc.close(descriptor)
    }
}
