import BudgetLedger

/// Reading an NDJSON event export (`export --format ndjson`, one consume event per line) back
/// as consumes to record: the input of `budget-ledger import`.
public enum ConsumeImport {
    /// The longest line taken, in bytes: an event's fields (each id at most 256 bytes) and its
    /// metadata (at most 16 KiB) fit several times over; a longer line is refused, never buffered.
    public static let lineBytesMax = 64 * 1024

    /// The consume that one export line holds.
    ///
    /// Read: `id` (the source event's, which makes the import key), `timestamp`, `threadId`,
    /// `promptTokens`, `completionTokens`, and when present and not null `agentId`, `model`,
    /// `provider`, `latencyMs`, `metadata`; `kind`, when present, must be `consume`. Not taken:
    /// `cost` (the price in force at the timestamp decides it here), `totalTokens`, `orgId` and
    /// `userId` (read from the metadata again), `idempotencyKey` (the import key replaces it) and
    /// `reservationId` (the source's hold does not exist here). Other members are ignored.
    ///
    /// - Parameters:
    ///   - bytes: the line's UTF-8 bytes, without its newline.
    ///   - line: its number in the input, from 1.
    /// - Throws: `LedgerError.invalidInput` naming the field and the line (`threadId on line 4`),
    ///   or `line N` itself for a line that is not one JSON object.
    public static func consume(line bytes: some Collection<UInt8>, number line: Int) throws -> ImportedConsume {
        guard bytes.count <= lineBytesMax else {
            throw LedgerError.invalidInput(
                field: "line \(line)", reason: "is \(bytes.count) bytes; the limit is \(lineBytesMax) bytes")
        }
        let fields = try LineFields(picking: bytes) ?? LineFields(parsing: bytes, line: line)
        let timestamp: Int64, threadID: String, promptTokens: Int64, completionTokens: Int64, sourceEventID: Int64
        let usage: UsageDetails
        do {
            if let kind = try fields.string(.kind), kind != "consume" {
                throw LedgerError.invalidInput(field: "kind", reason: "must be consume (an export of consume events), not \(kind)")
            }
            sourceEventID = try fields.required(fields.integer(.id), "id")
            timestamp = try Timestamps.parse(try fields.required(fields.string(.timestamp), "timestamp"), field: "timestamp")
            threadID = try fields.required(fields.string(.threadId), "threadId")
            promptTokens = try fields.required(fields.integer(.promptTokens), "promptTokens")
            completionTokens = try fields.required(fields.integer(.completionTokens), "completionTokens")
            usage = UsageDetails(
                agentID: try fields.string(.agentId), model: try fields.string(.model),
                provider: try fields.string(.provider), latencyMilliseconds: try fields.integer(.latencyMs),
                metadata: try fields.object(.metadata).map { try Metadata($0.mapValues(\.metadataValue)) })
        } catch let error as LedgerError {
            throw error.onLine(line)
        }
        // Checks the consume's own rules and names the line itself.
        return try ImportedConsume(
            line: line, sourceEventID: sourceEventID, timestampMicroseconds: timestamp, threadID: threadID,
            promptTokens: promptTokens, completionTokens: completionTokens, usage: usage)
    }

    /// A line that is not JSON, as bad input naming the line (and where), or the member given twice.
    fileprivate static func describe(_ failure: JSONBodyParser.Failure, line: Int) -> LedgerError {
        switch failure {
        case .syntax(let expected, let offset):
            return .invalidInput(field: "line \(line)", reason: "is not valid JSON (expected \(expected) at byte \(offset))")
        case .tooDeep:
            return .invalidInput(
                field: "line \(line)", reason: "is not valid JSON (nested more than \(JSONBodyParser.depthMax) deep)")
        case .duplicateName(let path):
            return .invalidInput(field: "\(path) on line \(line)", reason: "is given more than once")
        }
    }
}

/// The members of one export line that the import reads, by name, with their types checked (a
/// bad one is named with its line by the caller, as `ImportedConsume` names its fields).
private struct LineFields {
    /// The members read; any other member of a line is ignored.
    enum Member: Int, CaseIterable {
        case id, kind, timestamp, threadId, promptTokens, completionTokens, agentId, model, provider, latencyMs, metadata

