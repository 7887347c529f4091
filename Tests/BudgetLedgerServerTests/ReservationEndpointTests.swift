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
}
