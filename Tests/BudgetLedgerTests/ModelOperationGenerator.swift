@testable import BudgetLedger

/// SplitMix64 seeds xoshiro256**: the same numbers for a seed on every platform and toolchain
/// (no Foundation, no standard-library range mapping whose algorithm may change).
struct Xoshiro256StarStar {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    init(seed: UInt64) {
        var splitMix = seed
        func nextSplitMix() -> UInt64 {
            splitMix &+= 0x9E37_79B9_7F4A_7C15
            var z = splitMix
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (nextSplitMix(), nextSplitMix(), nextSplitMix(), nextSplitMix())
    }

    mutating func next() -> UInt64 {
        let result = rotateLeft(state.1 &* 5, 7) &* 9
        let shifted = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= shifted
        state.3 = rotateLeft(state.3, 45)
        return result
    }

    private func rotateLeft(_ value: UInt64, _ count: UInt64) -> UInt64 {
        (value << count) | (value >> (64 - count))
    }

    /// A number in `range` (the high word of a 128-bit product: bias below 2^-60 here).
    mutating func int(_ range: ClosedRange<Int64>) -> Int64 {
        let width = UInt64(bitPattern: range.upperBound &- range.lowerBound) &+ 1
        if width == 0 { return Int64(bitPattern: next()) }
        return range.lowerBound &+ Int64(bitPattern: next().multipliedFullWidth(by: width).high)
    }

    mutating func chance(_ percent: Int64) -> Bool { int(0...99) < percent }

    mutating func pick<Element>(_ choices: [Element]) -> Element {
        choices[Int(int(0...Int64(choices.count - 1)))]
    }
}

/// Draws the next operation from the model's state: values at the edges (0, 1, the limit, one
/// past it, exactly what remains, a threshold's edge), a handful of threads, agents and models
/// so that everything collides, retries of keyed calls exact or with one field changed.
struct OperationGenerator {
    static let threads = ["t0", "t1", "t2", "t3", "t4"]
    /// Refused ids: empty, one byte over the limit, control characters.
    static let invalidIdentifiers = ["", String(repeating: "x", count: 257), "bell\u{7}", "del\u{7F}", "c1\u{85}"]
    /// Valid at the edge: exactly the limit, and not ASCII.
    static let edgeIdentifiers = [String(repeating: "y", count: 256), "tëst-ü"]
    static let agents: [String?] = [nil, "planner", "coder", "critic"]
    static let models: [String?] = [
        nil, "gpt-4o", " GPT-4o ", "gpt-4o-mini", "GPT-4o-2024-08-06", "claude-opus-4-1", "m-custom-small",
        "M-Custom-Large-v2", "o1-preview", "o1-mini", "o1-2024-12-17", "unpriced-model",
    ]
    static let priceModels = [
        "m-custom", "M-CUSTOM", "m-custom-large", "m-custom-*", " M-CUSTOM-L* ", "gpt-4o", "o1", "o1-*", "GPT-4O-MINI",
        "*", "a*b",
    ]
    static let providers: [String?] = [nil, "openai", "anthropic"]
    static let latencies: [Int64?] = [nil, 0, 1, 250, LedgerLimits.latencyMillisecondsMax]
    static let tokenLimit = LedgerLimits.tokensPerCallMax

    var random: Xoshiro256StarStar
    private var keyedConsumes: [ConsumeCall] = []
    private var keyedSettles: [SettleCall] = []
    private var keysIssued = 0

    init(seed: UInt64) {
        random = Xoshiro256StarStar(seed: seed)
    }

    mutating func next(model: LedgerModel, now: Int64) -> ModelOperation {
        switch random.int(0...99) {
        case 0..<38: return .consume(newConsume(model, now: now))
        case 38..<46: return retry(model, now: now)
        case 46..<52: return .checkBudget(threadID: threadID(), estimatedTokens: estimate(model, now: now))
        case 52..<60: return reserve(model, now: now)
        case 60..<67: return .settle(newSettle(model, now: now))
        case 67..<71: return .release(reservationID: reservationID(model, now: now))
        case 71..<74: return .resetThread(threadID())
        case 74..<77: return .cleanupThread(threadID())
        case 77..<83: return .setLimit(threadID: threadID(), maxTokens: limit(model, now: now))
        case 83..<85:
            return .configure(
                maxTokensPerThread: random.pick([
                    0, 1, 100, 1_000, 100_000, random.int(1...500_000), LedgerLimits.maxTokensMax,
                    LedgerLimits.maxTokensMax + 1, -1,
                ]))
        case 85..<86: return .resetUsageWindow
        case 86..<90: return setPrice(model, now: now)
        case 90..<96: return .advanceClock(microseconds: advance(model, now: now))
        default: return .usage(threadID())
        }
    }

