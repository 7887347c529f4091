import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import Logging
import PostgresNIO
import Testing

@Suite("PostgresLedger's connection pool")
struct PostgresPoolTests {
    @Test("with the database down, calls fail as unavailable, the client is replaced, and calls succeed after the restart")
    func failedClientIsReplaced() async throws {
        // Proves the library half of the recovery: a call made while PostgreSQL is stopped gets
        // `PostgresLedgerError.connection` (isUnavailable) instead of waiting in the pool, the
        // failed client is retired, and after `pg_ctl start` the same ledger serves again within
        // a bounded number of retries.
        let cluster = try PostgresTestCluster.PrivateCluster.create()
        defer { cluster.remove() }
        let ledger = try await PostgresLedger(
            url: cluster.server.url(database: "postgres"), configuration: .init(leaseTimeout: .seconds(1)))
        try await ledger.setLimit("p", maxTokens: 100)
        #expect(ledger.poolReplacements == 0)
        try cluster.stopFast()
        do {
            _ = try await ledger.usage("p")
            Issue.record("a read succeeded with the database stopped")
        } catch let error as PostgresLedgerError {
            #expect(error.isUnavailable, "\(error)")
            #expect(error.description.contains("cannot be reached"), "\(error)")
            #expect(!error.description.contains("SELECT"))
        }
        #expect(ledger.poolReplacements >= 1)
        // Seen through postgres-nio's pool reports (ConnectionHealth): the fast path, not the busy bound.
        #expect(ledger.connectionFailures >= 1)
        try cluster.startServer()
        var result: ConsumeResult?
        for _ in 0..<120 {
            if let consumed = try? await ledger.checkAndConsume("p", promptTokens: 10) {
                result = consumed
                break
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        #expect(result?.budget.totalTokens == 10)
        await ledger.close()
    }

    @Test("a pool that is only busy answers unavailable to the caller that waited too long, and cuts no call in flight")
    func busyPoolIsKept() async throws {
        // Proves the lease deadline tells "busy" from "down": with one connection, held by a
        // consume that waits for a row lock another session holds, a second call gets no
        // connection in time and fails as unavailable, the client is not replaced (that would
        // cut the consume), and once the lock is released the consume commits.
        let url = try await PostgresTestCluster.freshDatabase()
        // Generous bounds: connecting may be slow on a loaded machine; no assertion is on time.
        let ledger = try await PostgresLedger(
            url: url, configuration: .init(connectionsMax: 1, leaseTimeout: .seconds(1), busyLeaseTimeout: .seconds(10)))
        try await ledger.setLimit("held", maxTokens: 100)
        let server = try await PostgresTestCluster.shared()
        let database = String(url.split(separator: "/").last!)
        try await PostgresTestCluster.withAdminClient(server, database: database) { client in
            try await client.withConnection { connection in
                try await connection.query("BEGIN", logger: Logger(label: "test"))
                try await connection.query(
                    "SELECT thread_id FROM thread_locks WHERE thread_id = 'held' FOR UPDATE", logger: Logger(label: "test"))
                let blocked = Task { try await ledger.consume("held", promptTokens: 7) }
                // The consume holds the pool's one connection (waiting on the lock) once a second
                // call cannot get one; bounded by count, not time.
                var refused = false
                for _ in 0..<60 where !refused {
                    do {
                        _ = try await ledger.usage("other")
                        try await Task.sleep(for: .milliseconds(100))
                    } catch let error as PostgresLedgerError {
                        #expect(error.isUnavailable)
                        #expect(error.description.contains("became free"), "\(error)")
                        refused = true
                    }
                }
                #expect(refused, "the second call always found a connection")
                #expect(ledger.poolReplacements == 0)
                try await connection.query("COMMIT", logger: Logger(label: "test"))
                #expect(try await blocked.value.budget.totalTokens == 7)
            }
        }
        #expect(try await ledger.usage("held")?.totalTokens == 7)
        await ledger.close()
    }

    @Test("a write past callTimeout is answered unavailable, 'may or may not have taken effect', and its retry records once")
    func aCallPastItsBoundIsAnswered() async throws {
        // Proves the call bound, the limit that keeps a request from outliving its database:
        // a consume waiting on its thread's row lock, held by another session past the bound
        // (1 s), is answered PostgresLedgerError.connection saying it may or may not have taken
        // effect, and the client is retired. The abandoned consume may still commit once the
        // lock is released, so the caller retries under its idempotency key: exactly one event
        // carries the key, the thread holds its tokens once, and the ledger keeps serving.
        let url = try await PostgresTestCluster.freshDatabase()
        let ledger = try await PostgresLedger(
            url: url, configuration: .init(leaseTimeout: .milliseconds(200), callTimeout: .seconds(1)))
        try await ledger.setLimit("held", maxTokens: 100)
        try await withDatabase(url) { session in
            try await session.query("BEGIN")
            try await session.query("SELECT thread_id FROM thread_locks WHERE thread_id = 'held' FOR UPDATE")
            do {
                _ = try await ledger.consume("held", promptTokens: 7, idempotencyKey: "k")
                Issue.record("a consume blocked past its bound was answered as recorded")
            } catch let error as PostgresLedgerError {
                #expect(error.isUnavailable, "\(error)")
                #expect(error.description.contains("may or may not have taken effect"), "\(error)")
            }
            #expect(ledger.poolReplacements >= 1)
            try await session.query("COMMIT")
        }
        // The bound is 1 s, which a loaded machine can pass on any call: the caller retries what
        // is answered unavailable, as a client does, under the same key.
        let retried = try await Self.untilAnswered { try await ledger.consume("held", promptTokens: 7, idempotencyKey: "k") }
        #expect(retried.budget.totalTokens == 7)
        let recorded = try await withDatabase(url) { session in
            var count: Int64 = -1
            for try await value in try await session.query("SELECT count(*)::bigint FROM events WHERE idempotency_key = 'k'")
                .decode(Int64.self) { count = value }
            return count
        }
        #expect(recorded == 1)
        #expect(try await Self.untilAnswered { try await ledger.usage("held") }?.totalTokens == 7)
        await ledger.close()
    }

    /// `call`'s answer, retried while the store answers it unavailable (at most 30 times).
    private static func untilAnswered<Value>(_ call: () async throws -> Value) async throws -> Value {
        for _ in 1..<30 {
            do {
                return try await call()
            } catch let error as PostgresLedgerError where error.isUnavailable {
                continue
            }
        }
        return try await call()
    }
}
