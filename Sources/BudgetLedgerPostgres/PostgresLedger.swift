import BudgetLedger
import Foundation
import Logging
import PostgresNIO
import Synchronization

/// The ledger on PostgreSQL: the same domain rules and errors as the SQLite `Ledger`, its
/// storage in a PostgreSQL database that many servers may share.
///
/// Every write is one transaction on a pooled connection. Writes to a thread first lock the
/// thread's row in `thread_locks` (`SELECT … FOR UPDATE`, created with `INSERT … ON CONFLICT DO
/// NOTHING`), so check-and-consume is exact across connections and processes; a transaction
/// the server rolls back as a serialization failure or a deadlock (40001, 40P01) is run again,
/// invisibly, up to `Configuration.retriesMax` times. Nothing returns before COMMIT has
/// returned, with `synchronous_commit` on for the store's sessions. See docs/postgres.md.
public final class PostgresLedger: Sendable {
    /// How a PostgreSQL ledger is opened.
    public struct Configuration: Sendable {
        /// The warning levels, as `Ledger.Configuration.thresholds`.
        public var thresholds: [BudgetThreshold]
        /// The clock: UTC microseconds since 1970. Tests may inject one.
        public var clock: @Sendable () -> Int64
        /// Connections in the pool (each a server process): at most this many writes at once.
        public var connectionsMax: Int
        /// Runs of one write after the first when the server rolls it back as transient.
        public var retriesMax: Int
        /// The longest a new connection may take to open (TCP or unix socket, before the startup).
        public var connectTimeout: Duration
        /// The longest a call waits for a pooled connection while the store's attempts to
        /// connect fail (the database is down or refuses it), before failing with
        /// `PostgresLedgerError.connection` (nothing written). A statement, once running, is not timed.
        public var leaseTimeout: Duration
        /// The longest a call waits for a pooled connection in any case: while the database
        /// answers but every connection stays busy, or connecting is slow.
        public var busyLeaseTimeout: Duration
        /// The longest a feed page waits for the transactions in flight when it is read (each
        /// may commit an event below the page's end); past it the page holds nothing new and
        /// the caller asks again (`events(after:limit:)`).
        public var feedWaitMax: Duration
        /// The longest a read or a write may take once it has its connection (counted from the
        /// call's start, in steps of `leaseTimeout`; row-lock waits included) before its caller is answered `PostgresLedgerError.connection` ("may or may
        /// not have taken effect"; a retry under the same idempotency key records once) and the
        /// pool's client is replaced. Not for `verify` or an export, which are long by nature.
        public var callTimeout: Duration

        public init(
            thresholds: [BudgetThreshold] = BudgetThreshold.defaults,
            clock: @escaping @Sendable () -> Int64 = Ledger.systemClockMicroseconds,
            connectionsMax: Int = 16, retriesMax: Int = 16, connectTimeout: Duration = .seconds(3),
            leaseTimeout: Duration = .seconds(5), busyLeaseTimeout: Duration = .seconds(30),
            feedWaitMax: Duration = .seconds(2), callTimeout: Duration = .seconds(60)
        ) {
            self.feedWaitMax = feedWaitMax
            self.callTimeout = callTimeout
            self.thresholds = thresholds
            self.clock = clock
            self.connectionsMax = connectionsMax
            self.retriesMax = retriesMax
            self.connectTimeout = connectTimeout
            self.leaseTimeout = leaseTimeout
            self.busyLeaseTimeout = busyLeaseTimeout
        }
    }

    /// The migrations carried inside this binary (`migrations/postgres/`), in order.
    public static var migrations: [PostgresMigration] { EmbeddedMigrations.all.sorted { $0.version < $1.version } }

    /// Whether `location` names a PostgreSQL database (`postgres://` or `postgresql://`) rather than a file.
    public static func isPostgresURL(_ location: String) -> Bool { PostgresURL.isPostgres(location) }

    /// The URL, without its password.
    public let url: String
    public let configuration: Configuration
    let thresholds: [BudgetThreshold]
    let pool: PostgresPool
    let logger: Logger
    /// Set by `close()`: later calls throw `PostgresLedgerError.closed` before touching the pool.
    let isClosed = Atomic<Bool>(false)

