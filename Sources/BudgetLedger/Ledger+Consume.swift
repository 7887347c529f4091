import Foundation
import LedgerSQLite

extension Ledger {
    /// Records usage on `threadID`, opening the thread at the default max when it is new.
    ///
    /// Records even when the consume overshoots the max, since the tokens were already spent
    /// (as the reference). Returns the budget and the thresholds this consume crossed.
    /// With an `idempotencyKey` already recorded, records nothing and replays the original.
    ///
    /// - Throws: `LedgerError.invalidInput` for bad input (nothing is written),
    ///   `LedgerError.conflict` when the key was used for a different consume.
    @discardableResult
    public func consume(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64 = 0,
        idempotencyKey: String? = nil, usage: UsageDetails = .none
    ) throws -> ConsumeResult {
        try submit(
            ConsumeRequest(
                threadID: threadID, promptTokens: promptTokens, completionTokens: completionTokens,
                idempotencyKey: idempotencyKey, usage: usage, enforce: false))
    }

    /// Checks the budget and records the usage in one transaction, only if it fits.
    ///
    /// Exact under contention: threads and processes sharing the ledger never push a thread's
    /// total past its max through this call.
    ///
    /// - Throws: `BudgetExhaustedError` when the thread is exhausted or the tokens do not fit
    ///   (nothing is recorded); the errors of `consume`.
    @discardableResult
    public func checkAndConsume(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64 = 0,
        idempotencyKey: String? = nil, usage: UsageDetails = .none
    ) throws -> ConsumeResult {
        try submit(
            ConsumeRequest(
                threadID: threadID, promptTokens: promptTokens, completionTokens: completionTokens,
                idempotencyKey: idempotencyKey, usage: usage, enforce: true))
    }

    /// Records a validated consume (group-committed) and tells subscribers once it is committed.
    private func submit(_ request: ConsumeRequest) throws -> ConsumeResult {
        let result = try write { [self] connection in try record(request, on: connection) }
        notify(result)
        return result
    }

    /// Checks that `estimatedTokens` more fit in the thread's budget (opening it when new).
    ///
    /// - Returns: the budget, when it is not exhausted and the estimate fits.
    /// - Throws: `BudgetExhaustedError` otherwise.
    @discardableResult
    public func checkBudget(_ threadID: String, estimatedTokens: Int64 = 0) throws -> ThreadBudget {
        try Validate.identifier(threadID, field: "threadId")
        try Validate.count(estimatedTokens, field: "estimatedTokens", max: LedgerLimits.tokensPerRequestMax)
        let budget = try budget(for: threadID)
        if budget.isExhausted || !budget.canConsume(estimatedTokens) {
            throw BudgetExhaustedError(
                threadID: threadID, used: budget.totalTokens, maxTokens: budget.maxTokens,
                requestedTokens: estimatedTokens)
        }
        return budget
    }

