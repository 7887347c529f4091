import BudgetLedger
import PostgresNIO

/// The reads behind the server's usage, price and metrics routes: `Ledger`'s `allUsage`,
/// `usageOverview`, `usage(agent:)`, `usage(model:)`, `prices`, `price(forModel:)` and `gauges`,
/// with the same results. Orders compare text with `COLLATE "C"` (bytes, as SQLite's BINARY),
/// so a database created with another locale lists rows in the same order as SQLite.
extension PostgresLedger {
    /// The sums of `usage_agent_model_live`, in `UsageTotals`' order.
    static let totalsColumns = """
        coalesce(sum(prompt_tokens), 0)::bigint, coalesce(sum(completion_tokens), 0)::bigint,
        coalesce(sum(request_count), 0)::bigint, coalesce(sum(cost_nanos), 0)::bigint,
        coalesce(sum(unpriced_requests), 0)::bigint, coalesce(sum(unpriced_tokens), 0)::bigint,
        coalesce(sum(latency_ms_sum), 0)::bigint, coalesce(sum(latency_count), 0)::bigint
        """

    /// Rollup rows in scope: `$1` true for all time, false for the current window.
    static let scopeFilter = "($1 OR usage_window = (SELECT usage_window FROM ledger_settings WHERE id = 1))"

    typealias TotalsRow = (Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64)

    static func totals(_ row: TotalsRow) -> UsageTotals {
        var totals = UsageTotals()
        totals.promptTokens = row.0
        totals.completionTokens = row.1
        totals.requestCount = row.2
        totals.costNanodollars = row.3
        totals.unpricedRequests = row.4
        totals.unpricedTokens = row.5
        totals.latencyMillisecondsSum = row.6
        totals.latencyCount = row.7
        return totals
    }

    /// Every open thread's budget, hottest (highest percent used) first, then by id.
    public func allUsage() async throws -> [ThreadBudget] {
        let now = configuration.clock()
        return try await read { [logger] connection in
            let query = PostgresQuery.sql(PostgresSQL.selectAllThreads) { $0.append(now) }
            var budgets: [ThreadBudget] = []
            let rows = try await connection.query(query, logger: logger)
            for try await row in rows.decode((String, Int64, Int64, Int64, Int64, String?, Int64).self) {
                budgets.append(
                    ThreadBudget(
                        threadID: row.0, maxTokens: row.1, promptTokens: row.2, completionTokens: row.3, requestCount: row.4,
                        triggeredThresholds: PostgresThreadRow.parseThresholds(row.5), heldTokens: row.6))
            }
            return budgets
        }
    }

    /// Totals, per agent and per model, from `usage_agent_model_live` (`Ledger.usageOverview`).
    public func usageOverview(_ scope: UsageScope = .currentWindow) async throws -> UsageOverview {
        let allTime = scope == .allTime
        return try await read { [logger] connection in
            let totals = try await connection.fetchOne(
                .sql("SELECT \(Self.totalsColumns) FROM usage_agent_model_live WHERE \(Self.scopeFilter)") {
                    $0.append(allTime)
                }, as: TotalsRow.self, logger: logger)
            let byAgent = try await Self.grouped("agent_id", allTime: allTime, on: connection, logger: logger)
            let byModel = try await Self.grouped("model", allTime: allTime, on: connection, logger: logger)
            let active = try await connection.fetchOne("SELECT count(*) FROM thread_state", as: Int64.self, logger: logger) ?? Int64(0)
            return UsageOverview(
                totals: totals.map(Self.totals) ?? UsageTotals(),
                byAgent: byAgent.map { (agentID: $0.key, totals: $0.totals) },
                byModel: byModel.map { (model: $0.key, totals: $0.totals) }, activeThreads: active)
        }
    }

    private static func grouped(_ column: String, allTime: Bool, on connection: PostgresConnection, logger: Logger)
        async throws -> [(key: String?, totals: UsageTotals)]
    {
        let query = PostgresQuery.sql(
            """
            SELECT nullif(\(column), ''), \(totalsColumns) FROM usage_agent_model_live WHERE \(scopeFilter)
            GROUP BY \(column) ORDER BY sum(prompt_tokens + completion_tokens) DESC, \(column) COLLATE "C"
            """
        ) { $0.append(allTime) }
        var groups: [(key: String?, totals: UsageTotals)] = []
        let rows = try await connection.query(query, logger: logger)
        for try await row in rows.decode((String?, Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64).self) {
            groups.append((key: row.0, totals: totals((row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8))))
        }
        return groups
    }

