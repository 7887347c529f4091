@testable import BudgetLedger
import Foundation
import Testing

/// The small-scale VOPR of issue 13: seeded random operation sequences run on a real ledger and
/// on `LedgerModel` side by side; after every step the outcomes must be equal (the same result
/// values, or the same error case with the same fields), and every 50 steps the whole state
/// (every open budget, the live holds, the usage overview of the window and of all time, the
/// default max, the price table) must be too; `verify()` runs every 500 steps and at the end.
///
/// `BUDGET_LEDGER_MODEL_SEED` (the first seed), `BUDGET_LEDGER_MODEL_SEEDS` (how many, 1 when only
/// a seed is given) and `BUDGET_LEDGER_MODEL_STEPS` (steps per seed) set a longer run or a replay.
@Suite("Model-based random test: the ledger agrees with an in-memory model, step by step")
struct ModelBasedTests {
    @Test("an in-memory ledger agrees with the model")
    func inMemory() throws {
        // Proves, over thousands of random calls drawn from the edges, that the ledger's every
        // answer and its whole state are what the documented rules give.
        try ModelRun.runConfiguredSeeds(onFile: false)
    }

    @Test("a file ledger, closed and reopened every 500 steps, agrees with the model")
    func onFile() throws {
        // Proves the same on a file, and that reopening (a new price cache, state read back from
        // the file) changes nothing.
        try ModelRun.runConfiguredSeeds(onFile: true)
    }

    @Test("the generator is deterministic: one seed, one sequence of operations")
    func generatorIsDeterministic() {
        // Proves a failing seed can be replayed: two generators with the same seed, fed the same
        // model, produce the same operations; another seed produces others.
        func operations(seed: UInt64) -> [String] {
            var generator = OperationGenerator(seed: seed)
            let model = LedgerModel(nextEventID: 1)
            return (0..<200).map { _ in generator.next(model: model, now: 1_000).description }
        }
        #expect(operations(seed: 7) == operations(seed: 7))
        #expect(operations(seed: 7) != operations(seed: 8))
    }
}

/// One seeded run: a fresh ledger (in memory or on a file) and a fresh model, `steps` operations.
struct ModelRun {
    static let stateCheckEvery = 50
    static let verifyEvery = 500
    static let logLength = 10

    let seed: UInt64
    let steps: Int
    let onFile: Bool

    /// The first seed, how many seeds, and the steps of each, from the environment.
    static func settings() -> (firstSeed: UInt64, seeds: Int, steps: Int) {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["BUDGET_LEDGER_MODEL_SEED"].flatMap { UInt64($0) }
        let seeds = environment["BUDGET_LEDGER_MODEL_SEEDS"].flatMap { Int($0) } ?? (seed == nil ? 4 : 1)
        let steps = environment["BUDGET_LEDGER_MODEL_STEPS"].flatMap { Int($0) } ?? 1_500
        return (seed ?? 1, seeds, steps)
    }

    /// Runs every configured seed until one diverges; then checks that the runs reached every
    /// case the generator is meant to reach (so a generator that drifted cannot pass quietly).
    static func runConfiguredSeeds(onFile: Bool) throws {
        let settings = settings()
        var coverage = ModelCoverage()
        let started = ContinuousClock.now
        for offset in 0..<settings.seeds {
            let run = ModelRun(seed: settings.firstSeed + UInt64(offset), steps: settings.steps, onFile: onFile)
            guard try run.run(coverage: &coverage) else { return }
        }
        let elapsed = ContinuousClock.now - started
        print(
            "model-based (\(onFile ? "file" : "memory")): \(settings.seeds) seeds × \(settings.steps) steps "
                + "from seed \(settings.firstSeed) in \(elapsed); \(coverage.summary)")
        if settings.seeds * settings.steps >= 4_000 {
            #expect(coverage.missing == [], "cases the runs never reached")
        }
    }