    // MARK: - Values

    mutating func threadID() -> String {
        switch random.int(0...99) {
        case 0..<3: return random.pick(Self.invalidIdentifiers)
        case 3..<6: return random.pick(Self.edgeIdentifiers)
        default: return random.pick(Self.threads)
        }
    }

    private mutating func identifier(_ pool: [String?]) -> String? {
        random.chance(2) ? random.pick(Self.invalidIdentifiers) : random.pick(pool)
    }

    private func budget(_ threadID: String, _ model: LedgerModel, now: Int64) -> ThreadBudget {
        model.budget(threadID, at: now) ?? ThreadBudget(threadID: threadID, maxTokens: model.defaultMaxTokens)
    }

    /// Prompt and completion tokens for a call on `threadID`.
    private mutating func tokens(_ threadID: String, _ model: LedgerModel, now: Int64) -> (Int64, Int64) {
        let budget = budget(threadID, model, now: now)
        let limit = Self.tokenLimit
        switch random.int(0...11) {
        case 0: return (0, 0)
        case 1: return random.chance(50) ? (1, 0) : (0, 1)
        case 2, 3: return (random.int(1...500), random.int(0...500))
        case 4: return (random.int(0...100_000), random.int(0...20_000))
        case 5, 6:
            // Exactly what remains after holds, or one either side.
            return split(budget.maxTokens - budget.totalTokens - budget.heldTokens + random.int(-1...1))
        case 7:
            // The edge of a threshold: the first total that reaches it, or one short.
            let percent = Int64(random.pick([75, 90, 95]))
            return split((percent * budget.maxTokens + 99) / 100 - budget.totalTokens + random.int(-1...0))
        case 8: return random.pick([(limit, 0), (0, limit), (limit, limit), (limit, random.int(0...9))] as [(Int64, Int64)])
        case 9: return random.pick([(limit + 1, 0), (0, limit + 1), (-1, 0), (0, -1), (.max, 0)] as [(Int64, Int64)])
        default: return (random.int(0...5_000), random.int(0...5_000))
        }
    }

    /// `total` (clamped to 0…2 × the per-call limit) as prompt + completion.
    private mutating func split(_ total: Int64) -> (Int64, Int64) {
        let limit = Self.tokenLimit
        let clamped = min(max(total, 0), 2 * limit)
        let prompt = random.int(max(0, clamped - limit)...min(clamped, limit))
        return (prompt, clamped - prompt)
    }

    private mutating func key() -> String? {
        switch random.int(0...99) {
        case 0..<45: return nil
        case 45..<47: return random.pick(Self.invalidIdentifiers)
        default:
            keysIssued += 1
            return "key-\(keysIssued)"
        }
    }

    private mutating func usageDetails() -> ModelUsage {
        let metadata = random.chance(6) ? random.pick(ModelMetadata.choices) : random.pick(Array(ModelMetadata.choices.prefix(5)))
        return ModelUsage(
            agentID: identifier(Self.agents), model: identifier(Self.models), provider: identifier(Self.providers),
            latencyMilliseconds: random.chance(2)
                ? random.pick([LedgerLimits.latencyMillisecondsMax + 1, -1]) : random.pick(Self.latencies),
            metadataJSON: metadata.text)
    }

    private mutating func estimate(_ model: LedgerModel, now: Int64) -> Int64 {
        let requestLimit = LedgerLimits.tokensPerRequestMax
        let budget = budget(random.pick(Self.threads), model, now: now)
        return random.pick([
            0, 1, random.int(1...5_000), budget.remainingAfterHolds, budget.remainingAfterHolds + 1,
            max(0, budget.remainingAfterHolds - 1), requestLimit, requestLimit + 1, -1,
        ])
    }

