import BudgetLedger
import BudgetLedgerWire
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

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
        let bytes = buffer.readableBytesView
        guard !bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) else {
            members = [:]
            return
        }
        let parsed: JSONInput
        do {
            parsed = try JSONBodyParser.parse(bytes)
        } catch {
            throw error.apiError
        }
        guard case .object(let object) = parsed else {
            throw APIError.invalid("body", "must be a JSON object, not \(parsed.typeName)")
        }
        // Sorted only when one is unknown, so that the first named is the same every time.
        if object.keys.contains(where: { !allowed.contains($0) }),
            let unknown = object.keys.sorted().first(where: { !allowed.contains($0) })
        {
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

    /// The count when the member is a JSON integer (refusing a negative one), else nil.
    func optionalCount(ifInteger field: String) throws -> Int64? {
        guard case .integer? = members[field] else { return nil }
        return try optionalCount(field)
    }

    /// A string, or nil when absent (null is refused: for fields whose absence means a default
    /// that null must not be taken to mean).
    func stringNotNull(_ field: String) throws -> String? {
        if case .null? = members[field] { throw APIError.invalid(field, "must be a string, not null (leave it out instead)") }
        return try string(field)
    }

    /// - Throws: a 400 when `field` is null (for fields whose absence means something null must
    ///   not be taken to mean).
    func refuseNull(_ field: String) throws {
        if case .null? = members[field] { throw APIError.invalid(field, "must not be null (leave it out instead)") }
    }

    /// A string, or nil when absent or null.
    func string(_ field: String) throws -> String? {
        switch members[field] {
        case nil, .null?: return nil
        case .string(let value)?: return value
        case let other?: throw APIError.invalid(field, "must be a string, not \(other.typeName)")
        }
    }

    /// A string that is an id by `APIIdentifier`'s rule, or nil when absent or null.
    func identifier(_ field: String) throws -> String? {
        guard let value = try string(field) else { return nil }
        try APIIdentifier.validate(value, field: field)
        return value
    }

    /// The call's metadata, a JSON object, or nil when absent or null: built from the object this
    /// body's parse already holds (compact, keys sorted), so nothing parses it again. Its `org_id`
    /// and `user_id`, when strings, must first be ids by `APIIdentifier`'s rule.
    ///
    /// - Throws: a 400 naming `field`, or `field.org_id` / `field.user_id`, for what the REST API
    ///   or the ledger refuses (`Metadata`'s size, type and id rules).
    func metadata(_ field: String) throws -> Metadata? {
        switch members[field] {
        case nil, .null?:
            return nil
        case .object(let object)?:
            for key in Metadata.indexedKeys {
                if case .string(let value)? = object[key] { try APIIdentifier.validate(value, field: "\(field).\(key)") }
            }
            return try Metadata(object.mapValues(\.metadataValue))
        case let other?:
            throw APIError.invalid(field, "must be a JSON object, not \(other.typeName)")
        }
    }
}

extension BodyFields {
    /// The header a retrying client may send instead of the body's `idempotencyKey`.
    static let idempotencyHeader = HTTPField.Name("Idempotency-Key")!

    /// The body's `idempotencyKey` or the `Idempotency-Key` header of `request` (consume,
    /// settle, reserve); nil when neither is given.
    ///
    /// - Throws: 400 for a malformed key; a 409 conflict when both are given and differ.
    func idempotencyKey(_ request: Request) throws -> String? {
        let fromBody = try identifier("idempotencyKey")
        let fromHeader = request.headers[Self.idempotencyHeader]
        if let fromHeader { try APIIdentifier.validateHeader(fromHeader, field: "Idempotency-Key") }
        // Two keys for one request conflict as a key reused for another request does (409): each
        // is valid alone, and the OpenAPI document cannot say that they must agree.
        if let fromBody, let fromHeader, fromBody != fromHeader {
            throw LedgerError.conflict(
                "the body's idempotencyKey \"\(fromBody)\" differs from the Idempotency-Key header's \"\(fromHeader)\"")
        }
        return fromBody ?? fromHeader
    }
}

