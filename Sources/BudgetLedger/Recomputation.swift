internal import LedgerSQLite

/// Every derived table recomputed from the events in one pass, in id order: what `verify`
/// compares the tables with.
///
/// It applies the rules of the triggers (migrations 0001, 0003, 0004, 0006, 0007, 0010–0013, 0016) event by
/// event, so it costs one scan of `events` and memory in the size of the derived tables (a
/// few hundred bytes per open thread, live hold and rollup row), where the `*_from_events`
/// views, which say the same in SQL for the sqlite3 shell, sort the events several times
/// (`VerifyTests` proves the two agree). Values recorded before the limits existed count at
/// most at their limit, as everywhere derived (migration 0006).
struct Recomputation {
    struct ThreadState: Equatable {
        var maxTokens: Int64
        var promptTokens: Int64 = 0
        var completionTokens: Int64 = 0
        var requestCount: Int64 = 0
        var openedEventID: Int64
        var windowEventID: Int64
    }

    struct Hold: Equatable {
        var threadID: String
        var tokens: Int64
        var expiresAtMicroseconds: Int64
        // The scopes it falls under (migration 0010), the model normalised, and its most cost.
        var agentID: String? = nil
        var model: String? = nil
        var organizationID: String? = nil
        var userID: String? = nil
        var costNanodollars: Int64? = nil
    }

    /// The scope tables' rows, recomputed by the rules both stores share (`ScopeRecomputation`).
    typealias ScopeBudgetRow = ScopeRecomputation.BudgetRow
    typealias ScopeThresholdKey = ScopeRecomputation.ThresholdKey
    /// A row of `thread_refusals` or `scope_refusals` (migration 0011).
    typealias RefusalWindow = ScopeRecomputation.RefusalWindow

    struct RollupKey: Hashable {
        var usageWindow: Int64
        var day: Int64
        var organizationID: String
        var userID: String
        var agentID: String
        var model: String
    }

    struct AgentModelKey: Hashable {
        var usageWindow: Int64
        var agentID: String
        var model: String
    }

    struct Sums: Equatable {
        var promptTokens: Int64 = 0
        var completionTokens: Int64 = 0
        var requestCount: Int64 = 0
        var costNanodollars: Int64 = 0
        var unpricedRequests: Int64 = 0
        /// The prompt plus completion tokens of the unpriced requests (migration 0013).
        var unpricedTokens: Int64 = 0
        var latencyMillisecondsSum: Int64 = 0
        var latencyCount: Int64 = 0
    }

    /// A row of `event_time_blocks` (migration 0016): the bounds of a block's folded timestamps.
    struct TimeBlock: Equatable {
        var minTimestamp: Int64
        var maxTimestamp: Int64
    }

    /// The settings row: `ledger_settings` but `rolled_up_to`, which says how far the fold went.
    struct Settings: Equatable {
        var defaultMaxTokens: Int64 = 100_000
        var usageWindow: Int64 = 0
        var allTimePromptTokens: Int64 = 0
        var allTimeCompletionTokens: Int64 = 0
        var allTimeCostNanodollars: Int64 = 0
        var allTimeLatencyMilliseconds: Int64 = 0
        /// 1e9 times the greatest prompt + completion price ever set, at most the per-call cost
        /// limit (migration 0017): from `model_prices`, not from the events.
        var consumeCostBoundNanodollars: Int64 = 0
    }

