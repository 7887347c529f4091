@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Synchronization
import Testing

@Suite("Check-and-consume, idempotency, bad input")
struct CheckAndConsumeTests {
    @Test("checkAndConsume records only what fits, and a refusal records only its refusal event")
    func refusesWhatDoesNotFit() throws {
        // Proves the check and the consume are one decision: a refused call leaves no consume,
        // only the refusal event of its window (migration 0011; RefusalTests has the rest).
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        try ledger.setLimit("t", maxTokens: 100)
        try ledger.checkAndConsume("t", promptTokens: 60, completionTokens: 40)
        let before = try eventCount(at: path)
        let error = try #require(throws: BudgetExhaustedError.self) {
            try ledger.checkAndConsume("t", promptTokens: 1)
        }
        #expect(error.used == 100)
        #expect(error.requestedTokens == 1)
        #expect(try eventCount(at: path) == before + 1)
        #expect(try ledger.events(after: before, limit: 10).events.map(\.kind) == ["refusal"])
        #expect(try ledger.usage("t")?.totalTokens == 100)
    }

    @Test("a refused checkAndConsume on a new thread does not even open it")
    func refusalOnNewThreadLeavesNothing() throws {
        // Proves the implicit open is not recorded with the refused consume (only its refusal is).
        let ledger = try Ledger.inMemory(maxTokensPerThread: 10)
        #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("new", promptTokens: 11) }
        #expect(try !ledger.hasBudget("new"))
    }

    @Test("an idempotency key records once and replays the original")
    func idempotentReplay() throws {
        // Proves a retried consume with the same key never double-counts, and returns the original event.
        let ledger = try Ledger.inMemory()
        try ledger.setLimit("t", maxTokens: 100)
        let first = try ledger.consume("t", promptTokens: 80, idempotencyKey: "req-1")
        #expect(!first.isReplay)
        #expect(first.crossedThresholds.map(\.thresholdPercent) == [75])
        let again = try ledger.checkAndConsume("t", promptTokens: 80, idempotencyKey: "req-1")
        #expect(again.isReplay)
        #expect(again.event == first.event)
        #expect(again.crossedThresholds == first.crossedThresholds)
        #expect(again.budget.totalTokens == 80)
        #expect(again.budget.requestCount == 1)
    }

    @Test("a key reused for a different consume is a conflict and records nothing")
    func idempotencyConflict() throws {
        // Proves a key cannot silently stand for two different consumes.
        let ledger = try Ledger.inMemory()
        try ledger.consume("t", promptTokens: 5, idempotencyKey: "k")
        #expect(ledgerErrorCase { try ledger.consume("t", promptTokens: 6, idempotencyKey: "k") } == .conflict)
        #expect(ledgerErrorCase { try ledger.consume("other", promptTokens: 5, idempotencyKey: "k") } == .conflict)
        #expect(try ledger.usage("t")?.totalTokens == 5)
        #expect(try ledger.usage("other") == nil)
    }

    @Test(
        "bad input is refused with a message naming the field, and nothing is written",
        arguments: [
            ("", Int64(1), Int64(0), "threadId"),
            (String(repeating: "x", count: 257), 1, 0, "threadId"),
            ("tab\there", 1, 0, "threadId"),
            ("nul\u{0}", 1, 0, "threadId"),
            ("t", -1, 0, "promptTokens"),
            ("t", 0, -1, "completionTokens"),
            ("t", LedgerLimits.tokensPerCallMax + 1, 0, "promptTokens"),
            ("t", 0, LedgerLimits.tokensPerCallMax + 1, "completionTokens"),
            ("t", Int64.max, Int64.max, "promptTokens"),
        ])
    func badInput(threadID: String, prompt: Int64, completion: Int64, field: String) throws {
        // Proves each kind of bad input gets a clear error and no event.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path)
        let before = try eventCount(at: path)
        for enforce in [false, true] {
            let error = try #require(throws: LedgerError.self) {
                if enforce {
                    try ledger.checkAndConsume(threadID, promptTokens: prompt, completionTokens: completion)
                } else {
                    try ledger.consume(threadID, promptTokens: prompt, completionTokens: completion)
                }
            }
            guard case .invalidInput(let reportedField, _) = error else {
                Issue.record("expected invalidInput, got \(error)")
                return
            }
            #expect(reportedField == field)
        }
        #expect(try eventCount(at: path) == before)
    }

    @Test("a 256-byte thread id is accepted, 257 bytes is not")
    func threadIDLimitBoundary() throws {
        // Proves the id limit is exactly 256 UTF-8 bytes (multi-byte characters count as bytes).
        let ledger = try Ledger.inMemory()
        try ledger.consume(String(repeating: "a", count: 256), promptTokens: 1)
        #expect(ledgerErrorCase { try ledger.consume(String(repeating: "é", count: 129), promptTokens: 1) } == .invalidInput(field: "threadId"))
    }

    @Test("negative limits and defaults are refused; metadata must be a JSON object")
    func otherBadInput() throws {
        // Proves the remaining validation paths refuse and write nothing.
        let ledger = try Ledger.inMemory()
        #expect(ledgerErrorCase { try ledger.setLimit("t", maxTokens: -1) } == .invalidInput(field: "maxTokens"))
        #expect(ledgerErrorCase { try ledger.configure(maxTokensPerThread: -5) } == .invalidInput(field: "maxTokensPerThread"))
        #expect(ledgerErrorCase {
            try ledger.consume("t", promptTokens: 1, usage: try UsageDetails(metadataJSON: "[1,2]"))
        } == .invalidInput(field: "metadata"))
        #expect(ledgerErrorCase {
            try ledger.consume("t", promptTokens: 1, usage: UsageDetails(latencyMilliseconds: -3))
        } == .invalidInput(field: "latencyMs"))
        #expect(try ledger.allUsage().isEmpty)
        #expect(try ledger.maxTokensPerThread == 100_000)
    }

    @Test("8 threads hammering one budget never push it past max, and the total equals the successes")
    func concurrentThreads() throws {
        // Proves checkAndConsume is exact under in-process contention.
        let folder = try TemporaryFolder()
        let ledger = try Ledger(path: folder.path("l.db"), configuration: Ledger.Configuration(synchronous: .normal))
        try ledger.setLimit("shared", maxTokens: 1_000)
        let successes = Mutex(0)
        let unexpected = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<40 {
                do {
                    try ledger.checkAndConsume("shared", promptTokens: 5, completionTokens: 2)
                    successes.withLock { $0 += 1 }
                } catch is BudgetExhaustedError {
                } catch {
                    unexpected.withLock { $0.append("\(error)") }
                }
            }
        }
        #expect(unexpected.withLock { $0 }.isEmpty)
        let total = try #require(try ledger.usage("shared")).totalTokens
        #expect(total <= 1_000)
        #expect(total == Int64(successes.withLock { $0 }) * 7)
        #expect(successes.withLock { $0 } == 142)
        #expect(try ledger.verify().isConsistent)
    }
}

