import CSQLite

/// A SQLite result code, primary or extended.
///
/// The primary code is the low 8 bits of an extended code, so `SQLITE_CONSTRAINT_UNIQUE`
/// (2067) has the primary code `SQLITE_CONSTRAINT` (19).
/// See <https://www.sqlite.org/rescode.html>.
public struct ResultCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) {
        self.rawValue = rawValue
    }

    /// The primary result code: the low 8 bits of this code.
    public var primary: ResultCode { ResultCode(rawValue: rawValue & 0xFF) }

    public var description: String { "\(rawValue)" }

    public static let ok = ResultCode(rawValue: SQLITE_OK)
    public static let error = ResultCode(rawValue: SQLITE_ERROR)
    public static let busy = ResultCode(rawValue: SQLITE_BUSY)
    public static let locked = ResultCode(rawValue: SQLITE_LOCKED)
    public static let readOnly = ResultCode(rawValue: SQLITE_READONLY)
    public static let ioError = ResultCode(rawValue: SQLITE_IOERR)
    public static let corrupt = ResultCode(rawValue: SQLITE_CORRUPT)
    public static let full = ResultCode(rawValue: SQLITE_FULL)
    public static let cannotOpen = ResultCode(rawValue: SQLITE_CANTOPEN)
    public static let constraint = ResultCode(rawValue: SQLITE_CONSTRAINT)
    public static let mismatch = ResultCode(rawValue: SQLITE_MISMATCH)
    public static let misuse = ResultCode(rawValue: SQLITE_MISUSE)
    public static let range = ResultCode(rawValue: SQLITE_RANGE)
    public static let notADatabase = ResultCode(rawValue: SQLITE_NOTADB)
    public static let row = ResultCode(rawValue: SQLITE_ROW)
    public static let done = ResultCode(rawValue: SQLITE_DONE)

    /// `SQLITE_ABORT_ROLLBACK`: the statement was aborted because its transaction was rolled back.
    public static let abortRollback = ResultCode(rawValue: SQLITE_ABORT | (2 << 8))
    /// `SQLITE_IOERR_FSYNC`: a sync to the disk failed.
    public static let ioErrorFsync = ResultCode(rawValue: SQLITE_IOERR | (4 << 8))
    /// `SQLITE_CONSTRAINT_UNIQUE`: a UNIQUE index refused a duplicate.
    public static let constraintUnique = ResultCode(rawValue: SQLITE_CONSTRAINT | (8 << 8))
    /// `SQLITE_CONSTRAINT_PRIMARYKEY`.
    public static let constraintPrimaryKey = ResultCode(rawValue: SQLITE_CONSTRAINT | (6 << 8))
    /// `SQLITE_CONSTRAINT_TRIGGER`: a trigger called `RAISE(ABORT, …)`.
    public static let constraintTrigger = ResultCode(rawValue: SQLITE_CONSTRAINT | (7 << 8))
    /// `SQLITE_CONSTRAINT_CHECK`.
    public static let constraintCheck = ResultCode(rawValue: SQLITE_CONSTRAINT | (1 << 8))
}

/// The one error type of the SQLite layer: what SQLite said, and the SQL it said it about.
///
/// Bound values are never part of the error: they may be customer data.
/// See <https://www.sqlite.org/c3ref/errcode.html>.
public struct SQLiteError: Error, Sendable, CustomStringConvertible {
    /// The extended result code (connections open with extended codes on).
    public let extendedCode: ResultCode
    /// SQLite's own message, from `sqlite3_errmsg`, or one of ours for errors found before SQLite.
    public let message: String
    /// The SQL being prepared or run, when there was one.
    public let sql: String?

    public init(extendedCode: ResultCode, message: String, sql: String? = nil) {
        self.extendedCode = extendedCode
        self.message = message
        self.sql = sql
    }

    /// The primary result code, e.g. `.busy`, `.constraint`.
    public var code: ResultCode { extendedCode.primary }

    /// Another connection or process holds the lock for longer than the busy timeout.
    public var isBusy: Bool { code == .busy || code == .locked }
    /// The disk (or `PRAGMA max_page_count`) is full.
    public var isFull: Bool { code == .full }
    /// The file is damaged or is not a SQLite database at all.
    public var isCorrupt: Bool { code == .corrupt || code == .notADatabase }
    /// The file or its folder cannot be written.
    public var isReadOnly: Bool { code == .readOnly }
    /// A constraint (UNIQUE, CHECK, NOT NULL, a trigger's `RAISE`) refused the change.
    public var isConstraint: Bool { code == .constraint }

    public var description: String {
        var text = "SQLite error \(code.rawValue)"
        if extendedCode != code {
            text += " (extended \(extendedCode.rawValue))"
        }
        text += ": \(message)"
        if let sql {
            text += " - while executing `\(sql)`"
        }
        return text
    }

    /// The error SQLite reports for `handle` after a call returned `resultCode`.
    static func lastError(of handle: OpaquePointer?, resultCode: Int32, sql: String?) -> SQLiteError {
        // sqlite3_errmsg describes the most recent failing call on this connection, which is
        // the one that returned `resultCode`; fall back to the generic text when there is none.
        let message: String
        if let handle, let text = sqlite3_errmsg(handle) {
            message = String(cString: text)
        } else {
            message = String(cString: sqlite3_errstr(resultCode))
        }
        return SQLiteError(extendedCode: ResultCode(rawValue: resultCode), message: message, sql: sql)
    }
}
