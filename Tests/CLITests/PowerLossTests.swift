import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// Power loss, simulated: what FULL and NORMAL really promise, which SIGKILL cannot tell apart.
///
/// A killed process leaves everything it wrote in the kernel's page cache, so a SIGKILL test
/// passes at NORMAL as at FULL. These tests run `ledger-crash-worker` processes with
/// `libPowerLossShim.so` preloaded (`Sources/PowerLossShim`): after every successful `fsync` or
/// `fdatasync` of the ledger or its WAL, `<file>.synced` holds the file as it was when that sync
/// began. After the kills, a fresh folder gets the last synced copy of each file (a file never
/// synced is absent) and the library opens it: the ledger as a power loss would leave it had the
/// kernel written nothing it was not told to sync.
///
/// Why "the last synced copy of each file" is a correct, pessimistic power-loss model for WAL
/// mode. A real disk holds, per file, everything up to its last completed sync plus any subset
/// of the later writes (torn or reordered). The model picks the outcome with none of them, the
/// one that loses the most; SQLite makes the partial outcomes no worse, because WAL recovery
/// keeps frames only up to the last commit frame whose checksum chain (seeded by the header's
/// salts) is unbroken, so stray later frames, and frames of an older WAL generation whose salts
/// differ, are ignored. The two files are synced at different moments, and the model mixes their
/// last copies; every mix SQLite can meet is consistent: the database file is written only by a
/// checkpoint, which syncs the WAL before it copies frames into the database and syncs the
/// database before the WAL may restart. So the database copy never holds a page newer than the
/// WAL copy's frames; an older WAL copy beside a database copy from a later checkpoint replays
/// frames the database already holds (the same page images, or older ones overwritten by later
/// valid frames of that same copy); and a restart writes and syncs a new header (new salts)
/// before any frame of the new generation, so the old frames after it are never replayed over
/// a database that moved on. What the model leaves out is the `-shm` index, which recovery
/// rebuilds from the WAL, and the directory (SQLite syncs it when it creates the WAL).
@Suite("Power loss, simulated: FULL keeps every acknowledged write, NORMAL loses only the unsynced tail", .serialized)
struct PowerLossTests {
    static let threadCount = 4
    /// High enough that budgets never refuse: the writers commit on every call.
    static let maxTokensPerThread: Int64 = 1_000_000_000
    static let waitSeconds: TimeInterval = 120

    @Test("At FULL, every acknowledged write survives a power loss, and verify passes")
    func fullKeepsEveryAcknowledgedWrite() throws {
        // Proves that at FULL an acknowledgement means the write is on the disk: three writers
        // at FULL (three tasks each, so group commit syncs after the write lock and one sync
        // covers several callers) run until killed, and the ledger assembled from the synced
        // copies holds every write they acknowledged, exactly as acknowledged.
        let run = try PowerLossRun()
        defer { run.remove() }
        var acknowledged = AcknowledgementLog()
        var problems = try run.prepare(into: &acknowledged)
        let workers = try (1...3).map { try run.startWorker($0, synchronous: "full", tasks: 3) }
        problems += run.waitForAll(workers, "an acknowledged commit") { $0.hasPrintedCommit }
        // Lets them write on; how long changes how much is checked, not what must hold.
        Thread.sleep(forTimeInterval: 0.6)
        let outcomes = run.killAll(workers)
        for outcome in outcomes { problems += outcome.problems + acknowledged.add(outcome) }

        let recovered = try run.assembleAfterPowerLoss()
        let ledger = try Ledger(path: recovered)
        defer { ledger.close() }
        let index = EventIndex(try allEvents(of: ledger))
        problems += acknowledged.problems(in: index)
        problems += try ledger.verify().problems.map { "verify after the power loss: \($0)" }
        let commits = outcomes.flatMap(\.acknowledgements).count { !$0.isRefusal }
        print("power loss at FULL: \(commits) acknowledged commits, \(index.events.count) events after the power loss")
        #expect(commits >= workers.count, "the FULL writers acknowledged nothing: the run proved nothing")
        for problem in problems { Issue.record("\(problem)") }
    }

