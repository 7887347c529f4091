import BudgetLedger
import Foundation
import Synchronization

/// splitmix64: a small, fast generator, seeded explicitly so runs are repeatable.
struct SplitMix64: Sendable {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }

    /// A number in `0..<bound`.
    mutating func next(below bound: Int) -> Int {
        Int(((next() >> 32) &* UInt64(bound)) >> 32)
    }
}

/// The ids and names of the ledger workload, the same as the reference's (`ledgerbench.c`).
enum WorkloadNames {
    static let threadCount = 1_000
    /// 10^15 tokens: a budget the benchmark never exhausts.
    static let unlimitedTokens: Int64 = 1_000_000_000_000_000
    static let models = ["claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "gpt-4o", "gpt-4o-mini"]
    static let agentIDs = (0..<16).map { String(format: "agent-%02d", $0) }
    static let organizationIDs = (0..<8).map { "org-\($0)" }

    /// 1,000 UUID-shaped thread ids, identical in every process.
    static let threadIDs: [String] = {
        var random = SplitMix64(seed: 0x1_ED6E_5EED)
        return (0..<threadCount).map { _ in
            let first = random.next()
            let second = random.next()
            return String(
                format: "%08x-%04x-4%03x-%04x-%012llx", UInt32(first >> 32), UInt32((first >> 16) & 0xFFFF),
                UInt32(first & 0xFFF), UInt32(0x8000 | ((second >> 48) & 0x3FFF)), second & 0xFFFF_FFFF_FFFF)
        }
    }()

    /// The thread every worker process hits with a tight max in the overshoot check: 20 calls
    /// of 97 tokens fit (1,940), the 21st would pass the max, so even a slow run reaches the edge.
    static let tightThreadID = "bench-tight-thread"
    static let tightMaxTokens: Int64 = 2_000
    static let tightPromptTokens: Int64 = 60
    static let tightCompletionTokens: Int64 = 37

    /// "req_" and 32 random hex digits, like a provider's request id.
    static func requestKey(_ random: inout SplitMix64) -> String {
        let digits = Array("0123456789abcdef".utf8)
        let high = random.next()
        let low = random.next()
        return String(unsafeUninitializedCapacity: 36) { buffer in
            for (offset, byte) in "req_".utf8.enumerated() { buffer[offset] = byte }
            for nibble in 0..<16 {
                buffer[4 + nibble] = digits[Int((high >> (4 * UInt64(nibble))) & 15)]
                buffer[20 + nibble] = digits[Int((low >> (4 * UInt64(nibble))) & 15)]
            }
            return 36
        }
    }
}

/// One consume the benchmark is about to make.
struct ConsumeCall {
    let threadID: String
    let promptTokens: Int64
    let completionTokens: Int64
    let idempotencyKey: String?
    let usage: UsageDetails
    /// A call on the tight thread of the overshoot check.
    let isTight: Bool
}

/// Random consumes over the workload's threads, as the reference makes them: 100–3,999 prompt and
/// 10–999 completion tokens, one of 16 agents or none, one of five models.
///
/// The idempotency keys come from a stream of their own, seeded afresh for every workload (the
/// time, the process, a counter): a key the ledger has seen makes the call a cheap replay, so a
/// repeated key stream would flatter every later measurement on the same file.
struct Workload {
    private var random: SplitMix64
    private var keyRandom: SplitMix64
    private static let instances = Mutex<UInt64>(0)
    private let idempotencyKeys: Bool
    /// Every `tightEvery`-th call goes to `tightThreadID` (0: never).
    private let tightThreadID: String
    private let tightEvery: Int
    private var callCount = 0

    init(
        seed: UInt64, idempotencyKeys: Bool, tightThreadID: String = WorkloadNames.tightThreadID, tightEvery: Int = 0
    ) {
        random = SplitMix64(seed: seed)
        let instance = Self.instances.withLock { count in
            count += 1
            return count
        }
        keyRandom = SplitMix64(
            seed: UInt64(bitPattern: Ledger.systemClockMicroseconds()) ^ (UInt64(getpid()) << 40) ^ (instance << 20))
        self.idempotencyKeys = idempotencyKeys
        self.tightThreadID = tightThreadID
        self.tightEvery = tightEvery
    }

    mutating func nextCall() -> ConsumeCall {
        callCount += 1
        let key = idempotencyKeys ? WorkloadNames.requestKey(&keyRandom) : nil
        let agent = random.next(below: WorkloadNames.agentIDs.count + 1)
        let usage = UsageDetails(
            agentID: agent < WorkloadNames.agentIDs.count ? WorkloadNames.agentIDs[agent] : nil,
            model: WorkloadNames.models[random.next(below: WorkloadNames.models.count)])
        if tightEvery > 0 && callCount % tightEvery == 0 {
            return ConsumeCall(
                threadID: tightThreadID, promptTokens: WorkloadNames.tightPromptTokens,
                completionTokens: WorkloadNames.tightCompletionTokens, idempotencyKey: key, usage: usage, isTight: true)
        }
        return ConsumeCall(
            threadID: WorkloadNames.threadIDs[random.next(below: WorkloadNames.threadCount)],
            promptTokens: Int64(100 + random.next(below: 3_900)), completionTokens: Int64(10 + random.next(below: 990)),
            idempotencyKey: key, usage: usage, isTight: false)
    }
}

extension Ledger {
    /// The call the benchmark measures: check the budget and record, in one transaction.
    /// Returns whether the ledger replayed an earlier consume with the same key instead.
    func checkAndConsume(_ call: ConsumeCall) throws -> Bool {
        try checkAndConsume(
            call.threadID, promptTokens: call.promptTokens, completionTokens: call.completionTokens,
            idempotencyKey: call.idempotencyKey, usage: call.usage
        ).isReplay
    }

    /// Records without checking the budget; returns whether it was a replay.
    func consume(_ call: ConsumeCall) throws -> Bool {
        try consume(
            call.threadID, promptTokens: call.promptTokens, completionTokens: call.completionTokens,
            idempotencyKey: call.idempotencyKey, usage: call.usage
        ).isReplay
    }
}
