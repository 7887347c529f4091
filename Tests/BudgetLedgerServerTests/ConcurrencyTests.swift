import AsyncHTTPClient
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

/// POSTs `json` to `url` `count` times at once and returns the statuses.
///
/// Uses a client of its own with generous timeouts: on a loaded machine the shared client's
/// short wait for a pooled connection, not the ledger, would otherwise decide the test.
func postInParallel(_ count: Int, to url: String, json: String) async throws -> [UInt] {
    var configuration = HTTPClient.Configuration(timeout: .init(connect: .seconds(120), read: .seconds(120)))
    configuration.connectionPool = .init(idleTimeout: .seconds(120), concurrentHTTP1ConnectionsPerHostSoftLimit: 16)
    let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    do {
        let statuses = try await withThrowingTaskGroup(of: UInt.self) { group in
            for _ in 0..<count {
                group.addTask {
                    var request = HTTPClientRequest(url: url)
                    request.method = .POST
                    request.headers.add(name: "Content-Type", value: "application/json")
                    request.body = .bytes(ByteBuffer(string: json))
                    let response = try await http.execute(request, timeout: .seconds(240))
                    _ = try await response.body.collect(upTo: 1 << 20)
                    return response.status.code
                }
            }
            var statuses: [UInt] = []
            for try await status in group { statuses.append(status) }
            return statuses
        }
        try await http.shutdown()
        return statuses
    } catch {
        try? await http.shutdown()
        throw error
    }
}
