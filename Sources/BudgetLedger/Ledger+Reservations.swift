internal import LedgerSQLite

extension Ledger {
    /// The ttl of a hold when none is given: 5 minutes.
    public static let defaultHoldSeconds: Int64 = 300

    /// Holds `tokens` against the thread's budget for `ttlSeconds`, opening the thread when new.
    ///
    /// The hold must fit under max − spent − other live holds. Until settled, released or
    /// expired, it counts against every budget decision: checks, checked consumes, other holds.
    ///
    /// The hold counts against every scope budget the call falls under (`usage`'s agent, model,
    /// and metadata `org_id` / `user_id`, and `global`); under a dollar budget it counts at most
    /// what its tokens can cost (all at the higher of the model's two rates), so a model without
    /// a price cannot be held there.
    ///
    /// - Throws: `BudgetExhaustedError` when it does not fit (nothing of the call is recorded; the
    ///   first refusal of the thread's or the scope's window is recorded as a refusal event);
    ///   `LedgerError.invalidInput` for tokens < 1, a ttl outside 1 s…7 days, or bad usage fields;
    ///   `LedgerError.conflict` when `idempotencyKey` was used by another request.
    ///
    /// With an `idempotencyKey` already recorded by the same reserve (thread, tokens, agent, model
    /// and metadata), records nothing and answers with the original hold (`isReplay`), whether it
    /// is still live, settled, released or expired; the ttl is not compared (the original's
    /// expiry stands).
    public func reserve(
        _ threadID: String, tokens: Int64, ttlSeconds: Int64 = Ledger.defaultHoldSeconds, usage: UsageDetails = .none,
        idempotencyKey: String? = nil
    ) throws -> ReserveResult {
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
        return try writeRecordingRefusal { [self] connection in
            let now = configuration.clock()
            let found = try ThreadRow.fetch(threadID, at: now, idempotencyKey: idempotencyKey, on: connection)
            if found.eventIDForKey != nil, let key = idempotencyKey {
                return try replayReserve(
                    key: key, threadID: threadID, tokens: tokens, usage: usage, budget: found.budget, on: connection)
            }
            // Checks first, writes after: a refusal commits its refusal event and nothing else.
            let before = found.budget ?? ThreadBudget(threadID: threadID, maxTokens: found.defaultMaxTokens)
            if before.isExhausted || !before.canConsume(tokens) {
                throw BudgetExhaustedError(
                    threadID: threadID, used: before.totalTokens, maxTokens: before.maxTokens, requestedTokens: tokens,
                    heldTokens: before.heldTokens)
            }
            let heldCost = try mostCost(of: tokens, model: usage.model, at: now, pricesVersion: found.pricesVersion, on: connection)
            let scopes =
                found.hasScopeBudgets
                ? try ScopeBudgetSQL.budgets(
                    scopes: BudgetScope.candidates(
                        agentID: usage.agentID, model: usage.model, organizationID: organizationID, userID: userID),
                    at: now, on: connection)
                : []
            try checkScopes(scopes, threadID: threadID, tokens: tokens, cost: heldCost, model: usage.model)
            if found.expiredHolds > 0 {
                try connection.execute(LedgerSQL.insertExpiries, [now, threadID])
            }
            if found.budget == nil {
                _ = try openThread(threadID, maxTokens: found.defaultMaxTokens, at: now, on: connection)
            }
            let expiresAt = now + ttlSeconds * 1_000_000
            try connection.execute(
                LedgerSQL.insertReserve,
                [
                    now, threadID, tokens, expiresAt, usage.agentID, usage.model, usage.metadata?.json, organizationID, userID,
                    heldCost, idempotencyKey,
                ])
            let reservation = Reservation(
                id: connection.lastInsertRowID, threadID: threadID, tokens: tokens, expiresAtMicroseconds: expiresAt)
            let budget = ThreadBudget(
                threadID: threadID, maxTokens: before.maxTokens, promptTokens: before.promptTokens,
                completionTokens: before.completionTokens, requestCount: before.requestCount,
                triggeredThresholds: before.triggeredThresholds, heldTokens: before.heldTokens.saturatingAdd(tokens))
            return ReserveResult(reservation: reservation, budget: budget)
        }
    }

    /// The original hold of a reserve retried with `key`: the same thread, tokens, agent, model
    /// and metadata (as a JSON object), or a conflict naming the first field that differs.
    private func replayReserve(
        key: String, threadID: String, tokens: Int64, usage: UsageDetails, budget: ThreadBudget?, on connection: Connection
    ) throws -> ReserveResult {
        guard let original = try connection.cachedStatement(LedgerSQL.selectReserveByKey).fetchOne([key], { row in
            (id: try row[0] as Int64, threadID: try row[1] as String, tokens: try row[2] as Int64,
             expiresAt: try row[3] as Int64, agentID: try row[4] as String?, model: try row[5] as String?,
             metadata: try row[6] as String?)
        }) else {
            let other = try IdempotencySQL.eventUsing(key, on: connection)
            throw LedgerError.conflict(
                "idempotency key \(key) was already used by event \(other?.id ?? 0), a \(other?.kind ?? "write"), not a reserve")
        }
        let differs: String? =
            if original.threadID != threadID { "thread" }
            else if original.tokens != tokens { "tokens" }
            else if original.agentID != usage.agentID { "agent" }
            else if original.model != usage.model { "model" }
            else if !ConsumeRequest.sameJSONObject(original.metadata, usage.metadata?.json) { "metadata" }
            else { nil }
        if let differs {
            throw LedgerError.conflict(
                "idempotency key \(key) was already used by reserve event \(original.id) for a different hold (its "
                    + "\(differs) differs; recorded: thread \(original.threadID), \(original.tokens) tokens)")
        }
        let reservation = Reservation(
            id: original.id, threadID: threadID, tokens: tokens, expiresAtMicroseconds: original.expiresAt)
        return ReserveResult(
            reservation: reservation, budget: budget ?? ThreadBudget(threadID: threadID, maxTokens: 0), isReplay: true)
    }

