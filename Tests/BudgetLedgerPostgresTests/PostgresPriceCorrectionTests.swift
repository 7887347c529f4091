import BudgetLedger
import BudgetLedgerPostgres
import Foundation
import PostgresNIO
import Testing

/// Withdrawing and replacing a future price (issue 18) on PostgreSQL, against the SQLite `Ledger`.
@Suite("PostgresLedger withdraws and replaces future prices as the SQLite Ledger does")
struct PostgresPriceCorrectionTests {
    @Test("the same withdrawals and replacements give the same answers, errors, listings and bills")
    func sameAnswers() async throws {
        // Proves withdrawPrice and replacePrice keep SQLite's rules on PostgreSQL: a future price
        // can be withdrawn (the lookup falls back), set again at the same start, and replaced; one
        // in force, an unknown one or a bad start is refused with the same error; and a consume
        // after every step is billed the same, so a withdrawn row never prices anything.
        let clock = TestClock()
        let sqlite = try Ledger.inMemory(configuration: Ledger.Configuration(clock: clock.read))
        defer { sqlite.close() }
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { postgres, _ in
            let parity = ParitySteps(clock: clock)
            var consumes = 0
            /// A step, then a consume of model `m-1` (matched by the pattern `m-*`) and the price the stores would bill from `future`.
            func stepAndBill<A, B>(_ name: String, _ left: () throws -> A, _ right: () async throws -> B) async {
                await parity.step(name, left, right)
                consumes += 1
                let usage = UsageDetails(model: "M-1")
                await parity.step(
                    "consume after \(name)",
                    { try sqlite.consume("t", promptTokens: 1_000, completionTokens: 100, usage: usage).event.costNanodollars },
                    { try await postgres.consume("t", promptTokens: 1_000, completionTokens: 100, usage: usage).event.costNanodollars })
                await parity.step("price at the future start after \(name)", { try sqlite.price(forModel: "m-1", at: future) },
                           { try await postgres.price(forModel: "m-1", at: future) })
                await parity.step("listing after \(name)", { try sqlite.prices().filter { $0.modelPattern.hasPrefix("m-") } },
                           { try await postgres.prices().filter { $0.modelPattern.hasPrefix("m-") } })
            }
            let start = clock.read()
            let future = start + 3_600_000_000
            let later = future + 1_000_000
            await stepAndBill(
                "the price in force", { try sqlite.setPrice(model: "m-*", promptUSDPerMillion: "1", completionUSDPerMillion: "2") },
                { try await postgres.setPrice(model: "m-*", promptUSDPerMillion: "1", completionUSDPerMillion: "2") })
            await stepAndBill(
                "a future price",
                { try sqlite.setPrice(model: "M-*", promptUSDPerMillion: "10", completionUSDPerMillion: "20", effectiveFrom: future) },
                { try await postgres.setPrice(model: "M-*", promptUSDPerMillion: "10", completionUSDPerMillion: "20", effectiveFrom: future) })
            await parity.step(
                "a second price at the same start",
                { try sqlite.setPrice(model: "m-*", promptUSDPerMillion: "3", completionUSDPerMillion: "3", effectiveFrom: future) },
                { try await postgres.setPrice(model: "m-*", promptUSDPerMillion: "3", completionUSDPerMillion: "3", effectiveFrom: future) })
            await stepAndBill(
                "withdraw it", { try sqlite.withdrawPrice(model: "m-*", effectiveFrom: future) },
                { try await postgres.withdrawPrice(model: "m-*", effectiveFrom: future) })
            await parity.step(
                "withdraw it again", { try sqlite.withdrawPrice(model: "m-*", effectiveFrom: future) },
                { try await postgres.withdrawPrice(model: "m-*", effectiveFrom: future) })
            await stepAndBill(
                "set again at the same start",
                { try sqlite.setPrice(model: "m-*", promptUSDPerMillion: "5", completionUSDPerMillion: "6", effectiveFrom: future) },
                { try await postgres.setPrice(model: "m-*", promptUSDPerMillion: "5", completionUSDPerMillion: "6", effectiveFrom: future) })
            await stepAndBill(
                "replace it in place",
                { try sqlite.replacePrice(model: "m-*", effectiveFrom: future, promptUSDPerMillion: "7", completionUSDPerMillion: "8") },
                { try await postgres.replacePrice(model: "m-*", effectiveFrom: future, promptUSDPerMillion: "7", completionUSDPerMillion: "8") })
            await stepAndBill(
                "replace it from a later start",
                {
                    try sqlite.replacePrice(
                        model: "m-*", effectiveFrom: future, promptUSDPerMillion: "9", completionUSDPerMillion: "9", newEffectiveFrom: later)
                },
                {
                    try await postgres.replacePrice(
                        model: "m-*", effectiveFrom: future, promptUSDPerMillion: "9", completionUSDPerMillion: "9", newEffectiveFrom: later)
                })
            await stepAndBill(
                "a replacement from the past writes nothing",
                {
                    try sqlite.replacePrice(
                        model: "m-*", effectiveFrom: later, promptUSDPerMillion: "4", completionUSDPerMillion: "4", newEffectiveFrom: start + 1)
                },
                {
                    try await postgres.replacePrice(
                        model: "m-*", effectiveFrom: later, promptUSDPerMillion: "4", completionUSDPerMillion: "4", newEffectiveFrom: start + 1)
                })
            let inForce = try sqlite.price(forModel: "m-1")!.effectiveFromMicroseconds
            await parity.step(
                "withdraw the price in force", { try sqlite.withdrawPrice(model: "m-*", effectiveFrom: inForce) },
                { try await postgres.withdrawPrice(model: "m-*", effectiveFrom: inForce) })
            await parity.step(
                "replace the price in force",
                { try sqlite.replacePrice(model: "m-*", effectiveFrom: inForce, promptUSDPerMillion: "1", completionUSDPerMillion: "1", newEffectiveFrom: later + 1) },
                { try await postgres.replacePrice(model: "m-*", effectiveFrom: inForce, promptUSDPerMillion: "1", completionUSDPerMillion: "1", newEffectiveFrom: later + 1) })
            await parity.step(
                "an unknown model", { try sqlite.withdrawPrice(model: "nope", effectiveFrom: later) },
                { try await postgres.withdrawPrice(model: "nope", effectiveFrom: later) })
            await parity.step(
                "an unknown time", { try sqlite.withdrawPrice(model: "m-*", effectiveFrom: later + 7) },
                { try await postgres.withdrawPrice(model: "m-*", effectiveFrom: later + 7) })
            await parity.step(
                "a start before 1970", { try sqlite.withdrawPrice(model: "m-*", effectiveFrom: -1) },
                { try await postgres.withdrawPrice(model: "m-*", effectiveFrom: -1) })
            await parity.step(
                "a new start after 9999",
                { try sqlite.replacePrice(model: "m-*", effectiveFrom: later, promptUSDPerMillion: "1", completionUSDPerMillion: "1", newEffectiveFrom: .max) },
                { try await postgres.replacePrice(model: "m-*", effectiveFrom: later, promptUSDPerMillion: "1", completionUSDPerMillion: "1", newEffectiveFrom: .max) })
            await parity.step(
                "a bare *", { try sqlite.withdrawPrice(model: "*", effectiveFrom: later) },
                { try await postgres.withdrawPrice(model: "*", effectiveFrom: later) })
            await parity.step(
                "a bad price",
                { try sqlite.replacePrice(model: "m-*", effectiveFrom: later, promptUSDPerMillion: "-1", completionUSDPerMillion: "1") },
                { try await postgres.replacePrice(model: "m-*", effectiveFrom: later, promptUSDPerMillion: "-1", completionUSDPerMillion: "1") })
            clock.advance(microseconds: later - clock.read())
            await stepAndBill(
                "the replacement takes effect", { try sqlite.price(forModel: "m-1") }, { try await postgres.price(forModel: "m-1") })
            await parity.step(
                "withdraw it once in force", { try sqlite.withdrawPrice(model: "m-*", effectiveFrom: later) },
                { try await postgres.withdrawPrice(model: "m-*", effectiveFrom: later) })
            for (name, sqliteAnswer, postgresAnswer) in parity.steps {
                #expect(sqliteAnswer == postgresAnswer, "\(name)")
            }
            // The sequence reaches every outcome it is meant to compare.
            let answers = parity.steps.map(\.1)
            #expect(answers.contains { $0.contains("No price for m-*") })
            #expect(answers.contains { $0.contains("is already in effect") })
            #expect(answers.contains { $0.contains("a replacement must start in the future") })
            #expect(answers.contains { $0.contains("already has a price from") })
            #expect(answers.contains { $0.contains("invalid newFrom") })
            // The bills change once the replacement is in force; the price a consume at the
            // future start would get follows every withdrawal and replacement (the base price,
            // 10/20, 5/6, 7/8, then the base again once the replacement moved to `later`).
            #expect(Set(parity.steps.filter { $0.0.hasPrefix("consume after") }.map(\.1)).count == 2)
            #expect(Set(parity.steps.filter { $0.0.hasPrefix("price at the future start") }.map(\.1)).count == 4)
            #expect(consumes == 8)
        }
    }

