import BudgetLedger
import BudgetLedgerWire
import Hummingbird

/// The ledger's settings shared by every client: the default max for threads opened from now on.
struct ConfigController: APIController {
    enum Route: CaseIterable, Sendable {
        case read, update
    }

    static func endpoint(of route: Route) -> Endpoint {
        switch route {
        case .read: return .get("/api/v1/config")
        case .update: return .put("/api/v1/config")
        }
    }

    let ledger: any ServerLedgerStore
    let requestBodyBytesMax: Int

    func respond(to route: Route, request: Request, context: BasicRequestContext) async throws -> Response {
        _ = try QueryFields(request, allowed: [])
        switch route {
        case .read:
            return Self.answer(try await ledger.maxTokensPerThread)
        case .update:
            let body = try await BodyFields(request, allowed: ["defaultMaxTokens"], limit: requestBodyBytesMax)
            let defaultMaxTokens = try body.count("defaultMaxTokens")
            // Open threads keep their max, as `configure --default-max` (an event, shared by every process).
            let stored = try await ledger.setDefaultMaxTokens(defaultMaxTokens)
            return Self.answer(stored)
        }
    }

    /// `{"defaultMaxTokens": N}`, the key `/api/v1/usage/threads` uses for the same number.
    private static func answer(_ defaultMaxTokens: Int64) -> Response {
        JSONResponse(WriteAnswer.config(defaultMaxTokens: defaultMaxTokens)).response()
    }
}