    /// The most `tokens` can cost with `model` at the price in force at `now`: every token at the
    /// higher of its two rates (at most 2e9 × 1e7 = 2e16, the per-call cost limit); nil when
    /// the model has no price or none is named.
    private func mostCost(
        of tokens: Int64, model: String?, at now: Int64, pricesVersion: Int64, on connection: Connection
    ) throws -> Int64? {
        guard let model,
            let price = try priceCache.withLock({ cache in
                try cache.price(forModel: model, at: now, currentVersion: pricesVersion, on: connection)
            })
        else { return nil }
        return try price.mostCost(ofHeldTokens: tokens, model: model)
    }

    /// Records the tokens a held call actually spent (above or below the hold) and ends the hold,
    /// in one transaction.
    ///
    /// Settling after the hold expired still records the spend, since the tokens were spent
    /// (`holdHadExpired` says so). It never refuses for budget: like `consume`, it records reality.
    ///
    /// - Throws: `LedgerError.reservationNotFound` for an unknown id; `LedgerError.conflict` when
    ///   the hold was already settled or released, or its thread was cleaned up (nothing is written).
    @discardableResult
    public func settle(
        _ reservationID: Int64, promptTokens: Int64, completionTokens: Int64 = 0, idempotencyKey: String? = nil,
        usage: UsageDetails = .none
    ) throws -> SettleResult {
        let result = try write { [self] connection -> SettleResult in
            let state = try reservationState(reservationID, on: connection)
            let request = try ConsumeRequest(
                threadID: state.reservation.threadID, promptTokens: promptTokens, completionTokens: completionTokens,
                idempotencyKey: idempotencyKey, usage: usage, enforce: false)
            if let key = idempotencyKey, try connection.cachedStatement(LedgerSQL.selectConsumeByKey).fetchOne([key], { _ in true }) != nil {
                // A retried settle: replay the original (or report the key's conflict, which a
                // consume's key or another hold's settle is). Recorded after its ttl: expired.
                let replayed = try record(request, settling: reservationID, on: connection)
                let expired = state.reservation.expiresAtMicroseconds <= replayed.event.timestampMicroseconds
                return SettleResult(consume: replayed, reservation: state.reservation, holdHadExpired: expired)
            }
            try state.ending.checkSettleable(reservationID, threadID: state.reservation.threadID)
            let now = configuration.clock()
            let expired = state.ending == .expired || state.reservation.expiresAtMicroseconds <= now
            let consume = try record(request, settling: reservationID, at: now, on: connection)
            let budget = try ThreadRow.fetch(state.reservation.threadID, at: now, on: connection).budget ?? consume.budget
            let settled = ConsumeResult(
                budget: budget, crossedThresholds: consume.crossedThresholds, event: consume.event, isReplay: false)
            return SettleResult(consume: settled, reservation: state.reservation, holdHadExpired: expired)
        }
        notify(result.consume)
        return result
    }

    /// Ends a hold with nothing spent.
    ///
    /// - Returns: the thread's budget afterwards.
    /// - Throws: `LedgerError.reservationNotFound` for an unknown id; `LedgerError.conflict` when the
    ///   hold is no longer live (settled, released, expired, or its thread cleaned up): nothing is written.
    @discardableResult
    public func release(_ reservationID: Int64) throws -> ThreadBudget {
        try write { [self] connection in
            let state = try reservationState(reservationID, on: connection)
            let now = configuration.clock()
            let threadID = state.reservation.threadID
            try state.ending.checkReleasable(state.reservation, at: now)
            try connection.execute(LedgerSQL.insertRelease, [now, threadID, reservationID])
            guard let budget = try ThreadRow.fetch(threadID, at: now, on: connection).budget else {
                preconditionFailure("thread \(threadID) of a live hold is not open")
            }
            return budget
        }
    }

    /// Live holds (not settled, released or expired), of one thread or of all, oldest first.
    public func holds(_ threadID: String? = nil) throws -> [Reservation] {
        try Validate.optionalIdentifier(threadID, field: "threadId")
        return try withConnection { connection in
            try connection.cachedStatement(LedgerSQL.selectLiveHolds).fetchAll([configuration.clock(), threadID]) { row in
                Reservation(id: try row[0], threadID: try row[1], tokens: try row[2], expiresAtMicroseconds: try row[3])
            }
        }
    }

    private func reservationState(_ reservationID: Int64, on connection: Connection) throws
        -> (reservation: Reservation, ending: HoldEnding)
    {
        let found = try connection.cachedStatement(LedgerSQL.selectReservation).fetchOne([reservationID]) { row in
            let reservation = Reservation(
                id: reservationID, threadID: try row[0], tokens: try row[1], expiresAtMicroseconds: try row[2])
            let endings = (try row[3] as String?)?.split(separator: ",").map(String.init) ?? []
            let lifeGoesOn: Bool = try row[4]
            let ending: HoldEnding
            if endings.contains("consume") {
                ending = .settled
            } else if endings.contains("release") {
                ending = .released
            } else if !lifeGoesOn {
                // Checked before the expiry: a recorded expiry does not keep a hold past its life.
                ending = .cleanedUp
            } else if endings.contains("expire") {
                ending = .expired
            } else {
                ending = .live
            }
            return (reservation: reservation, ending: ending)
        }
        guard let found else { throw LedgerError.reservationNotFound(reservationID) }
        return found
    }
}
