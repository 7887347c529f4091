import CSQLite
import Foundation

/// SQLite's `SQLITE_TRANSIENT`: tells SQLite to copy a bound buffer before the call returns.
/// The C macro is a cast Swift cannot import.
private var transientDestructor: sqlite3_destructor_type {
    unsafeBitCast(-1, to: sqlite3_destructor_type.self)
}

/// A prepared statement: compiled once, then reset, bound and stepped many times.
///
/// A statement belongs to one connection and is not `Sendable`. It is finalized when it is
/// released, or when its connection closes, whichever comes first.
/// See <https://www.sqlite.org/c3ref/stmt.html>.
public final class Statement {
    private(set) var handle: OpaquePointer?
    /// The SQL text this statement was compiled from.
    public let sql: String
    private var columnIndexes: [String: Int]?

    init(handle: OpaquePointer, sql: String) {
        self.handle = handle
        self.sql = sql
    }

    deinit {
        finalize()
    }

    /// Finalizes the compiled statement. Using the statement afterwards is a programming error.
    func finalize() {
        if let handle {
            sqlite3_finalize(handle)
            self.handle = nil
        }
    }

    private var liveHandle: OpaquePointer {
        guard let handle else {
            preconditionFailure("statement used after its connection closed: \(sql)")
        }
        return handle
    }

    /// The number of `?` parameters in the statement.
    public var parameterCount: Int { Int(sqlite3_bind_parameter_count(liveHandle)) }

    /// The number of result columns.
    public var columnCount: Int { Int(sqlite3_column_count(liveHandle)) }

    /// The name of result column `index` (0-based).
    public func columnName(at index: Int) -> String {
        String(cString: sqlite3_column_name(liveHandle, Int32(index)))
    }

    /// Resets the statement so it can run again, and clears every binding.
    /// See <https://www.sqlite.org/c3ref/reset.html>.
    public func reset() {
        rewind()
        sqlite3_clear_bindings(liveHandle)
    }

    /// Resets the statement, keeping its bindings.
    private func rewind() {
        // The result of sqlite3_reset repeats the last step's error, already reported by step().
        sqlite3_reset(liveHandle)
        // SQLite recompiles a statement silently after a schema change, and the columns may
        // move: names are looked up afresh for every run.
        columnIndexes = nil
    }

    /// Binds `value` to parameter `index` (1-based, as in SQLite).
    ///
    /// An index out of range is a programming error, not an input error.
    public func bind(_ value: SQLiteValue, at index: Int) throws {
        let handle = liveHandle
        precondition(index >= 1 && index <= parameterCount, "bind index \(index) out of range for `\(sql)`")
        let position = Int32(index)
        let resultCode: Int32
        switch value {
        case .null:
            resultCode = sqlite3_bind_null(handle, position)
        case .integer(let integer):
            resultCode = sqlite3_bind_int64(handle, position, integer)
        case .real(let real):
            resultCode = sqlite3_bind_double(handle, position, real)
        case .text(let text):
            resultCode = Self.bindText(text, to: handle, at: position)
        case .blob(let data):
            resultCode = data.withUnsafeBytes { buffer in
                if let base = buffer.baseAddress {
                    return sqlite3_bind_blob64(handle, position, base, sqlite3_uint64(buffer.count), transientDestructor)
                }
                // An empty blob is a blob, not NULL.
                return sqlite3_bind_zeroblob(handle, position, 0)
            }
        }
        if resultCode != SQLITE_OK {
            throw SQLiteError.lastError(of: sqlite3_db_handle(handle), resultCode: resultCode, sql: sql)
        }
    }

    private static func bindText(_ text: String, to handle: OpaquePointer, at position: Int32) -> Int32 {
        var text = text
        return text.withUTF8 { buffer in
            // The explicit byte count keeps NUL bytes inside the text; an empty string needs a
            // non-null pointer or SQLite would bind NULL.
            if let base = buffer.baseAddress {
                return base.withMemoryRebound(to: CChar.self, capacity: buffer.count) { pointer in
                    sqlite3_bind_text64(
                        handle, position, pointer, sqlite3_uint64(buffer.count), transientDestructor, UInt8(SQLITE_UTF8))
                }
            }
            return sqlite3_bind_text(handle, position, "", 0, transientDestructor)
        }
    }

    /// Resets the statement and binds `arguments` to its parameters, in order.
    ///
    /// The count must equal the statement's parameter count: a mismatch is a programming error.
    public func bind(_ arguments: [any SQLiteBindable]) throws {
        // Every parameter is bound below, so the old bindings need no clearing first.
        rewind()
        precondition(
            arguments.count == parameterCount,
            "\(arguments.count) arguments for \(parameterCount) parameters in `\(sql)`")
        for (offset, argument) in arguments.enumerated() {
            try bind(argument.sqliteValue, at: offset + 1)
        }
    }

    /// Advances to the next row. Returns true when a row is available, false when done.
    /// See <https://www.sqlite.org/c3ref/step.html>.
    public func step() throws -> Bool {
        let handle = liveHandle
        switch sqlite3_step(handle) {
        case SQLITE_ROW:
            return true
        case SQLITE_DONE:
            return false
        case let resultCode:
            let error = SQLiteError.lastError(of: sqlite3_db_handle(handle), resultCode: resultCode, sql: sql)
            sqlite3_reset(handle)
            throw error
        }
    }

