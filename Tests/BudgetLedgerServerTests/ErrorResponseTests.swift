import BudgetLedger
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Synchronization
import Testing

@testable import BudgetLedgerServer

/// What a test log handler saw: one entry per log call, the logger's metadata merged in.
final class CapturedLog: Sendable {
    struct Entry: Sendable {
        let level: Logger.Level
        let message: String
        let metadata: [String: String]
    }

    private let entries = Mutex<[Entry]>([])

    /// A logger at debug level whose every entry lands here.
    var logger: Logger {
        var logger = Logger(label: "budget-ledger-tests-captured") { _ in CapturingLogHandler(log: self) }
        logger.logLevel = .debug
        return logger
    }

    var all: [Entry] { entries.withLock { $0 } }

    func append(_ entry: Entry) {
        entries.withLock { $0.append(entry) }
    }
}

struct CapturingLogHandler: LogHandler {
    let log: CapturedLog
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        log.append(.init(level: event.level, message: "\(event.message)", metadata: merged.mapValues { "\($0)" }))
    }
}

@Suite("Server failures tell the client nothing but a request id; wrong methods are 405")
struct ErrorResponseTests {
    /// Runs `body` against the application built around `ledger` (which it closes), logging into `log`.
    func serve(
        _ ledger: Ledger, log: CapturedLog, token: String? = nil,
        _ body: @Sendable (any TestClientProtocol) async throws -> Void
    ) async throws {
        let app = buildApplication(
            ServerConfiguration(databasePath: ledger.path, port: 0, token: token), ledger: ledger, logger: log.logger)
        try await app.test(.router, body)
    }

    /// Checks a 500 answer: the body is exactly {error, detail, requestId} with no word of the
    /// server's internals, the id is the X-Request-Id header, and the log has the whole error
    /// (with `mustLog` in it) under that id.
    func expectOpaqueServerError(
        _ response: TestResponse, log: CapturedLog, internals: [String], mustLog: String
    ) throws {
        #expect(response.status == .internalServerError)
        let object = try response.object()
        #expect(Set(object.keys) == ["error", "detail", "requestId"], "\(response.text)")
        #expect(object["error"] as? String == "internal error")
        let requestID = try #require(object["requestId"] as? String)
        #expect(!requestID.isEmpty)
        #expect(response.headers[.requestID] == requestID)
        for word in internals {
            #expect(!response.text.localizedCaseInsensitiveContains(word), "\(word) in \(response.text)")
        }
        let logged = log.all.filter { $0.metadata["requestId"] == requestID }
        #expect(logged.count == 1, "\(log.all)")
        let entry = try #require(logged.first)
        #expect(entry.level == .error)
        #expect(entry.metadata["hb.request.id"] == requestID)
        #expect(entry.metadata["error"]?.contains(mustLog) == true, "\(entry.metadata)")
    }

