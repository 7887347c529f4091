import HTTPTypes
import Hummingbird
import Logging

extension HTTPField.Name {
    /// The id the server logs a request under, on every response.
    static let requestID = HTTPField.Name("X-Request-Id")!
}

/// Answers every request with `X-Request-Id`: the id its log lines carry (`requestId`), so that
/// an operator can find what a client saw, a 500 above all.
///
/// It sits outermost, so every response has it, whatever failed below.
struct RequestIDMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var response = try await next(request, context)
        response.headers[.requestID] = context.id
        return response
    }
}

/// Turns every error thrown below it into its `APIError` response, so that every failure,
/// the router's own 404 included, has a JSON body.
///
/// A server failure is logged whole (path, SQL, SQLite's message) under the request id, and the
/// client is told only that id; a busy ledger is logged as a warning.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch {
            let apiError = APIError(error, request: request, requestID: context.id)
            if apiError.status.kind == .serverError {
                let level: Logger.Level = apiError.status == .internalServerError ? .error : .warning
                context.logger.log(
                    level: level, "request failed",
                    metadata: Self.metadata(of: error, request: request, requestID: context.id))
            }
            return try apiError.response(from: request, context: context)
        }
    }

    /// What the log says about a failed request: everything the client is not told.
    static func metadata(of error: any Error, request: Request, requestID: String) -> Logger.Metadata {
        [
            "requestId": "\(requestID)", "method": "\(request.method)", "path": "\(request.uri.path)",
            "error": "\(fullDescription(of: error))",
        ]
    }
}

/// An error as the log writes it: its type and its whole description (for a ledger error, the
/// file, SQLite's message and the SQL), never shown to a client.
func fullDescription(of error: any Error) -> String {
    "\(String(reflecting: type(of: error))): \(error)"
}

/// Refuses, with 401, every request without `Authorization: Bearer TOKEN`.
///
/// The comparison takes the same time wherever the tokens differ, so timing does not reveal
/// how much of a guess was right.
struct BearerTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: [UInt8]

    init(token: String) {
        self.token = Array(token.utf8)
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        // A request the router cannot match reaches this middleware too; one on the path of an
        // open endpoint (a wrong method on /healthz) goes on to its 405 without a token.
        if APIRoutes.isOpen(path: request.uri.path) {
            return try await next(request, context)
        }
        guard let header = request.headers[.authorization], header.count > 7,
            header.prefix(7).lowercased() == "bearer ",
            Self.constantTimeEqual(Array(header.utf8.dropFirst(7)), token)
        else {
            throw APIError.unauthorized
        }
        return try await next(request, context)
    }

    /// Equal bytes, in time that depends only on the lengths.
    static func constantTimeEqual(_ left: [UInt8], _ right: [UInt8]) -> Bool {
        var difference = left.count ^ right.count
        for index in 0..<max(left.count, right.count) {
            let leftByte = index < left.count ? left[index] : 0
            let rightByte = index < right.count ? right[index] : 0
            difference |= Int(leftByte ^ rightByte)
        }
        return difference == 0
    }
}

/// Counts every request by route, method and status, and times it.
///
/// It sits outside `APIErrorMiddleware`, so it sees the final status of every request.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        let start = ContinuousClock.now
        var response = try await next(request, context)
        // The route template (`/api/v1/threads/{id}`), never the raw path: labels stay few.
        let route = context.endpointPath.flatMap { $0 == "NotFound" ? nil : $0 } ?? "unmatched"
        let (method, status, metrics) = (Self.methodLabel(request.method), response.status.code, metrics)
        guard response.body.contentLength == nil else {
            metrics.recordRequest(route: route, method: method, status: status, duration: ContinuousClock.now - start)
            return response
        }
        // A streamed body (an export) is written after the handler returns: time it to its end.
        let body = response.body
        response.body = ResponseBody { writer in
            defer {
                metrics.recordRequest(route: route, method: method, status: status, duration: ContinuousClock.now - start)
            }
            try await body.write(writer)
        }
        return response
    }

    /// The standard methods by name, any other as "other": a client inventing methods must not
    /// be able to create series without end.
    static func methodLabel(_ method: HTTPRequest.Method) -> String {
        switch method {
        case .get, .post, .put, .delete, .head, .options, .patch: return method.rawValue
        default: return "other"
        }
    }
}
