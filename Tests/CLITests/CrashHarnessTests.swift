import BudgetLedger
import Foundation
import LedgerSQLite
import Synchronization
import Testing

/// Crash safety under SIGKILL, proven on a real file shared by several processes.
///
/// Each round starts `workerCount` `ledger-crash-worker` processes on one ledger, waits until each
/// has acknowledged a committed write (so no round can pass on refusals alone or kill a worker
/// that never started), kills each with SIGKILL at a seeded random moment after that, then
/// reopens the file (through the library and through a
/// separate `budget-ledger verify` process, in alternating order) and checks every acknowledgement
/// the workers printed against the events. Rounds run on the same file, so every later round also
/// re-checks every earlier acknowledgement.
///
/// `BUDGET_LEDGER_CRASH_ROUNDS` sets the number of rounds (default `defaultRounds`);
/// `BUDGET_LEDGER_CRASH_SEED` the seed of the timing choices (printed, to repeat a run's choices;
/// the moments the kernel schedules the workers cannot be repeated).
@Suite("Crash harness: SIGKILL at random moments")
struct CrashHarnessTests {
    static let defaultRounds = 16
    static let workerCount = 4
    static let tasksPerWorker = 2
    static let threadCount = 4
    static let maxTokensPerThread: Int64 = 1_000
    /// The thresholds the workers' ledgers run with: the defaults.
    static let thresholdPercents = BudgetThreshold.defaults.map(\.percent).sorted()

    /// How long a worker may take to acknowledge its first committed write before the round fails.
    static let firstAcknowledgementTimeoutSeconds: TimeInterval = 120

    @Test("No acknowledged write is lost, none is half-written, and no budget is overspent across SIGKILLs")
    func killedWorkersLoseNothingAcknowledged() throws {
        // Proves that a commit is durable once the ledger API has returned (every acked consume,
        // hold, settle and release is in the file after its process was SIGKILLed), that a killed
        // transaction leaves nothing behind (verify finds derived totals equal to the events, the
        // integrity check is ok, refused consumes and reserves left no event but the refusal event
        // of their window, at most one per thread or scope window, and each process has
        // at most one unacknowledged commit per task), that checked paths never push a thread's
        // spent plus live holds past its max, that each settle's `holdHadExpired` tells what the
        // events say, that each thread's threshold crossings are exactly the ones its totals
        // reached, once per window, and that the workers met no error but a busy writer lock or
        // the release of a hold that had expired. Every worker of every round acknowledges at
        // least one committed write before it is killed, so no round passes vacuously.
        let environment = ProcessInfo.processInfo.environment
        let rounds = Int(environment["BUDGET_LEDGER_CRASH_ROUNDS"] ?? "") ?? Self.defaultRounds
        let seed = UInt64(environment["BUDGET_LEDGER_CRASH_SEED"] ?? "") ?? 20_251_129
        let worker = try CrashWorkerBinary.require()
        _ = try CLIBinary.require()
        let scratch = try ScratchLedger()
        defer { scratch.remove() }
        try prepareLedger(at: scratch.databasePath)
        print("crash harness: \(rounds) rounds, seed \(seed), \(Self.workerCount) workers, ledger \(scratch.databasePath)")

        var random = SplitMix64(seed: seed)
        var acknowledged = AcknowledgementLog()
        var totals = RoundFigures()
        let started = Date()
        for round in 1...max(rounds, 1) {
            let plan = RoundPlan(round: round, seed: seed, workerCount: Self.workerCount, random: &random)
            var (outcomes, problems) = try runWorkers(worker, plan: plan, databasePath: scratch.databasePath)
            problems += outcomes.flatMap(\.problems)
            for outcome in outcomes { problems += acknowledged.add(outcome) }
            let check = try checkLedger(
                at: scratch.databasePath, against: &acknowledged, outcomes: outcomes, cliFirst: round % 2 == 1)
            problems += check.problems
            totals.add(check.figures)
            print("crash round \(round)/\(rounds): \(plan) | \(check.figures)")
            if !problems.isEmpty {
                for problem in problems.prefix(25) {
                    Issue.record("round \(round) (seed \(seed)): \(problem)")
                }
                if problems.count > 25 { Issue.record("round \(round): \(problems.count - 25) more problems") }
                break
            }
        }
        print("crash harness done in \(Int(Date().timeIntervalSince(started) * 1_000)) ms: \(totals)")
        #expect(totals.commits >= max(rounds, 1) * Self.workerCount, "fewer committed writes than one per worker per round")
    }

    /// Creates the ledger and gives every shared thread its max before any worker starts.
    private func prepareLedger(at path: String) throws {
        let ledger = try Ledger(path: path)
        defer { ledger.close() }
        try ledger.configure(maxTokensPerThread: Self.maxTokensPerThread)
        for index in 0..<Self.threadCount {
            try ledger.setLimit("crash-\(index)", maxTokens: Self.maxTokensPerThread)
        }
        // Half the calls fall under a token budget that the first rounds exhaust; all of them
        // under a dollar budget by day (gpt-4o-mini: at most 60 tokens × 600 nano-dollars a call).
        try ledger.setBudget(Self.tightAgent, maxTokens: Self.tightAgentMaxTokens)
        try ledger.setBudget(Self.organization, period: .day, maxNanodollars: 50_000_000)
    }

