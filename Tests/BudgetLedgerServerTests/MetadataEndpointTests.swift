import BudgetLedger
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

/// The REST edge parses a body's metadata once and hands the ledger a checked `Metadata`.
@Suite("Metadata over REST: made from the parsed body, refused with the ledger's own words")
struct MetadataEndpointTests {
    /// A note member padded so that the recorded text is `bytes` long.
    static func body(metadataBytes bytes: Int) -> String {
        let frame = #"{"note":""}"#
        return #"{"promptTokens":1,"metadata":{"note":""# + String(repeating: "x", count: bytes - frame.utf8.count) + #""}}"#
    }

    /// Bodies whose metadata is refused, and the 400's `detail`, word for word as before.
    static let refusals: [(body: String, detail: String)] = [
        (#"{"promptTokens":1,"metadata":{"org_id":7}}"#, "invalid metadata.org_id: must be a string"),
        (#"{"promptTokens":1,"metadata":{"org_id":"a","user_id":[]}}"#, "invalid metadata.user_id: must be a string"),
        (#"{"promptTokens":1,"metadata":{"user_id":""}}"#, "invalid metadata.user_id: must not be empty"),
        (#"{"promptTokens":1,"metadata":[1]}"#, "invalid metadata: must be a JSON object, not an array"),
        (body(metadataBytes: LedgerLimits.metadataBytesMax + 1), "invalid metadata: is 16385 bytes; the limit is 16384 bytes"),
    ]

    @Test func consumeAndReserveRefuseBadMetadataAsTheyAlwaysDid() async throws {
        // Proves: check-and-consume, consume and reserve refuse bad metadata with 400 and the same
        // detail the ledger gave when it parsed the text itself, and write nothing.
        try await withServer { client, folder in
            for (body, detail) in Self.refusals {
                for path in ["check-and-consume", "consume"] {
                    let response = try await client.post("/api/v1/threads/t/\(path)", json: body)
                    #expect(response.status == .badRequest, "\(path) \(body.prefix(60)): \(response.text)")
                    #expect(try response.detail() == detail, "\(path) \(body.prefix(60))")
                }
                let reserveBody = body.replacingOccurrences(of: #""promptTokens":1"#, with: #""tokens":1"#)
                let reserved = try await client.post("/api/v1/threads/t/reserve", json: reserveBody)
                #expect(reserved.status == .badRequest, "reserve \(reserveBody.prefix(60)): \(reserved.text)")
                #expect(try reserved.detail() == detail, "reserve \(reserveBody.prefix(60))")
            }
            #expect(try folder.withLedger { try $0.hasBudget("t") } == false)
        }
    }

    @Test func metadataIsRecordedCompactAndSortedUpToTheLimit() async throws {
        // Proves: the object the body's parse built is recorded as compact text with sorted keys
        // (as before the edge made the Metadata), filed under its org and user, and a body whose
        // metadata is exactly metadataBytesMax bytes is taken.
        try await withServer { client, folder in
            let response = try await client.post(
                "/api/v1/threads/t/check-and-consume",
                json: #"{"promptTokens":1,"metadata":{"z":1e0,"user_id":"ann","org_id":"acme","a":{"y":2.5,"b":null}}}"#)
            #expect(response.status == .ok, "\(response.text)")
            let atLimit = try await client.post(
                "/api/v1/threads/u/consume", json: Self.body(metadataBytes: LedgerLimits.metadataBytesMax))
            #expect(atLimit.status == .ok, "\(atLimit.text)")
            let events = try folder.withLedger { try $0.events(after: 0).events.filter { $0.kind == "consume" } }
            #expect(events.first?.usage.metadataJSON == #"{"a":{"b":null,"y":2.5},"org_id":"acme","user_id":"ann","z":1}"#)
            #expect(events.first?.organizationID == "acme")
            #expect(events.first?.userID == "ann")
            #expect(events.last?.usage.metadataJSON?.utf8.count == LedgerLimits.metadataBytesMax)
        }
    }
}
