import Foundation
internal import LedgerSQLite

extension Ledger {
    /// Records usage on `threadID`, opening the thread at the default max when it is new.
    ///
    /// Records even when the consume overshoots the max, since the tokens were already spent
    /// (as the reference). Returns the budget and the thresholds this consume crossed.
    /// With an `idempotencyKey` already recorded, records nothing and replays the original.
    ///
    /// - Throws: `LedgerError.invalidInput` for bad input (nothing is written),
    ///   `LedgerError.conflict` when the key was used for a different request (any recorded
    ///   field differs: thread, tokens, reservation, agent, model, provider, latency, metadata).
    @discardableResult
    public func consume(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64 = 0,
        idempotencyKey: String? = nil, usage: UsageDetails = .none
    ) throws -> ConsumeResult {
        try consume(
            threadID, promptTokens: promptTokens, completionTokens: completionTokens, idempotencyKey: idempotencyKey,
            usage: usage, checked: false)
    }

    /// Checks the budget and records the usage in one transaction, only if it fits.
    ///
    /// Exact under contention: threads and processes sharing the ledger never push a thread's
    /// total past its max through this call.
    ///
    /// - Throws: `BudgetExhaustedError` when the thread or a scope budget is exhausted or the
    ///   tokens do not fit: nothing of the call is recorded, only a refusal event when it is the
    ///   first refusal of the thread's (or the scope's) window; the errors of `consume`.
    @discardableResult
    public func checkAndConsume(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64 = 0,
        idempotencyKey: String? = nil, usage: UsageDetails = .none
    ) throws -> ConsumeResult {
        try consume(
            threadID, promptTokens: promptTokens, completionTokens: completionTokens, idempotencyKey: idempotencyKey,
            usage: usage, checked: true)
    }

    /// `consume` or, with `checked`, `checkAndConsume`: for surfaces where the mode is a flag of
    /// the request (the CLI's `--enforce`, the REST API's two routes).
    @discardableResult
    public func consume(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64 = 0, idempotencyKey: String? = nil,
        usage: UsageDetails = .none, checked: Bool
    ) throws -> ConsumeResult {
        try submit(
            ConsumeRequest(
                threadID: threadID, promptTokens: promptTokens, completionTokens: completionTokens,
                idempotencyKey: idempotencyKey, usage: usage, enforce: checked))
    }

    /// `consume(_:promptTokens:completionTokens:idempotencyKey:usage:checked:)` for a caller that
    /// must not block its thread (the REST server): it suspends while its write waits for the
    /// group commit, instead of holding a thread (`write(suspending:)`). Same rules, same answer.
    package func consume(
        suspending threadID: String, promptTokens: Int64, completionTokens: Int64, idempotencyKey: String?,
        usage: UsageDetails, checked: Bool
    ) async throws -> ConsumeResult {
        let request = try ConsumeRequest(
            threadID: threadID, promptTokens: promptTokens, completionTokens: completionTokens,
            idempotencyKey: idempotencyKey, usage: usage, enforce: checked)
        return notifying(
            try await writeRecordingRefusal(
                batchable: BatchedConsume(request: request, time: nil),
                suspending: { [self] connection in try record(request, on: connection) }))
    }

    /// Records a validated consume (group-committed) and tells subscribers once it is committed.
    private func submit(_ request: ConsumeRequest) throws -> ConsumeResult {
        notifying(
            try writeRecordingRefusal(batchable: BatchedConsume(request: request, time: nil)) { [self] connection in
                try record(request, on: connection)
            })
    }

    /// `result`, once subscribers have been told of it (a replay tells nobody).
    private func notifying(_ result: ConsumeResult) -> ConsumeResult {
        notify(result)
        return result
    }