    @Test("migration 0006's triggers take the store's prices lock, by the same number")
    func triggersTakeTheStoresLock() throws {
        // Proves the lock number written in SQL (a trigger cannot read a Swift constant) is the
        // one the store's price writes and priced consumes take.
        let migration = try #require(PostgresLedger.migrations.first { $0.version == 6 })
        let taken = migration.sql.components(separatedBy: "pg_advisory_xact_lock(").dropFirst()
            .map { $0.prefix { $0 != ")" } }
        #expect(taken.count == 2)
        #expect(taken.allSatisfy { $0 == "\(PostgresSQL.pricesLockKey)" })
    }

    @Test("plain SQL cannot withdraw a price in force, nor add a second live row at one start")
    func triggersGuardPlainSQL() async throws {
        // Proves the schema, not only the store, keeps the rules for other writers.
        let clock = TestClock()
        try await withPostgresLedger(configuration: .init(clock: clock.read)) { postgres, url in
            try await postgres.setPrice(model: "m", promptUSDPerMillion: "1", completionUSDPerMillion: "1")
            try await postgres.setPrice(
                model: "m", promptUSDPerMillion: "2", completionUSDPerMillion: "2", effectiveFrom: clock.read() + 1_000_000)
            try await withDatabase(url) { client in
                let inForce = """
                    INSERT INTO price_withdrawals (price_id, withdrawn_at_us, source)
                    SELECT id, \(clock.read()), 'sql' FROM model_prices WHERE model_pattern = 'm' ORDER BY id LIMIT 1
                    """
                #expect(await sqlState { try await client.query(PostgresQuery(unsafeSQL: inForce)) } == "23514")
                let second = """
                    INSERT INTO model_prices (model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source)
                    SELECT model_pattern, 1, 1, effective_from_us, 'sql' FROM model_prices WHERE model_pattern = 'm' ORDER BY id DESC LIMIT 1
                    """
                #expect(await sqlState { try await client.query(PostgresQuery(unsafeSQL: second)) } == "23505")
                #expect(await sqlState { try await client.query("TRUNCATE price_withdrawals") } == "23001")
            }
        }
    }
}
