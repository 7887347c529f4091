import BudgetLedger
import BudgetLedgerWire
import Hummingbird

/// Two-phase holds: reserve on a thread, then settle or release the reservation; list live holds.
struct ReservationsController: APIController {
    enum Route: CaseIterable, Sendable {
        case reserve, settle, release, list
    }

    static func endpoint(of route: Route) -> Endpoint {
        switch route {
        case .reserve: return .post("/api/v1/threads/{id}/reserve")
        case .settle: return .post("/api/v1/reservations/{id}/settle")
        case .release: return .post("/api/v1/reservations/{id}/release")
        case .list: return .get("/api/v1/reservations")
        }
    }

    let ledger: any ServerLedgerStore
    let metrics: ServerMetrics
    let requestBodyBytesMax: Int

    func respond(to route: Route, request: Request, context: BasicRequestContext) async throws -> Response {
        let query = try QueryFields(request, allowed: route == .list ? ["threadId"] : [])
        switch route {
        case .list:
            return try await list(threadID: try query.identifier("threadId"))
        case .reserve:
            return try await reserve(try context.pathIdentifier("id", field: "threadId"), request)
        case .settle:
            return try await settle(try context.reservationID(), request)
        case .release:
            return try await release(try context.reservationID(), request)
        }
    }

    /// Holds `tokens` for `ttlSeconds` (default 300) under the scopes of `agentId`, `model` and
    /// `metadata`; 409 when the hold does not fit the thread's budget or a scope's.
    private func reserve(_ threadID: String, _ request: Request) async throws -> Response {
        let body = try await BodyFields(
            request, allowed: ["tokens", "ttlSeconds", "agentId", "model", "metadata", "idempotencyKey"],
            limit: requestBodyBytesMax)
        let tokens = try body.count("tokens")
        let ttlSeconds = try body.count("ttlSeconds", default: Ledger.defaultHoldSeconds)
        // The fields that pick the scope budgets the hold falls under, checked as consume's.
        let usage = UsageDetails(
            agentID: try body.identifier("agentId"), model: try body.identifier("model"),
            metadata: try body.metadata("metadata"))
        let idempotencyKey = try body.idempotencyKey(request)
        do {
            let result = try await ledger.reserve(
                threadID, tokens: tokens, ttlSeconds: ttlSeconds, usage: usage, idempotencyKey: idempotencyKey)
            return JSONResponse(result.json).response()
        } catch let error as BudgetExhaustedError {
            metrics.recordExhaustedRefusal()
            throw error
        }
    }

    /// Records the actual usage and ends the hold; 404 unknown, 409 no longer live.
    private func settle(_ reservationID: Int64, _ request: Request) async throws -> Response {
        let input = try await ConsumeInput(request, limit: requestBodyBytesMax)
        let result = try await ledger.settle(
            reservationID, promptTokens: input.promptTokens, completionTokens: input.completionTokens,
            idempotencyKey: input.idempotencyKey, usage: input.usage)
        metrics.recordConsume(replayed: result.consume.isReplay)
        return JSONResponse(result.json).response()
    }

    /// `{"holds": [reservation…], "count", "heldTokens"}`: the live holds (not settled, released
    /// or expired), of one thread or of all, oldest first. An unknown thread has none.
    private func list(threadID: String?) async throws -> Response {
        let holds = try await ledger.holds(threadID)
        return JSONResponse(HoldList.json(holds)).response()
    }

    /// Ends the hold with nothing spent; 404 unknown, 409 no longer live.
    private func release(_ reservationID: Int64, _ request: Request) async throws -> Response {
        _ = try await BodyFields(request, allowed: [], limit: requestBodyBytesMax)
        let budget = try await ledger.release(reservationID)
        return JSONResponse(
            WriteAnswer.released(reservationID, budget: budget)
        ).response()
    }
}

extension BasicRequestContext {
    /// The `{id}` path parameter as a reservation id: a positive integer.
    func reservationID() throws -> Int64 {
        let id = try wholeNumber(try parameters.require("id"), field: "reservationId")
        guard id > 0 else { throw APIError.invalid("reservationId", "must be a positive integer (got \(id))") }
        return id
    }
}
