internal import LedgerSQLite

/// How the ledger stands now, for a monitoring scrape: threads near and over their max, live
/// holds, thresholds standing, and how far the usage fold lags behind the events.
///
/// Every figure is read from the derived tables (threads, holds, thresholds) or from the events
/// after the fold's mark, so reading it costs the number of open threads, never the number of events.
public struct LedgerGauges: Sendable, Equatable {
    /// Threads open now.
    public var openThreads: Int64 = 0
    /// Open threads at or above `nearMaxPercent` of their max that are not yet exhausted.
    public var threadsNearMax: Int64 = 0
    /// Open threads whose spent tokens reach their max (exhausted; a max of 0 counts).
    public var threadsAtOrOverMax: Int64 = 0
    /// Reservations not settled, released or expired at the time of the read.
    public var liveHolds: Int64 = 0
    /// Tokens those reservations hold.
    public var heldTokens: Int64 = 0
    /// Open threads past each threshold percent in their current window, by percent (ascending).
    public var threadsPastThreshold: [(percent: Int, threads: Int64)] = []
    /// Consume events recorded but not yet folded into the usage rollups (readers add them on
    /// the fly; the fold runs every 1,024 events).
    public var unfoldedConsumes: Int64 = 0

    /// "Near" the max: 90 % and over.
    public static let nearMaxPercent: Int64 = 90

    public init() {}

    public static func == (left: LedgerGauges, right: LedgerGauges) -> Bool {
        left.openThreads == right.openThreads && left.threadsNearMax == right.threadsNearMax
            && left.threadsAtOrOverMax == right.threadsAtOrOverMax && left.liveHolds == right.liveHolds
            && left.heldTokens == right.heldTokens && left.unfoldedConsumes == right.unfoldedConsumes
            && left.threadsPastThreshold.map(\.percent) == right.threadsPastThreshold.map(\.percent)
            && left.threadsPastThreshold.map(\.threads) == right.threadsPastThreshold.map(\.threads)
    }
}

extension Ledger {
    private static let selectThreadGauges = """
        SELECT count(*),
               coalesce(sum(max_tokens > 0 AND prompt_tokens + completion_tokens < max_tokens
                            AND (prompt_tokens + completion_tokens) * 100 >= max_tokens * ?1), 0),
               coalesce(sum(prompt_tokens + completion_tokens >= max_tokens), 0)
        FROM thread_state
        """
    private static let selectHoldGauges = "SELECT count(*), coalesce(sum(tokens), 0) FROM holds WHERE expires_at_us > ?1"
    private static let selectThresholdGauges = """
        SELECT threshold_percent, count(*) FROM thread_thresholds GROUP BY threshold_percent ORDER BY threshold_percent
        """
    private static let selectUnfoldedConsumes = """
        SELECT count(*) FROM events
        WHERE id > (SELECT rolled_up_to FROM ledger_settings WHERE id = 1) AND kind = 'consume'
        """

    /// The ledger's gauges, read in one snapshot at the ledger's clock.
    ///
    /// - Throws: `LedgerError` when the ledger is closed or SQLite fails.
    public func gauges() throws -> LedgerGauges {
        let now = configuration.clock()
        return try read { connection in
            var gauges = LedgerGauges()
            try connection.cachedStatement(Self.selectThreadGauges).fetchOne([LedgerGauges.nearMaxPercent]) { row in
                gauges.openThreads = try row[0]
                gauges.threadsNearMax = try row[1]
                gauges.threadsAtOrOverMax = try row[2]
            }
            try connection.cachedStatement(Self.selectHoldGauges).fetchOne([now]) { row in
                gauges.liveHolds = try row[0]
                gauges.heldTokens = try row[1]
            }
            gauges.threadsPastThreshold = try connection.cachedStatement(Self.selectThresholdGauges).fetchAll { row in
                (percent: Int(try row[0] as Int64), threads: try row[1] as Int64)
            }
            gauges.unfoldedConsumes =
                try connection.cachedStatement(Self.selectUnfoldedConsumes).fetchOne { try $0[0] as Int64 } ?? 0
            assert(gauges.threadsNearMax + gauges.threadsAtOrOverMax <= gauges.openThreads, "a thread counted twice")
            return gauges
        }
    }
}
