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
    /// Savepoints nest, inside or outside a transaction. When the savepoint's own `ROLLBACK TO`
    /// or `RELEASE` fails, nobody can tell which of the body's writes the transaction still
    /// holds (a failed body's could commit with the rest), so the whole transaction is rolled
    /// back and that statement's error is thrown in place of the body's: the caller must learn
    /// that the transaction is gone, not only that its body failed.
    /// See <https://www.sqlite.org/lang_savepoint.html>.
    public func savepoint<Result>(_ body: () throws -> Result) throws -> Result {
        let savepoint = nextSavepoint()
        defer { savepointEnded() }
        try execute(savepoint.begin, [])
        let result: Result
        do {
            result = try body()
        } catch {
            // When the whole transaction is already gone, there is nothing to undo.
            if !isAutocommit {
                // Rolling back to a savepoint keeps it open; release it so the stack unwinds.
                try endingTransactionOnFailure {
                    try execute(savepoint.rollback, [])
                    try execute(savepoint.release, [])
                }
            }
            throw error
        }
        try endingTransactionOnFailure { try execute(savepoint.release, []) }
        return result
    }

    /// Runs `statements`; when they fail, rolls back the whole transaction and rethrows.
    private func endingTransactionOnFailure(_ statements: () throws -> Void) throws {
        do {
            try statements()
        } catch {
            rollbackIfNeeded()
            throw error
        }
    }

    /// Rolls back when (and only when) a transaction is open.
    public func rollbackIfNeeded() {
        if !isAutocommit {
            try? execute("ROLLBACK TRANSACTION", [])
        }
    }
}
