@testable import BudgetLedger
import Foundation
import Synchronization
import Testing

/// `write(suspending:)`: the REST server's writes join the group commit without holding a thread.
@Suite("Suspending writes")
struct SuspendingWriteTests {
    @Test("suspending check-and-consumes, racing blocking ones on the same thread, never overshoot", arguments: [
        Ledger.Durability.full, .normal,
    ])
    func exactUnderContention(durability: Ledger.Durability) async throws {
        // Proves the suspending path is the same group commit: 240 checked consumes of 10 tokens
        // on a 1,000 max, half suspending (tasks) and half blocking (threads), all at once: exactly
        // 100 succeed, the rest are refused, the thread's total is exactly the max, and verify
        // agrees. A lost or doubled write, or a check outside the transaction, would change a count.
        let folder = try TemporaryFolder()
        let ledger = try Ledger(path: folder.path("l.db"), configuration: .init(synchronous: durability))
        defer { ledger.close() }
        try ledger.setLimit("t", maxTokens: 1_000)
        let blockingSucceeded = Atomic<Int>(0)
        let suspendedSucceeded = try await withThrowingTaskGroup(of: Bool.self) { group in
            for call in 0..<120 {
                group.addTask {
                    do {
                        _ = try await ledger.consume(
                            suspending: "t", promptTokens: 10, completionTokens: 0, idempotencyKey: "task-\(call)",
                            usage: .none, checked: true)
                        return true
                    } catch is BudgetExhaustedError {
                        return false
                    }
                }
            }
            let threads = (0..<120).map { call in
                Thread {
                    if (try? ledger.checkAndConsume("t", promptTokens: 10, idempotencyKey: "thread-\(call)")) != nil {
                        blockingSucceeded.add(1, ordering: .relaxed)
                    }
                }
            }
            threads.forEach { $0.start() }
            var succeeded = 0
            for try await ok in group where ok { succeeded += 1 }
            while threads.contains(where: { !$0.isFinished }) { try await Task.sleep(for: .milliseconds(5)) }
            return succeeded
        }
        #expect(suspendedSucceeded + blockingSucceeded.load(ordering: .relaxed) == 100)
        #expect(try ledger.usage("t")?.totalTokens == 1_000)
        #expect(try ledger.verify().isConsistent)
    }

    @Test("a suspending consume answers as a blocking one: replay, refusal event, bad input")
    func sameAnswers() async throws {
        // Proves the suspending path keeps consume's rules: a repeated key replays without a new
        // event, a refusal records its refusal event and throws BudgetExhaustedError, and bad
        // input throws invalidInput naming the field before anything is written.
        let ledger = try Ledger.inMemory(maxTokensPerThread: 50)
        let first = try await ledger.consume(
            suspending: "t", promptTokens: 30, completionTokens: 5, idempotencyKey: "k", usage: .none, checked: true)
        let again = try await ledger.consume(
            suspending: "t", promptTokens: 30, completionTokens: 5, idempotencyKey: "k", usage: .none, checked: true)
        #expect(again.isReplay && again.event.id == first.event.id && again.budget.totalTokens == 35)
        await #expect(throws: BudgetExhaustedError.self) {
            try await ledger.consume(
                suspending: "t", promptTokens: 20, completionTokens: 0, idempotencyKey: nil, usage: .none, checked: true)
        }
        #expect(try ledger.events(after: first.event.id, limit: 10).events.map(\.kind) == ["refusal"])
        let error = await #expect(throws: LedgerError.self) {
            try await ledger.consume(
                suspending: "t", promptTokens: -1, completionTokens: 0, idempotencyKey: nil, usage: .none, checked: false)
        }
        guard case .invalidInput(let field, _)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(field == "promptTokens")
        #expect(try ledger.usage("t")?.totalTokens == 35)
    }
}
