import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import PostgresNIO
import Testing

/// A SQLite ledger file in a folder of its own, removed after the test.
private struct SourceFile {
    let folder: URL
    var path: String { folder.appendingPathComponent("ledger.db").path }

    init() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("pg-copy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(at: folder) }
}

/// Writes a history with every kind PostgreSQL derives, on several threads, agents and models
/// (priced by the reference table, by a price row set here, and unpriced), over three days and
/// two usage windows, with a refused call (a thread's refusal event), and one hold left live.
private func writeHistory(_ ledger: Ledger, clock: TestClock) throws {
    let day: Int64 = 86_400_000_000
    try ledger.configure(maxTokensPerThread: 5_000)
    try ledger.setPrice(model: "acme-large", promptUSDPerMillion: "2", completionUSDPerMillion: "8", effectiveFrom: clock.read())
    try ledger.setPrice(model: "acme-small-*", promptUSDPerMillion: "0.5", completionUSDPerMillion: "1", effectiveFrom: clock.read())
    _ = try ledger.setLimit("t1", maxTokens: 1_000)
    let meta = #"{"org_id":"org-a","user_id":"u1"}"#
    _ = try ledger.consume(
        "t1", promptTokens: 300, completionTokens: 100, idempotencyKey: "k1",
        usage: try UsageDetails(agentID: "agent-1", model: "gpt-4o", provider: "openai", latencyMilliseconds: 120, metadataJSON: meta))
    _ = try ledger.consume(
        "t1", promptTokens: 200, completionTokens: 50, usage: UsageDetails(agentID: "agent-1", model: "Acme-Large "))
    _ = try ledger.consume("t2", promptTokens: 70, completionTokens: 30, usage: UsageDetails(agentID: "agent-2", model: "mystery"))
    clock.advance(microseconds: day)
    _ = try ledger.consume("t2", promptTokens: 10, usage: UsageDetails(agentID: "agent-2", model: "acme-small-2026"))
    #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("t1", promptTokens: 900) }
    _ = try ledger.setLimit("t1", maxTokens: 4_000)
    _ = try ledger.resetThread("t2")
    _ = try ledger.consume("t2", promptTokens: 5, usage: UsageDetails(agentID: "agent-2"))
    _ = try ledger.consume("t3", promptTokens: 40, usage: UsageDetails(agentID: "agent-3", model: "o1"))
    _ = try ledger.cleanupThread("t3")
    let settled = try ledger.reserve("t1", tokens: 300, usage: UsageDetails(agentID: "agent-1", model: "gpt-4o"))
    _ = try ledger.settle(settled.reservation.id, promptTokens: 120, completionTokens: 30)
    let released = try ledger.reserve("t2", tokens: 50)
    _ = try ledger.release(released.reservation.id)
    _ = try ledger.reserve("t1", tokens: 200, ttlSeconds: 3 * 86_400, idempotencyKey: "hold-1")
    clock.advance(microseconds: day)
    try ledger.resetUsageWindow()
    _ = try ledger.consume("t4", promptTokens: 25, completionTokens: 5, usage: UsageDetails(agentID: "agent-1", model: "gpt-4o"))
}

/// Every event as one line of its columns, from the SQLite ledger.
private func eventLines(_ ledger: Ledger) throws -> [String] {
    try ledger.events(after: 0, limit: 10_000).events.map {
        "\($0.id) \($0.timestampMicroseconds) \($0.kind) \($0.threadID ?? "-") \($0.promptTokens) \($0.completionTokens) "
            + "\($0.maxTokens ?? -1) \($0.costNanodollars ?? -1) \($0.reservationID ?? -1) \($0.idempotencyKey ?? "-") "
            + "\($0.usage.model ?? "-") \($0.usage.metadataJSON ?? "-") \($0.tokensUsed ?? -1) \($0.causedBy ?? -1)"
    }
}

/// The same lines, from the PostgreSQL database at `url`.
private func eventLines(url: String) async throws -> [String] {
    try await withDatabase(url) { client in
        let rows = try await client.query(
            """
            SELECT id, timestamp_us, kind, coalesce(thread_id, '-'), prompt_tokens, completion_tokens,
                   coalesce(max_tokens, -1), coalesce(cost_nanos, -1), coalesce(reservation_id, -1),
                   coalesce(idempotency_key, '-'), coalesce(model, '-'), coalesce(metadata, '-'),
                   coalesce(tokens_used, -1), coalesce(caused_by, -1)
            FROM events ORDER BY id
            """)
        var lines: [String] = []
        for try await row in rows.decode(
            (Int64, Int64, String, String, Int64, Int64, Int64, Int64, Int64, String, String, String, Int64, Int64).self)
        {
            lines.append(
                "\(row.0) \(row.1) \(row.2) \(row.3) \(row.4) \(row.5) \(row.6) \(row.7) \(row.8) \(row.9) \(row.10) "
                    + "\(row.11) \(row.12) \(row.13)")
        }
        return lines
    }
}

/// Events and price rows in the database at `url`.
private func rowCounts(url: String) async throws -> (events: Int64, prices: Int64) {
    try await withDatabase(url) { client in
        let rows = try await client.query("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM model_prices)")
        for try await counts in rows.decode((Int64, Int64).self) { return counts }
        return (-1, -1)
    }
}

@Suite("budget-ledger copy: a SQLite ledger's history into PostgreSQL")
struct PostgresCopyTests {
    @Test("copy carries every event with its id and timestamp; verify passes on both and every total is equal")
    func copyKeepsHistoryAndTotals() async throws {
        // Proves the upgrade path: after `copy`, PostgreSQL holds the same events (ids, times,
        // columns), its triggers derive the same thread budgets, usage totals (all time and the
        // current window, per agent and model), holds and prices, `verify` passes on both
        // stores with the same event count, and a new event gets an id past the copied ones.
        let file = try SourceFile()
        defer { file.remove() }
        let clock = TestClock()
        let configuration = Ledger.Configuration(clock: clock.read)
        let source = try Ledger(path: file.path, configuration: configuration)
        try writeHistory(source, clock: clock)
        let lines = try eventLines(source)
        source.close()
        #expect(lines.contains { $0.contains(" refusal ") })
        let url = try await PostgresTestCluster.freshDatabase()

        let copied = try runCLI(["copy", "--from", file.path, "--to", url, "--json"])
        #expect(copied.status == 0, "\(copied.stderr)")
        #expect(copied.stdout.contains(#""eventsCopied":\#(lines.count)"#), "\(copied.stdout)")
        #expect(copied.stdout.contains(#""pricesCopied":2"#), "\(copied.stdout)")
        #expect(copied.stderr.contains("copy: \(lines.count) of \(lines.count) events"), "\(copied.stderr)")
        #expect(try await eventLines(url: url) == lines)

        for location in [file.path, url] {
            let verified = try runCLI(["verify", "--db", location, "--json"])
            #expect(verified.status == 0, "\(location): \(verified.stdout) \(verified.stderr)")
            #expect(verified.stdout.contains(#""ok":true,"events":\#(lines.count),"threads":3"#), "\(verified.stdout)")
        }

        let sqlite = try Ledger(path: file.path, configuration: configuration)
        defer { sqlite.close() }
        let postgres = try await PostgresLedger(url: url, configuration: PostgresLedger.Configuration(clock: clock.read))
        do {
            #expect(try await postgres.allUsage() == sqlite.allUsage())
            #expect(try await postgres.usageOverview(.allTime) == sqlite.usageOverview(.allTime))
            #expect(try await postgres.usageOverview(.currentWindow) == sqlite.usageOverview(.currentWindow))
            #expect(try await postgres.holds() == sqlite.holds())
            #expect(try await postgres.prices() == sqlite.prices())
            #expect(try await postgres.maxTokensPerThread == sqlite.maxTokensPerThread)
            for thread in ["t1", "t2", "t3", "t4"] {
                #expect(try await postgres.usage(thread) == sqlite.usage(thread), "\(thread)")
            }
            let next = try await postgres.consume("t4", promptTokens: 1)
            #expect(next.event.id == Int64(lines.count) + 1)
            #expect(try await postgres.verify().isConsistent)
        } catch {
            await postgres.close()
            throw error
        }
        await postgres.close()
    }