    static let tightAgent = try! BudgetScope(parsing: "agent:crash-agent-0")
    static let tightAgentMaxTokens: Int64 = 3_000
    static let organization = try! BudgetScope(parsing: "org:crash-org")

    /// Checked paths never push a scope past its budget: its derived spend, and the tokens of the
    /// events themselves, stay at or below the max (a settle never passes its hold, which was
    /// checked); verify has compared the derived rows with the events already.
    private func scopeProblems(_ ledger: Ledger, path: String) throws -> [String] {
        var problems: [String] = []
        for budget in try ledger.budgets() {
            if let maxTokens = budget.maxTokens, budget.spentTokens > maxTokens {
                problems.append("scope \(budget.scope) spent \(budget.spentTokens) tokens of \(maxTokens)")
            }
            if let maxNanodollars = budget.maxNanodollars, budget.spentNanodollars > maxNanodollars {
                problems.append("scope \(budget.scope) spent \(budget.spentNanodollars) nano-dollars of \(maxNanodollars)")
            }
        }
        let connection = try Connection(path: path)
        defer { connection.close() }
        let agentTokens = try connection.prepare(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM events WHERE kind = 'consume' AND agent_id = ?"
        ).fetchOne([Self.tightAgent.id]) { try $0[0] as Int64 } ?? 0
        if agentTokens > Self.tightAgentMaxTokens {
            problems.append("the events of \(Self.tightAgent) spend \(agentTokens) tokens of \(Self.tightAgentMaxTokens)")
        }
        return problems
    }

    /// Starts the round's workers, kills each at its planned moment after its first acknowledged
    /// commit, and collects what they printed. A worker that acknowledges no commit within
    /// `firstAcknowledgementTimeoutSeconds` is killed too, and named as a problem.
    private func runWorkers(_ binary: String, plan: RoundPlan, databasePath: String) throws
        -> (outcomes: [WorkerOutcome], problems: [String])
    {
        var running: [KillableProcess] = []
        defer {
            // A failed spawn must not leave the others running.
            for process in running { process.kill() }
        }
        for index in 0..<plan.killDelayMilliseconds.count {
            let arguments = [
                "--db", databasePath, "--worker", "\(index)", "--seed", "\(plan.workerSeed)",
                "--threads", "\(Self.threadCount)", "--max", "\(Self.maxTokensPerThread)",
                "--tasks", "\(Self.tasksPerWorker)",
            ]
            running.append(try KillableProcess(executable: binary, arguments: arguments))
        }
        var problems: [String] = []
        let giveUp = Date().addingTimeInterval(Self.firstAcknowledgementTimeoutSeconds)
        var killAt: [Date?] = Array(repeating: nil, count: running.count)
        var killed = Array(repeating: false, count: running.count)
        while killed.contains(false) {
            let now = Date()
            for index in running.indices where !killed[index] {
                if killAt[index] == nil && running[index].hasPrintedCommit {
                    killAt[index] = now.addingTimeInterval(Double(plan.killDelayMilliseconds[index]) / 1_000)
                }
                if let moment = killAt[index], now >= moment {
                    running[index].kill()
                    killed[index] = true
                } else if killAt[index] == nil && (now >= giveUp || running[index].hasExited) {
                    problems.append("worker \(index) acknowledged no committed write before it was killed or exited")
                    running[index].kill()
                    killed[index] = true
                }
            }
            Thread.sleep(forTimeInterval: 0.002)
        }
        let outcomes = running.enumerated().map { index, process in
            WorkerOutcome(worker: index, seed: plan.workerSeed, result: process.wait())
        }
        running.removeAll()
        return (outcomes, problems)
    }

    /// Reopens the ledger after the kills and lists every way it differs from what was acknowledged.
    private func checkLedger(
        at path: String, against acknowledged: inout AcknowledgementLog, outcomes: [WorkerOutcome], cliFirst: Bool
    ) throws -> (problems: [String], figures: RoundFigures) {
        var problems: [String] = []
        var cliEvents: Int64?
        // The first process to open the file after the kills recovers the WAL: alternate who it is.
        // verify runs once, in the CLI (the same library code): it replays every event, the
        // costliest check of a round, and grows with the file.
        if cliFirst { (cliEvents, problems) = try verifyThroughCLI(path) }
        let ledger = try Ledger(path: path)
        defer { ledger.close() }
        let events = try allEvents(of: ledger)
        problems += try integrityCheck(path)
        if !cliFirst {
            var cliProblems: [String]
            (cliEvents, cliProblems) = try verifyThroughCLI(path)
            problems += cliProblems
        }
        if let cliEvents, cliEvents != Int64(events.count) {
            problems.append("budget-ledger verify counted \(cliEvents) events, the library's feed \(events.count)")
        }
        let index = EventIndex(events)
        problems += index.structuralProblems()
        problems += acknowledged.problems(in: index)
        problems += acknowledged.refusedReserveProblems(in: index)
        let budget = index.budgetCheck()
        problems += budget.problems
        problems += index.thresholdProblems(Self.thresholdPercents)
        problems += index.refusalProblems()
        problems += unacknowledgedCommitProblems(index, acknowledged, outcomes)
        problems += try scopeProblems(ledger, path: path)
        let resets = try resetExhaustedThreads(ledger)
        let printed = outcomes.flatMap(\.acknowledgements)
        let figures = RoundFigures(
            events: events.count, acknowledgements: printed.count, commits: printed.count { !$0.isRefusal },
            refusals: printed.filter(\.isRefusal).count, checked: acknowledged.count,
            busyErrors: outcomes.reduce(0) { $0 + $1.busyErrors }, expiredReleases: outcomes.reduce(0) { $0 + $1.expiredReleases },
            lateSettles: budget.lateSettles, expiries: events.count { $0.kind == "expire" },
            crossings: events.count { $0.kind == "threshold" }, resets: resets)
        return (problems, figures)
    }

