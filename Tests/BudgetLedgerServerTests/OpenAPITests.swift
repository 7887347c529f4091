import BudgetLedger
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

/// The operations of an OpenAPI document, read with simple line parsing: paths are the keys
/// indented two spaces under `paths:`, methods the keys indented four under a path, and an
/// operation is planned when it has `x-budget-ledger-planned: true`.
struct DocumentedOperations {
    var served: Set<Endpoint> = []
    var planned: Set<Endpoint> = []

    init(yaml: String) {
        var inPaths = false
        var path: String?
        var operation: Endpoint?
        for line in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" ") && !line.isEmpty {
                inPaths = line == "paths:"
                path = nil
                operation = nil
                continue
            }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), !line.hasPrefix("   "), line.hasSuffix(":") {
                path = String(line.dropFirst(2).dropLast())
                operation = nil
            } else if let path, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                let method = HTTPRequest.Method(rawValue: line.trimmingCharacters(in: .whitespaces).dropLast().uppercased())
                operation = method.map { Endpoint(method: $0, path: path) }
                if let operation { served.insert(operation) }
            } else if let current = operation, line.trimmingCharacters(in: .whitespaces) == "x-budget-ledger-planned: true" {
                served.remove(current)
                planned.insert(current)
            }
        }
    }
}

@Suite("The OpenAPI document and the routes")
struct OpenAPITests {
    static let reservationEndpoints: Set<Endpoint> = [
        .post("/api/v1/threads/{id}/reserve"), .post("/api/v1/reservations/{id}/settle"),
        .post("/api/v1/reservations/{id}/release"),
    ]

    @Test func theDocumentListsExactlyTheRoutesTheRouterServes() {
        // Proves: every served route is documented and every documented operation is served.
        let documented = DocumentedOperations(yaml: OpenAPIDocument.yaml)
        let routes = Set(APIRoutes.all)
        #expect(routes.count == APIRoutes.all.count, "a route is listed twice")
        #expect(documented.served.subtracting(routes).isEmpty, "documented, not served: \(documented.served.subtracting(routes))")
        #expect(routes.subtracting(documented.served).isEmpty, "served, not documented: \(routes.subtracting(documented.served))")
        #expect(documented.planned.isEmpty)
        #expect(Self.reservationEndpoints.isSubset(of: documented.served))
        #expect(documented.served.count == 25)
    }

    @Test func everyListedRouteIsServed() async throws {
        // Proves: each route of the list reaches a handler (whatever it answers, it is not the
        // router's "No route"), while a path outside the list does get "No route".
        try await withServer(token: AuthTests.token) { client, _ in
            let headers: HTTPFields = [.authorization: "Bearer \(AuthTests.token)"]
            for endpoint in APIRoutes.all {
                let uri = endpoint.path.replacing("{id}", with: "probe").replacing("{model}", with: "probe")
                let response = try await client.send(endpoint.method, uri, headers: headers)
                #expect(response.status != .unauthorized, "\(endpoint)")
                #expect(!response.text.contains("No route for"), "\(endpoint): \(response.text)")
            }
            let outside = try await client.send(.post, "/api/v1/threads/probe/no-such-operation", headers: headers)
            #expect(try outside.detail().hasPrefix("No route for"))
        }
    }

    @Test func theServedDocumentIsTheSourceFile() async throws {
        // Proves: /openapi.yaml serves the document compiled in, and it is the file in the source
        // tree (the binary never reads the checkout, so a stale build would show here).
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/BudgetLedgerServer/openapi.yaml")
        let onDisk = try String(contentsOf: source, encoding: .utf8)
        try await withServer { client, _ in
            let response = try await client.get("/openapi.yaml")
            #expect(response.status == .ok)
            #expect(response.headers[.contentType] == "application/yaml")
            #expect(response.text == onDisk)
            #expect(response.text.hasPrefix("openapi: 3."))
        }
    }
}
