import Foundation
import Testing

@testable import LedgerSQLite

/// The application id the test migrations write: 'TEST'.
private let testApplicationID: Int32 = 0x5445_5354

/// Three migrations, each depending on the one before, so applying them out of order fails.
private let testMigrations = [
    Migration(
        version: 1, name: "0001_one.sql",
        sql: """
            PRAGMA application_id = \(testApplicationID);
            CREATE TABLE one (id INTEGER PRIMARY KEY, label TEXT NOT NULL);
            """),
    Migration(
        version: 2, name: "0002_two.sql",
        sql: """
            CREATE TABLE two (id INTEGER PRIMARY KEY, one_id INTEGER NOT NULL REFERENCES one (id));
            INSERT INTO one (label) VALUES ('seeded by 2');
            """),
    Migration(
        version: 3, name: "0003_three.sql",
        sql: """
            ALTER TABLE two ADD COLUMN note TEXT;
            INSERT INTO two (one_id, note) SELECT id, 'seeded by 3' FROM one;
            """),
]

/// A migrator over the first `count` test migrations.
private func migrator(knowing count: Int = testMigrations.count) -> Migrator {
    Migrator(migrations: Array(testMigrations.prefix(count)), applicationID: testApplicationID)
}

/// Everything a migration could change, to prove that a refused migration changed nothing.
private struct DatabaseSnapshot: Equatable {
    let schema: [String]
    let recordedMigrations: [String]
    let userVersion: Int64
    let applicationID: Int64
    let fileBytes: Data

    /// Reads the snapshot of the database file at `path` through a fresh connection, closed before
    /// the file's bytes are read.
    init(path: String) throws {
        let connection = try Connection(path: path)
        schema = try connection.texts(
            "SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_master ORDER BY type, name")
        let hasBookkeeping = try connection.integer(
            "SELECT count(*) FROM sqlite_master WHERE name = 'schema_migrations'")
        recordedMigrations =
            hasBookkeeping == 0
            ? [] : try connection.texts("SELECT version || ' ' || name FROM schema_migrations ORDER BY version")
        userVersion = try connection.integer("PRAGMA user_version")
        applicationID = try connection.integer("PRAGMA application_id")
        connection.close()
        fileBytes = try Data(contentsOf: URL(fileURLWithPath: path))
    }
}

