import BudgetLedger
import Logging
import PostgresNIO

/// What `PostgresLedger.copy(from:)` did.
public struct CopyReport: Sendable, Equatable {
    /// Events in the source when the copy began.
    public let sourceEventCount: Int64
    /// Events the target already held, the start of the source's history (a resumed copy): checked, not written again.
    public let eventsAlreadyPresent: Int64
    /// Events this copy wrote.
    public let eventsCopied: Int64
    /// Price rows this copy wrote, withdrawn ones included (rows the target already had, such as
    /// the reference table, are not).
    public let pricesCopied: Int
    /// Price withdrawals this copy wrote (each with its withdrawn row, counted in `pricesCopied`).
    public let priceWithdrawalsCopied: Int
    /// The last event id in the target: new events get larger ids.
    public let lastEventID: Int64
}

extension PostgresLedger {
    /// Events per transaction of a copy: a limit on what one transaction holds and on what an
    /// interrupted copy loses (it resumes from the last committed batch).
    public static let copyBatchEventsMax = 1_000


    /// Serializes copies into one database (each batch takes it), so two cannot interleave.
    static let copyLockKey: Int64 = 0x4244_4C47_0002

    /// Copies every event of `source` into this database with its id, timestamp and every
    /// column, in batches of `batchEventsMax` events per transaction; this schema's triggers
    /// derive the state from them (derived state is never copied), reprices included. Before
    /// them, the price rows the target lacks: the withdrawn ones with their withdrawals, in the
    /// source's order, then the live ones (`source.prices()`); after them, the event id sequence
    /// past the last event.
    ///
    /// The target must be empty (freshly migrated) or hold exactly the start of the source's
    /// history, as an interrupted copy leaves it: every event it holds is compared with the
    /// source's, and the copy continues after the last. Every kind of event is carried. Nothing
    /// is written when the target's events are not a prefix of the source's, or when a price row
    /// of the target (live or withdrawn) is not the source's.
    /// Writers on both stores should be stopped for the copy.
    ///
    /// - Parameter progress: called with the events in the target so far and the source's count, after each batch.
    /// - Throws: `LedgerError.conflict` for a refusal above (nothing written); `LedgerError.invalidInput`
    ///   for a batch size outside 1…10,000; the store's errors otherwise (the batches committed stay,
    ///   and the copy can be run again to continue).
    @discardableResult
    public func copy(
        from source: Ledger, batchEventsMax: Int = copyBatchEventsMax,
        progress: (@Sendable (_ eventsInTarget: Int64, _ sourceEventCount: Int64) -> Void)? = nil
    ) async throws -> CopyReport {
        guard (1...LedgerLimits.feedPageLimitMax).contains(batchEventsMax) else {
            throw LedgerError.invalidInput(
                field: "batchEventsMax", reason: "must be 1…\(LedgerLimits.feedPageLimitMax) (got \(batchEventsMax))")
        }
        let inventory = try source.inventory()
        let present = try await checkedPrefix(of: source, batchEventsMax: batchEventsMax)
        let (pricesCopied, withdrawalsCopied) = try await copyPrices(try source.prices(), withdrawn: try source.withdrawnPrices())
        var last = present.lastID
        var copied: Int64 = 0
        progress?(present.count, inventory.eventCount)
        while true {
            let page = try source.events(after: last, limit: batchEventsMax)
            guard !page.events.isEmpty else { break }
            try await insertBatch(page.events, after: last)
            last = page.lastID
            copied += Int64(page.events.count)
            progress?(present.count + copied, max(inventory.eventCount, present.count + copied))
        }
        if last > 0 {
            try await write { [logger, last] connection in
                try await connection.execute("SELECT setval(pg_get_serial_sequence('events', 'id'), \(last))", logger: logger)
            }
        }
        return CopyReport(
            sourceEventCount: inventory.eventCount, eventsAlreadyPresent: present.count, eventsCopied: copied,
            pricesCopied: pricesCopied + withdrawalsCopied, priceWithdrawalsCopied: withdrawalsCopied, lastEventID: last)
    }

