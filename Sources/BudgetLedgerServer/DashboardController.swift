import HTTPTypes
import Hummingbird

/// `/` and `/dashboard`: the "gas gauge" page, one HTML file with its CSS and JavaScript inline,
/// compiled into the binary from `dashboard.html` beside this file.
///
/// The page is served without a token: it holds no data. It reads the API from the browser
/// (`/api/v1/...`), asking for the token when the API answers 401, and its
/// Content-Security-Policy lets it reach nothing but this server.
struct DashboardController: APIController {
    enum Route: CaseIterable, Sendable {
        case root, dashboard
    }

    static func endpoint(of route: Route) -> Endpoint {
        switch route {
        case .root: return .get("/")
        case .dashboard: return .get("/dashboard")
        }
    }

    /// Inline scripts and styles of this page only; connections to this origin only; no frames.
    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        + "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    func respond(to route: Route, request: Request, context: BasicRequestContext) async throws -> Response {
        _ = try QueryFields(request, allowed: [])
        var response = TextResponse(text: DashboardPage.html, contentType: "text/html; charset=utf-8").response()
        response.headers[.contentSecurityPolicy] = Self.contentSecurityPolicy
        response.headers[.cacheControl] = "no-cache"
        response.headers[.xContentTypeOptions] = "nosniff"
        return response
    }
}

extension HTTPField.Name {
    static let xContentTypeOptions = HTTPField.Name("X-Content-Type-Options")!
}

/// The dashboard page, compiled into the binary from `dashboard.html` beside this file.
enum DashboardPage {
    static let html = String(decoding: PackageResources.dashboard_html, as: UTF8.self)
}