    /// Runs the steps; false (with an issue recorded) at the first disagreement.
    func run(coverage: inout ModelCoverage) throws -> Bool {
        let folder = try TemporaryFolder()
        let clock = ManualClock()
        // NORMAL: the semantics under test do not depend on the sync level, and FULL's fsync per
        // step would make the file run ten times slower.
        let configuration = Ledger.Configuration(synchronous: .normal, clock: clock.read)
        let path = onFile ? folder.path("model.db") : ":memory:"
        var ledger = try Ledger(path: path, configuration: configuration)
        defer { ledger.close() }
        var model = LedgerModel(nextEventID: try ledger.verify().eventCount + 1)
        var generator = OperationGenerator(seed: seed)
        var log: [String] = []
        func fail(_ step: Int, _ problem: String) {
            Issue.record(
                Comment(
                    rawValue: """
                        model-based run diverged: seed \(seed), \(onFile ? "file" : "in-memory") ledger, step \(step) of \(steps)
                        \(problem)
                        replay: BUDGET_LEDGER_MODEL_SEED=\(seed) BUDGET_LEDGER_MODEL_STEPS=\(step) \
                        swift test --skip-build --filter ModelBasedTests
                        last operations (ledger's outcome):
                        \(log.joined(separator: "\n"))
                        """))
        }
        for step in 1...steps {
            let operation = generator.next(model: model, now: clock.read())
            if case .advanceClock(let microseconds) = operation { clock.advance(microseconds: microseconds) }
            let now = clock.read()
            let before = model
            let expected = model.apply(operation, at: now)
            let actual = Self.perform(operation, on: ledger)
            log.append("  \(step) @\(now): \(operation) -> \(actual.brief)")
            if log.count > Self.logLength { log.removeFirst() }
            coverage.note(operation, expected, before: before, after: model)
            if expected != actual {
                fail(step, "the outcomes differ\n  ledger: \(actual)\n  model:  \(expected)")
                return false
            }
            if step % Self.stateCheckEvery == 0 || step == steps, let problem = try Self.stateProblem(ledger, model, at: now) {
                fail(step, problem)
                return false
            }
            if step % Self.verifyEvery == 0 || step == steps {
                let report = try ledger.verify()
                if !report.problems.isEmpty || report.eventCount != model.nextEventID - 1
                    || report.threadCount != Int64(model.threadIDs.count)
                {
                    fail(
                        step,
                        "verify: \(report.problems); \(report.eventCount) events and \(report.threadCount) threads, "
                            + "the model: \(model.nextEventID - 1) and \(model.threadIDs.count)")
                    return false
                }
                if onFile {
                    ledger.close()
                    ledger = try Ledger(path: path, configuration: configuration)
                }
            }
            // Half the steps share their microsecond with the next (prices at the same time as a consume).
            if generator.random.chance(50) { clock.advance(microseconds: generator.random.int(1...20)) }
        }
        return true
    }

    /// Runs `operation` on the ledger and says what it did.
    static func perform(_ operation: ModelOperation, on ledger: Ledger) -> ModelOutcome {
        do {
            switch operation {
            case .consume(let call):
                let result =
                    call.enforce
                    ? try ledger.checkAndConsume(
                        call.threadID, promptTokens: call.promptTokens, completionTokens: call.completionTokens,
                        idempotencyKey: call.idempotencyKey, usage: try call.usage.details())
                    : try ledger.consume(
                        call.threadID, promptTokens: call.promptTokens, completionTokens: call.completionTokens,
                        idempotencyKey: call.idempotencyKey, usage: try call.usage.details())
                return .consumed(result)
            case .checkBudget(let thread, let estimate):
                return .budget(try ledger.checkBudget(thread, estimatedTokens: estimate))
            case .reserve(let thread, let tokens, let ttl):
                return .reserved(try ledger.reserve(thread, tokens: tokens, ttlSeconds: ttl))
            case .settle(let call):
                return .settled(
                    try ledger.settle(
                        call.reservationID, promptTokens: call.promptTokens, completionTokens: call.completionTokens,
                        idempotencyKey: call.idempotencyKey, usage: try call.usage.details()))
            case .release(let id): return .budget(try ledger.release(id))
            case .resetThread(let thread): return .optionalBudget(try ledger.resetThread(thread))
            case .cleanupThread(let thread): return .optionalBudget(try ledger.cleanupThread(thread))
            case .setLimit(let thread, let max): return .budget(try ledger.setLimit(thread, maxTokens: max))
            case .configure(let max):
                try ledger.configure(maxTokensPerThread: max)
                return .done
            case .resetUsageWindow:
                try ledger.resetUsageWindow()
                return .done
            case .setPrice(let model, let prompt, let completion, let from):
                return .priced(
                    try ledger.setPrice(
                        model: model, promptUSDPerMillion: prompt, completionUSDPerMillion: completion, effectiveFrom: from))
            case .usage(let thread): return .optionalBudget(try ledger.usage(thread))
            case .advanceClock: return .done
            }
        } catch let error as BudgetExhaustedError {
            return .exhausted(error)
        } catch let error as LedgerError {
            switch error {
            case .invalidInput(let field, _): return .invalidInput(field: field)
            case .conflict: return .conflict
            case .threadNotFound(let thread): return .threadNotFound(thread)
            case .reservationNotFound(let id): return .reservationNotFound(id)
            default: return .unexpected("\(error)")
            }
        } catch {
            return .unexpected("\(error)")
        }
    }