/// The ids the REST API takes (thread, agent, model, provider, idempotency key, org and user):
/// 1…256 printable ASCII characters, or 1…64 characters of which none is a control character.
///
/// The ledger's own limit is 256 UTF-8 bytes, which JSON Schema cannot state: its `maxLength`
/// counts characters. This rule is the largest simple one inside the ledger's (a character is at
/// most 4 bytes) that `openapi.yaml` can state exactly as `pattern`, so that every id the
/// document allows is served and every id it refuses is refused. The ledger still checks its
/// own limit after this one.
enum APIIdentifier {
    /// ASCII ids: one byte per character.
    static let asciiCharactersMax = LedgerLimits.identifierBytesMax
    /// Other ids: four bytes per character at most.
    static let charactersMax = LedgerLimits.identifierBytesMax / 4

    /// The rule as the `pattern` of the OpenAPI document writes it (a search, anchored).
    static let pattern =
        #"^(?:[ -~]{1,\#(asciiCharactersMax)}|[^\u0000-\u001F\u007F-\u009F]{1,\#(charactersMax)})$"#

    /// The rule for an id sent as a header value: 1…256 printable ASCII characters, neither first
    /// nor last a space (HTTP strips those), as the OpenAPI document writes it.
    static let headerPattern = #"^[!-~](?:[ -~]{0,\#(asciiCharactersMax - 2)}[!-~])?$"#

    /// The rule for the model a price is set for over REST (`PUT /api/v1/prices/{model}`): a model
    /// name or a pattern with one trailing `*`, in 1…256 printable ASCII characters, with at least
    /// one that is neither a space nor the star (the ledger refuses other stars and blank names).
    static let pricePattern = #"^[ -)+-~]*[!-)+-~][ -)+-~]*\*?$"#

    /// - Throws: `LedgerError.invalidInput` naming `field` when `value` breaks `pricePattern`.
    static func validatePricePattern(_ value: String, field: String) throws {
        let bytes = Array(value.utf8)
        guard (1...asciiCharactersMax).contains(bytes.count), bytes.allSatisfy({ (0x20...0x7E).contains($0) }) else {
            throw APIError.invalid(field, "must be 1…\(asciiCharactersMax) printable ASCII characters")
        }
        let body = bytes.last == UInt8(ascii: "*") ? bytes.dropLast() : bytes[...]
        guard !body.contains(UInt8(ascii: "*")), body.contains(where: { $0 != UInt8(ascii: " ") }) else {
            throw APIError.invalid(field, "must be a model name or a pattern with one trailing * (e.g. gpt-4o-20*)")
        }
    }

    /// - Throws: `LedgerError.invalidInput` naming `field` when the header value `value` breaks
    ///   `headerPattern` (HTTP has already stripped surrounding spaces).
    static func validateHeader(_ value: String, field: String) throws {
        guard !value.isEmpty else { throw APIError.invalid(field, "must not be empty") }
        guard value.utf8.allSatisfy({ (0x20...0x7E).contains($0) }) else {
            throw APIError.invalid(field, "must be printable ASCII")
        }
        if value.utf8.count > asciiCharactersMax {
            throw APIError.invalid(field, "is \(value.utf8.count) characters long; the limit is \(asciiCharactersMax)")
        }
    }

    /// - Throws: `LedgerError.invalidInput` naming `field` when `value` breaks the rule.
    static func validate(_ value: String, field: String) throws {
        guard !value.isEmpty else { throw APIError.invalid(field, "must not be empty") }
        // C0 controls, DEL and C1 controls: Unicode's general category Cc, as the ledger's check.
        if let control = value.unicodeScalars.first(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) {
            throw APIError.invalid(
                field, "contains the control character U+\(String(control.value, radix: 16, uppercase: true))")
        }
        let characters = value.unicodeScalars.count
        if value.utf8.allSatisfy({ $0 < 0x80 }) {
            if characters > asciiCharactersMax {
                throw APIError.invalid(field, "is \(characters) characters long; the limit is \(asciiCharactersMax)")
            }
        } else if characters > charactersMax {
            throw APIError.invalid(
                field,
                "is \(characters) characters long; the limit is \(charactersMax) for an id with characters outside "
                    + "ASCII (\(asciiCharactersMax) for ASCII)")
        }
    }
}