    /// Connects to `url`, applies pending migrations, and records `maxTokensPerThread` as the
    /// default when it is given and differs from the stored one.
    ///
    /// - Throws: `PostgresLedgerError.invalidURL`, `.connection` when the server cannot be
    ///   reached, `.incompatible` for a newer or foreign schema; `LedgerError.invalidInput` for
    ///   bad thresholds or max.
    public init(url: String, maxTokensPerThread: Int64? = nil, configuration: Configuration = Configuration()) async throws {
        try Validate.thresholds(configuration.thresholds)
        let parsed = try PostgresURL(url)
        var clientConfiguration = parsed.configuration
        clientConfiguration.options.maximumConnections = max(1, configuration.connectionsMax)
        // Durability does not depend on the server's default: nothing is acknowledged before
        // its commit record is flushed.
        clientConfiguration.options.additionalStartupParameters = [("synchronous_commit", "on")]
        clientConfiguration.options.connectTimeout = configuration.connectTimeout
        self.url = parsed.redacted
        self.configuration = configuration
        self.thresholds = configuration.thresholds.sorted { $0.percent < $1.percent }
        var logger = Logger(label: "budget-ledger.postgres")
        logger.logLevel = .critical
        self.logger = logger
        let pool = PostgresPool(
            configuration: clientConfiguration, leaseTimeout: configuration.leaseTimeout,
            busyLeaseTimeout: configuration.busyLeaseTimeout, logger: logger)
        self.pool = pool
        do {
            let migrator = PostgresMigrator(migrations: Self.migrations, url: parsed.redacted)
            try await pool.withConnection { [logger] connection in
                try await migrator.migrate(connection, logger: logger)
            }
            if let maxTokensPerThread, try await self.maxTokensPerThread != maxTokensPerThread {
                try await configure(maxTokensPerThread: maxTokensPerThread)
            }
        } catch {
            await pool.close()
            throw PostgresLedgerError.wrapping(error, url: parsed.redacted)
        }
    }

    /// Closes the pool's connections. Later calls fail. Idempotent.
    public func close() async {
        isClosed.store(true, ordering: .sequentiallyConsistent)
        await pool.close()
    }

    /// How many times the store replaced its connection pool after a lost connection or a
    /// connection that could not be made (see `PostgresPool`).
    public var poolReplacements: Int { pool.replacements }

    /// Failed attempts to open a connection since the ledger opened (every client of its pool).
    public var connectionFailures: Int { pool.connectionFailures }

    /// Runs `body` in one transaction, again from the start when the server rolls it back as a
    /// serialization failure or deadlock, or when another transaction committed the same
    /// idempotency key first (the run again then replays it). Maps PostgreSQL's errors.
    func write<Result: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> Result) async throws -> Result {
        var attempt = 0
        while true {
            guard !isClosed.load(ordering: .sequentiallyConsistent) else { throw PostgresLedgerError.closed }
            do {
                return try await pool.withConnection(callTimeout: configuration.callTimeout) { [logger] connection in
                    try await connection.execute("BEGIN", logger: logger)
                    do {
                        let result = try await body(connection)
                        try await connection.execute("COMMIT", logger: logger)
                        return result
                    } catch {
                        await connection.rollBack(after: error, logger: logger)
                        throw error
                    }
                }
            } catch let error as PSQLError
                where attempt < configuration.retriesMax
                && (error.isTransient || error.isUniqueViolation(on: "events_idempotency_key"))
            {
                attempt += 1
                continue
            } catch {
                throw PostgresLedgerError.wrapping(error, url: url)
            }
        }
    }

    /// Runs `body` on a pooled connection outside any explicit transaction (one statement reads one snapshot).
    /// `timed`: bounded by `Configuration.callTimeout` (false for a read as long as its consumer,
    /// an export).
    func read<Result: Sendable>(
        timed: Bool = true, _ body: @escaping @Sendable (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        guard !isClosed.load(ordering: .sequentiallyConsistent) else { throw PostgresLedgerError.closed }
        do {
            return try await pool.withConnection(callTimeout: timed ? configuration.callTimeout : nil) { connection in
                try await body(connection)
            }
        } catch {
            throw PostgresLedgerError.wrapping(error, url: url)
        }
    }
}

extension PostgresConnection {
    /// Ends the transaction that `error` interrupted. Not on a connection that failed:
    /// PostgreSQL rolls back the transaction of a session that ends, and postgres-nio 1.33.2
    /// never answers a statement sent on a connection after the server closed it. A ROLLBACK
    /// there held its caller forever, and with it a server's graceful shutdown (a request in
    /// flight when PostgreSQL crashed never ended: PostgresServeTests.serverKilledMidTraffic).
    func rollBack(after error: any Error, logger: Logger) async {
        guard !PostgresPool.isConnectionFailure(error) else { return }
        try? await execute("ROLLBACK", logger: logger)
    }

    /// The first row of `query` decoded as `type`, or nil when there is none. Reads to the end,
    /// so that an error after the first row is thrown (see `execute`).
    func fetchOne<each Column: PostgresDecodable & Sendable>(
        _ query: PostgresQuery, as type: (repeat each Column).Type, logger: Logger
    ) async throws -> (repeat each Column)? {
        let rows = try await self.query(query, logger: logger)
        var first: (repeat each Column)?
        var found = false
        for try await row in rows.decode(type) where !found {
            first = row
            found = true
        }
        return first
    }

    /// Runs a statement for its effect, to its end: an error that comes after the first rows
    /// (a lock wait that ends in a deadlock, a trigger) is thrown here, never dropped with them.
    func execute(_ query: PostgresQuery, logger: Logger) async throws {
        let rows = try await self.query(query, logger: logger)
        for try await _ in rows {}
    }
}