    /// The first way the ledger's whole state differs from the model's, if any.
    static func stateProblem(_ ledger: Ledger, _ model: LedgerModel, at now: Int64) throws -> String? {
        let budgets = try ledger.allUsage()
        let actual = Dictionary(budgets.map { ($0.threadID, $0) }, uniquingKeysWith: { first, _ in first })
        let expected = Dictionary(uniqueKeysWithValues: model.threadIDs.map { ($0, model.budget($0, at: now)!) })
        if actual.count != budgets.count { return "allUsage lists a thread twice: \(budgets)" }
        if actual != expected {
            let threads = Set(actual.keys).union(expected.keys).sorted().filter { actual[$0] != expected[$0] }
            return "allUsage differs:\n"
                + threads.map { "  \($0.shown): ledger \(actual[$0].map { "\($0)" } ?? "none"), model \(expected[$0].map { "\($0)" } ?? "none")" }
                .joined(separator: "\n")
        }
        if zip(budgets, budgets.dropFirst()).contains(where: { $0.percentUsed < $1.percentUsed }) {
            return "allUsage is not hottest first: \(budgets.map(\.percentUsed))"
        }
        let holds = try ledger.holds()
        if holds != model.liveHolds(at: now) { return "holds differ: ledger \(holds), model \(model.liveHolds(at: now))" }
        for allTime in [false, true] {
            let overview = try ledger.usageOverview(allTime ? .allTime : .currentWindow)
            let wanted = model.overview(allTime: allTime)
            let byAgent = Dictionary(uniqueKeysWithValues: overview.byAgent.map { ($0.agentID, $0.totals) })
            let byModel = Dictionary(uniqueKeysWithValues: overview.byModel.map { ($0.model, $0.totals) })
            let scope = allTime ? "all time" : "current window"
            if overview.totals != wanted.totals { return "usage totals (\(scope)): ledger \(overview.totals), model \(wanted.totals)" }
            if byAgent != wanted.byAgent { return "usage by agent (\(scope)): ledger \(byAgent), model \(wanted.byAgent)" }
            if byModel != wanted.byModel { return "usage by model (\(scope)): ledger \(byModel), model \(wanted.byModel)" }
            if overview.activeThreads != Int64(model.threadIDs.count) {
                return "active threads: ledger \(overview.activeThreads), model \(model.threadIDs.count)"
            }
            let scopeValue: UsageScope = allTime ? .allTime : .currentWindow
            for agent in OperationGenerator.agents.compactMap({ $0 }) {
                let totals = try ledger.usage(agent: agent, scope: scopeValue)
                if totals != wanted.byAgent[agent] ?? UsageTotals() {
                    return "usage(agent: \(agent)) (\(scope)): ledger \(totals), model \(wanted.byAgent[agent] ?? UsageTotals())"
                }
            }
            for name in OperationGenerator.models.compactMap({ $0 }) {
                let totals = try ledger.usage(model: name, scope: scopeValue)
                if totals != wanted.byModel[name.normalizedForModel] ?? UsageTotals() {
                    return "usage(model: \(name)) (\(scope)): ledger \(totals), model \(wanted.byModel[name.normalizedForModel] ?? UsageTotals())"
                }
            }
            let agentTokens = overview.byAgent.map(\.totals.totalTokens)
            if zip(agentTokens, agentTokens.dropFirst()).contains(where: { $0 < $1 }) {
                return "usage by agent is not most tokens first: \(agentTokens)"
            }
        }
        let defaultMax = try ledger.maxTokensPerThread
        if defaultMax != model.defaultMaxTokens { return "default max: ledger \(defaultMax), model \(model.defaultMaxTokens)" }
        let prices = try ledger.prices().map { "\($0.modelPattern)@\($0.effectiveFromMicroseconds): \($0.promptNanodollarsPerToken)/\($0.completionNanodollarsPerToken)" }
        let wantedPrices = model.prices.map { "\($0.pattern)@\($0.from): \($0.promptNanos)/\($0.completionNanos)" }
        if prices.sorted() != wantedPrices.sorted() { return "prices: ledger \(prices.sorted()), model \(wantedPrices.sorted())" }
        return nil
    }
}

