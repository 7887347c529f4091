import BudgetLedger
import Logging
import PostgresNIO

extension PostgresLedger {
    /// The scope tables compared with what the events imply, worded as SQLite's verify words
    /// them. The events that shape them are read in id order (in the caller's snapshot) and
    /// applied by `ScopeRecomputation`, the rules SQLite's verify applies; a budget event's
    /// spend so far is summed from the consumes before it, by UTC day, as the trigger sums the
    /// rollups. Consumes are read only when the ledger has a budget event at all.
    static func scopeDifferences(on connection: PostgresConnection, logger: Logger) async throws -> [String] {
        let hasBudgets =
            try await connection.fetchOne(
                "SELECT EXISTS (SELECT 1 FROM events WHERE kind = 'budget')", as: Bool.self, logger: logger) ?? false
        let recomputed = hasBudgets ? try await recomputeScopes(on: connection, logger: logger) : ScopeRecomputation()
        var budgets: [String: ScopeRecomputation.BudgetRow] = [:]
        let budgetRows = try await connection.query(
            PostgresQuery(unsafeSQL: "SELECT \(PostgresSQL.scopeBudgetColumns) FROM scope_budgets"), logger: logger)
        for try await row in budgetRows.decode(PostgresSQL.StoredScopeBudgetColumns.self) {
            budgets[row.0] = ScopeRecomputation.BudgetRow(
                period: row.1, maxTokens: row.2, maxNanodollars: row.3, setEventID: row.4, windowStart: row.5,
                spentTokens: row.6, spentNanodollars: row.7, requestCount: row.8, unpricedRequests: row.9)
        }
        var thresholds: [ScopeRecomputation.ThresholdKey: Int64] = [:]
        let thresholdRows = try await connection.query(
            "SELECT scope, window_start_us, threshold_percent, event_id FROM scope_thresholds", logger: logger)
        for try await (scope, window, percent, eventID) in thresholdRows.decode((String, Int64, Int32, Int64).self) {
            thresholds[ScopeRecomputation.ThresholdKey(scope: scope, windowStart: window, percent: Int64(percent))] = eventID
        }
        var refusals: [String: ScopeRecomputation.RefusalWindow] = [:]
        let refusalRows = try await connection.query(
            "SELECT scope, window_start_us, event_id FROM scope_refusals", logger: logger)
        for try await (scope, window, eventID) in refusalRows.decode((String, Int64, Int64).self) {
            refusals[scope] = ScopeRecomputation.RefusalWindow(window: window, eventID: eventID)
        }
        return tableDifferences("scope_budgets", stored: budgets, recomputed: recomputed.budgets) { $0 }
            + tableDifferences("scope_thresholds", stored: thresholds, recomputed: recomputed.thresholds) {
                "\($0.scope) window \($0.windowStart) \($0.percent)%"
            }
            + tableDifferences("scope_refusals", stored: refusals, recomputed: recomputed.refusals) { $0 }
    }

    /// One pass over the events that shape the scope tables, in id order.
    private static func recomputeScopes(on connection: PostgresConnection, logger: Logger) async throws
        -> ScopeRecomputation
    {
        struct DayKey: Hashable {
            let day: Int64
            let organizationID: String
            let userID: String
            let agentID: String
            let model: String
        }
        var scopes = ScopeRecomputation()
        var days: [DayKey: ScopeRecomputation.Spend] = [:]
        let rows = try await connection.query(PostgresQuery(unsafeSQL: PostgresVerifySQL.selectScopeEvents), logger: logger)
        let columns = (
            Int64, Int64, String, Int64, Int64, Int64?, Int32?, String?, String?, String?, String?, Int64?, String?,
            String?, Int64?, Int64?
        ).self
        for try await row in rows.decode(columns) {
            let (id, timestamp, kind) = (row.0, row.1, row.2)
            switch kind {
            case "consume":
                let tokens = row.3 + row.4
                let model = row.8.map(ModelName.normalized)
                scopes.consume(
                    timestamp: timestamp, tokens: tokens, cost: row.11,
                    scopes: BudgetScope.candidates(agentID: row.7, model: row.8, organizationID: row.9, userID: row.10))
                let key = DayKey(
                    day: timestamp / 86_400_000_000, organizationID: row.9 ?? "", userID: row.10 ?? "",
                    agentID: row.7 ?? "", model: model ?? "")
                days[key, default: ScopeRecomputation.Spend()].add(
                    tokens: tokens, nanodollars: row.11 ?? 0, requests: 1, unpricedRequests: row.11 == nil ? 1 : 0)
            case "budget":
                let scope = row.12 ?? ""
                let period = row.13 ?? ""
                let firstDay = ScopeRecomputation.firstDay(period: period, at: timestamp)
                var spend = ScopeRecomputation.Spend()
                for (key, sums) in days where key.day >= firstDay
                    && ScopeRecomputation.covers(
                        scope, organizationID: key.organizationID, userID: key.userID, agentID: key.agentID,
                        model: key.model)
                {
                    spend.add(
                        tokens: sums.tokens, nanodollars: sums.nanodollars, requests: sums.requests,
                        unpricedRequests: sums.unpricedRequests)
                }
                scopes.budget(
                    scope: scope, period: period, maxTokens: row.5, maxNanodollars: row.14, eventID: id, at: timestamp,
                    spend: spend)
            case "budget_remove":
                scopes.remove(row.12 ?? "")
            case "scope_threshold":
                scopes.threshold(
                    scope: row.12 ?? "", windowStart: row.15 ?? 0, percent: Int64(row.6 ?? 0), eventID: id)
            default:  // a scope's refusal
                scopes.refusal(scope: row.12 ?? "", windowStart: row.15 ?? 0, eventID: id)
            }
        }
        return scopes
    }
}

extension PostgresVerifySQL {
    /// The events that shape the scope tables, in id order, with the columns
    /// `PostgresLedger.recomputeScopes` reads.
    static let selectScopeEvents = """
        SELECT id, timestamp_us, kind, prompt_tokens, completion_tokens, max_tokens, threshold_percent, agent_id, model,
               org_id, user_id, cost_nanos, scope, period, max_cost_nanos, window_start_us
        FROM events
        WHERE kind IN ('consume', 'budget', 'budget_remove', 'scope_threshold') OR (kind = 'refusal' AND scope IS NOT NULL)
        ORDER BY id
        """
}
