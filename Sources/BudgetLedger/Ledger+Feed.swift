import Foundation
internal import LedgerSQLite

/// Any event of the ledger, as the feed and exports read it.
public struct LedgerEvent: Sendable, Equatable {
    public let id: Int64
    /// UTC microseconds since 1970.
    public let timestampMicroseconds: Int64
    /// open, consume, limit, reset, cleanup, threshold, configure, usage_reset, …
    public let kind: String
    public let threadID: String?
    public let promptTokens: Int64
    public let completionTokens: Int64
    /// open, limit, configure: the max set; threshold: the max when crossed.
    public let maxTokens: Int64?
    public let thresholdPercent: Int?
    public let severity: String?
    /// threshold: the consume that crossed it; reprice: the consume it bills.
    public let causedBy: Int64?
    public let idempotencyKey: String?
    public let usage: UsageDetails
    public let organizationID: String?
    public let userID: String?
    /// Nano-dollars; nil for an unpriced consume (and for other kinds); reprice: the corrected
    /// cost of the consume named by `causedBy`.
    public let costNanodollars: Int64?
    /// reserve: the tokens held and when the hold expires (UTC microseconds).
    public let heldTokens: Int64?
    public let expiresAtMicroseconds: Int64?
    /// release, expire, and a settling consume: the reserve event.
    public let reservationID: Int64?
    /// threshold: the thread's total tokens when it was crossed; scope_threshold: the window's;
    /// refusal: the total (the thread's or the scope window's) when the call was refused.
    public let tokensUsed: Int64?
    /// scope_threshold, a scope's refusal, budget, budget_remove: the scope, as written
    /// (`global`, `org:ID`, …); nil for a thread's events.
    public let scope: String?
    /// scope_threshold, a scope's refusal: the start of the scope's window (UTC microseconds).
    public let windowStartMicroseconds: Int64?
    /// scope_threshold, a scope's refusal: the window's spend in nano-dollars.
    public let nanodollarsUsed: Int64?
    /// budget, scope_threshold, a scope's refusal: the dollar max in nano-dollars, if any.
    public let maxNanodollars: Int64?
    /// budget: the period of its windows (`none`, `day`, `week`, `month`); what `copy` needs
    /// to carry a budget whole (the feed's wire shows it not).
    public let period: String?

    /// An event as another store read it (PostgreSQL's `events` has these columns).
    package init(
        id: Int64, timestampMicroseconds: Int64, kind: String, threadID: String?, promptTokens: Int64,
        completionTokens: Int64, maxTokens: Int64?, thresholdPercent: Int?, severity: String?, causedBy: Int64?,
        idempotencyKey: String?, usage: UsageDetails, organizationID: String?, userID: String?,
        costNanodollars: Int64?, heldTokens: Int64?, expiresAtMicroseconds: Int64?, reservationID: Int64?,
        tokensUsed: Int64?, scope: String?, windowStartMicroseconds: Int64?, nanodollarsUsed: Int64?,
        maxNanodollars: Int64?, period: String? = nil
    ) {
        self.id = id
        self.timestampMicroseconds = timestampMicroseconds
        self.kind = kind
        self.threadID = threadID
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.maxTokens = maxTokens
        self.thresholdPercent = thresholdPercent
        self.severity = severity
        self.causedBy = causedBy
        self.idempotencyKey = idempotencyKey
        self.usage = usage
        self.organizationID = organizationID
        self.userID = userID
        self.costNanodollars = costNanodollars
        self.heldTokens = heldTokens
        self.expiresAtMicroseconds = expiresAtMicroseconds
        self.reservationID = reservationID
        self.tokensUsed = tokensUsed
        self.scope = scope
        self.windowStartMicroseconds = windowStartMicroseconds
        self.nanodollarsUsed = nanodollarsUsed
        self.maxNanodollars = maxNanodollars
        self.period = period
    }

    static let columns = """
        id, timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, max_tokens, threshold_percent, severity,
        caused_by, idempotency_key, agent_id, model, provider, latency_ms, metadata, org_id, user_id, cost_nanos,
        held_tokens, expires_at_us, reservation_id, tokens_used, scope, window_start_us, cost_used_nanos, max_cost_nanos,
        period
        """

    /// `columns` with a consume's corrected cost (its reprice's, migration 0012) for the exports.
    static let billedColumns = columns.replacingOccurrences(of: "user_id, cost_nanos,", with: "user_id, \(LedgerSQL.billedCost),")

    init(row: Row) throws {
        id = try row[0]
        timestampMicroseconds = try row[1]
        kind = try row[2]
        threadID = try row[3]
        promptTokens = try row[4]
        completionTokens = try row[5]
        maxTokens = try row[6]
        thresholdPercent = try row[7]
        severity = try row[8]
        causedBy = try row[9]
        idempotencyKey = try row[10]
        usage = UsageDetails(
            agentID: try row[11], model: try row[12], provider: try row[13], latencyMilliseconds: try row[14],
            metadata: .recorded(try row[15], organizationID: try row[16], userID: try row[17]))
        organizationID = try row[16]
        userID = try row[17]
        costNanodollars = try row[18]
        heldTokens = try row[19]
        expiresAtMicroseconds = try row[20]
        reservationID = try row[21]
        tokensUsed = try row[22]
        scope = try row[23]
        windowStartMicroseconds = try row[24]
        nanodollarsUsed = try row[25]
        maxNanodollars = try row[26]
        period = try row[27]
    }
}

