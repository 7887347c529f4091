import BudgetLedger
import BudgetLedgerWire
import Foundation
import LedgerSQLite
import Synchronization
import Testing

@Suite("Usage and billing")
struct BillingTests {
    @Test(
        "seeded prices give the reference's exact costs",
        arguments: [
            ("grok-4.1", Int64(1_000_000), Int64(1_000_000), "18"),
            ("claude-opus-4", 1_000_000, 1_000_000, "90"),
            ("gpt-4o", 1_000_000, 1_000_000, "12.5"),
            ("gpt-4o-mini", 1_000, 500, "0.00045"),
            ("GPT-4O-MINI-2024-07-18", 1_000, 500, "0.00045"),
            ("o3-mini", 1_000_000, 0, "1.1"),
        ])
    func exactCosts(model: String, prompt: Int64, completion: Int64, expected: String) throws {
        // Proves integer nano-dollar arithmetic, exact names and dated-variant patterns after normalising, and plain decimals.
        let ledger = try Ledger.inMemory()
        let result = try ledger.consume("t", promptTokens: prompt, completionTokens: completion, usage: UsageDetails(model: model))
        let cost = try #require(result.event.costNanodollars)
        #expect(Money.decimalString(nanodollars: cost) == expected)
        #expect(try ledger.usageOverview().totals.costNanodollars == cost)
    }

    @Test("an unknown model has a null cost and is counted as unpriced, not as zero")
    func unknownModel() throws {
        // Proves unpriced events are distinguishable from free ones.
        let ledger = try Ledger.inMemory()
        let result = try ledger.consume("t", promptTokens: 10, usage: UsageDetails(model: "mystery-1"))
        #expect(result.event.costNanodollars == nil)
        #expect(result.event.json.serialized().contains("\"cost\":null"))
        let totals = try ledger.usageOverview().totals
        #expect(totals.unpricedRequests == 1)
        #expect(totals.costNanodollars == 0)
        #expect(try ledger.usage(model: "mystery-1").unpricedRequests == 1)
    }

    @Test("a price change mid-range bills earlier events at the old price and later ones at the new")
    func priceChange() throws {
        // Proves prices are dated: old events keep the price in force when they happened.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        let usage = UsageDetails(model: "gpt-4o")
        try ledger.consume("t", promptTokens: 1_000_000, usage: usage)
        clock.advance(microseconds: 1_000)
        try ledger.setPrice(model: "GPT-4o", promptUSDPerMillion: "5", completionUSDPerMillion: "20")
        clock.advance(microseconds: 1_000)
        try ledger.consume("t", promptTokens: 1_000_000, usage: usage)
        let events = try ledger.events(after: 0, limit: 100).events.filter { $0.kind == "consume" }
        #expect(events.map(\.costNanodollars) == [2_500_000_000, 5_000_000_000])
        #expect(try ledger.usage(model: "gpt-4o").costNanodollars == 7_500_000_000)
        #expect(try ledger.verify().isConsistent)
    }