    private(set) var threads: [String: ThreadState] = [:]
    /// Crossed thresholds of each thread's current window: percent → the threshold event.
    private(set) var thresholds: [String: [Int64: Int64]] = [:]
    private(set) var holds: [Int64: Hold] = [:]
    /// scope_budgets, scope_thresholds and scope_refusals as the events imply them.
    private(set) var scopes = ScopeRecomputation()
    var scopeBudgets: [String: ScopeBudgetRow] { scopes.budgets }
    /// Crossed thresholds of scope windows → the scope_threshold event.
    var scopeThresholds: [ScopeThresholdKey: Int64] { scopes.thresholds }
    /// Per thread, the window of its last refusal (0: not open then) → the refusal event (0011).
    private(set) var threadRefusals: [String: RefusalWindow] = [:]
    /// Per scope, the window start of its last refusal → the refusal event (0011).
    var scopeRefusals: [String: RefusalWindow] { scopes.refusals }
    private(set) var settings = Settings()
    private(set) var rollup: [RollupKey: Sums] = [:]
    private(set) var agentModel: [AgentModelKey: Sums] = [:]
    /// Per block of ids (`TimeRangeSQL.eventsPerBlock`), the bounds of its events folded so far.
    private(set) var timeBlocks: [Int64: TimeBlock] = [:]
    /// Events read, the highest id, and the ids that a contiguous run from 1 lacks.
    private(set) var eventCount: Int64 = 0
    private(set) var lastID: Int64 = 0
    private(set) var firstMissingIDs: [Int64] = []
    /// Consume events billed at a cost that differs from the price table's, and reprice events
    /// whose corrected cost differs from it (the first 20).
    private(set) var mispricedEventIDs: [Int64] = []
    /// Reprice events that name no consume recorded unpriced, or one already repriced (the first 20).
    private(set) var strayRepriceEventIDs: [Int64] = []
    /// Consume events of a thread that was not open then (the first 20): the insert guard
    /// refuses them, but the ledger's writer steps around it (migration 0015).
    private(set) var strayConsumeEventIDs: [Int64] = []

    /// A consume recorded unpriced and not yet repriced: what a reprice of it corrects.
    private struct UnpricedConsume {
        var rollupKey: RollupKey
        var agentModelKey: AgentModelKey
        var model: String?
        var timestamp: Int64
        var promptTokens: Int64
        var completionTokens: Int64
        /// What its rollup rows count in unpriced_tokens: both values at their limits.
        var countedTokens: Int64
    }
    private var unpricedConsumes: [Int64: UnpricedConsume] = [:]

    private var prices: PriceTable
    /// The fold's mark (`ledger_settings.rolled_up_to`): the all-time sums hold the consumes up to
    /// it (migration 0017), the time blocks the events up to it (0016).
    private let foldedThrough: Int64

    init(prices: PriceTable, foldedThrough: Int64) {
        self.prices = prices
        self.foldedThrough = foldedThrough
        settings.consumeCostBoundNanodollars = prices.consumeCostBoundNanodollars
    }

    /// The columns `apply(_:)` reads, in its order.
    static let columns = """
        id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens, threshold_percent, agent_id, \
        model, latency_ms, org_id, user_id, cost_nanos, held_tokens, expires_at_us, reservation_id, scope, period, \
        max_cost_nanos, window_start_us, caused_by
        """

    /// Applies the next event (rows in id order, with `columns`).
    mutating func apply(_ row: Row) throws {
        let id: Int64 = try row[0]
        noteID(id)
        if id <= foldedThrough { noteFoldedTimestamp(try row[1], id: id) }
        let kind: String = try row[2]
        let threadID: String? = try row[3]
        switch kind {
        case "consume":
            try applyConsume(row, id: id, threadID: threadID ?? "")
        case "open":
            threads[threadID ?? ""] = ThreadState(maxTokens: try row[6], openedEventID: id, windowEventID: id)
        case "limit":
            applyLimit(id: id, threadID: threadID ?? "", maxTokens: try row[6])
        case "reset":
            guard let thread = threadID, var state = threads[thread] else { break }
            state.promptTokens = 0
            state.completionTokens = 0
            state.requestCount = 0
            state.windowEventID = id
            threads[thread] = state
            thresholds[thread] = nil
        case "cleanup":
            guard let thread = threadID else { break }
            threads[thread] = nil
            thresholds[thread] = nil
            threadRefusals[thread] = nil
            holds = holds.filter { $0.value.threadID != thread }
        case "threshold":
            thresholds[threadID ?? "", default: [:]][try row[7]] = id
        case "configure":
            settings.defaultMaxTokens = try row[6]
        case "usage_reset":
            settings.usageWindow += 1
        case "reserve":
            let held: Int64 = try row[14]
            let model: String? = try row[9]
            holds[id] = Hold(
                threadID: threadID ?? "", tokens: min(held, LedgerLimits.tokensPerRequestMax), expiresAtMicroseconds: try row[15],
                agentID: try row[8], model: model.map(ModelName.normalized), organizationID: try row[11],
                userID: try row[12], costNanodollars: try row[13])
        case "budget":
            try applyBudget(row, id: id)
        case "budget_remove":
            scopes.remove(try row[17])
        case "scope_threshold":
            scopes.threshold(scope: try row[17], windowStart: try row[20], percent: try row[7], eventID: id)
        case "refusal":
            if let scope: String = try row[17] {
                scopes.refusal(scope: scope, windowStart: try row[20], eventID: id)
            } else if let thread = threadID {
                threadRefusals[thread] = RefusalWindow(window: threads[thread]?.windowEventID ?? 0, eventID: id)
            }
        case "reprice":
            try applyReprice(row, id: id)
        default:  // release, expire
            if let reservation: Int64 = try row[16] { holds[reservation] = nil }
        }
    }

