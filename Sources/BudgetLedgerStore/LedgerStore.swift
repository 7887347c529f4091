import BudgetLedger

/// One asynchronous interface over both stores: the ledger operations, with the domain's
/// results and errors (docs/design.md, "The storage seam"). Open one with `openLedgerStore(_:options:)`.
///
/// Two stores conform:
/// - `SQLiteLedgerStore`, the synchronous SQLite `Ledger` behind a thread pool of its own: each
///   requirement is one hop to the pool (a consume joins the group commit without holding a
///   thread), so group commit, the writer lock, checkpoints and the WAL's syncs stay inside the
///   SQLite store.
/// - `PostgresLedger`, called directly (postgres-nio is asynchronous); its own pool bounds the
///   connections.
///
/// The domain's rules (validation, pricing, thresholds, holds, idempotency) are written once, in
/// `BudgetLedger`, and both stores apply them; what differs is storage. The REST server
/// refines this protocol with what only it needs (its metrics, the streamed export).
public protocol LedgerStore: Sendable {
    /// The store's name in messages: "SQLite" or "PostgreSQL".
    var storeName: String { get }

    /// The default max of threads opened from now on (`Ledger.maxTokensPerThread`).
    var maxTokensPerThread: Int64 { get async throws }
    /// Records a new default max (open threads keep theirs) and returns the stored one.
    ///
    /// - Throws: `LedgerError.invalidInput` for a max below 1.
    func setDefaultMaxTokens(_ maxTokensPerThread: Int64) async throws -> Int64

    /// The budget of `threadID`; nil when the thread has no row (`Ledger.usage(_:)`).
    func usage(_ threadID: String) async throws -> ThreadBudget?
    /// Every open thread, hottest first, and the default max, read together.
    func threadList() async throws -> (budgets: [ThreadBudget], defaultMaxTokens: Int64)
    /// Totals of the usage window or of all time, by agent and model (`Ledger.usageOverview(_:)`).
    func usageOverview(_ scope: UsageScope) async throws -> UsageOverview
    /// One agent's totals in `scope` (`Ledger.usage(agent:scope:)`).
    func usage(agent agentID: String, scope: UsageScope) async throws -> UsageTotals
    /// One model's totals in `scope` (`Ledger.usage(model:scope:)`).
    func usage(model: String, scope: UsageScope) async throws -> UsageTotals
    /// Starts a new usage window (`Ledger.resetUsageWindow()`); thread budgets are untouched.
    func resetUsageWindow() async throws

    /// Whether `estimatedTokens` more fit the thread's budget; records nothing (`Ledger.checkBudget`).
    ///
    /// - Throws: `BudgetExhaustedError` when they do not fit.
    func checkBudget(_ threadID: String, estimatedTokens: Int64) async throws -> ThreadBudget
    /// A consume (with `checked`, a check-and-consume), as `Ledger.consume(_:…checked:)`: the
    /// recorded event, the budget after it, the thresholds it crossed, whether it was a replay.
    ///
    /// - Throws: `BudgetExhaustedError` for a checked consume that does not fit (a refusal);
    ///   `LedgerError` for bad input or a key reused with other figures.
    func consume(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails,
        checked: Bool
    ) async throws -> ConsumeResult
    /// Sets the max of one thread, opening it when needed (`Ledger.setLimit`).
    func setLimit(_ threadID: String, maxTokens: Int64) async throws -> ThreadBudget
    /// Starts the thread's window again at zero (`Ledger.resetThread`); nil for an unknown thread.
    func resetThread(_ threadID: String) async throws -> ThreadBudget?
    /// Closes the thread (`Ledger.cleanupThread`); nil for an unknown thread.
    func cleanupThread(_ threadID: String) async throws -> ThreadBudget?

