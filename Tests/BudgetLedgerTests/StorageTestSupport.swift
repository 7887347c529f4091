@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// The SQLite error of the `LedgerError.database` for `path` that `body` throws.
///
/// Records an issue, and returns nil, when `body` returns or throws anything else (another case
/// of `LedgerError`, another path, a `BudgetExhaustedError`), so that tests match the exact case
/// rather than the type.
func thrownDatabaseError(
    at path: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> SQLiteError? {
    do {
        try body()
        Issue.record("expected LedgerError.database(\(path), …), but the call returned", sourceLocation: sourceLocation)
    } catch LedgerError.database(let errorPath, let sqliteError) where errorPath == path {
        return sqliteError.sqliteError
    } catch {
        Issue.record("expected LedgerError.database(\(path), …), got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// How long a test waits for another thread or a condition before giving up: a guard against
/// hangs, never a measurement.
let hangGuardSeconds: Double = 60

/// Waits until `condition` holds; false when it still does not after `hangGuardSeconds`.
func eventually(_ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(hangGuardSeconds)
    while !condition() {
        if Date() > deadline { return false }
        usleep(1_000)
    }
    return true
}