    private mutating func limit(_ model: LedgerModel, now: Int64) -> Int64 {
        let spent = budget(random.pick(Self.threads), model, now: now).totalTokens
        let percent = Int64(random.pick([75, 90, 95]))
        return random.pick([
            0, 1, 100, 1_000, random.int(1...200_000), random.int(1...200_000), spent, spent + 1, max(0, spent - 1),
            spent * 100 / percent, spent * 100 / percent + 1, LedgerLimits.maxTokensMax, LedgerLimits.maxTokensMax + 1,
            -1,
        ])
    }

    // MARK: - Calls

    private mutating func newConsume(_ model: LedgerModel, now: Int64) -> ConsumeCall {
        let thread = threadID()
        let (prompt, completion) = tokens(thread, model, now: now)
        let call = ConsumeCall(
            threadID: thread, promptTokens: prompt, completionTokens: completion, idempotencyKey: key(),
            usage: usageDetails(), enforce: random.chance(50))
        if call.idempotencyKey != nil { keyedConsumes.append(call) }
        return call
    }

    private mutating func newSettle(_ model: LedgerModel, now: Int64) -> SettleCall {
        let id = reservationID(model, now: now)
        let held = model.hold(id)?.reservation.tokens ?? 100
        let (prompt, completion) = random.chance(50) ? split(held + random.int(-2...2)) : tokens("t0", model, now: now)
        let call = SettleCall(
            reservationID: id, promptTokens: prompt, completionTokens: completion, idempotencyKey: key(),
            usage: usageDetails())
        if call.idempotencyKey != nil { keyedSettles.append(call) }
        return call
    }

    /// A hold the model knows (live ones more often), or an id that names no hold.
    private mutating func reservationID(_ model: LedgerModel, now: Int64) -> Int64 {
        let live = model.liveHolds(at: now).map(\.id)
        let all = model.holdIDs
        switch random.int(0...99) {
        case 0..<50 where !live.isEmpty: return random.pick(live)
        case 0..<90 where !all.isEmpty: return random.pick(all)
        default: return random.pick([1, model.nextEventID, model.nextEventID + 7, -3])
        }
    }

    private mutating func reserve(_ model: LedgerModel, now: Int64) -> ModelOperation {
        let thread = threadID()
        let free = budget(thread, model, now: now).remainingAfterHolds
        let tokens = random.pick([
            1, random.int(1...1_000), random.int(1...1_000), free, free + 1, max(1, free - 1),
            LedgerLimits.tokensPerRequestMax, LedgerLimits.tokensPerRequestMax + 1, 0, -1,
        ])
        let ttl = random.chance(8)
            ? random.pick([0, -1, LedgerLimits.holdSecondsMax + 1])
            : random.pick([1, 2, 60, 300, Ledger.defaultHoldSeconds, LedgerLimits.holdSecondsMax])
        return .reserve(threadID: thread, tokens: tokens, ttlSeconds: ttl)
    }

