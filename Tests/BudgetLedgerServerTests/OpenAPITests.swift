import BudgetLedger
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

/// The operations of an OpenAPI document, read with simple line parsing: paths are the keys
/// indented two spaces under `paths:`, methods the keys indented four under a path, an
/// operation's `security` and response codes are the keys indented six and eight under it, and
/// an operation is planned when it has `x-budget-ledger-planned: true`.
struct DocumentedOperations {
    var served: Set<Endpoint> = []
    var planned: Set<Endpoint> = []
    /// The `security:` value of each operation that has one, as written.
    var security: [Endpoint: String] = [:]
    /// The response status codes of each operation.
    var statuses: [Endpoint: Set<String>] = [:]

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
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("  /"), !line.hasPrefix("   "), line.hasSuffix(":") {
                path = String(line.dropFirst(2).dropLast())
                operation = nil
            } else if let path, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                let method = HTTPRequest.Method(rawValue: trimmed.dropLast().uppercased())
                operation = method.map { Endpoint(method: $0, path: path) }
                if let operation { served.insert(operation) }
            } else if let current = operation, trimmed == "x-budget-ledger-planned: true" {
                served.remove(current)
                planned.insert(current)
            } else if let current = operation, line.hasPrefix("      security:") {
                security[current] = String(trimmed.dropFirst("security:".count)).trimmingCharacters(in: .whitespaces)
            } else if let current = operation, line.hasPrefix("        \""), !line.hasPrefix("         ") {
                statuses[current, default: []].insert(String(trimmed.dropFirst().prefix(3)))
            }
        }
    }
}

/// The numeric bounds of an OpenAPI document, read line by line: each `minimum:` or `maximum:`
/// belongs to the key of its line (`promptTokens: {…, maximum: N}`), or, on a parameter's
/// `schema:` line, to the parameter's `name`.
struct DocumentedBounds {
    struct Bound: Equatable, CustomStringConvertible {
        var minimum: Int64?
        var maximum: Int64?
        var description: String { "\(minimum.map(String.init) ?? "-")…\(maximum.map(String.init) ?? "-")" }
    }

    var bounds: [(owner: String, bound: Bound)] = []

    init(yaml: String) {
        var parameterName = ""
        for line in yaml.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("name: ") || trimmed.hasPrefix("- name: "), let range = trimmed.range(of: "name: ") {
                parameterName = String(trimmed[range.upperBound...])
            }
            guard trimmed.contains("minimum:") || trimmed.contains("maximum:") else { continue }
            let key = String(trimmed.prefix { $0 != ":" })
            let number = { (keyword: String) -> Int64? in
                guard let range = trimmed.range(of: "\(keyword): ") else { return nil }
                return Int64(trimmed[range.upperBound...].prefix { $0 == "-" || $0.isNumber })
            }
            bounds.append((key == "schema" ? parameterName : key, Bound(minimum: number("minimum"), maximum: number("maximum"))))
        }
    }
}

/// Whether a string matches `pattern` as JSON Schema reads it (ECMA-262: `$` is the end of the
/// string). ICU's `$` also matches before a final line break, so the match must span the string.
func wholeMatcher(_ pattern: String) throws -> @Sendable (String) -> Bool {
    let regex = try NSRegularExpression(pattern: pattern)
    return { text in
        let whole = NSRange(text.startIndex..., in: text)
        return regex.firstMatch(in: text, range: whole)?.range == whole
    }
}