    @Test("copy carries reprices and price withdrawals; verify passes on both with equal totals")
    func copyCarriesRepricesAndWithdrawals() async throws {
        // Proves migration 0008 lets a SQLite ledger that billed unpriced usage move up whole:
        // its reprice events are copied with their ids and derived into the rollups at the
        // corrected cost, its withdrawn prices arrive withdrawn (the same live table, a withdrawn
        // start set again, a replaced one), both stores verify with the same event count and read
        // the same totals, and a reprice on the target then finds nothing left to bill.
        let file = try SourceFile()
        defer { file.remove() }
        let clock = TestClock()
        let configuration = Ledger.Configuration(clock: clock.read)
        let source = try Ledger(path: file.path, configuration: configuration)
        let start = clock.read()
        for (index, thread) in ["t1", "t2", "t1"].enumerated() {
            try source.consume(thread, promptTokens: 1_000 + Int64(index), completionTokens: 100, usage: UsageDetails(agentID: "a", model: "acme-copy"))
            clock.advance(microseconds: 1_000)
        }
        try source.consume("t2", promptTokens: 500, usage: UsageDetails(agentID: "a", model: "gpt-4o"))
        try source.setPrice(model: "acme-copy", promptUSDPerMillion: "2", completionUSDPerMillion: "4", effectiveFrom: start - 3_600_000_000)
        let repriced = try source.reprice(model: "acme-copy", from: start, to: clock.read())
        #expect(repriced.repricedCount == 3)
        let future = clock.read() + 86_400_000_000
        try source.setPrice(model: "acme-copy", promptUSDPerMillion: "3", completionUSDPerMillion: "5", effectiveFrom: future)
        try source.withdrawPrice(model: "acme-copy", effectiveFrom: future)
        try source.setPrice(model: "acme-copy", promptUSDPerMillion: "6", completionUSDPerMillion: "7", effectiveFrom: future)
        try source.replacePrice(model: "acme-copy", effectiveFrom: future, promptUSDPerMillion: "8", completionUSDPerMillion: "9")
        let lines = try eventLines(source)
        #expect(lines.filter { $0.contains(" reprice ") }.count == 3)
        source.close()
        let url = try await PostgresTestCluster.freshDatabase()

        let copied = try runCLI(["copy", "--from", file.path, "--to", url, "--json"])
        #expect(copied.status == 0, "\(copied.stderr)")
        // Three rows: the first future price and its setting again, both withdrawn, and the replacement.
        #expect(copied.stdout.contains(#""pricesCopied":4,"priceWithdrawalsCopied":2"#), "\(copied.stdout)")
        #expect(try await eventLines(url: url) == lines)
        for location in [file.path, url] {
            let verified = try runCLI(["verify", "--db", location, "--json"])
            #expect(verified.status == 0, "\(location): \(verified.stdout) \(verified.stderr)")
            #expect(verified.stdout.contains(#""ok":true,"events":\#(lines.count),"#), "\(verified.stdout)")
        }

        let sqlite = try Ledger(path: file.path, configuration: configuration)
        defer { sqlite.close() }
        let postgres = try await PostgresLedger(url: url, configuration: PostgresLedger.Configuration(clock: clock.read))
        do {
            #expect(try await postgres.usageOverview(.allTime) == sqlite.usageOverview(.allTime))
            #expect(try await postgres.usage(model: "acme-copy", scope: .allTime).unpricedRequests == 0)
            #expect(try await postgres.usage(model: "acme-copy", scope: .allTime) == sqlite.usage(model: "acme-copy", scope: .allTime))
            #expect(try await postgres.prices() == sqlite.prices())
            #expect(try await postgres.price(forModel: "acme-copy", at: future) == sqlite.price(forModel: "acme-copy", at: future))
            #expect(try await postgres.rollup(ExportQuery(), by: .thread).map { "\($0.key ?? "-") \($0.totals)" }
                == sqlite.rollup(ExportQuery(), by: .thread).map { "\($0.key ?? "-") \($0.totals)" })
            #expect(try await postgres.reprice(model: "acme-copy", from: start, to: clock.read()) == .nothing)
            #expect(try await postgres.verify().isConsistent)
        } catch {
            await postgres.close()
            throw error
        }
        await postgres.close()
        let withdrawals = try await withDatabase(url) { client in
            let rows = try await client.query("SELECT count(*) FROM price_withdrawals")
            for try await count in rows.decode(Int64.self) { return count }
            return -1
        }
        #expect(withdrawals == 2)
    }