@Suite("Migrator")
struct MigratorTests {
    @Test("Migrations apply in version order, once, and report the versions applied")
    func appliesInOrderOnce() throws {
        // Proves migrate() sorts migrations, applies each, records it, sets user_version and the
        // application id, and that a second run (on a new connection) applies nothing.
        try withTemporaryDirectory { directory in
            let path = directory.path()
            let shuffled = Migrator(migrations: testMigrations.reversed(), applicationID: testApplicationID)
            #expect(shuffled.knownVersion == 3)
            do {
                let connection = try Connection(path: path)
                defer { connection.close() }
                #expect(try shuffled.migrate(connection) == [1, 2, 3])
                #expect(try shuffled.appliedVersions(connection) == [1, 2, 3])
                #expect(
                    try connection.texts("SELECT name FROM schema_migrations ORDER BY version")
                        == ["0001_one.sql", "0002_two.sql", "0003_three.sql"])
                #expect(
                    try connection.integer("SELECT count(*) FROM schema_migrations WHERE length(applied_at) > 0") == 3)
                #expect(try connection.integer("PRAGMA user_version") == 3)
                #expect(try connection.integer("PRAGMA application_id") == Int64(testApplicationID))
                #expect(try connection.texts("SELECT note FROM two") == ["seeded by 3"])
                #expect(try shuffled.migrate(connection) == [])
            }
            let reopened = try Connection(path: path)
            defer { reopened.close() }
            #expect(try shuffled.migrate(reopened) == [])
            // Migration 2's seed row would be doubled had it run again.
            #expect(try reopened.integer("SELECT count(*) FROM one") == 1)
            #expect(try reopened.integer("SELECT count(*) FROM two") == 1)
        }
    }

    @Test("A binary that knows more migrations applies only the new ones")
    func appliesOnlyPending() throws {
        // Proves an upgrade applies versions above the recorded ones and leaves the old ones alone.
        try withConnection { connection, _ throws in
            #expect(try migrator(knowing: 1).migrate(connection) == [1])
            #expect(try connection.integer("PRAGMA user_version") == 1)
            #expect(try migrator().migrate(connection) == [2, 3])
            #expect(try connection.integer("PRAGMA user_version") == 3)
            #expect(try connection.integer("SELECT count(*) FROM schema_migrations") == 3)
        }
    }

    @Test("A failing migration rolls back only itself and throws; earlier migrations stay applied")
    func failingMigrationRollsBackAlone() throws {
        // Proves each migration runs in its own transaction: bad SQL in migration 2 leaves no trace of
        // it, keeps migration 1, and a corrected migration 2 applies on the next run.
        try withConnection { connection, _ in
            let broken = Migration(
                version: 2, name: "0002_two.sql",
                sql: """
                    CREATE TABLE two (id INTEGER PRIMARY KEY);
                    INSERT INTO one (label) VALUES ('seeded by broken 2');
                    INSERT INTO no_such_table VALUES (1);
                    """)
            let brokenMigrator = Migrator(
                migrations: [testMigrations[0], broken, testMigrations[2]], applicationID: testApplicationID)
            let error = try #require(throws: SQLiteError.self) { try brokenMigrator.migrate(connection) }
            #expect(error.message.contains("no_such_table"))
            #expect(error.sql?.contains("no_such_table") == true)
            #expect(connection.isAutocommit)
            #expect(try migrator().appliedVersions(connection) == [1])
            #expect(try connection.integer("PRAGMA user_version") == 1)
            #expect(try connection.integer("SELECT count(*) FROM sqlite_master WHERE name = 'two'") == 0)
            #expect(try connection.integer("SELECT count(*) FROM one") == 0)

            #expect(try migrator().migrate(connection) == [2, 3])
        }
    }

    @Test("A database with a migration newer than this binary knows is refused and left unchanged")
    func schemaTooNew() throws {
        // Proves an older binary never writes to a database written by a newer one.
        try withTemporaryDirectory { directory in
            let path = directory.path()
            do {
                let connection = try Connection(path: path)
                defer { connection.close() }
                try migrator().migrate(connection)
            }
            let before = try DatabaseSnapshot(path: path)
            do {
                let connection = try Connection(path: path)
                defer { connection.close() }
                #expect(throws: MigrationError.schemaTooNew(databaseVersion: 3, knownVersion: 2)) {
                    try migrator(knowing: 2).migrate(connection)
                }
            }
            #expect(try DatabaseSnapshot(path: path) == before)
        }
    }

    @Test("A database with tables but no schema_migrations is refused as foreign and left unchanged")
    func foreignTables() throws {
        // Proves the migrator does not adopt another application's database by adding its tables to it.
        try withTemporaryDirectory { directory in
            let path = directory.path()
            do {
                let connection = try Connection(path: path)
                defer { connection.close() }
                try connection.execute(sql: "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
            }
            let before = try DatabaseSnapshot(path: path)
            do {
                let connection = try Connection(path: path)
                defer { connection.close() }
                let error = try #require(throws: MigrationError.self) { try migrator().migrate(connection) }
                guard case .foreignDatabase = error else {
                    Issue.record("expected foreignDatabase, got \(error)")
                    return
                }
            }
            #expect(try DatabaseSnapshot(path: path) == before)
        }
    }

    @Test("A database carrying another application's id is refused and left unchanged")
    func foreignApplicationID() throws {
        // Proves a non-zero application_id other than ours is refused, even on an otherwise empty file.
        try withTemporaryDirectory { directory in
            let path = directory.path()
            do {
                let connection = try Connection(path: path)
                defer { connection.close() }
                try connection.execute(sql: "PRAGMA application_id = 42")
            }
            let before = try DatabaseSnapshot(path: path)
            #expect(before.applicationID == 42)
            do {
                let connection = try Connection(path: path)
                defer { connection.close() }
                #expect(throws: MigrationError.foreignDatabase("its application_id is 42")) {
                    try migrator().migrate(connection)
                }
            }
            #expect(try DatabaseSnapshot(path: path) == before)
        }
    }

    @Test("A recorded migration known under another name is a history mismatch")
    func historyMismatch() throws {
        // Proves diverged histories are refused instead of being silently treated as applied.
        try withConnection { connection, _ in
            try migrator(knowing: 1).migrate(connection)
            let renamed = Migrator(
                migrations: [Migration(version: 1, name: "0001_renamed.sql", sql: testMigrations[0].sql)],
                applicationID: testApplicationID)
            #expect(
                throws: MigrationError.historyMismatch(
                    version: 1, recordedName: "0001_one.sql", knownName: "0001_renamed.sql")
            ) {
                try renamed.migrate(connection)
            }
        }
    }

    @Test("Two connections migrating the same fresh file apply each migration exactly once")
    func twoConnectionsSequentially() throws {
        // Proves a connection opened before another one migrated does not re-apply its migrations.
        try withTemporaryDirectory { directory in
            let first = try Connection(path: directory.path())
            defer { first.close() }
            let second = try Connection(path: directory.path())
            defer { second.close() }
            #expect(try migrator().migrate(first) == [1, 2, 3])
            #expect(try migrator().migrate(second) == [])
            #expect(try second.integer("SELECT count(*) FROM schema_migrations") == 3)
            #expect(try second.integer("SELECT count(*) FROM one") == 1)
        }
    }

    @Test("Two threads migrating the same fresh file at once apply each migration exactly once")
    func twoConnectionsConcurrently() throws {
        // Proves the re-check under the write lock: whatever the interleaving, the two runs together
        // apply 1, 2 and 3 once each and neither fails.
        try withTemporaryDirectory { directory in
            let path = directory.path()
            let applied = Locked<[Int]>([])
            let ready = DispatchSemaphore(value: 0)
            let start = DispatchSemaphore(value: 0)
            let threads = (0..<2).map { _ in
                BackgroundThread {
                    ready.signal()
                    guard waitForSignal(start) else { throw BodyError() }
                    // Both threads open and migrate at once, like two processes starting together.
                    let connection = try Connection(path: path)
                    defer { connection.close() }
                    let versions = try migrator().migrate(connection)
                    applied.withLock { $0 += versions }
                }
            }
            try #require(waitForSignal(ready) && waitForSignal(ready))
            start.signal()
            start.signal()
            let failures = threads.map { $0.join() }
            #expect(failures == [nil, nil])
            #expect(applied.withLock { $0.sorted() } == [1, 2, 3])
            let connection = try Connection(path: path)
            defer { connection.close() }
            #expect(try connection.integer("SELECT count(*) FROM one") == 1)
        }
    }
}
