import LedgerSQLite

extension ModelPrice {
    /// Decodes the columns of `LedgerSQL.selectPrices`.
    init(row: Row) throws {
        modelPattern = try row[0]
        promptNanodollarsPerToken = try row[1]
        completionNanodollarsPerToken = try row[2]
        effectiveFromMicroseconds = try row[3]
        source = try row[4]
    }
}

extension Ledger {
    /// Adds a price for `model`, in force from `effectiveFrom` (UTC microseconds; default now).
    ///
    /// `model` is an exact model name, or a pattern: a literal and one trailing `*`
    /// (`gpt-4o-20*`); it is stored normalised (`ModelName.normalized`). A consume is billed by
    /// the exact name's row when there is one, else by the pattern with the longest literal.
    ///
    /// A price never applies to events already recorded: they keep the cost they were billed at.
    /// So it may not start at or before a recorded consume whose model it matches; other events
    /// (of other models, or a clock that ran ahead) do not stand in its way.
    ///
    /// - Parameters:
    ///   - promptUSDPerMillion: USD per million prompt tokens, a plain decimal with at most 3 decimals.
    ///   - completionUSDPerMillion: the same for completion tokens.
    /// - Throws: `LedgerError.invalidInput` for a bad price or a start outside 1970…9999
    ///   (`Timestamps.maxMicroseconds`), a `*` that is not the last character, or a pattern
    ///   without a literal; `LedgerError.conflict` for a start that would re-price a
    ///   recorded consume, or when the model already has a price starting at that exact time.
    @discardableResult
    public func setPrice(
        model: String, promptUSDPerMillion: String, completionUSDPerMillion: String, effectiveFrom: Int64? = nil,
        source: String = "budget-ledger price set"
    ) throws -> ModelPrice {
        try Validate.identifier(model, field: "model")
        let pattern = try Self.pricePattern(model)
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
            try checkNothingRepriced(from: from, pattern: pattern, on: connection)
            do {
                try connection.execute(LedgerSQL.insertPrice, [pattern, prompt, completion, from, source])
            } catch let error as SQLiteError where error.extendedCode == .constraintUnique {
                throw LedgerError.conflict("\(pattern) already has a price from \(Timestamps.iso8601(microseconds: from))")
            }
            return ModelPrice(
                modelPattern: pattern, promptNanodollarsPerToken: prompt, completionNanodollarsPerToken: completion,
                effectiveFromMicroseconds: from, source: source)
        }
    }

    /// The normalised pattern of a price for `model`, or `invalidInput` when it is not an exact
    /// name or a literal with one trailing `*`.
    package static func pricePattern(_ model: String) throws -> String {
        let pattern = ModelName.normalized(model)
        let body = pattern.unicodeScalars.dropLast()
        guard !pattern.isEmpty, !body.contains("*") else {
            throw LedgerError.invalidInput(
                field: "model", reason: "must be a model name or a pattern with one trailing * (e.g. gpt-4o-20*)")
        }
        guard pattern != "*" else {
            throw LedgerError.invalidInput(field: "model", reason: "a pattern needs a literal before its * (e.g. gpt-4o-20*)")
        }
        return pattern
    }

    /// Refuses a price for `pattern` from `from` when a consume it matches is recorded at or
    /// after `from` (its cost would no longer match the price table: see `verify`).
    private func checkNothingRepriced(from: Int64, pattern: String, on connection: Connection) throws {
        let literal: String?
        if case .pattern(let text) = PriceMatch(pattern: pattern) { literal = text } else { literal = nil }
        let latest = try connection.cachedStatement(LedgerSQL.selectLatestConsumeMatching)
            .fetchOne([from, pattern, literal]) { row in (id: try row[0] as Int64, timestamp: try row[1] as Int64) }
        guard let latest else { return }
        // A well-formed start that the recorded history refuses: a conflict with the ledger's
        // state (exit 5 / HTTP 409), not bad input.
        throw LedgerError.conflict(
            "a price for \(pattern) from \(Timestamps.iso8601(microseconds: from)) would re-price consume event \(latest.id) "
                + "(\(Timestamps.iso8601(microseconds: latest.timestamp))); recorded events keep the price they were "
                + "billed at, so start it after that event")
    }

    /// Every price row of the current rule, by pattern and start time (the prefix rows from
    /// before migration 0008 stay in `model_prices` for the events they priced).
    public func prices() throws -> [ModelPrice] {
        try withConnection { connection in
            try connection.cachedStatement(LedgerSQL.selectPrices).fetchAll(ModelPrice.init(row:))
        }
    }

    /// The price that applies to `model` (normalised) at `time` (default now), or nil when it
    /// has none; its `match` says why (the exact name, or which pattern).
    public func price(forModel model: String, at time: Int64? = nil) throws -> ModelPrice? {
        try withConnection { connection in
            try connection.cachedStatement(LedgerSQL.selectPriceForModel)
                .fetchOne([ModelName.normalized(model), time ?? configuration.clock()], ModelPrice.init(row:))
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
