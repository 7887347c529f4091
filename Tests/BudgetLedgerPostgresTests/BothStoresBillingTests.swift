import BudgetLedger
import BudgetLedgerStore
@testable import BudgetLedgerServer
import Testing

/// Billing (BillingTests and UnpricedTokensTests on SQLite alone), run on both stores through
/// the seam; the billing views are read with each store's own SQL and checked against a
/// recomputation from the events.
@Suite("Billing on both stores")
struct BothStoresBillingTests {
    /// The consumes every test here records: priced by a set price (`m-1`, also written
    /// ` M-1 `), by a seeded one (`gpt-4o`: 2,500 and 10,000 nano-dollars a token), and unpriced
    /// (`mystery`, and no model at all). Costs in nano-dollars: 2,100,000, 730,500, 350,000, and
    /// three unknown. A usage reset after the third starts a new window (the views are all-time).
    private func record(on store: any LedgerStore) async throws {
        let price = try await store.setPrice(
            model: "M-1", promptUSDPerMillion: "1.5", completionUSDPerMillion: "3", effectiveFrom: nil, source: "test")
        #expect(price.modelPattern == "m-1")
        #expect(price.promptNanodollarsPerToken == 1_500)
        #expect(price.completionNanodollarsPerToken == 3_000)
        #expect(try await store.price(forModel: " M-1 ") == price)
        let calls: [(thread: String, prompt: Int64, completion: Int64, usage: UsageDetails)] = [
            ("t1", 1_000, 200, try UsageDetails(agentID: "a", model: "m-1", metadataJSON: #"{"org_id":"acme"}"#)),
            ("t2", 333, 77, try UsageDetails(agentID: "b", model: " M-1 ", metadataJSON: #"{"org_id":"acme","user_id":"ann"}"#)),
            ("t1", 100, 10, try UsageDetails(agentID: "a", model: "gpt-4o", latencyMilliseconds: 120, metadataJSON: #"{"org_id":"globex"}"#)),
            ("t2", 10, 5, UsageDetails(agentID: "a", model: "mystery")),
            ("t3", 7, 0, UsageDetails(agentID: "c", model: "mystery")),
            ("t3", 4, 0, .none),
        ]
        for (index, call) in calls.enumerated() {
            try await store.consume(call.thread, prompt: call.prompt, completion: call.completion, usage: call.usage)
            if index == 2 { try await store.resetUsageWindow() }
        }
    }

    private func totals(
        prompt: Int64, completion: Int64, requests: Int64, cost: Int64, unpriced: Int64 = 0, unpricedTokens: Int64 = 0,
        latencies: [Int64] = []
    ) -> UsageTotals {
        var totals = UsageTotals()
        totals.promptTokens = prompt
        totals.completionTokens = completion
        totals.requestCount = requests
        totals.costNanodollars = cost
        totals.unpricedRequests = unpriced
        totals.unpricedTokens = unpricedTokens
        totals.latencyMillisecondsSum = latencies.reduce(0, +)
        totals.latencyCount = Int64(latencies.count)
        return totals
    }

    @Test("each consume is billed at its model's price, exact to the nano-dollar, and totals add up by agent and model", arguments: StoreKind.allCases)
    func pricesAndTotals(_ kind: StoreKind) async throws {
        // Proves prices (set, normalised, seeded), each event's cost, and the per-agent, per-model
        // and overall totals, all-time and in the window after the reset, to the nano-dollar.
        try await withStore(kind) { subject in
            let store = subject.store
            try await record(on: store)
            let costs = try await subject.feed().filter { $0.kind == "consume" }.map(\.costNanodollars)
            #expect(costs == [2_100_000, 730_500, 350_000, nil, nil, nil])
            #expect(try await store.usage(agent: "a", scope: .allTime) == totals(
                prompt: 1_110, completion: 215, requests: 3, cost: 2_450_000, unpriced: 1, unpricedTokens: 15, latencies: [120]))
            #expect(try await store.usage(agent: "b", scope: .allTime) == totals(prompt: 333, completion: 77, requests: 1, cost: 730_500))
            #expect(try await store.usage(model: "m-1", scope: .allTime) == totals(prompt: 1_333, completion: 277, requests: 2, cost: 2_830_500))
            #expect(try await store.usage(model: "GPT-4o", scope: .allTime) == totals(prompt: 100, completion: 10, requests: 1, cost: 350_000, latencies: [120]))
            let overview = try await store.usageOverview(.allTime)
            #expect(overview.totals == totals(
                prompt: 1_454, completion: 292, requests: 6, cost: 3_180_500, unpriced: 3, unpricedTokens: 26, latencies: [120]))
            #expect(overview.activeThreads == 3)
            #expect(try await store.usageOverview(.currentWindow).totals == totals(
                prompt: 21, completion: 5, requests: 3, cost: 0, unpriced: 3, unpricedTokens: 26))
            let byAgent = try await store.rollup(ExportQuery(), by: .agent).map { "\($0.key ?? "-") \($0.totals.requestCount) \($0.totals.costNanodollars)" }
            #expect(byAgent == ["- 1 0", "a 3 2450000", "b 1 730500", "c 1 0"])
        }
    }