    /// The target's events, compared one by one with the source's of the same place in id order:
    /// their count and last id when they are the start of the source's history.
    private func checkedPrefix(of source: Ledger, batchEventsMax: Int) async throws -> (count: Int64, lastID: Int64) {
        var after: Int64 = 0
        var count: Int64 = 0
        while true {
            let query: PostgresQuery = """
                SELECT \(unescaped: CopiedEvent.columns) FROM events WHERE id > \(after) ORDER BY id LIMIT \(batchEventsMax)
                """
            let target = try await read { [logger] connection in
                var events: [CopiedEvent] = []
                for try await row in try await connection.query(query, logger: logger).decode(CopiedEvent.Row.self) {
                    events.append(CopiedEvent(row))
                }
                return events
            }
            guard !target.isEmpty else { return (count, after) }
            let expected = try source.events(after: after, limit: batchEventsMax).events.map(CopiedEvent.init)
            for (index, event) in target.enumerated() where index >= expected.count || expected[index] != event {
                throw LedgerError.conflict(
                    "the target database holds events that are not the start of this ledger's history (its event \(event.id) "
                        + "differs); copy into a new, empty database; nothing was copied")
            }
            count += Int64(target.count)
            after = target.last!.id
        }
    }

    /// Adds the source's price rows that the target lacks, in one transaction: first each
    /// withdrawn row with its withdrawal, in the source's withdrawal order (so a pattern's later
    /// row at the same start can be live again), then the live rows. A target row with the same
    /// pattern and start must have the same prices, and every target row, live or withdrawn, must
    /// be one of the source's. Returns the live rows and the withdrawals written.
    private func copyPrices(_ prices: [ModelPrice], withdrawn: [WithdrawnPrice]) async throws -> (live: Int, withdrawn: Int) {
        try await write { [logger] connection in
            try await connection.execute("SELECT pg_advisory_xact_lock(\(Self.copyLockKey))", logger: logger)
            var bySourceKey: [String: ModelPrice] = [:]
            for price in prices { bySourceKey[Self.key(price)] = price }
            var present: Set<String> = []
            // The target's live rows (a withdrawn row prices nothing, as on SQLite).
            let rows = try await connection.query(PostgresQuery(unsafeSQL: PostgresSQL.selectPrices), logger: logger)
            for try await (pattern, prompt, completion, from, _) in rows.decode((String, Int64, Int64, Int64, String).self) {
                let key = "\(pattern) \(from)"
                guard let price = bySourceKey[key], price.promptNanodollarsPerToken == prompt,
                    price.completionNanodollarsPerToken == completion
                else { throw Self.foreignPrice(pattern: pattern, from: from) }
                present.insert(key)
            }
            let withdrawalsMissing = try await Self.missingWithdrawals(withdrawn, on: connection, logger: logger)
            for withdrawal in withdrawalsMissing {
                try await Self.insertWithdrawn(withdrawal, on: connection, logger: logger)
            }
            let missing = prices.filter { !present.contains(Self.key($0)) }
            for price in missing {
                try await connection.execute(
                    """
                    INSERT INTO model_prices (model_pattern, prompt_nanos_per_token, completion_nanos_per_token,
                                              effective_from_us, source)
                    VALUES (\(price.modelPattern), \(price.promptNanodollarsPerToken), \(price.completionNanodollarsPerToken),
                            \(price.effectiveFromMicroseconds), \(price.source))
                    """, logger: logger)
            }
            return (missing.count, withdrawalsMissing.count)
        }
    }

    private static func key(_ price: ModelPrice) -> String { "\(price.modelPattern) \(price.effectiveFromMicroseconds)" }

    private static func foreignPrice(pattern: String, from: Int64) -> LedgerError {
        .conflict(
            "the target database's price for \(pattern) from \(Timestamps.iso8601(microseconds: from)) is not one "
                + "of this ledger's prices (withdrawn or different there); nothing was copied")
    }

