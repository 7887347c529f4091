import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import PostgresNIO
import Synchronization
import Testing

@Suite("The feed on PostgreSQL serves every event once, in id order, though ids commit out of order")
struct PostgresFeedTests {
    /// A transaction of another session that has inserted an event (drawn its id) and not
    /// committed: the late commit the feed must not skip. Returns its event id.
    private static func beginLateEvent(_ session: AdminSession) async throws -> Int64 {
        try await session.query("BEGIN")
        let rows = try await session.query(
            "INSERT INTO events (timestamp_us, kind, max_tokens) VALUES (1764400000000000, 'configure', 5000) RETURNING id")
        var id: Int64 = -1
        for try await value in rows.decode(Int64.self) { id = value }
        return id
    }

    @Test("a page waits for a transaction in flight below its end and then serves its event, never the later one alone")
    func aLateCommitIsServedNotSkipped() async throws {
        // Proves the feed's ordering rule: event N is inserted by a transaction that stays open
        // while a consume records N+1 and commits. A plain `id > after ORDER BY id` read would
        // serve N+1 now and, once its reader moved past it, never serve N. The page read while N's
        // transaction is open waits for it (generous bound), so when N commits the page holds
        // N and then N+1, in order.
        try await withPostgresLedger(configuration: .init(feedWaitMax: .seconds(120))) { ledger, url in
            try await ledger.consume("first", promptTokens: 1)
            let server = try await PostgresTestCluster.shared()
            try await PostgresTestCluster.withAdminClient(server, database: String(url.split(separator: "/").last!)) { session in
                let late = try await Self.beginLateEvent(session)
                let later = try await ledger.consume("second", promptTokens: 2)
                #expect(later.event.id > late)
                let page = Task { try await ledger.events(after: 1, limit: 100) }
                try await Task.sleep(for: .milliseconds(300))
                try await session.query("COMMIT")
                let ids = try await page.value.events.map(\.id)
                #expect(ids.contains(late), "the late commit \(late) was skipped: \(ids)")
                #expect(ids == ids.sorted())
                #expect(ids.last == later.event.id)
            }
        }
    }

    @Test("while a transaction stays in flight past the wait, a page serves nothing new; afterwards it serves both")
    func aPageNeverServesPastAnOpenTransaction() async throws {
        // Proves the fallback never skips: with N's transaction held open longer than
        // feedWaitMax, the page read past the wait holds nothing after `after` (so no consumer
        // can move past N); once N commits, the next page holds N and N+1.
        try await withPostgresLedger(configuration: .init(feedWaitMax: .milliseconds(100))) { ledger, url in
            let first = try await ledger.consume("first", promptTokens: 1)
            let server = try await PostgresTestCluster.shared()
            try await PostgresTestCluster.withAdminClient(server, database: String(url.split(separator: "/").last!)) { session in
                let late = try await Self.beginLateEvent(session)
                let later = try await ledger.consume("second", promptTokens: 2)
                let blocked = try await ledger.events(after: first.event.id, limit: 100)
                #expect(blocked.events.isEmpty, "served past an open transaction: \(blocked.events.map(\.id))")
                #expect(blocked.lastID == first.event.id)
                try await session.query("COMMIT")
                // Read by a ledger that waits long: transaction ids are cluster-wide, so other
                // tests' transactions in flight (in other databases) are waited for too.
                let patient = try await PostgresLedger(url: url, configuration: .init(feedWaitMax: .seconds(120)))
                let page = try await patient.events(after: first.event.id, limit: 100)
                await patient.close()
                // The late event, then the second thread's open and consume events.
                #expect(page.events.map(\.id) == Array(late...later.event.id))
                #expect(page.events.map(\.kind) == ["configure", "open", "consume"])
                #expect(page.lastID == later.event.id)
            }
        }
    }

    @Test("pages read while many connections write hold every event exactly once, in id order, with SQLite's fields")
    func pagesDuringConcurrentWritesMissNothing() async throws {
        // Proves the feed end to end under real concurrency: 8 writers record 40 consumes each
        // (and their thresholds) on their own threads while a reader pages with small pages from
        // 0; after the writers end and the reader drains, the ids it saw are exactly the ids in
        // `events`, each once, strictly increasing; a consume's fields read back as recorded.
        try await withPostgresLedger(configuration: .init(connectionsMax: 10)) { ledger, url in
            let writing = WritersLeft(8)
            async let seen: [LedgerEvent] = {
                var events: [LedgerEvent] = []
                var after: Int64 = 0
                while true {
                    let done = writing.count.load(ordering: .sequentiallyConsistent) == 0
                    let page = try await ledger.events(after: after, limit: 7)
                    events += page.events
                    after = page.lastID
                    if done && page.events.isEmpty { return events }
                }
            }()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writer in 0..<8 {
                    group.addTask {
                        defer { writing.count.subtract(1, ordering: .sequentiallyConsistent) }
                        try await ledger.setLimit("w\(writer)", maxTokens: 10_000)
                        for call in 0..<40 {
                            try await ledger.consume(
                                "w\(writer)", promptTokens: 100, completionTokens: 50, idempotencyKey: "w\(writer)-\(call)",
                                usage: UsageDetails(agentID: "agent-\(writer)", model: "gpt-4o", latencyMilliseconds: 12))
                        }
                    }
                }
                try await group.waitForAll()
            }
            let events = try await seen
            let ids = events.map(\.id)
            #expect(ids == ids.sorted() && Set(ids).count == ids.count, "out of order or repeated")
            let server = try await PostgresTestCluster.shared()
            let stored = try await PostgresTestCluster.withAdminClient(server, database: String(url.split(separator: "/").last!)) { session in
                var stored: [Int64] = []
                for try await id in try await session.query("SELECT id FROM events ORDER BY id").decode(Int64.self) { stored.append(id) }
                return stored
            }
            #expect(ids == stored, "\(Set(stored).subtracting(ids).sorted()) missed")
            #expect(events.filter { $0.kind == "consume" }.count == 320)
            let consume = try #require(events.first { $0.idempotencyKey == "w3-7" })
            #expect(consume.threadID == "w3" && consume.promptTokens == 100 && consume.completionTokens == 50)
            #expect(consume.usage.agentID == "agent-3" && consume.usage.model == "gpt-4o" && consume.usage.latencyMilliseconds == 12)
            #expect(consume.costNanodollars != nil)
        }
    }

    @Test("bad pages are refused as on SQLite")
    func badPagesAreRefused() async throws {
        try await withPostgresLedger { ledger, _ in
            for (after, limit, field) in [(Int64(-1), 10, "after"), (0, 0, "limit"), (0, 10_001, "limit")] {
                do {
                    _ = try await ledger.events(after: after, limit: limit)
                    Issue.record("after \(after) limit \(limit) was accepted")
                } catch let LedgerError.invalidInput(name, _) {
                    #expect(name == field)
                }
            }
        }
    }
}

/// How many writers have not finished yet.
private final class WritersLeft: Sendable {
    let count: Atomic<Int>
    init(_ writers: Int) { count = Atomic(writers) }
}