/// One page of the feed.
public struct EventPage: Sendable, Equatable {
    public let events: [LedgerEvent]
    /// The id to pass as `after` for the next page: the last event's id, or `after` when empty.
    public let lastID: Int64

    package init(events: [LedgerEvent], lastID: Int64) {
        self.events = events
        self.lastID = lastID
    }
}

extension Validate {
    /// A feed page's `after` (not negative) and `limit` (1…`LedgerLimits.feedPageLimitMax`).
    package static func feedPage(after: Int64, limit: Int) throws {
        if after < 0 {
            throw LedgerError.invalidInput(field: "after", reason: "must not be negative (got \(after))")
        }
        guard (1...LedgerLimits.feedPageLimitMax).contains(limit) else {
            throw LedgerError.invalidInput(field: "limit", reason: "must be 1…\(LedgerLimits.feedPageLimitMax) (got \(limit))")
        }
    }
}

/// A time range and filter for exports: `from` inclusive, `to` exclusive, UTC microseconds.
public struct ExportQuery: Sendable, Equatable {
    public var from: Int64?
    public var to: Int64?
    public var organizationID: String?

    public init(from: Int64? = nil, to: Int64? = nil, organizationID: String? = nil) {
        self.from = from
        self.to = to
        self.organizationID = organizationID
    }
}

/// What an export rolls up by.
public enum ExportGrouping: String, Sendable, CaseIterable {
    case org, agent, model, thread, day

    var expression: String {
        switch self {
        case .org: return "org_id"
        case .agent: return "agent_id"
        case .model: return ModelName.sql("model")
        case .thread: return "thread_id"
        case .day: return "timestamp_us / 86400000000"
        }
    }
}

extension Validate {
    /// An export's `org` (an identifier, when given) and range (`to` not before `from`): the
    /// checks every store makes before it reads a row.
    package static func exportQuery(_ query: ExportQuery) throws {
        try optionalIdentifier(query.organizationID, field: "org")
        if let from = query.from, let to = query.to, from > to {
            throw LedgerError.invalidInput(field: "to", reason: "the range ends before it starts")
        }
    }
}

extension Ledger {
    /// Events with id greater than `after`, in id order: a resumable feed. An exporter that
    /// remembers `lastID` gets every event exactly once, across its own restarts, and across a
    /// crash or power loss of the ledger's machine: a page holds only events already synced to
    /// disk, so an id it served is never taken back and reused.
    ///
    /// - Throws: `LedgerError.invalidInput` for a negative `after` or a limit outside 1…10,000.
    public func events(after: Int64, limit: Int = 1_000) throws -> EventPage {
        try Validate.feedPage(after: after, limit: limit)
        let events = try withConnection { connection in
            try connection.cachedStatement("SELECT \(LedgerEvent.columns) FROM events WHERE id > ? ORDER BY id LIMIT ?")
                .fetchAll([after, limit], LedgerEvent.init(row:))
        }
        // Everything just read was committed, but maybe not yet synced: make it durable before a
        // consumer can save its ids (see syncLogForReaders).
        try syncLogForReaders()
        return EventPage(events: events, lastID: events.last?.id ?? after)
    }

    /// Calls `body` with every consume event in the range, in id order, streaming from one snapshot.
    ///
    /// An export is a billing view: a consume recorded unpriced and repriced since (migration
    /// 0012) carries its corrected cost (the feed, `events(after:)`, shows both events as recorded).
    /// A file ledger reads on a connection of its own, so a long export does not hold up writers.
    public func forEachConsumeEvent(_ query: ExportQuery, _ body: (LedgerEvent) throws -> Void) throws {
        try Validate.exportQuery(query)
        try withReadSnapshot { connection in
            var cursor = try connection.prepare(
                """
                SELECT \(LedgerEvent.billedColumns) FROM \(TimeRangeSQL.events(as: "events"))
                WHERE \(TimeRangeSQL.timestamps(of: "events", from: "?1", to: "?2"))
                  AND kind = 'consume' AND (?3 IS NULL OR org_id = ?3)
                ORDER BY id
                """
            ).rows([query.from ?? 0, query.to ?? Int64.max, query.organizationID])
            while let row = try cursor.next() {
                try body(try LedgerEvent(row: row))
            }
        }
    }