    @Test("At NORMAL, a power loss keeps a prefix, everything the feed served, and loses the unsynced tail")
    func normalLosesOnlyTheUnsyncedTail() throws {
        // Proves what NORMAL promises and that it is less than FULL. A first NORMAL writer does a
        // fixed number of operations; then the feed (`budget-ledger events`) reads every event,
        // which syncs the WAL before it prints a row; then a second NORMAL writer does the same
        // again. Both sleep, unclosed, until killed. After the power loss: every event the feed
        // served is there, verify passes, what survives of the acknowledged writes is a prefix
        // by id, and the second writer's acknowledged writes are gone.
        //
        // Why loss is certain: at NORMAL nothing syncs the WAL but a checkpoint (the background
        // one is asked for every 1,000 WAL frames, the writer's own past 16,000), the WAL's header
        // when the WAL starts, and readers of the feed and exports. The two writers together
        // write a few hundred frames (about 4-5 per write, 2 x 16 operations each, a hold being
        // two writes), well below 1,000, so no checkpoint runs: the test checks that the
        // database file was never synced after the preparation, the precondition of the claim.
        let run = try PowerLossRun()
        defer { run.remove() }
        var acknowledged = AcknowledgementLog()
        var problems = try run.prepare(into: &acknowledged)
        let databaseAfterPreparation = try Data(contentsOf: URL(fileURLWithPath: run.scratch.databasePath + ".synced"))

        let first = try run.startWorker(1, synchronous: "normal", tasks: 2, operations: 16)
        problems += run.waitForAll([first], "done") { $0.hasPrinted(line: "done") }
        let feed = try runCLI(
            ["events", "--db", run.scratch.databasePath, "--after", "0", "--limit", "10000", "--json"],
            environment: run.shimEnvironment)
        try #require(feed.status == 0, "the feed failed: \(feed)")
        let served = try #require(try feed.jsonObject()["events"] as? [[String: Any]], "no events in \(feed.stdout)")
            .compactMap { $0["id"] as? Int64 }
        let second = try run.startWorker(2, synchronous: "normal", tasks: 2, operations: 16)
        problems += run.waitForAll([second], "done") { $0.hasPrinted(line: "done") }
        let outcomes = run.killAll([first, second])
        for outcome in outcomes { problems += outcome.problems + acknowledged.add(outcome) }

        let databaseNow = try Data(contentsOf: URL(fileURLWithPath: run.scratch.databasePath + ".synced"))
        try #require(
            databaseNow == databaseAfterPreparation,
            "a checkpoint synced the database during the NORMAL run: the loss this test shows is no longer certain")
        let recovered = try run.assembleAfterPowerLoss()
        let ledger = try Ledger(path: recovered, configuration: Ledger.Configuration(synchronous: .normal))
        defer { ledger.close() }
        let index = EventIndex(try allEvents(of: ledger))
        problems += try ledger.verify().problems.map { "verify after the power loss: \($0)" }
        for id in served where index.byID[id] == nil {
            problems.append("event \(id), served by the feed before the power loss, is gone")
        }
        let committed = outcomes.flatMap(\.acknowledgements).compactMap(\.committedEventID).sorted()
        let survived = committed.filter { index.byID[$0] != nil }
        if let firstLost = committed.first(where: { index.byID[$0] == nil }),
            let survivor = survived.first(where: { $0 > firstLost })
        {
            problems.append("acknowledged event \(survivor) survived but the earlier acknowledged event \(firstLost) did not")
        }
        let lost = committed.count - survived.count
        let secondCommits = outcomes[1].acknowledgements.compactMap(\.committedEventID)
        print(
            "power loss at NORMAL: \(committed.count) acknowledged commits, \(served.count) events served by the feed, "
                + "\(survived.count) acknowledged commits survived, \(lost) lost")
        #expect(!secondCommits.isEmpty, "the second NORMAL writer acknowledged nothing: nothing could be lost")
        #expect(lost >= 1, "no acknowledged write was lost at NORMAL: the simulation cannot tell NORMAL from FULL")
        #expect(survived.count >= outcomes[0].acknowledgements.count { $0.committedEventID != nil })
        for problem in problems { Issue.record("\(problem)") }
    }
}

extension Acknowledgement {
    /// The event a committed write's acknowledgement names (a release names none).
    var committedEventID: Int64? {
        switch self {
        case .consume(_, _, _, _, let eventID), .settle(_, _, _, _, let eventID, _): return eventID
        case .reserve(let reservationID, _, _, _): return reservationID
        default: return nil
        }
    }
}

/// One simulated power loss: a scratch ledger written only by processes under the shim.
struct PowerLossRun {
    let scratch: ScratchLedger
    let worker: String
    let seed: UInt64 = 20_261_205

    init() throws {
        worker = try CrashWorkerBinary.require()
        _ = try PowerLossShimLibrary.require()
        scratch = try ScratchLedger()
    }