/// The query parameters of a request, checked against the ones the endpoint takes.
///
/// A repeated or unknown parameter, or one without a value (`?from=`), is a 400: the OpenAPI
/// document describes each parameter by its values, and an empty value is none of them.
struct QueryFields: Sendable {
    private let values: [String: String]

    init(_ request: Request, allowed: Set<String>) throws {
        var values: [String: String] = [:]
        for (name, value) in try Self.pairs(of: request.uri.query ?? "") {
            guard allowed.contains(name) else {
                let names = allowed.sorted().joined(separator: ", ")
                throw APIError.invalid(
                    name, "is not a query parameter of this endpoint (" + (names.isEmpty ? "it takes none" : "allowed: \(names)") + ")")
            }
            guard values[name] == nil else { throw APIError.invalid(name, "is given more than once") }
            guard !value.isEmpty else { throw APIError.invalid(name, "must not be empty") }
            values[name] = value
        }
        self.values = values
    }

    /// The decoded `name=value` pairs of a query string, as HTML forms and most HTTP clients
    /// encode them: `+` is a space, `%XX` a UTF-8 byte; empty pairs (`a=1&&b=2`) are skipped.
    ///
    /// - Throws: a 400 for a name or value that is not valid percent-encoded UTF-8.
    static func pairs(of query: String) throws -> [(name: String, value: String)] {
        try query.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let decode = { (text: Substring) throws -> String in
                guard let decoded = text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding else {
                    throw APIError.invalid(String(parts[0]), "is not valid percent-encoded UTF-8")
                }
                return decoded
            }
            return (name: try decode(parts[0]), value: parts.count > 1 ? try decode(parts[1]) : "")
        }
    }

    func string(_ field: String) -> String? { values[field] }

    /// An id by `APIIdentifier`'s rule, or nil when absent.
    func identifier(_ field: String) throws -> String? {
        guard let value = values[field] else { return nil }
        try APIIdentifier.validate(value, field: field)
        return value
    }

    /// A whole number, or nil when absent.
    func integer(_ field: String) throws -> Int64? {
        guard let text = values[field] else { return nil }
        return try wholeNumber(text, field: field)
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

/// `text` as an Int64 written as JSON writes integers: an optional minus and decimal digits, no
/// plus sign, no spaces; `field` names it in a 400.
func wholeNumber(_ text: some StringProtocol, field: String) throws -> Int64 {
    let digits = text.hasPrefix("-") ? text.dropFirst() : text[...]
    guard !digits.isEmpty, digits.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let value = Int64(text) else {
        throw APIError.invalid(field, "must be a whole number from \(Int64.min) to \(Int64.max) (got \"\(text)\")")
    }
    return value
}

extension BasicRequestContext {
    /// The percent-decoded path parameter `name`, an id by `APIIdentifier`'s rule; `field` names
    /// it in a 400. The ledger then checks it as it checks every id.
    func pathIdentifier(_ name: String, field: String) throws -> String {
        let raw = try parameters.require(name)
        guard let decoded = raw.removingPercentEncoding else {
            throw APIError.invalid(field, "is not a valid percent-encoded path segment")
        }
        try APIIdentifier.validate(decoded, field: field)
        return decoded
    }
}

extension JSONBodyParser.Failure {
    /// The 400 this failure is: the body is not valid JSON (saying where), or it nests too deep,
    /// or the field given twice.
    var apiError: LedgerError {
        switch self {
        case .syntax(let expected, let offset):
            return APIError.invalid("body", "is not valid JSON (expected \(expected) at byte \(offset))")
        case .tooDeep:
            return APIError.invalid("body", "is not valid JSON (arrays and objects nest more than \(JSONBodyParser.depthMax) deep)")
        case .duplicateName(let path):
            return APIError.invalid(path, "is given more than once")
        }
    }
}
