import PostgresNIO

/// A failure of the PostgreSQL store itself: the server, the connection, or the schema.
///
/// The domain's outcomes are the same errors as the SQLite `Ledger`'s (`LedgerError.invalidInput`,
/// `.conflict`, `BudgetExhaustedError`…); this type is only for what SQLite reports as
/// `LedgerError.database` and `.incompatible`. Bound values never appear in messages.
public enum PostgresLedgerError: Error, Sendable, CustomStringConvertible {
    /// The server refused or failed a statement: its SQLSTATE (e.g. 23514) and message.
    case server(url: String, sqlState: String, message: String)
    /// The connection failed or closed before an answer: the write may or may not have committed
    /// only if it failed during COMMIT; otherwise nothing was recorded.
    case connection(url: String, String)
    /// The database cannot be used as this ledger: its schema is newer than this binary's, or it
    /// is another application's.
    case incompatible(url: String, String)
    /// The `postgres://` URL cannot be used.
    case invalidURL(String)
    /// The ledger was closed.
    case closed

    public var description: String {
        switch self {
        case .server(let url, let sqlState, let message):
            return "ledger \(url): PostgreSQL error \(sqlState): \(message)"
        case .connection(let url, let reason):
            return "ledger \(url): connection failed: \(reason)"
        case .incompatible(let url, let reason):
            return "ledger \(url): \(reason)"
        case .invalidURL(let reason):
            return "invalid PostgreSQL URL: \(reason)"
        case .closed:
            return "the ledger is closed"
        }
    }

    /// The SQLSTATE of a server error, nil for the other cases.
    public var sqlState: String? {
        if case .server(_, let sqlState, _) = self { return sqlState }
        return nil
    }

    /// Whether the database could not be reached or went away: a lost or refused connection, or
    /// a server that is shutting down, starting up or in recovery (SQLSTATE classes 08 and 57P).
    /// Such a call wrote nothing, unless the connection was lost during its COMMIT; a retry
    /// later may succeed (the REST server answers 503).
    public var isUnavailable: Bool {
        switch self {
        case .connection: return true
        case .server(_, let sqlState, _): return Self.isUnavailable(sqlState: sqlState)
        case .incompatible, .invalidURL, .closed: return false
        }
    }

    /// A serialization failure or deadlock still failing after the store's retries, or a server
    /// out of connection slots (40001, 40P01, 53300): busy rather than down; retry later.
    public var isTransient: Bool {
        guard let sqlState else { return false }
        return sqlState == "40001" || sqlState == "40P01" || sqlState == "53300"
    }

    /// SQLSTATE class 08 (connection exception) or 57P01–57P05 (admin shutdown, crash shutdown,
    /// cannot connect now, database dropped, idle session timeout).
    static func isUnavailable(sqlState: String) -> Bool {
        sqlState.hasPrefix("08") || sqlState.hasPrefix("57P")
    }

    /// Maps a PostgresNIO error to this type (other errors are returned unchanged).
    static func wrapping(_ error: any Error, url: String) -> any Error {
        if let error = error as? PostgresPoolError { return PostgresLedgerError.connection(url: url, error.reason) }
        guard let error = error as? PSQLError else { return error }
        if error.code == .poolClosed { return PostgresLedgerError.closed }
        if let state = error.serverInfo?[.sqlState] {
            return PostgresLedgerError.server(url: url, sqlState: state, message: error.serverInfo?[.message] ?? "")
        }
        return PostgresLedgerError.connection(url: url, "\(error.code)")
    }
}

extension PSQLError {
    /// SQLSTATE 40001 (serialization failure) or 40P01 (deadlock detected): the server rolled
    /// the transaction back and it may be run again from the start.
    var isTransient: Bool {
        guard let state = serverInfo?[.sqlState] else { return false }
        return state == "40001" || state == "40P01"
    }

    /// SQLSTATE 23505 on the index named: another transaction committed the same key first.
    func isUniqueViolation(on index: String) -> Bool {
        serverInfo?[.sqlState] == "23505" && serverInfo?[.constraintName] == index
    }
}
