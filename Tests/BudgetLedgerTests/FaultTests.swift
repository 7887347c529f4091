@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Synchronization
import Testing

/// Faults a ledger file meets in production, on real files: a full disk, a read-only file or
/// folder, damaged files, a newer schema, and reopening a large ledger after a crash.
@Suite("Faults on real files")
struct FaultTests {
    // MARK: Disk full

    @Test("a full disk fails the write as 'disk full', records nothing, and writes resume once space is back")
    func diskFull() throws {
        // Proves that running out of space (PRAGMA max_page_count, which SQLite treats exactly as
        // a full disk) fails the consume with LedgerError.database(isFull) saying "disk full",
        // leaves every event and total as it was, and that the same file takes writes again
        // when reopened without the cap, the refused key then recording for the first time.
        let folder = try TemporaryFolder()
        let path = folder.path("full.db")
        try seedLedger(at: path, consumes: 3)
        let cap = try pageCount(at: path) + 6
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(maxPageCount: cap))
        var before = try LedgerState(ledger)
        var failure: (key: String, error: any Error)?
        for attempt in 1...10_000 {
            let key = "fill-\(attempt)"
            do {
                try ledger.consume("fill", promptTokens: 1, idempotencyKey: key, usage: Self.paddedUsage(attempt))
                before = try LedgerState(ledger, after: before)
            } catch {
                failure = (key, error)
                break
            }
        }
        let (failedKey, error) = try #require(failure, "the capped ledger never filled up")
        let storageFailure = try #require(Self.databaseError(error, path: path), "not a database error: \(error)")
        #expect(storageFailure.kind == .full, "\(storageFailure)")
        #expect("\(error)".contains("disk full"), "\(error)")
        #expect("\(error)".contains(path), "\(error)")
        #expect(try LedgerState(ledger, after: before) == before, "the failed consume left something behind")
        // Still full: the retry fails the same way and records nothing either.
        let retryError = thrownDatabaseError(at: path) {
            try ledger.consume("fill", promptTokens: 1, idempotencyKey: failedKey, usage: Self.paddedUsage(0))
        }
        #expect(retryError?.isFull == true, "\(String(describing: retryError))")
        #expect(try LedgerState(ledger, after: before) == before)
        #expect(try ledger.verify().isConsistent)
        ledger.close()

