import BudgetLedger
import PostgresNIO

extension PostgresLedger {
    /// Bills the usage of `model` recorded while it was unpriced, in [`from`, `to`) (UTC
    /// microseconds, by the consumes' own timestamps): appends one `reprice` event per consume
    /// recorded with no cost that the price table now prices, at the price in force at the
    /// consume's timestamp. `Ledger.reprice(model:from:to:)`'s rules, answers, limit and errors.
    ///
    /// History stays as recorded; the rollups, the billing views, the all-time figures and the
    /// exports show the corrected cost (migration 0008), and `verify` checks each reprice. A
    /// consume is repriced at most once (the schema's unique index), so a second call, or one
    /// running at the same time on another server, reprices nothing twice.
    ///
    /// Locks, in this order (docs/postgres.md, "How locks are taken"): the prices lock shared
    /// (a price write waits, so no price can start under a consume being billed unseen, and
    /// consumes are not held up), then the rollup rows the reprices will change, `usage_rollup`
    /// rows then `usage_agent_model` rows, each in key order, before the first insert. A consume
    /// locks one row of each in the same order, and two reprices lock theirs in one order, so
    /// they wait for each other instead of deadlocking. Two reprices of one consume meet on its
    /// rows: the second waits for the first's commit, and its insert, a later statement, no
    /// longer selects what the first billed; `ON CONFLICT DO NOTHING` skips what the locks could
    /// not order, so a concurrent reprice never fails its caller with a constraint error.
    ///
    /// - Parameters:
    ///   - model: an exact model name, or a pattern with one trailing `*`, normalised as everywhere.
    /// - Returns: what was appended, and how many unpriced consumes of the range remain.
    /// - Throws: `LedgerError.invalidInput` for a bad model, or a range that ends before it starts
    ///   or lies outside 1970…9999 (nothing written; an empty range reprices nothing);
    ///   `PostgresLedgerError` for the database.
    @discardableResult
    public func reprice(model: String, from: Int64, to: Int64) async throws -> RepriceResult {
        try await reprice(model: model, from: from, to: to, limit: LedgerLimits.repricesPerCallMax)
    }

    /// `reprice(model:from:to:)` appending at most `limit` events (tests reach the limit with a few).
    package func reprice(model: String, from: Int64, to: Int64, limit: Int64) async throws -> RepriceResult {
        let request = try RepriceRequest(model: model, from: from, to: to)
        precondition(limit > 0, "a reprice call appends at least one event")
        if request.isEmpty { return .nothing }
        return try await write { [self] connection in
            try await connection.execute(
                "SELECT pg_advisory_xact_lock_shared(\(PostgresSQL.pricesLockKey))", logger: logger)
            try await connection.execute(
                PostgresRepriceSQL.query(PostgresRepriceSQL.lockRollupRows, request, now: 0, limit: limit), logger: logger)
            let appended = PostgresRepriceSQL.query(
                PostgresRepriceSQL.insertReprices, request, now: configuration.clock(), limit: limit)
            // The statement always answers one row (an aggregate).
            let (considered, count, cost) = try await connection.fetchOne(
                appended, as: (Int64, Int64, Int64).self, logger: logger) ?? (Int64(0), Int64(0), Int64(0))
            let unpriced = try await connection.fetchOne(
                PostgresRepriceSQL.query(PostgresRepriceSQL.countUnrepriced, request, now: 0, limit: limit),
                as: Int64.self, logger: logger) ?? Int64(0)
            // A cost is never negative, and each reprice bills one consume considered: the figures agree.
            assert(cost >= 0 && count <= considered && considered <= limit)
            // Complete when the range held fewer candidates than the limit (SQLite's count < limit; a
            // candidate another server repriced first was considered, so a full page asks for a next call).
            return RepriceResult(
                repricedCount: count, costNanodollars: cost, unpricedCount: unpriced, isComplete: considered < limit)
        }
    }
}

/// The statements of `PostgresLedger.reprice` (migration 0008), SQLite's `RepriceSQL` in
/// PostgreSQL. Each takes `$1` now, `$2` from, `$3` to, `$4` the pattern, `$5` its literal (or
/// NULL), `$6` the limit (`query(_:_:now:limit:)` binds them all; a statement may leave some unused).
enum PostgresRepriceSQL {
    /// The consumes of the range recorded unpriced and not repriced yet, of the model `$4` (or of
    /// every model starting with the literal `$5`).
    static let unrepriced = """
        c.kind = 'consume' AND c.timestamp_us >= $2 AND c.timestamp_us < $3 AND c.cost_nanos IS NULL
          AND (ledger_model_name(c.model) = $4::text
               OR ($5::text IS NOT NULL AND left(ledger_model_name(c.model), length($5::text)) = $5::text))
          AND NOT EXISTS (SELECT 1 FROM events AS r WHERE r.caused_by = c.id AND r.kind = 'reprice')
        """

    /// The first `$6` of them, in id order, that the price table prices at their own timestamp,
    /// with their cost. Rates are at most 10⁷ nano-dollars a token and
    /// counts 10⁹ tokens (the schema's CHECKs), so a cost stays within the per-call limit, in bigint.
    static let candidates = """
        candidates AS MATERIALIZED (
            SELECT c.id, c.thread_id,
                   c.prompt_tokens * p.prompt_nanos_per_token + c.completion_tokens * p.completion_nanos_per_token AS cost_nanos
            FROM events AS c
            CROSS JOIN LATERAL (\(PostgresSQL.priceInForce(model: "c.model", at: "c.timestamp_us"))) AS p
            WHERE \(unrepriced)
            ORDER BY c.id LIMIT $6
        )
        """

    /// Locks the rollup rows the candidates' reprices change, in the order of migration 0008's
    /// `ledger_lock_reprice_rows` (a function: the server's role may not lock them itself).
    static let lockRollupRows = """
        WITH \(candidates)
        SELECT ledger_lock_reprice_rows(array(SELECT id FROM candidates ORDER BY id))
        """

    /// Appends a reprice at `$1` for each candidate, in id order; one that another transaction
    /// repriced first (the unique index events_reprice_once) is skipped. Answers the candidates
    /// considered, the reprices appended and the sum of their costs.
    static let insertReprices = """
        WITH \(candidates),
        appended AS (
            INSERT INTO events (timestamp_us, kind, thread_id, caused_by, cost_nanos)
            SELECT $1, 'reprice', thread_id, id, cost_nanos FROM candidates ORDER BY id
            ON CONFLICT (caused_by) WHERE kind = 'reprice' DO NOTHING
            RETURNING cost_nanos
        )
        SELECT (SELECT count(*) FROM candidates), count(*), coalesce(sum(cost_nanos), 0)::bigint FROM appended
        """

    /// The consumes of the range still unpriced and not repriced.
    static let countUnrepriced = "SELECT count(*) FROM events AS c WHERE \(unrepriced)"

    static func query(_ sql: String, _ request: RepriceRequest, now: Int64, limit: Int64) -> PostgresQuery {
        .sql(sql) {
            $0.append(now)
            $0.append(request.start)
            $0.append(request.end)
            $0.append(request.pattern)
            $0.append(request.literal)
            $0.append(limit)
        }
    }
}
