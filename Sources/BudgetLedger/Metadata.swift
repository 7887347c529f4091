import Foundation

/// A call's metadata: a JSON object of at most `LedgerLimits.metadataBytesMax` bytes, checked
/// once where it enters (a library call, the CLI, the REST server) and then carried as it will
/// be recorded, with the members the ledger indexes (`org_id`, `user_id`) already read out.
///
/// Every public way to make one checks it, so the ledger never parses metadata text on the
/// write path: it records `json` as it is and files the call under `organizationID` and `userID`.
public struct Metadata: Sendable, Equatable, CustomStringConvertible {
    /// The object's JSON text, as it is recorded (and as it reads back, byte for byte).
    public let json: String
    /// The object's `org_id`: an identifier (indexed for billing and org scopes), or nil when absent.
    public let organizationID: String?
    /// The object's `user_id`: an identifier (indexed for billing and user scopes), or nil when absent.
    public let userID: String?

    /// The object's JSON text, as recorded.
    public var description: String { json }

    /// Metadata given as JSON text (a library call): parsed and checked here, and recorded as given.
    ///
    /// - Throws: `LedgerError.invalidInput` naming `metadata` for text over
    ///   `LedgerLimits.metadataBytesMax` bytes or other than a JSON object, or `metadata.org_id` /
    ///   `metadata.user_id` for a member that is not a string or not an identifier.
    public init(json: String) throws {
        try Self.checkSize(json)
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else {
            throw LedgerError.invalidInput(field: "metadata", reason: "must be a JSON object")
        }
        self.json = json
        organizationID = try Self.promoted("org_id", object[Self.organizationKey].map(PromotedMember.init))
        userID = try Self.promoted("user_id", object[Self.userKey].map(PromotedMember.init))
    }

    /// Metadata an edge has already parsed (the server's body, the CLI's flags): written here as
    /// compact JSON text with its keys sorted, and checked as `init(json:)` checks text, without
    /// parsing anything again.
    ///
    /// - Parameter members: the object's members.
    /// - Throws: `LedgerError.invalidInput`, as `init(json:)`.
    public init(_ members: [String: Value]) throws {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(128)
        Value.object(members).write(to: &bytes)
        let json = String(decoding: bytes, as: UTF8.self)
        try Self.checkSize(json)
        self.json = json
        organizationID = try Self.promoted("org_id", members[Self.organizationKey].map(PromotedMember.init))
        userID = try Self.promoted("user_id", members[Self.userKey].map(PromotedMember.init))
    }

    /// Metadata read back from a row the ledger wrote (`package`: every store reads rows): it was
    /// checked when recorded, and its indexed members were recorded beside it, so nothing is parsed.
    package init(recorded json: String, organizationID: String?, userID: String?) {
        self.json = json
        self.organizationID = organizationID
        self.userID = userID
    }

    /// `init(recorded:organizationID:userID:)` for a row's nullable column: nil when it holds none.
    package static func recorded(_ json: String?, organizationID: String?, userID: String?) -> Metadata? {
        json.map { Metadata(recorded: $0, organizationID: organizationID, userID: userID) }
    }

    private static let organizationKey = "org_id"
    private static let userKey = "user_id"
    /// The members the ledger indexes (`package`: the server checks them by its own id rule first).
    package static let indexedKeys = [organizationKey, userKey]

    private static func checkSize(_ json: String) throws {
        let bytes = json.utf8.count
        if bytes > LedgerLimits.metadataBytesMax {
            throw LedgerError.invalidInput(
                field: "metadata", reason: "is \(bytes) bytes; the limit is \(LedgerLimits.metadataBytesMax) bytes")
        }
    }

    /// A member the ledger indexes, as found: a string, or something else.
    private enum PromotedMember {
        case string(String)
        case other

        init(_ value: Any) { self = (value as? String).map(Self.string) ?? .other }
        init(_ value: Value) {
            if case .string(let text) = value { self = .string(text) } else { self = .other }
        }
    }

    /// The indexed member `key`: nil when absent, else a string obeying the identifier rules.
    private static func promoted(_ key: String, _ member: PromotedMember?) throws -> String? {
        switch member {
        case nil: return nil
        case .other?: throw LedgerError.invalidInput(field: "metadata.\(key)", reason: "must be a string")
        case .string(let text)?:
            try Validate.identifier(text, field: "metadata.\(key)")
            return text
        }
    }
}

extension Metadata {
    /// A JSON value inside metadata, as an edge parsed it.
    public indirect enum Value: Sendable, Equatable {
        /// JSON's `null`.
        case null
        /// `true` or `false`.
        case bool(Bool)
        /// A whole number inside Int64, written as its digits.
        case integer(Int64)
        /// Any other number, written as Swift's shortest round-tripping text (`2.5`, `1e-05`).
        case number(Double)
        /// A string (written with quotes, backslashes and control characters escaped).
        case string(String)
        /// An array, in order.
        case array([Value])
        /// An object; its members are written with their keys sorted.
        case object([String: Value])

        /// Compact JSON, written as `JSONText` writes each part (so the server's metadata text is
        /// byte for byte what it recorded before metadata was checked at the edge).
        func write(to bytes: inout [UInt8]) {
            switch self {
            case .null: bytes.append(contentsOf: "null".utf8)
            case .bool(let value): JSONText.append(value, to: &bytes)
            case .integer(let value): JSONText.append(value, to: &bytes)
            case .number(let value): JSONText.append(value, to: &bytes)
            case .string(let text): JSONText.append(text, to: &bytes)
            case .array(let items):
                bytes.append(UInt8(ascii: "["))
                for (index, item) in items.enumerated() {
                    if index > 0 { bytes.append(UInt8(ascii: ",")) }
                    item.write(to: &bytes)
                }
                bytes.append(UInt8(ascii: "]"))
            case .object(let members):
                bytes.append(UInt8(ascii: "{"))
                for (index, (key, value)) in members.sorted(by: { $0.key < $1.key }).enumerated() {
                    if index > 0 { bytes.append(UInt8(ascii: ",")) }
                    JSONText.append(key, to: &bytes)
                    bytes.append(UInt8(ascii: ":"))
                    value.write(to: &bytes)
                }
                bytes.append(UInt8(ascii: "}"))
            }
        }
    }
}

extension Metadata.Value: Decodable {
    /// Any JSON value (the CLI reads `--meta-json` this way): a boolean stays a boolean, a whole
    /// number inside Int64 is an integer, any other number a `number`.
    public init(from decoder: any Decoder) throws {
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
        } else if let value = try? container.decode([Metadata.Value].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: Metadata.Value].self))
        }
    }
}
