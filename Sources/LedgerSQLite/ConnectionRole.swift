import CSQLite
import Foundation

extension Connection {
    /// Defines the SQL function `connection_role()` on this connection: it returns `role`, or
    /// NULL when `role` is nil.
    ///
    /// Every connection this wrapper opens defines it, so schema SQL (a trigger's `WHEN`) can
    /// tell one connection from another: a trigger can step aside for a connection that does
    /// its work itself and still run for every other. A connection opened by another program
    /// does not define the function, so SQLite refuses to prepare any statement whose triggers
    /// call it ("no such function: connection_role"). The value is fixed for the connection's
    /// life, hence deterministic (SQLite may compute it once per statement).
    /// See <https://www.sqlite.org/c3ref/create_function.html>.
    ///
    /// - Throws: `SQLiteError` when SQLite cannot define the function (out of memory).
    func registerRole(_ role: String?) throws {
        // The role's C string lives as long as the function: SQLite frees it through the
        // destructor when the function is replaced or the connection closes.
        let text: UnsafeMutableRawPointer? = role.flatMap { role in strdup(role).map { UnsafeMutableRawPointer($0) } }
        if role != nil && text == nil {
            throw SQLiteError(extendedCode: ResultCode(rawValue: SQLITE_NOMEM), message: "could not copy the connection's role")
        }
        let resultCode = sqlite3_create_function_v2(
            liveHandle, "connection_role", 0, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, text,
            { context, _, _ in
                guard let text = sqlite3_user_data(context) else { return sqlite3_result_null(context) }
                // SQLITE_STATIC: the text outlives the call (it is freed only with the function).
                sqlite3_result_text(context, text.assumingMemoryBound(to: CChar.self), -1, nil)
            }, nil, nil, { text in free(text) })
        guard resultCode == SQLITE_OK else {
            throw SQLiteError.lastError(of: liveHandle, resultCode: resultCode, sql: nil)
        }
    }
}
