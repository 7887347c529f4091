import BudgetLedger
import Foundation
import PostgresNIO

extension PostgresQuery {
    /// `text` with its `$n` parameters bound by `bind`, in order.
    static func sql(_ text: String, _ bind: (inout PostgresBindings) -> Void) -> PostgresQuery {
        var bindings = PostgresBindings()
        bind(&bindings)
        return PostgresQuery(unsafeSQL: text, binds: bindings)
    }
}

/// A thread's row as the PostgreSQL store reads it, under the thread's lock (`ThreadRow` on SQLite).
struct PostgresThreadRow: Sendable {
    let budget: ThreadBudget?
    let defaultMaxTokens: Int64
    let expiredHolds: Int64
    let eventIDForKey: Int64?
    let openedEventID: Int64?

    static func parseThresholds(_ list: String?) -> [Int] {
        guard let list else { return [] }
        return list.split(separator: ",").compactMap { Int($0) }.sorted()
    }
}

extension PostgresLedger {
    /// Records usage on `threadID`, opening the thread at the default max when it is new
    /// (`Ledger.consume`: the same rules, results and errors).
    @discardableResult
    public func consume(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64 = 0,
        idempotencyKey: String? = nil, usage: UsageDetails = .none
    ) async throws -> ConsumeResult {
        try await consume(
            threadID, promptTokens: promptTokens, completionTokens: completionTokens, idempotencyKey: idempotencyKey,
            usage: usage, checked: false)
    }

    /// Checks the budget and records the usage in one transaction, only if it fits
    /// (`Ledger.checkAndConsume`): exact across connections and servers sharing the database.
    ///
    /// - Throws: `BudgetExhaustedError` when the thread or a scope budget it falls under is
    ///   exhausted or the tokens do not fit: nothing of the call is recorded, only a refusal event
    ///   when it is the first refusal of its window (the thread's or the scope's); the errors of `consume`.
    @discardableResult
    public func checkAndConsume(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64 = 0,
        idempotencyKey: String? = nil, usage: UsageDetails = .none
    ) async throws -> ConsumeResult {
        try await consume(
            threadID, promptTokens: promptTokens, completionTokens: completionTokens, idempotencyKey: idempotencyKey,
            usage: usage, checked: true)
    }

    /// `consume` or, with `checked`, `checkAndConsume`.
    @discardableResult
    public func consume(
        _ threadID: String, promptTokens: Int64, completionTokens: Int64 = 0, idempotencyKey: String? = nil,
        usage: UsageDetails = .none, checked: Bool
    ) async throws -> ConsumeResult {
        let request = try ConsumeRequest(
            threadID: threadID, promptTokens: promptTokens, completionTokens: completionTokens,
            idempotencyKey: idempotencyKey, usage: usage, enforce: checked)
        return try await writeRecordingRefusal { [self] connection in
            try await record(request, on: connection)
        }
    }

    /// Takes the thread's lock for the rest of the transaction: the one place writers of a
    /// thread meet. The row is created first so that even a thread's first write locks it.
    ///
    /// The same statement takes the usage window's lock, shared (`resetUsageWindow` takes it
    /// exclusive), so that a usage reset and a consume are ordered alike by id and by window: a
    /// consume either commits before the reset's event is drawn (a smaller id, the old window) or
    /// reads the window after the reset committed (a larger id, the new one). Without it a
    /// consume racing a reset could take a larger id yet count in the old window, and `verify`,
    /// which recomputes the windows in id order, would disagree.
    func lockThread(_ threadID: String, on connection: PostgresConnection) async throws {
        try await connection.execute(
            "INSERT INTO thread_locks (thread_id) VALUES (\(threadID)) ON CONFLICT (thread_id) DO NOTHING", logger: logger)
        try await connection.execute(
            """
            SELECT thread_id, pg_advisory_xact_lock_shared(\(PostgresSQL.usageWindowLockKey))
            FROM thread_locks WHERE thread_id = \(threadID) FOR UPDATE
            """, logger: logger)
    }

