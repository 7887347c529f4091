import BudgetLedger
import BudgetLedgerStore
import Foundation
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing

@testable import BudgetLedgerServer

/// A gate that ledger calls wait at until it opens; counts the calls that arrived.
private final class Gate: Sendable {
    private let opened = DispatchSemaphore(value: 0)
    private let arrivals = Atomic<Int>(0)

    /// Blocks the calling pool thread until the gate opens (at most 60 s, so a broken test
    /// fails instead of hanging); returns whether it opened. The call that arrives as number
    /// `opensAt` opens it itself.
    func pass(opensAt: Int = .max) -> Bool {
        if arrivals.add(1, ordering: .relaxed).newValue == opensAt { open() }
        let passed = opened.wait(timeout: .now() + 60) == .success
        opened.signal()
        return passed
    }

    func open() { opened.signal() }

    var arrived: Int { arrivals.load(ordering: .relaxed) }
}

/// Waits until `condition` holds, checking every 10 ms for at most 60 s; returns whether it held.
private func eventually(_ condition: () -> Bool) async throws -> Bool {
    for _ in 0..<6_000 {
        if condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

@Suite("The ledger's thread pool and its bound")
struct LedgerThreadPoolTests {
    @Test func aCallBeyondTheRunningAndWaitingBoundGets503AndRecordsNothing() async throws {
        // Proves: with 1 thread and 1 waiting call allowed, a third concurrent request is
        // refused with 503, Retry-After and the JSON error body, before reaching the ledger
        // (its thread stays unknown); once the calls ahead finish, the same request succeeds.
        let folder = try ScratchFolder()
        defer { folder.remove() }
        let configuration = ServerConfiguration(
            databasePath: folder.databasePath, port: 0, ledgerThreadCount: 1, ledgerWaitingCallsMax: 1)
        try configuration.validate()
        let service = SQLiteLedgerStore(ledger: try Ledger(path: folder.databasePath), threadCount: 1, waitingCallsMax: 1)
        #expect(service.admittedCallsMax == 2)
        let router = buildRouter(ledger: service, metrics: ServerMetrics(), configuration: configuration)
        let app = Application(
            router: router, services: [SQLiteStoreService(store: service, logger: testLogger)], logger: testLogger)
        try await app.test(.router) { client in
            let gate = Gate()
            let running = Task { try await service.run { _ in gate.pass() } }
            #expect(try await eventually { gate.arrived == 1 })
            let waiting = Task { try await service.run { _ in gate.pass() } }
            #expect(try await eventually { service.admittedCallCount == 2 })

            let refused = try await client.post(
                "/api/v1/threads/overflow/check-and-consume", json: #"{"promptTokens":5,"idempotencyKey":"k1"}"#)
            #expect(refused.status == .serviceUnavailable)
            #expect(refused.headers[.retryAfter] == "1")
            #expect(try refused.object()["error"] as? String == "unavailable")
            #expect(try refused.detail().contains("nothing was recorded"))
            #expect(service.refusedCallCount == 1)

            gate.open()
            #expect(try await running.value)
            #expect(try await waiting.value)
            #expect(try folder.withLedger { try $0.usage("overflow") } == nil)
            let accepted = try await client.post(
                "/api/v1/threads/overflow/check-and-consume", json: #"{"promptTokens":5,"idempotencyKey":"k1"}"#)
            #expect(accepted.status == .ok)
            #expect(try folder.withLedger { try $0.usage("overflow") }?.totalTokens == 5)
            #expect(service.admittedCallCount == 0)
        }
    }

    @Test func theDefaultPoolRuns64LedgerCallsAtOnce() async throws {
        // Proves: with the default configuration, 64 concurrent ledger calls all run at the same
        // time (each waits until all 64 have arrived), so 64 writes can meet in one group commit;
        // with fewer threads they could not all arrive and the gate would time out.
        let folder = try ScratchFolder()
        defer { folder.remove() }
        let defaults = ServerConfiguration(databasePath: folder.databasePath)
        #expect(defaults.ledgerThreadCount >= 64)
        let service = SQLiteLedgerStore(
            ledger: try Ledger(path: folder.databasePath), threadCount: defaults.ledgerThreadCount,
            waitingCallsMax: defaults.ledgerWaitingCallsMax)
        let app = Application(
            router: Router(), services: [SQLiteStoreService(store: service, logger: testLogger)], logger: testLogger)
        try await app.test(.router) { _ in
            let gate = Gate()
            let callers = 64
            let passed = try await withThrowingTaskGroup(of: Bool.self) { group in
                for _ in 0..<callers {
                    group.addTask {
                        try await service.run { _ in gate.pass(opensAt: callers) }
                    }
                }
                return try await group.reduce(into: 0) { count, passed in count += passed ? 1 : 0 }
            }
            #expect(passed == callers)
            #expect(service.refusedCallCount == 0)
        }
    }

    @Test(arguments: [
        (0, 0, "ledgerThreadCount"), (257, 0, "ledgerThreadCount"),
        (1, -1, "ledgerWaitingCallsMax"), (1, 65_537, "ledgerWaitingCallsMax"),
    ])
    func theConfigurationRefusesPoolBoundsOutOfRange(_ threads: Int, _ waiting: Int, _ field: String) {
        // Proves: a thread count outside 1…256 and a waiting bound outside 0…65536 are refused,
        // naming the setting.
        let configuration = ServerConfiguration(
            databasePath: "/nonexistent", ledgerThreadCount: threads, ledgerWaitingCallsMax: waiting)
        #expect(throws: ServerConfigurationError.self) { try configuration.validate() }
        #expect((try? configuration.validate()) == nil)
        do {
            try configuration.validate()
        } catch let error as ServerConfigurationError {
            #expect(error.field == field)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test(arguments: [(1, 0), (256, 65_536), (64, 1_024)])
    func theConfigurationAcceptsPoolBoundsAtTheirLimits(_ threads: Int, _ waiting: Int) throws {
        // Proves: the edges of both ranges, and the defaults, are accepted.
        try ServerConfiguration(databasePath: "/nonexistent", ledgerThreadCount: threads, ledgerWaitingCallsMax: waiting)
            .validate()
    }

    @Test func serveRefusesPoolBoundsOutOfRangeWithExit64() async throws {
        // Proves: `serve --ledger-threads 0` and `serve --ledger-queue 70000` exit 64 naming the
        // flag, before creating the ledger.
        let folder = try ScratchFolder()
        defer { folder.remove() }
        for (flag, value) in [("--ledger-threads", "0"), ("--ledger-queue", "70000")] {
            let refused = try await CLIProcess.run(["serve", "--db", folder.databasePath, "--port", "0", flag, value])
            #expect(refused.status == 64, "\(refused)")
            #expect(refused.stderr.contains(flag), "\(refused)")
        }
        #expect(!FileManager.default.fileExists(atPath: folder.databasePath))
    }
}
