import BudgetLedger
import BudgetLedgerWire
import HTTPTypes
import Hummingbird

/// The price table: every row (and which are in force), the price that applies to one model
/// name now, and setting a price.
///
/// The model named `reprice` has its GET, PUT and DELETE on the literal path of POST's reprice:
/// the router matches a literal segment before a parameter and never falls back, so without
/// them `/api/v1/prices/reprice` would answer 405 to the model's price operations.
///
/// The matching rule stays in the ledger (`Ledger.price(forModel:)`, the rule the consume path
/// bills by): clients ask for a model's price rather than match names themselves, so a change
/// of the rule changes no client.
struct PricesController: APIController {
    enum Route: CaseIterable, Sendable {
        case table, modelPrice, setPrice, withdrawPrice, reprice
        /// modelPrice, setPrice and withdrawPrice for the model named `reprice`.
        case repriceModelPrice, setRepriceModelPrice, withdrawRepriceModelPrice
    }

    /// The model whose name is the reprice operation's path segment.
    static let literalModel = "reprice"

    static func endpoint(of route: Route) -> Endpoint {
        switch route {
        case .table: return .get("/api/v1/prices")
        case .modelPrice: return .get("/api/v1/prices/{model}")
        case .setPrice: return .put("/api/v1/prices/{model}")
        case .withdrawPrice: return .delete("/api/v1/prices/{model}")
        case .reprice: return .post("/api/v1/prices/reprice")
        case .repriceModelPrice: return .get("/api/v1/prices/\(literalModel)")
        case .setRepriceModelPrice: return .put("/api/v1/prices/\(literalModel)")
        case .withdrawRepriceModelPrice: return .delete("/api/v1/prices/\(literalModel)")
        }
    }

    static let bodyFields: Set<String> = ["promptPerMillion", "completionPerMillion", "effectiveFrom", "replaces"]
    static let repriceFields: Set<String> = ["model", "from", "to"]
    static let source = "budget-ledger REST API"

    let ledger: any ServerLedgerStore
    let requestBodyBytesMax: Int

    func respond(to route: Route, request: Request, context: BasicRequestContext) async throws -> Response {
        let isWithdrawal = route == .withdrawPrice || route == .withdrawRepriceModelPrice
        let query = try QueryFields(request, allowed: isWithdrawal ? ["from"] : [])
        switch route {
        case .table: return try await table(request)
        case .modelPrice: return try await modelPrice(try context.pathIdentifier("model", field: "model"))
        case .repriceModelPrice: return try await modelPrice(Self.literalModel)
        case .setPrice: return try await setPrice(try Self.pricePattern(context), request)
        case .setRepriceModelPrice: return try await setPrice(Self.literalModel, request)
        case .withdrawPrice: return try await withdrawPrice(try Self.pricePattern(context), query, request)
        case .withdrawRepriceModelPrice: return try await withdrawPrice(Self.literalModel, query, request)
        case .reprice: return try await reprice(request)
        }
    }

    /// The path's model, checked as a price's name or pattern.
    private static func pricePattern(_ context: BasicRequestContext) throws -> String {
        let model = try context.pathIdentifier("model", field: "model")
        try APIIdentifier.validatePricePattern(model, field: "model")
        return model
    }

    /// Withdraws the price of `model` that starts at the query's `from`, as `price withdraw`.
    private func withdrawPrice(_ model: String, _ query: QueryFields, _ request: Request) async throws -> Response {
        guard let fromText = query.string("from") else { throw APIError.invalid("from", "is required") }
        let from = try Timestamps.parse(fromText, field: "from")
        _ = try await BodyFields(request, allowed: [], limit: requestBodyBytesMax)
        let price = try await ledger.withdrawPrice(model: model, effectiveFrom: from, source: Self.source)
        return JSONResponse(.object([("withdrawn", price.json)])).response()
    }