        // Space is back.
        let reopened = try Ledger(path: path)
        defer { reopened.close() }
        let retried = try reopened.consume("fill", promptTokens: 1, idempotencyKey: failedKey, usage: Self.paddedUsage(0))
        #expect(!retried.isReplay, "the key of a failed consume must not have been recorded")
        let report = try reopened.verify()
        #expect(report.isConsistent, "\(report.problems)")
        #expect(report.eventCount == before.eventCount + 1)
        #expect(try reopened.usage("fill")?.requestCount == (before.budgets["fill"]?.requestCount ?? 0) + 1)
    }

    @Test("under a full disk, concurrent writers are told the truth: every success is recorded, no failure is")
    func diskFullUnderConcurrentWriters() throws {
        // Proves group commit keeps its promise when the disk fills in the middle of a batch: a
        // consume that returned is in the file, and a consume that threw is not, for writers on
        // several threads sharing one ledger.
        let folder = try TemporaryFolder()
        let path = folder.path("full.db")
        try seedLedger(at: path, consumes: 1)
        let cap = try pageCount(at: path) + 12
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(maxPageCount: cap))
        let outcomes = Mutex((succeeded: [String](), failed: [String](), unexpected: [String]()))
        DispatchQueue.concurrentPerform(iterations: 4) { writer in
            var failures = 0
            var attempt = 0
            while failures < 5 && attempt < 20_000 {
                attempt += 1
                let key = "writer-\(writer)-\(attempt)"
                do {
                    try ledger.consume("w\(writer)", promptTokens: 1, idempotencyKey: key, usage: Self.paddedUsage(attempt))
                    outcomes.withLock { $0.succeeded.append(key) }
                } catch let error as LedgerError {
                    failures += 1
                    outcomes.withLock { $0.failed.append(key) }
                    if Self.databaseError(error, path: path)?.kind != .full {
                        outcomes.withLock { $0.unexpected.append("\(key): \(error)") }
                    }
                } catch {
                    outcomes.withLock { $0.unexpected.append("\(key): \(error)") }
                }
            }
        }
        ledger.close()
        let (succeeded, failed, unexpected) = outcomes.withLock { $0 }
        #expect(unexpected.isEmpty, "\(unexpected.prefix(5))")
        #expect(!succeeded.isEmpty && !failed.isEmpty, "\(succeeded.count) succeeded, \(failed.count) failed")

        let reopened = try Ledger(path: path)
        defer { reopened.close() }
        let recordedKeys = try Set(allEvents(of: reopened).compactMap(\.idempotencyKey))
        let lost = succeeded.filter { !recordedKeys.contains($0) }
        let phantom = failed.filter { recordedKeys.contains($0) }
        #expect(lost.isEmpty, "consumes that returned but are not recorded: \(lost.prefix(10))")
        #expect(phantom.isEmpty, "consumes that threw but were recorded: \(phantom.prefix(10))")
        let report = try reopened.verify()
        #expect(report.isConsistent, "\(report.problems)")
    }

    // MARK: Read-only

    @Test(
        "a read-only ledger file is refused with a clear error, never written, and left untouched",
        .enabled(if: ReadOnlyFiles.technique != nil, ReadOnlyFiles.unavailableReason))
    func readOnlyFile() throws {
        // Proves a ledger whose file cannot be written never crashes and never records: either
        // open fails, or (as SQLite falls back to a read-only connection) it opens for reading,
        // reads what is there, and the first write fails with LedgerError.database(isReadOnly)
        // naming the file and saying it cannot be opened for writing. Either way the file's bytes
        // are unchanged. As root, chmod does not stop writes, so the file is made immutable
        // (chattr +i) instead; see ReadOnlyFiles.
        let folder = try TemporaryFolder()
        let path = folder.path("ro.db")
        try seedLedger(at: path, consumes: 2)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try ReadOnlyFiles.protect(path)
        defer { ReadOnlyFiles.unprotect(path) }
        let error = try Self.firstWriteError(path)
        let failure = try #require(Self.databaseError(error, path: path), "not a database error: \(error)")
        #expect(failure.kind == .readOnly, "\(failure)")
        #expect("\(error)".contains("cannot open for writing"), "\(error)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == bytes)
    }

    @Test(
        "a ledger in a read-only folder, new or existing, fails to open with a clear error",
        .enabled(if: ReadOnlyFiles.technique != nil, ReadOnlyFiles.unavailableReason))
    func readOnlyFolder() throws {
        // Proves that a folder where SQLite cannot create the ledger, its WAL or its shared-memory
        // file is reported at open as LedgerError.database naming the file, for a new ledger and
        // for an existing one, and that the existing file is unchanged.
        let folder = try TemporaryFolder()
        let existing = folder.path("existing.db")
        try seedLedger(at: existing, consumes: 2)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: existing))
        try ReadOnlyFiles.protect(folder.url.path)
        defer { ReadOnlyFiles.unprotect(folder.url.path) }
        for path in [folder.path("new.db"), existing] {
            let error = try #require(throws: LedgerError.self) { try Ledger(path: path) }
            let failure = try #require(Self.databaseError(error, path: path), "not a database error: \(error)")
            #expect(failure.kind == .readOnly, "\(path): \(failure)")
            #expect("\(error)".contains("cannot open for writing"), "\(error)")
        }
        #expect(!FileManager.default.fileExists(atPath: folder.path("new.db")))
        #expect(try Data(contentsOf: URL(fileURLWithPath: existing)) == bytes)
    }

    // MARK: Damaged files

    @Test("a file that is not a database is refused as such, named, and left byte for byte as it was")
    func notADatabase() throws {
        // Proves a ledger path that holds something else (here, text) fails to open with
        // LedgerError.database(isCorrupt) naming the file, and that nothing was written to it.
        let folder = try TemporaryFolder()
        let path = folder.path("notes.db")
        let text = Data(String(repeating: "these are my notes, not a ledger\n", count: 300).utf8)
        try text.write(to: URL(fileURLWithPath: path))
        let error = try #require(throws: LedgerError.self) { try Ledger(path: path) }
        let failure = try #require(Self.databaseError(error, path: path), "not a database error: \(error)")
        #expect(failure.kind == .notADatabase, "\(failure)")
        #expect("\(error)".contains("not a SQLite database"), "\(error)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == text)
    }

    @Test("a truncated ledger, or one with garbage in its middle pages, is reported as damaged and left untouched")
    func damagedLedgers() throws {
        // Proves that damage is never silent: for a ledger cut to half its size, cut to 1000
        // bytes, or overwritten with garbage in the middle, either opening fails with
        // LedgerError.database(isCorrupt) naming the file, or it opens and verify throws that
        // error or reports integrity problems; never a crash, never a consistent report, never a
        // re-initialized file: the bytes on disk are the same afterwards.
        let folder = try TemporaryFolder()
        let original = folder.path("original.db")
        try seedLedger(at: original, consumes: 3_000)
        let intact = try Data(contentsOf: URL(fileURLWithPath: original))
        #expect(intact.count > 64 * 4_096, "the ledger must span many pages (\(intact.count) bytes)")
        var random = SeededBytes(seed: 42)
        let middle = (intact.count / 3)..<(2 * intact.count / 3)
        var garbled = intact
        garbled.replaceSubrange(middle, with: random.bytes(middle.count))
        let damaged: [(name: String, bytes: Data)] = [
            ("half.db", intact.prefix(intact.count / 2)),
            ("kilobyte.db", intact.prefix(1_000)),
            ("garbled.db", garbled),
        ]
        for (name, bytes) in damaged {
            let path = folder.path(name)
            try bytes.write(to: URL(fileURLWithPath: path))
            let outcome = Self.openAndVerify(path)
            switch outcome {
            case .failed(let error):
                let kind = Self.databaseError(error, path: path)?.kind
                #expect(kind == .corrupt || kind == .notADatabase, "\(name): \(error)")
                #expect("\(error)".contains(path), "\(name): \(error)")
            case .inconsistent(let problems):
                #expect(problems.contains { $0.hasPrefix("integrity:") }, "\(name): \(problems)")
            case .consistent(let events):
                Issue.record("\(name): the damaged ledger opened and verified as consistent (\(events) events)")
            }
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == bytes, "\(name) was modified")
            print("damaged ledger \(name) (\(bytes.count) bytes): \(outcome)")
        }
    }

    // MARK: Newer schema

    @Test("a ledger written by a newer schema is refused and left byte for byte as it was")
    func newerSchema() throws {
        // Proves an older binary never migrates, rewrites or switches the journal of a ledger
        // whose schema is newer than it knows: open fails with LedgerError.incompatible
        // (schemaTooNew) naming the file, and the bytes are unchanged.
        let folder = try TemporaryFolder()
        let path = folder.path("future.db")
        try seedLedger(at: path, consumes: 2)
        let knownVersion = try #require(Ledger.migrations.last?.version)
        do {
            let raw = try Connection(path: path)
            try raw.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [knownVersion + 1, "9999_from_the_future.sql"])
            try raw.execute(sql: "PRAGMA user_version = \(knownVersion + 1)")
            raw.close()
        }
        #expect(!FileManager.default.fileExists(atPath: path + "-wal"), "the future ledger must be checkpointed")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let error = try #require(throws: LedgerError.self) { try Ledger(path: path) }
        guard case .incompatible(let errorPath, .schemaTooNew(let databaseVersion, let known)) = error else {
            Issue.record("expected schemaTooNew, got \(error)")
            return
        }
        #expect(errorPath == path)
        #expect(databaseVersion == knownVersion + 1 && known == knownVersion)
        #expect("\(error)".contains(path) && "\(error)".contains("newer"), "\(error)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == bytes)
    }

    // MARK: Reopening after a crash

    @Test("reopening a large ledger after a crash reads the stored totals and never replays history")
    func reopenDoesNotReplayHistory() throws {
        // Proves budgets are derived when each event is written, not when the ledger is opened:
        // a crash image (files copied while the writer is still open, its WAL not checkpointed)
        // of a ledger with 50,000 consume events opens to totals that equal both the sums of the
        // events and verify's recomputation; and a total tampered with behind the ledger's back
        // is what a reopened ledger reports, so opening recomputed nothing.
        let folder = try TemporaryFolder()
        let path = folder.path("bulk.db")
        try seedLedger(at: path, consumes: 0)
        let threads = 8
        // Large enough that replaying it would be real work; small enough that verify, which
        // does replay it, keeps the test quick.
        let events = 50_000
        let crashed = folder.path("crashed.db")
        do {
            let raw = try Connection(path: path)
            try raw.transaction(.immediate) {
                for thread in 0..<threads {
                    try raw.execute(
                        "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (?, 'open', ?, ?)",
                        [Self.bulkStart, "bulk-\(thread)", Int64(1) << 40])
                }
                try raw.execute(sql: Self.bulkInsertSQL(events: events, threads: threads))
            }
            // The crash: copy the files while the writer still has them open.
            #expect(FileManager.default.fileExists(atPath: path + "-wal"))
            try FileManager.default.copyItem(atPath: path, toPath: crashed)
            try FileManager.default.copyItem(atPath: path + "-wal", toPath: crashed + "-wal")
            raw.close()
        }
        var expected: [String: (prompt: Int64, completion: Int64, requests: Int64)] = [:]
        for index in 1...events {
            let totals = expected["bulk-\(index % threads)", default: (0, 0, 0)]
            expected["bulk-\(index % threads)"] = (
                totals.prompt + Int64(index % 7 + 1), totals.completion + Int64(index % 3), totals.requests + 1
            )
        }

        let ledger = try Ledger(path: crashed)
        for (threadID, totals) in expected {
            let budget = try #require(try ledger.usage(threadID))
            #expect(
                budget.promptTokens == totals.prompt && budget.completionTokens == totals.completion
                    && budget.requestCount == totals.requests, "\(budget)")
        }
        let report = try ledger.verify()
        #expect(report.isConsistent, "\(report.problems)")
        #expect(report.eventCount >= Int64(events + threads))
        ledger.close()

        // Tamper with one stored total: a reopened ledger reports it as stored (verify's detection
        // of such a difference is proven in DurabilityTests).
        do {
            let raw = try Connection(path: crashed)
            try raw.execute(sql: "UPDATE thread_state SET prompt_tokens = prompt_tokens + 1 WHERE thread_id = 'bulk-0'")
            raw.close()
        }
        let reopened = try Ledger(path: crashed)
        defer { reopened.close() }
        #expect(try reopened.usage("bulk-0")?.promptTokens == expected["bulk-0"]!.prompt + 1)
    }

    // MARK: Helpers

    static let bulkStart: Int64 = 1_764_400_000_000_000

    /// One statement that appends `events` consumes round-robin on `threads` threads, through the
    /// events table so the triggers keep every derived total, as the ledger's own writes do.
    static func bulkInsertSQL(events: Int, threads: Int) -> String {
        """
        WITH RECURSIVE counter(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM counter WHERE i < \(events))
        INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens)
        SELECT \(bulkStart) + i, 'consume', 'bulk-' || (i % \(threads)), i % 7 + 1, i % 3 FROM counter
        """
    }

    /// Usage whose metadata is about 2 KB, so each consume takes a page or so and a cap fills quickly.
    static func paddedUsage(_ attempt: Int) -> UsageDetails {
        let padding = String(repeating: "x", count: 2_000)
        // `try!`: 2 KB of one string member is well inside the metadata limit.
        return try! UsageDetails(agentID: "agent-\(attempt % 5)", metadataJSON: "{\"padding\":\"\(padding)\"}")
    }

    /// The error of opening `path` or, when it opens, of its first write (after checking that it
    /// reads and that the failed write recorded nothing).
    static func firstWriteError(_ path: String) throws -> LedgerError {
        let ledger: Ledger
        do {
            ledger = try Ledger(path: path)
        } catch let error as LedgerError {
            print("read-only ledger file (\(ReadOnlyFiles.technique!)): refused at open: \(error)")
            return error
        }
        defer { ledger.close() }
        #expect(try ledger.usage("seed-0")?.requestCount == 1, "a read-only ledger still reads")
        let error = try #require(throws: LedgerError.self) { try ledger.consume("seed-0", promptTokens: 1) }
        #expect(try ledger.usage("seed-0")?.requestCount == 1)
        print("read-only ledger file (\(ReadOnlyFiles.technique!)): opened for reading; the first write failed: \(error)")
        return error
    }

    /// The storage failure inside `LedgerError.database` for `path`, or nil for any other error.
    static func databaseError(_ error: any Error, path: String) -> StorageFailure? {
        guard case .database(let errorPath, let failure)? = error as? LedgerError, errorPath == path else {
            return nil
        }
        return failure
    }

    enum OpenOutcome: CustomStringConvertible {
        case failed(any Error)
        case inconsistent([String])
        case consistent(events: Int64)

        var description: String {
            switch self {
            case .failed(let error): return "refused: \(error)"
            case .inconsistent(let problems): return "opened, verify found \(problems.count) problems: \(problems.prefix(3))"
            case .consistent(let events): return "opened and verified consistent (\(events) events)"
            }
        }
    }

    /// Opens `path` and verifies it, closing it again.
    static func openAndVerify(_ path: String) -> OpenOutcome {
        do {
            let ledger = try Ledger(path: path)
            defer { ledger.close() }
            let report = try ledger.verify()
            return report.isConsistent ? .consistent(events: report.eventCount) : .inconsistent(report.problems)
        } catch {
            return .failed(error)
        }
    }

    /// Creates a ledger with `consumes` consume events (and their thresholds) and closes it, so the
    /// WAL is checkpointed into the main file.
    private func seedLedger(at path: String, consumes: Int) throws {
        let ledger = try Ledger(path: path)
        defer { ledger.close() }
        for index in 0..<consumes {
            try ledger.consume(
                "seed-\(index % 10)", promptTokens: Int64(index % 50 + 1), idempotencyKey: "seed-\(index)",
                usage: UsageDetails(agentID: "agent-\(index % 3)", model: "gpt-4o"))
        }
    }

    private func pageCount(at path: String) throws -> Int64 {
        let raw = try Connection(path: path)
        defer { raw.close() }
        return try raw.prepare("PRAGMA page_count").fetchOne { try $0[0] as Int64 } ?? 0
    }

    private func allEvents(of ledger: Ledger) throws -> [LedgerEvent] {
        var events: [LedgerEvent] = []
        var after: Int64 = 0
        while true {
            let page = try ledger.events(after: after, limit: LedgerLimits.feedPageLimitMax)
            if page.events.isEmpty { return events }
            events += page.events
            after = page.lastID
        }
    }
}

