import BudgetLedger
import PostgresNIO

extension PostgresLedger {
    /// Adds a price for `model` (an exact name or a pattern with one trailing `*`), in force from
    /// `effectiveFrom` (default now): `Ledger.setPrice`'s rules, results and errors.
    ///
    /// - Throws: `LedgerError.invalidInput` for a bad price, pattern or start; `LedgerError.conflict`
    ///   for a start that would re-price a recorded consume, or a second price at the same start.
    @discardableResult
    public func setPrice(
        model: String, promptUSDPerMillion: String, completionUSDPerMillion: String, effectiveFrom: Int64? = nil,
        source: String = "budget-ledger price set"
    ) async throws -> ModelPrice {
        try Validate.identifier(model, field: "model")
        let pattern = try Ledger.pricePattern(model)
        let prompt = try Money.nanodollarsPerToken(fromUSDPerMillion: promptUSDPerMillion, field: "prompt price")
        let completion = try Money.nanodollarsPerToken(fromUSDPerMillion: completionUSDPerMillion, field: "completion price")
        let from = try Ledger.checkedStart(effectiveFrom ?? configuration.clock())
        return try await write { [self] connection in
            // Waits for every priced consume in flight and holds off new ones until this commits,
            // so that no consume is recorded at or after `from` at the old price unseen by the check.
            try await lockPrices(on: connection)
            // The same order of checks as the SQLite store's, so that both name the same conflict.
            if try await livePrice(pattern: pattern, from: from, on: connection) != nil {
                throw LedgerError.priceExists(pattern: pattern, from: from)
            }
            try await checkNothingRepriced(from: from, pattern: pattern, on: connection)
            return try await insertPrice(
                pattern: pattern, prompt: prompt, completion: completion, from: from, source: source, on: connection)
        }
    }

    /// Withdraws the price of `model` that starts at `effectiveFrom`, before it takes effect: a
    /// row of `price_withdrawals` (migration 0006; `model_prices` stays as it was), so lookups
    /// fall back to the price that held before. `Ledger.withdrawPrice`'s rules, results and errors.
    ///
    /// - Returns: the withdrawn price.
    /// - Throws: `LedgerError.invalidInput` for a bad model or start; `LedgerError.priceNotFound`
    ///   when the model has no live price starting then; `LedgerError.conflict` when it is already
    ///   in effect, or a consume it matches is recorded at or after its start.
    @discardableResult
    public func withdrawPrice(model: String, effectiveFrom: Int64, source: String = "budget-ledger price withdraw")
        async throws -> ModelPrice
    {
        try Validate.identifier(model, field: "model")
        let pattern = try Ledger.pricePattern(model)
        let from = try Ledger.checkedStart(effectiveFrom)
        return try await write { [self] connection in
            try await lockPrices(on: connection)
            return try await withdraw(pattern: pattern, from: from, source: source, on: connection)
        }
    }

    /// Replaces the price of `model` that starts at `effectiveFrom`, before it takes effect: the
    /// row is withdrawn (as `withdrawPrice`) and the new rates are added from `newEffectiveFrom`
    /// (default: the same start), in one transaction. `Ledger.replacePrice`'s rules and errors.
    ///
    /// - Returns: the new price.
    /// - Throws: what `withdrawPrice` and `setPrice` throw; on any error nothing is written.
    @discardableResult
    public func replacePrice(
        model: String, effectiveFrom: Int64, promptUSDPerMillion: String, completionUSDPerMillion: String,
        newEffectiveFrom: Int64? = nil, source: String = "budget-ledger price replace"
    ) async throws -> ModelPrice {
        try Validate.identifier(model, field: "model")
        let pattern = try Ledger.pricePattern(model)
        let prompt = try Money.nanodollarsPerToken(fromUSDPerMillion: promptUSDPerMillion, field: "prompt price")
        let completion = try Money.nanodollarsPerToken(fromUSDPerMillion: completionUSDPerMillion, field: "completion price")
        return try await write { [self] connection in
            let from = try Ledger.checkedStart(effectiveFrom)
            let newFrom = try Ledger.checkedStart(newEffectiveFrom ?? from, field: "newFrom")
            try await lockPrices(on: connection)
            try await withdraw(pattern: pattern, from: from, source: source, on: connection)
            if try await livePrice(pattern: pattern, from: newFrom, on: connection) != nil {
                throw LedgerError.priceExists(pattern: pattern, from: newFrom)
            }
            guard newFrom > configuration.clock() else { throw LedgerError.replacementNotInFuture(from: newFrom) }
            try await checkNothingRepriced(from: newFrom, pattern: pattern, on: connection)
            return try await insertPrice(
                pattern: pattern, prompt: prompt, completion: completion, from: newFrom, source: source, on: connection)
        }
    }