    private mutating func noteID(_ id: Int64) {
        if id != lastID + 1, firstMissingIDs.count < 20 {
            var missing = lastID + 1
            while missing < id, firstMissingIDs.count < 20 {
                firstMissingIDs.append(missing)
                missing += 1
            }
        }
        eventCount += 1
        lastID = max(lastID, id)
    }

    /// Widens the bounds of the event's block to its timestamp (0016's fold trigger).
    private mutating func noteFoldedTimestamp(_ timestamp: Int64, id: Int64) {
        let block = (id - 1) / TimeRangeSQL.eventsPerBlock
        guard var bounds = timeBlocks[block] else {
            timeBlocks[block] = TimeBlock(minTimestamp: timestamp, maxTimestamp: timestamp)
            return
        }
        bounds.minTimestamp = min(bounds.minTimestamp, timestamp)
        bounds.maxTimestamp = max(bounds.maxTimestamp, timestamp)
        timeBlocks[block] = bounds
    }

    private mutating func applyConsume(_ row: Row, id: Int64, threadID: String) throws {
        let prompt = min(try row[4] as Int64, LedgerLimits.tokensPerCallMax)
        let completion = min(try row[5] as Int64, LedgerLimits.tokensPerCallMax)
        let latency: Int64? = try row[10]
        let cost: Int64? = try row[13]
        let countedLatency = latency.map { min($0, LedgerLimits.latencyMillisecondsMax) }
        let countedCost = cost.map { min($0, LedgerLimits.costNanodollarsPerCallMax) }
        if var state = threads[threadID] {
            state.promptTokens = state.promptTokens.saturatingAdd(prompt)
            state.completionTokens = state.completionTokens.saturatingAdd(completion)
            state.requestCount += 1
            threads[threadID] = state
        } else if strayConsumeEventIDs.count < 20 {
            strayConsumeEventIDs.append(id)
        }
        if let reservation: Int64 = try row[16] { holds[reservation] = nil }
        if id <= foldedThrough {
            settings.allTimePromptTokens = settings.allTimePromptTokens.saturatingAdd(prompt)
            settings.allTimeCompletionTokens = settings.allTimeCompletionTokens.saturatingAdd(completion)
            settings.allTimeCostNanodollars = settings.allTimeCostNanodollars.saturatingAdd(countedCost ?? 0)
            settings.allTimeLatencyMilliseconds = settings.allTimeLatencyMilliseconds.saturatingAdd(countedLatency ?? 0)
        }

        let timestamp: Int64 = try row[1]
        let agent: String = try row[8] ?? ""
        let model: String? = try row[9]
        // The rollups group by the normalised name (migration 0008).
        let modelKey = model.map(ModelName.normalized) ?? ""
        let add = { (sums: inout Sums) in
            sums.promptTokens = sums.promptTokens.saturatingAdd(prompt)
            sums.completionTokens = sums.completionTokens.saturatingAdd(completion)
            sums.requestCount += 1
            sums.costNanodollars = sums.costNanodollars.saturatingAdd(countedCost ?? 0)
            sums.unpricedRequests += cost == nil ? 1 : 0
            if cost == nil { sums.unpricedTokens = sums.unpricedTokens.saturatingAdd(prompt.saturatingAdd(completion)) }
            sums.latencyMillisecondsSum = sums.latencyMillisecondsSum.saturatingAdd(countedLatency ?? 0)
            sums.latencyCount += latency == nil ? 0 : 1
        }
        let rollupKey = RollupKey(
            usageWindow: settings.usageWindow, day: timestamp / 86_400_000_000, organizationID: try row[11] ?? "",
            userID: try row[12] ?? "", agentID: agent, model: modelKey)
        let agentModelKey = AgentModelKey(usageWindow: settings.usageWindow, agentID: agent, model: modelKey)
        add(&rollup[rollupKey, default: Sums()])
        add(&agentModel[agentModelKey, default: Sums()])
        if cost == nil {
            unpricedConsumes[id] = UnpricedConsume(
                rollupKey: rollupKey, agentModelKey: agentModelKey, model: model, timestamp: timestamp,
                promptTokens: try row[4], completionTokens: try row[5], countedTokens: prompt.saturatingAdd(completion))
        }

        scopes.consume(
            timestamp: timestamp, tokens: (try row[4] as Int64).saturatingAdd(try row[5]), cost: cost,
            scopes: BudgetScope.candidates(agentID: try row[8], model: model, organizationID: try row[11], userID: try row[12]))

        // A consume recorded unpriced may be priced by a price set later (migration 0012): its
        // reprice, if any, is checked instead.
        let expected = prices.cost(model: model, eventID: id, at: timestamp, promptTokens: try row[4], completionTokens: try row[5])
        if let cost, expected != cost, mispricedEventIDs.count < 20 { mispricedEventIDs.append(id) }
    }