/// What a reader can see of a ledger: every open budget, the usage totals and the last event id.
/// Equal snapshots mean nothing was written in between.
struct LedgerState: Equatable {
    let budgets: [String: ThreadBudget]
    let overview: UsageOverview
    let lastEventID: Int64
    let eventCount: Int64

    /// Reads the events after `previous` (or all of them) to count them without a full scan each time.
    init(_ ledger: Ledger, after previous: LedgerState? = nil) throws {
        budgets = Dictionary(uniqueKeysWithValues: try ledger.allUsage().map { ($0.threadID, $0) })
        overview = try ledger.usageOverview()
        var lastID = previous?.lastEventID ?? 0
        var count = previous?.eventCount ?? 0
        while true {
            let page = try ledger.events(after: lastID, limit: LedgerLimits.feedPageLimitMax)
            if page.events.isEmpty { break }
            count += Int64(page.events.count)
            lastID = page.lastID
        }
        lastEventID = lastID
        eventCount = count
    }
}

/// Bytes from a seeded SplitMix64, so a damaged file is the same on every run.
struct SeededBytes {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func bytes(_ count: Int) -> Data {
        var data = Data(capacity: count)
        while data.count < count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var mixed = state
            mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
            mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
            mixed ^= mixed >> 31
            withUnsafeBytes(of: mixed) { data.append(contentsOf: $0.prefix(count - data.count)) }
        }
        return data
    }
}

