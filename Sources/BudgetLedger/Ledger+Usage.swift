internal import LedgerSQLite

/// Usage totals over some set of consume events.
public struct UsageTotals: Sendable, Equatable {
    public var promptTokens: Int64 = 0
    public var completionTokens: Int64 = 0
    public var requestCount: Int64 = 0
    /// The summed cost of the priced events, in nano-dollars.
    public var costNanodollars: Int64 = 0
    /// Events whose model had no price (their cost is unknown, not zero).
    public var unpricedRequests: Int64 = 0
    /// The prompt plus completion tokens of those events: the usage `costNanodollars` leaves out.
    public var unpricedTokens: Int64 = 0
    /// Sum and count of the latencies of the events that carry one.
    public var latencyMillisecondsSum: Int64 = 0
    public var latencyCount: Int64 = 0

    public init() {}

    /// Prompt plus completion tokens; saturates rather than trap (the limits keep it below 8e18).
    public var totalTokens: Int64 { promptTokens.saturatingAdd(completionTokens) }

    /// What the totals cost, as far as it is known: nil when there are requests and none of
    /// them is priced (unknown, never $0); otherwise the cost of the priced ones, which is the
    /// whole cost only when `isCostComplete`.
    public var knownCostNanodollars: Int64? {
        requestCount > 0 && unpricedRequests >= requestCount ? nil : costNanodollars
    }

    /// True when every request is priced, so that the cost is the whole cost.
    public var isCostComplete: Bool { unpricedRequests == 0 }

    /// The mean latency of the events that carry one; nil when none does.
    public var averageLatencyMilliseconds: Double? {
        latencyCount == 0 ? nil : Double(latencyMillisecondsSum) / Double(latencyCount)
    }
}

/// The usage overview (the reference's "gas gauge"): totals, per agent, per model.
public struct UsageOverview: Sendable, Equatable {
    public let totals: UsageTotals
    /// Per agent id (nil: events recorded without one), most tokens first.
    public let byAgent: [(agentID: String?, totals: UsageTotals)]
    /// Per normalised model name (`ModelName.normalized`; nil: none), most tokens first.
    public let byModel: [(model: String?, totals: UsageTotals)]
    /// Threads that are open now.
    public let activeThreads: Int64

    package init(
        totals: UsageTotals, byAgent: [(agentID: String?, totals: UsageTotals)],
        byModel: [(model: String?, totals: UsageTotals)], activeThreads: Int64
    ) {
        self.totals = totals
        self.byAgent = byAgent
        self.byModel = byModel
        self.activeThreads = activeThreads
    }

    public static func == (left: UsageOverview, right: UsageOverview) -> Bool {
        left.totals == right.totals && left.activeThreads == right.activeThreads
            && left.byAgent.map(\.agentID) == right.byAgent.map(\.agentID)
            && left.byAgent.map(\.totals) == right.byAgent.map(\.totals)
            && left.byModel.map(\.model) == right.byModel.map(\.model)
            && left.byModel.map(\.totals) == right.byModel.map(\.totals)
    }
}

/// Which events an overview covers.
public enum UsageScope: Sendable {
    /// Since the last `resetUsageWindow()`.
    case currentWindow
    /// Every event ever recorded.
    case allTime
}

extension Ledger {
    private static let totalsColumns = """
        coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), coalesce(sum(request_count), 0),
        coalesce(sum(cost_nanos), 0), coalesce(sum(unpriced_requests), 0), coalesce(sum(unpriced_tokens), 0),
        coalesce(sum(latency_ms_sum), 0), coalesce(sum(latency_count), 0)
        """

    /// Rollup rows in scope: `?1` is 1 for all time, 0 for the current window.
    private static let scopeFilter = "(?1 = 1 OR usage_window = (SELECT usage_window FROM ledger_settings WHERE id = 1))"

    private static func totals(from row: Row, offset: Int) throws -> UsageTotals {
        var totals = UsageTotals()
        totals.promptTokens = try row[offset]
        totals.completionTokens = try row[offset + 1]
        totals.requestCount = try row[offset + 2]
        totals.costNanodollars = try row[offset + 3]
        totals.unpricedRequests = try row[offset + 4]
        totals.unpricedTokens = try row[offset + 5]
        totals.latencyMillisecondsSum = try row[offset + 6]
        totals.latencyCount = try row[offset + 7]
        return totals
    }

    /// Totals, per agent and per model, read from `usage_agent_model_live` (never a scan of the
    /// events: the folded rollup, whose size depends on the agents and models, not on the events
    /// or the days, plus at most 1,023 pending consumes).
    public func usageOverview(_ scope: UsageScope = .currentWindow) throws -> UsageOverview {
        let allTime = scope == .allTime
        return try read { connection in
            let totals = try connection.cachedStatement(
                "SELECT \(Self.totalsColumns) FROM usage_agent_model_live WHERE \(Self.scopeFilter)"
            ).fetchOne([allTime]) { try Self.totals(from: $0, offset: 0) } ?? UsageTotals()
            let byAgent = try grouped("agent_id", allTime: allTime, on: connection)
            let byModel = try grouped("model", allTime: allTime, on: connection)
            let active = try connection.cachedStatement("SELECT count(*) FROM thread_state").fetchOne { try $0[0] as Int64 } ?? 0
            return UsageOverview(
                totals: totals, byAgent: byAgent.map { (agentID: $0.key, totals: $0.totals) },
                byModel: byModel.map { (model: $0.key, totals: $0.totals) }, activeThreads: active)
        }
    }

    private func grouped(_ column: String, allTime: Bool, on connection: Connection) throws -> [(key: String?, totals: UsageTotals)] {
        try connection.cachedStatement(
            """
            SELECT nullif(\(column), ''), \(Self.totalsColumns) FROM usage_agent_model_live WHERE \(Self.scopeFilter)
            GROUP BY \(column) ORDER BY sum(prompt_tokens + completion_tokens) DESC, \(column)
            """
        ).fetchAll([allTime]) { row in (key: try row[0] as String?, totals: try Self.totals(from: row, offset: 1)) }
    }

    /// One agent's totals (zeros for an unknown agent, as the reference).
    public func usage(agent agentID: String, scope: UsageScope = .currentWindow) throws -> UsageTotals {
        try Validate.identifier(agentID, field: "agentId")
        return try totals(where: "agent_id = ?2", value: agentID, scope: scope)
    }

    /// One model's totals, by its normalised name (`ModelName.normalized`: `GPT-4o ` is gpt-4o;
    /// zeros for an unknown model).
    public func usage(model: String, scope: UsageScope = .currentWindow) throws -> UsageTotals {
        try Validate.identifier(model, field: "model")
        return try totals(where: "model = ?2", value: ModelName.normalized(model), scope: scope)
    }

    private func totals(where condition: String, value: String, scope: UsageScope) throws -> UsageTotals {
        try withConnection { connection in
            try connection.cachedStatement(
                "SELECT \(Self.totalsColumns) FROM usage_agent_model_live WHERE \(Self.scopeFilter) AND \(condition)"
            ).fetchOne([scope == .allTime, value]) { try Self.totals(from: $0, offset: 0) } ?? UsageTotals()
        }
    }

    /// Starts a new usage window for the overview, recorded as an event so every process sharing
    /// the file agrees. Deletes nothing: billing still sees every event.
    public func resetUsageWindow() throws {
        try write { [self] connection in
            try connection.execute(LedgerSQL.insertUsageReset, [configuration.clock()])
        }
    }
}
