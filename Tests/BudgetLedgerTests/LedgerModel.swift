@testable import BudgetLedger

/// One call the model-based test makes, on the ledger and on the model alike.
enum ModelOperation: CustomStringConvertible {
    case consume(ConsumeCall)
    case checkBudget(threadID: String, estimatedTokens: Int64)
    case reserve(threadID: String, tokens: Int64, ttlSeconds: Int64)
    case settle(SettleCall)
    case release(reservationID: Int64)
    case resetThread(String)
    case cleanupThread(String)
    case setLimit(threadID: String, maxTokens: Int64)
    case configure(maxTokensPerThread: Int64)
    case resetUsageWindow
    case setPrice(model: String, prompt: String, completion: String, from: Int64?)
    case usage(String)
    case advanceClock(microseconds: Int64)

    var description: String {
        switch self {
        case .consume(let call): return call.description
        case .checkBudget(let thread, let estimate): return "checkBudget(\(thread.shown), estimate: \(estimate))"
        case .reserve(let thread, let tokens, let ttl): return "reserve(\(thread.shown), tokens: \(tokens), ttl: \(ttl) s)"
        case .settle(let call): return call.description
        case .release(let id): return "release(\(id))"
        case .resetThread(let thread): return "resetThread(\(thread.shown))"
        case .cleanupThread(let thread): return "cleanupThread(\(thread.shown))"
        case .setLimit(let thread, let max): return "setLimit(\(thread.shown), \(max))"
        case .configure(let max): return "configure(maxTokensPerThread: \(max))"
        case .resetUsageWindow: return "resetUsageWindow()"
        case .setPrice(let model, let prompt, let completion, let from):
            return "setPrice(\(model.shown), prompt: \"\(prompt)\", completion: \"\(completion)\", from: \(from.map(String.init) ?? "now"))"
        case .usage(let thread): return "usage(\(thread.shown))"
        case .advanceClock(let microseconds): return "advanceClock(+\(microseconds) µs)"
        }
    }
}

/// A consume or a checked consume.
struct ConsumeCall: CustomStringConvertible {
    var threadID: String
    var promptTokens: Int64
    var completionTokens: Int64
    var idempotencyKey: String?
    var usage: ModelUsage
    var enforce: Bool

    var description: String {
        "\(enforce ? "checkAndConsume" : "consume")(\(threadID.shown), \(promptTokens) + \(completionTokens)"
            + "\(idempotencyKey.map { ", key: \($0.shown)" } ?? "")\(usage.shown))"
    }
}

/// A settle of a hold.
struct SettleCall: CustomStringConvertible {
    var reservationID: Int64
    var promptTokens: Int64
    var completionTokens: Int64
    var idempotencyKey: String?
    var usage: ModelUsage

    var description: String {
        "settle(\(reservationID), \(promptTokens) + \(completionTokens)"
            + "\(idempotencyKey.map { ", key: \($0.shown)" } ?? "")\(usage.shown))"
    }
}

/// What a call did, in a form both sides produce and compare exactly.
enum ModelOutcome: Equatable, CustomStringConvertible {
    case consumed(ConsumeResult)
    case budget(ThreadBudget)
    case optionalBudget(ThreadBudget?)
    case reserved(ReserveResult)
    case settled(SettleResult)
    case priced(ModelPrice)
    case done
    case exhausted(BudgetExhaustedError)
    case invalidInput(field: String)
    case conflict
    case threadNotFound(String)
    case reservationNotFound(Int64)
    case unexpected(String)

    var description: String {
        switch self {
        case .consumed(let result): return "consumed(\(result))"
        case .budget(let budget): return "budget(\(budget))"
        case .optionalBudget(let budget): return "optionalBudget(\(budget.map { "\($0)" } ?? "nil"))"
        case .reserved(let result): return "reserved(\(result))"
        case .settled(let result): return "settled(\(result))"
        case .priced(let price): return "priced(\(price))"
        case .done: return "done"
        case .exhausted(let error): return "exhausted(\(error), held \(error.heldTokens))"
        case .invalidInput(let field): return "invalidInput(field: \(field))"
        case .conflict: return "conflict"
        case .threadNotFound(let thread): return "threadNotFound(\(thread))"
        case .reservationNotFound(let id): return "reservationNotFound(\(id))"
        case .unexpected(let text): return "unexpected error: \(text)"
        }
    }
}