    /// Each task of a killed worker may have committed one write it had no time to acknowledge; more
    /// would mean acknowledgements were buffered (and lost) or a write committed twice.
    private func unacknowledgedCommitProblems(
        _ index: EventIndex, _ acknowledged: AcknowledgementLog, _ outcomes: [WorkerOutcome]
    ) -> [String] {
        outcomes.compactMap { outcome in
            let prefix = "w\(outcome.worker)-s\(outcome.seed)-"
            let unacknowledged = index.byKey.keys.filter { $0.hasPrefix(prefix) && !acknowledged.hasKey($0) }
            guard unacknowledged.count > Self.tasksPerWorker else { return nil }
            return "worker \(outcome.worker) committed \(unacknowledged.count) keyed writes it never acknowledged "
                + "(at most \(Self.tasksPerWorker), one per task, may be in flight at a kill): "
                + "\(unacknowledged.sorted().prefix(5))"
        }
    }

    /// Starts a new window on threads that have little budget left, so later rounds keep spending
    /// (and keep meeting the max). Returns how many it reset.
    private func resetExhaustedThreads(_ ledger: Ledger) throws -> Int {
        var resets = 0
        for budget in try ledger.allUsage() where budget.remaining < budget.maxTokens / 10 {
            try ledger.resetThread(budget.threadID)
            resets += 1
        }
        return resets
    }

    private func verifyThroughCLI(_ path: String) throws -> (events: Int64?, problems: [String]) {
        let result = try runCLI(["verify", "--db", path, "--json"])
        guard result.status == 0 else { return (nil, ["budget-ledger verify failed: \(result)"]) }
        let report = try result.jsonObject()
        if report["ok"] as? Bool != true { return (nil, ["budget-ledger verify did not say ok: \(result.stdout)"]) }
        return (report["events"] as? Int64, [])
    }

    private func integrityCheck(_ path: String) throws -> [String] {
        let connection = try Connection(path: path)
        defer { connection.close() }
        let lines = try connection.prepare("PRAGMA integrity_check").fetchAll { try $0[0] as String }
        return lines == ["ok"] ? [] : lines.map { "PRAGMA integrity_check: \($0)" }
    }
}

// MARK: - The plan of a round

/// When each worker of a round is killed: in milliseconds after it acknowledged its first commit.
struct RoundPlan: CustomStringConvertible {
    let round: Int
    /// Unique per round, so idempotency keys (which carry it) never repeat on the file.
    let workerSeed: UInt64
    let killDelayMilliseconds: [Int]

    init(round: Int, seed: UInt64, workerCount: Int, random: inout SplitMix64) {
        self.round = round
        workerSeed = UInt64(round) * 1_000_000 + seed % 1_000_000
        // The round's length, then each worker's moment in its second half (as before this
        // plan waited for the first commit): workers die at different moments, some while
        // others still write, and every one of them has committed at least once.
        let run = Int.random(in: 20...400, using: &random)
        killDelayMilliseconds = (0..<workerCount).map { _ in Int.random(in: (run / 2)...run, using: &random) }
    }

    var description: String { "kills \(killDelayMilliseconds) ms after each worker's first commit" }
}

/// SplitMix64: a small seedable generator, so a seed repeats a run's choices.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}

/// What the harness counted, per round or in total.
struct RoundFigures: CustomStringConvertible {
    /// Events in the ledger.
    var events = 0
    /// Lines the workers printed (acks and refusals).
    var acknowledgements = 0
    /// Acknowledgements of committed writes (not refusals).
    var commits = 0
    var refusals = 0
    /// Acknowledgements checked against the ledger: every round's so far.
    var checked = 0
    /// The error lines the harness accepts (see `WorkerOutcome`).
    var busyErrors = 0
    var expiredReleases = 0
    /// In the whole ledger.
    var lateSettles = 0
    var expiries = 0
    var crossings = 0
    var resets = 0

    mutating func add(_ round: RoundFigures) {
        events = round.events
        acknowledgements += round.acknowledgements
        commits += round.commits
        refusals += round.refusals
        checked = round.checked
        busyErrors += round.busyErrors
        expiredReleases += round.expiredReleases
        lateSettles = round.lateSettles
        expiries = round.expiries
        crossings = round.crossings
        resets += round.resets
    }