    @Test("an interrupted copy continues after the events the target already holds, and the result verifies")
    func copyResumesAfterAPrefix() async throws {
        // Proves a target holding exactly the start of the source's history (what a copy stopped
        // between batches leaves; here, an earlier copy before the source grew) is continued, not
        // refused or doubled: only the new events are written, in batches smaller than the history.
        let file = try SourceFile()
        defer { file.remove() }
        let clock = TestClock()
        let source = try Ledger(path: file.path, configuration: Ledger.Configuration(clock: clock.read))
        defer { source.close() }
        try writeHistory(source, clock: clock)
        let first = try source.inventory().eventCount
        let url = try await PostgresTestCluster.freshDatabase()
        try await withTarget(url) { target in
            let report = try await target.copy(from: source, batchEventsMax: 4)
            #expect(report.eventsCopied == first && report.eventsAlreadyPresent == 0)
        }
        for index in 0..<7 { _ = try source.consume("t5", promptTokens: Int64(index + 1)) }
        let grown = try source.inventory().eventCount
        try await withTarget(url, clock: clock) { target in
            let report = try await target.copy(from: source, batchEventsMax: 4)
            #expect(report.eventsAlreadyPresent == first)
            #expect(report.eventsCopied == grown - first)
            #expect(report.pricesCopied == 0)
            #expect(report.lastEventID == grown)
            let verified = try await target.verify()
            #expect(verified.problems == [])
            #expect(verified.eventCount == grown)
            #expect(try await target.allUsage() == source.allUsage())
        }
        #expect(try await eventLines(url: url) == eventLines(source))
    }