    /// The source's withdrawals the target lacks, in the source's order; every withdrawn row of
    /// the target must be one of the source's (a resumed copy finds them all).
    private static func missingWithdrawals(
        _ withdrawn: [WithdrawnPrice], on connection: PostgresConnection, logger: Logger
    ) async throws -> [WithdrawnPrice] {
        var remaining = withdrawn
        let rows = try await connection.query(
            """
            SELECT p.model_pattern, p.prompt_nanos_per_token, p.completion_nanos_per_token, p.effective_from_us,
                   w.withdrawn_at_us
            FROM price_withdrawals AS w JOIN model_prices AS p ON p.id = w.price_id ORDER BY w.id
            """, logger: logger)
        for try await (pattern, prompt, completion, from, withdrawnAt) in rows.decode((String, Int64, Int64, Int64, Int64).self) {
            guard let index = remaining.firstIndex(where: {
                $0.price.modelPattern == pattern && $0.price.promptNanodollarsPerToken == prompt
                    && $0.price.completionNanodollarsPerToken == completion && $0.price.effectiveFromMicroseconds == from
                    && $0.withdrawnAtMicroseconds == withdrawnAt
            }) else { throw foreignPrice(pattern: pattern, from: from) }
            remaining.remove(at: index)
        }
        return remaining
    }

    /// Adds a withdrawn row and its withdrawal (0006's triggers check it as any withdrawal: it was
    /// made before the price's start, and no billed consume is in the target yet to refuse it).
    private static func insertWithdrawn(_ withdrawn: WithdrawnPrice, on connection: PostgresConnection, logger: Logger)
        async throws
    {
        let price = withdrawn.price
        let id = try await connection.fetchOne(
            """
            INSERT INTO model_prices (model_pattern, prompt_nanos_per_token, completion_nanos_per_token, effective_from_us, source)
            VALUES (\(price.modelPattern), \(price.promptNanodollarsPerToken), \(price.completionNanodollarsPerToken),
                    \(price.effectiveFromMicroseconds), \(price.source))
            RETURNING id
            """, as: Int64.self, logger: logger)
        guard let id else { preconditionFailure("INSERT … RETURNING answers one row") }
        try await connection.execute(
            """
            INSERT INTO price_withdrawals (price_id, withdrawn_at_us, source)
            VALUES (\(id), \(withdrawn.withdrawnAtMicroseconds), \(withdrawn.source))
            """, logger: logger)
    }

    /// Inserts `events` (the source's, in id order, right after `after`) in one transaction, with
    /// their ids, and moves the id sequence past them, so that a write made between two runs of
    /// an interrupted copy gets an id the source does not hold and the next run refuses to go on.
    private func insertBatch(_ events: [LedgerEvent], after: Int64) async throws {
        do {
            try await write { [logger] connection in
                try await connection.execute("SELECT pg_advisory_xact_lock(\(Self.copyLockKey))", logger: logger)
                let last = try await connection.fetchOne(
                    "SELECT coalesce(max(id), 0)::bigint FROM events", as: Int64.self, logger: logger) ?? Int64(0)
                guard last == after else {
                    throw LedgerError.conflict(
                        "events were written to the target database during the copy (its last event is \(last), "
                            + "the copy's \(after)); stop every writer and copy into a new, empty database")
                }
                for event in events {
                    do {
                        try await connection.execute(Self.insertQuery(event), logger: logger)
                    } catch let error as PSQLError {
                        throw CopyEventFailure(event: event, error: error)
                    }
                }
                try await connection.execute(
                    "SELECT setval(pg_get_serial_sequence('events', 'id'), \(events.last!.id))", logger: logger)
            }
        } catch let failure as CopyEventFailure {
            throw failure.explained(url: url)
        }
    }