/// The cases the runs reached, by name, so that a default run proves it exercised each.
struct ModelCoverage {
    static let required: Set<String> = [
        "consumed", "replayed", "replayed after its life ended", "conflict: consume", "conflict: settle",
        "conflict: release", "crossed 75", "crossed 90", "crossed 95", "limit re-armed a threshold",
        "exhausted: checkAndConsume", "exhausted: checkBudget", "exhausted: reserve", "reserved", "settled",
        "settled after expiry", "settle replayed", "released", "reservation not found", "cleaned up",
        "invalid: threadId", "invalid: promptTokens", "invalid: completionTokens", "invalid: metadata",
        "invalid: maxTokens", "invalid: tokens", "invalid: ttlSeconds", "invalid: from", "price set",
        "price conflict", "priced at a set price", "unpriced", "usage window reset",
    ]

    private(set) var counts: [String: Int] = [:]

    var missing: [String] { Self.required.subtracting(counts.keys).sorted() }

    var summary: String {
        counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }

    mutating func note(_ operation: ModelOperation, _ outcome: ModelOutcome, before: LedgerModel, after: LedgerModel) {
        var tags: [String] = []
        switch outcome {
        case .consumed(let result):
            tags += consumeTags(result, after: after)
        case .settled(let settled):
            tags += consumeTags(settled.consume, after: after)
            tags.append(settled.consume.isReplay ? "settle replayed" : "settled")
            if settled.holdHadExpired && !settled.consume.isReplay { tags.append("settled after expiry") }
        case .exhausted:
            if case .consume = operation { tags.append("exhausted: checkAndConsume") }
            if case .checkBudget = operation { tags.append("exhausted: checkBudget") }
            if case .reserve = operation { tags.append("exhausted: reserve") }
        case .invalidInput(let field): tags.append("invalid: \(field)")
        case .conflict:
            switch operation {
            case .consume: tags.append("conflict: consume")
            case .settle: tags.append("conflict: settle")
            case .release: tags.append("conflict: release")
            case .setPrice: tags.append("price conflict")
            default: tags.append("conflict: other")
            }
        case .reservationNotFound: tags.append("reservation not found")
        case .reserved: tags.append("reserved")
        case .priced: tags.append("price set")
        case .budget(let budget):
            if case .release = operation { tags.append("released") }
            if case .setLimit = operation,
                let earlier = before.budget(budget.threadID, at: 0),
                earlier.triggeredThresholds.count > budget.triggeredThresholds.count
            {
                tags.append("limit re-armed a threshold")
            }
        case .optionalBudget(let budget?):
            if case .cleanupThread = operation { tags.append("cleaned up") }
            _ = budget
        case .done:
            if case .resetUsageWindow = operation { tags.append("usage window reset") }
        default: break
        }
        for tag in tags { counts[tag, default: 0] += 1 }
    }

    private func consumeTags(_ result: ConsumeResult, after: LedgerModel) -> [String] {
        guard !result.isReplay else {
            let opened = after.openedEventID(result.event.threadID) ?? .max
            return opened > result.event.id ? ["replayed", "replayed after its life ended"] : ["replayed"]
        }
        var tags = ["consumed"] + result.crossedThresholds.map { "crossed \($0.thresholdPercent)" }
        if result.event.costNanodollars == nil {
            tags.append("unpriced")
        } else if result.event.usage.model?.lowercased().hasPrefix("m-custom") == true {
            tags.append("priced at a set price")
        }
        return tags
    }
}