    /// The thread's row; call under its lock.
    func fetchThread(
        _ threadID: String, at now: Int64, idempotencyKey: String? = nil, on connection: PostgresConnection
    ) async throws -> PostgresThreadRow {
        let query = PostgresQuery.sql(PostgresSQL.selectThreadAndDefault) {
            $0.append(threadID)
            $0.append(now)
            $0.append(idempotencyKey)
        }
        guard
            let row = try await connection.fetchOne(
                query, as: (Int64?, Int64?, Int64?, Int64?, String?, Int64, Int64, Int64, Int64?, Int64?).self,
                logger: logger)
        else {
            preconditionFailure("ledger_settings has no row: the schema is broken")
        }
        let budget = row.0.map { maxTokens in
            ThreadBudget(
                threadID: threadID, maxTokens: maxTokens, promptTokens: row.1 ?? 0, completionTokens: row.2 ?? 0,
                requestCount: row.3 ?? 0, triggeredThresholds: PostgresThreadRow.parseThresholds(row.4), heldTokens: row.6)
        }
        return PostgresThreadRow(
            budget: budget, defaultMaxTokens: row.5, expiredHolds: row.7, eventIDForKey: row.8, openedEventID: row.9)
    }

    /// The one consume path, inside a write transaction (`Ledger.record`). `reservationID` names
    /// the hold a settle ends (checked by the caller, under the thread's lock); `time` is the
    /// settle's own reading of the clock.
    func record(
        _ request: ConsumeRequest, settling reservationID: Int64? = nil, at time: Int64? = nil,
        on connection: PostgresConnection
    ) async throws -> ConsumeResult {
        let now = time ?? configuration.clock()
        try await lockThread(request.threadID, on: connection)
        let found = try await fetchThread(request.threadID, at: now, idempotencyKey: request.idempotencyKey, on: connection)
        if found.eventIDForKey != nil, let key = request.idempotencyKey,
            let original = try await replay(key: key, of: request, settling: reservationID, found: found, on: connection)
        {
            return original
        }
        // Every check comes before the first write but the thread's lock row: a refusal
        // commits its refusal event and nothing else (`writeRecordingRefusal`). The
        // thread's live holds are counted at `now` whether or not the expiries are recorded yet,
        // and a new thread opens empty.
        let before = found.budget ?? ThreadBudget(threadID: request.threadID, maxTokens: found.defaultMaxTokens)
        if request.enforce && (before.isExhausted || !before.canConsume(request.tokens)) {
            throw BudgetExhaustedError(
                threadID: request.threadID, used: before.totalTokens, maxTokens: before.maxTokens,
                requestedTokens: request.tokens, heldTokens: before.heldTokens)
        }
        let cost = try await price(of: request, at: now, on: connection)
        // The scope budgets the call falls under, locked after the thread (see
        // `lockScopeBudgets`): checked before the insert when enforced, and their thresholds
        // judged after it either way.
        let scopes = try await lockScopeBudgets(request.scopes, at: now, countingHolds: request.enforce, on: connection)
        if request.enforce && !scopes.isEmpty {
            try ScopeBudgetRules.check(
                scopes, threadID: request.threadID, tokens: request.tokens, cost: cost, model: request.usage.model)
        }
        if found.expiredHolds > 0 {
            try await connection.execute(.sql(PostgresSQL.insertExpiries) { $0.append(now); $0.append(request.threadID) }, logger: logger)
        }
        if found.budget == nil {
            _ = try await openThread(request.threadID, maxTokens: found.defaultMaxTokens, at: now, on: connection)
        }
        let usage = request.usage
        let inserted = try await connection.fetchOne(
            """
            INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, idempotency_key,
                                agent_id, model, provider, latency_ms, metadata, org_id, user_id, cost_nanos,
                                reservation_id)
            VALUES (\(now), 'consume', \(request.threadID), \(request.promptTokens), \(request.completionTokens),
                    \(request.idempotencyKey), \(usage.agentID), \(usage.model), \(usage.provider),
                    \(usage.latencyMilliseconds), \(usage.metadata?.json), \(request.organizationID), \(request.userID),
                    \(cost), \(reservationID))
            RETURNING id
            """, as: Int64.self, logger: logger)
        guard let eventID = inserted else { preconditionFailure("INSERT … RETURNING gave no row") }
        var budget = before.consuming(request)
        // Asserted in pairs: through the checked path, spent plus held never passes the max.
        assert(!request.enforce || budget.totalTokens.saturatingAdd(budget.heldTokens) <= budget.maxTokens)
        assert(
            !request.enforce
                || scopes.allSatisfy { scope in
                    scope.maxTokens.map { scope.spentTokens.saturatingAdd(scope.heldTokens).saturatingAdd(request.tokens) <= $0 }
                        ?? true
                })
        let crossings = try await recordCrossings(of: &budget, causedBy: eventID, at: now, on: connection)
        let scopeCrossings =
            scopes.isEmpty
            ? []
            : try await recordScopeCrossings(
                scopes, tokens: request.tokens, cost: cost, causedBy: eventID, at: now, on: connection)
        return ConsumeResult(
            budget: budget, crossedThresholds: crossings,
            event: request.event(id: eventID, at: now, costNanodollars: cost, reservationID: reservationID), isReplay: false,
            crossedScopeThresholds: scopeCrossings)
    }

