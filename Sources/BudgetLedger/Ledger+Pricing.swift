import LedgerSQLite

extension ModelPrice {
    /// Decodes the columns of `LedgerSQL.selectPrices`.
    init(row: Row) throws {
        modelPrefix = try row[0]
        promptNanodollarsPerToken = try row[1]
        completionNanodollarsPerToken = try row[2]
        effectiveFromMicroseconds = try row[3]
        source = try row[4]
    }
}

extension Ledger {
    /// Adds a price for models starting with `model` (case-insensitive), in force from
    /// `effectiveFrom` (UTC microseconds; default now).
    ///
    /// A price never applies to events already recorded: they keep the cost they were billed at.
    /// So it may not start at or before a recorded consume whose model it matches; other events
    /// (of other models, or a clock that ran ahead) do not stand in its way.
    ///
    /// - Parameters:
    ///   - promptUSDPerMillion: USD per million prompt tokens, a plain decimal with at most 3 decimals.
    ///   - completionUSDPerMillion: the same for completion tokens.
    /// - Throws: `LedgerError.invalidInput` for a bad price or a start outside 1970…9999
    ///   (`Timestamps.maxMicroseconds`); `LedgerError.conflict` for a start that would re-price a
    ///   recorded consume, or when the model already has a price starting at that exact time.
    @discardableResult
    public func setPrice(
        model: String, promptUSDPerMillion: String, completionUSDPerMillion: String, effectiveFrom: Int64? = nil,
        source: String = "budget-ledger price set"
    ) throws -> ModelPrice {
        try Validate.identifier(model, field: "model")
        let prompt = try Money.nanodollarsPerToken(fromUSDPerMillion: promptUSDPerMillion, field: "prompt price")
        let completion = try Money.nanodollarsPerToken(fromUSDPerMillion: completionUSDPerMillion, field: "completion price")
        // Until this write has committed or rolled back, the consume path must not cache the
        // price table (see `PriceCache`).
        priceCache.withLock { $0.priceWritesInFlight += 1 }
        defer { priceCache.withLock { $0.priceWritesInFlight -= 1 } }
        return try write { [self] connection in
            let from = effectiveFrom ?? configuration.clock()
            guard (0...Timestamps.maxMicroseconds).contains(from) else {
                throw LedgerError.invalidInput(
                    field: "from",
                    reason: "must be 1970-01-01T00:00:00Z…\(Timestamps.iso8601(microseconds: Timestamps.maxMicroseconds)) "
                        + "(got \(from) microseconds)")
            }
            try checkNothingRepriced(from: from, model: model, on: connection)
            do {
                try connection.execute(LedgerSQL.insertPrice, [model, prompt, completion, from, source])
            } catch let error as SQLiteError where error.extendedCode == .constraintUnique {
                throw LedgerError.conflict("\(model) already has a price from \(Timestamps.iso8601(microseconds: from))")
            }
            return ModelPrice(
                modelPrefix: model.lowercasedASCII, promptNanodollarsPerToken: prompt, completionNanodollarsPerToken: completion,
                effectiveFromMicroseconds: from, source: source)
        }
    }

    /// Refuses a price for `model` from `from` when a consume it would price is recorded at or
    /// after `from` (its cost would no longer match the price table: see `verify`).
    private func checkNothingRepriced(from: Int64, model: String, on connection: Connection) throws {
        let latest = try connection.cachedStatement(LedgerSQL.selectLatestConsumeOfPrefix)
            .fetchOne([from, model.lowercasedASCII]) { row in (id: try row[0] as Int64, timestamp: try row[1] as Int64) }
        guard let latest else { return }
        // A well-formed start that the recorded history refuses: a conflict with the ledger's
        // state (exit 5 / HTTP 409), not bad input.
        throw LedgerError.conflict(
            "a price for \(model) from \(Timestamps.iso8601(microseconds: from)) would re-price consume event \(latest.id) "
                + "(\(Timestamps.iso8601(microseconds: latest.timestamp))); recorded events keep the price they were "
                + "billed at, so start it after that event")
    }

    /// Every price row, by model prefix and start time.
    public func prices() throws -> [ModelPrice] {
        try withConnection { connection in
            try connection.cachedStatement(LedgerSQL.selectPrices).fetchAll(ModelPrice.init(row:))
        }
    }

    /// The price that applies to `model` at `time` (default now), or nil when it has none.
    public func price(forModel model: String, at time: Int64? = nil) throws -> ModelPrice? {
        try withConnection { connection in
            try connection.cachedStatement(LedgerSQL.selectPriceForModel)
                .fetchOne([model, time ?? configuration.clock()], ModelPrice.init(row:))
        }
    }
}

extension String {
    /// Lowercases ASCII letters only, as SQLite's `lower()`.
    var lowercasedASCII: String {
        String(String.UnicodeScalarView(unicodeScalars.map { scalar in
            ("A"..."Z").contains(scalar) ? Unicode.Scalar(scalar.value + 32)! : scalar
        }))
    }
}