    /// Checks that `estimatedTokens` more fit in the thread's budget (opening it when new).
    ///
    /// A read: it refuses no call, so it records no refusal event (checked consumes and holds do).
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
                requestedTokens: estimatedTokens, heldTokens: budget.heldTokens)
        }
        return budget
    }

    /// The one consume path, run inside a write transaction. `reservationID` names the hold a
    /// settle ends (the caller has checked it); `time` is the settle's own reading of the clock,
    /// so that the hold's expiry and the event's timestamp are judged at one instant.
    func record(
        _ request: ConsumeRequest, settling reservationID: Int64? = nil, at time: Int64? = nil, on connection: Connection
    ) throws -> ConsumeResult {
        let now = time ?? configuration.clock()
        let found = try ThreadRow.fetch(request.threadID, at: now, idempotencyKey: request.idempotencyKey, on: connection)
        if found.eventIDForKey != nil, let key = request.idempotencyKey,
            let original = try replay(key: key, of: request, settling: reservationID, budget: found.budget, on: connection)
        {
            return original
        }
        // Every check comes before the first write: a refusal commits its refusal event and
        // nothing else (`writeRecordingRefusal`). The thread's live holds are counted at `now`
        // whether or not the expiries are recorded yet, and a new thread opens empty.
        let before = found.budget ?? ThreadBudget(threadID: request.threadID, maxTokens: found.defaultMaxTokens)
        if request.enforce && (before.isExhausted || !before.canConsume(request.tokens)) {
            throw BudgetExhaustedError(
                threadID: request.threadID, used: before.totalTokens, maxTokens: before.maxTokens,
                requestedTokens: request.tokens, heldTokens: before.heldTokens)
        }
        let cost = try price(of: request, at: now, pricesVersion: found.pricesVersion, on: connection)
        // The scope budgets the call falls under, in this transaction: checked before the insert
        // when enforced, and their thresholds judged after it either way. None to read when the
        // ledger has no scope budget (the thread read says so, in the same transaction).
        let scopeNames = found.hasScopeBudgets ? request.scopes : []
        let scopes =
            scopeNames.isEmpty
            ? [] : try ScopeBudgetSQL.budgets(scopes: scopeNames, at: now, countingHolds: request.enforce, on: connection)
        if request.enforce && !scopes.isEmpty {
            try checkScopes(
                scopes, threadID: request.threadID, tokens: request.tokens, cost: cost, model: request.usage.model)
        }
        if found.expiredHolds > 0 {
            try connection.execute(LedgerSQL.insertExpiries, [now, request.threadID])
        }
        if found.budget == nil {
            _ = try openThread(request.threadID, maxTokens: found.defaultMaxTokens, at: now, on: connection)
        }
        do {
            try connection.execute(
                LedgerSQL.insertConsume, request.consumeArguments(at: now, costNanodollars: cost, reservationID: reservationID))
        } catch let error as SQLiteError where error.isCapacityReached {
            throw LedgerError.conflict(error.message)
        }
        let eventID = connection.lastInsertRowID
        try applyDerivedState(
            of: request, eventID: eventID, at: now, costNanodollars: cost, settling: reservationID,
            underScopes: scopes.isEmpty ? [] : scopeNames, foldMark: found.foldMark, on: connection)
        // Cannot overflow: each call is at most 1e9 and a thread's totals are part of the
        // all-time sums the schema holds under 4e18 (LedgerLimits, migration 0006).
        var budget = before.consuming(request)
        let crossings = try recordCrossings(of: &budget, causedBy: eventID, at: now, on: connection)
        let scopeCrossings =
            scopes.isEmpty
            ? []
            : try recordScopeCrossings(
                scopes, tokens: request.tokens, cost: cost, causedBy: eventID, at: now, on: connection)
        return ConsumeResult(
            budget: budget, crossedThresholds: crossings,
            event: request.event(id: eventID, at: now, costNanodollars: cost, reservationID: reservationID), isReplay: false,
            crossedScopeThresholds: scopeCrossings)
    }

    /// Applies consume `eventID`'s derived state, as migration 0014's `consumes_to_apply_insert`
    /// does for other writers, with only the statements this call needs: the thread's totals,
    /// the scope budgets when one applies (`underScopes`: the call's scopes when
    /// `ScopeBudgetSQL.budgets` found a budget among them in this transaction, else empty), the
    /// hold a settle ends, and the fold when it is due (`FoldMark`, read before the insert: at
    /// every 1,024th event, or at once when its bound no longer proves the capacity kept). Runs
    /// right after the insert, as the trigger did, so the rest of the call and the next write
    /// of the batch read the same state as before.
    ///
    /// - Throws: `LedgerError.conflict` at the ledger's capacity (the caller's transaction or
    ///   savepoint then takes the event back); the connection's errors.
    private func applyDerivedState(
        of request: ConsumeRequest, eventID: Int64, at now: Int64, costNanodollars cost: Int64?,
        settling reservationID: Int64?, underScopes scopes: [String], foldMark: FoldMark, on connection: Connection
    ) throws {
        try connection.execute(
            ConsumeSQL.addToThread, [request.threadID, request.promptTokens, request.completionTokens])
        if !scopes.isEmpty {
            let arguments: [any SQLiteBindable] =
                [now, request.tokens, cost] + (0..<5).map { $0 < scopes.count ? scopes[$0] : String?.none }
            try connection.execute(ConsumeSQL.addToScopeBudgets, arguments)
        }
        if let reservationID {
            try connection.execute(ConsumeSQL.endHold, [reservationID])
        }
        // A fold by an event of this call before the consume (an open, an expiry) moved the mark
        // on; the one read before is then behind, and its bound only the looser: still sound.
        if foldMark.foldIsDue(after: eventID, costNanodollars: cost) {
            try FoldMark.fold(through: eventID, on: connection)
        }
    }

    /// The cost of the request at the price in force at `now`; nil when it names no priced model.
    func price(
        of request: ConsumeRequest, at now: Int64, pricesVersion: Int64, on connection: Connection
    ) throws -> Int64? {
        guard let model = request.usage.model,
            let price = try priceCache.withLock({ cache in
                try cache.price(forModel: model, at: now, currentVersion: pricesVersion, on: connection)
            })
        else { return nil }
        // Prices set since 0006 keep every cost under the limit; an older, higher price may not.
        guard let cost = Money.cost(promptTokens: request.promptTokens, completionTokens: request.completionTokens, price: price),
            cost <= LedgerLimits.costNanodollarsPerCallMax
        else {
            throw LedgerError.invalidInput(
                field: "promptTokens",
                reason: "the cost of this call at \(model)'s price is above the limit of "
                    + "\(Money.decimalString(nanodollars: LedgerLimits.costNanodollarsPerCallMax)) USD per call")
        }
        return cost
    }

    /// Appends the open event of a new thread life and returns its empty budget.
    func openThread(_ threadID: String, maxTokens: Int64, at now: Int64, on connection: Connection) throws -> ThreadBudget {
        try connection.execute(LedgerSQL.insertOpen, [now, threadID, maxTokens])
        return ThreadBudget(threadID: threadID, maxTokens: maxTokens)
    }

    /// Records a threshold event for every threshold `budget` reaches that has not fired in this window.
    func recordCrossings(
        of budget: inout ThreadBudget, causedBy eventID: Int64, at now: Int64, on connection: Connection
    ) throws -> [ThresholdCrossing] {
        let crossings = thresholds.crossings(by: budget)
        for crossing in crossings {
            try connection.execute(
                LedgerSQL.insertThreshold,
                [now, budget.threadID, crossing.thresholdPercent, crossing.severity, eventID, crossing.tokensUsed,
                 crossing.maxTokens])
        }
        budget = budget.firing(crossings)
        return crossings
    }

    /// The original result of an earlier consume with `key`, or nil when the key is new.
    ///
    /// A key names one request: a retry must repeat every recorded field (thread, tokens, the
    /// hold it settles, agent, model, provider, latency, metadata as the same JSON object), or it
    /// is a conflict. Whether the caller asked for the check is not recorded, so it is not
    /// compared. `budget` is the thread as it stands now (already read by the caller).
    ///
    /// - Throws: `LedgerError.conflict` naming the first field that differs.
    private func replay(
        key: String, of request: ConsumeRequest, settling reservationID: Int64?, budget: ThreadBudget?,
        on connection: Connection
    ) throws -> ConsumeResult? {
        guard let event = try connection.cachedStatement(LedgerSQL.selectConsumeByKey).fetchOne([key], ConsumeEvent.init(row:))
        else {
            // The key is taken, by an event that is not a consume (a reserve).
            if let other = try IdempotencySQL.eventUsing(key, on: connection) {
                throw LedgerError.conflict(
                    "idempotency key \(key) was already used by event \(other.id), a \(other.kind), not a consume")
            }
            return nil
        }
        if let field = request.difference(from: event, settling: reservationID) {
            throw LedgerError.conflict(
                "idempotency key \(key) was already used by event \(event.id) for a different consume "
                    + "(its \(field) differs; recorded: thread \(event.threadID), "
                    + "\(event.promptTokens) prompt + \(event.completionTokens) completion tokens)")
        }
        let crossings = try connection.cachedStatement(LedgerSQL.selectCrossingsOfEvent).fetchAll([event.id]) { row in
            ThresholdCrossing(
                thresholdPercent: try row[0], severity: try row[1], tokensUsed: try row[2], maxTokens: try row[3])
        }
        let replayed = try replayBudget(of: event, crossings: crossings, current: budget, on: connection)
        return ConsumeResult(budget: replayed, crossedThresholds: crossings, event: event, isReplay: true)
    }

    /// The budget a replay answers with: the thread as it stands now while the life that recorded
    /// `event` goes on; once that life has ended (cleanup), the budget as the original left it,
    /// rebuilt from that life's events (there is no "now" for it, and a made-up budget would lie).
    private func replayBudget(
        of event: ConsumeEvent, crossings: [ThresholdCrossing], current: ThreadBudget?, on connection: Connection
    ) throws -> ThreadBudget {
        if let current,
            let opened = try connection.cachedStatement(LedgerSQL.selectOpenedEventID)
                .fetchOne([event.threadID], { try $0[0] as Int64 }),
            opened < event.id
        {
            return current
        }
        return try RecordedBudget.rebuild(after: event, crossings: crossings, on: connection)
    }
}

