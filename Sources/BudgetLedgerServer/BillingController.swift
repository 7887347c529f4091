import BudgetLedger
import BudgetLedgerWire
import Hummingbird
import Logging

/// Billing: exports of consume events or rollups for a time range, and the resumable event feed.
/// The bodies are the CLI's `export` and `events --json` outputs, byte for byte.
struct BillingController: APIController {
    enum Route: CaseIterable, Sendable {
        case export, events
    }

    static func endpoint(of route: Route) -> Endpoint {
        switch route {
        case .export: return .get("/api/v1/usage/export")
        case .events: return .get("/api/v1/events")
        }
    }

    let ledger: any ServerLedgerStore

    func respond(to route: Route, request: Request, context: BasicRequestContext) async throws -> Response {
        switch route {
        case .export: return try await export(request, context: context)
        case .events: return try await events(request)
        }
    }

    /// `?from=&to=&org=&groupBy=&format=`: `from` inclusive, `to` exclusive (ISO 8601 UTC);
    /// without `groupBy`, every consume event, streamed; with it, one row per group. A `to`
    /// before `from` is an empty range, as `to` equal to `from` is (each parameter is valid alone,
    /// and the OpenAPI document can only describe them alone).
    private func export(_ request: Request, context: BasicRequestContext) async throws -> Response {
        let query = try QueryFields(request, allowed: ["from", "to", "org", "groupBy", "format"])
        let format = try query.choice("format", ExportFormat.self) ?? .json
        let grouping = try query.choice("groupBy", ExportGrouping.self)
        let from = try query.string("from").map { try Timestamps.parse($0, field: "from") }
        var to = try query.string("to").map { try Timestamps.parse($0, field: "to") }
        if let from, let end = to, end < from { to = from }
        let range = ExportQuery(from: from, to: to, organizationID: try query.identifier("org"))
        let headers: HTTPFields = [.contentType: format.contentType]
        if let grouping {
            let rows = try await ledger.rollup(range, by: grouping)
            let text = format.render(rows, grouping: grouping)
            return TextResponse(text: text, contentType: format.contentType).response()
        }
        return try await streamEvents(range, format: format, headers: headers, context: context)
    }

    /// Streams the events from the store through a bounded pipe. The first chunk is awaited
    /// before answering, so that a bad range or an unreadable ledger still gets its 4xx or 5xx;
    /// a failure after that cuts the response short (the client sees an incomplete body, never
    /// the error's text) and is logged under the request id.
    private func streamEvents(
        _ range: ExportQuery, format: ExportFormat, headers: HTTPFields, context: BasicRequestContext
    ) async throws -> Response {
        let pipe = ChunkPipe()
        ledger.startEventExport(range, format: format, into: pipe)
        guard let first = try await pipe.next() else {
            return Response(status: .ok, headers: headers, body: ResponseBody())
        }
        let (logger, requestID) = (context.logger, context.id)
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                defer { pipe.cancel() }
                try await writer.write(first)
                while let chunk = try await Self.next(from: pipe, logger: logger, requestID: requestID) {
                    try await writer.write(chunk)
                }
                try await writer.finish(nil)
            })
    }

    /// The pipe's next chunk; a failure of the export, once the answer has begun, is logged whole
    /// and passed on, which cuts the response short.
    private static func next(from pipe: ChunkPipe, logger: Logger, requestID: String) async throws -> ByteBuffer? {
        do {
            return try await pipe.next()
        } catch {
            logger.error(
                "export failed after the response began; the body was cut short",
                metadata: ["requestId": "\(requestID)", "error": "\(fullDescription(of: error))"])
            throw error
        }
    }

    /// `?after=&limit=`: `{"events": [event…], "lastId": N}`; pass `lastId` as `after` for the next page.
    private func events(_ request: Request) async throws -> Response {
        let query = try QueryFields(request, allowed: ["after", "limit"])
        let after = try query.integer("after") ?? 0
        let limit = try query.integer("limit") ?? 1_000
        guard let pageLimit = Int(exactly: limit) else {
            throw APIError.invalid("limit", "must be 1…\(LedgerLimits.feedPageLimitMax) (got \(limit))")
        }
        let page = try await ledger.events(after: after, limit: pageLimit)
        return JSONResponse(page.json).response()
    }
}

/// Text collected into chunks of about 64 KiB and handed to a `ChunkPipe`.
struct ChunkWriter {
    static let chunkBytes = 64 * 1024
    let pipe: ChunkPipe
    private var buffer = ""

    init(pipe: ChunkPipe) {
        self.pipe = pipe
    }

    mutating func write(_ text: String) throws {
        buffer += text
        if buffer.utf8.count >= Self.chunkBytes { try flush() }
    }

    mutating func flush() throws {
        guard !buffer.isEmpty else { return }
        try pipe.send(ByteBuffer(string: buffer))
        buffer = ""
    }
}
