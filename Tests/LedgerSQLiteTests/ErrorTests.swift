import Foundation
import Testing

@testable import LedgerSQLite

@Suite("SQLite errors")
struct ErrorTests {
    @Test("Bad SQL throws code 1 with SQLite's message, the SQL, and a readable description")
    func badSQL() throws {
        // Proves a compile error carries the primary and extended code, sqlite3_errmsg's text and the SQL.
        try withConnection { connection, _ in
            let error = try #require(throws: SQLiteError.self) { _ = try connection.prepare("SELEC 1") }
            #expect(error.code == .error)
            #expect(error.extendedCode == .error)
            #expect(error.message == "near \"SELEC\": syntax error")
            #expect(error.sql == "SELEC 1")
            #expect(error.description == "SQLite error 1: near \"SELEC\": syntax error - while executing `SELEC 1`")
        }
    }

    @Test("Bad SQL in a cached statement carries the same details")
    func badCachedSQL() throws {
        // Proves cachedStatement reports compile errors exactly like prepare.
        try withConnection { connection, _ in
            let error = try #require(throws: SQLiteError.self) {
                _ = try connection.cachedStatement("SELECT * FROM no_such_table")
            }
            #expect(error.code == .error)
            #expect(error.message == "no such table: no_such_table")
            #expect(error.sql == "SELECT * FROM no_such_table")
            #expect(
                error.description
                    == "SQLite error 1: no such table: no_such_table - while executing `SELECT * FROM no_such_table`")
        }
    }

    @Test("A script stops at its first failing statement and the error names that statement in full")
    func scriptNamesFailingStatement() throws {
        // Proves execute(sql:) runs statements in order, stops at the first failure, and puts the
        // whole failing statement (not a fragment of it) in the error.
        try withConnection { connection, _ in
            let error = try #require(throws: SQLiteError.self) {
                try connection.execute(
                    sql: """
                        CREATE TABLE before (x);
                        INSERT INTO before VALUES (1) garbage, more;
                        CREATE TABLE after (x);
                        """)
            }
            #expect(error.code == .error)
            #expect(error.message.contains("syntax error"))
            #expect(error.message == "near \"garbage\": syntax error")
            // SQLite stops compiling at the bad token; the error must still show the statement whole.
            #expect(
                error.sql?.contains("INSERT INTO before VALUES (1) garbage, more") == true,
                "got \(error.sql ?? "nil")")
            #expect(try connection.integer("SELECT count(*) FROM sqlite_master WHERE name = 'before'") == 1)
            #expect(try connection.integer("SELECT count(*) FROM sqlite_master WHERE name = 'after'") == 0)
        }
    }

    @Test("A runtime error in a script names the statement that failed")
    func scriptRuntimeError() throws {
        // Proves a statement that compiles but fails while running is the one named in the error.
        try withConnection { connection, _ in
            let error = try #require(throws: SQLiteError.self) {
                try connection.execute(
                    sql: """
                        CREATE TABLE items (id INTEGER PRIMARY KEY);
                        INSERT INTO items VALUES (1);
                        INSERT INTO items VALUES (1);
                        INSERT INTO items VALUES (2);
                        """)
            }
            #expect(error.isConstraint)
            #expect(error.extendedCode == .constraintPrimaryKey)
            #expect(error.sql == "INSERT INTO items VALUES (1);")
            #expect(try connection.integer("SELECT count(*) FROM items") == 1)
        }
    }

    @Test("A UNIQUE violation is a constraint error with the extended code 2067, and the statement stays usable")
    func uniqueViolation() throws {
        // Proves constraint failures can be matched by isConstraint and extendedCode, with SQLite's message.
        try withConnection { connection, _ in
            try connection.execute(sql: "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE)")
            let insert = "INSERT INTO users (email) VALUES (?)"
            try connection.execute(insert, ["first@example.com"])
            let error = try #require(throws: SQLiteError.self) {
                try connection.execute(insert, ["first@example.com"])
            }
            #expect(error.isConstraint)
            #expect(error.code == .constraint)
            #expect(error.extendedCode == .constraintUnique)
            #expect(!error.isBusy && !error.isCorrupt && !error.isFull && !error.isReadOnly)
            #expect(error.message == "UNIQUE constraint failed: users.email")
            #expect(error.sql == insert)
            let expected = "SQLite error 19 (extended 2067): UNIQUE constraint failed: users.email"
            #expect(error.description == "\(expected) - while executing `\(insert)`")
            // The failed cached statement was reset: it runs again with another value.
            try connection.execute(insert, ["second@example.com"])
            #expect(try connection.integer("SELECT count(*) FROM users") == 2)
        }
    }

    @Test("Bound values never appear in an error's description or message")
    func boundValuesStayOut() throws {
        // Proves customer data bound to a failing statement is not copied into errors, whatever the failure.
        let secret = "s3cr3t-customer-value-\(UUID().uuidString)"
        try withConnection { connection, _ in
            try connection.execute(
                sql: """
                    CREATE TABLE users (email TEXT NOT NULL UNIQUE CHECK (length(email) < 10));
                    CREATE TABLE strict_numbers (n INTEGER) STRICT;
                    CREATE TABLE loose (email TEXT UNIQUE);
                    """)
            try connection.execute("INSERT INTO loose (email) VALUES (?)", [secret])
            var errors: [SQLiteError] = []
            // UNIQUE
            errors.append(
                try #require(throws: SQLiteError.self) {
                    try connection.execute("INSERT INTO loose (email) VALUES (?)", [secret])
                })
            // CHECK
            errors.append(
                try #require(throws: SQLiteError.self) {
                    try connection.execute("INSERT INTO users (email) VALUES (?)", [secret])
                })
            // A type a STRICT table refuses
            errors.append(
                try #require(throws: SQLiteError.self) {
                    try connection.execute("INSERT INTO strict_numbers (n) VALUES (?)", [secret])
                })
            // Decoding a stored value as the wrong type
            errors.append(
                try #require(throws: SQLiteError.self) {
                    _ = try connection.prepare("SELECT email FROM loose").fetchOne { row in try row[0] as Int64 }
                })
            #expect(errors.map(\.code) == [.constraint, .constraint, .constraint, .mismatch])
            for error in errors {
                #expect(!error.description.contains(secret))
                #expect(!error.message.contains(secret))
                #expect(error.sql?.contains(secret) != true)
            }
        }
    }

    @Test("The primary code is the low byte of the extended code, and the description shows both")
    func resultCodes() {
        // Proves the code arithmetic and the description format independently of SQLite.
        #expect(ResultCode.constraintUnique.rawValue == 2067)
        #expect(ResultCode.constraintUnique.primary == .constraint)
        #expect(ResultCode.constraintPrimaryKey.primary == .constraint)
        #expect(ResultCode.busy.primary == .busy)
        let withoutSQL = SQLiteError(extendedCode: .constraintCheck, message: "CHECK constraint failed: positive")
        #expect(withoutSQL.description == "SQLite error 19 (extended 275): CHECK constraint failed: positive")
        #expect(withoutSQL.isConstraint)
        let busy = SQLiteError(extendedCode: ResultCode(rawValue: 5 | (2 << 8)), message: "database is locked")
        #expect(busy.isBusy)
        #expect(busy.code == .busy)
        #expect(SQLiteError(extendedCode: .locked, message: "locked").isBusy)
        #expect(SQLiteError(extendedCode: .notADatabase, message: "not a database").isCorrupt)
        #expect(SQLiteError(extendedCode: .full, message: "full").isFull)
        #expect(SQLiteError(extendedCode: .readOnly, message: "read-only").isReadOnly)
    }
}
