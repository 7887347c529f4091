internal import LedgerSQLite

/// What one `reprice` call did.
public struct RepriceResult: Sendable, Equatable {
    /// Reprice events appended: consumes recorded unpriced that the price table now prices.
    public let repricedCount: Int64
    /// The sum of their corrected costs, in nano-dollars.
    public let costNanodollars: Int64
    /// Consumes of the range still unpriced and not repriced: the price table has no price for
    /// them at their timestamps (or this call stopped at its limit).
    public let unpricedCount: Int64
    /// False when the call stopped at `LedgerLimits.repricesPerCallMax`: call it again.
    public let isComplete: Bool

    public init(repricedCount: Int64, costNanodollars: Int64, unpricedCount: Int64, isComplete: Bool) {
        self.repricedCount = repricedCount
        self.costNanodollars = costNanodollars
        self.unpricedCount = unpricedCount
        self.isComplete = isComplete
    }
}

extension RepriceResult {
    /// What a reprice of an empty range does.
    package static let nothing = RepriceResult(repricedCount: 0, costNanodollars: 0, unpricedCount: 0, isComplete: true)
}

/// A checked `reprice` request, the same on both stores: the model's normalised name or
/// pattern, the literal of a pattern, and the range [`start`, `end`) in UTC microseconds.
package struct RepriceRequest: Sendable, Equatable {
    package let pattern: String
    /// The literal before a pattern's `*`; nil for an exact name.
    package let literal: String?
    package let start: Int64
    package let end: Int64

    /// An empty range (`from == to`) reprices nothing.
    package var isEmpty: Bool { start == end }

    /// - Throws: `LedgerError.invalidInput` naming `model`, `from` or `to`: a bad model, a time
    ///   outside 1970…9999, or a range that ends before it starts.
    package init(model: String, from: Int64, to: Int64) throws {
        try Validate.identifier(model, field: "model")
        pattern = try Ledger.pricePattern(model)
        start = try Ledger.checkedStart(from)
        end = try Ledger.checkedStart(to, field: "to")
        guard start <= end else {
            throw LedgerError.invalidInput(field: "to", reason: "must not be before from (got \(from) … \(to) microseconds)")
        }
        if case .pattern(let text) = PriceMatch(pattern: pattern) { literal = text } else { literal = nil }
    }
}

/// The statements of `reprice` (migration 0012).
enum RepriceSQL {
    /// Appends a reprice at `?1` (now) for each consume of model `?4` (or, when `?5` is a
    /// pattern's literal, of every model starting with it) timestamped in [`?2`, `?3`), recorded
    /// unpriced and not yet repriced, that the price table (`event_prices`) prices: at the price
    /// in force at the consume's own timestamp, in id order, at most `?6`. A product past the
    /// per-call cost limit (a float in SQLite) is left unpriced. The price is looked up per
    /// consume (CROSS JOIN keeps it the inner loop: otherwise SQLite may read the view's events
    /// through an automatic index over all of them).
    static let insertReprices = """
        INSERT INTO events (timestamp_us, kind, thread_id, caused_by, cost_nanos)
        SELECT ?1, 'reprice', c.thread_id, c.id, p.cost_nanos
        FROM \(TimeRangeSQL.events(as: "c")) CROSS JOIN event_prices AS p ON p.event_id = c.id
        WHERE \(TimeRangeSQL.timestamps(of: "c", from: "?2", to: "?3"))
          AND c.kind = 'consume' AND c.cost_nanos IS NULL
          AND (\(ModelName.sql("c.model")) = ?4
               OR (?5 IS NOT NULL AND substr(\(ModelName.sql("c.model")), 1, length(?5)) = ?5))
          AND NOT EXISTS (SELECT 1 FROM events AS r WHERE r.caused_by = c.id AND r.kind = 'reprice')
          AND typeof(p.cost_nanos) = 'integer' AND p.cost_nanos <= \(LedgerLimits.costNanodollarsPerCallMax)
        ORDER BY c.id LIMIT ?6
        """

