import BudgetLedger
import BudgetLedgerWire

/// The storage seam of the REST server: the ledger operations its routes call, asynchronous,
/// with the domain's results and errors (docs/design.md, "The storage seam").
///
/// Two stores conform:
/// - `LedgerService`, the SQLite `Ledger` behind the server's thread pool: each requirement is
///   one hop to the pool, exactly the call the route made before the seam, so group commit, the
///   writer lock, checkpoints and the WAL's syncs stay where they were: inside the SQLite store.
/// - `PostgresLedger`, called directly (postgres-nio is asynchronous); its own pool bounds
///   the connections.
///
/// The domain's rules (validation, pricing, thresholds, holds, idempotency) are written once, in
/// `BudgetLedger`, and both stores apply them; what differs is storage. The alert webhooks
/// (`AlertWebhookService`) run on the seam too: the feed and the cursors. Every route of the
/// server is served by both stores.
protocol LedgerStore: Sendable {
    /// The store's name in messages: "SQLite" or "PostgreSQL".
    var storeName: String { get }

    /// The default max of threads opened from now on.
    var maxTokensPerThread: Int64 { get async throws }
    /// Records a new default max (open threads keep theirs) and returns the stored one.
    func setDefaultMaxTokens(_ maxTokensPerThread: Int64) async throws -> Int64

    func usage(_ threadID: String) async throws -> ThreadBudget?
    /// Every open thread, hottest first, and the default max, read together.
    func threadList() async throws -> (budgets: [ThreadBudget], defaultMaxTokens: Int64)
    func usageOverview(_ scope: UsageScope) async throws -> UsageOverview
    func usage(agent agentID: String, scope: UsageScope) async throws -> UsageTotals
    func usage(model: String, scope: UsageScope) async throws -> UsageTotals
    func resetUsageWindow() async throws

    func checkBudget(_ threadID: String, estimatedTokens: Int64) async throws -> ThreadBudget
    /// A consume (with `checked`, a check-and-consume): its REST body as bytes (`ConsumeResult.jsonBytes`)
    /// and whether it was a replay: the hot path, encoded by the store.
    func consumeAnswer(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails,
        checked: Bool
    ) async throws -> (isReplay: Bool, json: [UInt8])
    func setLimit(_ threadID: String, maxTokens: Int64) async throws -> ThreadBudget
    func resetThread(_ threadID: String) async throws -> ThreadBudget?
    func cleanupThread(_ threadID: String) async throws -> ThreadBudget?

    func reserve(
        _ threadID: String, tokens: Int64, ttlSeconds: Int64, usage: UsageDetails, idempotencyKey: String?
    ) async throws -> ReserveResult
    func settle(
        _ reservationID: Int64, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails
    ) async throws -> SettleResult
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
    /// Starts the event export of `query` in `format` into `pipe`, which it finishes with the
    /// outcome: a bad query or an unreadable store fails the pipe before its first chunk.
    func startEventExport(_ query: ExportQuery, format: ExportFormat, into pipe: ChunkPipe)

    /// The price table and the store's clock reading (which rows are in force is decided at it).
    func priceTable() async throws -> (prices: [ModelPrice], now: Int64)
    func price(forModel model: String) async throws -> ModelPrice?
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

    /// The `/metrics` exposition: the server's own `metrics` and the ledger's business figures.
    func metricsExposition(_ metrics: ServerMetrics) async throws -> String
}

extension LedgerService: LedgerStore {
    var storeName: String { "SQLite" }

    var maxTokensPerThread: Int64 {
        get async throws { try await run { try $0.maxTokensPerThread } }
    }

    func setDefaultMaxTokens(_ maxTokensPerThread: Int64) async throws -> Int64 {
        try await run { ledger in
            try ledger.configure(maxTokensPerThread: maxTokensPerThread)
            return try ledger.maxTokensPerThread
        }
    }

    func usage(_ threadID: String) async throws -> ThreadBudget? {
        try await run { try $0.usage(threadID) }
    }

    func threadList() async throws -> (budgets: [ThreadBudget], defaultMaxTokens: Int64) {
        try await run { ledger in (budgets: try ledger.allUsage(), defaultMaxTokens: try ledger.maxTokensPerThread) }
    }

    func usageOverview(_ scope: UsageScope) async throws -> UsageOverview {
        try await run { try $0.usageOverview(scope) }
    }

    func usage(agent agentID: String, scope: UsageScope) async throws -> UsageTotals {
        try await run { try $0.usage(agent: agentID, scope: scope) }
    }

    func usage(model: String, scope: UsageScope) async throws -> UsageTotals {
        try await run { try $0.usage(model: model, scope: scope) }
    }

    func resetUsageWindow() async throws {
        try await run { try $0.resetUsageWindow() }
    }

    func checkBudget(_ threadID: String, estimatedTokens: Int64) async throws -> ThreadBudget {
        try await run { try $0.checkBudget(threadID, estimatedTokens: estimatedTokens) }
    }

    func consumeAnswer(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails,
        checked: Bool
    ) async throws -> (isReplay: Bool, json: [UInt8]) {
        // The hot path suspends while its write waits for the group commit (`Ledger.write(suspending:)`)
        // instead of holding a pool thread: 35 % less server CPU per request (docs/performance.md).
        let result = try await suspending { ledger in
            try await ledger.consume(
                suspending: threadID, promptTokens: promptTokens, completionTokens: completionTokens,
                idempotencyKey: idempotencyKey, usage: usage, checked: checked)
        }
        return (isReplay: result.isReplay, json: result.jsonBytes)
    }