    @Test("the consume path's in-memory prices equal the SQL lookup, and see prices another process adds")
    func priceCacheAgreesWithSQL() throws {
        // Proves PriceCache picks what LedgerSQL.selectPriceForModel picks (longest prefix,
        // latest start in force, ASCII-only case folding), and reloads when another connection
        // (another process) appends a price, including one that starts later.
        let clock = ManualClock()
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let configuration = Ledger.Configuration(synchronous: .normal, clock: clock.read)
        let consumer = try Ledger(path: path, configuration: configuration)
        let other = try Ledger(path: path, configuration: configuration)
        func expectSQLPrice(_ model: String, _ note: Comment) throws {
            let event = try consumer.consume("t", promptTokens: 1_000, completionTokens: 10, usage: UsageDetails(model: model)).event
            let price = try consumer.price(forModel: model, at: event.timestampMicroseconds)
            let expected = price.map { 1_000 * $0.promptNanodollarsPerToken + 10 * $0.completionNanodollarsPerToken }
            #expect(event.costNanodollars == expected, note)
        }
        let models = [
            "gpt-4o", "GPT-4O-MINI-2024-07-18", "gpt-4", "claude-opus-4-5", "Claude-Sonnet-4", "o1-preview", "o3-mini",
            "O3-MINI-HIGH", "unknown-model", "gpt-4ö", "ǴPT-4o", "grok-4.1-fast", "grok-4",
        ]
        for model in models { try expectSQLPrice(model, "seeded prices: \(model)") }
        clock.advance(microseconds: 1_000_000)
        try other.setPrice(model: "GPT-4o", promptUSDPerMillion: "7", completionUSDPerMillion: "9")
        try other.setPrice(
            model: "gpt-4o-mini", promptUSDPerMillion: "1", completionUSDPerMillion: "2",
            effectiveFrom: clock.read() + 10_000_000)
        try other.setPrice(model: "mystery", promptUSDPerMillion: "0.5", completionUSDPerMillion: "0.5")
        for model in models + ["mystery-9", "gpt-4o-mini-x"] { try expectSQLPrice(model, "after another process set prices: \(model)") }
        let before = try consumer.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "gpt-4o-mini")).event
        #expect(before.costNanodollars == 150_000, "the later price is not in force yet")
        clock.advance(microseconds: 10_000_000)
        let after = try consumer.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "gpt-4o-mini")).event
        #expect(after.costNanodollars == 1_000_000, "the later price is in force from its start")
        #expect(try consumer.verify().problems == [])
    }

    @Test("past PriceCache.modelsMax distinct model names the memo starts over and prices stay right")
    func priceMemoLimit() throws {
        // Proves the bound on the consume path's price memo: 4,200 distinct names (more than
        // the 4,096 it keeps) all get the price their pattern (gpt-4o-20*) gives, before and after the memo
        // starts over, and unknown names stay unpriced.
        let ledger = try Ledger.inMemory()
        for round in 0..<2 {
            for index in 0..<4_200 {
                let priced = try ledger.consume(
                    "t", promptTokens: 1_000, usage: UsageDetails(model: "gpt-4o-2024-variant-\(index)")).event
                #expect(priced.costNanodollars == 2_500_000, "round \(round), name \(index)")
                if index % 700 == 0 {
                    let unknown = try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "mystery-\(index)")).event
                    #expect(unknown.costNanodollars == nil)
                }
            }
        }
        #expect(try ledger.verify().problems == [])
    }

    @Test("a price may not start before a billed consume of its model, nor carry more than 3 decimals")
    func priceValidation() throws {
        // Proves billed history is never re-priced and prices are exact. (A consume recorded
        // unpriced does not block a price: `reprice` bills it, see PriceCorrectionTests.)
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        try ledger.setPrice(model: "m-1", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: 0)
        try ledger.consume("t", promptTokens: 1, usage: UsageDetails(model: "m-1"))
        clock.advance(microseconds: 1)
        #expect(ledgerErrorCase {
            _ = try ledger.setPrice(model: "m-*", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: 0)
        } == .conflict)
        for bad in ["0.0005", "-1", "1e3", "", ".5", "1.", "abc"] {
            #expect(ledgerErrorCase {
                _ = try ledger.setPrice(model: "m", promptUSDPerMillion: bad, completionUSDPerMillion: "1")
            } == .invalidInput(field: "prompt price"), "\(bad)")
        }
        let before = try ledger.prices().count
        try ledger.setPrice(model: "m-*", promptUSDPerMillion: "0.001", completionUSDPerMillion: "1000")
        #expect(try ledger.prices().count == before + 1)
        #expect(try ledger.price(forModel: "M-large")?.promptNanodollarsPerToken == 1)
    }

    @Test("money renders as plain decimals, never in exponent form")
    func moneyRendering() throws {
        // Proves the edge rendering of integer amounts.
        #expect(Money.decimalString(nanodollars: 0) == "0")
        #expect(Money.decimalString(nanodollars: 450) == "0.00000045")
        #expect(Money.decimalString(nanodollars: 1) == "0.000000001")
        #expect(Money.decimalString(nanodollars: 12_500_000_000) == "12.5")
        #expect(Money.decimalString(nanodollars: Int64.max) == "9223372036.854775807")
        #expect(try Money.nanodollarsPerToken(fromUSDPerMillion: "0.15", field: "p") == 150)
        #expect(Money.usdPerMillion(nanodollarsPerToken: 150) == "0.15")
    }

    @Test("every usage view equals a Swift-side recomputation over generated events")
    func viewsMatchRecomputation() throws {
        // Proves the SQL views (folded rollups plus pending consumes) agree with the raw events,
        // unpriced requests and their tokens included; 1,300 consumes cross the fold at event
        // 1,024, so both halves are exercised.
        let clock = ManualClock()
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal, clock: clock.read))
        var generator = SeededGenerator(seed: 42)
        let agents: [String?] = ["a1", "a2", nil]
        let models: [String?] = ["gpt-4o", "claude-opus-4", "unknown-model", nil]
        let orgs: [String?] = ["acme", "globex", nil]
        var recorded: [ConsumeResult] = []
        var orgOf: [Int64: String?] = [:]
        for _ in 0..<1_300 {
            clock.advance(microseconds: Int64.random(in: 1...10_000_000_000, using: &generator))
            let org = orgs.randomElement(using: &generator)!
            let metadata = org.map { "{\"org_id\":\"\($0)\",\"user_id\":\"u\(Int.random(in: 1...3, using: &generator))\"}" }
            let usage = try UsageDetails(
                agentID: agents.randomElement(using: &generator)!, model: models.randomElement(using: &generator)!,
                latencyMilliseconds: Bool.random(using: &generator) ? Int64.random(in: 1...500, using: &generator) : nil,
                metadataJSON: metadata)
            let result = try ledger.consume(
                "t\(Int.random(in: 1...5, using: &generator))", promptTokens: Int64.random(in: 0...5_000, using: &generator),
                completionTokens: Int64.random(in: 0...5_000, using: &generator), usage: usage)
            recorded.append(result)
            orgOf[result.event.id] = org
        }
        let raw = try Connection(path: path)
        defer { raw.close() }
        func expected(_ key: (ConsumeResult) -> String?) -> [String: [Int64]] {
            var sums: [String: [Int64]] = [:]
            for result in recorded {
                let name = key(result) ?? "NULL"
                var row = sums[name] ?? [0, 0, 0, 0, 0, 0]
                row[0] += result.event.promptTokens
                row[1] += result.event.completionTokens
                row[2] += 1
                row[3] += result.event.costNanodollars ?? 0
                row[4] += result.event.costNanodollars == nil ? 1 : 0
                row[5] += result.event.costNanodollars == nil ? result.event.promptTokens + result.event.completionTokens : 0
                sums[name] = row
            }
            // A row whose requests are all unpriced has an unknown cost: NULL, read as -1 below.
            return sums.mapValues { row in row[2] > 0 && row[4] == row[2] ? [row[0], row[1], row[2], -1, row[4], row[5]] : row }
        }
        func actual(_ sql: String) throws -> [String: [Int64]] {
            let rows = try raw.prepare(sql).fetchAll { row -> (String, [Int64]) in
                let key: String? = try row[0]
                return (key ?? "NULL", [try row[1], try row[2], try row[3], (try row[4] as Int64?) ?? -1, try row[5], try row[6]])
            }
            return Dictionary(uniqueKeysWithValues: rows)
        }
        let columns = "prompt_tokens, completion_tokens, request_count, cost_nanos, unpriced_requests, unpriced_tokens"
        #expect(try actual("SELECT agent_id, \(columns) FROM usage_by_agent") == expected { $0.event.usage.agentID })
        #expect(try actual("SELECT model, \(columns) FROM usage_by_model") == expected { $0.event.usage.model })
        #expect(try actual("SELECT org_id, \(columns) FROM usage_by_org") == expected { orgOf[$0.event.id]! })
        #expect(try actual("SELECT thread_id, \(columns) FROM usage_by_thread") == expected { $0.event.threadID })
        let day = { (result: ConsumeResult) -> String? in
            Timestamps.date(day: result.event.timestampMicroseconds / 86_400_000_000)
        }
        #expect(try actual("SELECT day, \(columns) FROM usage_by_day") == expected(day))
        #expect(
            try actual("SELECT org_id || '|' || model || '|' || day, \(columns) FROM billing_by_org_model_day WHERE org_id IS NOT NULL AND model IS NOT NULL")
                == expected { result in
                    guard let org = orgOf[result.event.id]!, let model = result.event.usage.model else { return nil }
                    return "\(org)|\(model)|\(day(result)!)"
                }.filter { $0.key != "NULL" })
        let totals = try #require(try actual("SELECT 'all', \(columns) FROM usage_totals")["all"])
        #expect(totals == expected { _ in "all" }["all"])
        let latencies = recorded.compactMap(\.event.usage.latencyMilliseconds)
        let average = try ledger.usageOverview(.allTime).totals.averageLatencyMilliseconds
        #expect(average == Double(latencies.reduce(0, +)) / Double(latencies.count))
        #expect(try ledger.verify().isConsistent)
    }

    @Test("consumes fold into the rollups every 1,024 events and at a usage reset; readers see every one")
    func rollupsFoldInGroups() throws {
        // Proves the folded rollup tables hold exactly the consumes up to rolled_up_to, fewer
        // than 1,024 stay pending, a usage reset folds first (so each window keeps its own
        // consumes), and the overview counts every committed consume at every moment.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        let raw = try Connection(path: path)
        defer { raw.close() }
        func folded() throws -> (upTo: Int64, requests: Int64, requestsUpTo: Int64, lastID: Int64) {
            try raw.prepare(
                """
                SELECT s.rolled_up_to, (SELECT coalesce(sum(request_count), 0) FROM usage_agent_model),
                       (SELECT count(*) FROM events WHERE kind = 'consume' AND id <= s.rolled_up_to),
                       (SELECT max(id) FROM events)
                FROM ledger_settings AS s
                """
            ).fetchOne { row in (try row[0], try row[1], try row[2], try row[3]) }!
        }
        let agents = ["a", "b", "c"]
        for index in 0..<1_500 {
            try ledger.consume("t\(index % 7)", promptTokens: 3, usage: UsageDetails(agentID: agents[index % 3], model: "gpt-4o"))
            if index % 250 == 249 {
                #expect(try ledger.usageOverview().totals.requestCount == Int64(index + 1))
            }
        }
        var state = try folded()
        #expect(state.upTo == 1_024)
        #expect(state.requests == state.requestsUpTo)
        #expect(state.lastID - state.upTo < 1_024)
        try ledger.resetUsageWindow()
        state = try folded()
        #expect(state.upTo == state.lastID, "a usage reset folds every pending consume")
        #expect(state.requests == 1_500)
        for index in 0..<1_200 {
            try ledger.consume("t\(index % 7)", promptTokens: 2, usage: UsageDetails(agentID: agents[index % 3]))
        }
        #expect(try ledger.usageOverview().totals.requestCount == 1_200)
        #expect(try ledger.usageOverview().totals.promptTokens == 2_400)
        #expect(try ledger.usageOverview(.allTime).totals.requestCount == 2_700)
        #expect(try ledger.usage(agent: "a").requestCount == 400)
        state = try folded()
        #expect(state.requests == state.requestsUpTo)
        #expect(state.lastID - state.upTo < 1_024)
        let byWindow = try raw.prepare("SELECT usage_window, sum(request_count) FROM usage_agent_model_live GROUP BY 1 ORDER BY 1")
            .fetchAll { row in [try row[0], try row[1]] as [Int64] }
        #expect(byWindow == [[0, 1_500], [1, 1_200]])
        #expect(try ledger.verify().problems == [])
    }

    @Test("the usage window resets the overview but not billing")
    func usageWindow() throws {
        // Proves usage reset starts a new overview window recorded in the ledger, deleting nothing.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        try ledger.consume("t", promptTokens: 10, usage: UsageDetails(agentID: "a"))
        try ledger.resetUsageWindow()
        #expect(try ledger.usageOverview().totals.requestCount == 0)
        #expect(try ledger.usage(agent: "a").requestCount == 0)
        try ledger.consume("t", promptTokens: 5, usage: UsageDetails(agentID: "a"))
        let other = try Ledger(path: path)
        #expect(try other.usageOverview().totals.totalTokens == 5)
        #expect(try other.usageOverview(.allTime).totals.totalTokens == 15)
        #expect(try other.usage(agent: "a", scope: .allTime).requestCount == 2)
        #expect(try other.usage(agent: "nobody") == UsageTotals())
        #expect(try other.verify().isConsistent)
    }

    @Test("the feed returns every event exactly once across pages, with concurrent writers")
    func feedExactlyOnce() throws {
        // Proves an exporter that remembers lastId sees each event once, in id order, while writes go on.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        let writers = DispatchGroup()
        for writer in 0..<3 {
            DispatchQueue.global().async(group: writers) {
                let own = try? Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
                for index in 0..<100 {
                    _ = try? own?.consume("w\(writer)", promptTokens: Int64(index))
                }
            }
        }
        var seen: [Int64] = []
        var after: Int64 = 0
        var writersDone = false
        while true {
            let page = try ledger.events(after: after, limit: 7)
            seen += page.events.map(\.id)
            #expect(page.lastID == (page.events.last?.id ?? after))
            after = page.lastID
            if page.events.isEmpty {
                if writersDone { break }
                writersDone = writers.wait(timeout: .now() + 0.01) == .success
            }
        }
        #expect(seen == seen.sorted())
        #expect(Set(seen).count == seen.count)
        let total = try eventCount(at: path)
        #expect(Int64(seen.count) == total)
        #expect(seen.count == 303)
    }

    @Test("feed limits outside 1…10,000 and negative ids are refused")
    func feedLimits() throws {
        // Proves the page size is bounded with a clear error.
        let ledger = try Ledger.inMemory()
        #expect(ledgerErrorCase { _ = try ledger.events(after: 0, limit: 0) } == .invalidInput(field: "limit"))
        #expect(ledgerErrorCase { _ = try ledger.events(after: 0, limit: 10_001) } == .invalidInput(field: "limit"))
        #expect(ledgerErrorCase { _ = try ledger.events(after: -1) } == .invalidInput(field: "after"))
        #expect(try ledger.events(after: 0, limit: 10_000).lastID == 0)
    }

    @Test("an export range includes its start and excludes its end")
    func exportBounds() throws {
        // Proves --from is inclusive and --to exclusive, at microsecond precision.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        var stamps: [Int64] = []
        for _ in 0..<5 {
            stamps.append(try ledger.consume("t", promptTokens: 1).event.timestampMicroseconds)
            clock.advance(microseconds: 1)
        }
        var exported: [Int64] = []
        try ledger.forEachConsumeEvent(ExportQuery(from: stamps[1], to: stamps[3])) { exported.append($0.timestampMicroseconds) }
        #expect(exported == [stamps[1], stamps[2]])
        let rows = try ledger.rollup(ExportQuery(from: stamps[1], to: stamps[4]), by: .thread)
        #expect(rows.map(\.totals.requestCount) == [3])
        #expect(ledgerErrorCase {
            try ledger.forEachConsumeEvent(ExportQuery(from: stamps[3], to: stamps[1])) { _ in }
        } == .invalidInput(field: "to"))
    }

    @Test("CSV with quotes, commas and newlines in ids and metadata parses back field for field")
    func csvRoundTrip() throws {
        // Proves the CSV writer follows RFC 4180 for awkward values.
        let ledger = try Ledger.inMemory()
        let metadata = "{\n  \"note\": \"a, \\\"quoted\\\" note\",\n  \"org_id\": \"o,1\"\n}"
        try ledger.consume(
            "thread \"one\", really", promptTokens: 3,
            usage: try UsageDetails(agentID: "agent,\"x\"", model: "m\"1", metadataJSON: metadata))
        var text = CSV.record(LedgerEvent.csvHeader)
        var fields: [[String]] = []
        try ledger.forEachConsumeEvent(ExportQuery()) { event in
            text += CSV.record(event.csvFields)
            fields.append(event.csvFields)
        }
        let parsed = parseCSV(text)
        #expect(parsed.count == 2)
        #expect(parsed.first == LedgerEvent.csvHeader)
        #expect(Array(parsed.dropFirst()) == fields)
        #expect(parsed.last?[2] == "thread \"one\", really")
        #expect(parsed.last?[13] == metadata)
    }

    @Test("subscribers are called after commit, and a throwing subscriber breaks nothing")
    func subscribers() throws {
        // Proves notifications follow the commit and cannot roll back or block recording.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        let seenCommitted = Mutex<[Bool]>([])
        let done = DispatchSemaphore(value: 0)
        let good = ledger.subscribe { event in
            // A separate connection sees the event only if it was committed before this call.
            let reader = try Connection(path: path)
            defer { reader.close() }
            let count = try reader.prepare("SELECT count(*) FROM events WHERE id = ?").fetchOne([event.id]) { try $0[0] as Int64 }
            seenCommitted.withLock { $0.append(count == 1) }
            done.signal()
        }
        _ = ledger.subscribe { _ in throw LedgerError.conflict("subscriber failure") }
        try ledger.consume("t", promptTokens: 1)
        try ledger.consume("t", promptTokens: 2)
        #expect(done.wait(timeout: .now() + 10) == .success)
        #expect(done.wait(timeout: .now() + 10) == .success)
        #expect(seenCommitted.withLock { $0 } == [true, true])
        ledger.unsubscribe(good)
        try ledger.consume("t", promptTokens: 3)
        #expect(try ledger.usage("t")?.totalTokens == 6)
        #expect(ledger.droppedNotifications(good) == 0)
    }
}

/// A deterministic random generator (SplitMix64), so generated ledgers repeat exactly.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var value = state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}

/// A small RFC 4180 reader for the tests: quoted fields, doubled quotes, CRLF records.
func parseCSV(_ text: String) -> [[String]] {
    var records: [[String]] = []
    var record: [String] = []
    var field = ""
    var inQuotes = false
    var characters = Array(text.unicodeScalars)[...]
    while let scalar = characters.popFirst() {
        if inQuotes {
            if scalar == "\"" {
                if characters.first == "\"" {
                    field.unicodeScalars.append("\"")
                    characters.removeFirst()
                } else {
                    inQuotes = false
                }
            } else {
                field.unicodeScalars.append(scalar)
            }
        } else if scalar == "\"" {
            inQuotes = true
        } else if scalar == "," {
            record.append(field)
            field = ""
        } else if scalar == "\r" && characters.first == "\n" {
            characters.removeFirst()
            record.append(field)
            records.append(record)
            record = []
            field = ""
        } else {
            field.unicodeScalars.append(scalar)
        }
    }
    return records
}
