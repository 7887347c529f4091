internal import LedgerSQLite

/// How far the usage fold went and the all-time sums it has folded (`ledger_settings`,
/// migration 0017): what a consume needs to know that it keeps the ledger under its capacity
/// without writing the sums.
///
/// The sums hold the consumes up to `rolledUpTo` (and every reprice); each consume after it is
/// at most its limits, its cost at most `consumeCostBoundNanodollars` (1e9 times the greatest
/// prompt + completion price ever set). So with `n` events after the mark, `sum + n × limit ≤
/// capacity` for each sum proves the capacity kept. When that bound does not hold, the writer
/// folds at once, and the fold's trigger (`ledger_settings_fold_all_time_sums`) adds the exact
/// sums and refuses the consume past the capacity, with 0006's message.
struct FoldMark {
    /// The last folded event (`rolled_up_to`).
    var rolledUpTo: Int64
    var allTimePromptTokens: Int64
    var allTimeCompletionTokens: Int64
    var allTimeCostNanodollars: Int64
    var allTimeLatencyMilliseconds: Int64
    /// The most a consume can cost at any price ever set (`consume_cost_bound_nanos`).
    var consumeCostBoundNanodollars: Int64

    /// The fold runs at every event whose id is a multiple of this (migration 0004's rule).
    static let foldEveryEvents: Int64 = 1024

    /// Whether the events after the mark up to `eventID` (included), each at its limits, keep
    /// every all-time sum within the capacity.
    func admits(through eventID: Int64) -> Bool {
        let events = eventID - rolledUpTo
        let fits = { (sum: Int64, limit: Int64) -> Bool in
            let (most, overflow) = events.multipliedReportingOverflow(by: limit)
            return !overflow && most <= LedgerLimits.allTimeSumMax - sum
        }
        return fits(allTimePromptTokens, LedgerLimits.tokensPerCallMax)
            && fits(allTimeCompletionTokens, LedgerLimits.tokensPerCallMax)
            && fits(allTimeCostNanodollars, consumeCostBoundNanodollars)
            && fits(allTimeLatencyMilliseconds, LedgerLimits.latencyMillisecondsMax)
    }

    /// Whether the fold must run right after consume `eventID` of cost `cost`: its turn (every
    /// 1,024th event), a bound that no longer proves the capacity kept, or a cost above the
    /// bound (none from the price table is; the check keeps the bound true whatever happens).
    func foldIsDue(after eventID: Int64, costNanodollars cost: Int64?) -> Bool {
        eventID % Self.foldEveryEvents == 0 || (cost ?? 0) > consumeCostBoundNanodollars || !admits(through: eventID)
    }

    /// The mark's columns, for a statement that reads `ledger_settings` as `alias`.
    static func columns(of alias: String) -> String {
        """
        \(alias).rolled_up_to, \(alias).all_time_prompt_tokens, \(alias).all_time_completion_tokens, \
        \(alias).all_time_cost_nanos, \(alias).all_time_latency_ms, \(alias).consume_cost_bound_nanos
        """
    }

    static let select = "SELECT \(columns(of: "g")) FROM ledger_settings AS g WHERE g.id = 1"

    /// The mark as it stands in the caller's transaction.
    static func read(on connection: Connection) throws -> FoldMark {
        guard let mark = try connection.cachedStatement(select).fetchOne({ try FoldMark(row: $0, from: 0) }) else {
            preconditionFailure("ledger_settings has no row: the schema is broken")
        }
        return mark
    }

    /// Folds the pending usage into the rollups and the all-time sums up to event `eventID`, the
    /// last one recorded (`ledger_settings_fold_usage`, `ledger_settings_fold_all_time_sums`).
    ///
    /// - Throws: `LedgerError.conflict` with the trigger's message when a sum would pass the
    ///   capacity (the caller's transaction or savepoint then takes the consume back); the
    ///   connection's errors.
    static func fold(through eventID: Int64, on connection: Connection) throws {
        do {
            try connection.execute(foldStatement, [eventID])
        } catch let error as SQLiteError where error.isCapacityReached {
            throw LedgerError.conflict(error.message)
        }
    }

    /// Folds up to event `?1` (the schema-floor harness runs a copy: SchemaFloorTests).
    static let foldStatement = "UPDATE ledger_settings SET rolled_up_to = ?1 WHERE id = 1"
}

extension FoldMark {
    /// Decodes `columns(of:)` starting at column `first`.
    init(row: Row, from first: Int) throws {
        rolledUpTo = try row[first]
        allTimePromptTokens = try row[first + 1]
        allTimeCompletionTokens = try row[first + 2]
        allTimeCostNanodollars = try row[first + 3]
        allTimeLatencyMilliseconds = try row[first + 4]
        consumeCostBoundNanodollars = try row[first + 5]
    }
}
