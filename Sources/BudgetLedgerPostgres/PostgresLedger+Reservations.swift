import BudgetLedger
import PostgresNIO

extension PostgresLedger {
    /// Holds `tokens` against the thread's budget for `ttlSeconds`, opening the thread when new
    /// (`Ledger.reserve`: the same rules, results and errors). The hold counts against every
    /// scope budget the call falls under; under a dollar budget at most what its tokens can
    /// cost, so a model without a price cannot be held there.
    ///
    /// - Throws: `BudgetExhaustedError` when it does not fit (nothing of the call is recorded;
    ///   the first refusal of a window, the thread's or a scope's, is recorded as a refusal event);
    ///   `LedgerError.invalidInput` for tokens < 1, a ttl outside 1 s…7 days, or bad usage fields;
    ///   `LedgerError.conflict` when `idempotencyKey` was used by another request.
    ///
    /// With an `idempotencyKey` already recorded by the same reserve (thread, tokens, agent, model
    /// and metadata), records nothing and answers with the original hold (`isReplay`), as SQLite's.
    public func reserve(
        _ threadID: String, tokens: Int64, ttlSeconds: Int64 = Ledger.defaultHoldSeconds, usage: UsageDetails = .none,
        idempotencyKey: String? = nil
    ) async throws -> ReserveResult {
        try Validate.identifier(threadID, field: "threadId")
        try Validate.optionalIdentifier(idempotencyKey, field: "idempotencyKey")
        try Validate.optionalIdentifier(usage.agentID, field: "agentId")
        try Validate.optionalIdentifier(usage.model, field: "model")
        let (organizationID, userID) = (usage.metadata?.organizationID, usage.metadata?.userID)
        guard (1...LedgerLimits.tokensPerRequestMax).contains(tokens) else {
            throw LedgerError.invalidInput(
                field: "tokens", reason: "must be 1…\(LedgerLimits.tokensPerRequestMax) (got \(tokens))")
        }
        guard (1...LedgerLimits.holdSecondsMax).contains(ttlSeconds) else {
            throw LedgerError.invalidInput(
                field: "ttlSeconds", reason: "must be 1…\(LedgerLimits.holdSecondsMax) seconds (got \(ttlSeconds))")
        }
        return try await writeRecordingRefusal { [self] connection in
            let now = configuration.clock()
            try await lockThread(threadID, on: connection)
            let found = try await fetchThread(threadID, at: now, idempotencyKey: idempotencyKey, on: connection)
            if found.eventIDForKey != nil, let key = idempotencyKey {
                return try await replayReserve(
                    key: key, threadID: threadID, tokens: tokens, usage: usage, budget: found.budget, on: connection)
            }
            // Checks first, writes after (but the thread's lock row): a refusal commits
            // its refusal event and nothing else (`writeRecordingRefusal`).
            let before = found.budget ?? ThreadBudget(threadID: threadID, maxTokens: found.defaultMaxTokens)
            if before.isExhausted || !before.canConsume(tokens) {
                throw BudgetExhaustedError(
                    threadID: threadID, used: before.totalTokens, maxTokens: before.maxTokens, requestedTokens: tokens,
                    heldTokens: before.heldTokens)
            }
            let heldCost = try await mostCost(of: tokens, model: usage.model, at: now, on: connection)
            // The scope rows are locked after the thread's, in `BudgetScope.candidates` order.
            let candidates = BudgetScope.candidates(
                agentID: usage.agentID, model: usage.model, organizationID: organizationID, userID: userID)
            let scopes = try await lockScopeBudgets(candidates, at: now, countingHolds: true, on: connection)
            try ScopeBudgetRules.check(scopes, threadID: threadID, tokens: tokens, cost: heldCost, model: usage.model)
            if found.expiredHolds > 0 {
                try await connection.execute(.sql(PostgresSQL.insertExpiries) { $0.append(now); $0.append(threadID) }, logger: logger)
            }
            if found.budget == nil {
                _ = try await openThread(threadID, maxTokens: found.defaultMaxTokens, at: now, on: connection)
            }
            let expiresAt = now + ttlSeconds * 1_000_000
            let inserted = try await connection.fetchOne(
                """
                INSERT INTO events (timestamp_us, kind, thread_id, held_tokens, expires_at_us, agent_id, model, metadata,
                                    org_id, user_id, cost_nanos, idempotency_key)
                VALUES (\(now), 'reserve', \(threadID), \(tokens), \(expiresAt), \(usage.agentID), \(usage.model),
                        \(usage.metadata?.json), \(organizationID), \(userID), \(heldCost), \(idempotencyKey))
                RETURNING id
                """, as: Int64.self, logger: logger)
            guard let reservationID = inserted else { preconditionFailure("INSERT … RETURNING gave no row") }
            let budget = ThreadBudget(
                threadID: threadID, maxTokens: before.maxTokens, promptTokens: before.promptTokens,
                completionTokens: before.completionTokens, requestCount: before.requestCount,
                triggeredThresholds: before.triggeredThresholds, heldTokens: before.heldTokens.saturatingAdd(tokens))
            return ReserveResult(
                reservation: Reservation(id: reservationID, threadID: threadID, tokens: tokens, expiresAtMicroseconds: expiresAt),
                budget: budget)
        }
    }

