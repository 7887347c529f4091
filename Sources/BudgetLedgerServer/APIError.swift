import BudgetLedger
import BudgetLedgerWire
import Hummingbird
import NIOCore
import NIOPosix

/// A failed request as a status and a `{"error": …, "detail": …}` body.
///
/// This is the one place where errors become HTTP statuses: handlers throw domain errors
/// (`LedgerError`, `BudgetExhaustedError`) and `APIErrorMiddleware` turns whatever was thrown
/// into an `APIError`.
struct APIError: HTTPResponseError {
    let status: HTTPResponse.Status
    let body: JSONValue
    var headers: HTTPFields = [:]

    init(status: HTTPResponse.Status, error: String, detail: String, headers: HTTPFields = [:]) {
        self.status = status
        body = .object([("error", .string(error)), ("detail", .string(detail))])
        self.headers = headers
    }

    private init(status: HTTPResponse.Status, body: JSONValue) {
        self.status = status
        self.body = body
    }

    /// The response for anything a handler, a middleware or the router threw while serving `request`.
    init(_ error: any Error, request: Request) {
        switch error {
        case let error as APIError:
            self = error
        case let exhausted as BudgetExhaustedError:
            // {"error", "detail", "threadId", "used", "maxTokens"}: the reference's shape.
            self.init(status: .conflict, body: exhausted.json)
        case let error as LedgerError:
            self.init(error)
        case is NIOTooManyBytesError:
            self.init(status: .contentTooLarge, error: "payload too large", detail: "the request body is too large")
        case let error as HTTPError where error.status == .notFound:
            self.init(status: .notFound, error: "not found", detail: "No route for \(request.method) \(request.uri.path)")
        case let error as HTTPError:
            self.init(
                status: error.status, error: error.status.reasonPhrase.lowercased(),
                detail: error.body ?? error.status.reasonPhrase, headers: error.headers)
        case is NIOThreadPoolError.ThreadPoolInactive, is CancellationError:
            self.init(status: .serviceUnavailable, error: "unavailable", detail: "the server is shutting down")
        default:
            self.init(status: .internalServerError, error: "internal error", detail: "\(error)")
        }
    }

    private init(_ error: LedgerError) {
        switch error {
        case .invalidInput:
            self.init(status: .badRequest, error: "invalid input", detail: error.description)
        case .threadNotFound, .reservationNotFound:
            // The detail is "No budget found for thread: {id}", as the reference's.
            self.init(status: .notFound, error: "not found", detail: error.description)
        case .conflict:
            self.init(status: .conflict, error: "conflict", detail: error.description)
        case .database where error.isBusy:
            self.init(status: .serviceUnavailable, error: "unavailable", detail: error.description)
        case .database, .closed, .incompatible:
            self.init(status: .internalServerError, error: "internal error", detail: error.description)
        }
    }

    /// A 400 naming the request field that is wrong, worded as the ledger words its own.
    static func invalid(_ field: String, _ reason: String) -> LedgerError {
        .invalidInput(field: field, reason: reason)
    }

    /// A 413 for a body over `limit` bytes.
    static func bodyTooLarge(limit: Int) -> APIError {
        APIError(
            status: .contentTooLarge, error: "payload too large", detail: "the request body exceeds \(limit) bytes")
    }

    /// A 401 for a missing or wrong bearer token.
    static let unauthorized = APIError(
        status: .unauthorized, error: "unauthorized", detail: "this endpoint requires Authorization: Bearer TOKEN",
        headers: [.wwwAuthenticate: "Bearer"])

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = JSONResponse(body, status: status).response()
        response.headers.append(contentsOf: headers)
        return response
    }
}
