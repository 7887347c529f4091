import BudgetLedger
import BudgetLedgerWire

/// SQLite's conformance: each call is one hop to the store's thread pool (`run(_:)`), except the
/// consume, which suspends while its write waits for the group commit (`suspending(_:)`).
/// Its `close()` is the store's own.
extension SQLiteLedgerStore: LedgerStore {
    /// "SQLite".
    public var storeName: String { "SQLite" }

    public var maxTokensPerThread: Int64 {
        get async throws { try await run { try $0.maxTokensPerThread } }
    }

    public func setDefaultMaxTokens(_ maxTokensPerThread: Int64) async throws -> Int64 {
        try await run { ledger in
            try ledger.configure(maxTokensPerThread: maxTokensPerThread)
            return try ledger.maxTokensPerThread
        }
    }

    public func usage(_ threadID: String) async throws -> ThreadBudget? {
        try await run { try $0.usage(threadID) }
    }

    public func threadList() async throws -> (budgets: [ThreadBudget], defaultMaxTokens: Int64) {
        try await run { ledger in (budgets: try ledger.allUsage(), defaultMaxTokens: try ledger.maxTokensPerThread) }
    }

    public func usageOverview(_ scope: UsageScope) async throws -> UsageOverview {
        try await run { try $0.usageOverview(scope) }
    }

    public func usage(agent agentID: String, scope: UsageScope) async throws -> UsageTotals {
        try await run { try $0.usage(agent: agentID, scope: scope) }
    }

    public func usage(model: String, scope: UsageScope) async throws -> UsageTotals {
        try await run { try $0.usage(model: model, scope: scope) }
    }

    public func resetUsageWindow() async throws {
        try await run { try $0.resetUsageWindow() }
    }

    public func checkBudget(_ threadID: String, estimatedTokens: Int64) async throws -> ThreadBudget {
        try await run { try $0.checkBudget(threadID, estimatedTokens: estimatedTokens) }
    }

    public func consume(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails,
        checked: Bool
    ) async throws -> ConsumeResult {
        // The hot path suspends while its write waits for the group commit (`Ledger.write(suspending:)`)
        // instead of holding a pool thread: 35 % less server CPU per request (docs/performance.md).
        try await suspending { ledger in
            try await ledger.consume(
                suspending: threadID, promptTokens: promptTokens, completionTokens: completionTokens,
                idempotencyKey: idempotencyKey, usage: usage, checked: checked)
        }
    }

    public func setLimit(_ threadID: String, maxTokens: Int64) async throws -> ThreadBudget {
        try await run { try $0.setLimit(threadID, maxTokens: maxTokens) }
    }

    public func resetThread(_ threadID: String) async throws -> ThreadBudget? {
        try await run { try $0.resetThread(threadID) }
    }

    public func cleanupThread(_ threadID: String) async throws -> ThreadBudget? {
        try await run { try $0.cleanupThread(threadID) }
    }

    public func reserve(
        _ threadID: String, tokens: Int64, ttlSeconds: Int64, usage: UsageDetails, idempotencyKey: String?
    ) async throws -> ReserveResult {
        try await run {
            try $0.reserve(threadID, tokens: tokens, ttlSeconds: ttlSeconds, usage: usage, idempotencyKey: idempotencyKey)
        }
    }

    public func settle(
        _ reservationID: Int64, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails
    ) async throws -> SettleResult {
        try await run { ledger in
            try ledger.settle(
                reservationID, promptTokens: promptTokens, completionTokens: completionTokens,
                idempotencyKey: idempotencyKey, usage: usage)
        }
    }

    public func release(_ reservationID: Int64) async throws -> ThreadBudget {
        try await run { try $0.release(reservationID) }
    }

    public func events(after: Int64, limit: Int) async throws -> EventPage {
        try await run { try $0.events(after: after, limit: limit) }
    }

    public func holds(_ threadID: String?) async throws -> [Reservation] {
        try await run { try $0.holds(threadID) }
    }

    public func alertCursor(for url: String) async throws -> Int64 {
        try await run { try $0.alertCursor(for: url) }
    }

    public func advanceAlertCursor(for url: String, to eventID: Int64) async throws {
        try await run { try $0.advanceAlertCursor(for: url, to: eventID) }
    }

    public func rollup(_ query: ExportQuery, by grouping: ExportGrouping) async throws -> [(key: String?, totals: UsageTotals)] {
        try await run { try $0.rollup(query, by: grouping) }
    }

    public func priceTable() async throws -> (prices: [ModelPrice], now: Int64) {
        try await run { ledger in (prices: try ledger.prices(), now: ledger.configuration.clock()) }
    }

    public func price(forModel model: String) async throws -> ModelPrice? {
        try await run { try $0.price(forModel: model) }
    }

    public func setPrice(
        model: String, promptUSDPerMillion: String, completionUSDPerMillion: String, effectiveFrom: Int64?, source: String
    ) async throws -> ModelPrice {
        try await run { ledger in
            try ledger.setPrice(
                model: model, promptUSDPerMillion: promptUSDPerMillion, completionUSDPerMillion: completionUSDPerMillion,
                effectiveFrom: effectiveFrom, source: source)
        }
    }

    public func withdrawPrice(model: String, effectiveFrom: Int64, source: String) async throws -> ModelPrice {
        try await run { try $0.withdrawPrice(model: model, effectiveFrom: effectiveFrom, source: source) }
    }

    public func replacePrice(
        model: String, effectiveFrom: Int64, promptUSDPerMillion: String, completionUSDPerMillion: String,
        newEffectiveFrom: Int64?, source: String
    ) async throws -> ModelPrice {
        try await run { ledger in
            try ledger.replacePrice(
                model: model, effectiveFrom: effectiveFrom, promptUSDPerMillion: promptUSDPerMillion,
                completionUSDPerMillion: completionUSDPerMillion, newEffectiveFrom: newEffectiveFrom, source: source)
        }
    }

    public func setBudget(_ scope: BudgetScope, period: BudgetPeriod, maxTokens: Int64?, maxNanodollars: Int64?) async throws
        -> ScopeBudget
    {
        try await run { try $0.setBudget(scope, period: period, maxTokens: maxTokens, maxNanodollars: maxNanodollars) }
    }

    public func removeBudget(_ scope: BudgetScope) async throws {
        try await run { try $0.removeBudget(scope) }
    }

    public func budgets() async throws -> [ScopeBudget] {
        try await run { try $0.budgets() }
    }

    public func budget(scope: BudgetScope) async throws -> ScopeBudget? {
        try await run { try $0.budget(scope: scope) }
    }

    public func reprice(model: String, from: Int64, to: Int64) async throws -> RepriceResult {
        try await run { try $0.reprice(model: model, from: from, to: to) }
    }
}
