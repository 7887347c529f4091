import BudgetLedger
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

/// A consume body sent as raw bytes, and what the server must make of it.
struct WireConsumeCase: Sendable, CustomTestStringConvertible {
    enum Outcome: Sendable {
        /// 200, recording these tokens (and, when given, this agent and metadata text).
        case recorded(prompt: Int64, completion: Int64 = 0, agent: String? = nil, metadata: String? = nil)
        /// 400 `invalid FIELD: …` whose detail contains `words`; nothing recorded.
        case refused(field: String, words: String)
    }

    let body: [UInt8]
    let outcome: Outcome
    var testDescription: String { String(decoding: body.prefix(70), as: UTF8.self).debugDescription }

    init(_ text: String, _ outcome: Outcome) {
        body = Array(text.utf8)
        self.outcome = outcome
    }

    init(bytes: [UInt8], _ outcome: Outcome) {
        body = bytes
        self.outcome = outcome
    }
}

@Suite("The consume body's edge cases over a real port: parsed strictly, refused with 400 naming the field and rule")
struct ConsumeBodyWireTests {
    static let nested511 = String(repeating: "[", count: 510) + String(repeating: "]", count: 510)
    static let nested513 = String(repeating: "[", count: 512) + String(repeating: "]", count: 512)

    static let cases: [WireConsumeCase] = [
        // Numbers: whole values however written are counts; others name the field and the rule.
        .init(#"{"promptTokens":1e3,"completionTokens":2.0}"#, .recorded(prompt: 1_000, completion: 2)),
        .init(#"{"promptTokens":-0,"completionTokens":25E-1}"#, .refused(field: "completionTokens", words: "whole number")),
        .init(#"{"promptTokens":1.5}"#, .refused(field: "promptTokens", words: "(got 1.5)")),
        .init(#"{"promptTokens":-1}"#, .refused(field: "promptTokens", words: "must not be negative (got -1)")),
        .init(#"{"promptTokens":-9223372036854775808}"#, .refused(field: "promptTokens", words: "must not be negative")),
        .init(#"{"promptTokens":9223372036854775808}"#, .refused(field: "promptTokens", words: "from 0 to 9223372036854775807")),
        .init(#"{"promptTokens":123456789012345678901234567890}"#, .refused(field: "promptTokens", words: "(got 1.2345678901234568e+29)")),
        .init(#"{"promptTokens":1e400}"#, .refused(field: "body", words: "a number inside the range of a 64-bit float at byte 16")),
        .init(#"{"promptTokens":01}"#, .refused(field: "body", words: "is not valid JSON")),
        .init(#"{"promptTokens":1,"latencyMs":1e-400}"#, .refused(field: "latencyMs", words: "whole number")),
        // Strings: escapes and surrogate pairs decode; lone surrogates, raw controls and bad UTF-8 are refused.
        .init(#"{"promptTokens":1,"agentId":"\ud83d\ude00-\u00e9"}"#, .recorded(prompt: 1, agent: "😀-é")),
        .init(#"{"promptTokens":1,"agentId":"\ud800"}"#, .refused(field: "body", words: "low surrogate")),
        .init(#"{"promptTokens":1,"agentId":"\udc00x"}"#, .refused(field: "body", words: "is not valid JSON")),
        .init(#"{"promptTokens":1,"agentId":"a\u0007b"}"#, .refused(field: "agentId", words: "control character U+7")),
        .init("{\"promptTokens\":1,\"agentId\":\"a\tb\"}", .refused(field: "body", words: "raw control characters")),
        .init(bytes: Array(#"{"promptTokens":1,"agentId":""#.utf8) + [0xC0, 0xAF] + Array(#""}"#.utf8),
              .refused(field: "body", words: "valid UTF-8")),
        .init(bytes: [0xEF, 0xBB, 0xBF] + Array(#"{"promptTokens":4}"#.utf8), .recorded(prompt: 4)),
        // Metadata: nested, escaped, sorted; too deep refused.
        .init(#"{"promptTokens":1,"metadata":{"z":"\"q\"\n","a":[1,2.5,true,null,{}]}}"#,
              .recorded(prompt: 1, metadata: #"{"a":[1,2.5,true,null,{}],"z":"\"q\"\n"}"#)),
        .init(#"{"promptTokens":1,"metadata":{"n":\#(nested511)}}"#, .recorded(prompt: 1, metadata: #"{"n":\#(nested511)}"#)),
        .init(#"{"promptTokens":1,"metadata":{"n":\#(nested513)}}"#, .refused(field: "body", words: "nest more than 512 deep")),
        // Duplicate names, at the top and inside metadata.
        .init(#"{"promptTokens":1,"promptTokens":1000000}"#, .refused(field: "promptTokens", words: "is given more than once")),
        .init(#"{"promptTokens":1,"metadata":{"org_id":"a","org_id":"b"}}"#, .refused(field: "metadata.org_id", words: "more than once")),
        // Truncated and trailing.
        .init(#"{"promptTokens":1,"metadata":{"a":"b"#, .refused(field: "body", words: "closing a string")),
        .init(#"{"promptTokens":1,"#, .refused(field: "body", words: "a member name")),
        .init(#"{"promptTokens":1,}"#, .refused(field: "body", words: "a member name at byte 18")),
        .init(#"{"promptTokens":1}{"#, .refused(field: "body", words: "the end of the body")),
    ]

    @Test func everyEdgeCaseIsRecordedOrRefusedAsItMustBe() async throws {
        // Proves: over a real HTTP port, each body above is either recorded with exactly the
        // values it means, or refused with 400 {"error": "invalid input"} naming the field and the
        // rule, with nothing written; never a 500, never a crash (the server answers to the end).
        try await withServer(testing: .live) { client, folder in
            for (index, wire) in Self.cases.enumerated() {
                let threadID = "wire-\(index)"
                let response = try await client.execute(
                    uri: "/api/v1/threads/\(threadID)/check-and-consume", method: .post,
                    headers: [.contentType: "application/json"], body: ByteBuffer(bytes: wire.body))
                switch wire.outcome {
                case .recorded(let prompt, let completion, let agent, let metadata):
                    #expect(response.status == .ok, "\(wire.testDescription): \(response.text)")
                    let event = try folder.withLedger { ledger in
                        try ledger.events(after: 0).events.last { $0.threadID == threadID }
                    }
                    #expect(event?.promptTokens == prompt, "\(wire.testDescription)")
                    #expect(event?.completionTokens == completion, "\(wire.testDescription)")
                    if let agent { #expect(event?.usage.agentID == agent, "\(wire.testDescription)") }
                    if let metadata { #expect(event?.usage.metadataJSON == metadata, "\(wire.testDescription)") }
                case .refused(let field, let words):
                    #expect(response.status == .badRequest, "\(wire.testDescription): \(response.text)")
                    #expect(try response.object()["error"] as? String == "invalid input")
                    let detail = try response.detail()
                    #expect(detail.hasPrefix("invalid \(field):"), "\(wire.testDescription): \(detail)")
                    #expect(detail.contains(words), "\(wire.testDescription): \(detail)")
                    #expect(try folder.withLedger { try $0.hasBudget(threadID) } == false, "\(wire.testDescription)")
                }
            }
            #expect(try await client.get("/healthz").status == .ok)
        }
    }
}