    /// The one consume path, run inside a write transaction. `reservationID` names the hold a
    /// settle ends (the caller has checked it).
    func record(_ request: ConsumeRequest, settling reservationID: Int64? = nil, on connection: Connection) throws
        -> ConsumeResult
    {
        let now = configuration.clock()
        let found = try ThreadRow.fetch(request.threadID, at: now, idempotencyKey: request.idempotencyKey, on: connection)
        if found.eventIDForKey != nil, let key = request.idempotencyKey,
            let original = try replay(key: key, of: request, budget: found.budget, on: connection)
        {
            return original
        }
        if found.expiredHolds > 0 {
            try connection.execute(LedgerSQL.insertExpiries, [now, request.threadID])
        }
        let before =
            try found.budget ?? openThread(request.threadID, maxTokens: found.defaultMaxTokens, at: now, on: connection)
        if request.enforce && (before.isExhausted || !before.canConsume(request.tokens)) {
            throw BudgetExhaustedError(
                threadID: request.threadID, used: before.totalTokens, maxTokens: before.maxTokens,
                requestedTokens: request.tokens, heldTokens: before.heldTokens)
        }
        let (promptTotal, promptOverflow) = before.promptTokens.addingReportingOverflow(request.promptTokens)
        let (completionTotal, completionOverflow) = before.completionTokens.addingReportingOverflow(request.completionTokens)
        if promptOverflow || completionOverflow || promptTotal.addingReportingOverflow(completionTotal).overflow {
            throw LedgerError.invalidInput(
                field: "promptTokens", reason: "the thread's total would overflow a 64-bit count")
        }
        let cost = try price(of: request, at: now, pricesVersion: found.pricesVersion, on: connection)
        do {
            try connection.execute(
                LedgerSQL.insertConsume, request.consumeArguments(at: now, costNanos: cost, reservationID: reservationID))
        } catch let error as SQLiteError where error.isCapacityReached {
            throw LedgerError.conflict(error.message)
        }
        let eventID = connection.lastInsertRowID
        var budget = before.with(
            promptTokens: promptTotal, completionTokens: completionTotal, requestCount: before.requestCount + 1,
            triggeredThresholds: before.triggeredThresholds)
        let crossings = try recordCrossings(of: &budget, causedBy: eventID, at: now, on: connection)
        let event = ConsumeEvent(
            id: eventID, timestampMicroseconds: now, threadID: request.threadID,
            promptTokens: request.promptTokens, completionTokens: request.completionTokens,
            idempotencyKey: request.idempotencyKey, usage: request.usage, costNanos: cost, reservationID: reservationID)
        return ConsumeResult(budget: budget, crossedThresholds: crossings, event: event, isReplay: false)
    }

    /// The cost of the request at the price in force at `now`; nil when it names no priced model.
    private func price(
        of request: ConsumeRequest, at now: Int64, pricesVersion: Int64, on connection: Connection
    ) throws -> Int64? {
        guard let model = request.usage.model,
            let price = try priceCache.withLock({ cache in
                try cache.price(forModel: model, at: now, currentVersion: pricesVersion, on: connection)
            })
        else { return nil }
        // Prices set since 0006 keep every cost under the limit; an older, higher price may not.
        guard let cost = Money.cost(promptTokens: request.promptTokens, completionTokens: request.completionTokens, price: price),
            cost <= LedgerLimits.costNanosPerCallMax
        else {
            throw LedgerError.invalidInput(
                field: "promptTokens",
                reason: "the cost of this call at \(model)'s price is above the limit of "
                    + "\(Money.decimalString(nanos: LedgerLimits.costNanosPerCallMax)) USD per call")
        }
        return cost
    }

    /// Appends the open event of a new thread life and returns its empty budget.
    func openThread(_ threadID: String, maxTokens: Int64, at now: Int64, on connection: Connection) throws -> ThreadBudget {
        try connection.execute(LedgerSQL.insertOpen, [now, threadID, maxTokens])
        return ThreadBudget(threadID: threadID, maxTokens: maxTokens)
    }

    /// Records a threshold event for every threshold `budget` reaches that has not fired in this window.
    private func recordCrossings(
        of budget: inout ThreadBudget, causedBy eventID: Int64, at now: Int64, on connection: Connection
    ) throws -> [ThresholdCrossing] {
        let fired = Set(budget.triggeredThresholds)
        var crossings: [ThresholdCrossing] = []
        for threshold in thresholds where !fired.contains(threshold.percent) {
            guard threshold.isReached(used: budget.totalTokens, maxTokens: budget.maxTokens) else { break }
            try connection.execute(
                LedgerSQL.insertThreshold,
                [now, budget.threadID, threshold.percent, threshold.severity, eventID, budget.totalTokens, budget.maxTokens])
            crossings.append(
                ThresholdCrossing(
                    thresholdPercent: threshold.percent, severity: threshold.severity,
                    tokensUsed: budget.totalTokens, maxTokens: budget.maxTokens))
        }
        if !crossings.isEmpty {
            budget = budget.with(
                promptTokens: budget.promptTokens, completionTokens: budget.completionTokens,
                requestCount: budget.requestCount,
                triggeredThresholds: (budget.triggeredThresholds + crossings.map(\.thresholdPercent)).sorted())
        }
        return crossings
    }