    @Test("a copy into a database that holds another history is refused (exit 5) and writes nothing")
    func copyRefusesAnotherHistory() async throws {
        // Proves events written natively to the target (not the start of the source's history)
        // stop the copy before any event or price is written.
        let file = try SourceFile()
        defer { file.remove() }
        let clock = TestClock()
        let source = try Ledger(path: file.path, configuration: Ledger.Configuration(clock: clock.read))
        try writeHistory(source, clock: clock)
        source.close()
        let url = try await PostgresTestCluster.freshDatabase()
        try await withTarget(url) { target in _ = try await target.consume("other", promptTokens: 9) }
        let before = try await rowCounts(url: url)
        let refused = try runCLI(["copy", "--from", file.path, "--to", url])
        #expect(refused.status == 5, "\(refused.stderr)")
        #expect(refused.stderr.contains("not the start of this ledger's history"), "\(refused.stderr)")
        let after = try await rowCounts(url: url)
        #expect(after == before)
    }

    @Test("a batch size outside 1…10,000 is refused naming batchEventsMax, and nothing is written")
    func batchSizeIsBounded() async throws {
        // Proves the limit on a copy's transaction size: 0 and 10,001 events per batch are
        // refused before the target is touched, and 10,000 is taken.
        let source = try Ledger.inMemory()
        defer { source.close() }
        try source.consume("t", promptTokens: 5)
        let url = try await PostgresTestCluster.freshDatabase()
        try await withTarget(url) { target in
            for size in [0, 10_001] {
                do {
                    _ = try await target.copy(from: source, batchEventsMax: size)
                    Issue.record("a batch of \(size) events was accepted")
                } catch let LedgerError.invalidInput(field, _) {
                    #expect(field == "batchEventsMax")
                }
            }
        }
        #expect(try await rowCounts(url: url).events == 0)
        try await withTarget(url) { target in
            let report = try await target.copy(from: source, batchEventsMax: 10_000)
            #expect(report.eventsCopied == 2)
        }
    }