/// A thread's budget right after one of its consumes, rebuilt from the events of its life.
///
/// Only a replay whose thread life has ended needs it. It walks the thread's events from the
/// consume back to the start of the life, once: the window's consumes and crossings (a crossing
/// counts unless a later limit of the window re-armed it, as in migration 0007), the max then,
/// and the holds live at the consume's time.
package enum RecordedBudget {
    static func rebuild(after event: ConsumeEvent, crossings: [ThresholdCrossing], on connection: Connection) throws
        -> ThreadBudget
    {
        var rows = try connection.prepare(LedgerSQL.selectThreadEventsBackFrom).rows([event.id, event.threadID])
        return try rebuild(after: event, crossings: crossings) {
            guard let row = try rows.next() else { return nil }
            return LifeEvent(
                id: try row[0], kind: try row[1], promptTokens: try row[2], completionTokens: try row[3],
                maxTokens: try row[4], thresholdPercent: try row[5], heldTokens: try row[6], expiresAtMicroseconds: try row[7],
                reservationID: try row[8])
        }
    }

    /// The columns of `LedgerSQL.selectThreadEventsBackFrom` that the walk reads.
    package struct LifeEvent {
        let id: Int64
        let kind: String
        let promptTokens: Int64
        let completionTokens: Int64
        let maxTokens: Int64?
        let thresholdPercent: Int?
        let heldTokens: Int64?
        let expiresAtMicroseconds: Int64?
        let reservationID: Int64?

        package init(
            id: Int64, kind: String, promptTokens: Int64, completionTokens: Int64, maxTokens: Int64?,
            thresholdPercent: Int?, heldTokens: Int64?, expiresAtMicroseconds: Int64?, reservationID: Int64?
        ) {
            self.id = id
            self.kind = kind
            self.promptTokens = promptTokens
            self.completionTokens = completionTokens
            self.maxTokens = maxTokens
            self.thresholdPercent = thresholdPercent
            self.heldTokens = heldTokens
            self.expiresAtMicroseconds = expiresAtMicroseconds
            self.reservationID = reservationID
        }
    }

    /// The walk, over the thread's events from the consume back (`next` gives them newest first,
    /// nil at the end), whatever store they come from.
    package static func rebuild(
        after event: ConsumeEvent, crossings: [ThresholdCrossing], next: () throws -> LifeEvent?
    ) throws -> ThreadBudget {
        var promptTokens: Int64 = 0
        var completionTokens: Int64 = 0
        var requestCount: Int64 = 0
        var maxTokens: Int64?
        var inWindow = true
        // Crossings before the consume, and limits of the window with the tokens spent after them.
        var earlierCrossings: [(id: Int64, percent: Int)] = []
        var limits: [(id: Int64, maxTokens: Int64, spentAfter: Int64)] = []
        var endedHolds: Set<Int64> = []
        var heldTokens: Int64 = 0
        walk: while let row = try next() {
            let id = row.id
            switch row.kind {
            case "cleanup":
                break walk
            case "consume":
                if inWindow {
                    promptTokens += row.promptTokens
                    completionTokens += row.completionTokens
                    requestCount += 1
                }
                if let settled = row.reservationID { endedHolds.insert(settled) }
            case "open":
                maxTokens = maxTokens ?? row.maxTokens
                break walk
            case "limit":
                guard let limit = row.maxTokens else { break }
                maxTokens = maxTokens ?? limit
                if inWindow { limits.append((id, limit, promptTokens + completionTokens)) }
            case "reset":
                inWindow = false
            case "threshold":
                if inWindow, let percent = row.thresholdPercent { earlierCrossings.append((id, percent)) }
            case "release", "expire":
                if let ended = row.reservationID { endedHolds.insert(ended) }
            case "reserve":
                if !endedHolds.contains(id), let expiry = row.expiresAtMicroseconds, expiry > event.timestampMicroseconds {
                    heldTokens += row.heldTokens ?? 0
                }
            default:
                break
            }
        }
        guard let maxTokens else {
            preconditionFailure("the life of thread \(event.threadID) before event \(event.id) has no open or limit event")
        }
        let total = promptTokens + completionTokens
        let stillCrossed = earlierCrossings.filter { crossing in
            !limits.contains { limit in
                limit.id > crossing.id
                    && !BudgetThreshold.isReached(
                        percent: crossing.percent, used: total - limit.spentAfter, maxTokens: limit.maxTokens)
            }
        }
        let triggered = Set(stillCrossed.map(\.percent) + crossings.map(\.thresholdPercent)).sorted()
        return ThreadBudget(
            threadID: event.threadID, maxTokens: maxTokens, promptTokens: promptTokens,
            completionTokens: completionTokens, requestCount: requestCount, triggeredThresholds: triggered,
            heldTokens: heldTokens)
    }
}

