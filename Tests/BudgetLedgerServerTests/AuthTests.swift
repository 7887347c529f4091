import BudgetLedger
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

@Suite("Bearer token and bind rules")
struct AuthTests {
    static let token = "s3cret-token"

    @Test func withATokenEveryEndpointButHealthzRequiresIt() async throws {
        // Proves: without the header, with a wrong token, or with another scheme, a guarded
        // endpoint (and an unknown route) answers 401; /healthz answers without it.
        try await withServer(token: Self.token) { client, _ in
            let missing = try await client.get("/api/v1/usage")
            #expect(missing.status == .unauthorized)
            #expect(missing.headers[.wwwAuthenticate] == "Bearer")
            #expect(
                missing.text == errorBody("unauthorized", "this endpoint requires Authorization: Bearer TOKEN"))
            for header in ["Bearer wrong", "Bearer \(Self.token)x", "Basic \(Self.token)", "Bearer ", Self.token] {
                let response = try await client.get("/api/v1/usage", headers: [.authorization: header])
                #expect(response.status == .unauthorized, "\(header)")
            }
            #expect(try await client.get("/api/v1/nothing").status == .unauthorized)
            #expect(try await client.get("/metrics").status == .unauthorized)
            #expect(try await client.get("/openapi.yaml").status == .unauthorized)
            let health = try await client.get("/healthz")
            #expect(health.status == .ok)
            #expect(health.text == #"{"status":"ok","version":"\#(Ledger.version)"}"#)
        }
    }

    @Test func theRightTokenIsAccepted() async throws {
        // Proves: "Bearer TOKEN" (scheme in any case) passes, and the request is then served.
        try await withServer(token: Self.token) { client, _ in
            for scheme in ["Bearer", "bearer", "BEARER"] {
                let response = try await client.get("/api/v1/usage", headers: [.authorization: "\(scheme) \(Self.token)"])
                #expect(response.status == .ok, "\(scheme)")
            }
            let unknown = try await client.get("/api/v1/nothing", headers: [.authorization: "Bearer \(Self.token)"])
            #expect(unknown.status == .notFound)
        }
    }

    @Test func withoutATokenTheAPIIsOpen() async throws {
        // Proves: a loopback server without a token serves guarded endpoints without a header.
        try await withServer { client, _ in
            let response = try await client.get("/api/v1/usage")
            #expect(response.status == .ok)
        }
    }

    @Test func tokensCompareOnlyEqualWhenEqual() {
        // Proves: the constant-time comparison answers exactly byte equality, lengths included.
        let equal = BearerTokenMiddleware<BasicRequestContext>.constantTimeEqual
        #expect(equal(Array("abc".utf8), Array("abc".utf8)))
        #expect(!equal(Array("abc".utf8), Array("abd".utf8)))
        #expect(!equal(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!equal(Array("".utf8), Array("a".utf8)))
        #expect(equal([], []))
    }

    @Test(arguments: ["0.0.0.0", "192.168.1.10", "::", "example.com"])
    func aNonLoopbackHostNeedsAToken(_ host: String) throws {
        // Proves: the configuration refuses a non-loopback bind without a token, and accepts it with one.
        let open = ServerConfiguration(databasePath: "/nonexistent", host: host)
        #expect(throws: ServerConfigurationError.self) { try open.validate() }
        try ServerConfiguration(databasePath: "/nonexistent", host: host, token: "t").validate()
    }

    @Test(arguments: ["127.0.0.1", "127.1.2.3", "localhost", "::1"])
    func loopbackHostsNeedNoToken(_ host: String) throws {
        // Proves: every loopback spelling is accepted without a token.
        try ServerConfiguration(databasePath: "/nonexistent", host: host).validate()
    }

    @Test func buildingAnApplicationChecksTheConfigurationBeforeOpeningTheLedger() throws {
        // Proves: buildApplication refuses a non-loopback host without a token and creates no file.
        let folder = try ScratchFolder()
        defer { folder.remove() }
        #expect(throws: ServerConfigurationError.self) {
            _ = try buildApplication(ServerConfiguration(databasePath: folder.databasePath, host: "0.0.0.0"))
        }
        #expect(!FileManager.default.fileExists(atPath: folder.databasePath))
    }

    @Test func serveRefusesANonLoopbackHostWithoutATokenWithExit64() async throws {
        // Proves: `budget-ledger serve --host 0.0.0.0` without a token exits 64 with a clear
        // message, before creating the ledger; so does a port out of range.
        let folder = try ScratchFolder()
        defer { folder.remove() }
        let refused = try await CLIProcess.run(["serve", "--db", folder.databasePath, "--host", "0.0.0.0", "--port", "0"])
        #expect(refused.status == 64, "\(refused)")
        #expect(refused.stderr.contains("token"), "\(refused)")
        #expect(!FileManager.default.fileExists(atPath: folder.databasePath))
        let badPort = try await CLIProcess.run(["serve", "--db", folder.databasePath, "--port", "70000"])
        #expect(badPort.status == 64, "\(badPort)")
    }
}