extension ModelOutcome {
    /// One short line for the operation log.
    var brief: String {
        func budget(_ budget: ThreadBudget) -> String {
            "\(budget.threadID.shown) \(budget.totalTokens)/\(budget.maxTokens) (\(budget.requestCount) requests, "
                + "held \(budget.heldTokens), crossed \(budget.triggeredThresholds))"
        }
        func consume(_ result: ConsumeResult) -> String {
            "event \(result.event.id)\(result.isReplay ? " (replay)" : "") cost \(result.event.costNanodollars.map(String.init) ?? "nil"), "
                + "crossed now \(result.crossedThresholds.map(\.thresholdPercent)); \(budget(result.budget))"
        }
        switch self {
        case .consumed(let result): return "consumed: \(consume(result))"
        case .budget(let value): return "budget: \(budget(value))"
        case .optionalBudget(let value): return "budget: \(value.map(budget) ?? "nil")"
        case .reserved(let result):
            return "reserved \(result.reservation.id) until \(result.reservation.expiresAtMicroseconds); \(budget(result.budget))"
        case .settled(let result):
            return "settled \(result.reservation.id)\(result.holdHadExpired ? " (expired)" : ""): \(consume(result.consume))"
        default: return description
        }
    }
}

/// The ledger's semantics in memory: the reference registry's (budgets per thread life, a
/// default max, thresholds once per window) plus ours (checked consumes, holds, idempotency
/// keys, limits that re-arm thresholds, prices, usage windows), written from the README and the
/// doc comments, never from the ledger's code. Every call first works out its outcome from the
/// state as it stands and changes the state only when the call succeeds, as a rolled-back
/// savepoint leaves the ledger.
struct LedgerModel {
    struct Thread {
        var maxTokens: Int64
        var promptTokens: Int64 = 0
        var completionTokens: Int64 = 0
        var requestCount: Int64 = 0
        var triggered: Set<Int> = []
        /// The event that began this life (an open, or the limit that opened the thread).
        let openedEventID: Int64
        /// The event that began the current window: the last reset, else the opening event.
        var resetEventID: Int64? = nil
        var totalTokens: Int64 { promptTokens + completionTokens }
        var windowEventID: Int64 { resetEventID ?? openedEventID }
    }

    enum HoldEnding { case settled, released, cleanedUp }

    struct Hold {
        let reservation: Reservation
        var ending: HoldEnding?
        /// Whether an expire event was recorded (the ledger records one when it notices).
        var expireRecorded = false
    }

    /// A consume recorded under an idempotency key, with what a replay answers.
    struct KeyedConsume {
        let call: ConsumeCall
        let reservationID: Int64?
        let event: ConsumeEvent
        let crossings: [ThresholdCrossing]
        /// The thread's budget right after it: a replay answers this once its life has ended.
        let budgetAfter: ThreadBudget
    }

    struct Price {
        /// A normalised exact name, or a literal and one trailing `*`.
        let pattern: String
        let promptNanos: Int64
        let completionNanos: Int64
        let from: Int64
    }

    struct UsageKey: Hashable {
        let window: Int
        let agentID: String?
        let model: String?
    }

    static let thresholds = BudgetThreshold.defaults.sorted { $0.percent < $1.percent }

    private(set) var threads: [String: Thread] = [:]
    private(set) var holds: [Int64: Hold] = [:]
    private(set) var keys: [String: KeyedConsume] = [:]
    /// Per thread, the window (its window event, 0 while not open) whose refusal is recorded:
    /// a refused call records one refusal event the first time in a window (migration 0011).
    private(set) var refusedWindows: [String: Int64] = [:]
    private(set) var defaultMaxTokens: Int64 = 100_000
    private(set) var nextEventID: Int64
    private(set) var prices: [Price]
    private(set) var usageWindow = 0
    private(set) var usage: [UsageKey: UsageTotals] = [:]
    /// All-time sums of prompt tokens, completion tokens, cost and latency: the ledger's capacity.
    private var allTimeSums: [Int64] = [0, 0, 0, 0]
    /// The latest consume of each model (normalised): a price may not start at or before it.
    private var latestConsumeByModel: [String: Int64] = [:]

    init(nextEventID: Int64) {
        self.nextEventID = nextEventID
        // Migration 0002's seeded prices as migration 0008 restates them: each name exactly and
        // its dated variants (NAME-20*), in force from the beginning of time.
        let seeded: [(String, Int64, Int64)] = [
            ("grok-4.1", 3000, 15000), ("grok-3", 3000, 15000), ("claude-opus-4", 15000, 75000),
            ("claude-sonnet-4", 3000, 15000), ("claude-sonnet-3-5", 3000, 15000), ("gpt-4o", 2500, 10000),
            ("gpt-4o-mini", 150, 600), ("o1", 15000, 60000), ("o3-mini", 1100, 4400),
        ]
        prices = seeded.flatMap { name, prompt, completion in
            [name, name + "-20*"].map { Price(pattern: $0, promptNanos: prompt, completionNanos: completion, from: 0) }
        }
    }

