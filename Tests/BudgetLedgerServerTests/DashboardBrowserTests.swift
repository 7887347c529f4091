import BudgetLedger
import Foundation
import Synchronization
import Testing

/// Headless Chromium (Debian's `chromium`, installed by `make deps`), run as a child process
/// under `timeout`, which kills its whole process group when it overstays.
enum Chromium {
    /// `$BUDGET_LEDGER_CHROMIUM`, else `chromium` or `chromium-browser` on the PATH.
    static func require() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["BUDGET_LEDGER_CHROMIUM"], !path.isEmpty { return path }
        let folders = (environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        let found = ["chromium", "chromium-browser"].lazy.flatMap { name in folders.map { "\($0)/\(name)" } }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
        return try #require(found, "chromium is missing: `make deps` installs it (apt-get install chromium)")
    }

    /// Runs Chromium headless on `url` with `arguments` (`--dump-dom`, `--screenshot=…`) and a
    /// profile of its own, letting the page's scripts run for `virtualMilliseconds` of virtual
    /// time; returns what it printed on stdout.
    static func run(_ arguments: [String], url: String, virtualMilliseconds: Int = 4_000) async throws -> String {
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("budget-ledger-chromium-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: profile) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        // As root Chromium needs --no-sandbox; a fresh --user-data-dir keeps runs apart.
        process.arguments =
            ["-k", "10", "120", try require(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--user-data-dir=\(profile.path)", "--virtual-time-budget=\(virtualMilliseconds)"] + arguments + [url]
        let (stdout, stderr) = (Pipe(), Pipe())
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let (output, errors) = await blocking {
            // Read both pipes to their ends, stderr on a thread of its own, so neither fills up.
            let errorsRead = Mutex(Data())
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                let data = stderr.fileHandleForReading.readDataToEndOfFile()
                errorsRead.withLock { $0 = data }
                done.signal()
            }
            let output = stdout.fileHandleForReading.readDataToEndOfFile()
            done.wait()
            process.waitUntilExit()
            return (String(decoding: output, as: UTF8.self), errorsRead.withLock { String(decoding: $0, as: UTF8.self) })
        }
        try #require(process.terminationStatus == 0, "chromium exited \(process.terminationStatus): \(errors.suffix(2_000))")
        return output
    }
}

/// The DOM Chromium printed, read by the stable hooks the page puts on it (`id`, `data-*`).
struct RenderedDOM {
    let html: String

    /// The attributes of the element whose id is `id`; nil when there is none.
    func attributes(ofID id: String) -> [String: String]? {
        guard let idRange = html.range(of: " id=\"\(id)\""),
            let start = html[..<idRange.lowerBound].lastIndex(of: "<"),
            let end = html[idRange.upperBound...].firstIndex(of: ">")
        else { return nil }
        var attributes: [String: String] = [:]
        for match in html[start...end].matches(of: /([a-zA-Z-]+)(?:="([^"]*)")?/).dropFirst() {
            attributes[String(match.1)] = match.2.map(String.init) ?? ""
        }
        return attributes
    }

    /// The text right after the opening tag of the element whose id is `id`, to the next tag.
    func text(ofID id: String) -> String? {
        guard let idRange = html.range(of: " id=\"\(id)\""), let end = html[idRange.upperBound...].firstIndex(of: ">")
        else { return nil }
        let rest = html[html.index(after: end)...]
        return String(rest.prefix { $0 != "<" })
    }

    /// The markup of the thread list (`#thread-list`).
    var threadList: Substring {
        guard let start = html.range(of: " id=\"thread-list\""), let end = html[start.upperBound...].range(of: "</ol>")
        else { return "" }
        return html[start.upperBound..<end.lowerBound]
    }

    /// The `data-thread-id` and `data-level` of each thread of the list, in the order shown.
    var threads: [(id: String, level: String)] {
        threadList.matches(of: /<li class="thread" data-thread-id="([^"]*)"[^>]*data-level="([^"]*)"/)
            .map { (id: String($0.1), level: String($0.2)) }
    }

    /// The text of every `.flag` of the thread list, in order.
    var flags: [String] {
        threadList.matches(of: /<span class="flag">([^<]*)<\/span>/).map { String($0.1) }
    }
}

/// A clock the seeding ledger reads: the real time moved back by an offset, so that seeded
/// usage lands on earlier UTC days.
final class SeedClock: Sendable {
    private let offsetMicroseconds = Atomic<Int64>(0)
    static let dayMicroseconds: Int64 = 86_400_000_000

    func set(daysAgo: Int64) { offsetMicroseconds.store(daysAgo * Self.dayMicroseconds, ordering: .relaxed) }
    func now() -> Int64 { Ledger.systemClockMicroseconds() - offsetMicroseconds.load(ordering: .relaxed) }
}

/// Known data for the page, with the figures it must show.
enum DashboardSeed {
    static let allTimeTokens: Int64 = 9_480
    static let allTimeRequests: Int64 = 7
    static let todayTokens: Int64 = 1_480
    /// Days with usage among the last 30 (today, 3 and 10 days ago; 40 days ago is outside).
    static let dayPoints = 3
    static let threadOrder = ["charlie", "bravo", "alpha", "delta", "echo"]

