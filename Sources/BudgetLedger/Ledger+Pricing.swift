import LedgerSQLite

extension ModelPrice {
    /// Decodes the columns of `LedgerSQL.selectPrices`.
    init(row: Row) throws {
        modelPrefix = try row[0]
        promptNanosPerToken = try row[1]
        completionNanosPerToken = try row[2]
        effectiveFromMicroseconds = try row[3]
        source = try row[4]
    }
}

extension Ledger {
    /// Adds a price for models starting with `model` (case-insensitive), in force from
    /// `effectiveFrom` (UTC microseconds; default now).
    ///
    /// A price never applies to events already recorded: they keep the cost they were billed at.
    ///
    /// - Parameters:
    ///   - promptUSDPerMillion: USD per million prompt tokens, a plain decimal with at most 3 decimals.
    ///   - completionUSDPerMillion: the same for completion tokens.
    /// - Throws: `LedgerError.invalidInput` for a bad price, or a start before the last recorded event;
    ///   `LedgerError.conflict` when the model already has a price starting at that exact time.
    @discardableResult
    public func setPrice(
        model: String, promptUSDPerMillion: String, completionUSDPerMillion: String, effectiveFrom: Int64? = nil,
        source: String = "budget-ledger price set"
    ) throws -> ModelPrice {
        try Validate.identifier(model, field: "model")
        let prompt = try Money.nanosPerToken(fromUSDPerMillion: promptUSDPerMillion, field: "prompt price")
        let completion = try Money.nanosPerToken(fromUSDPerMillion: completionUSDPerMillion, field: "completion price")
        return try write { [self] connection in
            let now = configuration.clock()
            let from = effectiveFrom ?? now
            let lastEvent = try connection.cachedStatement(LedgerSQL.selectLastEventTimestamp).fetchOne { try $0[0] as Int64 } ?? 0
            if from < lastEvent {
                throw LedgerError.invalidInput(
                    field: "from",
                    reason: "\(Timestamps.iso8601(microseconds: from)) is before the last recorded event "
                        + "(\(Timestamps.iso8601(microseconds: lastEvent))); recorded events keep the price they were billed at")
            }
            do {
                try connection.execute(LedgerSQL.insertPrice, [model, prompt, completion, from, source])
            } catch let error as SQLiteError where error.extendedCode == .constraintUnique {
                throw LedgerError.conflict("\(model) already has a price from \(Timestamps.iso8601(microseconds: from))")
            }
            return ModelPrice(
                modelPrefix: model.lowercasedASCII, promptNanosPerToken: prompt, completionNanosPerToken: completion,
                effectiveFromMicroseconds: from, source: source)
        }
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