    private static func insertQuery(_ event: LedgerEvent) -> PostgresQuery {
        let usage = event.usage
        return """
            INSERT INTO events (id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens,
                                threshold_percent, severity, caused_by, idempotency_key, agent_id, model, provider,
                                latency_ms, metadata, org_id, user_id, cost_nanos, held_tokens, expires_at_us,
                                reservation_id, tokens_used, scope, window_start_us, cost_used_nanos, max_cost_nanos,
                                period)
            OVERRIDING SYSTEM VALUE
            VALUES (\(event.id), \(event.timestampMicroseconds), \(event.kind), \(event.threadID), \(event.promptTokens),
                    \(event.completionTokens), \(event.maxTokens), \(event.thresholdPercent.map { Int32(clamping: $0) }),
                    \(event.severity), \(event.causedBy), \(event.idempotencyKey), \(usage.agentID), \(usage.model),
                    \(usage.provider), \(usage.latencyMilliseconds), \(usage.metadataJSON), \(event.organizationID),
                    \(event.userID), \(event.costNanodollars), \(event.heldTokens), \(event.expiresAtMicroseconds),
                    \(event.reservationID), \(event.tokensUsed), \(event.scope), \(event.windowStartMicroseconds),
                    \(event.nanodollarsUsed), \(event.maxNanodollars), \(event.period))
            """
    }
}

/// An event the target refused mid-copy (a limit of this store's schema the source's event is
/// outside of, say): named by id and kind, the batches before it committed.
private struct CopyEventFailure: Error {
    let event: LedgerEvent
    let error: PSQLError

    func explained(url: String) -> any Error {
        guard let state = error.serverInfo?[.sqlState], state.hasPrefix("23") || state == "0A000" else {
            return PostgresLedgerError.wrapping(error, url: url)
        }
        let rule = error.serverInfo?[.constraintName].map { " (\($0))" } ?? ""
        return LedgerError.conflict(
            "event \(event.id) (\(event.kind)) breaks a rule of the PostgreSQL store\(rule); the events before it were "
                + "copied, and nothing after it")
    }
}

/// The columns of an event that a copy carries, as read from either store, to compare them.
struct CopiedEvent: Equatable {
    typealias Row = (
        Int64, Int64, String, String?, Int64, Int64, Int64?, Int32?, String?, Int64?, String?, String?, String?, String?,
        Int64?, String?, String?, String?, Int64?, Int64?, Int64?, Int64?, Int64?, String?, Int64?, Int64?, Int64?,
        String?
    )

    static let columns = """
        id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens, threshold_percent, severity,
        caused_by, idempotency_key, agent_id, model, provider, latency_ms, metadata, org_id, user_id, cost_nanos,
        held_tokens, expires_at_us, reservation_id, tokens_used, scope, window_start_us, cost_used_nanos, max_cost_nanos,
        period
        """

    let id: Int64
    let integers: [Int64?]
    let texts: [String?]

    init(_ row: Row) {
        id = row.0
        integers = [
            row.1, row.4, row.5, row.6, row.7.map(Int64.init), row.9, row.14, row.18, row.19, row.20, row.21, row.22,
            row.24, row.25, row.26,
        ]
        texts = [row.2, row.3, row.8, row.10, row.11, row.12, row.13, row.15, row.16, row.17, row.23, row.27]
    }

    init(_ event: LedgerEvent) {
        let usage = event.usage
        self.init(
            (
                event.id, event.timestampMicroseconds, event.kind, event.threadID, event.promptTokens,
                event.completionTokens, event.maxTokens, event.thresholdPercent.map { Int32(clamping: $0) },
                event.severity, event.causedBy, event.idempotencyKey, usage.agentID, usage.model, usage.provider,
                usage.latencyMilliseconds, usage.metadataJSON, event.organizationID, event.userID, event.costNanodollars,
                event.heldTokens, event.expiresAtMicroseconds, event.reservationID, event.tokensUsed, event.scope,
                event.windowStartMicroseconds, event.nanodollarsUsed, event.maxNanodollars, event.period
            ))
    }
}
