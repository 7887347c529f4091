import BudgetLedger
import BudgetLedgerPostgres
import BudgetLedgerStore
import BudgetLedgerWire
import Hummingbird
import NIOCore
import NIOPosix

/// A failed request as a status and a `{"error": …, "detail": …}` body.
///
/// This is the one place where errors become HTTP statuses: handlers throw domain errors
/// (`LedgerError`, `BudgetExhaustedError`) and `APIErrorMiddleware` turns whatever was thrown
/// into an `APIError`. A server failure (5xx) tells the client nothing about the server: no
/// file path, no SQL, no SQLite message; its body carries the request id under which
/// `APIErrorMiddleware` logs the whole error.
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

    /// The response for anything a handler, a middleware or the router threw while serving
    /// `request`; `requestID` is the id the server logs the request under.
    init(_ error: any Error, request: Request, requestID: String) {
        switch error {
        case let error as APIError:
            self = error
        case let exhausted as BudgetExhaustedError:
            // {"error", "detail", "threadId", "used", "maxTokens"}: the reference's shape.
            self.init(status: .conflict, body: exhausted.json)
        case let error as LedgerError:
            self.init(error, requestID: requestID)
        case is NIOTooManyBytesError:
            self.init(status: .contentTooLarge, error: "payload too large", detail: "the request body is too large")
        case let error as HTTPError where error.status == .notFound:
            self = .noRoute(request)
        case let error as HTTPError where error.status.kind == .clientError:
            self.init(
                status: error.status, error: error.status.reasonPhrase.lowercased(),
                detail: error.body ?? error.status.reasonPhrase, headers: error.headers)
        case is LedgerStoreOverloadedError:
            self = .overloaded
        case let error as PostgresLedgerError:
            self.init(error, requestID: requestID)
        case is NIOThreadPoolError.ThreadPoolInactive, is CancellationError:
            self = .shuttingDown
        default:
            self = .internalError(requestID: requestID)
        }
    }

    private init(_ error: LedgerError, requestID: String) {
        switch error {
        case .invalidInput:
            self.init(status: .badRequest, error: "invalid input", detail: error.description)
        case .threadNotFound, .reservationNotFound, .priceNotFound:
            // The detail is "No budget found for thread: {id}", as the reference's.
            self.init(status: .notFound, error: "not found", detail: error.description)
        case .conflict:
            self.init(status: .conflict, error: "conflict", detail: error.description)
        case .database where error.isBusy:
            self = .busy
        case .database, .closed, .incompatible:
            self = .internalError(requestID: requestID)
        }
    }

    /// The PostgreSQL store's own failures: a database that cannot be reached, is restarting or
    /// lost the connection is a 503 worth retrying; the rest a 500 (logged whole, never shown:
    /// the messages may hold SQL and the URL).
    private init(_ error: PostgresLedgerError, requestID: String) {
        if error.isUnavailable {
            self = .databaseUnavailable
        } else if error.isTransient {
            self = .busy
        } else if case .closed = error {
            self = .shuttingDown
        } else {
            self = .internalError(requestID: requestID)
        }
    }

    /// A 503 while the PostgreSQL database cannot be reached. A call whose connection was lost
    /// during its commit may have been recorded, so a retry should carry the same idempotency key.
    static let databaseUnavailable = APIError(
        status: .serviceUnavailable, error: "unavailable",
        detail: "the ledger's database cannot be reached; retry later (with the same idempotency key, a retry records at most once)",
        headers: [.retryAfter: "1"])

    /// A 500 that names only the request id: the log has the rest.
    static func internalError(requestID: String) -> APIError {
        APIError(
            status: .internalServerError,
            body: .object([
                ("error", .string("internal error")),
                ("detail", .string("internal error; the server's log has the details under this requestId")),
                ("requestId", .string(requestID)),
            ]))
    }

    /// A 503 while another writer holds the ledger past the busy timeout: worth a retry.
    static let busy = APIError(
        status: .serviceUnavailable, error: "unavailable", detail: "the ledger is busy; retry later",
        headers: [.retryAfter: "1"])

    /// A 503 for a request that found every ledger thread busy and the queue for them full:
    /// it never reached the ledger, so a retry is safe.
    static let overloaded = APIError(
        status: .serviceUnavailable, error: "unavailable",
        detail: "the server has too many ledger calls running and waiting; nothing was recorded; retry later",
        headers: [.retryAfter: "1"])

    /// A 503 for a request that arrived while the server stops.
    static let shuttingDown = APIError(
        status: .serviceUnavailable, error: "unavailable", detail: "the server is shutting down")

    /// The router found no route: 405 with `Allow` when the path is served with other methods,
    /// else 404.
    static func noRoute(_ request: Request) -> APIError {
        let path = request.uri.path
        let allowed = APIRoutes.methods(servedAt: path)
        guard !allowed.isEmpty else {
            return APIError(status: .notFound, error: "not found", detail: "No route for \(request.method) \(path)")
        }
        let list = allowed.map(\.rawValue).joined(separator: ", ")
        return APIError(
            status: .methodNotAllowed, error: "method not allowed",
            detail: "\(request.method) is not served at \(path) (allowed: \(list))", headers: [.allow: list])
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
