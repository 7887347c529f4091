import BudgetLedger
import BudgetLedgerWire
import Hummingbird

/// Reading usage: the overview, thread budgets, per-agent and per-model totals; and starting a
/// new usage window. Reads never open a thread.
struct UsageController: APIController {
    enum Route: CaseIterable, Sendable {
        case overview, threads, thread, agent, model, resetWindow
    }

    static func endpoint(of route: Route) -> Endpoint {
        switch route {
        case .overview: return .get("/api/v1/usage")
        case .threads: return .get("/api/v1/usage/threads")
        case .thread: return .get("/api/v1/usage/threads/{id}")
        case .agent: return .get("/api/v1/usage/agents/{id}")
        case .model: return .get("/api/v1/usage/models/{model}")
        case .resetWindow: return .post("/api/v1/usage/reset")
        }
    }

    let ledger: any ServerLedgerStore
    let requestBodyBytesMax: Int

    func respond(to route: Route, request: Request, context: BasicRequestContext) async throws -> Response {
        switch route {
        case .overview: return try await overview(request)
        case .threads: return try await threads(request)
        case .thread: return try await thread(request, context)
        case .agent: return try await agent(request, context)
        case .model: return try await model(request, context)
        case .resetWindow: return try await resetWindow(request)
        }
    }

    /// `{"usage": {"totals", "byAgent", "byModel", "activeThreads"}}`; `?allTime=true` ignores the window.
    private func overview(_ request: Request) async throws -> Response {
        let scope = try Self.scope(request)
        let overview = try await ledger.usageOverview(scope)
        return JSONResponse(overview.json).response()
    }

    /// `{"threads": [budget…], "count", "defaultMaxTokens"}`, hottest first.
    private func threads(_ request: Request) async throws -> Response {
        _ = try QueryFields(request, allowed: [])
        let (budgets, defaultMaxTokens) = try await ledger.threadList()
        return JSONResponse(ThreadList.json(budgets, defaultMaxTokens: defaultMaxTokens)).response()
    }

    /// One thread's budget, or 404: never opens the thread.
    private func thread(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let threadID = try context.pathIdentifier("id", field: "threadId")
        _ = try QueryFields(request, allowed: [])
        guard let budget = try await ledger.usage(threadID) else {
            throw LedgerError.threadNotFound(threadID)
        }
        return JSONResponse(budget.json).response()
    }

    /// One agent's totals (zeros for an unknown agent).
    private func agent(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let agentID = try context.pathIdentifier("id", field: "agentId")
        let scope = try Self.scope(request)
        let totals = try await ledger.usage(agent: agentID, scope: scope)
        return JSONResponse(totals.json(key: ("agentId", .string(agentID)))).response()
    }

    /// One model's totals, by the model name as recorded (zeros for an unknown model).
    private func model(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let model = try context.pathIdentifier("model", field: "model")
        let scope = try Self.scope(request)
        let totals = try await ledger.usage(model: model, scope: scope)
        return JSONResponse(totals.json(key: ("model", .string(ModelName.normalized(model))))).response()
    }

    /// Starts a new usage window for the overview; deletes nothing.
    private func resetWindow(_ request: Request) async throws -> Response {
        _ = try QueryFields(request, allowed: [])
        _ = try await BodyFields(request, allowed: [], limit: requestBodyBytesMax)
        try await ledger.resetUsageWindow()
        return JSONResponse(WriteAnswer.usageWindowReset).response()
    }

    /// `?allTime=true`: every event; otherwise the current usage window.
    private static func scope(_ request: Request) throws -> UsageScope {
        try QueryFields(request, allowed: ["allTime"]).bool("allTime") == true ? .allTime : .currentWindow
    }
}