    /// Seeds a fresh ledger file at `path`: gpt-4o priced, "mystery" not; five threads, two of them
    /// exhausted (one past its max), one at 76 %, one holding 2,000 tokens; usage on four days.
    static func seed(_ path: String, extraThreads: Int = 0) throws {
        let clock = SeedClock()
        let ledger = try Ledger(
            path: path, configuration: .init(synchronous: .normal, clock: { clock.now() }))
        defer { ledger.close() }
        clock.set(daysAgo: 40)
        try ledger.setPrice(
            model: "gpt-4o", promptUSDPerMillion: "2.5", completionUSDPerMillion: "10",
            effectiveFrom: clock.now() - 20 * SeedClock.dayMicroseconds)
        _ = try ledger.setLimit("echo", maxTokens: 1_000_000)
        let researcher = UsageDetails(agentID: "researcher", model: "gpt-4o")
        try ledger.consume("echo", promptTokens: 5_000, usage: researcher)
        // Days in order, so that timestamps never go back: echo's usage and the extra threads'.
        for daysAgo in stride(from: Int64(28), through: 1, by: -1) {
            clock.set(daysAgo: daysAgo)
            if daysAgo == 10 { try ledger.consume("echo", promptTokens: 2_000, usage: researcher) }
            if daysAgo == 3 { try ledger.consume("echo", promptTokens: 1_000, usage: researcher) }
            for extra in stride(from: Int(daysAgo), to: extraThreads, by: 28) {
                let thread = "worker-\(extra)"
                _ = try ledger.setLimit(thread, maxTokens: 10_000)
                try ledger.consume(
                    thread, promptTokens: Int64(extra * 97 % 10_500), completionTokens: 40,
                    usage: UsageDetails(
                        agentID: "agent-\(extra % 5)", model: extra % 4 == 0 ? "claude-x" : "gpt-4o", latencyMilliseconds: 80))
            }
        }
        clock.set(daysAgo: 0)
        for (thread, max) in [("alpha", 1_000), ("bravo", 500), ("charlie", 100), ("delta", 10_000)] as [(String, Int64)] {
            _ = try ledger.setLimit(thread, maxTokens: max)
        }
        try ledger.consume(
            "alpha", promptTokens: 700, completionTokens: 60,
            usage: UsageDetails(agentID: "planner", model: "gpt-4o", latencyMilliseconds: 100))
        try ledger.consume(
            "bravo", promptTokens: 500, usage: UsageDetails(agentID: "coder", model: "mystery", latencyMilliseconds: 300))
        try ledger.consume("charlie", promptTokens: 120, usage: UsageDetails(agentID: "planner", model: "gpt-4o"))
        try ledger.consume("delta", promptTokens: 100, usage: UsageDetails(agentID: "coder", model: "gpt-4o"))
        _ = try ledger.reserve("delta", tokens: 2_000, ttlSeconds: 3_600)
        // Set after today's calls: the day's spend so far (alpha 760 + charlie 120) counts.
        try ledger.setBudget(BudgetScope(parsing: "agent:planner"), period: .day, maxTokens: 1_000)
    }
}

/// `budget-ledger serve` on a free loopback port, on the ledger file at `databasePath`.
func withServeProcess<Value>(
    databasePath: String, token: String? = nil, _ body: (String) async throws -> Value
) async throws -> Value {
    let server = try CLIProcess(
        ["serve", "--db", databasePath, "--port", "0"], environment: token.map { ["BUDGET_LEDGER_TOKEN": $0] } ?? [:])
    defer { if server.isRunning { server.signal(SIGKILL) } }
    let firstLine = await blocking { server.firstStdoutLine() }
    let line = try #require(firstLine, "serve printed no URL")
    let base = try #require(line.wholeMatch(of: /listening on (http:\/\/127\.0\.0\.1:\d+)/)?.1).description
    let value = try await body(base)
    server.signal(SIGTERM)
    let exit = await blocking { server.wait() }
    #expect(exit.status == 0, "\(exit)")
    return value
}

@Suite("The dashboard in a real browser", .serialized)
struct DashboardBrowserTests {
    @Test func theRenderedPageShowsTheLedgersFigures() async throws {
        // Proves: in headless Chromium, once its scripts ran against the real server, the page
        // shows the seeded ledger: exact all-time and today totals (cost partly unpriced, never
        // $0), threads exhausted first and flagged in text, one chart bar per day with usage in
        // the last 30, the held tokens, and the scope budget with its day's spend.
        let folder = try ScratchFolder()
        defer { folder.remove() }
        try DashboardSeed.seed(folder.databasePath)
        let dom = try await withServeProcess(databasePath: folder.databasePath) { base in
            RenderedDOM(html: try await Chromium.run(["--dump-dom"], url: "\(base)/dashboard"))
        }
        #expect(dom.attributes(ofID: "error-banner")?["hidden"] != nil, "\(dom.text(ofID: "error-banner") ?? "")")
        #expect(dom.html.contains("<body data-state=\"ok\""), "\(dom.html.prefix(3_000))")
        let expected: [(String, String, String)] = [
            ("total-tokens", "\(DashboardSeed.allTimeTokens)", "9.5k"),
            ("total-requests", "\(DashboardSeed.allTimeRequests)", "7"),
            ("total-cost", "0.0229", "$0.0229 + unpriced"),
            ("total-unpriced", "1", "1"),
            // bravo's 500 prompt tokens of "mystery", the one model without a price.
            ("total-unpriced-tokens", "500", "500"),
            ("total-latency", "200", "200 ms"),
            ("total-threads", "5", "5"),
            ("today-tokens", "\(DashboardSeed.todayTokens)", "1.5k"),
            ("today-requests", "4", "4"),
            ("today-cost", "0.0029", "$0.0029 + unpriced"),
            ("today-unpriced", "1", "1"),
            ("today-unpriced-tokens", "500", "500"),
        ]
        for (id, value, text) in expected {
            #expect(dom.attributes(ofID: id)?["data-value"] == value, "\(id)")
            #expect(dom.text(ofID: id) == text, "\(id)")
        }
        #expect(dom.threads.map(\.id) == DashboardSeed.threadOrder)
        #expect(dom.threads.map(\.level) == ["exhausted", "exhausted", "75", "ok", "ok"])
        #expect(dom.flags == ["EXHAUSTED", "EXHAUSTED", "≥ 75 %", "", ""])
        #expect(dom.attributes(ofID: "day-tokens-chart")?["data-points"] == "\(DashboardSeed.dayPoints)")
        #expect(dom.html.matches(of: /<rect class="bar" data-day=/).count == DashboardSeed.dayPoints)
        #expect(dom.attributes(ofID: "day-cost-chart")?["data-points"] == "\(DashboardSeed.dayPoints)")
        #expect(dom.attributes(ofID: "holds-summary")?["data-held-tokens"] == "2000")
        #expect(dom.attributes(ofID: "scope-budgets")?["hidden"] == nil)
        #expect(dom.html.contains("data-key=\"agent:planner\""), "\(dom.html)")
        #expect(dom.html.contains("880 of 1k tokens · 88 %"), "\(dom.html)")
        #expect(dom.attributes(ofID: "auth")?["hidden"] != nil)
    }