    /// The original hold of a reserve retried with `key` (`Ledger.replayReserve`): the same
    /// thread, tokens, agent, model and metadata, or a conflict naming the first field that differs.
    private func replayReserve(
        key: String, threadID: String, tokens: Int64, usage: UsageDetails, budget: ThreadBudget?,
        on connection: PostgresConnection
    ) async throws -> ReserveResult {
        guard
            let original = try await connection.fetchOne(
                """
                SELECT id, thread_id, held_tokens, expires_at_us, agent_id, model, metadata
                FROM events WHERE idempotency_key = \(key) AND kind = 'reserve'
                """, as: (Int64, String, Int64, Int64, String?, String?, String?).self, logger: logger)
        else {
            let other = try await connection.fetchOne(
                "SELECT id, kind FROM events WHERE idempotency_key = \(key)", as: (Int64, String).self, logger: logger)
            throw LedgerError.conflict(
                "idempotency key \(key) was already used by event \(other?.0 ?? 0), a \(other?.1 ?? "write"), not a reserve")
        }
        let differs: String? =
            if original.1 != threadID { "thread" }
            else if original.2 != tokens { "tokens" }
            else if original.4 != usage.agentID { "agent" }
            else if original.5 != usage.model { "model" }
            else if !ConsumeRequest.sameJSONObject(original.6, usage.metadata?.json) { "metadata" }
            else { nil }
        if let differs {
            throw LedgerError.conflict(
                "idempotency key \(key) was already used by reserve event \(original.0) for a different hold (its "
                    + "\(differs) differs; recorded: thread \(original.1), \(original.2) tokens)")
        }
        let reservation = Reservation(id: original.0, threadID: threadID, tokens: tokens, expiresAtMicroseconds: original.3)
        return ReserveResult(
            reservation: reservation, budget: budget ?? ThreadBudget(threadID: threadID, maxTokens: 0), isReplay: true)
    }

    /// The most `tokens` can cost with `model` at `now`: every token at the higher of its two rates.
    private func mostCost(of tokens: Int64, model: String?, at now: Int64, on connection: PostgresConnection) async throws
        -> Int64?
    {
        guard let model, let price = try await modelPrice(model, at: now, on: connection) else { return nil }
        return try price.mostCost(ofHeldTokens: tokens, model: model)
    }

    /// Records what a held call spent and ends the hold, in one transaction (`Ledger.settle`).
    ///
    /// - Throws: `LedgerError.reservationNotFound` for an unknown id; `LedgerError.conflict` when
    ///   the hold was already settled or released, or its thread was cleaned up.
    @discardableResult
    public func settle(
        _ reservationID: Int64, promptTokens: Int64, completionTokens: Int64 = 0, idempotencyKey: String? = nil,
        usage: UsageDetails = .none
    ) async throws -> SettleResult {
        try await write { [self] connection in
            let state = try await lockedReservation(reservationID, on: connection)
            let request = try ConsumeRequest(
                threadID: state.reservation.threadID, promptTokens: promptTokens, completionTokens: completionTokens,
                idempotencyKey: idempotencyKey, usage: usage, enforce: false)
            if let key = idempotencyKey, try await consumeEvent(key: key, on: connection) != nil {
                // A retried settle: replay the original, or the key's conflict.
                let replayed = try await record(request, settling: reservationID, on: connection)
                let expired = state.reservation.expiresAtMicroseconds <= replayed.event.timestampMicroseconds
                return SettleResult(consume: replayed, reservation: state.reservation, holdHadExpired: expired)
            }
            try state.ending.checkSettleable(reservationID, threadID: state.reservation.threadID)
            let now = configuration.clock()
            let expired = state.ending == .expired || state.reservation.expiresAtMicroseconds <= now
            let consume = try await record(request, settling: reservationID, at: now, on: connection)
            let budget =
                try await fetchThread(state.reservation.threadID, at: now, on: connection).budget ?? consume.budget
            let settled = ConsumeResult(
                budget: budget, crossedThresholds: consume.crossedThresholds, event: consume.event, isReplay: false)
            return SettleResult(consume: settled, reservation: state.reservation, holdHadExpired: expired)
        }
    }