    /// The original result of an earlier consume with `key`, or nil when the key is new, with
    /// `budget`: the thread as it stands now (already read by the caller).
    private func replay(
        key: String, of request: ConsumeRequest, budget: ThreadBudget?, on connection: Connection
    ) throws -> ConsumeResult? {
        guard let event = try connection.cachedStatement(LedgerSQL.selectConsumeByKey).fetchOne([key], ConsumeEvent.init(row:))
        else { return nil }
        if event.threadID != request.threadID || event.promptTokens != request.promptTokens
            || event.completionTokens != request.completionTokens
        {
            throw LedgerError.conflict(
                "idempotency key \(key) was already used by event \(event.id) for a different consume "
                    + "(thread \(event.threadID), \(event.promptTokens) prompt + \(event.completionTokens) completion tokens)")
        }
        let crossings = try connection.cachedStatement(LedgerSQL.selectCrossingsOfEvent).fetchAll([event.id]) { row in
            ThresholdCrossing(
                thresholdPercent: try row[0], severity: try row[1], tokensUsed: try row[2], maxTokens: try row[3])
        }
        return ConsumeResult(
            budget: budget ?? ThreadBudget(threadID: request.threadID, maxTokens: 0), crossedThresholds: crossings,
            event: event, isReplay: true)
    }
}

/// A validated consume call.
struct ConsumeRequest: Sendable {
    let threadID: String
    let promptTokens: Int64
    let completionTokens: Int64
    let tokens: Int64
    let idempotencyKey: String?
    let usage: UsageDetails
    let enforce: Bool
    let organizationID: String?
    let userID: String?

    init(
        threadID: String, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?,
        usage: UsageDetails, enforce: Bool
    ) throws {
        try Validate.identifier(threadID, field: "threadId")
        tokens = try Validate.tokenSum(prompt: promptTokens, completion: completionTokens)
        try Validate.optionalIdentifier(idempotencyKey, field: "idempotencyKey")
        try Validate.optionalIdentifier(usage.agentID, field: "agentId")
        try Validate.optionalIdentifier(usage.model, field: "model")
        try Validate.optionalIdentifier(usage.provider, field: "provider")
        try Validate.latency(usage.latencyMilliseconds)
        (organizationID, userID) = try Validate.metadata(usage.metadataJSON)
        self.threadID = threadID
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.idempotencyKey = idempotencyKey
        self.usage = usage
        self.enforce = enforce
    }

    func consumeArguments(at now: Int64, costNanos: Int64?, reservationID: Int64?) -> [any SQLiteBindable] {
        [
            now, threadID, promptTokens, completionTokens, idempotencyKey, usage.agentID, usage.model,
            usage.provider, usage.latencyMilliseconds, usage.metadataJSON, organizationID, userID, costNanos,
            reservationID,
        ]
    }
}

extension ConsumeEvent {
    /// Decodes the columns of `LedgerSQL.consumeEventColumns`.
    init(row: Row) throws {
        id = try row[0]
        timestampMicroseconds = try row[1]
        threadID = try row[2]
        promptTokens = try row[3]
        completionTokens = try row[4]
        idempotencyKey = try row[5]
        usage = UsageDetails(
            agentID: try row[6], model: try row[7], provider: try row[8], latencyMilliseconds: try row[9],
            metadataJSON: try row[10])
        costNanos = try row[11]
        reservationID = try row[12]
    }
}

extension Validate {
    /// Metadata must be a JSON object of bounded size; returns its `org_id` and `user_id` strings.
    static func metadata(_ json: String?) throws -> (organizationID: String?, userID: String?) {
        guard let json else { return (nil, nil) }
        let bytes = json.utf8.count
        if bytes > LedgerLimits.metadataBytesMax {
            throw LedgerError.invalidInput(
                field: "metadata", reason: "is \(bytes) bytes; the limit is \(LedgerLimits.metadataBytesMax) bytes")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else {
            throw LedgerError.invalidInput(field: "metadata", reason: "must be a JSON object")
        }
        func promoted(_ key: String) throws -> String? {
            guard let value = object[key] else { return nil }
            guard let text = value as? String else {
                throw LedgerError.invalidInput(field: "metadata.\(key)", reason: "must be a string")
            }
            try identifier(text, field: "metadata.\(key)")
            return text
        }
        return (try promoted("org_id"), try promoted("user_id"))
    }
}