    /// A keyed call again: exactly (in the other mode sometimes, metadata in another key order),
    /// or with one recorded field changed, which must be a conflict.
    private mutating func retry(_ model: LedgerModel, now: Int64) -> ModelOperation {
        // Mostly keys the ledger recorded (a refused call's key is still new).
        let recorded = { (key: String?) in key.map { model.recordedKeys.contains($0) } ?? false }
        let settles = random.chance(80) && keyedSettles.contains { recorded($0.idempotencyKey) }
            ? keyedSettles.filter { recorded($0.idempotencyKey) } : keyedSettles
        let consumes = random.chance(80) && keyedConsumes.contains { recorded($0.idempotencyKey) }
            ? keyedConsumes.filter { recorded($0.idempotencyKey) } : keyedConsumes
        if !settles.isEmpty && (consumes.isEmpty || random.chance(25)) {
            var call = random.pick(settles)
            switch random.int(0...9) {
            case 0..<5: call.usage.metadataJSON = equivalent(call.usage.metadataJSON)
            case 5: call.reservationID = reservationID(model, now: now)
            case 6: call.promptTokens = call.promptTokens &+ 1
            case 7: call.usage.model = different(call.usage.model, Self.models)
            case 8: call.usage.metadataJSON = different(call.usage.metadataJSON, ModelMetadata.choices.prefix(5).map(\.text))
            default:
                // The settle's key on a plain consume of the hold's thread: the reservation differs.
                let thread = model.hold(call.reservationID)?.reservation.threadID ?? "t0"
                return .consume(
                    ConsumeCall(
                        threadID: thread, promptTokens: call.promptTokens, completionTokens: call.completionTokens,
                        idempotencyKey: call.idempotencyKey, usage: call.usage, enforce: random.chance(50)))
            }
            return .settle(call)
        }
        guard !consumes.isEmpty else { return .consume(newConsume(model, now: now)) }
        var call = random.pick(consumes)
        switch random.int(0...19) {
        case 0..<9:
            call.enforce = random.chance(50)
            call.usage.metadataJSON = equivalent(call.usage.metadataJSON)
        case 9: call.threadID = different(call.threadID, Self.threads)
        case 10: call.promptTokens = call.promptTokens &+ 1
        case 11: call.completionTokens = call.completionTokens &+ 1
        case 12: call.usage.agentID = different(call.usage.agentID, Self.agents)
        case 13: call.usage.model = different(call.usage.model, Self.models)
        case 14: call.usage.provider = different(call.usage.provider, Self.providers)
        case 15: call.usage.latencyMilliseconds = different(call.usage.latencyMilliseconds, Self.latencies)
        case 16: call.usage.metadataJSON = different(call.usage.metadataJSON, ModelMetadata.choices.prefix(5).map(\.text))
        default:
            // The consume's key on a settle: the reservation differs.
            return .settle(
                SettleCall(
                    reservationID: reservationID(model, now: now), promptTokens: call.promptTokens,
                    completionTokens: call.completionTokens, idempotencyKey: call.idempotencyKey, usage: call.usage))
        }
        return .consume(call)
    }

    private mutating func different<Value: Equatable>(_ value: Value, _ pool: [Value]) -> Value {
        let others = pool.filter { $0 != value }
        return others.isEmpty ? value : random.pick(others)
    }

    /// The same JSON object in another text when there is one.
    private func equivalent(_ metadata: String?) -> String? {
        let texts = ModelMetadata.choices.map(\.text)
        if metadata == texts[1] { return texts[2] }
        if metadata == texts[2] { return texts[1] }
        return metadata
    }

    private mutating func setPrice(_ model: LedgerModel, now: Int64) -> ModelOperation {
        func price() -> String {
            if random.chance(10) {
                return random.pick(["10000.001", "1.2345", "", "abc", "-1", "1.", ".5", "1e3", "10001", "99999999999"])
            }
            return ModelPrices.text(
                nanosPerToken: random.pick([
                    0, 1, 150, 999, 1_000, 2_500, 15_000, LedgerLimits.priceNanodollarsPerTokenMax,
                    random.int(0...LedgerLimits.priceNanodollarsPerTokenMax),
                ]))
        }
        let name = random.chance(3) ? random.pick(Self.invalidIdentifiers) : random.pick(Self.priceModels)
        let from: Int64? =
            switch random.int(0...19) {
            case 0..<9: nil
            case 9..<13: now + random.int(1...10_000_000)
            case 13..<15: now - random.int(0...1_000_000)
            case 15: now
            case 16: 0
            case 17: Timestamps.maxMicroseconds
            case 18: Timestamps.maxMicroseconds + 1
            default: -1
            }
        return .setPrice(model: name, prompt: price(), completion: price(), from: from)
    }

    private mutating func advance(_ model: LedgerModel, now: Int64) -> Int64 {
        let pending = model.holdIDs.compactMap { model.hold($0) }
            .filter { $0.ending == nil && $0.reservation.expiresAtMicroseconds > now }
        if !pending.isEmpty && random.chance(50) {
            // To a hold's expiry: one microsecond before, exactly (expired: live means after now), after.
            let expiry = random.pick(pending).reservation.expiresAtMicroseconds
            return max(0, expiry - now + random.int(-1...1))
        }
        return random.pick([1, random.int(1...1_000), random.int(1...60_000_000), 3_600_000_000, 86_400_000_000])
    }
}