    /// Consume totals in the range, grouped (nil key: events without that field), by key, at the
    /// corrected cost of repriced consumes (migration 0012).
    ///
    /// Like every derived total, an event recorded before the limits existed counts each value
    /// at most at its limit (see `migrations/0006_bounded_sums.sql`), so no sum can overflow.
    public func rollup(_ query: ExportQuery, by grouping: ExportGrouping) throws -> [(key: String?, totals: UsageTotals)] {
        try Validate.exportQuery(query)
        return try withReadSnapshot { connection in
            try connection.prepare(
                """
                SELECT \(grouping.expression), sum(min(prompt_tokens, \(LedgerLimits.tokensPerCallMax))),
                       sum(min(completion_tokens, \(LedgerLimits.tokensPerCallMax))), count(*),
                       coalesce(sum(min(\(LedgerSQL.billedCost), \(LedgerLimits.costNanodollarsPerCallMax))), 0),
                       sum(\(LedgerSQL.billedCost) IS NULL),
                       coalesce(sum(CASE WHEN \(LedgerSQL.billedCost) IS NULL
                                         THEN min(prompt_tokens, \(LedgerLimits.tokensPerCallMax))
                                              + min(completion_tokens, \(LedgerLimits.tokensPerCallMax))
                                         ELSE 0 END), 0),
                       coalesce(sum(min(latency_ms, \(LedgerLimits.latencyMillisecondsMax))), 0), count(latency_ms)
                FROM \(TimeRangeSQL.events(as: "events"))
                WHERE \(TimeRangeSQL.timestamps(of: "events", from: "?1", to: "?2"))
                  AND kind = 'consume' AND (?3 IS NULL OR org_id = ?3)
                GROUP BY 1 ORDER BY 1
                """
            ).fetchAll([query.from ?? 0, query.to ?? Int64.max, query.organizationID]) { row in
                let key: String?
                switch row.value(at: 0) {
                case .integer(let day): key = Timestamps.date(day: day)
                case .text(let text): key = text
                default: key = nil
                }
                var totals = UsageTotals()
                totals.promptTokens = try row[1]
                totals.completionTokens = try row[2]
                totals.requestCount = try row[3]
                totals.costNanodollars = try row[4]
                totals.unpricedRequests = try row[5]
                totals.unpricedTokens = try row[6]
                totals.latencyMillisecondsSum = try row[7]
                totals.latencyCount = try row[8]
                return (key: key, totals: totals)
            }
        }
    }

    /// Runs `body` in one read transaction on a connection of its own (file ledgers), or on the
    /// ledger's connection (in-memory ledgers, which no other connection can see).
    func withReadSnapshot<Result>(_ body: (Connection) throws -> Result) throws -> Result {
        if path == ":memory:" || path.isEmpty {
            // Result may not be Sendable (a cursor's output), so run under the lock directly.
            return try withConnectionUnchecked { connection in
                try connection.transaction(.deferred) { try body(connection) }
            }
        }
        // A closed ledger serves nothing, though this read would use a connection of its own.
        guard connection.withLock({ $0.isOpen }) else { throw LedgerError.closed }
        do {
            let reader = try Connection(
                path: path, options: Connection.Options(busyTimeoutMilliseconds: configuration.busyTimeoutMilliseconds))
            defer { reader.close() }
            return try reader.transaction(.deferred) {
                // The first read fixes the snapshot; syncing the WAL after it makes everything in
                // the snapshot durable before the body streams a single row out.
                _ = try reader.prepare("SELECT 1 FROM events LIMIT 1").fetchAll { _ in 0 }
                try syncLogForReaders()
                return try body(reader)
            }
        } catch let error as SQLiteError {
            throw LedgerError.database(path: path, StorageFailure(error))
        }
    }
}

extension Ledger {
    /// Syncs the ledger's WAL (`fdatasync` of `<ledger>-wal`) so that every transaction a reader
    /// has seen is durable before the reader hands it on.
    ///
    /// A transaction is visible to readers as soon as it commits, which at NORMAL (and at FULL,
    /// while a group commit's sync runs after the write lock) is before its WAL frames reach the
    /// disk. A power loss then takes it back, and the next event reuses its id (ids are
    /// max(id) + 1): a feed consumer that saved the id would skip the new event for ever. Syncing
    /// a file flushes every dirty page of it, whoever wrote them, so after this call every frame
    /// committed before it is durable. Without a WAL file (never written, or checkpointed and
    /// removed) everything is in the database file, which a checkpoint syncs before it resets
    /// the WAL. In-memory ledgers have nothing to sync.
    /// See <https://www.sqlite.org/wal.html> and <https://www.sqlite.org/pragma.html#pragma_synchronous>.
    func syncLogForReaders() throws {
        guard path != ":memory:", !path.isEmpty,
            FileManager.default.fileExists(atPath: path + "-wal")
        else { return }
        readerLogSyncs.add(1, ordering: .relaxed)
        do {
            if let walSync {
                // At FULL, through the writer's own WALSync: a failure here is final for writes too.
                try walSync.syncFile()
            } else {
                let once = WALSync(databasePath: path)
                defer { once.close() }
                try once.syncFile()
            }
        } catch let error as SQLiteError {
            throw LedgerError.database(path: path, StorageFailure(error))
        }
    }
}