    /// One agent's totals (zeros for an unknown agent), as `Ledger.usage(agent:scope:)`.
    public func usage(agent agentID: String, scope: UsageScope = .currentWindow) async throws -> UsageTotals {
        try Validate.identifier(agentID, field: "agentId")
        return try await totals(where: "agent_id", equals: agentID, scope: scope)
    }

    /// One model's totals by its normalised name (zeros for an unknown model), as `Ledger.usage(model:scope:)`.
    public func usage(model: String, scope: UsageScope = .currentWindow) async throws -> UsageTotals {
        try Validate.identifier(model, field: "model")
        return try await totals(where: "model", equals: ModelName.normalized(model), scope: scope)
    }

    private func totals(where column: String, equals value: String, scope: UsageScope) async throws -> UsageTotals {
        let allTime = scope == .allTime
        return try await read { [logger] connection in
            let query = PostgresQuery.sql(
                "SELECT \(Self.totalsColumns) FROM usage_agent_model_live WHERE \(Self.scopeFilter) AND \(column) = $2"
            ) {
                $0.append(allTime)
                $0.append(value)
            }
            return try await connection.fetchOne(query, as: TotalsRow.self, logger: logger).map(Self.totals) ?? UsageTotals()
        }
    }

    /// Every live (not withdrawn) price row, by pattern and start time (`Ledger.prices`).
    public func prices() async throws -> [ModelPrice] {
        try await read { [logger] connection in
            var prices: [ModelPrice] = []
            let rows = try await connection.query(PostgresQuery(unsafeSQL: PostgresSQL.selectPrices), logger: logger)
            for try await row in rows.decode((String, Int64, Int64, Int64, String).self) {
                prices.append(
                    ModelPrice(
                        modelPattern: row.0, promptNanodollarsPerToken: row.1, completionNanodollarsPerToken: row.2,
                        effectiveFromMicroseconds: row.3, source: row.4))
            }
            return prices
        }
    }

    /// The price that applies to `model` (normalised) at `time` (default now), or nil (`Ledger.price(forModel:at:)`).
    public func price(forModel model: String, at time: Int64? = nil) async throws -> ModelPrice? {
        let now = time ?? configuration.clock()
        return try await read { [logger] connection in
            let query = PostgresQuery.sql(PostgresSQL.selectPriceForModel) {
                $0.append(ModelName.normalized(model))
                $0.append(now)
            }
            return try await connection.fetchOne(query, as: (String, Int64, Int64, Int64, String).self, logger: logger).map {
                ModelPrice(
                    modelPattern: $0.0, promptNanodollarsPerToken: $0.1, completionNanodollarsPerToken: $0.2,
                    effectiveFromMicroseconds: $0.3, source: $0.4)
            }
        }
    }

    /// The gauges of `/metrics` (`Ledger.gauges`). Usage is rolled up per consume on PostgreSQL,
    /// so `unfoldedConsumes` is always 0.
    public func gauges() async throws -> LedgerGauges {
        let now = configuration.clock()
        return try await read { [logger] connection in
            var gauges = LedgerGauges()
            let threads = try await connection.fetchOne(
                .sql(
                    """
                    SELECT count(*),
                           count(*) FILTER (WHERE max_tokens > 0 AND prompt_tokens + completion_tokens < max_tokens
                                            AND (prompt_tokens + completion_tokens) * 100 >= max_tokens * $1),
                           count(*) FILTER (WHERE prompt_tokens + completion_tokens >= max_tokens)
                    FROM thread_state
                    """
                ) { $0.append(LedgerGauges.nearMaxPercent) }, as: (Int64, Int64, Int64).self, logger: logger)
            if let threads {
                (gauges.openThreads, gauges.threadsNearMax, gauges.threadsAtOrOverMax) = threads
            }
            let holds = try await connection.fetchOne(
                .sql("SELECT count(*), coalesce(sum(tokens), 0)::bigint FROM holds WHERE expires_at_us > $1") { $0.append(now) },
                as: (Int64, Int64).self, logger: logger)
            if let holds { (gauges.liveHolds, gauges.heldTokens) = holds }
            let rows = try await connection.query(
                "SELECT threshold_percent, count(*) FROM thread_thresholds GROUP BY threshold_percent ORDER BY threshold_percent",
                logger: logger)
            for try await (percent, count) in rows.decode((Int32, Int64).self) {
                gauges.threadsPastThreshold.append((percent: Int(percent), threads: count))
            }
            return gauges
        }
    }
}
