import BudgetLedger
import BudgetLedgerPostgres
import BudgetLedgerWire
import Dispatch
import Synchronization

/// What the commands that run on both stores call: SQLite's `Ledger`, or PostgreSQL's
/// `PostgresLedger` behind `BlockingPostgresLedger`. The same results and errors either way.
protocol CommandLedger {
    /// The file's path, or the database's URL without its password.
    var location: String { get }
    var maxTokensPerThread: Int64 { get throws }
    func configure(maxTokensPerThread: Int64) throws
    func usage(_ threadID: String) throws -> ThreadBudget?
    func checkBudget(_ threadID: String, estimatedTokens: Int64) throws -> ThreadBudget
    func consume(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails,
        checked: Bool
    ) throws -> ConsumeResult
    func setLimit(_ threadID: String, maxTokens: Int64) throws -> ThreadBudget
    func resetThread(_ threadID: String) throws -> ThreadBudget?
    func cleanupThread(_ threadID: String) throws -> ThreadBudget?
    func allUsage() throws -> [ThreadBudget]
    func usageOverview(_ scope: UsageScope) throws -> UsageOverview
    func usage(agent agentID: String, scope: UsageScope) throws -> UsageTotals
    func usage(model: String, scope: UsageScope) throws -> UsageTotals
    func resetUsageWindow() throws

    func reserve(
        _ threadID: String, tokens: Int64, ttlSeconds: Int64, usage: UsageDetails, idempotencyKey: String?
    ) throws -> ReserveResult
    func settle(
        _ reservationID: Int64, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails
    ) throws -> SettleResult
    func release(_ reservationID: Int64) throws -> ThreadBudget
    func holds(_ threadID: String?) throws -> [Reservation]
    func events(after: Int64, limit: Int) throws -> EventPage
    /// Consume totals in the range, grouped, in key order (`Ledger.rollup(_:by:)`).
    func rollup(_ query: ExportQuery, by grouping: ExportGrouping) throws -> [(key: String?, totals: UsageTotals)]
    /// Writes the consume events of `query` in `format` to `sink` (`Ledger.exportEvents`).
    func exportEvents(_ query: ExportQuery, format: ExportFormat, into sink: ExportSink) throws

    /// The store's clock now (UTC microseconds): which price rows are in force is decided at it.
    var now: Int64 { get }
    func prices() throws -> [ModelPrice]
    func price(forModel model: String, at time: Int64?) throws -> ModelPrice?
    func setPrice(
        model: String, promptUSDPerMillion: String, completionUSDPerMillion: String, effectiveFrom: Int64?
    ) throws -> ModelPrice
    /// Withdraws a price before it takes effect (`Ledger.withdrawPrice`), as `price withdraw`.
    func withdrawPrice(model: String, effectiveFrom: Int64) throws -> ModelPrice
    /// Replaces a price before it takes effect (`Ledger.replacePrice`), as `price replace`.
    func replacePrice(
        model: String, effectiveFrom: Int64, promptUSDPerMillion: String, completionUSDPerMillion: String,
        newEffectiveFrom: Int64?
    ) throws -> ModelPrice

    /// Sets or changes a scope's budget (`Ledger.setBudget`), as `budget set`.
    func setBudget(_ scope: BudgetScope, period: BudgetPeriod, maxTokens: Int64?, maxNanodollars: Int64?) throws
        -> ScopeBudget
    /// Removes a scope's budget (`Ledger.removeBudget`), as `budget remove`.
    func removeBudget(_ scope: BudgetScope) throws
    /// Every scope budget with its current window (`Ledger.budgets`), as `budget list`.
    func budgets() throws -> [ScopeBudget]
    /// One scope's budget, nil when it has none (`Ledger.budget(scope:)`), as `budget show`.
    func budget(scope: BudgetScope) throws -> ScopeBudget?
    /// Bills a model's consumes recorded unpriced (`Ledger.reprice`), as `price reprice`.
    func reprice(model: String, from: Int64, to: Int64) throws -> RepriceResult
    /// Records a batch of an export's lines as consumes (`Ledger.importConsumes`), as `import`.
    func importConsumes(_ batch: [ImportedConsume]) throws -> ImportBatchResult
}

extension Ledger: CommandLedger {
    var location: String { path }
    var now: Int64 { configuration.clock() }

    func exportEvents(_ query: ExportQuery, format: ExportFormat, into sink: ExportSink) throws {
        try exportEvents(query, format: format, to: sink.write, progress: sink.progress)
    }

