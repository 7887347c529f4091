import BudgetLedger
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

@Suite("Reservation endpoints")
struct ReservationEndpointTests {
    @Test func reserveSettleReleaseRoundTrip() async throws {
        // Proves: reserve holds tokens (heldTokens in the budget), settle records the spend and ends the
        // hold, release ends one with nothing spent, and a second settle or release is a 409.
        try await withServer { client, _ in
            _ = try await client.send(.put, "/api/v1/threads/r1/limit", json: #"{"maxTokens":100}"#)
            let reserved = try await client.send(.post, "/api/v1/threads/r1/reserve", json: #"{"tokens":60, "ttlSeconds":60}"#)
            #expect(reserved.status == .ok)
            let reservation = try reserved.object()
            let id = try #require(reservation["reservationId"] as? Int)
            let budget = try #require(reservation["budget"] as? [String: Any])
            #expect(budget["heldTokens"] as? Int == 60)
            #expect(budget["remainingAfterHolds"] as? Int == 40)
            #expect(reservation["expiresAt"] is String)

            let refused = try await client.send(.post, "/api/v1/threads/r1/reserve", json: #"{"tokens":41}"#)
            #expect(refused.status == .conflict)
            #expect(try refused.object()["heldTokens"] as? Int == 60)

            let settled = try await client.send(
                .post, "/api/v1/reservations/\(id)/settle", json: #"{"promptTokens":30, "completionTokens":5, "model":"gpt-4o"}"#)
            #expect(settled.status == .ok)
            let settledObject = try settled.object()
            #expect(settledObject["holdHadExpired"] as? Bool == false)
            let after = try #require(settledObject["budget"] as? [String: Any])
            #expect(after["totalTokens"] as? Int == 35)
            #expect(after["heldTokens"] as? Int == 0)
            let event = try #require(settledObject["event"] as? [String: Any])
            #expect(event["reservationId"] as? Int == id)

            let again = try await client.send(.post, "/api/v1/reservations/\(id)/settle", json: #"{"promptTokens":30}"#)
            #expect(again.status == .conflict)

            let second = try await client.send(.post, "/api/v1/threads/r1/reserve", json: #"{"tokens":10}"#)
            let secondID = try #require(try second.object()["reservationId"] as? Int)
            let released = try await client.send(.post, "/api/v1/reservations/\(secondID)/release")
            #expect(released.status == .ok)
            #expect(try released.object()["released"] as? Bool == true)
            let releasedAgain = try await client.send(.post, "/api/v1/reservations/\(secondID)/release")
            #expect(releasedAgain.status == .conflict)
        }
    }

    @Test func unknownAndMalformedReservationIDs() async throws {
        // Proves: an unknown reservation is a 404, a malformed id (a plus sign, zero, negative,
        // past Int64) a 400 naming reservationId, bad holds a 400.
        try await withServer { client, _ in
            let unknown = try await client.send(.post, "/api/v1/reservations/999999/release")
            #expect(unknown.status == .notFound)
            let malformed = try await client.send(.post, "/api/v1/reservations/abc/settle", json: #"{"promptTokens":1}"#)
            #expect(malformed.status == .badRequest)
            #expect(try malformed.detail().contains("reservationId"))
            for id in ["+5", "0", "-1", "99999999999999999999"] {
                let refused = try await client.send(.post, "/api/v1/reservations/\(id)/release")
                #expect(refused.status == .badRequest, "\(id)")
            }
            let zero = try await client.send(.post, "/api/v1/threads/r2/reserve", json: #"{"tokens":0}"#)
            #expect(zero.status == .badRequest)
            #expect(try zero.detail().contains("tokens"))
            let longTTL = try await client.send(.post, "/api/v1/threads/r2/reserve", json: #"{"tokens":1, "ttlSeconds":10000000}"#)
            #expect(longTTL.status == .badRequest)
            #expect(try longTTL.detail().contains("ttlSeconds"))
        }
    }

    @Test func listingLiveHolds() async throws {
        // Proves: GET /api/v1/reservations lists exactly the live holds, oldest first, with their
        // sum; ?threadId= narrows to one thread (none for an unknown one); a settled or released
        // hold leaves the list; a bad threadId or an unknown query field is a 400 naming it.
        try await withServer { client, _ in
            var ids: [Int] = []
            for (thread, tokens) in [("h1", 10), ("h2", 20), ("h1", 30)] {
                let reserved = try await client.send(.post, "/api/v1/threads/\(thread)/reserve", json: #"{"tokens":\#(tokens)}"#)
                ids.append(try #require(try reserved.object()["reservationId"] as? Int))
            }
            let all = try await client.send(.get, "/api/v1/reservations")
            #expect(all.status == .ok)
            let allObject = try all.object()
            let holds = try #require(allObject["holds"] as? [[String: Any]])
            #expect(holds.compactMap { $0["reservationId"] as? Int } == ids)
            #expect(holds.compactMap { $0["threadId"] as? String } == ["h1", "h2", "h1"])
            #expect(holds.allSatisfy { $0["expiresAt"] is String })
            #expect(allObject["count"] as? Int == 3)
            #expect(allObject["heldTokens"] as? Int == 60)

            let one = try await client.send(.get, "/api/v1/reservations?threadId=h1")
            #expect(try one.object()["heldTokens"] as? Int == 40)
            #expect(try one.object()["count"] as? Int == 2)
            let unknown = try await client.send(.get, "/api/v1/reservations?threadId=nobody")
            #expect(unknown.status == .ok)
            #expect(try unknown.object()["count"] as? Int == 0)

            _ = try await client.send(.post, "/api/v1/reservations/\(ids[0])/settle", json: #"{"promptTokens":5}"#)
            _ = try await client.send(.post, "/api/v1/reservations/\(ids[1])/release")
            let left = try await client.send(.get, "/api/v1/reservations")
            let leftHolds = try #require(try left.object()["holds"] as? [[String: Any]])
            #expect(leftHolds.compactMap { $0["reservationId"] as? Int } == [ids[2]])
            #expect(try left.object()["heldTokens"] as? Int == 30)

            let badThread = try await client.send(.get, "/api/v1/reservations?threadId=\(String(repeating: "x", count: 300))")
            #expect(badThread.status == .badRequest)
            #expect(try badThread.detail().contains("threadId"))
            let unknownField = try await client.send(.get, "/api/v1/reservations?thread=h1")
            #expect(unknownField.status == .badRequest)
            #expect(try unknownField.detail().contains("thread"))
        }
    }
}