/// Makes a file or folder unwritable, even for root.
///
/// An ordinary user is stopped by the permission bits (chmod 0444 for a file, 0555 for a
/// folder). Root is not (CAP_DAC_OVERRIDE), so as root the file or folder is made immutable
/// with `chattr +i` (CAP_LINUX_IMMUTABLE, and a file system that supports it, such as ext4),
/// which stops every writer. When neither works, the read-only tests are skipped.
enum ReadOnlyFiles {
    enum Technique { case permissions, immutable }

    static let chattr = "/usr/bin/chattr"

    static let technique: Technique? = {
        if getuid() != 0 { return .permissions }
        return immutableWorks() ? .immutable : nil
    }()

    static let unavailableReason: Comment =
        "running as root where chmod does not stop writes, and chattr +i is unavailable (no chattr, no CAP_LINUX_IMMUTABLE, or a file system without it)"

    static func protect(_ path: String) throws {
        switch technique {
        case .permissions:
            let isFolder = (try? FileManager.default.attributesOfItem(atPath: path)[.type] as? FileAttributeType) == .typeDirectory
            try FileManager.default.setAttributes([.posixPermissions: isFolder ? 0o555 : 0o444], ofItemAtPath: path)
        case .immutable:
            try #require(runChattr("+i", path), "chattr +i \(path) failed")
        case nil:
            Issue.record("no way to make \(path) read-only")
        }
    }

