import CSQLite

/// How a transaction takes its locks.
/// See <https://www.sqlite.org/lang_transaction.html>.
public enum TransactionKind: String, Sendable {
    /// Takes locks on first use. A deferred transaction that later writes can fail with an
    /// un-retryable `SQLITE_BUSY`: writers should not use it.
    case deferred = "DEFERRED"
    /// Takes the write lock at `BEGIN`, waiting up to the busy timeout: the right kind for writers.
    case immediate = "IMMEDIATE"
    /// Like immediate; in WAL mode the same.
    case exclusive = "EXCLUSIVE"
}

extension Connection {
    /// Runs `body` in a transaction: commits when it returns, rolls back when it throws.
    ///
    /// The body's error is rethrown as is; a failed rollback never hides it. When `COMMIT`
    /// itself fails, the transaction is rolled back and the commit's error is thrown.
    public func transaction<Result>(_ kind: TransactionKind = .immediate, _ body: () throws -> Result) throws -> Result {
        try execute("BEGIN \(kind.rawValue) TRANSACTION", [])
        let result: Result
        do {
            result = try body()
            try execute("COMMIT TRANSACTION", [])
        } catch {
            rollbackIfNeeded()
            throw error
        }
        return result
    }

    /// Runs `body` inside a savepoint: released when it returns, rolled back to when it throws.
    ///
    /// Savepoints nest, inside or outside a transaction.
    /// See <https://www.sqlite.org/lang_savepoint.html>.
    public func savepoint<Result>(_ body: () throws -> Result) throws -> Result {
        let savepoint = nextSavepoint()
        defer { savepointEnded() }
        try execute(savepoint.begin, [])
        let result: Result
        do {
            result = try body()
        } catch {
            // Rolling back to a savepoint keeps it open; release it so the stack unwinds.
            // When the whole transaction is already gone, there is nothing to undo.
            if !isAutocommit {
                try? execute(savepoint.rollback, [])
                try? execute(savepoint.release, [])
            }
            throw error
        }
        try execute(savepoint.release, [])
        return result
    }

    /// Rolls back when (and only when) a transaction is open.
    public func rollbackIfNeeded() {
        if !isAutocommit {
            try? execute("ROLLBACK TRANSACTION", [])
        }
    }
}