    var description: String {
        "\(events) events, \(acknowledgements) lines printed (\(commits) commits, \(refusals) refusals), "
            + "\(checked) acks and refusals checked, \(busyErrors) busy, \(expiredReleases) releases of expired holds, "
            + "\(expiries) holds expired, \(lateSettles) settles after expiry, \(crossings) threshold crossings, "
            + "\(resets) threads reset"
    }
}

// MARK: - What the workers acknowledged

/// One line a worker printed after its call returned.
enum Acknowledgement: Equatable {
    case consume(key: String, threadID: String, promptTokens: Int64, completionTokens: Int64, eventID: Int64)
    case reserve(reservationID: Int64, threadID: String, tokens: Int64, expiresAtMicroseconds: Int64)
    case settle(
        reservationID: Int64, key: String, promptTokens: Int64, completionTokens: Int64, eventID: Int64,
        holdHadExpired: Bool)
    case release(reservationID: Int64)
    case refusedConsume(key: String)
    /// The clock readings around the call bound the timestamp of any event it could have recorded.
    case refusedReserve(threadID: String, tokens: Int64, calledAtMicroseconds: Int64, returnedAtMicroseconds: Int64)

    var isRefusal: Bool {
        switch self {
        case .refusedConsume, .refusedReserve: return true
        default: return false
        }
    }

    /// Parses one line of the worker's protocol (see Sources/ledger-crash-worker/main.swift).
    init?(line: Substring) {
        let fields = line.split(separator: " ").map(String.init)
        func number(_ index: Int) -> Int64? { index < fields.count ? Int64(fields[index]) : nil }
        switch (fields.first, fields.dropFirst().first, fields.count) {
        case ("ack", "consume", 7):
            guard let prompt = number(4), let completion = number(5), let id = number(6) else { return nil }
            self = .consume(key: fields[2], threadID: fields[3], promptTokens: prompt, completionTokens: completion, eventID: id)
        case ("ack", "reserve", 6):
            guard let id = number(2), let tokens = number(4), let expires = number(5) else { return nil }
            self = .reserve(reservationID: id, threadID: fields[3], tokens: tokens, expiresAtMicroseconds: expires)
        case ("ack", "settle", 8):
            guard let id = number(2), let prompt = number(4), let completion = number(5), let event = number(6),
                let expired = number(7), expired == 0 || expired == 1
            else { return nil }
            self = .settle(
                reservationID: id, key: fields[3], promptTokens: prompt, completionTokens: completion, eventID: event,
                holdHadExpired: expired == 1)
        case ("ack", "release", 3):
            guard let id = number(2) else { return nil }
            self = .release(reservationID: id)
        case ("refused", "consume", 6): self = .refusedConsume(key: fields[2])
        case ("refused", "reserve", 6):
            guard let tokens = number(3), let calledAt = number(4), let returnedAt = number(5) else { return nil }
            self = .refusedReserve(
                threadID: fields[2], tokens: tokens, calledAtMicroseconds: calledAt, returnedAtMicroseconds: returnedAt)
        default: return nil
        }
    }
}

/// How one worker ended and what it acknowledged.
struct WorkerOutcome {
    let worker: Int
    let seed: UInt64
    var acknowledgements: [Acknowledgement] = []
    /// `error … busy` lines: the bounded wait for the writer lock ran out (a loaded machine).
    var busyErrors = 0
    /// `error release hold-expired` lines: the hold's ttl ran out before its release.
    var expiredReleases = 0
    /// Whether the worker printed `done` (with `--wait-when-done`).
    var finished = false
    var problems: [String] = []

    /// `killed`: whether the worker was meant to die of SIGKILL (else to exit with status 0).
    init(worker: Int, seed: UInt64, result: KilledProcessResult, killed: Bool = true) {
        self.worker = worker
        self.seed = seed
        if killed ? result.signal != SIGKILL : result.exitStatus != 0 {
            let expected = killed ? "die of SIGKILL" : "exit with status 0"
            problems.append("worker \(worker) did not \(expected) but \(result); stderr: \(result.stderr.suffix(2_000))")
        }
        if result.stderr.contains("Fatal error") || result.stderr.contains("Crash") {
            problems.append("worker \(worker) crashed on its own: \(result.stderr.suffix(2_000))")
        }
        classifyErrors(result.stderr)
        var lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        // The output ends with a newline, so the last piece is empty; anything else is half a line,
        // which atomic line writes must make impossible.
        if let last = lines.popLast(), !last.isEmpty {
            problems.append("worker \(worker) left half a line: \(last)")
        }
        for line in lines {
            if line == "done" {
                finished = true
            } else if let acknowledgement = Acknowledgement(line: line) {
                acknowledgements.append(acknowledgement)
            } else {
                problems.append("worker \(worker) printed an unexpected line: \(line)")
            }
        }
    }