    @Test func aFullDiskIsA500WithoutPathOrSQLAndTheLogHasBoth() async throws {
        // Proves: a database failure on the write path (SQLite's "disk full", from a capped
        // ledger) answers 500 {error, detail, requestId} without the ledger's path, SQLite's
        // message or the SQL, and the server's log holds all three under that request id.
        let folder = try ScratchFolder()
        defer { folder.remove() }
        try folder.withLedger { _ in }
        let pages = try #require(try FileManager.default.attributesOfItem(atPath: folder.databasePath)[.size] as? Int) / 4096
        let ledger = try Ledger(path: folder.databasePath, configuration: .init(maxPageCount: Int64(pages + 4)))
        let log = CapturedLog()
        try await serve(ledger, log: log) { client in
            let metadata = "{\"note\":\"\(String(repeating: "x", count: 12_000))\"}"
            var failure: TestResponse?
            for attempt in 1...200 where failure == nil {
                let response = try await client.post(
                    "/api/v1/threads/t/consume", json: #"{"promptTokens":1,"idempotencyKey":"k\#(attempt)","metadata":\#(metadata)}"#)
                if response.status != .ok { failure = response }
            }
            let response = try #require(failure, "the capped ledger never filled up")
            try expectOpaqueServerError(
                response, log: log, internals: [folder.databasePath, "ledger.db", "SQLite", "INSERT", "SELECT", "full"],
                mustLog: folder.databasePath)
            let entry = try #require(log.all.first { $0.metadata["requestId"] == response.headers[.requestID] })
            #expect(entry.metadata["error"]?.contains("SQLite error") == true, "\(entry.metadata)")
            #expect(entry.metadata["error"]?.contains("INSERT") == true, "\(entry.metadata)")
        }
    }

    @Test func aClosedLedgerIsA500() async throws {
        // Proves: with the ledger closed under the server, a read answers the opaque 500, logged
        // once under its request id with the ledger's own words.
        let folder = try ScratchFolder()
        defer { folder.remove() }
        let ledger = try Ledger(path: folder.databasePath)
        ledger.close()
        let log = CapturedLog()
        try await serve(ledger, log: log) { client in
            let read = try await client.get("/api/v1/usage")
            try expectOpaqueServerError(read, log: log, internals: [folder.databasePath, "closed"], mustLog: "closed")
        }
    }

    @Test func anExportThatCannotReadTheLedgerIsA500BeforeAnyByte() async throws {
        // Proves: an export whose reader fails (its own connection finds no ledger at the path:
        // the files were deleted under the server) answers the opaque JSON 500 before any byte
        // of the export, not a 200 cut short, and the log names the file and the SQL.
        let folder = try ScratchFolder()
        defer { folder.remove() }
        let ledger = try Ledger(path: folder.databasePath)
        let log = CapturedLog()
        try await serve(ledger, log: log) { client in
            for suffix in ["", "-wal", "-shm"] {
                try? FileManager.default.removeItem(atPath: folder.databasePath + suffix)
            }
            let export = try await client.get("/api/v1/usage/export?format=csv")
            try expectOpaqueServerError(
                export, log: log, internals: [folder.databasePath, "SQLite", "database", "SELECT"],
                mustLog: folder.databasePath)
            #expect(export.headers[.contentType] == "application/json")
            let entry = try #require(log.all.first { $0.metadata["requestId"] == export.headers[.requestID] })
            #expect(entry.metadata["error"]?.contains("SELECT") == true, "\(entry.metadata)")
        }
    }

    @Test func everyResponseCarriesARequestID() async throws {
        // Proves: successes and client errors carry X-Request-Id too, a different one per request.
        try await withServer { client, _ in
            let ok = try await client.get("/api/v1/usage")
            let missing = try await client.get("/api/v1/usage/threads/nobody")
            #expect(ok.status == .ok && missing.status == .notFound)
            let ids = [ok, missing].compactMap { $0.headers[.requestID] }
            #expect(ids.count == 2 && ids[0] != ids[1], "\(ids)")
        }
    }

    @Test(arguments: [
        (HTTPRequest.Method.delete, "/api/v1/usage", "GET"),
        (.post, "/api/v1/threads/t1", "DELETE"),
        (.get, "/api/v1/threads/t1/consume", "POST"),
        (.put, "/api/v1/reservations/7/settle", "POST"),
        (.options, "/api/v1/usage/threads", "GET"),
        (HTTPRequest.Method("TRACE")!, "/metrics", "GET"),
        (.post, "//api//v1/usage/", "GET"),
    ])
    func aKnownPathWithAnotherMethodIs405WithAllow(_ method: HTTPRequest.Method, _ path: String, _ allow: String) async throws {
        // Proves: a method a served path does not take is 405 with Allow listing exactly the
        // path's methods (matched as the router matches, empty segments skipped) and the JSON
        // error body; a path no route has stays 404.
        try await withServer(token: AuthTests.token) { client, _ in
            let headers: HTTPFields = [.authorization: "Bearer \(AuthTests.token)"]
            let response = try await client.send(method, path, headers: headers)
            #expect(response.status == .methodNotAllowed, "\(response.text)")
            #expect(response.headers[.allow] == allow)
            #expect(try response.object()["error"] as? String == "method not allowed")
            #expect(try response.detail().contains("allowed: \(allow)"))
            let unknown = try await client.send(method, "/api/v1/no-such-thing", headers: headers)
            #expect(unknown.status == .notFound)
        }
    }

    @Test func aWrongMethodOnHealthzIs405WithoutAToken() async throws {
        // Proves: /healthz needs no token for any method: a wrong one gets its 405, not a 401,
        // while a wrong method on a guarded path without the token is still a 401.
        try await withServer(token: AuthTests.token) { client, _ in
            let health = try await client.send(.delete, "/healthz")
            #expect(health.status == .methodNotAllowed)
            #expect(health.headers[.allow] == "GET")
            #expect(try await client.send(.delete, "/api/v1/usage").status == .unauthorized)
        }
    }

    @Test func theAllowListOfEveryServedPathIsItsMethods() {
        // Proves: for every route, the methods the 405 would list are exactly the routes on
        // that path template (so Allow agrees with the router and the OpenAPI document).
        for endpoint in APIRoutes.all {
            let concrete = endpoint.path.replacing("{id}", with: "x").replacing("{model}", with: "x")
            let expected = Set(APIRoutes.all.filter { $0.path == endpoint.path }.map(\.method.rawValue))
            #expect(Set(APIRoutes.methods(servedAt: concrete).map(\.rawValue)) == expected, "\(endpoint)")
        }
    }
}