    // MARK: - Reads

    /// Tokens held by the thread's live holds at `now`.
    func heldTokens(_ threadID: String, at now: Int64) -> Int64 {
        holds.values.filter { hold in
            hold.reservation.threadID == threadID && hold.ending == nil && hold.reservation.expiresAtMicroseconds > now
        }.reduce(0) { $0 + $1.reservation.tokens }
    }

    func budget(_ threadID: String, at now: Int64) -> ThreadBudget? {
        threads[threadID].map { budget(threadID, $0, at: now) }
    }

    func budget(_ threadID: String, _ thread: Thread, at now: Int64) -> ThreadBudget {
        ThreadBudget(
            threadID: threadID, maxTokens: thread.maxTokens, promptTokens: thread.promptTokens,
            completionTokens: thread.completionTokens, requestCount: thread.requestCount,
            triggeredThresholds: thread.triggered.sorted(), heldTokens: heldTokens(threadID, at: now))
    }

    /// Live holds at `now`, oldest first.
    func liveHolds(at now: Int64) -> [Reservation] {
        holds.values.filter { $0.ending == nil && $0.reservation.expiresAtMicroseconds > now }.map(\.reservation)
            .sorted { $0.id < $1.id }
    }

    /// Usage totals of the current window (or of all time), per agent and per model.
    func overview(allTime: Bool) -> (totals: UsageTotals, byAgent: [String?: UsageTotals], byModel: [String?: UsageTotals]) {
        var totals = UsageTotals()
        var byAgent: [String?: UsageTotals] = [:]
        var byModel: [String?: UsageTotals] = [:]
        for (key, value) in usage where allTime || key.window == usageWindow {
            totals.add(value)
            byAgent[key.agentID, default: UsageTotals()].add(value)
            byModel[key.model, default: UsageTotals()].add(value)
        }
        return (totals, byAgent, byModel)
    }

    func hold(_ id: Int64) -> Hold? { holds[id] }

    /// The idempotency keys recorded so far.
    var recordedKeys: Set<String> { Set(keys.keys) }

    /// The open threads, sorted.
    var threadIDs: [String] { threads.keys.sorted() }

    /// The event that began the thread's current life; nil when it is not open.
    func openedEventID(_ threadID: String) -> Int64? { threads[threadID]?.openedEventID }

    /// Every hold ever made, in id order (a dictionary's order changes from run to run).
    var holdIDs: [Int64] { holds.keys.sorted() }

    /// Whether the price row `pattern` prices the normalised `name`, and how specifically: the
    /// exact name beats every pattern, a longer literal a shorter one.
    static func specificity(of pattern: String, for name: String) -> Int? {
        if pattern.hasSuffix("*") {
            let literal = Array(pattern.unicodeScalars.dropLast())
            return Array(name.unicodeScalars).starts(with: literal) ? literal.count : nil
        }
        return Array(pattern.unicodeScalars) == Array(name.unicodeScalars) ? Int.max : nil
    }

    /// The price in force for `model` at `time`: the most specific row, then the latest start.
    func price(forModel model: String, at time: Int64) -> Price? {
        let name = model.normalizedForModel
        var best: (specificity: Int, price: Price)?
        for price in prices where price.from <= time {
            guard let specificity = Self.specificity(of: price.pattern, for: name) else { continue }
            if let current = best,
                current.specificity > specificity || (current.specificity == specificity && current.price.from >= price.from)
            {
                continue
            }
            best = (specificity, price)
        }
        return best?.price
    }

    // MARK: - Calls

    /// Works out `operation`'s outcome at `now` and applies it when it succeeds.
    mutating func apply(_ operation: ModelOperation, at now: Int64) -> ModelOutcome {
        switch operation {
        case .consume(let call): return consume(call, at: now)
        case .checkBudget(let thread, let estimate): return checkBudget(thread, estimate: estimate, at: now)
        case .reserve(let thread, let tokens, let ttl): return reserve(thread, tokens: tokens, ttlSeconds: ttl, at: now)
        case .settle(let call): return settle(call, at: now)
        case .release(let id): return release(id, at: now)
        case .resetThread(let thread): return resetThread(thread, at: now)
        case .cleanupThread(let thread): return cleanupThread(thread, at: now)
        case .setLimit(let thread, let max): return setLimit(thread, maxTokens: max, at: now)
        case .configure(let max):
            if let field = Self.countProblem(max, field: "maxTokensPerThread", max: LedgerLimits.maxTokensMax) {
                return .invalidInput(field: field)
            }
            defaultMaxTokens = max
            nextEventID += 1
            return .done
        case .resetUsageWindow:
            usageWindow += 1
            nextEventID += 1
            return .done
        case .setPrice(let model, let prompt, let completion, let from):
            return setPrice(model, prompt: prompt, completion: completion, from: from ?? now)
        case .usage(let thread):
            if let field = Self.identifierProblem(thread, field: "threadId") { return .invalidInput(field: field) }
            return .optionalBudget(budget(thread, at: now))
        case .advanceClock:
            return .done
        }
    }

