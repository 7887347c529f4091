import BudgetLedger
import BudgetLedgerStore
import Foundation
import PostgresNIO
import Testing

/// `openLedgerStore`: one location string opens either store, and a location that breaks the
/// rule is refused with a message that states it, before anything is opened or written.
@Suite("Opening a store by its location")
struct OpenLedgerStoreTests {
    @Test("a file path and a postgres:// URL each open a working store", arguments: StoreKind.allCases)
    func eachLocationOpensItsStore(_ kind: StoreKind) async throws {
        // Proves: the harness's location (a file path, a postgres:// URL) opens the store of
        // its kind, and a consume and a read go through `any LedgerStore`.
        try await withStore(kind) { subject in
            #expect(subject.store.storeName == kind.storeName)
            let answer = try await subject.store.consume("t1", prompt: 40, completion: 2, key: "k1")
            #expect(answer.budget.totalTokens == 42)
            #expect(try await subject.store.usage("t1")?.totalTokens == 42)
            // The protocol's own consume answers the domain's result (the library's typed API).
            let store: any LedgerStore = subject.store
            let typed = try await store.consume(
                "t1", promptTokens: 8, completionTokens: 0, idempotencyKey: nil, usage: .none, checked: true)
            #expect(typed.budget.totalTokens == 50 && typed.event.promptTokens == 8 && !typed.isReplay)
        }
    }

    @Test("a postgresql:// URL opens PostgreSQL too, with the default max given as an option")
    func postgresqlSchemeOpensPostgres() async throws {
        // Proves: the second spelling of the scheme is PostgreSQL's (not a file name), and the
        // option's default max is recorded in the database.
        let server = try await PostgresTestCluster.shared()
        let name = "open_store_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        try await PostgresTestCluster.withAdminClient(server) { session in
            try await session.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"))
        }
        let url = "postgresql://" + server.url(database: name).dropFirst("postgres://".count)
        let store = try await openLedgerStore(url, options: LedgerStoreOptions(maxTokensPerThread: 777))
        #expect(store.storeName == "PostgreSQL")
        #expect(try await store.maxTokensPerThread == 777)
        try await store.consume("t1", prompt: 5)
        #expect(try await store.usage("t1")?.maxTokens == 777)
        await store.close()
    }

    @Test("a file path opens SQLite, creating a missing file unless told not to")
    func filePathCreatesUnlessTold() async throws {
        // Proves: a missing file is created by default and works; with `createsMissingFile` off
        // a missing file is refused and not created, while an existing one opens.
        let folder = try newFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/ledger.db"
        let strict = LedgerStoreOptions(createsMissingFile: false, sqliteThreadCount: 2, sqliteWaitingCallsMax: 0)
        await expectRefused(path, options: strict, saying: "no ledger file")
        #expect(!FileManager.default.fileExists(atPath: path))

        let created = try await openLedgerStore(path, options: LedgerStoreOptions(sqliteThreadCount: 2))
        #expect(created.storeName == "SQLite")
        try await created.consume("t1", prompt: 7)
        await created.close()

        let reopened = try await openLedgerStore(path, options: strict)
        #expect(try await reopened.usage("t1")?.totalTokens == 7)
        await reopened.close()
    }

    @Test("a location that breaks the rule is refused, names the rule, and writes nothing")
    func badLocationsAreRefused() async throws {
        // Proves: each bad location throws `LedgerLocationError` whose message states the rule;
        // a folder stays empty, a mysql:// URL creates no file, and a postgres URL without a
        // database never reaches the user's own database (it gets no ledger schema).
        let folder = try newFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let server = try await PostgresTestCluster.shared()
        let noDatabase = server.url(database: "")
        await expectRefused(noDatabase, saying: "names no database")
        await expectRefused(String(noDatabase.dropLast()), saying: "names no database")
        await expectRefused("", saying: "empty")
        await expectRefused(folder, saying: "folder")
        await expectRefused(folder + "/missing/ledger.db", saying: "does not exist")
        await expectRefused("mysql://user@127.0.0.1/ledger", saying: "mysql://")
        await expectRefused("sqlite://" + folder + "/ledger.db", saying: "sqlite://")

        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "mysql:"))
        let ledgerTables = try await PostgresTestCluster.withAdminClient(server) { session in
            var count: Int64 = -1
            let rows = try await session.query(
                "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('events', 'schema_migrations')")
            for try await row in rows { count = try row.decode(Int64.self) }
            return count
        }
        #expect(ledgerTables == 0)
    }

    @Test("pool bounds outside the server's limits are refused before the file is created")
    func unusablePoolOptionsAreRefused() async throws {
        // Proves: a thread count of 0 or above the limit, or a negative queue, is bad input
        // naming the option, and the ledger file is not created.
        let folder = try newFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/ledger.db"
        let cases: [(LedgerStoreOptions, String)] = [
            (LedgerStoreOptions(sqliteThreadCount: 0), "sqliteThreadCount"),
            (LedgerStoreOptions(sqliteThreadCount: LedgerStoreOptions.sqliteThreadCountMax + 1), "sqliteThreadCount"),
            (LedgerStoreOptions(sqliteWaitingCallsMax: -1), "sqliteWaitingCallsMax"),
        ]
        for (options, field) in cases {
            let error = await #expect(throws: LedgerError.self) { _ = try await openLedgerStore(path, options: options) }
            guard case .invalidInput(let named, _)? = error else {
                Issue.record("\(field): expected invalidInput, got \(String(describing: error))")
                continue
            }
            #expect(named == field)
        }
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("a password stays out of the refusal's message")
    func passwordIsRedacted() async throws {
        // Proves: a refused URL is shown without its password (messages reach logs).
        let refusal = await #expect(throws: LedgerLocationError.self) {
            _ = try await openLedgerStore("postgres://ledger:s3cret@127.0.0.1:1")
        }
        #expect(refusal?.description.contains("s3cret") == false)
        #expect(refusal?.description.contains("***") == true)
    }

    /// Expects `openLedgerStore(location)` to fail with `LedgerLocationError`, its message
    /// containing `reason` and the rule.
    private func expectRefused(
        _ location: String, options: LedgerStoreOptions = LedgerStoreOptions(), saying reason: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async {
        let error = await #expect(throws: LedgerLocationError.self, sourceLocation: sourceLocation) {
            let store = try await openLedgerStore(location, options: options)
            await store.close()
        }
        let message = error?.description ?? ""
        #expect(message.contains(reason), "\(message)", sourceLocation: sourceLocation)
        #expect(message.contains(LedgerLocationError.rule), sourceLocation: sourceLocation)
    }

    private func newFolder() throws -> String {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("open-store-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        return folder
    }
}