    /// Appends the open event of a new thread life and returns its empty budget.
    func openThread(_ threadID: String, maxTokens: Int64, at now: Int64, on connection: PostgresConnection) async throws
        -> ThreadBudget
    {
        try await connection.execute(
            "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (\(now), 'open', \(threadID), \(maxTokens))",
            logger: logger)
        return ThreadBudget(threadID: threadID, maxTokens: maxTokens)
    }

    /// The cost of the request at the price in force at `now`; nil when it names no priced model.
    func price(of request: ConsumeRequest, at now: Int64, on connection: PostgresConnection) async throws -> Int64? {
        guard let model = request.usage.model, let price = try await modelPrice(model, at: now, on: connection) else {
            return nil
        }
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

    /// The price in force for `model` (normalised) at `now`, or nil; waits for a `setPrice` in flight.
    func modelPrice(_ model: String, at now: Int64, on connection: PostgresConnection) async throws -> ModelPrice? {
        // Shared with other consumes, exclusive with `setPrice`; taken before the price is read,
        // so that the read's snapshot sees a price committed while it waited.
        try await connection.execute("SELECT pg_advisory_xact_lock_shared(\(PostgresSQL.pricesLockKey))", logger: logger)
        let query = PostgresQuery.sql(PostgresSQL.selectPriceForModel) {
            $0.append(ModelName.normalized(model))
            $0.append(now)
        }
        guard
            let row = try await connection.fetchOne(query, as: (String, Int64, Int64, Int64, String).self, logger: logger)
        else { return nil }
        return ModelPrice(
            modelPattern: row.0, promptNanodollarsPerToken: row.1, completionNanodollarsPerToken: row.2,
            effectiveFromMicroseconds: row.3, source: row.4)
    }

    /// Records a threshold event for every threshold `budget` reaches that has not fired in this window.
    private func recordCrossings(
        of budget: inout ThreadBudget, causedBy eventID: Int64, at now: Int64, on connection: PostgresConnection
    ) async throws -> [ThresholdCrossing] {
        let crossings = thresholds.crossings(by: budget)
        for crossing in crossings {
            try await connection.execute(
                """
                INSERT INTO events (timestamp_us, kind, thread_id, threshold_percent, severity, caused_by, tokens_used,
                                    max_tokens)
                VALUES (\(now), 'threshold', \(budget.threadID), \(crossing.thresholdPercent), \(crossing.severity),
                        \(eventID), \(crossing.tokensUsed), \(crossing.maxTokens))
                """, logger: logger)
        }
        budget = budget.firing(crossings)
        return crossings
    }

    /// The original result of an earlier consume with `key` (`Ledger.replay`): the same
    /// comparison, the same conflict, the same budget (now, or rebuilt once its life has ended).
    private func replay(
        key: String, of request: ConsumeRequest, settling reservationID: Int64?, found: PostgresThreadRow,
        on connection: PostgresConnection
    ) async throws -> ConsumeResult? {
        guard let event = try await consumeEvent(key: key, on: connection) else {
            // The key is taken by an event that is not a consume (a reserve): the conflict SQLite names.
            if let other = try await connection.fetchOne(
                "SELECT id, kind FROM events WHERE idempotency_key = \(key)", as: (Int64, String).self, logger: logger)
            {
                throw LedgerError.conflict(
                    "idempotency key \(key) was already used by event \(other.0), a \(other.1), not a consume")
            }
            return nil
        }
        if let field = request.difference(from: event, settling: reservationID) {
            throw LedgerError.conflict(
                "idempotency key \(key) was already used by event \(event.id) for a different consume "
                    + "(its \(field) differs; recorded: thread \(event.threadID), "
                    + "\(event.promptTokens) prompt + \(event.completionTokens) completion tokens)")
        }
        var crossings: [ThresholdCrossing] = []
        let rows = try await connection.query(
            """
            SELECT threshold_percent, severity, tokens_used, max_tokens
            FROM events WHERE caused_by = \(event.id) AND kind = 'threshold' ORDER BY threshold_percent
            """, logger: logger)
        for try await (percent, severity, used, maxTokens) in rows.decode((Int32, String, Int64, Int64).self) {
            crossings.append(
                ThresholdCrossing(thresholdPercent: Int(percent), severity: severity, tokensUsed: used, maxTokens: maxTokens))
        }
        let budget: ThreadBudget
        if let current = found.budget, let opened = found.openedEventID, opened < event.id {
            budget = current
        } else {
            budget = try await rebuiltBudget(after: event, crossings: crossings, on: connection)
        }
        return ConsumeResult(budget: budget, crossedThresholds: crossings, event: event, isReplay: true)
    }

    /// The consume recorded under `key`, if any; a reserve's key finds none (SQLite's
    /// `LedgerSQL.selectConsumeByKey`): a reserve event read as a consume would replay a call
    /// that never happened.
    func consumeEvent(key: String, on connection: PostgresConnection) async throws -> ConsumeEvent? {
        let query = PostgresQuery.sql(
            "SELECT \(PostgresSQL.consumeEventColumns) FROM events WHERE idempotency_key = $1 AND kind = 'consume'"
        ) {
            $0.append(key)
        }
        let columns = (
            Int64, Int64, String, Int64, Int64, String?, String?, String?, String?, Int64?, String?, Int64?, Int64?,
            String?, String?
        ).self
        guard let row = try await connection.fetchOne(query, as: columns, logger: logger) else { return nil }
        return ConsumeEvent(
            id: row.0, timestampMicroseconds: row.1, threadID: row.2, promptTokens: row.3, completionTokens: row.4,
            idempotencyKey: row.5,
            usage: UsageDetails(
                agentID: row.6, model: row.7, provider: row.8, latencyMilliseconds: row.9,
                metadata: .recorded(row.10, organizationID: row.13, userID: row.14)),
            costNanodollars: row.11, reservationID: row.12)
    }

    /// The budget as the consume `event` left it, rebuilt by the domain's walk (`RecordedBudget`)
    /// over the thread's events back from it.
    private func rebuiltBudget(
        after event: ConsumeEvent, crossings: [ThresholdCrossing], on connection: PostgresConnection
    ) async throws -> ThreadBudget {
        let query = PostgresQuery.sql(PostgresSQL.selectThreadEventsBackFrom) {
            $0.append(event.id)
            $0.append(event.threadID)
        }
        var events: [RecordedBudget.LifeEvent] = []
        let rows = try await connection.query(query, logger: logger)
        let columns = (Int64, String, Int64, Int64, Int64?, Int32?, Int64?, Int64?, Int64?).self
        var reachedLifeStart = false
        for try await row in rows.decode(columns) where !reachedLifeStart {
            events.append(
                RecordedBudget.LifeEvent(
                    id: row.0, kind: row.1, promptTokens: row.2, completionTokens: row.3, maxTokens: row.4,
                    thresholdPercent: row.5.map(Int.init), heldTokens: row.6, expiresAtMicroseconds: row.7,
                    reservationID: row.8))
            // The walk stops at the life's start (the rest of the rows are read and dropped).
            reachedLifeStart = row.1 == "open" || row.1 == "cleanup"
        }
        var remaining = events[...]
        return try RecordedBudget.rebuild(after: event, crossings: crossings) { remaining.popFirst() }
    }
}