    /// Counts the errors the harness expects and makes a problem of every other stderr line.
    ///
    /// Expected: `error OPERATION busy …`, a write that waited for the writer lock past the busy
    /// timeout (a loaded machine; it records nothing), and `error release hold-expired …`, the
    /// release of a hold whose ttl had run out when the call returned (the worker checks the
    /// clock). Any other line, an `unexpected` error above all, fails the round.
    private mutating func classifyErrors(_ stderr: String) {
        for line in stderr.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count >= 3 && fields[0] == "error" && fields[2] == "busy" {
                busyErrors += 1
            } else if fields.count >= 3 && fields[0] == "error" && fields[1] == "release" && fields[2] == "hold-expired" {
                expiredReleases += 1
            } else {
                problems.append("worker \(worker) reported an unexpected error: \(line)")
            }
        }
    }
}

/// Every acknowledgement of every round so far.
struct AcknowledgementLog {
    private(set) var consumes: [String: Acknowledgement] = [:]
    private(set) var settles: [String: Acknowledgement] = [:]
    private(set) var reserves: [Int64: Acknowledgement] = [:]
    private(set) var releases: Set<Int64> = []
    private(set) var refusedKeys: Set<String> = []
    /// The refused reserves of the round being checked (see `refusedReserveProblems(in:)`).
    private(set) var newRefusedReserves: [Acknowledgement] = []
    private(set) var refusedReserveCount = 0

    var count: Int {
        consumes.count + settles.count + reserves.count + releases.count + refusedKeys.count + refusedReserveCount
    }

    func hasKey(_ key: String) -> Bool { consumes[key] != nil || settles[key] != nil || refusedKeys.contains(key) }

    /// Adds a worker's acknowledgements; a key or id acknowledged twice is a problem.
    mutating func add(_ outcome: WorkerOutcome) -> [String] {
        var problems: [String] = []
        for acknowledgement in outcome.acknowledgements {
            var duplicate = false
            switch acknowledgement {
            case .consume(let key, _, _, _, _): duplicate = consumes.updateValue(acknowledgement, forKey: key) != nil
            case .settle(_, let key, _, _, _, _): duplicate = settles.updateValue(acknowledgement, forKey: key) != nil
            case .reserve(let id, _, _, _): duplicate = reserves.updateValue(acknowledgement, forKey: id) != nil
            case .release(let id): duplicate = !releases.insert(id).inserted
            case .refusedConsume(let key): duplicate = !refusedKeys.insert(key).inserted
            case .refusedReserve:
                newRefusedReserves.append(acknowledgement)
                refusedReserveCount += 1
            }
            if duplicate { problems.append("worker \(outcome.worker) acknowledged twice: \(acknowledgement)") }
        }
        return problems
    }

    /// Every acknowledged write missing from the events or recorded differently, and every refused
    /// consume that was recorded after all.
    func problems(in index: EventIndex) -> [String] {
        var problems: [String] = []
        for case .consume(let key, let threadID, let prompt, let completion, let eventID) in consumes.values {
            guard let event = index.byKey[key] else {
                problems.append("acknowledged consume \(key) (event \(eventID)) is missing")
                continue
            }
            if event.id != eventID || event.kind != "consume" || event.threadID != threadID
                || event.promptTokens != prompt || event.completionTokens != completion || event.reservationID != nil
            {
                problems.append("acknowledged consume \(key) event \(eventID) \(threadID) \(prompt)+\(completion) reads \(event)")
            }
        }
        for case .settle(let reservationID, let key, let prompt, let completion, let eventID, let expired) in settles.values {
            guard let event = index.byKey[key] else {
                problems.append("acknowledged settle \(key) of reservation \(reservationID) (event \(eventID)) is missing")
                continue
            }
            if event.id != eventID || event.kind != "consume" || event.reservationID != reservationID
                || event.promptTokens != prompt || event.completionTokens != completion
            {
                problems.append("acknowledged settle \(key) of \(reservationID) as event \(eventID) reads \(event)")
            }
            // The settle's flag must say what its events say: recorded at or after the hold's expiry.
            if let expiresAt = index.byID[reservationID]?.expiresAtMicroseconds,
                expired != (expiresAt <= event.timestampMicroseconds)
            {
                problems.append(
                    "settle \(key) said holdHadExpired \(expired), but its event at \(event.timestampMicroseconds) µs "
                        + "ends a hold that expires at \(expiresAt) µs")
            }
        }
        for case .reserve(let reservationID, let threadID, let tokens, let expiresAt) in reserves.values {
            guard let event = index.byID[reservationID] else {
                problems.append("acknowledged reservation \(reservationID) is missing")
                continue
            }
            if event.kind != "reserve" || event.threadID != threadID || event.heldTokens != tokens
                || event.expiresAtMicroseconds != expiresAt
            {
                problems.append("acknowledged reservation \(reservationID) \(threadID) \(tokens) reads \(event)")
            }
        }
        for reservationID in releases where !index.released.contains(reservationID) {
            problems.append("acknowledged release of reservation \(reservationID) is missing")
        }
        for key in refusedKeys where index.byKey[key] != nil {
            problems.append("refused consume \(key) was recorded: \(index.byKey[key]!)")
        }
        return problems
    }

