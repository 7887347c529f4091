internal import LedgerSQLite

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
    /// A price never applies to events already billed: they keep the cost they were billed at.
    /// So it may not start at or before a billed consume (priced when recorded, or repriced)
    /// whose model it matches; other events (of other models, unpriced consumes, or a clock that
    /// ran ahead) do not stand in its way. An unpriced consume it covers is billed by `reprice`.
    ///
    /// - Parameters:
    ///   - promptUSDPerMillion: USD per million prompt tokens, a plain decimal with at most 3 decimals.
    ///   - completionUSDPerMillion: the same for completion tokens.
    /// - Throws: `LedgerError.invalidInput` for a bad price or a start outside 1970…9999
    ///   (`Timestamps.maxMicroseconds`), a `*` that is not the last character, or a pattern
    ///   without a literal; `LedgerError.conflict` for a start that would re-price a
    ///   billed consume, or when the model already has a price starting at that exact time.
    @discardableResult
    public func setPrice(
        model: String, promptUSDPerMillion: String, completionUSDPerMillion: String, effectiveFrom: Int64? = nil,
        source: String = "budget-ledger price set"
    ) throws -> ModelPrice {
        try Validate.identifier(model, field: "model")
        let pattern = try Self.pricePattern(model)
        let prompt = try Money.nanodollarsPerToken(fromUSDPerMillion: promptUSDPerMillion, field: "prompt price")
        let completion = try Money.nanodollarsPerToken(fromUSDPerMillion: completionUSDPerMillion, field: "completion price")
        return try writePrices { [self] connection in
            let from = try Self.checkedStart(effectiveFrom ?? configuration.clock())
            if try livePrice(pattern: pattern, from: from, on: connection) != nil {
                throw LedgerError.priceExists(pattern: pattern, from: from)
            }
            try checkNothingRepriced(from: from, pattern: pattern, on: connection)
            try connection.execute(LedgerSQL.insertPrice, [pattern, prompt, completion, from, source])
            return ModelPrice(
                modelPattern: pattern, promptNanodollarsPerToken: prompt, completionNanodollarsPerToken: completion,
                effectiveFromMicroseconds: from, source: source)
        }
    }

    /// Withdraws the price of `model` (an exact name or pattern, as `setPrice` takes it) that
    /// starts at `effectiveFrom`, before it takes effect: a row of `price_withdrawals` (migration
    /// 0012; `model_prices` stays as it was). Lookups then fall back to the price that held before.
    ///
    /// - Returns: the withdrawn price.
    /// - Throws: `LedgerError.invalidInput` when the model has no price starting then (or it was
    ///   withdrawn already); `LedgerError.conflict` naming its start when it is already in effect
    ///   (it can only be superseded from a later start, with `setPrice`), or when a billed consume
    ///   it matches is recorded at or after its start (a clock that ran ahead).
    @discardableResult
    public func withdrawPrice(model: String, effectiveFrom: Int64, source: String = "budget-ledger price withdraw")
        throws -> ModelPrice
    {
        try Validate.identifier(model, field: "model")
        let pattern = try Self.pricePattern(model)
        return try writePrices { [self] connection in
            try withdraw(pattern: pattern, from: try Self.checkedStart(effectiveFrom), source: source, on: connection)
        }
    }

    /// Replaces the price of `model` that starts at `effectiveFrom`, before it takes effect: the
    /// row is withdrawn (as `withdrawPrice`) and the new rates are added from `newEffectiveFrom`
    /// (default: the same start), in one transaction.
    ///
    /// - Returns: the new price.
    /// - Throws: what `withdrawPrice` and `setPrice` throw; on any error nothing is written.
    @discardableResult
    public func replacePrice(
        model: String, effectiveFrom: Int64, promptUSDPerMillion: String, completionUSDPerMillion: String,
        newEffectiveFrom: Int64? = nil, source: String = "budget-ledger price replace"
    ) throws -> ModelPrice {
        try Validate.identifier(model, field: "model")
        let pattern = try Self.pricePattern(model)
        let prompt = try Money.nanodollarsPerToken(fromUSDPerMillion: promptUSDPerMillion, field: "prompt price")
        let completion = try Money.nanodollarsPerToken(fromUSDPerMillion: completionUSDPerMillion, field: "completion price")
        return try writePrices { [self] connection in
            let from = try Self.checkedStart(effectiveFrom)
            let newFrom = try Self.checkedStart(newEffectiveFrom ?? from, field: "newFrom")
            try withdraw(pattern: pattern, from: from, source: source, on: connection)
            if try livePrice(pattern: pattern, from: newFrom, on: connection) != nil {
                throw LedgerError.priceExists(pattern: pattern, from: newFrom)
            }
            guard newFrom > configuration.clock() else { throw LedgerError.replacementNotInFuture(from: newFrom) }
            try checkNothingRepriced(from: newFrom, pattern: pattern, on: connection)
            try connection.execute(LedgerSQL.insertPrice, [pattern, prompt, completion, newFrom, source])
            return ModelPrice(
                modelPattern: pattern, promptNanodollarsPerToken: prompt, completionNanodollarsPerToken: completion,
                effectiveFromMicroseconds: newFrom, source: source)
        }
    }

    /// Runs a write of the price table; until it has committed or rolled back, the consume path
    /// must not cache the price table (see `PriceCache`).
    private func writePrices<Result: Sendable>(_ body: @escaping @Sendable (Connection) throws -> Result) throws -> Result {
        priceCache.withLock { $0.priceWritesInFlight += 1 }
        defer { priceCache.withLock { $0.priceWritesInFlight -= 1 } }
        return try write(body)
    }

    /// The withdrawal of the live row of `pattern` from `from` (see `withdrawPrice`).
    @discardableResult
    private func withdraw(pattern: String, from: Int64, source: String, on connection: Connection) throws -> ModelPrice {
        guard let (id, price) = try livePrice(pattern: pattern, from: from, on: connection) else {
            throw LedgerError.priceNotFound(model: pattern, from: from)
        }
        let now = configuration.clock()
        guard from > now else { throw LedgerError.priceInEffect(pattern: pattern, from: from) }
        try checkNothingRepriced(from: from, pattern: pattern, on: connection)
        try connection.execute(LedgerSQL.insertWithdrawal, [id, now, source])
        return price
    }

    /// The live (not withdrawn) row of `pattern` starting at `from`, with its id.
    private func livePrice(pattern: String, from: Int64, on connection: Connection) throws -> (Int64, ModelPrice)? {
        try connection.cachedStatement(LedgerSQL.selectLivePrice).fetchOne([pattern, from]) { row in
            (try row[0] as Int64, ModelPrice(
                modelPattern: try row[1], promptNanodollarsPerToken: try row[2], completionNanodollarsPerToken: try row[3],
                effectiveFromMicroseconds: try row[4], source: try row[5]))
        }
    }

    /// `time` when it is a start a price can have (1970…9999), else `invalidInput` naming `field`.
    package static func checkedStart(_ time: Int64, field: String = "from") throws -> Int64 {
        guard (0...Timestamps.maxMicroseconds).contains(time) else {
            throw LedgerError.invalidInput(
                field: field,
                reason: "must be 1970-01-01T00:00:00Z…\(Timestamps.iso8601(microseconds: Timestamps.maxMicroseconds)) "
                    + "(got \(time) microseconds)")
        }
        return time
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

    /// Refuses a price for `pattern` from `from` (or its withdrawal) when a billed consume it
    /// matches is recorded at or after `from` (its cost would no longer match the price table:
    /// see `verify`).
    private func checkNothingRepriced(from: Int64, pattern: String, on connection: Connection) throws {
        let literal: String?
        if case .pattern(let text) = PriceMatch(pattern: pattern) { literal = text } else { literal = nil }
        let latest = try connection.cachedStatement(LedgerSQL.selectLatestConsumeMatching)
            .fetchOne([from, pattern, literal]) { row in (id: try row[0] as Int64, timestamp: try row[1] as Int64) }
        guard let latest else { return }
        throw LedgerError.wouldReprice(pattern: pattern, from: from, eventID: latest.id, timestamp: latest.timestamp)
    }

    /// Every price row of the current rule, by pattern and start time (the prefix rows from
    /// before migration 0008 stay in `model_prices` for the events they priced).
    public func prices() throws -> [ModelPrice] {
        try withConnection { connection in
            try connection.cachedStatement(LedgerSQL.selectPrices).fetchAll(ModelPrice.init(row:))
        }
    }

    /// Every withdrawn price row of the current rule with its withdrawal, in withdrawal order:
    /// what a copy to another store carries beside the live rows (`prices()`).
    package func withdrawnPrices() throws -> [WithdrawnPrice] {
        try withReadSnapshot { connection in
            try connection.prepare(
                """
                SELECT p.model_pattern, p.prompt_nanos_per_token, p.completion_nanos_per_token, p.effective_from_us,
                       p.source, w.withdrawn_at_us, w.source
                FROM price_withdrawals AS w JOIN model_prices AS p ON p.id = w.price_id
                WHERE p.legacy_prefix = 0
                ORDER BY w.id
                """
            ).fetchAll { row in
                WithdrawnPrice(
                    price: try ModelPrice(row: row), withdrawnAtMicroseconds: try row[5], source: try row[6])
            }
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

/// The conflicts of the price writes, worded once for both stores (`Ledger` and `PostgresLedger`).
extension LedgerError {
    /// `pattern` already has a live price starting at `from`.
    package static func priceExists(pattern: String, from: Int64) -> LedgerError {
        .conflict("\(pattern) already has a price from \(Timestamps.iso8601(microseconds: from))")
    }

    /// The price of `pattern` from `from` is in force, so it cannot be withdrawn or replaced.
    package static func priceInEffect(pattern: String, from: Int64) -> LedgerError {
        .conflict(
            "the price of \(pattern) from \(Timestamps.iso8601(microseconds: from)) is already in effect; it can only "
                + "be superseded from now on (set a price with a later start)")
    }

    /// A replacement's start `from` is not in the future.
    package static func replacementNotInFuture(from: Int64) -> LedgerError {
        .conflict(
            "a replacement must start in the future (got \(Timestamps.iso8601(microseconds: from))); "
                + "a price from now on is set with setPrice")
    }

    /// A price (or withdrawal) for `pattern` from `from` would change the cost of consume
    /// `eventID`, recorded at `timestamp`. A well-formed start that the recorded history refuses:
    /// a conflict with the ledger's state (exit 5 / HTTP 409), not bad input.
    package static func wouldReprice(pattern: String, from: Int64, eventID: Int64, timestamp: Int64) -> LedgerError {
        .conflict(
            "a price for \(pattern) from \(Timestamps.iso8601(microseconds: from)) would re-price billed consume event \(eventID) "
                + "(\(Timestamps.iso8601(microseconds: timestamp))); recorded events keep the price they were "
                + "billed at, so start it after that event")
    }
}

extension String {
    /// Lowercases ASCII letters only, as SQLite's `lower()`.
    var lowercasedASCII: String {
        var copy = self
        return copy.withUTF8 { ModelName.lowercasedASCII($0) } ?? self
    }
}

/// A withdrawn row of the price table and its withdrawal (migration 0012's `price_withdrawals`).
package struct WithdrawnPrice: Sendable, Equatable {
    /// The row as it was set.
    package let price: ModelPrice
    /// When it was withdrawn, in UTC microseconds (before the price's start).
    package let withdrawnAtMicroseconds: Int64
    /// Where the withdrawal came from.
    package let source: String

    package init(price: ModelPrice, withdrawnAtMicroseconds: Int64, source: String) {
        self.price = price
        self.withdrawnAtMicroseconds = withdrawnAtMicroseconds
        self.source = source
    }
}