    func remove() { scratch.remove() }

    /// Preloads the shim and names the ledger it watches.
    var shimEnvironment: [String: String] {
        ["LD_PRELOAD": PowerLossShimLibrary.path, "POWERLOSS_DB": scratch.databasePath]
    }

    /// Creates the ledger and its threads with a worker under the shim that runs to its end: it
    /// closes the ledger, and the closing checkpoint syncs the WAL and the database file, so even
    /// the file's creation reaches the synced copies the way a real disk would keep it.
    func prepare(into acknowledged: inout AcknowledgementLog) throws -> [String] {
        let process = try startWorker(0, synchronous: "full", tasks: 1, operations: 4, waitWhenDone: false)
        let outcome = WorkerOutcome(worker: 0, seed: seed, result: process.wait(), killed: false)
        try #require(
            FileManager.default.fileExists(atPath: scratch.databasePath + ".synced"),
            "the shim copied nothing: is libPowerLossShim.so preloaded and POWERLOSS_DB right?")
        return outcome.problems + acknowledged.add(outcome)
    }

    /// Starts a worker under the shim; with `operations`, it sleeps unclosed when done (`waitWhenDone`) or closes and exits.
    func startWorker(
        _ index: Int, synchronous: String, tasks: Int, operations: Int? = nil, waitWhenDone: Bool = true
    ) throws -> KillableProcess {
        var arguments = [
            "--db", scratch.databasePath, "--worker", "\(index)", "--seed", "\(seed)", "--threads",
            "\(PowerLossTests.threadCount)", "--max", "\(PowerLossTests.maxTokensPerThread)", "--tasks", "\(tasks)",
            "--synchronous", synchronous,
        ]
        if let operations { arguments += ["--operations", "\(operations)"] + (waitWhenDone ? ["--wait-when-done"] : []) }
        return try KillableProcess(executable: worker, arguments: arguments, environment: shimEnvironment)
    }

    /// Waits until every worker satisfies `condition`; a problem for each that ends or times out first.
    func waitForAll(_ workers: [KillableProcess], _ what: String, _ condition: (KillableProcess) -> Bool) -> [String] {
        let giveUp = Date().addingTimeInterval(PowerLossTests.waitSeconds)
        while Date() < giveUp {
            if workers.allSatisfy(condition) { return [] }
            if let index = workers.firstIndex(where: { $0.hasExited && !condition($0) }) {
                return ["a worker (\(index)) ended before \(what)"]
            }
            Thread.sleep(forTimeInterval: 0.005)
        }
        return ["the workers did not reach \(what) within \(PowerLossTests.waitSeconds) s"]
    }

    /// The power loss: SIGKILL, so that nothing runs after it, not even a close.
    func killAll(_ workers: [KillableProcess]) -> [WorkerOutcome] {
        for worker in workers { worker.kill() }
        return workers.enumerated().map { WorkerOutcome(worker: $0.offset + 1, seed: seed, result: $0.element.wait()) }
    }

    /// A fresh folder holding the last synced copy of the ledger and of its WAL (none when the WAL
    /// was never synced); returns the ledger's path there.
    func assembleAfterPowerLoss() throws -> String {
        let folder = scratch.directory.appendingPathComponent("after-power-loss", isDirectory: true)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let database = folder.appendingPathComponent("ledger.db").path
        try FileManager.default.copyItem(atPath: scratch.databasePath + ".synced", toPath: database)
        let wal = scratch.databasePath + "-wal.synced"
        if FileManager.default.fileExists(atPath: wal) {
            try FileManager.default.copyItem(atPath: wal, toPath: database + "-wal")
        }
        return database
    }
}

/// Where `libPowerLossShim.so` lives: `POWERLOSS_SHIM_LIB`, else beside the `budget-ledger`
/// binary (`swift build --build-tests` builds every product of the package, the shim's too).
enum PowerLossShimLibrary {
    static let path: String = {
        if let path = ProcessInfo.processInfo.environment["POWERLOSS_SHIM_LIB"], !path.isEmpty { return path }
        return URL(fileURLWithPath: CLIBinary.path).deletingLastPathComponent()
            .appendingPathComponent("libPowerLossShim.so").path
    }()

    static func require() throws -> String {
        try #require(
            FileManager.default.fileExists(atPath: path),
            """
            the power-loss shim is missing at \(path): build it with `swift build --build-tests` \
            (or `swift build --product PowerLossShim`), or point POWERLOSS_SHIM_LIB at it
            """)
        return path
    }
}