@Suite("Group commit")
struct GroupCommitTests {
    @Test("64 concurrent callers share transactions, and every decision stays exact")
    func coalesces() throws {
        // Proves concurrent writes are coalesced (fewer transactions than writes) while each
        // call keeps its own budget decision: the total equals exactly the successes, never above max.
        let folder = try TemporaryFolder()
        let ledger = try Ledger(path: folder.path("l.db"))
        try ledger.setLimit("hot", maxTokens: 5_000)
        let before = ledger.statistics
        let successes = Mutex(0)
        let refusals = Mutex(0)
        onThreads(64) { caller in
            for call in 0..<20 {
                do {
                    // Every caller also writes its own thread, so batches mix refusals with successes.
                    try ledger.checkAndConsume("hot", promptTokens: 7)
                    successes.withLock { $0 += 1 }
                } catch is BudgetExhaustedError {
                    refusals.withLock { $0 += 1 }
                } catch {
                    Issue.record("unexpected \(error)")
                }
                _ = try? ledger.consume("own-\(caller)", promptTokens: Int64(call))
            }
        }
        let after = ledger.statistics
        let writes = after.writes - before.writes
        #expect(writes == 64 * 20 * 2)
        #expect(after.transactions - before.transactions < writes)
        #expect(after.largestBatch > 1)
        let total = try #require(try ledger.usage("hot")).totalTokens
        #expect(total <= 5_000)
        #expect(total == Int64(successes.withLock { $0 }) * 7)
        #expect(successes.withLock { $0 } == 714)
        #expect(refusals.withLock { $0 } == 64 * 20 - 714)
        for caller in 0..<64 {
            #expect(try ledger.usage("own-\(caller)")?.totalTokens == 190)
        }
        #expect(try ledger.verify().isConsistent)
    }

    @Test("more writers queued than one group commit may carry are split at groupCommitBatchMax")
    func batchLimit() throws {
        // Proves the batch limit: the first write blocks inside its transaction (its clock read
        // waits on a gate) while 300 more queue behind it; they then run as batches of exactly
        // 256 and the rest, every one recorded once.
        let folder = try TemporaryFolder()
        let gate = DispatchSemaphore(value: 0)
        let firstRead = Mutex(true)
        let clock: @Sendable () -> Int64 = {
            if firstRead.withLock({ first in defer { first = false }; return first }) { gate.wait() }
            return Ledger.systemClockMicroseconds()
        }
        let ledger = try Ledger(path: folder.path("l.db"), configuration: Ledger.Configuration(clock: clock))
        let waiting = 300
        let finished = DispatchGroup()
        finished.enter()
        Thread { _ = try? ledger.consume("first", promptTokens: 1); finished.leave() }.start()
        while ledger.statistics.transactions == 0 { Thread.sleep(forTimeInterval: 0.001) }
        for caller in 0..<waiting {
            finished.enter()
            Thread {
                _ = try? ledger.consume("t\(caller)", promptTokens: 1)
                finished.leave()
            }.start()
        }
        // Until all 300 wait in the queue (the blocked first write has left it).
        while ledger.writeQueue.withLock({ $0.tickets.count }) < waiting { Thread.sleep(forTimeInterval: 0.001) }
        gate.signal()
        finished.wait()
        let statistics = ledger.statistics
        #expect(statistics.writes == Int64(waiting + 1))
        #expect(statistics.largestBatch == Ledger.groupCommitBatchMax)
        #expect(statistics.transactions == 3, "the blocked write alone, then 256, then 44")
        #expect(try ledger.allUsage().count == waiting + 1)
        #expect(try ledger.verify().problems == [])
    }
}