    /// A reprice (migration 0012's events_check_reprice): the consume it names, recorded
    /// unpriced, now costs the reprice's cost in its rollup rows and the all-time sum; the cost
    /// must be the price table's at the consume's own timestamp.
    private mutating func applyReprice(_ row: Row, id: Int64) throws {
        let causedBy: Int64? = try row[21]
        let cost: Int64? = try row[13]
        guard let causedBy, let cost, let consume = unpricedConsumes.removeValue(forKey: causedBy) else {
            if strayRepriceEventIDs.count < 20 { strayRepriceEventIDs.append(id) }
            return
        }
        let counted = min(cost, LedgerLimits.costNanodollarsPerCallMax)
        settings.allTimeCostNanodollars = settings.allTimeCostNanodollars.saturatingAdd(cost)
        let correct = { (sums: inout Sums) in
            sums.costNanodollars = sums.costNanodollars.saturatingAdd(counted)
            sums.unpricedRequests -= 1
            sums.unpricedTokens -= consume.countedTokens
        }
        correct(&rollup[consume.rollupKey, default: Sums()])
        correct(&agentModel[consume.agentModelKey, default: Sums()])
        let expected = prices.cost(
            model: consume.model, eventID: causedBy, at: consume.timestamp, promptTokens: consume.promptTokens,
            completionTokens: consume.completionTokens)
        if expected != cost, mispricedEventIDs.count < 20 { mispricedEventIDs.append(id) }
    }

    /// A budget event (0010's scope trigger), with the spend of its window so far from the
    /// rollups (by UTC day).
    private mutating func applyBudget(_ row: Row, id: Int64) throws {
        let scope: String = try row[17]
        let periodName: String = try row[18]
        let timestamp: Int64 = try row[1]
        let firstDay = ScopeRecomputation.firstDay(period: periodName, at: timestamp)
        var spend = ScopeRecomputation.Spend()
        for (key, sums) in rollup where key.day >= firstDay {
            guard
                ScopeRecomputation.covers(
                    scope, organizationID: key.organizationID, userID: key.userID, agentID: key.agentID, model: key.model)
            else { continue }
            spend.add(
                tokens: sums.promptTokens.saturatingAdd(sums.completionTokens), nanodollars: sums.costNanodollars,
                requests: sums.requestCount, unpricedRequests: sums.unpricedRequests)
        }
        scopes.budget(
            scope: scope, period: periodName, maxTokens: try row[6], maxNanodollars: try row[19], eventID: id,
            at: timestamp, spend: spend)
    }