    /// Undoes `protect`, so the temporary folder can be removed.
    static func unprotect(_ path: String) {
        switch technique {
        case .permissions:
            let isFolder = (try? FileManager.default.attributesOfItem(atPath: path)[.type] as? FileAttributeType) == .typeDirectory
            try? FileManager.default.setAttributes([.posixPermissions: isFolder ? 0o755 : 0o644], ofItemAtPath: path)
        case .immutable:
            _ = runChattr("-i", path)
        case nil:
            break
        }
    }

    /// Whether `chattr +i` works here and stops root from writing.
    private static func immutableWorks() -> Bool {
        guard FileManager.default.isExecutableFile(atPath: chattr) else { return false }
        let probe = FileManager.default.temporaryDirectory.appendingPathComponent("budget-ledger-immutable-\(UUID())").path
        guard FileManager.default.createFile(atPath: probe, contents: Data("probe".utf8)) else { return false }
        defer { try? FileManager.default.removeItem(atPath: probe) }
        guard runChattr("+i", probe) else { return false }
        defer { _ = runChattr("-i", probe) }
        let descriptor = open(probe, O_WRONLY)
        if descriptor >= 0 {
            close(descriptor)
            return false
        }
        return true
    }

    private static func runChattr(_ flag: String, _ path: String) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: chattr)
        process.arguments = [flag, path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            return false
        }
        process.waitUntilExit()
        return process.terminationReason == .exit && process.terminationStatus == 0
    }
}
