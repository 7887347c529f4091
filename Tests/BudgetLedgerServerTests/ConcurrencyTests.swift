import BudgetLedger
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

@Suite("Concurrent requests")
struct ConcurrencyTests {
    @Test func parallelCheckAndConsumeNeverOverspends() async throws {
        // Proves: 50 parallel check-and-consume requests on one thread, over real connections
        // (AsyncHTTPClient against a live port), each answered 200 or 409, leave the thread's
        // total at most its max and exactly successes × tokens; as many fit as the max allows.
        let (requests, tokensPerCall, maxTokens): (Int, Int64, Int64) = (50, 30, 1_000)
        try await withServer(testing: .ahc(.http)) { client, folder in
            _ = try await client.send(.put, "/api/v1/threads/shared/limit", json: #"{"maxTokens":\#(maxTokens)}"#)
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for _ in 0..<requests {
                    group.addTask {
                        try await client.post(
                            "/api/v1/threads/shared/check-and-consume", json: #"{"promptTokens":20,"completionTokens":10}"#
                        ).status
                    }
                }
                return try await group.reduce(into: [HTTPResponse.Status]()) { $0.append($1) }
            }
            let successes = Int64(statuses.filter { $0.code == 200 }.count)
            let unexpected = statuses.filter { $0.code != 200 && $0.code != 409 }
            #expect(unexpected.isEmpty, "\(unexpected.map(\.code))")
            #expect(statuses.count == requests)
            let budget = try #require(try folder.withLedger { try $0.usage("shared") })
            #expect(budget.totalTokens <= maxTokens)
            #expect(budget.totalTokens == successes * tokensPerCall)
            #expect(budget.requestCount == successes)
            #expect(successes == maxTokens / tokensPerCall)
            #expect(try folder.withLedger { try $0.verify() }.isConsistent)
        }
    }
}