    func setLimit(_ threadID: String, maxTokens: Int64) async throws -> ThreadBudget {
        try await run { try $0.setLimit(threadID, maxTokens: maxTokens) }
    }

    func resetThread(_ threadID: String) async throws -> ThreadBudget? {
        try await run { try $0.resetThread(threadID) }
    }

    func cleanupThread(_ threadID: String) async throws -> ThreadBudget? {
        try await run { try $0.cleanupThread(threadID) }
    }

    func reserve(
        _ threadID: String, tokens: Int64, ttlSeconds: Int64, usage: UsageDetails, idempotencyKey: String?
    ) async throws -> ReserveResult {
        try await run {
            try $0.reserve(threadID, tokens: tokens, ttlSeconds: ttlSeconds, usage: usage, idempotencyKey: idempotencyKey)
        }
    }

    func settle(
        _ reservationID: Int64, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails
    ) async throws -> SettleResult {
        try await run { ledger in
            try ledger.settle(
                reservationID, promptTokens: promptTokens, completionTokens: completionTokens,
                idempotencyKey: idempotencyKey, usage: usage)
        }
    }

    func release(_ reservationID: Int64) async throws -> ThreadBudget {
        try await run { try $0.release(reservationID) }
    }

    func events(after: Int64, limit: Int) async throws -> EventPage {
        try await run { try $0.events(after: after, limit: limit) }
    }

    func holds(_ threadID: String?) async throws -> [Reservation] {
        try await run { try $0.holds(threadID) }
    }

    func alertCursor(for url: String) async throws -> Int64 {
        try await run { try $0.alertCursor(for: url) }
    }

    func advanceAlertCursor(for url: String, to eventID: Int64) async throws {
        try await run { try $0.advanceAlertCursor(for: url, to: eventID) }
    }

    func rollup(_ query: ExportQuery, by grouping: ExportGrouping) async throws -> [(key: String?, totals: UsageTotals)] {
        try await run { try $0.rollup(query, by: grouping) }
    }

    /// Streams from a ledger thread, which blocks while the pipe is full.
    func startEventExport(_ query: ExportQuery, format: ExportFormat, into pipe: ChunkPipe) {
        Task {
            do {
                try await run { ledger in
                    var output = ChunkWriter(pipe: pipe)
                    try ledger.exportEvents(query, format: format, to: { try output.write($0) })
                    try output.flush()
                }
                pipe.finish(.success(()))
            } catch {
                pipe.finish(.failure(error))
            }
        }
    }

    func priceTable() async throws -> (prices: [ModelPrice], now: Int64) {
        try await run { ledger in (prices: try ledger.prices(), now: ledger.configuration.clock()) }
    }

    func price(forModel model: String) async throws -> ModelPrice? {
        try await run { try $0.price(forModel: model) }
    }

    func setPrice(
        model: String, promptUSDPerMillion: String, completionUSDPerMillion: String, effectiveFrom: Int64?, source: String
    ) async throws -> ModelPrice {
        try await run { ledger in
            try ledger.setPrice(
                model: model, promptUSDPerMillion: promptUSDPerMillion, completionUSDPerMillion: completionUSDPerMillion,
                effectiveFrom: effectiveFrom, source: source)
        }
    }

    func withdrawPrice(model: String, effectiveFrom: Int64, source: String) async throws -> ModelPrice {
        try await run { try $0.withdrawPrice(model: model, effectiveFrom: effectiveFrom, source: source) }
    }

    func replacePrice(
        model: String, effectiveFrom: Int64, promptUSDPerMillion: String, completionUSDPerMillion: String,
        newEffectiveFrom: Int64?, source: String
    ) async throws -> ModelPrice {
        try await run { ledger in
            try ledger.replacePrice(
                model: model, effectiveFrom: effectiveFrom, promptUSDPerMillion: promptUSDPerMillion,
                completionUSDPerMillion: completionUSDPerMillion, newEffectiveFrom: newEffectiveFrom, source: source)
        }
    }

    func setBudget(_ scope: BudgetScope, period: BudgetPeriod, maxTokens: Int64?, maxNanodollars: Int64?) async throws
        -> ScopeBudget
    {
        try await run { try $0.setBudget(scope, period: period, maxTokens: maxTokens, maxNanodollars: maxNanodollars) }
    }

    func removeBudget(_ scope: BudgetScope) async throws {
        try await run { try $0.removeBudget(scope) }
    }

    func budgets() async throws -> [ScopeBudget] {
        try await run { try $0.budgets() }
    }

    func budget(scope: BudgetScope) async throws -> ScopeBudget? {
        try await run { try $0.budget(scope: scope) }
    }

    func reprice(model: String, from: Int64, to: Int64) async throws -> RepriceResult {
        try await run { try $0.reprice(model: model, from: from, to: to) }
    }

    func metricsExposition(_ metrics: ServerMetrics) async throws -> String {
        // Reading the file's size is a file-system call: it runs on the ledger's threads too,
        // with the ledger's own figures (every process's usage, not only this server's).
        try await run { ledger in
            let business = LedgerMetrics.exposition(overview: try ledger.usageOverview(.allTime), gauges: try ledger.gauges())
            return metrics.exposition(ledgerPath: ledger.path) + business
        }
    }

}
