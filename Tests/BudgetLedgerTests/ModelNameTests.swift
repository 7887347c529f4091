@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// Migration 0008: one model is one row everywhere (names normalised once), and a price names an
/// exact model or an explicit pattern.
@Suite("Model names and price patterns (migration 0008)")
struct ModelNameTests {
    static let spellings = ["gpt-4o", "GPT-4o", " gpt-4o ", "Gpt-4O  "]

    /// Every consume's recorded cost against the `event_prices` view (the shell's statement of
    /// the price rules): the ids where they differ.
    static func costsTheViewDisputes(_ connection: Connection) throws -> [Int64] {
        try connection.prepare(
            """
            SELECT events.id FROM events JOIN event_prices ON event_prices.event_id = events.id
            WHERE events.cost_nanos IS NOT event_prices.cost_nanos
            """
        ).fetchAll { try $0[0] as Int64 }
    }

    /// Rows where a rollup and its `*_from_events` recomputation differ.
    static func rollupsDisputed(_ connection: Connection) throws -> Int64 {
        try connection.prepare(
            """
            SELECT (SELECT count(*) FROM (SELECT * FROM usage_rollup_live EXCEPT SELECT * FROM usage_rollup_from_events))
                 + (SELECT count(*) FROM (SELECT * FROM usage_rollup_from_events EXCEPT SELECT * FROM usage_rollup_live))
                 + (SELECT count(*) FROM (SELECT * FROM usage_agent_model_live EXCEPT SELECT * FROM usage_agent_model_from_events))
                 + (SELECT count(*) FROM (SELECT * FROM usage_agent_model_from_events EXCEPT SELECT * FROM usage_agent_model_live))
            """
        ).fetchOne { try $0[0] as Int64 } ?? -1
    }

    @Test("the Swift rule and the SQL rule normalise every name alike")
    func swiftAndSQLAgree() throws {
        // Proves `ModelName.normalized` and migration 0008's `lower(trim(…))` are one rule: the
        // edges are ASCII whitespace of each kind, non-ASCII letters (not folded by either) and
        // names that are all whitespace.
        let ledger = try Ledger.inMemory()
        let names = [
            "gpt-4o", " GPT-4o ", "\tGPT\n", "\u{0B}\u{0C}\r x \r", "   ", "", "ÉCOLE-É", "Straße", "ǅ", "a\u{00A0}",
            "\u{00A0}b", "M-Custom-Large-v2", "o1 mini", "ＧＰＴ",
        ]
        try ledger.withConnection { connection in
            for name in names {
                let sql = try connection.prepare("SELECT \(ModelName.sql("?"))").fetchOne([name]) { try $0[0] as String }
                #expect(sql.map { Array($0.unicodeScalars) } == Array(ModelName.normalized(name).unicodeScalars), "\(name.debugDescription)")
            }
        }
    }