    /// Holds `tokens` of the thread's budget for `ttlSeconds` (`Ledger.reserve`).
    func reserve(
        _ threadID: String, tokens: Int64, ttlSeconds: Int64, usage: UsageDetails, idempotencyKey: String?
    ) async throws -> ReserveResult
    /// Settles a hold with the call's real figures, as one consume (`Ledger.settle`).
    func settle(
        _ reservationID: Int64, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails
    ) async throws -> SettleResult
    /// Releases a hold without consuming (`Ledger.release`).
    func release(_ reservationID: Int64) async throws -> ThreadBudget
    /// Live holds, of one thread or of all, oldest first.
    func holds(_ threadID: String?) async throws -> [Reservation]

    /// The feed: events with id greater than `after`, in id order, at most `limit`.
    func events(after: Int64, limit: Int) async throws -> EventPage

    /// Where alert delivery to `url` resumes: the last event id it acknowledged, or the end of
    /// the feed, stored, for a URL seen for the first time (`Ledger.alertCursor(for:)`).
    /// On PostgreSQL every server of the database shares the cursor (docs/postgres.md).
    func alertCursor(for url: String) async throws -> Int64
    /// Moves `url`'s cursor to `eventID`, never back (`Ledger.advanceAlertCursor(for:to:)`).
    func advanceAlertCursor(for url: String, to eventID: Int64) async throws

    /// Consume totals in the range, grouped, in key order (`Ledger.rollup(_:by:)`).
    func rollup(_ query: ExportQuery, by grouping: ExportGrouping) async throws -> [(key: String?, totals: UsageTotals)]

    /// The price table and the store's clock reading (which rows are in force is decided at it).
    func priceTable() async throws -> (prices: [ModelPrice], now: Int64)
    /// The price of `model` in force now; nil when it has none (`Ledger.price(forModel:)`).
    func price(forModel model: String) async throws -> ModelPrice?
    /// Records a price of `model` from `effectiveFrom` (now when nil) (`Ledger.setPrice`).
    func setPrice(
        model: String, promptUSDPerMillion: String, completionUSDPerMillion: String, effectiveFrom: Int64?, source: String
    ) async throws -> ModelPrice
    /// Withdraws the price of `model` from `effectiveFrom`, before it takes effect (`Ledger.withdrawPrice`).
    func withdrawPrice(model: String, effectiveFrom: Int64, source: String) async throws -> ModelPrice
    /// Replaces the price of `model` from `effectiveFrom`, before it takes effect (`Ledger.replacePrice`).
    func replacePrice(
        model: String, effectiveFrom: Int64, promptUSDPerMillion: String, completionUSDPerMillion: String,
        newEffectiveFrom: Int64?, source: String
    ) async throws -> ModelPrice
    /// Bills the consumes of `model` recorded unpriced in [`from`, `to`) at the prices now in the
    /// table (`Ledger.reprice(model:from:to:)`).
    func reprice(model: String, from: Int64, to: Int64) async throws -> RepriceResult

    /// Sets or changes the budget of `scope` (`Ledger.setBudget`).
    func setBudget(_ scope: BudgetScope, period: BudgetPeriod, maxTokens: Int64?, maxNanodollars: Int64?) async throws
        -> ScopeBudget
    /// Removes the budget of `scope` (`Ledger.removeBudget`).
    func removeBudget(_ scope: BudgetScope) async throws
    /// Every scope budget with its current window, by scope (`Ledger.budgets`).
    func budgets() async throws -> [ScopeBudget]
    /// The budget of `scope` with its current window; nil when it has none (`Ledger.budget(scope:)`).
    func budget(scope: BudgetScope) async throws -> ScopeBudget?

    /// Closes the store: the calls already running finish, later ones fail; the SQLite file or
    /// the PostgreSQL connections are closed. Idempotent.
    func close() async
}

extension LedgerStore {
    /// `consume(_:…checked:)` answered as its REST body in bytes (`ConsumeResult.jsonBytes`) and
    /// whether it was a replay: the server's hot path, encoded once.
    public func consumeAnswer(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails,
        checked: Bool
    ) async throws -> (isReplay: Bool, json: [UInt8]) {
        let result = try await consume(
            threadID, promptTokens: promptTokens, completionTokens: completionTokens, idempotencyKey: idempotencyKey,
            usage: usage, checked: checked)
        return (isReplay: result.isReplay, json: result.jsonBytes)
    }
}