    /// Binds `arguments` and runs the statement to completion, ignoring any rows.
    public func execute(_ arguments: [any SQLiteBindable] = []) throws {
        try bind(arguments)
        defer { sqlite3_reset(liveHandle) }
        while try step() {}
    }

    /// Binds `arguments` and returns a cursor that steps the result rows lazily.
    ///
    /// The cursor borrows this statement: run nothing else on it until the cursor is done.
    public func rows(_ arguments: [any SQLiteBindable] = []) throws -> RowCursor {
        try bind(arguments)
        return RowCursor(statement: self)
    }

    /// Binds `arguments`, steps once and decodes the first row with `decode`; nil when there is no row.
    public func fetchOne<Result>(
        _ arguments: [any SQLiteBindable], _ decode: (Row) throws -> Result
    ) throws -> Result? {
        try bind(arguments)
        defer { sqlite3_reset(liveHandle) }
        guard try step() else { return nil }
        return try decode(Row(statement: self))
    }

    /// Runs the statement without arguments and decodes the first row; nil when there is none.
    public func fetchOne<Result>(_ decode: (Row) throws -> Result) throws -> Result? {
        try fetchOne([], decode)
    }

    /// Runs the statement without arguments and decodes every row.
    public func fetchAll<Result>(_ decode: (Row) throws -> Result) throws -> [Result] {
        try fetchAll([], decode)
    }

    /// Binds `arguments` and decodes every row with `decode`.
    public func fetchAll<Result>(
        _ arguments: [any SQLiteBindable], _ decode: (Row) throws -> Result
    ) throws -> [Result] {
        var results: [Result] = []
        var cursor = try rows(arguments)
        while let row = try cursor.next() {
            results.append(try decode(row))
        }
        return results
    }

    /// The value of column `index` of the current row.
    func value(at index: Int) -> SQLiteValue {
        let handle = liveHandle
        let column = Int32(index)
        switch sqlite3_column_type(handle, column) {
        case SQLITE_INTEGER:
            return .integer(sqlite3_column_int64(handle, column))
        case SQLITE_FLOAT:
            return .real(sqlite3_column_double(handle, column))
        case SQLITE_TEXT:
            let bytes = sqlite3_column_text(handle, column)
            let count = Int(sqlite3_column_bytes(handle, column))
            guard let bytes else { return .text("") }
            return .text(String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self))
        case SQLITE_BLOB:
            let count = Int(sqlite3_column_bytes(handle, column))
            guard let bytes = sqlite3_column_blob(handle, column), count > 0 else { return .blob(Data()) }
            return .blob(Data(bytes: bytes, count: count))
        default:
            return .null
        }
    }

    /// The index of the result column called `name` (case-insensitive, as SQLite), or nil.
    @usableFromInline func columnIndex(named name: String) -> Int? {
        if columnIndexes == nil {
            var indexes: [String: Int] = [:]
            for index in (0..<columnCount).reversed() {
                indexes[columnName(at: index).lowercased()] = index
            }
            columnIndexes = indexes
        }
        return columnIndexes?[name.lowercased()]
    }
}

/// Steps the rows of a statement one at a time.
public struct RowCursor {
    let statement: Statement
    private var finished = false

    init(statement: Statement) {
        self.statement = statement
    }

    /// The next row, or nil when there are no more. A row is valid until the next call.
    public mutating func next() throws -> Row? {
        guard !finished else { return nil }
        let hasRow: Bool
        do {
            hasRow = try statement.step()
        } catch {
            // step() reset the statement: stepping again would start over and repeat rows.
            finished = true
            throw error
        }
        if hasRow {
            return Row(statement: statement)
        }
        finished = true
        statement.reset()
        return nil
    }
}

/// The current row of a statement: read columns by index (0-based) or by name.
public struct Row {
    @usableFromInline let statement: Statement

    init(statement: Statement) {
        self.statement = statement
    }

    /// The raw value of column `index`.
    public func value(at index: Int) -> SQLiteValue {
        precondition(index >= 0 && index < statement.columnCount, "column \(index) out of range in `\(statement.sql)`")
        return statement.value(at: index)
    }

    /// Column `index` decoded as `Value`; throws `SQLITE_MISMATCH` when it holds another type.
    @inlinable public subscript<Value: SQLiteColumnDecodable>(index: Int) -> Value {
        get throws {
            let raw = value(at: index)
            guard let decoded = Value.decode(from: raw) else {
                throw SQLiteError(
                    extendedCode: .mismatch,
                    message: "column \(index) (\(statement.columnName(at: index))) holds \(raw.typeName), expected \(Value.self)",
                    sql: statement.sql)
            }
            return decoded
        }
    }

    /// Column `name` decoded as `Value`; a name the statement does not return is a programming error.
    @inlinable public subscript<Value: SQLiteColumnDecodable>(name: String) -> Value {
        get throws {
            guard let index = statement.columnIndex(named: name) else {
                preconditionFailure("no column \(name) in `\(statement.sql)`")
            }
            return try self[index]
        }
    }
}

extension SQLiteValue {
    /// The storage class name, for error messages (never the value itself).
    @usableFromInline var typeName: String {
        switch self {
        case .null: return "NULL"
        case .integer: return "INTEGER"
        case .real: return "REAL"
        case .text: return "TEXT"
        case .blob: return "BLOB"
        }
    }
}
