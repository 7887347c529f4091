import AsyncHTTPClient
import BudgetLedger
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

/// Runs `body` on a thread of its own, so a blocking wait never holds a cooperative thread.
func blocking<Result: Sendable>(_ body: @escaping @Sendable () -> Result) async -> Result {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: body()) }
    }
}

extension CLIProcess {
    static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> ProcessOutput {
        let process = try CLIProcess(arguments, environment: environment)
        return await blocking { process.wait() }
    }
}

/// One request to a live server through AsyncHTTPClient: a POST of `json`, or a GET without it.
func fetch(_ url: String, token: String? = nil, json: String? = nil) async throws -> (status: UInt, body: String) {
    var request = HTTPClientRequest(url: url)
    request.method = json == nil ? .GET : .POST
    if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
    if let json { request.body = .bytes(ByteBuffer(string: json)) }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
    let body = try await response.body.collect(upTo: 64 << 20)
    return (response.status.code, String(buffer: body))
}

@Suite("A real port, a real process")
struct LiveServerTests {
    @Test func theApplicationServesOnAPortTheSystemChose() async throws {
        // Proves: the application binds a real port when asked for port 0 and serves the API
        // over it, token checks included.
        try await withServer(token: "live-token", testing: .live) { client, folder in
            let port = try #require(client.port)
            #expect(port > 0 && port != ServerConfiguration.defaultPort)
            let headers: HTTPFields = [.authorization: "Bearer live-token"]
            #expect(try await client.get("/api/v1/usage").status == .unauthorized)
            let consumed = try await client.post("/api/v1/threads/live/consume", json: #"{"promptTokens":12}"#, headers: headers)
            #expect(consumed.status == .ok)
            let budget = try await client.get("/api/v1/usage/threads/live", headers: headers)
            #expect(int64(try budget.object()["totalTokens"]) == 12)
            #expect(try folder.withLedger { try $0.usage("live") }?.totalTokens == 12)
        }
    }

    @Test(arguments: [SIGTERM, SIGINT])
    func serveFinishesTheRequestInFlightAndExits0OnASignal(_ signal: Int32) async throws {
        // Proves: `budget-ledger serve --port 0` prints the URL it listens on; on SIGTERM or
        // SIGINT sent while a large export is mid-stream, the export still arrives whole, the
        // process exits 0, and the ledger it closed is consistent and holds what was written.
        let folder = try ScratchFolder()
        defer { folder.remove() }
        let eventCount = 20_000
        try seedEvents(eventCount, in: folder)
        let token = "signal-token"
        let server = try CLIProcess(
            ["serve", "--db", folder.databasePath, "--port", "0"], environment: ["BUDGET_LEDGER_TOKEN": token])
        defer { if server.isRunning { server.signal(SIGKILL) } }
        let firstLine = await blocking { server.firstStdoutLine() }
        let line = try #require(firstLine, "serve printed no URL")
        let base = try #require(line.wholeMatch(of: /listening on (http:\/\/127\.0\.0\.1:\d+)/)?.1).description

        let consumed = try await fetch(
            "\(base)/api/v1/threads/before-signal/consume", token: token, json: #"{"promptTokens":7}"#)
        #expect(consumed.status == 200, "\(consumed.body)")
        #expect(try await fetch("\(base)/healthz").status == 200)

        var request = HTTPClientRequest(url: "\(base)/api/v1/usage/export?format=csv")
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
        #expect(response.status.code == 200)
        var body = response.body.makeAsyncIterator()
        var received = try #require(try await body.next(), "the export sent no bytes")
        // The response has started: this request is in flight when the signal arrives.
        server.signal(signal)
        while var chunk = try await body.next() {
            received.writeBuffer(&chunk)
        }
        let lines = String(buffer: received).split(separator: "\r\n")
        #expect(lines.count == eventCount + 2)  // the header, the seeded events, the one consumed above

        let exit = await blocking { server.wait() }
        #expect(exit.status == 0, "\(exit)")
        let (budget, report) = try folder.withLedger { ledger in (try ledger.usage("before-signal"), try ledger.verify()) }
        #expect(budget?.totalTokens == 7)
        #expect(report.isConsistent, "\(report.problems)")
    }

    /// Writes `count` consume events quickly (no fsync per commit: the durability under test is the server's).
    private func seedEvents(_ count: Int, in folder: ScratchFolder) throws {
        let ledger = try Ledger(path: folder.databasePath, configuration: .init(synchronous: .normal))
        defer { ledger.close() }
        for index in 0..<count {
            try ledger.consume(
                "seed-\(index % 13)", promptTokens: Int64(index), completionTokens: 3,
                usage: UsageDetails(agentID: "seeding-agent", model: "seed-model", latencyMilliseconds: 10))
        }
    }
}