    /// A refused reserve that recorded its event anyway would have left a reserve of its thread and
    /// tokens stamped between the clock readings around the call, that no worker acknowledged.
    /// (A reserve killed before its acknowledgement, of the same thread and tokens in the same
    /// microseconds, would look the same: it would need a kill within those microseconds.)
    /// Checks the refusals added since the last call, once: an event of a call that returned was
    /// committed before it returned, so a later round cannot add one.
    mutating func refusedReserveProblems(in index: EventIndex) -> [String] {
        var problems: [String] = []
        for case .refusedReserve(let threadID, let tokens, let calledAt, let returnedAt) in newRefusedReserves {
            let leaked = index.reserves(of: threadID, tokens: tokens).filter { event in
                (calledAt...returnedAt).contains(event.timestampMicroseconds) && reserves[event.id] == nil
            }
            if let event = leaked.first {
                problems.append("refused reserve of \(tokens) on \(threadID) (\(calledAt)…\(returnedAt) µs) was recorded: \(event)")
            }
        }
        newRefusedReserves.removeAll()
        return problems
    }
}

// MARK: - What the ledger holds

/// The events, indexed for the checks.
struct EventIndex {
    let events: [LedgerEvent]
    var byID: [Int64: LedgerEvent] = [:]
    var byKey: [String: LedgerEvent] = [:]
    var released: Set<Int64> = []
    private var reservesByThreadAndTokens: [String: [LedgerEvent]] = [:]

    init(_ events: [LedgerEvent]) {
        self.events = events
        for event in events {
            byID[event.id] = event
            if let key = event.idempotencyKey { byKey[key] = event }
            if event.kind == "release", let reservationID = event.reservationID { released.insert(reservationID) }
            if event.kind == "reserve", let threadID = event.threadID, let tokens = event.heldTokens {
                reservesByThreadAndTokens["\(threadID) \(tokens)", default: []].append(event)
            }
        }
    }

    /// The reserve events of a thread that held `tokens`, in id order.
    func reserves(of threadID: String, tokens: Int64) -> [LedgerEvent] { reservesByThreadAndTokens["\(threadID) \(tokens)"] ?? [] }

    /// Events that could only come from a write applied in part, or applied twice.
    func structuralProblems() -> [String] {
        var problems: [String] = []
        var previousID: Int64 = 0
        var endings: [Int64: [String]] = [:]
        for event in events {
            if event.id <= previousID { problems.append("event ids are not increasing at \(event.id)") }
            previousID = event.id
            if event.kind == "consume" && (event.threadID == nil || event.idempotencyKey == nil || event.promptTokens < 1) {
                problems.append("consume event \(event.id) is incomplete: \(event)")
            }
            guard let reservationID = event.reservationID else { continue }
            endings[reservationID, default: []].append(event.kind)
            guard let reserve = byID[reservationID], reserve.kind == "reserve", reserve.threadID == event.threadID else {
                problems.append("event \(event.id) ends \(reservationID), which is not a reserve of its thread")
                continue
            }
            if event.kind == "consume" && event.promptTokens + event.completionTokens > reserve.heldTokens ?? 0 {
                problems.append("settle \(event.id) spent more than its hold \(reservationID): the worker never does")
            }
        }
        for (reservationID, kinds) in endings where kinds.filter({ $0 == "consume" }).count > 1 || kinds.count > 2 {
            problems.append("reservation \(reservationID) ended more than once: \(kinds)")
        }
        return problems
    }

    /// Replays each thread's windows and holds: after every checked path (a reserve, a checked
    /// consume) the window's spent tokens plus the holds live at that moment (their expiry after
    /// the event's timestamp, as the ledger counts them) may not pass the max. Settles are not
    /// checked paths (they record what was spent) but count in the spent tokens, as they do in
    /// the ledger's own check; a settle recorded at or after its hold's expiry is counted apart.
    func budgetCheck() -> (problems: [String], lateSettles: Int) {
        var problems: [String] = []
        var lateSettles = 0
        var maxTokens: [String: Int64] = [:]
        var spent: [String: Int64] = [:]
        var holds: [String: [Int64: (tokens: Int64, expiresAt: Int64)]] = [:]
        func check(_ threadID: String, at event: LedgerEvent) {
            guard let max = maxTokens[threadID] else { return }
            let held = (holds[threadID] ?? [:]).values.reduce(Int64(0)) { sum, hold in
                hold.expiresAt > event.timestampMicroseconds ? sum + hold.tokens : sum
            }
            let total = (spent[threadID] ?? 0) + held
            if total > max {
                problems.append(
                    "thread \(threadID) spent \(spent[threadID] ?? 0) + held \(held) of max \(max) after the checked "
                        + "\(event.kind) \(event.id)")
            }
        }
        for event in events {
            guard let threadID = event.threadID else { continue }
            switch event.kind {
            case "open":
                maxTokens[threadID] = event.maxTokens
                spent[threadID] = 0
            case "limit":
                maxTokens[threadID] = event.maxTokens
                if spent[threadID] == nil { spent[threadID] = 0 }
            case "reset": spent[threadID] = 0
            case "cleanup":
                spent[threadID] = nil
                maxTokens[threadID] = nil
                holds[threadID] = nil
            case "reserve":
                holds[threadID, default: [:]][event.id] = (event.heldTokens ?? 0, event.expiresAtMicroseconds ?? 0)
                check(threadID, at: event)
            case "release", "expire":
                if let reservationID = event.reservationID { holds[threadID]?[reservationID] = nil }
            case "consume":
                spent[threadID, default: 0] += event.promptTokens + event.completionTokens
                if let reservationID = event.reservationID {
                    holds[threadID]?[reservationID] = nil
                    if let expiresAt = byID[reservationID]?.expiresAtMicroseconds, event.timestampMicroseconds >= expiresAt {
                        lateSettles += 1
                    }
                } else {
                    check(threadID, at: event)
                }
            default: break
            }
        }
        return (problems, lateSettles)
    }

