import BudgetLedger
import BudgetLedgerWire
import Hummingbird

/// A JSON body written by the library's `JSONValue`: ordered keys and exact decimal amounts,
/// byte for byte what the CLI prints with `--json`.
struct JSONResponse: ResponseGenerator {
    let value: JSONValue
    let status: HTTPResponse.Status

    init(_ value: JSONValue, status: HTTPResponse.Status = .ok) {
        self.value = value
        self.status = status
    }

    func response() -> Response {
        Self.response(bytes: value.serializedBytes(), status: status)
    }

    /// A response whose JSON body is already written (by `JSONWriter`).
    static func response(bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
        let buffer = ByteBuffer(bytes: bytes)
        return Response(
            status: status,
            headers: [.contentType: "application/json", .contentLength: String(buffer.readableBytes)],
            body: ResponseBody(byteBuffer: buffer))
    }

    func response(from request: Request, context: some RequestContext) -> Response {
        response()
    }
}

/// A non-JSON body of a fixed type: the OpenAPI document, Prometheus text, CSV.
struct TextResponse: ResponseGenerator {
    let text: String
    let contentType: String

    func response() -> Response {
        let buffer = ByteBuffer(string: text)
        return Response(
            status: .ok, headers: [.contentType: contentType, .contentLength: String(buffer.readableBytes)],
            body: ResponseBody(byteBuffer: buffer))
    }

    func response(from request: Request, context: some RequestContext) -> Response {
        response()
    }
}
