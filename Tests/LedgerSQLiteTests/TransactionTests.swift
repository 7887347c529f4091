import Foundation
import Testing

@testable import LedgerSQLite

/// An error only a test body throws, so a test can tell it apart from any SQLite error.
struct BodyError: Error, Equatable {
    let id = UUID()
}

/// Creates the table the transaction tests write to.
private func createEntries(_ connection: Connection) throws {
    try connection.execute(sql: "CREATE TABLE entries (label TEXT NOT NULL UNIQUE)")
}

/// Inserts one entry.
private func insert(_ label: String, _ connection: Connection) throws {
    try connection.execute("INSERT INTO entries (label) VALUES (?)", [label])
}

/// Every entry, in insertion order.
private func entries(_ connection: Connection) throws -> [String] {
    try connection.texts("SELECT label FROM entries ORDER BY rowid")
}

@Suite("Transactions and savepoints")
struct TransactionTests {
    @Test("A throwing body leaves nothing behind and its own error is the one rethrown")
    func throwingBodyRollsBack() throws {
        // Proves transaction() rolls back every write of a failed body and does not replace its error.
        try withConnection { connection, _ in
            try createEntries(connection)
            let thrown = BodyError()
            let caught = try #require(throws: BodyError.self) {
                try connection.transaction {
                    try insert("first", connection)
                    try insert("second", connection)
                    throw thrown
                }
            }
            #expect(caught == thrown)
            #expect(try entries(connection) == [])
            #expect(connection.isAutocommit)
        }
    }

    @Test("A body failing with a SQLite error rolls back its earlier writes and rethrows that error")
    func sqliteErrorInBodyRollsBack() throws {
        // Proves a constraint failure inside the body undoes the writes before it, and the constraint
        // error (not a rollback error) reaches the caller.
        try withConnection { connection, _ in
            try createEntries(connection)
            let error = try #require(throws: SQLiteError.self) {
                try connection.transaction {
                    try insert("kept only if committed", connection)
                    try insert("duplicate", connection)
                    try insert("duplicate", connection)
                }
            }
            #expect(error.extendedCode == .constraintUnique)
            #expect(error.sql == "INSERT INTO entries (label) VALUES (?)")
            #expect(try entries(connection) == [])
            #expect(connection.isAutocommit)
        }
    }

    @Test("A successful body commits and returns its result", arguments: [
        TransactionKind.deferred, .immediate, .exclusive,
    ])
    func successfulBodyCommits(kind: TransactionKind) throws {
        // Proves the writes of a returning body are committed: a second connection sees them.
        try withConnection { connection, directory in
            try createEntries(connection)
            let result = try connection.transaction(kind) { () throws -> Int in
                #expect(!connection.isAutocommit)
                try insert("one", connection)
                try insert("two", connection)
                return 2
            }
            #expect(result == 2)
            #expect(connection.isAutocommit)
            let other = try Connection(path: directory.path())
            defer { other.close() }
            #expect(try entries(other) == ["one", "two"])
        }
    }

    @Test("After a rollback the connection is in autocommit and a new transaction can start")
    func autocommitAfterRollback() throws {
        // Proves a failed transaction leaves no transaction open behind it.
        try withConnection { connection, _ in
            try createEntries(connection)
            #expect(connection.isAutocommit)
            #expect(throws: BodyError.self) {
                try connection.transaction {
                    #expect(!connection.isAutocommit)
                    throw BodyError()
                }
            }
            #expect(connection.isAutocommit)
            try connection.transaction { try insert("after", connection) }
            #expect(try entries(connection) == ["after"])
        }
    }

    @Test("A failing COMMIT rolls the transaction back and throws the commit's error")
    func failingCommitRollsBack() throws {
        // Proves a deferred foreign key violation, caught only at COMMIT, leaves nothing behind
        // and no transaction open.
        try withConnection { connection, _ in
            try connection.execute(
                sql: """
                    CREATE TABLE parents (id INTEGER PRIMARY KEY);
                    CREATE TABLE children (
                        parent_id INTEGER NOT NULL REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED
                    );
                    """)
            let error = try #require(throws: SQLiteError.self) {
                try connection.transaction {
                    try connection.execute("INSERT INTO children (parent_id) VALUES (?)", [Int64(7)])
                }
            }
            #expect(error.isConstraint)
            #expect(error.sql == "COMMIT TRANSACTION")
            #expect(connection.isAutocommit)
            #expect(try connection.integer("SELECT count(*) FROM children") == 0)
        }
    }

    @Test("A nested savepoint that throws undoes only its own writes")
    func nestedSavepointRollback() throws {
        // Proves rolling back a savepoint keeps the enclosing transaction's writes before and after it.
        try withConnection { connection, _ in
            try createEntries(connection)
            let innerError = BodyError()
            try connection.transaction {
                try insert("outer before", connection)
                let caught = try #require(throws: BodyError.self) {
                    try connection.savepoint {
                        try insert("inner", connection)
                        throw innerError
                    }
                }
                #expect(caught == innerError)
                #expect(!connection.isAutocommit)
                try insert("outer after", connection)
            }
            #expect(try entries(connection) == ["outer before", "outer after"])
            #expect(connection.isAutocommit)
        }
    }

    @Test("Savepoints nest: rolling back the innermost keeps the middle one's writes")
    func savepointsNest() throws {
        // Proves a savepoint inside a savepoint rolls back to its own start only, and that released
        // savepoints become part of the transaction.
        try withConnection { connection, _ in
            try createEntries(connection)
            try connection.transaction {
                try insert("transaction", connection)
                try connection.savepoint {
                    try insert("middle", connection)
                    #expect(throws: BodyError.self) {
                        try connection.savepoint {
                            try insert("innermost", connection)
                            throw BodyError()
                        }
                    }
                    // A second savepoint at the same depth works after the first was rolled back.
                    try connection.savepoint { try insert("middle sibling", connection) }
                }
            }
            #expect(try entries(connection) == ["transaction", "middle", "middle sibling"])
        }
    }

    @Test("A savepoint that throws inside a transaction that later throws leaves nothing")
    func savepointThenTransactionFailure() throws {
        // Proves a released savepoint's writes are still undone when the enclosing transaction fails.
        try withConnection { connection, _ in
            try createEntries(connection)
            #expect(throws: BodyError.self) {
                try connection.transaction {
                    try connection.savepoint { try insert("released", connection) }
                    throw BodyError()
                }
            }
            #expect(try entries(connection) == [])
            #expect(connection.isAutocommit)
        }
    }

    @Test("A savepoint outside a transaction commits on success and leaves nothing on failure")
    func savepointWithoutTransaction() throws {
        // Proves a top-level savepoint acts as its own transaction and ends in autocommit either way.
        try withConnection { connection, directory in
            try createEntries(connection)
            #expect(throws: BodyError.self) {
                try connection.savepoint {
                    try insert("failed", connection)
                    throw BodyError()
                }
            }
            #expect(connection.isAutocommit)
            #expect(try entries(connection) == [])
            let value = try connection.savepoint { () throws -> String in
                try insert("kept", connection)
                return "done"
            }
            #expect(value == "done")
            #expect(connection.isAutocommit)
            let other = try Connection(path: directory.path())
            defer { other.close() }
            #expect(try entries(other) == ["kept"])
        }
    }

    @Test("rollbackIfNeeded rolls back an open transaction and does nothing in autocommit")
    func rollbackIfNeeded() throws {
        // Proves rollbackIfNeeded is safe to call at any time and undoes an open transaction.
        try withConnection { connection, _ in
            try createEntries(connection)
            connection.rollbackIfNeeded()
            #expect(connection.isAutocommit)
            try connection.execute(sql: "BEGIN IMMEDIATE")
            try insert("pending", connection)
            #expect(!connection.isAutocommit)
            connection.rollbackIfNeeded()
            #expect(connection.isAutocommit)
            #expect(try entries(connection) == [])
        }
    }

    @Test("A savepoint that cannot be rolled back to rolls back the whole transaction and throws why")
    func failedRollbackToSavepointEndsTheTransaction() throws {
        // Proves a failed body's writes never survive its savepoint: when `ROLLBACK TO` fails
        // (here the body released the savepoint itself, so there is none to roll back to, and its
        // write has joined the transaction), the whole transaction is rolled back and the
        // rollback's error is thrown, so no caller can go on to commit the failed body's write.
        try withConnection { connection, _ in
            try createEntries(connection)
            try connection.execute(sql: "BEGIN IMMEDIATE")
            try insert("before", connection)
            let error = try #require(throws: SQLiteError.self) {
                try connection.savepoint {
                    try insert("partial", connection)
                    try connection.execute(sql: "RELEASE SAVEPOINT ledger_savepoint_1")
                    throw BodyError()
                }
            }
            #expect(error.code == .error)
            #expect(error.message.contains("no such savepoint"), "\(error)")
            #expect(connection.isAutocommit, "the transaction must be rolled back")
            #expect(try entries(connection) == [])
        }
    }

    @Test("A savepoint that cannot be released rolls back the whole transaction and throws why")
    func failedReleaseEndsTheTransaction() throws {
        // Proves the same for a body that returns: when `RELEASE` fails, the savepoint's fate is
        // unknown to the caller, so the whole transaction is rolled back and the error thrown.
        try withConnection { connection, _ in
            try createEntries(connection)
            try connection.execute(sql: "BEGIN IMMEDIATE")
            try insert("before", connection)
            let error = try #require(throws: SQLiteError.self) {
                try connection.savepoint {
                    try insert("inside", connection)
                    try connection.execute(sql: "RELEASE SAVEPOINT ledger_savepoint_1")
                }
            }
            #expect(error.code == .error)
            #expect(error.message.contains("no such savepoint"), "\(error)")
            #expect(connection.isAutocommit, "the transaction must be rolled back")
            #expect(try entries(connection) == [])
        }
    }
}
