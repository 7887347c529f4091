import BudgetLedger
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

@Suite("The dashboard page")
struct DashboardTests {
    @Test(arguments: ["/", "/dashboard"])
    func thePageIsServedWithoutATokenAsHTML(_ path: String) async throws {
        // Proves: on a server with a token, / and /dashboard answer the compiled-in page without
        // one, as HTML, with a policy that lets it reach nothing but this server; the API
        // beside it still needs the token.
        try await withServer(token: AuthTests.token) { client, _ in
            let response = try await client.get(path)
            #expect(response.status == .ok)
            #expect(response.headers[.contentType] == "text/html; charset=utf-8")
            #expect(response.text == DashboardPage.html)
            let policy = try #require(response.headers[.contentSecurityPolicy])
            #expect(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"))
            #expect(try await client.get("/api/v1/usage").status == .unauthorized)
        }
    }

    @Test func thePageIsSelfContained() {
        // Proves: the page loads nothing from elsewhere (no external script, style, font or
        // image; no absolute URL at all) and reads only this server's /api/v1 endpoints.
        let html = DashboardPage.html
        #expect(html.hasPrefix("<!doctype html>"))
        for outside in ["http://", "https://", "src=", "<link rel=\"stylesheet\"", "@import", "url("] {
            #expect(!html.contains(outside), "\(outside)")
        }
        let paths = html.matches(of: /api\("([^"?]+)/).map { String($0.1) }
        #expect(paths.sorted() == ["/api/v1/budgets", "/api/v1/usage", "/api/v1/usage/export", "/api/v1/usage/threads"])
        #expect(html.contains("sessionStorage") && !html.contains("localStorage") && !html.contains("document.cookie"))
    }

    @Test func aQueryOnThePageIsABadRequest() async throws {
        // Proves: the page's routes check their query as every other route does (400, naming it).
        try await withServer { client, _ in
            let response = try await client.get("/dashboard?x=1")
            #expect(response.status == .badRequest)
            #expect(try response.detail().contains("x"))
        }
    }
}
