import BudgetLedger
import BudgetLedgerPostgres
import BudgetLedgerWire

/// PostgreSQL's conformance: `PostgresLedger`'s calls, made directly (postgres-nio is
/// asynchronous, and the store's own pool bounds the connections). Its `close()` is the requirement's.
extension PostgresLedger: LedgerStore {
    /// "PostgreSQL".
    public var storeName: String { "PostgreSQL" }

    public func setDefaultMaxTokens(_ maxTokensPerThread: Int64) async throws -> Int64 {
        try await configure(maxTokensPerThread: maxTokensPerThread)
        return try await self.maxTokensPerThread
    }

    public func threadList() async throws -> (budgets: [ThreadBudget], defaultMaxTokens: Int64) {
        // Two reads, not one snapshot: a thread opened between them is listed under the old default.
        (budgets: try await allUsage(), defaultMaxTokens: try await maxTokensPerThread)
    }

    public func priceTable() async throws -> (prices: [ModelPrice], now: Int64) {
        (prices: try await prices(), now: configuration.clock())
    }

    public func price(forModel model: String) async throws -> ModelPrice? {
        try await price(forModel: model, at: nil)
    }
}