    private mutating func consume(_ call: ConsumeCall, at now: Int64) -> ModelOutcome {
        if let field = call.usage.metadataProblem ?? Self.requestProblem(call) { return .invalidInput(field: field) }
        if let key = call.idempotencyKey, let recorded = keys[key] {
            return replay(call, settling: nil, recorded, at: now)
        }
        return record(call, settling: nil, at: now).outcome(ModelOutcome.consumed)
    }

    /// What an earlier consume with the same key answers: a conflict when any recorded field
    /// differs; the original event and crossings, and the budget now (or, once the life that
    /// recorded it has ended, as it left it), otherwise.
    private func replay(_ call: ConsumeCall, settling reservationID: Int64?, _ recorded: KeyedConsume, at now: Int64)
        -> ModelOutcome
    {
        let original = recorded.call
        let same =
            call.threadID == original.threadID && call.promptTokens == original.promptTokens
            && call.completionTokens == original.completionTokens && reservationID == recorded.reservationID
            && call.usage.agentID == original.usage.agentID && call.usage.model == original.usage.model
            && call.usage.provider == original.usage.provider
            && call.usage.latencyMilliseconds == original.usage.latencyMilliseconds
            && ModelMetadata.sameObject(call.usage.metadataJSON, original.usage.metadataJSON)
        guard same else { return .conflict }
        var budget = recorded.budgetAfter
        if let thread = threads[call.threadID], thread.openedEventID < recorded.event.id {
            budget = self.budget(call.threadID, thread, at: now)
        }
        return .consumed(
            ConsumeResult(budget: budget, crossedThresholds: recorded.crossings, event: recorded.event, isReplay: true))
    }

    /// A new consume (validated, its key unused): records expiries of the thread's holds, opens
    /// the thread, refuses what does not fit when checked, prices it, records it and its crossings.
    private mutating func record(_ call: ConsumeCall, settling reservationID: Int64?, at now: Int64)
        -> Result<ConsumeResult, ModelFailure>
    {
        var eventID = nextEventID
        let expiring = expiringHolds(of: call.threadID, at: now)
        eventID += Int64(expiring.count)
        var thread: Thread
        if let open = threads[call.threadID] {
            thread = open
        } else {
            thread = Thread(maxTokens: defaultMaxTokens, openedEventID: eventID)
            eventID += 1
        }
        let held = heldTokens(call.threadID, at: now)
        let tokens = call.promptTokens + call.completionTokens
        if call.enforce && (thread.totalTokens >= thread.maxTokens || thread.totalTokens + held + tokens > thread.maxTokens) {
            recordRefusal(call.threadID)
            return .failure(
                .outcome(
                    .exhausted(
                        BudgetExhaustedError(
                            threadID: call.threadID, used: thread.totalTokens, maxTokens: thread.maxTokens,
                            requestedTokens: tokens, heldTokens: held))))
        }
        let cost = call.usage.model.flatMap { model in price(forModel: model, at: now) }.map { price in
            call.promptTokens * price.promptNanos + call.completionTokens * price.completionNanos
        }
        let added = [call.promptTokens, call.completionTokens, cost ?? 0, call.usage.latencyMilliseconds ?? 0]
        if zip(allTimeSums, added).contains(where: { $0 > LedgerLimits.allTimeSumMax - $1 }) {
            return .failure(.outcome(.conflict))
        }
        let consumeID = eventID
        eventID += 1
        thread.promptTokens += call.promptTokens
        thread.completionTokens += call.completionTokens
        thread.requestCount += 1
        var crossings: [ThresholdCrossing] = []
        for threshold in Self.thresholds where !thread.triggered.contains(threshold.percent) {
            guard Self.reaches(thread.totalTokens, percent: threshold.percent, of: thread.maxTokens) else { continue }
            crossings.append(
                ThresholdCrossing(
                    thresholdPercent: threshold.percent, severity: threshold.severity,
                    tokensUsed: thread.totalTokens, maxTokens: thread.maxTokens))
            thread.triggered.insert(threshold.percent)
            eventID += 1
        }
        // Commit.
        nextEventID = eventID
        for id in expiring { holds[id]?.expireRecorded = true }
        if let reservationID { holds[reservationID]?.ending = .settled }
        threads[call.threadID] = thread
        for index in allTimeSums.indices { allTimeSums[index] += added[index] }
        if let model = call.usage.model { latestConsumeByModel[model.normalizedForModel] = now }
        var totals = UsageTotals()
        totals.promptTokens = call.promptTokens
        totals.completionTokens = call.completionTokens
        totals.requestCount = 1
        totals.costNanodollars = cost ?? 0
        totals.unpricedRequests = cost == nil ? 1 : 0
        totals.unpricedTokens = cost == nil ? call.promptTokens + call.completionTokens : 0
        totals.latencyMillisecondsSum = call.usage.latencyMilliseconds ?? 0
        totals.latencyCount = call.usage.latencyMilliseconds == nil ? 0 : 1
        let modelKey = call.usage.model.map(\.normalizedForModel).flatMap { $0.isEmpty ? nil : $0 }
        usage[UsageKey(window: usageWindow, agentID: call.usage.agentID, model: modelKey), default: UsageTotals()]
            .add(totals)
        let event = ConsumeEvent(
            id: consumeID, timestampMicroseconds: now, threadID: call.threadID, promptTokens: call.promptTokens,
            completionTokens: call.completionTokens, idempotencyKey: call.idempotencyKey, usage: call.usage.recorded,
            costNanodollars: cost, reservationID: reservationID)
        let after = budget(call.threadID, thread, at: now)
        if let key = call.idempotencyKey {
            keys[key] = KeyedConsume(
                call: call, reservationID: reservationID, event: event, crossings: crossings, budgetAfter: after)
        }
        return .success(ConsumeResult(budget: after, crossedThresholds: crossings, event: event, isReplay: false))
    }