    /// `{"prices": [row + inForce…], "count": N}` with an ETag of the body, so a client can ask
    /// "has anything changed?" with `If-None-Match` and get a 304. `inForce` is part of the
    /// body, so the tag also changes when a price set for later starts to apply.
    private func table(_ request: Request) async throws -> Response {
        let (prices, now) = try await ledger.priceTable()
        let text = PriceTableJSON.json(prices, at: now).serialized()
        let tag = Self.entityTag(of: text)
        if let condition = request.headers[.ifNoneMatch], condition.split(separator: ",").contains(where: {
            $0.trimmingCharacters(in: .whitespaces) == tag || $0.trimmingCharacters(in: .whitespaces) == "*"
        }) {
            return Response(status: .notModified, headers: [.eTag: tag])
        }
        var response = TextResponse(text: text, contentType: "application/json").response()
        response.headers[.eTag] = tag
        return response
    }

    /// `{"model": name as asked, "normalizedModel", "match": "exact" | "pattern", "price": row}`:
    /// the row the ledger would bill a consume of `model` by now, and why; 404 when none applies
    /// (such a consume's cost is null).
    private func modelPrice(_ model: String) async throws -> Response {
        guard let price = try await ledger.price(forModel: model) else {
            throw APIError(status: .notFound, error: "not found", detail: "No price for model: \(model)")
        }
        return JSONResponse(PriceTableJSON.json(model: model, price: price)).response()
    }

    /// Adds a price for `model` from `effectiveFrom` (default now), as `price set`; with
    /// `replaces`, withdraws the price that was to start then in the same transaction, as
    /// `price replace`.
    private func setPrice(_ model: String, _ request: Request) async throws -> Response {
        let body = try await BodyFields(request, allowed: Self.bodyFields, limit: requestBodyBytesMax)
        let prompt = try Self.decimal(body, "promptPerMillion")
        let completion = try Self.decimal(body, "completionPerMillion")
        let start = try body.stringNotNull("effectiveFrom").map { try Timestamps.parse($0, field: "effectiveFrom") }
        let replaced = try body.stringNotNull("replaces").map { try Timestamps.parse($0, field: "replaces") }
        let price: ModelPrice
        if let replaced {
            price = try await ledger.replacePrice(
                model: model, effectiveFrom: replaced, promptUSDPerMillion: prompt,
                completionUSDPerMillion: completion, newEffectiveFrom: start, source: Self.source)
        } else {
            price = try await ledger.setPrice(
                model: model, promptUSDPerMillion: prompt, completionUSDPerMillion: completion, effectiveFrom: start,
                source: Self.source)
        }
        return JSONResponse(price.json).response()
    }

    /// Bills the consumes of `model` recorded unpriced in [`from`, `to`) at the prices now in
    /// the table, as `price reprice` (`Ledger.reprice(model:from:to:)`).
    private func reprice(_ request: Request) async throws -> Response {
        let body = try await BodyFields(request, allowed: Self.repriceFields, limit: requestBodyBytesMax)
        guard let model = try body.stringNotNull("model") else { throw APIError.invalid("model", "is required") }
        try APIIdentifier.validatePricePattern(model, field: "model")
        guard let fromText = try body.stringNotNull("from") else { throw APIError.invalid("from", "is required") }
        guard let toText = try body.stringNotNull("to") else { throw APIError.invalid("to", "is required") }
        let from = try Timestamps.parse(fromText, field: "from")
        // As the export's: a range that ends before it starts is the empty range [from, from).
        let to = max(try Timestamps.parse(toText, field: "to"), from)
        let result = try await ledger.reprice(model: model, from: from, to: to)
        return JSONResponse(result.json).response()
    }

    /// A price as the decimal text the ledger parses exactly: a JSON string (`"2.5"`) or a whole
    /// number. A JSON fraction is refused: it is a binary float, not the decimal that was meant.
    private static func decimal(_ body: BodyFields, _ field: String) throws -> String {
        // A whole number (a negative one is refused with its own message), else a string.
        if let whole = try body.optionalCount(ifInteger: field) { return String(whole) }
        let text: String?
        do {
            text = try body.string(field)
        } catch {
            throw APIError.invalid(
                field, "must be USD per million tokens as a decimal string, e.g. \"2.5\", or a whole number")
        }
        guard let text else { throw APIError.invalid(field, "is required") }
        return text
    }

    /// A strong entity tag of `text`: FNV-1a 64, quoted (a content hash, not a secret).
    static func entityTag(of text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return "\"" + String(repeating: "0", count: 16 - hex.count) + hex + "\""
    }
}