    /// Ends a hold with nothing spent (`Ledger.release`) and returns the thread's budget.
    ///
    /// - Throws: `LedgerError.reservationNotFound` for an unknown id; `LedgerError.conflict` when the
    ///   hold is no longer live.
    @discardableResult
    public func release(_ reservationID: Int64) async throws -> ThreadBudget {
        try await write { [self] connection in
            let state = try await lockedReservation(reservationID, on: connection)
            let now = configuration.clock()
            let threadID = state.reservation.threadID
            try state.ending.checkReleasable(state.reservation, at: now)
            try await connection.execute(
                """
                INSERT INTO events (timestamp_us, kind, thread_id, reservation_id)
                VALUES (\(now), 'release', \(threadID), \(reservationID))
                """, logger: logger)
            guard let budget = try await fetchThread(threadID, at: now, on: connection).budget else {
                preconditionFailure("thread \(threadID) of a live hold is not open")
            }
            return budget
        }
    }

    /// Live holds (not settled, released or expired), of one thread or of all, oldest first.
    public func holds(_ threadID: String? = nil) async throws -> [Reservation] {
        try Validate.optionalIdentifier(threadID, field: "threadId")
        let now = configuration.clock()
        return try await read { [logger] connection in
            var holds: [Reservation] = []
            let rows = try await connection.query(
                """
                SELECT reservation_id, thread_id, tokens, expires_at_us FROM holds
                WHERE expires_at_us > \(now) AND (\(threadID)::text IS NULL OR thread_id = \(threadID))
                ORDER BY reservation_id
                """, logger: logger)
            for try await (id, thread, tokens, expiresAt) in rows.decode((Int64, String, Int64, Int64).self) {
                holds.append(Reservation(id: id, threadID: thread, tokens: tokens, expiresAtMicroseconds: expiresAt))
            }
            return holds
        }
    }

    /// The reservation and how it stands, read under its thread's lock (taken here: the thread
    /// of a reserve event never changes, so it can be read before the lock).
    private func lockedReservation(_ reservationID: Int64, on connection: PostgresConnection) async throws
        -> (reservation: Reservation, ending: HoldEnding)
    {
        guard
            let threadID = try await connection.fetchOne(
                "SELECT thread_id FROM events WHERE id = \(reservationID) AND kind = 'reserve'", as: String.self,
                logger: logger)
        else { throw LedgerError.reservationNotFound(reservationID) }
        try await lockThread(threadID, on: connection)
        guard
            let row = try await connection.fetchOne(
                """
                SELECT r.held_tokens, r.expires_at_us,
                       (SELECT string_agg(e.kind, ',') FROM events AS e WHERE e.reservation_id = r.id),
                       coalesce((SELECT s.opened_event_id < r.id FROM thread_state AS s WHERE s.thread_id = r.thread_id), false)
                FROM events AS r WHERE r.id = \(reservationID)
                """, as: (Int64, Int64, String?, Bool).self, logger: logger)
        else { throw LedgerError.reservationNotFound(reservationID) }
        let reservation = Reservation(id: reservationID, threadID: threadID, tokens: row.0, expiresAtMicroseconds: row.1)
        let endings = row.2?.split(separator: ",").map(String.init) ?? []
        let ending: HoldEnding
        if endings.contains("consume") {
            ending = .settled
        } else if endings.contains("release") {
            ending = .released
        } else if !row.3 {
            // Checked before the expiry: a recorded expiry does not keep a hold past its life.
            ending = .cleanedUp
        } else if endings.contains("expire") {
            ending = .expired
        } else {
            ending = .live
        }
        return (reservation: reservation, ending: ending)
    }
}