    /// The thread's holds whose time has passed and whose expiry is not recorded yet, in id order.
    private func expiringHolds(of threadID: String, at now: Int64) -> [Int64] {
        holds.values.filter { hold in
            hold.reservation.threadID == threadID && hold.ending == nil && !hold.expireRecorded
                && hold.reservation.expiresAtMicroseconds <= now
        }.map(\.reservation.id).sorted()
    }

    private mutating func checkBudget(_ threadID: String, estimate: Int64, at now: Int64) -> ModelOutcome {
        if let field = Self.identifierProblem(threadID, field: "threadId")
            ?? Self.countProblem(estimate, field: "estimatedTokens", max: LedgerLimits.tokensPerRequestMax)
        {
            return .invalidInput(field: field)
        }
        // A check opens a new thread (as the reference's get-or-create), whether or not it fits.
        openIfNeeded(threadID)
        let budget = budget(threadID, at: now)!
        if budget.totalTokens >= budget.maxTokens || budget.totalTokens + budget.heldTokens + estimate > budget.maxTokens {
            return .exhausted(
                BudgetExhaustedError(
                    threadID: threadID, used: budget.totalTokens, maxTokens: budget.maxTokens, requestedTokens: estimate,
                    heldTokens: budget.heldTokens))
        }
        return .budget(budget)
    }

    /// A refused call writes nothing of itself (not even the open of a new thread), only a
    /// refusal event when its thread's window has none yet.
    private mutating func recordRefusal(_ threadID: String) {
        let window = threads[threadID]?.windowEventID ?? 0
        guard refusedWindows[threadID] != window else { return }
        refusedWindows[threadID] = window
        nextEventID += 1
    }

    private mutating func openIfNeeded(_ threadID: String) {
        guard threads[threadID] == nil else { return }
        threads[threadID] = Thread(maxTokens: defaultMaxTokens, openedEventID: nextEventID)
        nextEventID += 1
    }

    private mutating func reserve(_ threadID: String, tokens: Int64, ttlSeconds: Int64, at now: Int64) -> ModelOutcome {
        if let field = Self.identifierProblem(threadID, field: "threadId") { return .invalidInput(field: field) }
        if !(1...LedgerLimits.tokensPerRequestMax).contains(tokens) { return .invalidInput(field: "tokens") }
        if !(1...LedgerLimits.holdSecondsMax).contains(ttlSeconds) { return .invalidInput(field: "ttlSeconds") }
        let expiring = expiringHolds(of: threadID, at: now)
        var eventID = nextEventID + Int64(expiring.count)
        let thread = threads[threadID] ?? Thread(maxTokens: defaultMaxTokens, openedEventID: eventID)
        if threads[threadID] == nil { eventID += 1 }
        let held = heldTokens(threadID, at: now)
        if thread.totalTokens >= thread.maxTokens || thread.totalTokens + held + tokens > thread.maxTokens {
            recordRefusal(threadID)
            return .exhausted(
                BudgetExhaustedError(
                    threadID: threadID, used: thread.totalTokens, maxTokens: thread.maxTokens, requestedTokens: tokens,
                    heldTokens: held))
        }
        let reservation = Reservation(
            id: eventID, threadID: threadID, tokens: tokens, expiresAtMicroseconds: now + ttlSeconds * 1_000_000)
        nextEventID = eventID + 1
        for id in expiring { holds[id]?.expireRecorded = true }
        threads[threadID] = thread
        holds[reservation.id] = Hold(reservation: reservation)
        return .reserved(ReserveResult(reservation: reservation, budget: budget(threadID, at: now)!))
    }