    func setPrice(
        model: String, promptUSDPerMillion: String, completionUSDPerMillion: String, effectiveFrom: Int64?
    ) throws -> ModelPrice {
        try setPrice(
            model: model, promptUSDPerMillion: promptUSDPerMillion, completionUSDPerMillion: completionUSDPerMillion,
            effectiveFrom: effectiveFrom, source: "budget-ledger price set")
    }

    func withdrawPrice(model: String, effectiveFrom: Int64) throws -> ModelPrice {
        try withdrawPrice(model: model, effectiveFrom: effectiveFrom, source: "budget-ledger price withdraw")
    }

    func replacePrice(
        model: String, effectiveFrom: Int64, promptUSDPerMillion: String, completionUSDPerMillion: String,
        newEffectiveFrom: Int64?
    ) throws -> ModelPrice {
        try replacePrice(
            model: model, effectiveFrom: effectiveFrom, promptUSDPerMillion: promptUSDPerMillion,
            completionUSDPerMillion: completionUSDPerMillion, newEffectiveFrom: newEffectiveFrom,
            source: "budget-ledger price replace")
    }
}

/// `PostgresLedger`'s async calls, waited for: the CLI runs one call and exits, on its main
/// thread, outside any task, so blocking it costs nothing.
struct BlockingPostgresLedger: CommandLedger {
    let ledger: PostgresLedger

    var location: String { ledger.url }

    /// Runs `body` to its end on the concurrency pool and returns or throws what it did.
    static func wait<Value: Sendable>(_ body: @escaping @Sendable () async throws -> Value) throws -> Value {
        let outcome = Mutex<Result<Value, any Error>?>(nil)
        let finished = DispatchSemaphore(value: 0)
        Task {
            let result: Result<Value, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            finished.signal()
        }
        finished.wait()
        return try outcome.withLock { $0! }.get()
    }

    var maxTokensPerThread: Int64 {
        get throws { try Self.wait { [ledger] in try await ledger.maxTokensPerThread } }
    }

    func configure(maxTokensPerThread: Int64) throws {
        try Self.wait { [ledger] in try await ledger.configure(maxTokensPerThread: maxTokensPerThread) }
    }

    func usage(_ threadID: String) throws -> ThreadBudget? {
        try Self.wait { [ledger] in try await ledger.usage(threadID) }
    }

    func checkBudget(_ threadID: String, estimatedTokens: Int64) throws -> ThreadBudget {
        try Self.wait { [ledger] in try await ledger.checkBudget(threadID, estimatedTokens: estimatedTokens) }
    }

    func consume(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails,
        checked: Bool
    ) throws -> ConsumeResult {
        try Self.wait { [ledger] in
            try await ledger.consume(
                threadID, promptTokens: promptTokens, completionTokens: completionTokens, idempotencyKey: idempotencyKey,
                usage: usage, checked: checked)
        }
    }

    func setLimit(_ threadID: String, maxTokens: Int64) throws -> ThreadBudget {
        try Self.wait { [ledger] in try await ledger.setLimit(threadID, maxTokens: maxTokens) }
    }

    func resetThread(_ threadID: String) throws -> ThreadBudget? {
        try Self.wait { [ledger] in try await ledger.resetThread(threadID) }
    }

    func cleanupThread(_ threadID: String) throws -> ThreadBudget? {
        try Self.wait { [ledger] in try await ledger.cleanupThread(threadID) }
    }

    func allUsage() throws -> [ThreadBudget] {
        try Self.wait { [ledger] in try await ledger.allUsage() }
    }

    func reserve(
        _ threadID: String, tokens: Int64, ttlSeconds: Int64, usage: UsageDetails, idempotencyKey: String?
    ) throws -> ReserveResult {
        try Self.wait { [ledger] in
            try await ledger.reserve(
                threadID, tokens: tokens, ttlSeconds: ttlSeconds, usage: usage, idempotencyKey: idempotencyKey)
        }
    }

    func settle(
        _ reservationID: Int64, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?, usage: UsageDetails
    ) throws -> SettleResult {
        try Self.wait { [ledger] in
            try await ledger.settle(
                reservationID, promptTokens: promptTokens, completionTokens: completionTokens,
                idempotencyKey: idempotencyKey, usage: usage)
        }
    }

    func release(_ reservationID: Int64) throws -> ThreadBudget {
        try Self.wait { [ledger] in try await ledger.release(reservationID) }
    }

    func usageOverview(_ scope: UsageScope) throws -> UsageOverview {
        try Self.wait { [ledger] in try await ledger.usageOverview(scope) }
    }

