import BudgetLedger
import Foundation
import Testing

/// Metadata is checked once, where it is made, and the ledger records what it is handed.
@Suite("Metadata: checked where it is made, recorded as made")
struct MetadataTests {
    /// Text of `bytes` UTF-8 bytes: one string member padded to size.
    static func object(bytes: Int) -> String {
        let frame = #"{"note":""}"#
        return #"{"note":""# + String(repeating: "x", count: bytes - frame.utf8.count) + #""}"#
    }

    /// Each way a `Metadata` can be refused, and the error (as `LedgerError` describes it) the
    /// ledger has always reported for it.
    static let refusals: [(text: String, error: String)] = [
        (object(bytes: LedgerLimits.metadataBytesMax + 1), "invalid metadata: is 16385 bytes; the limit is 16384 bytes"),
        ("[1,2]", "invalid metadata: must be a JSON object"),
        ("not json", "invalid metadata: must be a JSON object"),
        (#"{"org_id":7}"#, "invalid metadata.org_id: must be a string"),
        (#"{"org_id":"acme","user_id":null}"#, "invalid metadata.user_id: must be a string"),
        (#"{"user_id":""}"#, "invalid metadata.user_id: must not be empty"),
        (#"{"org_id":"a\u0001b"}"#, "invalid metadata.org_id: contains the control character U+1"),
    ]

    /// The text of the `LedgerError.invalidInput` that `body` throws, or what went otherwise.
    static func refusal(_ body: () throws -> Void) -> String {
        do {
            try body()
            return "no error"
        } catch let error as LedgerError {
            guard case .invalidInput = error else { return "not invalid input: \(error)" }
            return "\(error)"
        } catch {
            return "not a LedgerError: \(error)"
        }
    }

    @Test func textIsKeptByteForByteWithItsIndexedMembersReadOut() throws {
        // Proves: a library caller's text is recorded as given (spaces, key order) and its
        // org_id and user_id are read out once, when the Metadata is made.
        let text = #"{ "user_id" : "ann", "n": [1, 2.50], "org_id": "acme" }"#
        let metadata = try Metadata(json: text)
        #expect(metadata.json == text)
        #expect(metadata.organizationID == "acme")
        #expect(metadata.userID == "ann")
    }

    @Test func membersAreWrittenCompactWithTheirKeysSorted() throws {
        // Proves: an edge that parsed the object itself hands over members, and the ledger writes
        // the text the REST server always recorded: compact, keys sorted at every depth.
        let metadata = try Metadata([
            "z": .string("\"q\"\n"), "org_id": .string("acme"),
            "a": .array([.integer(1), .number(2.5), .bool(true), .null, .object(["y": .integer(-3), "b": .object([:])])]),
        ])
        #expect(metadata.json == #"{"a":[1,2.5,true,null,{"b":{},"y":-3}],"org_id":"acme","z":"\"q\"\n"}"#)
        #expect(metadata.organizationID == "acme")
        #expect(metadata.userID == nil)
    }

    @Test("Text and members are refused alike, with the errors the ledger always gave", arguments: 0..<7)
    func refusedAlike(index: Int) throws {
        // Proves: neither door makes a Metadata that breaks a rule, and both name the field and
        // the rule exactly as the ledger did when it parsed the text itself.
        let (text, expected) = Self.refusals[index]
        #expect(Self.refusal { _ = try Metadata(json: text) } == expected)
        let members = try? JSONDecoder().decode([String: Metadata.Value].self, from: Data(text.utf8))
        if let members { #expect(Self.refusal { _ = try Metadata(members) } == expected) }
    }

    @Test func theLimitIsInclusive() throws {
        // Proves: exactly metadataBytesMax bytes is taken by both doors; one more is not.
        let text = Self.object(bytes: LedgerLimits.metadataBytesMax)
        #expect(try Metadata(json: text).json.utf8.count == LedgerLimits.metadataBytesMax)
        let note = String(text.dropFirst(#"{"note":""#.count).dropLast(2))
        #expect(try Metadata(["note": .string(note)]).json == text)
        #expect(Self.refusal { _ = try Metadata(["note": .string(note + "x")]) }.hasPrefix("invalid metadata: is 16385 bytes"))
    }

    @Test func aCallIsRecordedWithTheMetadataItCarries() throws {
        // Proves: the ledger records the Metadata's text byte for byte and files the call under
        // the org and user it carries; the event it answers with and the event read back agree.
        let ledger = try Ledger.inMemory()
        defer { ledger.close() }
        let metadata = try Metadata(["org_id": .string("acme"), "user_id": .string("ann"), "step": .integer(3)])
        let result = try ledger.checkAndConsume(
            "t", promptTokens: 5, idempotencyKey: "k", usage: UsageDetails(metadata: metadata))
        #expect(result.event.usage.metadata == metadata)
        let recorded = try #require(try ledger.events(after: 0).events.last)
        #expect(recorded.usage.metadataJSON == #"{"org_id":"acme","step":3,"user_id":"ann"}"#)
        #expect(recorded.organizationID == "acme")
        #expect(recorded.userID == "ann")
        let replay = try ledger.checkAndConsume(
            "t", promptTokens: 5, idempotencyKey: "k", usage: UsageDetails(metadata: metadata))
        #expect(replay.isReplay)
        #expect(replay.event == result.event)
    }

    @Test func theTextConvenienceThrowsWhenMadeNotInsideTheLedger() throws {
        // Proves: UsageDetails(metadataJSON:) checks its text when it is made, so a bad one never
        // reaches a ledger call (there is no unchecked metadata for the ledger to parse later).
        #expect(Self.refusal { _ = try UsageDetails(agentID: "a", metadataJSON: "[1]") } == "invalid metadata: must be a JSON object")
        #expect(try UsageDetails(metadataJSON: nil).metadata == nil)
    }

    @Test func theLedgerFilesACallUnderTheCarriedMembersWithoutReadingTheText() throws {
        // Proves the write path does not parse metadata again: handed (through the package-only
        // door that rows read back use) a Metadata whose carried org differs from the org in its
        // text, the ledger records the text as it is and files the call under the carried org.
        // Had it parsed the text, the call would be under "from-text".
        let ledger = try Ledger.inMemory()
        defer { ledger.close() }
        let text = #"{"org_id":"from-text"}"#
        let metadata = Metadata(recorded: text, organizationID: "carried", userID: nil)
        try ledger.consume("t", promptTokens: 5, usage: UsageDetails(metadata: metadata))
        let recorded = try #require(try ledger.events(after: 0).events.last)
        #expect(recorded.usage.metadataJSON == text)
        #expect(recorded.organizationID == "carried")
    }
}