    @Test("case and space variants of one model are one row in every view, filter, export and read")
    func variantsAreOneRow() throws {
        // Proves that four spellings of gpt-4o, folded and pending alike, are one row with the
        // exact sums (4 × 1,000 prompt + 100 completion tokens at 2.5/10 per million).
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 1_000_000)
        for (index, spelling) in Self.spellings.enumerated() {
            let metadata = #"{"org_id": "acme", "user_id": "u"}"#
            let result = try ledger.consume(
                "t", promptTokens: 1_000, completionTokens: 100,
                usage: try UsageDetails(agentID: "a", model: spelling, metadataJSON: metadata))
            #expect(result.event.costNanodollars == 3_500_000, "\(spelling) is priced as gpt-4o")
            // Fold the first two into the rollup tables; the other two stay pending.
            if index == 1 {
                try ledger.write { try $0.execute(sql: "UPDATE ledger_settings SET rolled_up_to = (SELECT max(id) FROM events)") }
            }
        }
        let overview = try ledger.usageOverview()
        #expect(overview.byModel.map(\.model) == ["gpt-4o"])
        #expect(overview.byModel.first?.totals.costNanodollars == 14_000_000)
        #expect(overview.byModel.first?.totals.requestCount == 4)
        for spelling in Self.spellings {
            let totals = try ledger.usage(model: spelling)
            #expect(totals.requestCount == 4 && totals.promptTokens == 4_000 && totals.costNanodollars == 14_000_000)
        }
        let exported = try ledger.rollup(ExportQuery(), by: .model)
        #expect(exported.map(\.key) == ["gpt-4o"])
        #expect(exported.first?.totals.costNanodollars == 14_000_000)
        try ledger.withConnection { connection in
            for view in ["usage_by_model", "billing_by_agent_model", "billing_by_org_model_day"] {
                let rows = try connection.prepare("SELECT model, request_count, cost_nanos FROM \(view)").fetchAll {
                    "\(try $0[0] as String)|\(try $0[1] as Int64)|\(try $0[2] as Int64)"
                }
                #expect(rows == ["gpt-4o|4|14000000"], "\(view)")
            }
            for table in ["usage_rollup_live", "usage_agent_model_live"] {
                let models = try connection.prepare("SELECT DISTINCT model FROM \(table)").fetchAll { try $0[0] as String }
                #expect(models == ["gpt-4o"], "\(table)")
            }
            #expect(try Self.rollupsDisputed(connection) == 0)
            #expect(try Self.costsTheViewDisputes(connection) == [])
            let recorded = try connection.prepare("SELECT model FROM events WHERE kind = 'consume' ORDER BY id")
                .fetchAll { try $0[0] as String }
            #expect(recorded == Self.spellings, "events keep the names as recorded")
        }
        #expect(try ledger.verify().problems == [])
    }

    @Test("a ledger written before 0008 with variants upgrades, regroups and verifies")
    func upgradeRegroupsAndVerifies() throws {
        // Proves the migration regroups the folded and pending rows under the rule without
        // touching events, that costs billed by the old longest-prefix rule still verify (o1-mini
        // at o1's rate, " gpt-4o" unpriced because the old rule did not trim), and that consumes
        // after it are billed by the new rule.
        let folder = try TemporaryFolder()
        let path = folder.path("old.db")
        let old = try Connection(path: path)
        try Migrator(migrations: Ledger.migrations.filter { $0.version <= 7 }, applicationID: Ledger.applicationID).migrate(old)
        try old.execute(
            sql: """
                INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (1, 'limit', 't', 1000000);
                INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, model, cost_nanos)
                VALUES (2, 'consume', 't', 1000, 0, 'gpt-4o', 2500000), (3, 'consume', 't', 1000, 0, 'GPT-4o', 2500000);
                UPDATE ledger_settings SET rolled_up_to = (SELECT max(id) FROM events);
                INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, model, cost_nanos)
                VALUES (4, 'consume', 't', 1000, 0, ' gpt-4o', NULL), (5, 'consume', 't', 1000, 0, 'o1-mini', 15000000);
                """)
        #expect(try old.prepare("SELECT count(*) FROM usage_by_model").fetchOne { try $0[0] as Int64 } == 4)
        old.close()

        let ledger = try Ledger(path: path)
        #expect(try ledger.verify().problems == [])
        let gpt = try ledger.usage(model: "gpt-4o")
        #expect(gpt.requestCount == 3 && gpt.costNanodollars == 5_000_000 && gpt.unpricedRequests == 1)
        #expect(try ledger.usage(model: "o1-mini").costNanodollars == 15_000_000)
        #expect(try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "o1-mini")).event.costNanodollars == nil)
        #expect(try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: " gpt-4o")).event.costNanodollars == 2_500_000)
        #expect(try ledger.usageOverview().byModel.map(\.model).sorted { ($0 ?? "") < ($1 ?? "") } == ["gpt-4o", "o1-mini"])
        let disputed = try ledger.withConnection { connection in
            (try Self.rollupsDisputed(connection), try Self.costsTheViewDisputes(connection))
        }
        #expect(disputed.0 == 0 && disputed.1 == [])
        #expect(try ledger.verify().problems == [])
    }

    @Test("o1-mini is not billed at o1's rate; o1's dated variants are")
    func o1MiniIsUnpriced() throws {
        // Proves the issue's case: 1,000 prompt tokens of o1-mini were 0.015 by prefix; now
        // unpriced until it has a price of its own, while o1-2024-12-17 gets o1's price by the
        // seeded pattern o1-20*.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 1_000_000)
        #expect(try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "o1-mini")).event.costNanodollars == nil)
        #expect(try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "o1-2024-12-17")).event.costNanodollars == 15_000_000)
        #expect(try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "O1")).event.costNanodollars == 15_000_000)
        #expect(try ledger.price(forModel: "o1-mini") == nil)
        #expect(try ledger.price(forModel: "o1-2024-12-17")?.modelPattern == "o1-20*")
        #expect(try ledger.price(forModel: "o1-2024-12-17")?.match == .pattern(literal: "o1-20"))
        #expect(try ledger.price(forModel: " O1 ")?.match == .exact)
        try ledger.setPrice(model: "o1-mini", promptUSDPerMillion: "1.1", completionUSDPerMillion: "4.4")
        #expect(try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: "o1-mini")).event.costNanodollars == 1_100_000)
        #expect(try ledger.verify().problems == [])
    }

    @Test("the most specific price wins: an exact name, then the longest literal")
    func mostSpecificWins() throws {
        // Proves the ordering across exact rows and patterns of different lengths, that a price
        // is stored normalised, and that a later, less specific price does not override.
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        try ledger.setLimit("t", maxTokens: 1_000_000)
        let exact = try ledger.setPrice(model: " GPT-4o-2024-08-06 ", promptUSDPerMillion: "5", completionUSDPerMillion: "0")
        #expect(exact.modelPattern == "gpt-4o-2024-08-06")
        let longer = try ledger.setPrice(model: "GPT-4o-2024*", promptUSDPerMillion: "1", completionUSDPerMillion: "0")
        #expect(longer.modelPattern == "gpt-4o-2024*" && longer.match == .pattern(literal: "gpt-4o-2024"))
        clock.advance(microseconds: 1)
        try ledger.setPrice(model: "gpt-*", promptUSDPerMillion: "9", completionUSDPerMillion: "0")
        clock.advance(microseconds: 1)
        let cost = { (model: String) in
            try ledger.consume("t", promptTokens: 1_000, usage: UsageDetails(model: model)).event.costNanodollars
        }
        #expect(try cost("gpt-4o-2024-08-06") == 5_000_000)
        #expect(try cost("gpt-4o-2024-11-20") == 1_000_000)
        #expect(try cost("gpt-4o-2025-01-01") == 2_500_000, "gpt-4o-20* (seeded) is longer than gpt-*")
        #expect(try cost("gpt-4o") == 2_500_000, "the exact seeded row")
        #expect(try cost("gpt-5") == 9_000_000)
        #expect(try ledger.verify().problems == [])
        #expect(try ledger.withConnection { try Self.costsTheViewDisputes($0) } == [])
    }

    @Test("a price names a model or a pattern with one trailing *, nothing else")
    func patternsAreExplicit() throws {
        // Proves the refusals (a * inside, a bare *, only spaces) and that a price may not start
        // before a billed consume its pattern matches, while one it does not match is no obstacle
        // (an unpriced consume is no obstacle either: `reprice` bills it, see PriceCorrectionTests).
        let clock = ManualClock()
        let ledger = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        for model in ["a*b", "*", " * ", "   ", "a**"] {
            do {
                try ledger.setPrice(model: model, promptUSDPerMillion: "1", completionUSDPerMillion: "1")
                Issue.record("\(model.debugDescription) was accepted")
            } catch LedgerError.invalidInput(let field, _) {
                #expect(field == "model")
            }
        }
        let start = clock.read()
        try ledger.setPrice(model: "foo-1", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: start - 1)
        try ledger.setLimit("t", maxTokens: 1_000)
        try ledger.consume("t", promptTokens: 1, usage: UsageDetails(model: "Foo-1"))
        clock.advance(microseconds: 10)
        #expect(ledgerErrorCase {
            _ = try ledger.setPrice(model: "foo-*", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: start)
        } == .conflict)
        try ledger.setPrice(model: "foo", promptUSDPerMillion: "1", completionUSDPerMillion: "1", effectiveFrom: start)
        #expect(try ledger.verify().problems == [])
    }
}
