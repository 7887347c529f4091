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
        let from = effectiveFrom ?? configuration.clock()
        guard (0...Timestamps.maxMicroseconds).contains(from) else {
            throw LedgerError.invalidInput(
                field: "from",
                reason: "must be 1970-01-01T00:00:00Z…\(Timestamps.iso8601(microseconds: Timestamps.maxMicroseconds)) "
                    + "(got \(from) microseconds)")
        }
        return try await write { [self] connection in
            // Waits for every priced consume in flight and holds off new ones until this commits,
            // so that no consume is recorded at or after `from` at the old price unseen by the check.
            try await connection.execute("SELECT pg_advisory_xact_lock(\(PostgresSQL.pricesLockKey))", logger: logger)
            // The same order of checks as the SQLite store's, so that both name the same conflict.
            let exists = try await connection.fetchOne(
                "SELECT 1::bigint FROM model_prices WHERE model_pattern = \(pattern) AND effective_from_us = \(from)",
                as: Int64.self, logger: logger)
            if exists != nil {
                throw LedgerError.conflict("\(pattern) already has a price from \(Timestamps.iso8601(microseconds: from))")
            }
            try await checkNothingRepriced(from: from, pattern: pattern, on: connection)
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
        throw LedgerError.conflict(
            "a price for \(pattern) from \(Timestamps.iso8601(microseconds: from)) would re-price billed consume event \(latest.0) "
                + "(\(Timestamps.iso8601(microseconds: latest.1))); recorded events keep the price they were "
                + "billed at, so start it after that event")
    }
}