    @Test func aServerWithATokenGetsATokenPrompt() async throws {
        // Proves: against a server started with a token, the page (served without one) meets the
        // API's 401 and asks for the token with a labelled password field, showing no figures.
        let folder = try ScratchFolder()
        defer { folder.remove() }
        try DashboardSeed.seed(folder.databasePath)
        let dom = try await withServeProcess(databasePath: folder.databasePath, token: "browser-token") { base in
            RenderedDOM(html: try await Chromium.run(["--dump-dom"], url: "\(base)/"))
        }
        #expect(dom.html.contains("<body data-state=\"auth\""), "\(dom.html.prefix(3_000))")
        #expect(dom.attributes(ofID: "auth")?["hidden"] == nil)
        #expect(dom.attributes(ofID: "token-input")?["type"] == "password")
        #expect(dom.html.contains("<label for=\"token-input\">"))
        #expect(dom.attributes(ofID: "content")?["hidden"] != nil)
        #expect(dom.attributes(ofID: "total-tokens")?["data-value"] == "")
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["BUDGET_LEDGER_SCREENSHOT_DIR"] != nil))
    func screenshotsOfTheSeededPage() async throws {
        // Proves (run by `make screenshot` only): Chromium writes a PNG of the seeded page at
        // desktop width (1280) and at phone width (390) into $BUDGET_LEDGER_SCREENSHOT_DIR.
        let directory = try #require(ProcessInfo.processInfo.environment["BUDGET_LEDGER_SCREENSHOT_DIR"])
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let folder = try ScratchFolder()
        defer { folder.remove() }
        // BUDGET_LEDGER_SCREENSHOT_THREADS=10000 shows the page at scale.
        let threads = ProcessInfo.processInfo.environment["BUDGET_LEDGER_SCREENSHOT_THREADS"].flatMap { Int($0) } ?? 120
        try DashboardSeed.seed(folder.databasePath, extraThreads: min(max(threads, 0), 100_000))
        try await withServeProcess(databasePath: folder.databasePath) { base in
            for (name, size) in [("dashboard-desktop.png", "1280,2600"), ("dashboard-phone.png", "390,2400")] {
                let path = URL(fileURLWithPath: directory).appendingPathComponent(name).path
                try? FileManager.default.removeItem(atPath: path)
                _ = try await Chromium.run(
                    ["--hide-scrollbars", "--window-size=\(size)", "--screenshot=\(path)"], url: "\(base)/dashboard")
                let data = try #require(FileManager.default.contents(atPath: path), "no \(path)")
                #expect(data.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), "\(path) is not a PNG")
            }
        }
    }
}
