import BudgetLedger
import BudgetLedgerWire
import Hummingbird

/// `/healthz`: served without a token, so that a load balancer's probe needs no secret.
struct HealthController: APIController {
    enum Route: CaseIterable, Sendable {
        case health
    }

    static func endpoint(of route: Route) -> Endpoint {
        switch route {
        case .health: return .get("/healthz")
        }
    }

    let ledger: any ServerLedgerStore

    /// `{"status": "ok", "version": …}` once the ledger answers a query; the ledger's error otherwise.
    func respond(to route: Route, request: Request, context: BasicRequestContext) async throws -> Response {
        _ = try await ledger.maxTokensPerThread
        return JSONResponse(.object([("status", .string("ok")), ("version", .string(Ledger.version))])).response()
    }
}

/// The server describing itself: Prometheus metrics and the OpenAPI document.
struct OperationsController: APIController {
    enum Route: CaseIterable, Sendable {
        case metrics, openAPI
    }

    static func endpoint(of route: Route) -> Endpoint {
        switch route {
        case .metrics: return .get("/metrics")
        case .openAPI: return .get("/openapi.yaml")
        }
    }

    let ledger: any ServerLedgerStore
    let metrics: ServerMetrics

    func respond(to route: Route, request: Request, context: BasicRequestContext) async throws -> Response {
        _ = try QueryFields(request, allowed: [])
        switch route {
        case .metrics:
            let text = try await ledger.metricsExposition(metrics)
            return TextResponse(text: text, contentType: "text/plain; version=0.0.4; charset=utf-8").response()
        case .openAPI:
            return TextResponse(text: OpenAPIDocument.yaml, contentType: "application/yaml").response()
        }
    }
}

/// The OpenAPI 3 document of the API, compiled into the binary from `openapi.yaml` beside this file.
enum OpenAPIDocument {
    static let yaml = String(decoding: PackageResources.openapi_yaml, as: UTF8.self)
}