    /// Takes the prices lock exclusively for the transaction: shared by priced consumes.
    private func lockPrices(on connection: PostgresConnection) async throws {
        try await connection.execute("SELECT pg_advisory_xact_lock(\(PostgresSQL.pricesLockKey))", logger: logger)
    }

    /// The withdrawal of the live row of `pattern` from `from` (see `withdrawPrice`), in the
    /// SQLite store's order of checks, so that both name the same error.
    @discardableResult
    private func withdraw(pattern: String, from: Int64, source: String, on connection: PostgresConnection) async throws
        -> ModelPrice
    {
        guard let (id, price) = try await livePrice(pattern: pattern, from: from, on: connection) else {
            throw LedgerError.priceNotFound(model: pattern, from: from)
        }
        let now = configuration.clock()
        guard from > now else { throw LedgerError.priceInEffect(pattern: pattern, from: from) }
        try await checkNothingRepriced(from: from, pattern: pattern, on: connection)
        try await connection.execute(
            "INSERT INTO price_withdrawals (price_id, withdrawn_at_us, source) VALUES (\(id), \(now), \(source))",
            logger: logger)
        return price
    }

    /// The live (not withdrawn) row of `pattern` starting at `from`, with its id.
    private func livePrice(pattern: String, from: Int64, on connection: PostgresConnection) async throws
        -> (Int64, ModelPrice)?
    {
        let query = PostgresQuery.sql(PostgresSQL.selectLivePrice) {
            $0.append(pattern)
            $0.append(from)
        }
        return try await connection.fetchOne(query, as: (Int64, String, Int64, Int64, Int64, String).self, logger: logger)
            .map {
                ($0.0, ModelPrice(
                    modelPattern: $0.1, promptNanodollarsPerToken: $0.2, completionNanodollarsPerToken: $0.3,
                    effectiveFromMicroseconds: $0.4, source: $0.5))
            }
    }

    private func insertPrice(
        pattern: String, prompt: Int64, completion: Int64, from: Int64, source: String, on connection: PostgresConnection
    ) async throws -> ModelPrice {
        try await connection.execute(
            """
            INSERT INTO model_prices (model_pattern, prompt_nanos_per_token, completion_nanos_per_token,
                                      effective_from_us, source)
            VALUES (\(pattern), \(prompt), \(completion), \(from), \(source))
            """, logger: logger)
        return ModelPrice(
            modelPattern: pattern, promptNanodollarsPerToken: prompt, completionNanodollarsPerToken: completion,
            effectiveFromMicroseconds: from, source: source)
    }

    private func checkNothingRepriced(from: Int64, pattern: String, on connection: PostgresConnection) async throws {
        let literal: String?
        if case .pattern(let text) = PriceMatch(pattern: pattern) { literal = text } else { literal = nil }
        let query = PostgresQuery.sql(PostgresSQL.selectLatestConsumeMatching) {
            $0.append(from)
            $0.append(pattern)
            $0.append(literal)
        }
        guard let latest = try await connection.fetchOne(query, as: (Int64, Int64).self, logger: logger) else { return }
        throw LedgerError.wouldReprice(pattern: pattern, from: from, eventID: latest.0, timestamp: latest.1)
    }
}