        /// Its name in an export line.
        var name: String { Self.names[rawValue] }

        private static let names = [
            "id", "kind", "timestamp", "threadId", "promptTokens", "completionTokens", "agentId", "model", "provider",
            "latencyMs", "metadata",
        ]

        /// Each member's name as UTF-8, by raw value.
        static let namesUTF8: [[UInt8]] = names.map { Array($0.utf8) }

        /// The member named by `bytes`, if the import reads it.
        init?(named bytes: UnsafeBufferPointer<UInt8>) {
            for (index, name) in Self.namesUTF8.enumerated() where name.count == bytes.count && name.elementsEqual(bytes) {
                self.init(rawValue: index)
                return
            }
            return nil
        }
    }

    /// The values read, by `Member`'s raw value (nil: absent).
    private var values: [JSONInput?] = Array(repeating: nil, count: Member.allCases.count)

    /// The members picked from a line walked once without building a table of every member
    /// (`JSONBodyParser.forEachMember`); nil when the walk stops or finds a name given twice, so
    /// that `init(parsing:line:)` reads the line again and names its fault as it always has.
    init?(picking bytes: some Collection<UInt8>) {
        var picked = LineFields()
        let walked = bytes.withContiguousStorageIfAvailable { buffer in
            var names: [UnsafeBufferPointer<UInt8>] = []
            names.reserveCapacity(32)
            return try? JSONBodyParser.forEachMember(of: buffer) { name, value in
                // An export line has about 25 names: a linear look costs less than hashing them.
                for earlier in names where earlier.count == name.count && earlier.elementsEqual(name) {
                    throw JSONBodyParser.Failure.duplicateName(path: "")
                }
                names.append(name)
                if let member = Member(named: name) { picked.values[member.rawValue] = value }
            }
        }
        guard walked == true else { return nil }
        self = picked
    }

    /// The members of a line parsed whole.
    ///
    /// - Throws: `LedgerError.invalidInput` naming the line (not JSON, not an object) or the
    ///   member given twice.
    init(parsing bytes: some Collection<UInt8>, line: Int) throws {
        let members: [String: JSONInput]
        do {
            guard case .object(let object) = try JSONBodyParser.parse(bytes) else {
                throw LedgerError.invalidInput(field: "line \(line)", reason: "is not a JSON object (an export line)")
            }
            members = object
        } catch let failure as JSONBodyParser.Failure {
            throw ConsumeImport.describe(failure, line: line)
        }
        values = Member.allCases.map { members[$0.name] }
    }

    private init() {}

    /// A string member; nil when absent or null.
    func string(_ member: Member) throws -> String? {
        let name = member.name
        switch values[member.rawValue] {
        case nil, .null?: return nil
        case .string(let text)?: return text
        case let other?: throw LedgerError.invalidInput(field: name, reason: "must be a string, not \(other.typeName)")
        }
    }

    /// A whole-number member inside Int64; nil when absent or null.
    func integer(_ member: Member) throws -> Int64? {
        let name = member.name
        switch values[member.rawValue] {
        case nil, .null?: return nil
        case .integer(let value)?: return value
        case .number?: throw LedgerError.invalidInput(field: name, reason: "must be a whole number inside Int64")
        case let other?: throw LedgerError.invalidInput(field: name, reason: "must be a number, not \(other.typeName)")
        }
    }

    /// An object member; nil when absent or null.
    func object(_ member: Member) throws -> [String: JSONInput]? {
        let name = member.name
        switch values[member.rawValue] {
        case nil, .null?: return nil
        case .object(let members)?: return members
        case let other?: throw LedgerError.invalidInput(field: name, reason: "must be a JSON object, not \(other.typeName)")
        }
    }

    /// `value`, which an export line always has.
    func required<Value>(_ value: Value?, _ name: String) throws -> Value {
        guard let value else { throw LedgerError.invalidInput(field: name, reason: "is missing") }
        return value
    }
}