    /// The count of such consumes not repriced yet (the price table does not price them, or the
    /// call stopped at its limit). It takes `insertReprices`'s first five arguments; `?1` is unused.
    static let countUnrepriced = """
        SELECT count(*) FROM \(TimeRangeSQL.events(as: "c"))
        WHERE \(TimeRangeSQL.timestamps(of: "c", from: "?2", to: "?3"))
          AND c.kind = 'consume' AND c.cost_nanos IS NULL
          AND (\(ModelName.sql("c.model")) = ?4
               OR (?5 IS NOT NULL AND substr(\(ModelName.sql("c.model")), 1, length(?5)) = ?5))
          AND NOT EXISTS (SELECT 1 FROM events AS r WHERE r.caused_by = c.id AND r.kind = 'reprice')
        """

    /// The count and sum of the reprices recorded after event `?1`.
    static let sumRepricesAfter = "SELECT count(*), coalesce(sum(cost_nanos), 0) FROM events WHERE id > ?1 AND kind = 'reprice'"
}

extension Ledger {
    /// Bills the usage of `model` recorded while it was unpriced, in [`from`, `to`) (UTC
    /// microseconds, by the consumes' own timestamps): appends one `reprice` event per consume
    /// recorded with no cost that the price table now prices, at the price in force at the
    /// consume's timestamp (set it with `setPrice`, which may start before unpriced consumes).
    ///
    /// History stays as recorded; every billing view (summaries, rollups, exports, the all-time
    /// cost) then shows the corrected cost, and `verify` checks each reprice against the price
    /// table. Consumes billed when recorded are never repriced, and a consume is repriced at
    /// most once (the schema refuses a second reprice), so a second call is a no-op.
    ///
    /// - Parameters:
    ///   - model: an exact model name, or a pattern with one trailing `*` (every model starting
    ///     with its literal), normalised as everywhere (`ModelName.normalized`).
    /// - Returns: what was appended, and how many unpriced consumes of the range remain.
    /// - Throws: `LedgerError.invalidInput` for a bad model, or a range that ends before it starts
    ///   or lies outside 1970…9999 (an empty range, `from == to`, reprices nothing);
    ///   `LedgerError.conflict` when the all-time cost would pass its capacity.
    @discardableResult
    public func reprice(model: String, from: Int64, to: Int64) throws -> RepriceResult {
        try reprice(model: model, from: from, to: to, limit: LedgerLimits.repricesPerCallMax)
    }

    /// `reprice(model:from:to:)` appending at most `limit` events (tests reach the limit with a few).
    func reprice(model: String, from: Int64, to: Int64, limit: Int64) throws -> RepriceResult {
        let request = try RepriceRequest(model: model, from: from, to: to)
        if request.isEmpty { return .nothing }
        return try write { [self] connection in
            let now = configuration.clock()
            let arguments: [any SQLiteBindable] = [now, request.start, request.end, request.pattern, request.literal, limit]
            let lastID = try connection.cachedStatement("SELECT coalesce(max(id), 0) FROM events").fetchOne { try $0[0] as Int64 } ?? 0
            do {
                try connection.execute(RepriceSQL.insertReprices, arguments)
            } catch let error as SQLiteError where error.isCapacityReached {
                throw LedgerError.conflict(error.message)
            }
            let (count, cost) = try connection.cachedStatement(RepriceSQL.sumRepricesAfter)
                .fetchOne([lastID]) { (try $0[0] as Int64, try $0[1] as Int64) } ?? (0, 0)
            let unpriced = try connection.cachedStatement(RepriceSQL.countUnrepriced)
                .fetchOne(Array(arguments.prefix(5))) { try $0[0] as Int64 } ?? 0
            // A cost is never negative, and each reprice adds one: the pair read back agrees.
            assert(cost >= 0 && count <= limit)
            return RepriceResult(
                repricedCount: count, costNanodollars: cost, unpricedCount: unpriced, isComplete: count < limit)
        }
    }
}
