import BudgetLedger
import Foundation
import Synchronization
import Hummingbird
import HummingbirdTesting
import Testing

@testable import BudgetLedgerServer

@Suite("Concurrent requests")
struct ConcurrencyTests {
    @Test func parallelCheckAndConsumeNeverOverspends() async throws {
        // Proves: 50 parallel check-and-consume requests on one thread, over real connections
        // (one socket each, against a live port), each answered 200 or 409, leave the thread's
        // total at most its max and exactly successes × tokens; as many fit as the max allows.
        let (requests, tokensPerCall, maxTokens): (Int, Int64, Int64) = (50, 30, 1_000)
        try await withServer(testing: .live) { client, folder in
            _ = try await client.send(.put, "/api/v1/threads/shared/limit", json: #"{"maxTokens":\#(maxTokens)}"#)
            let port = try #require(client.port)
            let statuses = try await postInParallel(
                requests, to: "http://127.0.0.1:\(port)/api/v1/threads/shared/check-and-consume",
                json: #"{"promptTokens":20,"completionTokens":10}"#)
            let successes = Int64(statuses.filter { $0 == 200 }.count)
            let unexpected = statuses.filter { $0 != 200 && $0 != 409 }
            #expect(unexpected.isEmpty, "\(unexpected)")
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

/// POSTs `json` to `url` `count` times at once, each on a thread and a connection of its own,
/// and returns the statuses (the sockets block, so never on the cooperative pool).
func postInParallel(_ count: Int, to url: String, json: String) async throws -> [UInt] {
    let results = await blocking { () -> [Result<UInt, any Error>] in
        let collected = Mutex<[Result<UInt, any Error>]>([])
        let finished = DispatchGroup()
        for _ in 0..<count {
            finished.enter()
            Thread.detachNewThread {
                let result = Result { () throws -> UInt in
                    let response = try PlainHTTPClient.send("POST", url, json: json, timeoutSeconds: 240)
                    _ = try response.text()
                    return response.status
                }
                collected.withLock { $0.append(result) }
                finished.leave()
            }
        }
        finished.wait()
        return collected.withLock { $0 }
    }
    return try results.map { try $0.get() }
}