/// The single-quoted `pattern:` of the schema named `name` under `components/schemas` (or of
/// the line that names `name` first, for an inline schema).
func documentedPattern(of name: String, in yaml: String) throws -> String {
    let lines = yaml.split(separator: "\n").map(String.init)
    let start = try #require(lines.firstIndex { $0.trimmingCharacters(in: .whitespaces).hasPrefix("\(name):") }, "no \(name)")
    let line = try #require(lines[start...].first { $0.contains("pattern: '") }, "no pattern for \(name)")
    let quoted = line[line.range(of: "pattern: '")!.upperBound...]
    return String(quoted.prefix { $0 != "'" })
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
        #expect(documented.served.count == 37)
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
    @Test func everyOperationButHealthzRequiresTheBearerToken() {
        // Proves: each operation states its security: /healthz and the dashboard page none, every
        // other the bearer token.
        let documented = DocumentedOperations(yaml: OpenAPIDocument.yaml)
        for endpoint in documented.served {
            let expected = APIRoutes.open.contains(endpoint) ? "[]" : "[{bearer: []}]"
            #expect(documented.security[endpoint] == expected, "\(endpoint)")
        }
    }

    @Test func everyOperationListsTheStatusesItCanAnswer() {
        // Proves: every guarded operation documents 400 (query and path checks) and 401; every one
        // that reads a body documents 413; every one that reaches the ledger 500 and 503; each
        // 2xx is 200 (so a fuzzer checks the answers against what is written).
        let documented = DocumentedOperations(yaml: OpenAPIDocument.yaml)
        for endpoint in documented.served {
            let statuses = documented.statuses[endpoint] ?? []
            #expect(statuses.contains("200"), "\(endpoint)")
            if !APIRoutes.open.contains(endpoint) {
                #expect(statuses.isSuperset(of: ["400", "401"]), "\(endpoint): \(statuses)")
            }
            if endpoint.method != .get {
                #expect(statuses.contains("413"), "\(endpoint): \(statuses)")
            }
            // The document and the dashboard page are compiled in: they never reach the ledger.
            if endpoint != .get("/openapi.yaml") && !DashboardController.endpoints.contains(endpoint) {
                #expect(statuses.isSuperset(of: ["500", "503"]), "\(endpoint): \(statuses)")
            }
        }
    }

    @Test func everyNumberBoundIsTheLedgersLimit() {
        // Proves: each minimum and maximum in the document is the LedgerLimits constant (or the
        // Int64 range) the server enforces, and each bound the server enforces is in the document.
        typealias Bound = DocumentedBounds.Bound
        let expected: [String: Bound] = [
            "promptTokens": Bound(minimum: 0, maximum: LedgerLimits.tokensPerCallMax),
            "completionTokens": Bound(minimum: 0, maximum: LedgerLimits.tokensPerCallMax),
            "estimatedTokens": Bound(minimum: 0, maximum: LedgerLimits.tokensPerRequestMax),
            "tokens": Bound(minimum: 1, maximum: LedgerLimits.tokensPerRequestMax),
            "ttlSeconds": Bound(minimum: 1, maximum: LedgerLimits.holdSecondsMax),
            "maxTokens": Bound(minimum: 0, maximum: LedgerLimits.maxTokensMax),
            "latencyMs": Bound(minimum: 0, maximum: LedgerLimits.latencyMillisecondsMax),
            "after": Bound(minimum: 0, maximum: .max),
            "limit": Bound(minimum: 1, maximum: Int64(LedgerLimits.feedPageLimitMax)),
            "id": Bound(minimum: 1, maximum: .max),
            "defaultMaxTokens": Bound(minimum: 0, maximum: LedgerLimits.maxTokensMax),
            // USD per million tokens: nano-dollars per token / 1,000.
            "promptPerMillion": Bound(minimum: 0, maximum: LedgerLimits.priceNanodollarsPerTokenMax / 1_000),
            "completionPerMillion": Bound(minimum: 0, maximum: LedgerLimits.priceNanodollarsPerTokenMax / 1_000),
            // A scope budget's dollar max, in whole USD.
            "maxUsd": Bound(minimum: 0, maximum: LedgerLimits.budgetNanodollarsMax / Money.nanodollarsPerDollar),
        ]
        let documented = DocumentedBounds(yaml: OpenAPIDocument.yaml).bounds
        for (owner, bound) in documented {
            #expect(expected[owner] == bound, "\(owner): documented \(bound), enforced \(expected[owner].map(\.description) ?? "nothing")")
        }
        #expect(Set(documented.map(\.owner)) == Set(expected.keys))
    }

    @Test func theIdRuleIsWrittenOnceForTheServerAndTheDocument() throws {
        // Proves: the document's id patterns are the server's, every maxLength is the ledger's
        // 256, and the pattern and the server's check agree on ids at every edge, each id they
        // accept being one the ledger accepts too.
        let yaml = OpenAPIDocument.yaml
        #expect(try documentedPattern(of: "Identifier", in: yaml) == APIIdentifier.pattern)
        #expect(try documentedPattern(of: "OptionalIdentifier", in: yaml) == APIIdentifier.pattern)
        #expect(try documentedPattern(of: "IdempotencyKey", in: yaml) == APIIdentifier.headerPattern)
        for line in yaml.split(separator: "\n") where line.contains("maxLength:") {
            #expect(line.contains("maxLength: \(LedgerLimits.identifierBytesMax)"), "\(line)")
        }
        let matches = try wholeMatcher(APIIdentifier.pattern)
        let ascii = String(repeating: "a", count: 256)
        let samples: [(String, Bool)] = [
            ("t", true), ("", false), (ascii, true), (ascii + "a", false), ("a b/c?d%e", true),
            (String(repeating: "é", count: 64), true), (String(repeating: "é", count: 65), false),
            (String(repeating: "🚀", count: 64), true), (String(repeating: "a", count: 64) + "é", false),
            ("a\u{7}", false), ("a\u{7F}", false), ("\u{85}", false), ("\u{9F}x", false), ("\u{A0}", true),
            ("tab\there", false), ("line\n", false),
        ]
        let ledger = try Ledger.inMemory()
        defer { ledger.close() }
        for (sample, accepted) in samples {
            #expect(matches(sample) == accepted, "pattern on \(sample.debugDescription)")
            let served = (try? APIIdentifier.validate(sample, field: "id")) != nil
            #expect(served == accepted, "server on \(sample.debugDescription)")
            if accepted {
                #expect(throws: Never.self) { try ledger.setLimit(sample, maxTokens: 1) }
            }
        }
    }

    @Test func theTimestampPatternAcceptsWhatTheServerParses() throws {
        // Proves: on every day of years around each leap rule (and in times, fractions and
        // offsets), what the document's Timestamp pattern accepts the server parses, and what the
        // server refuses the pattern refuses too; 1970, which the pattern leaves out, is the only
        // difference, and it is on the safe side (the server takes more).
        let matches = try wholeMatcher(try documentedPattern(of: "Timestamp", in: OpenAPIDocument.yaml))
        let parses = { (text: String) in (try? Timestamps.parse(text, field: "from")) != nil }
        var checked = 0
        for year in [1970, 1971, 1972, 1999, 2000, 2024, 2026, 2100, 2400, 9999] {
            for month in 0...13 {
                for day in 0...32 {
                    let date = String(format: "%04d-%02d-%02d", year, month, day)
                    #expect(matches(date) == (parses(date) && year != 1970), "\(date)")
                    checked += 1
                }
            }
        }
        let times = [
            "2026-11-29T08:00", "2026-11-29 08:00:59", "2026-11-29T23:59:59.123456Z", "2026-11-29T08:00+05:30",
            "2026-11-29T08:00:00-99:99", "2026-11-29T24:00", "2026-11-29T08:60", "2026-11-29T08:00:60",
            "2026-11-29T08:00:00.1234567", "2026-11-29T08", "2026-11-29Z", "2026-11-29T08:00:00.Z", "26-11-29",
            "2026-11-29T08:00:00+0530", " 2026-11-29", "2026-11-29\n",
        ]
        for text in times {
            #expect(matches(text) == parses(text), "\(text)")
        }
        #expect(checked > 4_000)
    }
}
