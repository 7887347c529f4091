import Hummingbird

/// One operation of the API: a method and a path template, written as the OpenAPI document
/// writes them (`/api/v1/threads/{id}/consume`).
struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    let method: HTTPRequest.Method
    let path: String

    static func get(_ path: String) -> Endpoint { Endpoint(method: .get, path: path) }
    static func post(_ path: String) -> Endpoint { Endpoint(method: .post, path: path) }
    static func put(_ path: String) -> Endpoint { Endpoint(method: .put, path: path) }
    static func delete(_ path: String) -> Endpoint { Endpoint(method: .delete, path: path) }

    var description: String { "\(method) \(path)" }

    /// Whether the raw (still percent-encoded) request path `requestPath` fits this endpoint's
    /// template, as the router matches it: empty segments are skipped, literal segments compare
    /// exactly, and a `{name}` segment takes any one segment.
    func matches(path requestPath: String) -> Bool {
        matches(segments: requestPath.split(separator: "/"))
    }

    /// `matches(path:)` for a request path already split at its slashes.
    func matches(segments: [Substring]) -> Bool {
        let template = path.split(separator: "/")
        guard template.count == segments.count else { return false }
        return zip(template, segments).allSatisfy { pattern, segment in
            (pattern.hasPrefix("{") && pattern.hasSuffix("}")) || pattern == segment
        }
    }
}

/// A small group of endpoints: an enum of its routes, and one function that answers them.
///
/// The router registers exactly `Route.allCases`, and `APIRoutes.all` lists exactly those, so the
/// test that compares the OpenAPI document with `APIRoutes.all` compares it with the router.
protocol APIController: Sendable {
    associatedtype Route: CaseIterable, Sendable

    /// The method and path of `route`.
    static func endpoint(of route: Route) -> Endpoint

    /// Answers `request` for `route`; errors are thrown for `APIErrorMiddleware` to map.
    func respond(to route: Route, request: Request, context: BasicRequestContext) async throws -> Response
}

extension APIController {
    static var endpoints: [Endpoint] { Route.allCases.map(endpoint(of:)) }

    /// Registers every route of this controller on `router`.
    func addRoutes(to router: some RouterMethods<BasicRequestContext>) {
        for route in Route.allCases {
            let endpoint = Self.endpoint(of: route)
            router.on(RouterPath(endpoint.path), method: endpoint.method) { request, context in
                try await respond(to: route, request: request, context: context)
            }
        }
    }
}

/// The one list of the API's endpoints, for the router and for the tests.
enum APIRoutes {
    /// Served without a token: a load balancer's probe must not need the secret, and the
    /// dashboard page holds no data (it asks for the token itself).
    static var open: [Endpoint] { HealthController.endpoints + DashboardController.endpoints }

    /// Served only with `Authorization: Bearer TOKEN` when the server has a token.
    static var guarded: [Endpoint] {
        OperationsController.endpoints + UsageController.endpoints + ThreadsController.endpoints
            + ReservationsController.endpoints + BillingController.endpoints + ConfigController.endpoints
            + PricesController.endpoints + BudgetsController.endpoints
    }

    static var all: [Endpoint] { open + guarded }

    /// The methods served on the path of `requestPath`, in a fixed order; empty when no route has
    /// that path. A request whose path is known but whose method is not gets 405 with these in `Allow`.
    /// As in the router's trie, a literal segment beats a parameter: `/api/v1/prices/reprice`
    /// has its own routes alone, never `/api/v1/prices/{model}`'s (the router never falls back),
    /// which is why `PricesController` serves the model named `reprice` there too.
    static func methods(servedAt requestPath: String) -> [HTTPRequest.Method] {
        let matching = all.filter { $0.matches(path: requestPath) }
        let literals = { (endpoint: Endpoint) in endpoint.path.split(separator: "/").filter { !$0.hasPrefix("{") }.count }
        let mostLiteral = matching.map(literals).max()
        let methods = Set(matching.filter { literals($0) == mostLiteral }.map(\.method.rawValue))
        return methods.sorted().compactMap(HTTPRequest.Method.init(rawValue:))
    }

    /// Whether `requestPath` is the path of an endpoint served without a token, whatever the
    /// method: a wrong method on `/healthz` gets its 405 without a token.
    static func isOpen(path requestPath: String) -> Bool {
        let segments = requestPath.split(separator: "/")
        return openEndpoints.contains { $0.matches(segments: segments) }
    }

    /// `open`, built once: asked on every request, it must not build the list each time.
    private static let openEndpoints = open
}