    /// A refused call records one thing only, the first time in its window: a refusal event
    /// (migration 0011), which carries the thread, the figures then, and no tokens, key or hold.
    /// Replays the windows: a thread's is its open (or opening limit) or last reset, and each
    /// stretch between lives is a window of its own; a scope's is (scope, window start), ended for
    /// good by a budget_remove. No window may hold two refusals.
    func refusalProblems() -> [String] {
        var problems: [String] = []
        var threadWindow: [String: Int64] = [:]
        var refusedWindows: Set<String> = []
        for event in events {
            guard let threadID = event.threadID else {
                if event.kind == "budget_remove", let scope = event.scope {
                    refusedWindows = refusedWindows.filter { !$0.hasPrefix("scope \(scope) ") }
                }
                continue
            }
            switch event.kind {
            case "open", "reset": threadWindow[threadID] = event.id
            case "limit" where (threadWindow[threadID] ?? 0) <= 0: threadWindow[threadID] = event.id
            case "cleanup": threadWindow[threadID] = -event.id
            case "refusal":
                if event.idempotencyKey != nil || event.promptTokens != 0 || event.completionTokens != 0
                    || event.reservationID != nil || event.heldTokens != nil || event.tokensUsed == nil
                {
                    problems.append("refusal event \(event.id) carries more than a refusal: \(event)")
                }
                let window =
                    event.scope.map { "scope \($0) \(event.windowStartMicroseconds.map(String.init) ?? "none")" }
                    ?? "thread \(threadID) \(threadWindow[threadID] ?? 0)"
                if !refusedWindows.insert(window).inserted {
                    problems.append("refusal event \(event.id) is the second refusal of window \(window)")
                }
            default: break
            }
        }
        return problems
    }

    /// Replays each thread's windows against its threshold events: every consume is followed by
    /// one threshold event for each threshold its window's total reaches (total × 100 ≥ percent ×
    /// max) that has not fired in the window, in ascending order, caused by it and carrying its
    /// total and max; no other threshold event exists. A reset or cleanup re-arms every threshold,
    /// a limit those the total no longer reaches under the new max (migration 0007). At the end,
    /// each thread's crossings in its current window are exactly the thresholds its total reaches.
    func thresholdProblems(_ percents: [Int]) -> [String] {
        var problems: [String] = []
        var maxTokens: [String: Int64] = [:]
        var spent: [String: Int64] = [:]
        var fired: [String: Set<Int>] = [:]
        var expected: [(threadID: String, percent: Int, causedBy: Int64, used: Int64, max: Int64)] = []
        func reached(_ percent: Int, _ used: Int64, _ max: Int64) -> Bool { max > 0 && used * 100 >= Int64(percent) * max }
        for event in events {
            if event.kind == "threshold" {
                guard let first = expected.first else {
                    problems.append("threshold event \(event.id) crossed nothing new: \(event)")
                    continue
                }
                expected.removeFirst()
                if event.threadID != first.threadID || event.thresholdPercent != first.percent
                    || event.causedBy != first.causedBy || event.maxTokens != first.max
                {
                    problems.append("threshold event \(event.id) should record \(first): \(event)")
                }
                if let threadID = event.threadID, let percent = event.thresholdPercent,
                    !fired[threadID, default: []].insert(percent).inserted
                {
                    problems.append("threshold \(percent)% of \(threadID) fired twice in one window (event \(event.id))")
                }
                continue
            }
            if !expected.isEmpty {
                problems.append("consume \(expected[0].causedBy) reached \(expected.map(\.percent))% without recording it")
                expected.removeAll()
            }
            guard let threadID = event.threadID else { continue }
            switch event.kind {
            case "open":
                maxTokens[threadID] = event.maxTokens
                spent[threadID] = 0
                fired[threadID] = []
            case "limit":
                let max = event.maxTokens ?? 0
                if spent[threadID] == nil { (spent[threadID], fired[threadID]) = (0, []) }
                maxTokens[threadID] = max
                fired[threadID] = fired[threadID]?.filter { reached($0, spent[threadID] ?? 0, max) }
            case "reset":
                spent[threadID] = 0
                fired[threadID] = []
            case "cleanup": (spent[threadID], maxTokens[threadID], fired[threadID]) = (nil, nil, nil)
            case "consume":
                let used = (spent[threadID] ?? 0) + event.promptTokens + event.completionTokens
                spent[threadID] = used
                let max = maxTokens[threadID] ?? 0
                for percent in percents where !(fired[threadID] ?? []).contains(percent) && reached(percent, used, max) {
                    expected.append((threadID, percent, event.id, used, max))
                }
            default: break
            }
        }
        if !expected.isEmpty {
            problems.append("consume \(expected[0].causedBy) reached \(expected.map(\.percent))% without recording it")
        }
        // A limit may lower the max after the last consume: what it newly reaches fires at the
        // next consume, so the window's crossings are a subset of what the total reaches now.
        for (threadID, used) in spent {
            let max = maxTokens[threadID] ?? 0
            let shouldHave = Set(percents.filter { reached($0, used, max) })
            if !(fired[threadID] ?? []).isSubset(of: shouldHave) {
                problems.append(
                    "thread \(threadID) at \(used) of \(max) has crossings \((fired[threadID] ?? []).sorted())% in its window, "
                        + "not \(shouldHave.sorted())%")
            }
        }
        return problems
    }
}

