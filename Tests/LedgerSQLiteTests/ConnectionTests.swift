import Foundation
import Testing

@testable import LedgerSQLite

@Suite("Opening, configuring and closing connections")
struct ConnectionTests {
    @Test("A file is opened in WAL mode with foreign keys on and the configured busy timeout")
    func fileDefaults() throws {
        // Proves Connection(path:) switches a file to WAL, enables foreign keys and applies the busy timeout.
        try withConnection(options: Connection.Options(busyTimeoutMilliseconds: 1_234)) { connection, _ throws in
            #expect(try connection.scalar("PRAGMA journal_mode") == .text("wal"))
            #expect(try connection.integer("PRAGMA foreign_keys") == 1)
            #expect(try connection.integer("PRAGMA busy_timeout") == 1_234)
        }
    }

    @Test("The synchronous option sets PRAGMA synchronous", arguments: [
        (Synchronous.full, Int64(2)), (Synchronous.normal, Int64(1)),
    ])
    func synchronous(level: Synchronous, expected: Int64) throws {
        // Proves .full maps to synchronous = 2 and .normal to synchronous = 1.
        try withConnection(options: Connection.Options(synchronous: level)) { connection, _ throws in
            #expect(try connection.integer("PRAGMA synchronous") == expected)
        }
    }

