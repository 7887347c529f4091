import BudgetLedger
import BudgetLedgerWire
import HTTPTypes
import Hummingbird

/// The write path of one thread: consume, check, check-and-consume, limit, reset, cleanup.
struct ThreadsController: APIController {
    enum Route: CaseIterable, Sendable {
        case consume, check, checkAndConsume, setLimit, reset, cleanup
    }

    static func endpoint(of route: Route) -> Endpoint {
        switch route {
        case .consume: return .post("/api/v1/threads/{id}/consume")
        case .check: return .post("/api/v1/threads/{id}/check")
        case .checkAndConsume: return .post("/api/v1/threads/{id}/check-and-consume")
        case .setLimit: return .put("/api/v1/threads/{id}/limit")
        case .reset: return .post("/api/v1/threads/{id}/reset")
        case .cleanup: return .delete("/api/v1/threads/{id}")
        }
    }

    let ledger: any ServerLedgerStore
    let metrics: ServerMetrics
    let requestBodyBytesMax: Int

    func respond(to route: Route, request: Request, context: BasicRequestContext) async throws -> Response {
        let threadID = try context.pathIdentifier("id", field: "threadId")
        _ = try QueryFields(request, allowed: [])
        switch route {
        case .consume: return try await consume(threadID, request, enforce: false)
        case .checkAndConsume: return try await consume(threadID, request, enforce: true)
        case .check: return try await check(threadID, request)
        case .setLimit: return try await setLimit(threadID, request)
        case .reset: return try await reset(threadID, request)
        case .cleanup: return try await cleanup(threadID, request)
        }
    }

    /// Records usage (with `enforce`: only if it fits, else 409); 200 with the consume result,
    /// also for a replayed idempotency key.
    private func consume(_ threadID: String, _ request: Request, enforce: Bool) async throws -> Response {
        let input = try await ConsumeInput(request, limit: requestBodyBytesMax)
        // The answer is written by the store, straight into bytes (`JSONWriter`), no `JSONValue`
        // tree; on SQLite the write suspends while it waits for its group commit, holding no thread.
        let (isReplay, answer) = try await countingRefusals {
            try await ledger.consumeAnswer(
                threadID, promptTokens: input.promptTokens, completionTokens: input.completionTokens,
                idempotencyKey: input.idempotencyKey, usage: input.usage, checked: enforce)
        }
        metrics.recordConsume(replayed: isReplay)
        return JSONResponse.response(bytes: answer)
    }

    /// The budget when `estimatedTokens` (default 0) more fit, else 409. Opens a new thread, as the CLI's `check`.
    private func check(_ threadID: String, _ request: Request) async throws -> Response {
        let body = try await BodyFields(request, allowed: ["estimatedTokens"], limit: requestBodyBytesMax)
        let estimatedTokens = try body.count("estimatedTokens", default: 0)
        let budget = try await countingRefusals {
            try await ledger.checkBudget(threadID, estimatedTokens: estimatedTokens)
        }
        return JSONResponse(budget.json).response()
    }

    /// Sets the thread's max (opening the thread when needed).
    private func setLimit(_ threadID: String, _ request: Request) async throws -> Response {
        let body = try await BodyFields(request, allowed: ["maxTokens"], limit: requestBodyBytesMax)
        let maxTokens = try body.count("maxTokens")
        let budget = try await ledger.setLimit(threadID, maxTokens: maxTokens)
        return JSONResponse(budget.json).response()
    }

    /// Starts a new window for the thread; 404 when it is not open.
    private func reset(_ threadID: String, _ request: Request) async throws -> Response {
        _ = try await BodyFields(request, allowed: [], limit: requestBodyBytesMax)
        guard let budget = try await ledger.resetThread(threadID) else {
            throw LedgerError.threadNotFound(threadID)
        }
        return JSONResponse(budget.json).response()
    }

    /// Ends the thread and answers its final budget; 404 when it is not open.
    private func cleanup(_ threadID: String, _ request: Request) async throws -> Response {
        _ = try await BodyFields(request, allowed: [], limit: requestBodyBytesMax)
        guard let budget = try await ledger.cleanupThread(threadID) else {
            throw LedgerError.threadNotFound(threadID)
        }
        return JSONResponse(budget.json).response()
    }

    /// Runs `body`, counting a `BudgetExhaustedError` in the metrics before passing it on.
    private func countingRefusals<Result>(_ body: () async throws -> Result) async throws -> Result {
        do {
            return try await body()
        } catch let error as BudgetExhaustedError {
            metrics.recordExhaustedRefusal()
            throw error
        }
    }
}

/// The body of consume and check-and-consume.
struct ConsumeInput: Sendable {
    static let fields: Set<String> = [
        "promptTokens", "completionTokens", "agentId", "model", "provider", "latencyMs", "metadata", "idempotencyKey",
    ]
    let promptTokens: Int64
    let completionTokens: Int64
    let idempotencyKey: String?
    let usage: UsageDetails

    init(_ request: Request, limit: Int) async throws {
        let body = try await BodyFields(request, allowed: Self.fields, limit: limit)
        promptTokens = try body.count("promptTokens")
        completionTokens = try body.count("completionTokens", default: 0)
        usage = UsageDetails(
            agentID: try body.identifier("agentId"), model: try body.identifier("model"),
            provider: try body.identifier("provider"), latencyMilliseconds: try body.optionalCount("latencyMs"),
            metadata: try body.metadata("metadata"))
        idempotencyKey = try body.idempotencyKey(request)
    }
}
