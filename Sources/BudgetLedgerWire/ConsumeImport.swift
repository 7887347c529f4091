import BudgetLedger
import Foundation

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
        let fields: ExportedConsume
        do {
            fields = try JSONDecoder().decode(ExportedConsume.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw Self.describe(error, line: line)
        } catch let error as LedgerError {
            throw error.onLine(line)
        }
        if let kind = fields.kind, kind != "consume" {
            throw LedgerError.invalidInput(
                field: "kind on line \(line)", reason: "must be consume (an export of consume events), not \(kind)")
        }
        let timestamp = try Result { try Timestamps.parse(fields.timestamp, field: "timestamp") }
            .mapError { ($0 as? LedgerError)?.onLine(line) ?? $0 }.get()
        let metadata = try Result { try fields.metadata.map(Metadata.init) }
            .mapError { ($0 as? LedgerError)?.onLine(line) ?? $0 }.get()
        return try ImportedConsume(
            line: line, sourceEventID: fields.id, timestampMicroseconds: timestamp, threadID: fields.threadId,
            promptTokens: fields.promptTokens, completionTokens: fields.completionTokens,
            usage: UsageDetails(
                agentID: fields.agentId, model: fields.model, provider: fields.provider,
                latencyMilliseconds: fields.latencyMs, metadata: metadata))
    }

    /// A decoding failure as bad input naming the member (its path from the line's object) and the line.
    private static func describe(_ error: DecodingError, line: Int) -> LedgerError {
        func path(_ context: DecodingError.Context, adding key: (any CodingKey)? = nil) -> String {
            let keys = context.codingPath + (key.map { [$0] } ?? [])
            return keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        let (member, reason): (String, String)
        switch error {
        case .keyNotFound(let key, let context): (member, reason) = (path(context, adding: key), "is missing")
        case .valueNotFound(_, let context): (member, reason) = (path(context), "must not be null")
        case .typeMismatch(let type, let context): (member, reason) = (path(context), "must be \(Self.describe(type))")
        case .dataCorrupted(let context): (member, reason) = (path(context), "is not valid")
        @unknown default: (member, reason) = ("", "")
        }
        guard !member.isEmpty else {
            return .invalidInput(field: "line \(line)", reason: "is not one JSON object (an export line)")
        }
        return .invalidInput(field: "\(member) on line \(line)", reason: reason)
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is Int64.Type: return "a whole number"
        case is String.Type: return "a string"
        case is [String: Metadata.Value].Type, is [String: Any].Type: return "a JSON object"
        default: return "of another type"
        }
    }
}

/// The members of an export line that an import reads (`LedgerEvent.json`'s names).
private struct ExportedConsume: Decodable {
    let id: Int64
    let timestamp: String
    let kind: String?
    let threadId: String
    let promptTokens: Int64
    let completionTokens: Int64
    let agentId: String?
    let model: String?
    let provider: String?
    let latencyMs: Int64?
    let metadata: [String: Metadata.Value]?
}