    @Test("Switching to WAL waits out a lock for the busy timeout, then fails as busy")
    func walSwitchGivesUpAfterTheBusyTimeout() throws {
        // Proves the limit of the retry in enableWAL(): while another connection holds the
        // fresh file exclusively, opening it retries within the busy timeout and then reports
        // SQLITE_BUSY (it neither hangs nor fails another way); once the lock is gone it opens.
        try withTemporaryDirectory { directory in
            let path = directory.path()
            let holder = try Connection(path: path, options: Connection.Options(walAtOpen: false))
            defer { holder.close() }
            try holder.execute(sql: "BEGIN EXCLUSIVE")
            try holder.execute(sql: "CREATE TABLE t (x)")
            let error = #expect(throws: SQLiteError.self) {
                _ = try Connection(path: path, options: Connection.Options(busyTimeoutMilliseconds: 50))
            }
            #expect(error?.isBusy == true)
            try holder.execute(sql: "COMMIT")
            let opened = try Connection(path: path, options: Connection.Options(busyTimeoutMilliseconds: 50))
            defer { opened.close() }
            #expect(try opened.scalar("PRAGMA journal_mode") == .text("wal"))
        }
    }

    @Test("WAL mode persists in the file for the next connection")
    func walPersists() throws {
        // Proves the journal mode is written to the file, so a reader opened later also uses WAL.
        try withTemporaryDirectory { directory in
            let path = directory.path()
            try Connection(path: path).close()
            let reader = try Connection(path: path, options: Connection.Options(readOnly: true))
            defer { reader.close() }
            #expect(try reader.scalar("PRAGMA journal_mode") == .text("wal"))
        }
    }

    @Test("Foreign keys are enforced")
    func foreignKeysEnforced() throws {
        // Proves PRAGMA foreign_keys = ON is really in force: a dangling reference is refused.
        try withConnection { connection, _ in
            try connection.execute(
                sql: """
                    CREATE TABLE parents (id INTEGER PRIMARY KEY);
                    CREATE TABLE children (parent_id INTEGER NOT NULL REFERENCES parents (id));
                    """)
            let error = try #require(throws: SQLiteError.self) {
                try connection.execute("INSERT INTO children (parent_id) VALUES (?)", [Int64(99)])
            }
            #expect(error.isConstraint)
        }
    }

    @Test("An in-memory database opens and works without WAL")
    func inMemory() throws {
        // Proves ":memory:" skips the WAL switch (impossible in memory) and is otherwise usable.
        let connection = try Connection(path: ":memory:")
        defer { connection.close() }
        #expect(try connection.scalar("PRAGMA journal_mode") == .text("memory"))
        try connection.execute(sql: "CREATE TABLE t (x); INSERT INTO t VALUES (1)")
        #expect(try connection.integer("SELECT count(*) FROM t") == 1)
        #expect(try connection.integer("PRAGMA foreign_keys") == 1)
    }

    @Test("Opening a file that is not SQLite fails with SQLITE_NOTADB and leaves its bytes unchanged", arguments: [
        1, 200,
    ])
    func notADatabase(lineCount: Int) throws {
        // Proves a foreign file, shorter or longer than a page, is refused before anything (WAL
        // header, journal) is written to it.
        try withTemporaryDirectory { directory in
            let path = directory.path("notes.txt")
            let line = "This is a plain text file, not a SQLite database.\n"
            let original = Data(String(repeating: line, count: lineCount).utf8)
            try original.write(to: URL(fileURLWithPath: path))
            let error = try #require(throws: SQLiteError.self) { _ = try Connection(path: path) }
            #expect(error.code == .notADatabase)
            #expect(error.isCorrupt)
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == original)
            #expect(!FileManager.default.fileExists(atPath: path + "-wal"))
        }
    }

    @Test("Opening in a missing folder fails with SQLITE_CANTOPEN")
    func missingFolder() throws {
        // Proves an impossible path is a thrown, matchable error rather than a crash.
        try withTemporaryDirectory { directory in
            let path = directory.path("no/such/folder/test.sqlite")
            let error = try #require(throws: SQLiteError.self) { _ = try Connection(path: path) }
            #expect(error.code == .cannotOpen)
        }
    }

    @Test("create: false refuses to create a missing file")
    func createFalse() throws {
        // Proves the create option is honoured: no file appears.
        try withTemporaryDirectory { directory in
            let path = directory.path()
            let error = try #require(throws: SQLiteError.self) {
                _ = try Connection(path: path, options: Connection.Options(create: false))
            }
            #expect(error.code == .cannotOpen)
            #expect(!FileManager.default.fileExists(atPath: path))
        }
    }

    @Test("A read-only connection reads but refuses writes with SQLITE_READONLY")
    func readOnly() throws {
        // Proves readOnly opens the file without write access and a write is a matchable isReadOnly error.
        try withTemporaryDirectory { directory in
            let path = directory.path()
            let writer = try Connection(path: path)
            defer { writer.close() }
            try writer.execute(sql: "CREATE TABLE t (x); INSERT INTO t VALUES (1)")
            let reader = try Connection(path: path, options: Connection.Options(readOnly: true))
            defer { reader.close() }
            #expect(try reader.integer("SELECT count(*) FROM t") == 1)
            let error = try #require(throws: SQLiteError.self) { try reader.execute(sql: "INSERT INTO t VALUES (2)") }
            #expect(error.isReadOnly)
            #expect(try writer.integer("SELECT count(*) FROM t") == 1)
        }
    }

    @Test("cachedStatement returns the same Statement for the same SQL, another for other SQL")
    func statementCacheIdentity() throws {
        // Proves statements are cached by SQL text.
        try withConnection { connection, _ in
            let first = try connection.cachedStatement("SELECT 1")
            let second = try connection.cachedStatement("SELECT 1")
            let other = try connection.cachedStatement("SELECT 2")
            #expect(first === second)
            #expect(first !== other)
            // prepare never hands out the cached object.
            #expect(try connection.prepare("SELECT 1") !== first)
        }
    }

    @Test("SQL that fails to compile is not cached: it fails every time, and compiles once it becomes valid")
    func failingSQLNotCached() throws {
        // Proves a compile failure leaves no cache entry behind.
        try withConnection { connection, _ in
            let sql = "SELECT count(*) FROM later"
            #expect(throws: SQLiteError.self) { _ = try connection.cachedStatement(sql) }
            #expect(throws: SQLiteError.self) { _ = try connection.cachedStatement(sql) }
            try connection.execute(sql: "CREATE TABLE later (x)")
            let statement = try connection.cachedStatement(sql)
            #expect(try statement.fetchOne { row in try row[0] as Int64 } == 0)
            #expect(try connection.cachedStatement(sql) === statement)
        }
    }

    @Test("close() is idempotent, isOpen becomes false, and cached statements are finalized")
    func closeIsIdempotent() throws {
        // Proves a connection can be closed twice and that closing releases its cached statements.
        try withTemporaryDirectory { directory in
            let connection = try Connection(path: directory.path())
            #expect(connection.isOpen)
            let cached = try connection.cachedStatement("SELECT 1")
            #expect(cached.handle != nil)
            connection.close()
            #expect(!connection.isOpen)
            #expect(cached.handle == nil)
            connection.close()
            #expect(!connection.isOpen)
        }
    }

    @Test("Closing the only connection checkpoints the WAL and removes it")
    func closeRemovesWAL() throws {
        // Proves close() really closes the SQLite handle: the last close folds the WAL back into the file.
        try withTemporaryDirectory { directory in
            let path = directory.path()
            let connection = try Connection(path: path)
            try connection.execute(sql: "CREATE TABLE t (x); INSERT INTO t VALUES (1)")
            #expect(FileManager.default.fileExists(atPath: path + "-wal"))
            connection.close()
            #expect(!FileManager.default.fileExists(atPath: path + "-wal"))
        }
    }

    @Test("lastInsertRowID and changes report the latest write")
    func lastInsertAndChanges() throws {
        // Proves the two counters read the connection's most recent INSERT/UPDATE.
        try withConnection { connection, _ in
            try connection.execute(sql: "CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER)")
            try connection.execute("INSERT INTO t (id, x) VALUES (?, ?)", [Int64(41), Int64(1)])
            #expect(connection.lastInsertRowID == 41)
            try connection.execute("INSERT INTO t (x) VALUES (?)", [Int64(1)])
            #expect(connection.lastInsertRowID == 42)
            try connection.execute("UPDATE t SET x = ?", [Int64(2)])
            #expect(connection.changes == 2)
        }
    }

    @Test("A script runs every statement, skipping comments and blank space")
    func scriptRunsAll() throws {
        // Proves execute(sql:) runs each statement of a multi-statement script, including a trailing comment.
        try withConnection { connection, _ in
            try connection.execute(
                sql: """
                    -- a leading comment
                    CREATE TABLE t (x);

                    INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);
                    /* a block comment */ INSERT INTO t VALUES (3);
                    -- a trailing comment
                    """)
            #expect(try connection.integer("SELECT sum(x) FROM t") == 6)
        }
    }
}
