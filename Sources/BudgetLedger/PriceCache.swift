internal import LedgerSQLite

/// The price table in memory, for the consume path.
///
/// Looking a price up in SQL scanned `model_prices` with `substr(lower(…))` and sorted the
/// matches on every consume: a quarter of the instructions of a check-and-consume (callgrind).
/// `model_prices` and `price_withdrawals` are append-only (their triggers refuse UPDATE and
/// DELETE) and their rowids only grow, so the sum of their `max(id)` grows with every change and
/// names the table's content exactly (the version); the consume path reads that number in the
/// statement that reads the thread (no extra round-trip) and reloads the table only when it
/// moved, which is also how a price set by another process is seen.
///
/// A price this ledger inserts is visible to the consume path before it commits, and its
/// transaction may still roll back (a group-commit batch fails as a whole); the next price then
/// gets the same id, so the version would name two different tables. So while a price write of this
/// ledger is running (`priceWritesInFlight`), the consume path reads the table and keeps
/// nothing: whatever the cache holds was read while no uncommitted price could be seen.
/// (Another process's uncommitted price is never visible here.)
struct PriceCache: Sendable {
    /// Memoized candidates for at most this many distinct model names; then the memo starts over.
    static let modelsMax = 4_096

    /// Price writes (`setPrice`, `withdrawPrice`, `replacePrice`) of this ledger that have not yet returned.
    var priceWritesInFlight = 0
    /// The version of the table the cache holds; -1: nothing loaded yet.
    private var version: Int64 = -1
    private var prices: [ModelPrice] = []
    /// Per model name as given: the prices that match it, most specific first, then the latest
    /// start first (the order `LedgerSQL.selectPriceForModel` sorts by).
    private var candidatesByModel: [String: [ModelPrice]] = [:]

    /// The price in force for `model` at `now`, reloading the table first when `currentVersion`
    /// differs from the loaded one. The same answer as `LedgerSQL.selectPriceForModel`.
    mutating func price(
        forModel model: String, at now: Int64, currentVersion: Int64, on connection: Connection
    ) throws -> ModelPrice? {
        if priceWritesInFlight > 0 {
            version = -1
            prices = []
            candidatesByModel = [:]
            // The one row, from SQL: nothing of a table that may still roll back is kept.
            return try connection.cachedStatement(LedgerSQL.selectPriceForModel)
                .fetchOne([ModelName.normalized(model), now], ModelPrice.init(row:))
        }
        if currentVersion != version {
            prices = try connection.cachedStatement(LedgerSQL.selectPrices).fetchAll(ModelPrice.init(row:))
            candidatesByModel = [:]
            version = currentVersion
        }
        let candidates: [ModelPrice]
        if let memoized = candidatesByModel[model] {
            candidates = memoized
        } else {
            candidates = Self.candidates(for: model, in: prices)
            if candidatesByModel.count >= Self.modelsMax { candidatesByModel = [:] }
            candidatesByModel[model] = candidates
        }
        return candidates.first { $0.effectiveFromMicroseconds <= now }
    }

    /// The prices that match `model` once normalised (`ModelName.normalized`), most specific
    /// first (the exact name, then the longest literal), then the latest start first.
    static func candidates(for model: String, in prices: [ModelPrice]) -> [ModelPrice] {
        let name = ModelName.normalized(model)
        return prices.compactMap { price in
            PriceMatch.specificity(of: price.modelPattern, for: name).map { (specificity: $0, price: price) }
        }.sorted { left, right in
            if left.specificity != right.specificity { return left.specificity > right.specificity }
            return left.price.effectiveFromMicroseconds > right.price.effectiveFromMicroseconds
        }.map(\.price)
    }
}