    @Test("rollups and the overview order keys in byte order, as SQLite does, whatever the database's collation", arguments: StoreKind.allCases)
    func keysInByteOrder(_ kind: StoreKind) async throws {
        // Proves ties and keys sort by bytes on both stores (no key first in a rollup; upper
        // case before lower, "é" last), on a PostgreSQL database whose collation is en-US.
        try await withStore(kind) { subject in
            let store = subject.store
            for agent in ["b", "é", "B", "a", nil] as [String?] {
                try await store.consume("t", prompt: 5, usage: UsageDetails(agentID: agent, model: agent.map { "m-" + $0 }))
            }
            #expect(try await store.rollup(ExportQuery(), by: .agent).map(\.key) == [nil, "B", "a", "b", "é"])
            #expect(try await store.rollup(ExportQuery(), by: .model).map(\.key) == [nil, "m-a", "m-b", "m-é"])
            let overview = try await store.usageOverview(.allTime)
            #expect(overview.byAgent.map(\.agentID) == [nil, "B", "a", "b", "é"])
        }
    }

    @Test("an unpriced request is never $0: its cost is unknown, and the tokens it leaves out are counted", arguments: StoreKind.allCases)
    func unpricedIsNeverZero(_ kind: StoreKind) async throws {
        // Proves a total with only unpriced requests has no known cost (nil, not 0), one that
        // mixes them is marked incomplete, and unpricedRequests and unpricedTokens say how much
        // is missing.
        try await withStore(kind) { subject in
            let store = subject.store
            try await record(on: store)
            let mystery = try await store.usage(model: "mystery", scope: .allTime)
            #expect(mystery == totals(prompt: 17, completion: 5, requests: 2, cost: 0, unpriced: 2, unpricedTokens: 22))
            #expect(mystery.knownCostNanodollars == nil)
            #expect(!mystery.isCostComplete)
            let agentC = try await store.usage(agent: "c", scope: .allTime)
            #expect(agentC.knownCostNanodollars == nil)
            let agentA = try await store.usage(agent: "a", scope: .allTime)
            #expect(agentA.knownCostNanodollars == 2_450_000)
            #expect(!agentA.isCostComplete)
            #expect(try await store.usage(agent: "b", scope: .allTime).isCostComplete)
            let window = try await store.usageOverview(.currentWindow).totals
            #expect(window.knownCostNanodollars == nil)
            #expect(window.unpricedTokens == 26)
        }
    }

    @Test("a fresh store has the reference price table; a dated model is billed by its family's pattern", arguments: StoreKind.allCases)
    func seededPrices(_ kind: StoreKind) async throws {
        // Proves both stores start from the same 18 reference rows (9 models, each with its
        // dated-release pattern) and match a dated name to the pattern, as the price rules say.
        try await withStore(kind) { subject in
            let store = subject.store
            let table = try await store.priceTable()
            #expect(table.prices.count == 18)
            #expect(table.now == subject.clock.read())
            let dated = try #require(try await store.price(forModel: "Claude-Sonnet-4-20250514"))
            #expect(dated.modelPattern == "claude-sonnet-4-20*")
            #expect(dated.promptNanodollarsPerToken == 3_000)
            #expect(dated.completionNanodollarsPerToken == 15_000)
            #expect(try await store.price(forModel: "no-such-model") == nil)
        }
    }