    private mutating func settle(_ call: SettleCall, at now: Int64) -> ModelOutcome {
        // Metadata is checked where it is made, before the ledger is called (`Metadata`).
        if let field = call.usage.metadataProblem { return .invalidInput(field: field) }
        guard let hold = holds[call.reservationID] else { return .reservationNotFound(call.reservationID) }
        let reservation = hold.reservation
        let consume = ConsumeCall(
            threadID: reservation.threadID, promptTokens: call.promptTokens, completionTokens: call.completionTokens,
            idempotencyKey: call.idempotencyKey, usage: call.usage, enforce: false)
        if let field = Self.requestProblem(consume) { return .invalidInput(field: field) }
        if let key = call.idempotencyKey, let recorded = keys[key] {
            let replayed = replay(consume, settling: call.reservationID, recorded, at: now)
            guard case .consumed(let result) = replayed else { return replayed }
            return .settled(
                SettleResult(
                    consume: result, reservation: reservation,
                    holdHadExpired: reservation.expiresAtMicroseconds <= result.event.timestampMicroseconds))
        }
        // A hold ends once: settled, released, or with its thread's life (documented: "or its
        // thread was cleaned up"), whether or not its expiry was recorded before.
        if hold.ending != nil { return .conflict }
        let expired = hold.expireRecorded || reservation.expiresAtMicroseconds <= now
        switch record(consume, settling: call.reservationID, at: now) {
        case .failure(.outcome(let outcome)): return outcome
        case .success(let result):
            let settled = ConsumeResult(
                budget: budget(reservation.threadID, at: now)!, crossedThresholds: result.crossedThresholds,
                event: result.event, isReplay: false)
            return .settled(SettleResult(consume: settled, reservation: reservation, holdHadExpired: expired))
        }
    }

    private mutating func release(_ reservationID: Int64, at now: Int64) -> ModelOutcome {
        guard let hold = holds[reservationID] else { return .reservationNotFound(reservationID) }
        guard hold.ending == nil, hold.reservation.expiresAtMicroseconds > now else { return .conflict }
        holds[reservationID]?.ending = .released
        nextEventID += 1
        return .budget(budget(hold.reservation.threadID, at: now)!)
    }

    private mutating func resetThread(_ threadID: String, at now: Int64) -> ModelOutcome {
        if let field = Self.identifierProblem(threadID, field: "threadId") { return .invalidInput(field: field) }
        guard var thread = threads[threadID] else { return .optionalBudget(nil) }
        thread.promptTokens = 0
        thread.completionTokens = 0
        thread.requestCount = 0
        thread.triggered = []
        thread.resetEventID = nextEventID
        threads[threadID] = thread
        nextEventID += 1
        return .optionalBudget(budget(threadID, at: now))
    }

    private mutating func cleanupThread(_ threadID: String, at now: Int64) -> ModelOutcome {
        if let field = Self.identifierProblem(threadID, field: "threadId") { return .invalidInput(field: field) }
        guard let final = budget(threadID, at: now) else { return .optionalBudget(nil) }
        threads[threadID] = nil
        refusedWindows[threadID] = nil
        for (id, hold) in holds where hold.reservation.threadID == threadID && hold.ending == nil {
            holds[id]?.ending = .cleanedUp
        }
        nextEventID += 1
        return .optionalBudget(final)
    }

    /// A limit re-arms every threshold the thread no longer reaches under the new max (all of
    /// them at max 0); those still reached stay crossed (README, migration 0007).
    private mutating func setLimit(_ threadID: String, maxTokens: Int64, at now: Int64) -> ModelOutcome {
        if let field = Self.identifierProblem(threadID, field: "threadId")
            ?? Self.countProblem(maxTokens, field: "maxTokens", max: LedgerLimits.maxTokensMax)
        {
            return .invalidInput(field: field)
        }
        if var thread = threads[threadID] {
            thread.maxTokens = maxTokens
            thread.triggered = thread.triggered.filter { Self.reaches(thread.totalTokens, percent: $0, of: maxTokens) }
            threads[threadID] = thread
        } else {
            threads[threadID] = Thread(maxTokens: maxTokens, openedEventID: nextEventID)
        }
        nextEventID += 1
        return .budget(budget(threadID, at: now)!)
    }