    func usage(agent agentID: String, scope: UsageScope) throws -> UsageTotals {
        try Self.wait { [ledger] in try await ledger.usage(agent: agentID, scope: scope) }
    }

    func usage(model: String, scope: UsageScope) throws -> UsageTotals {
        try Self.wait { [ledger] in try await ledger.usage(model: model, scope: scope) }
    }

    func resetUsageWindow() throws {
        try Self.wait { [ledger] in try await ledger.resetUsageWindow() }
    }

    func events(after: Int64, limit: Int) throws -> EventPage {
        try Self.wait { [ledger] in try await ledger.events(after: after, limit: limit) }
    }

    func holds(_ threadID: String?) throws -> [Reservation] {
        try Self.wait { [ledger] in try await ledger.holds(threadID) }
    }

    func rollup(_ query: ExportQuery, by grouping: ExportGrouping) throws -> [(key: String?, totals: UsageTotals)] {
        try Self.wait { [ledger] in try await ledger.rollup(query, by: grouping) }
    }

    /// A page of events (at most `PostgresLedger.exportPageEventsMax`) in memory at a time.
    func exportEvents(_ query: ExportQuery, format: ExportFormat, into sink: ExportSink) throws {
        try Self.wait { [ledger] in
            try await format.exportEvents(
                pages: { body in try await ledger.forEachConsumeEventPage(query, body) }, to: { sink.write($0) },
                progress: { sink.progress($0) })
        }
    }

    var now: Int64 { ledger.configuration.clock() }

    func prices() throws -> [ModelPrice] {
        try Self.wait { [ledger] in try await ledger.prices() }
    }

    func price(forModel model: String, at time: Int64?) throws -> ModelPrice? {
        try Self.wait { [ledger] in try await ledger.price(forModel: model, at: time) }
    }

    func setPrice(
        model: String, promptUSDPerMillion: String, completionUSDPerMillion: String, effectiveFrom: Int64?
    ) throws -> ModelPrice {
        try Self.wait { [ledger] in
            try await ledger.setPrice(
                model: model, promptUSDPerMillion: promptUSDPerMillion, completionUSDPerMillion: completionUSDPerMillion,
                effectiveFrom: effectiveFrom, source: "budget-ledger price set")
        }
    }

    func withdrawPrice(model: String, effectiveFrom: Int64) throws -> ModelPrice {
        try Self.wait { [ledger] in
            try await ledger.withdrawPrice(model: model, effectiveFrom: effectiveFrom, source: "budget-ledger price withdraw")
        }
    }

    func replacePrice(
        model: String, effectiveFrom: Int64, promptUSDPerMillion: String, completionUSDPerMillion: String,
        newEffectiveFrom: Int64?
    ) throws -> ModelPrice {
        try Self.wait { [ledger] in
            try await ledger.replacePrice(
                model: model, effectiveFrom: effectiveFrom, promptUSDPerMillion: promptUSDPerMillion,
                completionUSDPerMillion: completionUSDPerMillion, newEffectiveFrom: newEffectiveFrom,
                source: "budget-ledger price replace")
        }
    }

    func reprice(model: String, from: Int64, to: Int64) throws -> RepriceResult {
        try Self.wait { [ledger] in try await ledger.reprice(model: model, from: from, to: to) }
    }

    func importConsumes(_ batch: [ImportedConsume]) throws -> ImportBatchResult {
        try Self.wait { [ledger] in try await ledger.importConsumes(batch) }
    }
}

extension BlockingPostgresLedger {
    func setBudget(_ scope: BudgetScope, period: BudgetPeriod, maxTokens: Int64?, maxNanodollars: Int64?) throws
        -> ScopeBudget
    {
        try Self.wait { [ledger] in
            try await ledger.setBudget(scope, period: period, maxTokens: maxTokens, maxNanodollars: maxNanodollars)
        }
    }

    func removeBudget(_ scope: BudgetScope) throws {
        try Self.wait { [ledger] in try await ledger.removeBudget(scope) }
    }

    func budgets() throws -> [ScopeBudget] {
        try Self.wait { [ledger] in try await ledger.budgets() }
    }

    func budget(scope: BudgetScope) throws -> ScopeBudget? {
        try Self.wait { [ledger] in try await ledger.budget(scope: scope) }
    }
}

/// A `postgres://` URL reached a path that opens only a ledger file. Every command runs on both
/// stores today (`withAnyLedger`), so this is a guard: a URL is never taken for a file name.
struct NotOnPostgresError: Error, CustomStringConvertible {
    var description: String { "this command opens a ledger file, not a postgres:// URL (see docs/postgres.md)" }
}