    @Test("a price takes effect at its start on the store's clock; re-pricing a billed consume or repeating a start is a conflict", arguments: StoreKind.allCases)
    func priceSchedule(_ kind: StoreKind) async throws {
        // Proves a consume is billed at the price in force when it is recorded (a later price
        // waits for the clock), and the two refusals of setPrice, with their messages and
        // nothing written.
        try await withStore(kind) { subject in
            let store = subject.store
            let start = subject.clock.read()
            let later = start + 60_000_000
            func price(_ prompt: String, _ completion: String, from: Int64?) async throws -> ModelPrice {
                try await store.setPrice(model: "m", promptUSDPerMillion: prompt, completionUSDPerMillion: completion, effectiveFrom: from, source: "test")
            }
            _ = try await price("1", "2", from: nil)
            _ = try await price("3", "4", from: later)
            try await store.consume("t", prompt: 100, completion: 10, usage: UsageDetails(model: "m"))
            subject.clock.advance(microseconds: 60_000_000)
            let second = try await store.consume("t", prompt: 100, completion: 10, usage: UsageDetails(model: "m"))
            #expect(try await subject.feed().filter { $0.kind == "consume" }.map(\.costNanodollars) == [120_000, 340_000])
            #expect(try await store.price(forModel: "m")?.promptNanodollarsPerToken == 3_000)
            let feed = try await subject.feed()
            let reprice = await attempt { _ = try await price("5", "5", from: start + 1) }
            #expect(reprice == .conflict(
                "a price for m from \(Timestamps.iso8601(microseconds: start + 1)) would re-price billed consume event "
                    + "\(second.event.id) (\(Timestamps.iso8601(microseconds: later))); recorded events keep the price they "
                    + "were billed at, so start it after that event"))
            let future = later + 3_600_000_000
            _ = try await price("5", "5", from: future)
            let repeated = await attempt { _ = try await price("6", "6", from: future) }
            #expect(repeated == .conflict("m already has a price from \(Timestamps.iso8601(microseconds: future))"))
            #expect(try await subject.feed() == feed)
        }
    }

    /// The billing columns of `view` grouped by `key`, and the same sums recomputed from the
    /// consume events grouped by `eventKey` (the same expression over `events`' columns), both
    /// as text and sorted by key: the SQL reads the same on both stores.
    private func viewAndRecomputation(_ view: String, key: String, eventKey: String, on subject: StoreUnderTest) async throws
        -> (view: [[String?]], recomputed: [[String?]])
    {
        let columns = ["prompt_tokens", "completion_tokens", "request_count", "cost_nanos", "unpriced_requests", "unpriced_tokens"]
        let fromView = try await subject.rows(
            "SELECT CAST(\(key) AS TEXT), " + columns.map { "CAST(\($0) AS TEXT)" }.joined(separator: ", ") + " FROM \(view)")
        let recomputed = try await subject.rows(
            """
            SELECT CAST(\(eventKey) AS TEXT), CAST(sum(prompt_tokens) AS TEXT), CAST(sum(completion_tokens) AS TEXT),
                   CAST(count(*) AS TEXT), CAST(CASE WHEN count(cost_nanos) > 0 THEN sum(cost_nanos) END AS TEXT),
                   CAST(count(*) - count(cost_nanos) AS TEXT),
                   CAST(sum(CASE WHEN cost_nanos IS NULL THEN prompt_tokens + completion_tokens ELSE 0 END) AS TEXT)
            FROM events WHERE kind = 'consume' GROUP BY \(eventKey)
            """)
        let byKey = { (rows: [[String?]]) in rows.sorted { ($0[0] ?? "") < ($1[0] ?? "") } }
        return (byKey(fromView), byKey(recomputed))
    }

    /// The grouped views `record(on:)` fills, with their keys (over the view, over `events`;
    /// models compare by their normalised name, which trimming spaces and lowering is here)
    /// and their rows: key, prompt, completion, requests, cost (NULL when none is priced),
    /// unpriced requests, unpriced tokens.
    private static let groupedViews: [(view: String, key: String, eventKey: String, rows: [[String?]])] = [
        ("usage_by_agent", "agent_id", "agent_id", [
            [nil, "4", "0", "1", nil, "1", "4"], ["a", "1110", "215", "3", "2450000", "1", "15"],
            ["b", "333", "77", "1", "730500", "0", "0"], ["c", "7", "0", "1", nil, "1", "7"],
        ]),
        ("usage_by_model", "model", "lower(trim(model))", [
            [nil, "4", "0", "1", nil, "1", "4"], ["gpt-4o", "100", "10", "1", "350000", "0", "0"],
            ["m-1", "1333", "277", "2", "2830500", "0", "0"], ["mystery", "17", "5", "2", nil, "2", "22"],
        ]),
        ("usage_by_org", "org_id", "org_id", [
            [nil, "21", "5", "3", nil, "3", "26"], ["acme", "1333", "277", "2", "2830500", "0", "0"],
            ["globex", "100", "10", "1", "350000", "0", "0"],
        ]),
        ("usage_by_user", "user_id", "user_id", [
            [nil, "1121", "215", "5", "2450000", "3", "26"], ["ann", "333", "77", "1", "730500", "0", "0"],
        ]),
        ("usage_by_thread", "thread_id", "thread_id", [
            ["t1", "1100", "210", "2", "2450000", "0", "0"], ["t2", "343", "82", "2", "730500", "1", "15"],
            ["t3", "11", "0", "2", nil, "2", "11"],
        ]),
        ("billing_by_agent_model", "coalesce(agent_id, '-') || '|' || coalesce(model, '-')",
         "coalesce(agent_id, '-') || '|' || coalesce(lower(trim(model)), '-')", [
            ["-|-", "4", "0", "1", nil, "1", "4"], ["a|gpt-4o", "100", "10", "1", "350000", "0", "0"],
            ["a|m-1", "1000", "200", "1", "2100000", "0", "0"], ["a|mystery", "10", "5", "1", nil, "1", "15"],
            ["b|m-1", "333", "77", "1", "730500", "0", "0"], ["c|mystery", "7", "0", "1", nil, "1", "7"],
        ]),
    ]

    @Test("the billing views, read with the store's own SQL, equal a recomputation from the events", arguments: StoreKind.allCases)
    func viewsEqualRecomputation(_ kind: StoreKind) async throws {
        // Proves the grouped billing views, usage_by_day and usage_totals (folded rollups and
        // pending events, across a usage reset) hold exactly the sums over the consume events,
        // and those sums are the expected figures (NULL cost where nothing is priced).
        try await withStore(kind) { subject in
            try await record(on: subject.store)
            for (view, key, eventKey, rows) in Self.groupedViews {
                let read = try await viewAndRecomputation(view, key: key, eventKey: eventKey, on: subject)
                #expect(read.view == rows, "\(view)")
                #expect(read.recomputed == rows, "\(view) recomputed from the events")
            }
            // One UTC day: the test clock reads 2025-11-29.
            let days = try await viewAndRecomputation("usage_by_day", key: "day", eventKey: "CAST('2025-11-29' AS TEXT)", on: subject)
            #expect(days.view == [["2025-11-29", "1454", "292", "6", "3180500", "3", "26"]])
            #expect(days.recomputed == days.view)
            let totals = try await subject.rows(
                """
                SELECT CAST(total_tokens AS TEXT), CAST(request_count AS TEXT), CAST(cost_nanos AS TEXT),
                       CAST(cost_complete AS TEXT), CAST(unpriced_requests AS TEXT), CAST(unpriced_tokens AS TEXT)
                FROM usage_totals
                """)
            let recomputed = try await subject.rows(
                """
                SELECT CAST(sum(prompt_tokens + completion_tokens) AS TEXT), CAST(count(*) AS TEXT), CAST(sum(cost_nanos) AS TEXT),
                       CAST(CASE WHEN count(*) = count(cost_nanos) THEN 1 ELSE 0 END AS TEXT),
                       CAST(count(*) - count(cost_nanos) AS TEXT),
                       CAST(sum(CASE WHEN cost_nanos IS NULL THEN prompt_tokens + completion_tokens ELSE 0 END) AS TEXT)
                FROM events WHERE kind = 'consume'
                """)
            #expect(totals == [["1746", "6", "3180500", "0", "3", "26"]])
            #expect(recomputed == totals)
        }
    }
}