    private mutating func setPrice(_ model: String, prompt: String, completion: String, from: Int64) -> ModelOutcome {
        if let field = Self.identifierProblem(model, field: "model") { return .invalidInput(field: field) }
        let pattern = model.normalizedForModel
        if pattern.isEmpty || pattern == "*" || pattern.dropLast().contains("*") { return .invalidInput(field: "model") }
        guard let promptNanos = ModelPrices.nanosPerToken(prompt) else { return .invalidInput(field: "prompt price") }
        guard let completionNanos = ModelPrices.nanosPerToken(completion) else {
            return .invalidInput(field: "completion price")
        }
        guard (0...Timestamps.maxMicroseconds).contains(from) else { return .invalidInput(field: "from") }
        return setPrice(pattern: pattern, promptNanos: promptNanos, completionNanos: completionNanos, from: from)
    }

    private mutating func setPrice(pattern: String, promptNanos: Int64, completionNanos: Int64, from: Int64) -> ModelOutcome {
        // A price may not start at or before a recorded consume whose model it matches.
        if latestConsumeByModel.contains(where: { Self.specificity(of: pattern, for: $0.key) != nil && $0.value >= from }) {
            return .conflict
        }
        if prices.contains(where: { $0.pattern == pattern && $0.from == from }) { return .conflict }
        prices.append(Price(pattern: pattern, promptNanos: promptNanos, completionNanos: completionNanos, from: from))
        return .priced(
            ModelPrice(
                modelPattern: pattern, promptNanodollarsPerToken: promptNanos, completionNanodollarsPerToken: completionNanos,
                effectiveFromMicroseconds: from, source: "budget-ledger price set"))
    }

    // MARK: - Rules

    /// used * 100 >= percent * max, never at max 0.
    static func reaches(_ used: Int64, percent: Int, of maxTokens: Int64) -> Bool {
        maxTokens > 0 && used * 100 >= Int64(percent) * maxTokens
    }

    /// The first field of a consume the ledger refuses, in the order it checks them (metadata,
    /// checked when made, is `ModelUsage.metadataProblem`).
    static func requestProblem(_ call: ConsumeCall) -> String? {
        identifierProblem(call.threadID, field: "threadId")
            ?? countProblem(call.promptTokens, field: "promptTokens", max: LedgerLimits.tokensPerCallMax)
            ?? countProblem(call.completionTokens, field: "completionTokens", max: LedgerLimits.tokensPerCallMax)
            ?? call.idempotencyKey.flatMap { identifierProblem($0, field: "idempotencyKey") }
            ?? call.usage.agentID.flatMap { identifierProblem($0, field: "agentId") }
            ?? call.usage.model.flatMap { identifierProblem($0, field: "model") }
            ?? call.usage.provider.flatMap { identifierProblem($0, field: "provider") }
            ?? call.usage.latencyMilliseconds.flatMap {
                countProblem($0, field: "latencyMs", max: LedgerLimits.latencyMillisecondsMax)
            }
    }

    static func identifierProblem(_ value: String, field: String) -> String? {
        let hasControl = value.unicodeScalars.contains { $0.properties.generalCategory == .control }
        return value.isEmpty || value.utf8.count > LedgerLimits.identifierBytesMax || hasControl ? field : nil
    }

    static func countProblem(_ value: Int64, field: String, max: Int64) -> String? {
        (0...max).contains(value) ? nil : field
    }
}

/// Why `record` did not record.
enum ModelFailure: Error {
    case outcome(ModelOutcome)
}

extension Result where Failure == ModelFailure {
    func outcome(_ transform: (Success) -> ModelOutcome) -> ModelOutcome {
        switch self {
        case .success(let value): return transform(value)
        case .failure(.outcome(let outcome)): return outcome
        }
    }
}