    @Test("a ledger with scope budgets, their thresholds and refusals is copied whole; verify passes on both")
    func copyCarriesScopeBudgets() async throws {
        // Proves budget, budget_remove, scope_threshold and a scope's refusal events are carried
        // (period included) and derived on PostgreSQL as on SQLite: the same budgets with the
        // same windows and spend, the same thresholds armed (a consume crossing one after the
        // copy fires nothing twice), both stores verify, and the copied budget still refuses.
        let file = try SourceFile()
        defer { file.remove() }
        let clock = TestClock()
        let source = try Ledger(path: file.path, configuration: Ledger.Configuration(clock: clock.read))
        let org = try BudgetScope(parsing: "org:acme")
        let usage = try UsageDetails(agentID: "a", model: "gpt-4o", metadataJSON: #"{"org_id":"acme"}"#)
        _ = try source.consume("t1", promptTokens: 100, usage: usage)
        try source.setBudget(org, period: .week, maxTokens: 1_000, maxNanodollars: 5_000_000)
        try source.setBudget(.global, period: .month, maxTokens: 10_000)
        try source.setBudget(try BudgetScope(parsing: "agent:gone"), maxTokens: 5)
        try source.removeBudget(try BudgetScope(parsing: "agent:gone"))
        _ = try source.checkAndConsume("t1", promptTokens: 700, usage: usage)
        #expect(throws: BudgetExhaustedError.self) { try source.checkAndConsume("t2", promptTokens: 300, usage: usage) }
        clock.advance(microseconds: 86_400_000_000)
        _ = try source.consume("t2", promptTokens: 50, usage: usage)
        let kinds = try source.events(after: 0, limit: 1_000).events.map(\.kind)
        source.close()
        #expect(Set(kinds).isSuperset(of: ["budget", "budget_remove", "scope_threshold", "refusal"]), "\(kinds)")
        let url = try await PostgresTestCluster.freshDatabase()
        let copied = try runCLI(["copy", "--from", file.path, "--to", url])
        #expect(copied.status == 0, "\(copied.stderr)")
        for location in [file.path, url] {
            let verified = try runCLI(["verify", "--db", location, "--json"])
            #expect(verified.status == 0, "\(location): \(verified.stdout) \(verified.stderr)")
            #expect(verified.stdout.contains(#""events":\#(kinds.count)"#), "\(verified.stdout)")
        }
        let sqlite = try Ledger(path: file.path, configuration: Ledger.Configuration(clock: clock.read))
        defer { sqlite.close() }
        try await withTarget(url, clock: clock) { postgres in
            #expect(try await postgres.budgets() == sqlite.budgets())
            #expect(try await postgres.events(after: 0, limit: 1_000).events == sqlite.events(after: 0, limit: 1_000).events)
            let sqliteNext = try sqlite.checkAndConsume("t3", promptTokens: 100, usage: usage)
            let postgresNext = try await postgres.checkAndConsume("t3", promptTokens: 100, usage: usage)
            #expect(postgresNext.crossedScopeThresholds == sqliteNext.crossedScopeThresholds)
            #expect(!sqliteNext.crossedScopeThresholds.contains { $0.scope == org && $0.thresholdPercent == 75 })
            #expect(throws: BudgetExhaustedError.self) { try sqlite.checkAndConsume("t3", promptTokens: 100, usage: usage) }
            await #expect(throws: BudgetExhaustedError.self) { try await postgres.checkAndConsume("t3", promptTokens: 100, usage: usage) }
            #expect(try await postgres.verify().problems == [])
        }
    }

    @Test("verify on PostgreSQL reports a derived row that differs from the events, with exit 1")
    func verifyFindsTampering() async throws {
        // Proves PostgreSQL's verify recomputes rather than trusting the derived tables: a thread
        // total and a rollup changed behind the triggers' back are both named.
        let url = try await PostgresTestCluster.freshDatabase()
        try await withTarget(url) { target in
            _ = try await target.consume("t1", promptTokens: 10, usage: UsageDetails(agentID: "a", model: "m"))
            #expect(try await target.verify().isConsistent)
        }
        try await withDatabase(url) { client in
            try await client.query("UPDATE thread_state SET prompt_tokens = prompt_tokens + 1 WHERE thread_id = 't1'")
            try await client.query("UPDATE usage_agent_model SET cost_nanos = cost_nanos + 5")
        }
        let verified = try runCLI(["verify", "--db", url])
        #expect(verified.status == 1)
        #expect(verified.stdout.contains("thread_state: row t1 differs from the events"), "\(verified.stdout)")
        #expect(verified.stdout.contains("usage_agent_model_live: row window 0, agent a, model m differs"), "\(verified.stdout)")
    }

    @Test("bad copy input names the flag and its rule, exits 64, and writes nothing")
    func copyRefusesBadInput() async throws {
        // Proves each input problem is caught before anything is opened or created: a missing
        // source, a PostgreSQL source, a target that is not a postgres:// URL, a source that is
        // not a ledger.
        let file = try SourceFile()
        defer { file.remove() }
        let url = try await PostgresTestCluster.freshDatabase()
        let missing = try runCLI(["copy", "--from", file.path, "--to", url])
        #expect(missing.status == 64)
        #expect(missing.stderr.contains("--from must name an existing ledger file"), "\(missing.stderr)")
        #expect(!FileManager.default.fileExists(atPath: file.path))
        let fromPostgres = try runCLI(["copy", "--from", url, "--to", url])
        #expect(fromPostgres.status == 64)
        #expect(fromPostgres.stderr.contains("--from must be a SQLite ledger file"), "\(fromPostgres.stderr)")
        try Ledger(path: file.path).close()
        let sqliteTarget = file.folder.appendingPathComponent("target.db").path
        let toFile = try runCLI(["copy", "--from", file.path, "--to", sqliteTarget])
        #expect(toFile.status == 64)
        #expect(toFile.stderr.contains("--to must be a postgres:// or postgresql:// URL"), "\(toFile.stderr)")
        #expect(!FileManager.default.fileExists(atPath: sqliteTarget))
        let notALedger = file.folder.appendingPathComponent("notes.txt").path
        try Data("not a ledger\n".utf8).write(to: URL(fileURLWithPath: notALedger))
        let refused = try runCLI(["copy", "--from", notALedger, "--to", url])
        #expect(refused.status == 64)
        #expect(refused.stderr.contains("invalid --from: must be a budget-ledger SQLite ledger"), "\(refused.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: notALedger)) == Data("not a ledger\n".utf8))
        let tables = try await withDatabase(url) { client in
            let rows = try await client.query("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
            for try await count in rows.decode(Int64.self) { return count }
            return Int64(-1)
        }
        #expect(tables == 0, "no bad input may migrate the target")
    }
}

/// A PostgresLedger on `url`, closed after `body`.
private func withTarget(
    _ url: String, clock: TestClock? = nil, _ body: (PostgresLedger) async throws -> Void
) async throws {
    let configuration = clock.map { PostgresLedger.Configuration(clock: $0.read) } ?? PostgresLedger.Configuration()
    let ledger = try await PostgresLedger(url: url, configuration: configuration)
    do {
        try await body(ledger)
    } catch {
        await ledger.close()
        throw error
    }
    await ledger.close()
}
