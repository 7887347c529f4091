internal import LedgerSQLite

/// A failure of the ledger's file, in the ledger's terms: what went wrong, and so whether a retry
/// can help. The storage engine's own words are kept in `detail` for the operator's log.
///
/// The SQLite layer's error type stays below the domain: callers (the CLI's exit codes, the
/// server's statuses) decide on `kind`, never on SQLite's result codes.
public struct StorageFailure: Error, Sendable, CustomStringConvertible {
    /// What went wrong with the file.
    public enum Kind: String, Sendable, Equatable {
        /// Another process held the ledger's lock past the busy timeout: the call wrote nothing
        /// and may be retried.
        case busy
        /// The disk, or the ledger's page cap, is full: nothing was recorded.
        case full
        /// The file is not a SQLite database at all; it was left untouched.
        case notADatabase
        /// The file is damaged.
        case corrupt
        /// The file cannot be opened, or opened for writing (permissions, a read-only file system).
        case readOnly
        /// Any other I/O or storage failure.
        case other
    }

    public let kind: Kind
    /// The storage engine's own explanation. It may quote SQL: it is for logs and the local
    /// operator, never for a remote client.
    public let detail: String
    /// The SQLite error behind the failure, for the tests and the group commit's fsync rule.
    let sqliteError: SQLiteError

    init(_ error: SQLiteError) {
        sqliteError = error
        detail = "\(error)"
        kind =
            if error.code == .notADatabase { .notADatabase }
            else if error.isCorrupt { .corrupt }
            else if error.isFull { .full }
            else if error.isReadOnly || error.code == .cannotOpen { .readOnly }
            else if error.isBusy { .busy }
            else { .other }
    }

    public var description: String {
        switch kind {
        case .notADatabase: "file is not a SQLite database (\(detail)); the file was left untouched"
        case .corrupt: "database file is corrupt (\(detail))"
        case .full: "disk full, nothing was recorded (\(detail))"
        case .readOnly: "cannot open for writing (\(detail))"
        case .busy: "another process held the ledger lock past the busy timeout (\(detail))"
        case .other: detail
        }
    }
}

/// Why a file cannot be used as this binary's ledger; it was left untouched.
public enum Incompatibility: Sendable, Equatable, CustomStringConvertible {
    /// A newer binary wrote it: its schema has versions this one does not know.
    case schemaTooNew(databaseVersion: Int, knownVersion: Int)
    /// Another application's database, or a migration history this binary does not recognise.
    case unrecognised(String)

    init(_ error: MigrationError) {
        if case .schemaTooNew(let databaseVersion, let knownVersion) = error {
            self = .schemaTooNew(databaseVersion: databaseVersion, knownVersion: knownVersion)
        } else {
            self = .unrecognised("\(error)")
        }
    }

    public var description: String {
        switch self {
        case .schemaTooNew(let databaseVersion, let knownVersion):
            "\(MigrationError.schemaTooNew(databaseVersion: databaseVersion, knownVersion: knownVersion))"
        case .unrecognised(let reason): reason
        }
    }
}
