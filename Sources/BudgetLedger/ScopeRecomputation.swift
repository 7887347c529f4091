/// scope_budgets, scope_thresholds and scope_refusals recomputed from the events, applied in id
/// order: the rules of SQLite's migrations 0010 and 0011 (and PostgreSQL's 0007) in Swift, for
/// `verify` on both stores (`Recomputation` on SQLite; `PostgresLedger.verify` feeds it directly).
package struct ScopeRecomputation: Sendable {
    /// A row of `scope_budgets` (without its scope, the key).
    package struct BudgetRow: Equatable, Sendable {
        package var period: String
        package var maxTokens: Int64?
        package var maxNanodollars: Int64?
        package var setEventID: Int64
        package var windowStart: Int64
        package var spentTokens: Int64 = 0
        package var spentNanodollars: Int64 = 0
        package var requestCount: Int64 = 0
        package var unpricedRequests: Int64 = 0

        package init(
            period: String, maxTokens: Int64?, maxNanodollars: Int64?, setEventID: Int64, windowStart: Int64,
            spentTokens: Int64 = 0, spentNanodollars: Int64 = 0, requestCount: Int64 = 0, unpricedRequests: Int64 = 0
        ) {
            self.period = period
            self.maxTokens = maxTokens
            self.maxNanodollars = maxNanodollars
            self.setEventID = setEventID
            self.windowStart = windowStart
            self.spentTokens = spentTokens
            self.spentNanodollars = spentNanodollars
            self.requestCount = requestCount
            self.unpricedRequests = unpricedRequests
        }
    }

    /// A crossed threshold of a scope window (`scope_thresholds`' key).
    package struct ThresholdKey: Hashable, Sendable {
        package var scope: String
        package var windowStart: Int64
        package var percent: Int64

        package init(scope: String, windowStart: Int64, percent: Int64) {
            self.scope = scope
            self.windowStart = windowStart
            self.percent = percent
        }
    }

    /// The window of a thread's or scope's last refusal, and the refusal event (migration 0011).
    package struct RefusalWindow: Equatable, Sendable {
        package var window: Int64
        package var eventID: Int64

        package init(window: Int64, eventID: Int64) {
            self.window = window
            self.eventID = eventID
        }
    }

    /// What a scope spent in a window before its budget was set (read from the rollups).
    package struct Spend: Sendable {
        package var tokens: Int64 = 0
        package var nanodollars: Int64 = 0
        package var requests: Int64 = 0
        package var unpricedRequests: Int64 = 0

        package init() {}

        package mutating func add(tokens: Int64, nanodollars: Int64, requests: Int64, unpricedRequests: Int64) {
            self.tokens = self.tokens.saturatingAdd(tokens)
            self.nanodollars = self.nanodollars.saturatingAdd(nanodollars)
            self.requests = self.requests.saturatingAdd(requests)
            self.unpricedRequests = self.unpricedRequests.saturatingAdd(unpricedRequests)
        }
    }

    package private(set) var budgets: [String: BudgetRow] = [:]
    /// Crossed thresholds of scope windows → the scope_threshold event.
    package private(set) var thresholds: [ThresholdKey: Int64] = [:]
    /// Per scope, the window start of its last refusal → the refusal event.
    package private(set) var refusals: [String: RefusalWindow] = [:]

    package init() {}

    /// Whether a rollup row of these (normalised, '' for none) keys counts under `scope`.
    package static func covers(
        _ scope: String, organizationID: String, userID: String, agentID: String, model: String
    ) -> Bool {
        scope == "global" || scope == "org:" + organizationID || scope == "user:" + userID
            || scope == "agent:" + agentID || scope == "model:" + model
    }

    /// The first UTC day (since 1970) of the window of `period` holding `timestamp`: a budget
    /// set then counts the rollup rows of that day and later.
    package static func firstDay(period: String, at timestamp: Int64) -> Int64 {
        (BudgetPeriod(rawValue: period) ?? .none).window(containing: timestamp).startMicroseconds
            .floorDivided(by: 86_400_000_000)
    }

    /// A consume under the scope budgets of `scopes` (0010's consume trigger): a later window
    /// starts at this consume; an earlier one (a clock stepped back) counts in the row's window.
    package mutating func consume(timestamp: Int64, tokens: Int64, cost: Int64?, scopes: [String]) {
        for scope in scopes {
            guard var budget = budgets[scope], let period = BudgetPeriod(rawValue: budget.period) else { continue }
            let start = period.window(containing: timestamp).startMicroseconds
            if start > budget.windowStart {
                budget = BudgetRow(
                    period: budget.period, maxTokens: budget.maxTokens, maxNanodollars: budget.maxNanodollars,
                    setEventID: budget.setEventID, windowStart: start)
            }
            budget.spentTokens = budget.spentTokens.saturatingAdd(tokens)
            budget.spentNanodollars = budget.spentNanodollars.saturatingAdd(cost ?? 0)
            budget.requestCount += 1
            budget.unpricedRequests += cost == nil ? 1 : 0
            budgets[scope] = budget
        }
    }

    /// A budget event (0010's scope trigger): the window holding it, with `spend` (the window's
    /// spend so far), and the thresholds the window no longer reaches armed again.
    package mutating func budget(
        scope: String, period: String, maxTokens: Int64?, maxNanodollars: Int64?, eventID: Int64, at timestamp: Int64,
        spend: Spend
    ) {
        let start = (BudgetPeriod(rawValue: period) ?? .none).window(containing: timestamp).startMicroseconds
        let budget = BudgetRow(
            period: period, maxTokens: maxTokens, maxNanodollars: maxNanodollars, setEventID: eventID, windowStart: start,
            spentTokens: spend.tokens, spentNanodollars: spend.nanodollars, requestCount: spend.requests,
            unpricedRequests: spend.unpricedRequests)
        budgets[scope] = budget
        thresholds = thresholds.filter { key, _ in
            key.scope != scope
                || (key.windowStart == budget.windowStart
                    && ScopeBudgetRules.reaches(
                        Int(key.percent), spentTokens: budget.spentTokens, maxTokens: budget.maxTokens,
                        spentNanodollars: budget.spentNanodollars, maxNanodollars: budget.maxNanodollars))
        }
    }

    /// A budget_remove: the scope's budget, thresholds and refusal window go.
    package mutating func remove(_ scope: String) {
        budgets[scope] = nil
        thresholds = thresholds.filter { $0.key.scope != scope }
        refusals[scope] = nil
    }

    /// A scope_threshold event.
    package mutating func threshold(scope: String, windowStart: Int64, percent: Int64, eventID: Int64) {
        thresholds[ThresholdKey(scope: scope, windowStart: windowStart, percent: percent)] = eventID
    }

    /// A refusal event that names a scope.
    package mutating func refusal(scope: String, windowStart: Int64, eventID: Int64) {
        refusals[scope] = RefusalWindow(window: windowStart, eventID: eventID)
    }
}