/// A validated consume call (`package`: every store validates and compares requests by it).
package struct ConsumeRequest: Sendable {
    package let threadID: String
    package let promptTokens: Int64
    package let completionTokens: Int64
    package let tokens: Int64
    package let idempotencyKey: String?
    package let usage: UsageDetails
    package let enforce: Bool
    package let organizationID: String?
    package let userID: String?

    package init(
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
        // Checked where it was made (`Metadata`): the indexed members are read, not parsed.
        organizationID = usage.metadata?.organizationID
        userID = usage.metadata?.userID
        self.threadID = threadID
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.idempotencyKey = idempotencyKey
        self.usage = usage
        self.enforce = enforce
    }

    /// The first field in which this request differs from `event`, recorded under the same
    /// idempotency key; nil when it is the same request. Metadata compares as JSON objects, so a
    /// client may write its keys in another order.
    package func difference(from event: ConsumeEvent, settling reservationID: Int64?) -> String? {
        let recorded = event.usage
        if threadID != event.threadID { return "thread" }
        if promptTokens != event.promptTokens { return "prompt tokens" }
        if completionTokens != event.completionTokens { return "completion tokens" }
        if reservationID != event.reservationID { return "reservation" }
        if usage.agentID != recorded.agentID { return "agent" }
        if usage.model != recorded.model { return "model" }
        if usage.provider != recorded.provider { return "provider" }
        if usage.latencyMilliseconds != recorded.latencyMilliseconds { return "latency" }
        if !Self.sameJSONObject(usage.metadata?.json, recorded.metadata?.json) { return "metadata" }
        return nil
    }

    /// Whether two metadata texts hold the same JSON object (both absent counts as the same).
    ///
    /// Only a retry under a recorded idempotency key gets here, and only when its text differs
    /// from the recorded one byte for byte (keys in another order): then both are parsed, since
    /// the recorded text is all a row keeps of the object.
    package static func sameJSONObject(_ left: String?, _ right: String?) -> Bool {
        guard let left, let right else { return left == nil && right == nil }
        if left == right { return true }
        func canonical(_ text: String) -> Data? {
            guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) else { return nil }
            return try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        }
        guard let leftCanonical = canonical(left) else { return false }
        return leftCanonical == canonical(right)
    }

    /// The scopes the call falls under (`BudgetScope.candidates`).
    package var scopes: [String] {
        BudgetScope.candidates(
            agentID: usage.agentID, model: usage.model, organizationID: organizationID, userID: userID)
    }

    /// The event this call is recorded as, once inserted as event `id`.
    package func event(id: Int64, at now: Int64, costNanodollars: Int64?, reservationID: Int64?) -> ConsumeEvent {
        ConsumeEvent(
            id: id, timestampMicroseconds: now, threadID: threadID, promptTokens: promptTokens,
            completionTokens: completionTokens, idempotencyKey: idempotencyKey, usage: usage,
            costNanodollars: costNanodollars, reservationID: reservationID)
    }

    func consumeArguments(at now: Int64, costNanodollars: Int64?, reservationID: Int64?) -> [any SQLiteBindable] {
        [
            now, threadID, promptTokens, completionTokens, idempotencyKey, usage.agentID, usage.model,
            usage.provider, usage.latencyMilliseconds, usage.metadata?.json, organizationID, userID, costNanodollars,
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
            metadata: .recorded(try row[10], organizationID: try row[13], userID: try row[14]))
        costNanodollars = try row[11]
        reservationID = try row[12]
    }
}