// MARK: - Processes the harness kills

/// Where `ledger-crash-worker` lives: `LEDGER_CRASH_WORKER_BIN`, else beside the `budget-ledger`
/// binary that `CLIBinary` found (the test target depends on both, so they are built together).
enum CrashWorkerBinary {
    static let path: String = {
        if let path = ProcessInfo.processInfo.environment["LEDGER_CRASH_WORKER_BIN"], !path.isEmpty {
            return path
        }
        return URL(fileURLWithPath: CLIBinary.path).deletingLastPathComponent()
            .appendingPathComponent("ledger-crash-worker").path
    }()

    static func require() throws -> String {
        try #require(
            FileManager.default.isExecutableFile(atPath: path),
            """
            the ledger-crash-worker binary is missing at \(path): build it with \
            `swift build --build-tests`, or point LEDGER_CRASH_WORKER_BIN at it
            """)
        return path
    }
}

/// How a killed process ended and what it printed.
struct KilledProcessResult: CustomStringConvertible {
    /// The signal that ended it, or nil when it exited.
    let signal: Int32?
    let exitStatus: Int32?
    let stdout: String
    let stderr: String

    var description: String {
        signal.map { "signal \($0)" } ?? "exit status \(exitStatus ?? -1)"
    }
}

/// A child process that can be killed with SIGKILL; its pipes are drained on dedicated threads,
/// and what it has printed so far can be looked at while it runs.
final class KillableProcess {
    private let process = Process()
    private let stdoutDrain: PipeDrain
    private let stderrDrain: PipeDrain

    init(executable: String, arguments: [String], environment: [String: String] = [:]) throws {
        let stdoutPipe = Pipe()
        let stderrPipe = Pipe()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = childEnvironment(environment)
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        try process.run()
        stdoutDrain = PipeDrain(stdoutPipe.fileHandleForReading)
        stderrDrain = PipeDrain(stderrPipe.fileHandleForReading)
    }

    /// Whether a line starting with "ack " (a committed write, acknowledged) has come so far.
    var hasPrintedCommit: Bool { stdoutDrain.hasLine { $0.hasPrefix("ack ") } }

    /// Whether a line equal to `line` has come so far.
    func hasPrinted(line: String) -> Bool { stdoutDrain.hasLine { $0 == line } }

    /// Whether the process has ended (killed or exited).
    var hasExited: Bool { !process.isRunning }

    /// Sends SIGKILL (a no-op once the process has been reaped).
    func kill() {
        guard process.isRunning else { return }
        _ = Foundation.kill(process.processIdentifier, SIGKILL)
    }

    /// Waits for the process to end and for both pipes to reach end of file.
    func wait() -> KilledProcessResult {
        process.waitUntilExit()
        let signal = process.terminationReason == .uncaughtSignal ? process.terminationStatus : nil
        return KilledProcessResult(
            signal: signal, exitStatus: signal == nil ? process.terminationStatus : nil,
            stdout: String(decoding: stdoutDrain.data(), as: UTF8.self),
            stderr: String(decoding: stderrDrain.data(), as: UTF8.self))
    }
}

/// Reads a pipe to end of file on a thread of its own, keeping what came so far readable.
private final class PipeDrain: Sendable {
    private struct Collected {
        var data = Data()
        /// Where the lines not yet looked at by `hasLine` start.
        var scanned = 0
        var lines: [String] = []
    }

    private let collected = Mutex(Collected())
    private let finished = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(handle.fileDescriptor, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                collected.withLock { $0.data.append(contentsOf: buffer[0..<count]) }
            }
            finished.signal()
        }
    }

    /// Whether a complete line so far satisfies `predicate`.
    func hasLine(where predicate: (String) -> Bool) -> Bool {
        collected.withLock { collected in
            if let end = collected.data[collected.scanned...].lastIndex(of: UInt8(ascii: "\n")) {
                let text = String(decoding: collected.data[collected.scanned..<end], as: UTF8.self)
                collected.lines += text.split(separator: "\n").map(String.init)
                collected.scanned = end + 1
            }
            return collected.lines.contains(where: predicate)
        }
    }

    func data() -> Data {
        finished.wait()
        return collected.withLock { $0.data }
    }
}
