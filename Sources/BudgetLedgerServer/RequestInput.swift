import BudgetLedger
import BudgetLedgerWire
import Foundation
import Hummingbird
import NIOCore

/// A JSON value as the client sent it, decoded strictly: a number is never read as a Bool, a
/// string never as a number.
enum JSONInput: Decodable, Sendable {
    case null
    case bool(Bool)
    case integer(Int64)
    /// A fraction, or an integer outside Int64.
    case number(Double)
    case string(String)
    case array([JSONInput])
    case object([String: JSONInput])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONInput].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONInput].self))
        }
    }

    /// As the library's JSONValue, object keys sorted (as the CLI writes `--meta`).
    var jsonValue: JSONValue {
        switch self {
        case .null: return .null
        case .bool(let value): return .bool(value)
        case .integer(let value): return .integer(value)
        case .number(let value): return .double(value)
        case .string(let value): return .string(value)
        case .array(let items): return .array(items.map(\.jsonValue))
        case .object(let members):
            return .object(members.sorted { $0.key < $1.key }.map { ($0.key, $0.value.jsonValue) })
        }
    }

    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .integer, .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// The fields of a JSON request body, checked against the fields the endpoint takes.
///
/// An empty body reads as `{}`. Every problem is a 400 naming the field, or a 413 for a body
/// over the limit.
struct BodyFields: Sendable {
    private let members: [String: JSONInput]

    /// Reads and parses the body of `request`.
    ///
    /// - Parameters:
    ///   - allowed: the fields the endpoint takes; any other is refused.
    ///   - limit: the most bytes the body may hold.
    init(_ request: Request, allowed: Set<String>, limit: Int) async throws {
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > limit {
            throw APIError.bodyTooLarge(limit: limit)
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw APIError.bodyTooLarge(limit: limit)
        }
        let data = Data(buffer.readableBytesView)
        guard !data.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) else {
            members = [:]
            return
        }
        guard let parsed = try? JSONDecoder().decode(JSONInput.self, from: data) else {
            throw APIError.invalid("body", "is not valid JSON")
        }
        guard case .object(let object) = parsed else {
            throw APIError.invalid("body", "must be a JSON object, not \(parsed.typeName)")
        }
        if let unknown = object.keys.sorted().first(where: { !allowed.contains($0) }) {
            let names = allowed.sorted().joined(separator: ", ")
            throw APIError.invalid(
                unknown, "is not a field of this request (" + (names.isEmpty ? "it takes no body" : "allowed: \(names)") + ")")
        }
        members = object
    }

    /// A count that is zero or more: required when `defaultValue` is nil.
    func count(_ field: String, default defaultValue: Int64? = nil) throws -> Int64 {
        guard let value = try optionalCount(field) else {
            if let defaultValue { return defaultValue }
            throw APIError.invalid(field, "is required")
        }
        return value
    }

    /// A count that is zero or more, or nil when absent or null.
    func optionalCount(_ field: String) throws -> Int64? {
        switch members[field] {
        case nil, .null?:
            return nil
        case .integer(let value)?:
            guard value >= 0 else { throw APIError.invalid(field, "must not be negative (got \(value))") }
            return value
        case .number(let value)?:
            throw APIError.invalid(field, "must be a whole number from 0 to \(Int64.max) (got \(value))")
        case let other?:
            throw APIError.invalid(field, "must be a whole number, not \(other.typeName)")
        }
    }

    /// A string, or nil when absent or null.
    func string(_ field: String) throws -> String? {
        switch members[field] {
        case nil, .null?: return nil
        case .string(let value)?: return value
        case let other?: throw APIError.invalid(field, "must be a string, not \(other.typeName)")
        }
    }

    /// A JSON object as compact text (keys sorted), or nil when absent or null.
    func objectText(_ field: String) throws -> String? {
        switch members[field] {
        case nil, .null?: return nil
        case .object?: return members[field]!.jsonValue.serialized()
        case let other?: throw APIError.invalid(field, "must be a JSON object, not \(other.typeName)")
        }
    }
}

/// The query parameters of a request, checked against the ones the endpoint takes.
///
/// An empty value (`?from=`) reads as absent; a repeated or unknown parameter is a 400.
struct QueryFields: Sendable {
    private let values: [String: String]

    init(_ request: Request, allowed: Set<String>) throws {
        var values: [String: String] = [:]
        for (key, value) in request.uri.queryParameters {
            let name = String(key)
            guard allowed.contains(name) else {
                let names = allowed.sorted().joined(separator: ", ")
                throw APIError.invalid(
                    name, "is not a query parameter of this endpoint (" + (names.isEmpty ? "it takes none" : "allowed: \(names)") + ")")
            }
            guard values[name] == nil else { throw APIError.invalid(name, "is given more than once") }
            if !value.isEmpty { values[name] = String(value) }
        }
        self.values = values
    }

    func string(_ field: String) -> String? { values[field] }

    /// A whole number, or nil when absent.
    func integer(_ field: String) throws -> Int64? {
        guard let text = values[field] else { return nil }
        guard let value = Int64(text) else { throw APIError.invalid(field, "must be a whole number (got \"\(text)\")") }
        return value
    }

    /// `true` or `false`, or nil when absent.
    func bool(_ field: String) throws -> Bool? {
        switch values[field] {
        case nil: return nil
        case "true"?: return true
        case "false"?: return false
        case let text?: throw APIError.invalid(field, "must be true or false (got \"\(text)\")")
        }
    }

    /// One of `type`'s raw values, or nil when absent.
    func choice<Choice: RawRepresentable & CaseIterable>(_ field: String, _ type: Choice.Type) throws -> Choice?
    where Choice.RawValue == String {
        guard let text = values[field] else { return nil }
        guard let choice = Choice(rawValue: text) else {
            let names = Choice.allCases.map(\.rawValue).joined(separator: ", ")
            throw APIError.invalid(field, "must be one of \(names) (got \"\(text)\")")
        }
        return choice
    }
}

extension BasicRequestContext {
    /// The percent-decoded path parameter `name`; `field` names it in a 400. The ledger then
    /// checks it as it checks every id.
    func pathIdentifier(_ name: String, field: String) throws -> String {
        let raw = try parameters.require(name)
        guard let decoded = raw.removingPercentEncoding else {
            throw APIError.invalid(field, "is not a valid percent-encoded path segment")
        }
        return decoded
    }
}