/// The metadata texts the test uses, and what the ledger makes of each.
enum ModelMetadata {
    /// Text, the object it holds (equal canonical forms are the same object), and the field a
    /// refusal names (nil when valid).
    static let choices: [(text: String?, canonical: String?, invalidField: String?)] = [
        (nil, nil, nil),
        (#"{"org_id":"acme","user_id":"u1"}"#, "acme/u1", nil),
        (#"{ "user_id": "u1", "org_id": "acme" }"#, "acme/u1", nil),
        (#"{"org_id":"beta"}"#, "beta/-", nil),
        ("{}", "-/-", nil),
        ("[1,2]", nil, "metadata"),
        ("not json", nil, "metadata"),
        (#"{"org_id":7}"#, nil, "metadata.org_id"),
        (#"{"user_id":""}"#, nil, "metadata.user_id"),
    ]

    static func problem(_ text: String) -> String? {
        choices.first { $0.text == text }!.invalidField
    }

    static func sameObject(_ left: String?, _ right: String?) -> Bool {
        guard let left, let right else { return left == nil && right == nil }
        return choices.first { $0.text == left }!.canonical == choices.first { $0.text == right }!.canonical
    }
}

/// Prices as the README states them: USD per million tokens, a plain decimal with at most three
/// decimals, at most $10,000 per million; kept as nano-dollars per token.
enum ModelPrices {
    static func nanosPerToken(_ text: String) -> Int64? {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let whole = parts[0]
        let fraction = parts.count > 1 ? parts[1] : ""
        let digits = { (part: Substring) in part.allSatisfy { ("0"..."9").contains($0) } }
        guard !whole.isEmpty, digits(whole), digits(fraction), parts.count == 1 || !fraction.isEmpty,
            fraction.count <= 3, whole.count <= 8
        else { return nil }
        let nanos = Int64(whole)! * 1_000 + Int64(fraction + String(repeating: "0", count: 3 - fraction.count))!
        return nanos <= LedgerLimits.priceNanodollarsPerTokenMax ? nanos : nil
    }

    /// `nanos` per token as USD per million tokens: 2500 → "2.5".
    static func text(nanosPerToken nanos: Int64) -> String {
        let fraction = nanos % 1_000
        guard fraction != 0 else { return String(nanos / 1_000) }
        var digits = String(fraction)
        digits = String(repeating: "0", count: 3 - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(nanos / 1_000).\(digits)"
    }
}

extension UsageTotals {
    mutating func add(_ other: UsageTotals) {
        promptTokens += other.promptTokens
        completionTokens += other.completionTokens
        requestCount += other.requestCount
        costNanodollars += other.costNanodollars
        unpricedRequests += other.unpricedRequests
        unpricedTokens += other.unpricedTokens
        latencyMillisecondsSum += other.latencyMillisecondsSum
        latencyCount += other.latencyCount
    }
}

extension String {
    /// ASCII letters lowercased, as SQLite's `lower()` (the models here are ASCII).
    /// The model's own statement of the naming rule (README, Money): ASCII whitespace trimmed,
    /// ASCII letters lowercased.
    var normalizedForModel: String {
        let whitespace: Set<Unicode.Scalar> = [" ", "\t", "\n", "\u{0B}", "\u{0C}", "\r"]
        var scalars = Array(unicodeScalars)
        while let first = scalars.first, whitespace.contains(first) { scalars.removeFirst() }
        while let last = scalars.last, whitespace.contains(last) { scalars.removeLast() }
        return String(String.UnicodeScalarView(scalars.map { ("A"..."Z").contains($0) ? Unicode.Scalar($0.value + 32)! : $0 }))
    }

    /// Short enough for an operation log: long ids by their length.
    var shown: String {
        utf8.count > 24 ? "\"\(prefix(8))…\"(\(utf8.count) bytes)" : "\"\(unicodeScalars.map { $0.escaped(asASCII: true) }.joined())\""
    }
}

extension Optional where Wrapped == String {
    var shown: String { map(\.shown) ?? "nil" }
}

/// A call's usage as the test generates it: metadata as text, valid or not, since a `Metadata`
/// that breaks the ledger's rules cannot be made.
struct ModelUsage {
    var agentID: String?
    var model: String?
    var provider: String?
    var latencyMilliseconds: Int64?
    var metadataJSON: String?

    /// The field a refusal of the metadata names, or nil when it is valid (or absent).
    var metadataProblem: String? { metadataJSON.flatMap(ModelMetadata.problem) }

    /// The details the ledger is called with: the metadata is checked here, as a caller does.
    func details() throws -> UsageDetails {
        try UsageDetails(
            agentID: agentID, model: model, provider: provider, latencyMilliseconds: latencyMilliseconds,
            metadataJSON: metadataJSON)
    }

    /// The details a recorded call reads back with (only calls with valid metadata are recorded).
    var recorded: UsageDetails {
        // `try!`: the model records a call only after `metadataProblem` found nothing.
        try! details()
    }

    var shown: String {
        var parts: [String] = []
        if let agentID { parts.append("agent: \(agentID.shown)") }
        if let model { parts.append("model: \(model.shown)") }
        if let provider { parts.append("provider: \(provider.shown)") }
        if let latencyMilliseconds { parts.append("latency: \(latencyMilliseconds)") }
        if let metadataJSON { parts.append("metadata: \(metadataJSON)") }
        return parts.isEmpty ? "" : ", " + parts.joined(separator: ", ")
    }
}
