import BudgetLedger
import BudgetLedgerWire
import Hummingbird

/// Scope budgets: list them, read one, set one, remove one, as the CLI's `budget` commands.
struct BudgetsController: APIController {
    enum Route: CaseIterable, Sendable {
        case list, read, set, remove
    }

    static func endpoint(of route: Route) -> Endpoint {
        switch route {
        case .list: return .get("/api/v1/budgets")
        case .read: return .get("/api/v1/budgets/{scope}")
        case .set: return .put("/api/v1/budgets/{scope}")
        case .remove: return .delete("/api/v1/budgets/{scope}")
        }
    }

    static let bodyFields: Set<String> = ["period", "maxTokens", "maxUsd"]

    let ledger: any ServerLedgerStore
    let requestBodyBytesMax: Int

    func respond(to route: Route, request: Request, context: BasicRequestContext) async throws -> Response {
        _ = try QueryFields(request, allowed: [])
        switch route {
        case .list:
            return JSONResponse(ScopeBudgetList.json(try await ledger.budgets())).response()
        case .read:
            let scope = try context.pathScope()
            guard let budget = try await ledger.budget(scope: scope) else {
                throw APIError(status: .notFound, error: "not found", detail: "scope \(scope) has no budget")
            }
            return JSONResponse(budget.json).response()
        case .set:
            let scope = try context.pathScope()
            return try await set(scope, request, on: ledger)
        case .remove:
            let scope = try context.pathScope()
            _ = try await BodyFields(request, allowed: [], limit: requestBodyBytesMax)
            try await ledger.removeBudget(scope)
            return JSONResponse(WriteAnswer.budgetRemoved(scope)).response()
        }
    }

    /// Sets the budget of `scope` from `{"period", "maxTokens", "maxUsd"}`, as `budget set`.
    private func set(_ scope: BudgetScope, _ request: Request, on ledger: any ServerLedgerStore) async throws -> Response {
        let body = try await BodyFields(request, allowed: Self.bodyFields, limit: requestBodyBytesMax)
        let period = try body.stringNotNull("period").map { text in
            guard let period = BudgetPeriod(rawValue: text) else {
                let names = BudgetPeriod.allCases.map(\.rawValue).joined(separator: ", ")
                throw APIError.invalid("period", "must be one of \(names) (got \"\(text)\")")
            }
            return period
        } ?? BudgetPeriod.none
        // null is refused rather than read as absent: leaving a max out is the way to have none.
        try body.refuseNull("maxTokens")
        try body.refuseNull("maxUsd")
        let maxTokens = try body.optionalCount("maxTokens")
        let maxNanodollars = try Self.usd(body, "maxUsd")
        let budget = try await ledger.setBudget(scope, period: period, maxTokens: maxTokens, maxNanodollars: maxNanodollars)
        return JSONResponse(budget.json).response()
    }

    /// An amount of USD as the ledger parses it exactly: a JSON string (`"500.00"`) or a whole
    /// number; nil when absent or null. A JSON fraction is refused: it is a binary float, not
    /// the decimal that was meant.
    private static func usd(_ body: BodyFields, _ field: String) throws -> Int64? {
        let text: String?
        if let whole = try body.optionalCount(ifInteger: field) {
            text = String(whole)
        } else {
            do {
                text = try body.string(field)
            } catch {
                throw APIError.invalid(field, "must be USD as a decimal string, e.g. \"500.00\", or a whole number")
            }
        }
        return try text.map { try Money.nanodollars(fromUSD: $0, field: field, maximum: LedgerLimits.budgetNanodollarsMax) }
    }
}

extension BasicRequestContext {
    /// The `{scope}` path parameter, percent-decoded (`org%3Aacme` is `org:acme`), by
    /// `APIIdentifier.validateScope`, then parsed by the ledger.
    func pathScope() throws -> BudgetScope {
        guard let decoded = try parameters.require("scope").removingPercentEncoding else {
            throw APIError.invalid("scope", "is not a valid percent-encoded path segment")
        }
        try APIIdentifier.validateScope(decoded, field: "scope")
        return try BudgetScope(parsing: decoded, field: "scope")
    }
}

extension APIIdentifier {
    /// The rule for a scope over REST, as `openapi.yaml`'s `Scope` pattern writes it: `global`, or
    /// `org:`, `user:`, `agent:` or `model:` and an id by this type's rule; a model's id must not
    /// start with a space (a name of spaces only would normalise to nothing, and a pattern cannot
    /// count characters and look for a non-space at once).
    static let scopePattern =
        #"^(?:global|(?:org|user|agent):(?:[ -~]{1,\#(asciiCharactersMax)}|[^\u0000-\u001F\u007F-\u009F]{1,\#(charactersMax)})"#
        + #"|model:(?:[!-~][ -~]{0,\#(asciiCharactersMax - 1)}|[^\u0000-\u001F\u007F-\u009F ][^\u0000-\u001F\u007F-\u009F]{0,\#(charactersMax - 1)}))$"#

    /// - Throws: `LedgerError.invalidInput` naming `field` when `value` breaks `scopePattern`.
    static func validateScope(_ value: String, field: String) throws {
        if value == "global" { return }
        // By Unicode scalars, as `BudgetScope(parsing:)`: ":" and a combining mark after it are one Character.
        let scalars = value.unicodeScalars
        guard let colon = scalars.firstIndex(of: ":"), ["org", "user", "agent", "model"].contains(String(scalars[..<colon]))
        else {
            throw APIError.invalid(
                field, "must be global, org:ID, user:ID, agent:ID or model:NAME (got \(value.debugDescription))")
        }
        let kind = String(scalars[..<colon])
        let id = String(scalars[scalars.index(after: colon)...])
        try validate(id, field: field)
        if kind == "model", id.hasPrefix(" ") {
            throw APIError.invalid(field, "a model name must not start with a space")
        }
    }
}