    /// A limit: the new max (opening the thread when it is not open), and the crossed thresholds
    /// the thread no longer reaches under it armed again (all of them at max 0), as 0007.
    private mutating func applyLimit(id: Int64, threadID: String, maxTokens: Int64) {
        guard var state = threads[threadID] else {
            threads[threadID] = ThreadState(maxTokens: maxTokens, openedEventID: id, windowEventID: id)
            return
        }
        state.maxTokens = maxTokens
        threads[threadID] = state
        let used = state.promptTokens.saturatingAdd(state.completionTokens)
        thresholds[threadID] = thresholds[threadID]?.filter { percent, _ in
            BudgetThreshold.isReached(percent: Int(percent), used: used, maxTokens: maxTokens)
        }
    }
}

/// The price table, for recomputing each consume's cost as the `event_prices` view does: up to
/// `legacy_pricing.last_event_id`, the old rule over the legacy rows (the longest prefix of the
/// lowercased model, ASCII as SQLite's `lower`); after it, migration 0008's rule over the other
/// rows (the normalised name's exact row, else the pattern with the longest literal); then the
/// latest `effective_from_us` not after the event.
struct PriceTable {
    /// The last event priced by the legacy rule.
    private let lastLegacyEventID: Int64
    /// Legacy rows (`legacy_prefix = 1`), longest prefix first, then latest start first: the
    /// `event_prices` view's ORDER BY for events up to `lastLegacyEventID`.
    private let legacyPrices: [ModelPrice]
    /// The rows of today's rule, matched as the consume path matches them (`PriceCache`).
    private let prices: [ModelPrice]
    /// The most one consume can cost at any price ever set (migration 0017's bound).
    let consumeCostBoundNanodollars: Int64
    /// Per model name as recorded: the rows that match it, in the order that picks the price.
    private var legacyCandidates: [String: [ModelPrice]] = [:]
    private var candidates: [String: [ModelPrice]] = [:]

    init(on connection: Connection) throws {
        lastLegacyEventID = try connection.prepare("SELECT last_event_id FROM legacy_pricing WHERE id = 1")
            .fetchOne { try $0[0] as Int64 } ?? 0
        legacyPrices = try connection.prepare(
            """
            SELECT model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source
            FROM model_prices WHERE legacy_prefix = 1 ORDER BY length(model_pattern) DESC, effective_from_us DESC
            """
        ).fetchAll(ModelPrice.init(row:))
        prices = try connection.prepare(LedgerSQL.selectPrices).fetchAll(ModelPrice.init(row:))
        // Every row ever set counts, withdrawn ones too (0017's trigger never lowers the bound).
        consumeCostBoundNanodollars = try connection.prepare(
            """
            SELECT coalesce(max(min(\(LedgerLimits.costNanodollarsPerCallMax),
                                    \(LedgerLimits.tokensPerCallMax) * (prompt_nanos_per_token + completion_nanos_per_token))), 0)
            FROM model_prices
            """
        ).fetchOne { try $0[0] as Int64 } ?? 0
    }

    /// The cost at the price in force for event `id` at `timestamp`; nil without one; -1 when it
    /// overflows (SQLite's product turns to a float there, which no recorded cost equals, and no
    /// recorded cost is negative).
    mutating func cost(model: String?, eventID id: Int64, at timestamp: Int64, promptTokens: Int64, completionTokens: Int64)
        -> Int64?
    {
        guard let model else { return nil }
        let matching = id <= lastLegacyEventID ? legacyMatches(model) : matches(model)
        guard let price = matching.first(where: { $0.effectiveFromMicroseconds <= timestamp }) else { return nil }
        return Money.cost(promptTokens: promptTokens, completionTokens: completionTokens, price: price) ?? -1
    }

    private mutating func legacyMatches(_ model: String) -> [ModelPrice] {
        if let known = legacyCandidates[model] { return known }
        let lowered = Array(model.lowercasedASCII.unicodeScalars)
        let matching = legacyPrices.filter { lowered.starts(with: $0.modelPattern.unicodeScalars) }
        legacyCandidates[model] = matching
        return matching
    }

    private mutating func matches(_ model: String) -> [ModelPrice] {
        if let known = candidates[model] { return known }
        let matching = PriceCache.candidates(for: model, in: prices)
        candidates[model] = matching
        return matching
    }
}
