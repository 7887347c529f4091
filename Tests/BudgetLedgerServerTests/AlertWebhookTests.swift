import BudgetLedger
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing

@testable import BudgetLedgerServer

/// What the test receiver saw: every request, in arrival order.
private final class AlertReceiver: Sendable {
    /// How the receiver answers.
    enum Phase: Sendable {
        /// 200 to the first `acceptFirst` requests, 500 to the next `failNext`, then it holds
        /// every request open (never answers while in this phase).
        case flaky(acceptFirst: Int, failNext: Int)
        /// 200 at once.
        case healthy
    }

    struct Delivery: Sendable {
        let headerEventID: Int64?
        let bodyEventID: Int64?
        let threadID: String?
        let signatureIsValid: Bool
        /// The status the receiver answered; nil while it holds the request.
        var status: Int?
    }

    let secret: String
    private let state = Mutex<(phase: Phase, deliveries: [Delivery])>((.healthy, []))

    init(secret: String, phase: Phase) {
        self.secret = secret
        state.withLock { $0.phase = phase }
    }

    var deliveries: [Delivery] { state.withLock { $0.deliveries } }

    func become(_ phase: Phase) { state.withLock { $0.phase = phase } }

    /// The ids answered with 200, in the order answered.
    var acknowledgedIDs: [Int64] { deliveries.filter { $0.status == 200 }.compactMap(\.bodyEventID) }

    /// Records the request and says how to answer it: a status, or nil to hold it.
    private func arrive(_ delivery: Delivery) -> (index: Int, status: Int?) {
        state.withLock { state in
            let index = state.deliveries.count
            var delivery = delivery
            switch state.phase {
            case .healthy: delivery.status = 200
            case .flaky(let accept, let fail):
                delivery.status = index < accept ? 200 : index < accept + fail ? 500 : nil
            }
            state.deliveries.append(delivery)
            return (index, delivery.status)
        }
    }

    /// Holds request `index` until the receiver turns healthy (then answers 503: the sender is
    /// gone by then), at most 60 s.
    private func hold(_ index: Int) async -> Int {
        for _ in 0..<1_200 {
            if case .healthy = state.withLock({ $0.phase }) { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        state.withLock { $0.deliveries[index].status = 503 }
        return 503
    }

    func addRoutes(to router: Router<BasicRequestContext>) {
        router.post("/hook") { request, _ -> Response in
            let body = Array(try await request.body.collect(upTo: 64 * 1024).readableBytesView)
            let signature = request.headers[HTTPField.Name("X-BudgetLedger-Signature")!]
            let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
            let delivery = Delivery(
                headerEventID: request.headers[HTTPField.Name("X-BudgetLedger-Event-Id")!].flatMap { Int64($0) },
                bodyEventID: (object?["eventId"] as? NSNumber)?.int64Value, threadID: object?["threadId"] as? String,
                signatureIsValid: signature == Self.expectedSignature(of: body, secret: self.secret), status: nil)
            let (index, status) = self.arrive(delivery)
            var answered = status ?? 0
            if status == nil { answered = await self.hold(index) }
            return Response(status: HTTPResponse.Status(code: answered))
        }
    }

    /// The receiver's own check, as a README reader would write it: hex HMAC-SHA256 of the body.
    static func expectedSignature(of body: [UInt8], secret: String) -> String {
        let code = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Data(secret.utf8)))
        return "sha256=" + code.map { String(format: "%02x", $0) }.joined()
    }
}

/// Waits until `condition` holds, polling every 50 ms, at most `seconds`; returns whether it held.
private func eventually(seconds: Double, _ condition: () throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try condition()
}

@Suite("Alert webhooks")
struct AlertWebhookTests {
    @Test("alerts survive a SIGKILL mid-delivery: every one arrives, in order, signed")
    func everyAlertIsDeliveredAcrossAKill() async throws {
        // Proves: `serve --alert-webhook` posts every alert recorded after it started (thread
        // thresholds, scope thresholds, first refusals of thread and scope windows) with a valid
        // HMAC-SHA256 signature; retries a 500; when the server is SIGKILLed while the receiver
        // holds a delivery, the restarted server resumes from the cursor stored in the ledger and
        // delivers every alert at least once, first deliveries in event-id order, none lost.
        let folder = try ScratchFolder()
        defer { folder.remove() }
        try folder.withLedger { _ in }
        let secret = "webhook-secret-\(UUID().uuidString)"
        let receiver = AlertReceiver(secret: secret, phase: .flaky(acceptFirst: 2, failNext: 2))
        let router = Router(context: BasicRequestContext.self)
        receiver.addRoutes(to: router)
        let receiverApp = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await receiverApp.test(.live) { client in
            let hook = "http://127.0.0.1:\(try #require(client.port))/hook"
            let arguments = ["serve", "--db", folder.databasePath, "--port", "0", "--alert-webhook", hook]
            let environment = ["BUDGET_LEDGER_ALERT_SECRET": secret]

            let first = try CLIProcess(arguments, environment: environment)
            defer { if first.isRunning { first.signal(SIGKILL) } }
            let firstLine = await blocking { first.firstStdoutLine() }
            #expect(firstLine?.hasPrefix("listening on") == true, "\(first.isRunning ? "" : "\(first.wait())")")

            let start = try folder.withLedger { try $0.verify().eventCount }
            try folder.withLedger(Self.seedAlerts)
            let expected = try folder.withLedger { ledger in
                try ledger.events(after: start, limit: 1_000).events.filter { Ledger.alertKinds.contains($0.kind) }
            }
            #expect(expected.count == 14, "\(expected.map(\.kind))")
            #expect(Set(expected.map(\.kind)) == ["threshold", "scope_threshold", "refusal"])

            // Two accepted, two 500s retried, then a delivery held open: kill the server there.
            let held = await eventually(seconds: 60) { receiver.deliveries.count >= 5 }
            #expect(held, "the server made \(receiver.deliveries.count) deliveries")
            first.signal(SIGKILL)
            _ = await blocking { first.wait() }
            // Acknowledged so far: a prefix of the alerts, in order. An id may repeat (at least
            // once): on a loaded machine the server's request timeout can fire before the 200
            // of a delivery the receiver accepted, and the server posts that alert again.
            var beforeKill: [Int64] = []
            for id in receiver.acknowledgedIDs where !beforeKill.contains(id) { beforeKill.append(id) }
            #expect(!beforeKill.isEmpty && beforeKill == Array(expected.prefix(beforeKill.count).map(\.id)), "\(beforeKill)")

            receiver.become(.healthy)
            let second = try CLIProcess(arguments, environment: environment)
            defer { if second.isRunning { second.signal(SIGKILL) } }
            _ = await blocking { second.firstStdoutLine() }
            let allArrived = await eventually(seconds: 60) { Set(receiver.acknowledgedIDs).isSuperset(of: expected.map(\.id)) }
            // The cursor moves just after each 2xx; a stop between the two would only mean the
            // last alert is posted again after the next start (at least once), so wait for it.
            let lastID = expected.last?.id ?? 0
            let cursorCaughtUp = await eventually(seconds: 30) {
                ((try? folder.withLedger { try $0.alertCursor(for: hook) }) ?? 0) >= lastID
            }
            #expect(cursorCaughtUp, "the stored cursor never reached event \(lastID)")
            second.signal(SIGTERM)
            let exit = await blocking { second.wait() }
            #expect(exit.status == 0, "\(exit)")

            let deliveries = receiver.deliveries
            #expect(allArrived, "missing: \(Set(expected.map(\.id)).subtracting(receiver.acknowledgedIDs).sorted())")
            #expect(deliveries.allSatisfy { $0.signatureIsValid }, "a delivery had a bad signature")
            #expect(deliveries.allSatisfy { $0.headerEventID == $0.bodyEventID })
            // At least once, in order: the first delivery of each id comes in event-id order, so
            // in order per thread; a redelivery only repeats an id already seen.
            var firstSeen: [Int64] = []
            for id in deliveries.compactMap(\.bodyEventID) where !firstSeen.contains(id) { firstSeen.append(id) }
            #expect(firstSeen == expected.map(\.id))
            let cursor = try folder.withLedger { ledger in
                (try ledger.alertCursor(for: hook), try ledger.verify())
            }
            #expect(cursor.0 >= expected.last?.id ?? 0)
            #expect(cursor.1.isConsistent, "\(cursor.1.problems)")
        }
    }

    /// Thresholds and a refusal on three threads, a scope threshold and a scope refusal: 14 alerts.
    private static func seedAlerts(_ ledger: Ledger) throws {
        for thread in ["alpha", "beta", "gamma"] {
            try ledger.setLimit(thread, maxTokens: 100)
            try ledger.consume(thread, promptTokens: 80)  // 75%
            try ledger.consume(thread, promptTokens: 15)  // 90%, 95%
            #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume(thread, promptTokens: 10) }
            #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume(thread, promptTokens: 10) }
        }
        let agent = try BudgetScope(kind: .agent, id: "bot")
        try ledger.setBudget(agent, period: .day, maxTokens: 100)
        let usage = UsageDetails(agentID: "bot")
        try ledger.consume("delta", promptTokens: 80, usage: usage)  // the scope's 75%
        #expect(throws: BudgetExhaustedError.self) { try ledger.checkAndConsume("delta", promptTokens: 30, usage: usage) }
    }

    @Test("webhook URLs are plain http:// and need a secret", arguments: [
        ("https://example.com/hook", "only http://"),
        ("ftp://example.com/hook", "must start with http://"),
        ("http://user:pw@example.com/", "user or password"),
        ("http:///hook", "needs a host"),
        ("http://example.com:70000/", "port outside"),
        ("http://example.com/a b", "printable ASCII"),
        ("http://example.com/#top", "fragment"),
    ])
    func badWebhookURLsAreRefused(url: String, reason: String) {
        // Proves: the configuration names the webhook setting and says what is wrong, before
        // anything is opened.
        var configuration = ServerConfiguration(databasePath: "unused.db")
        configuration.alertWebhookURLs = [url]
        configuration.alertSecret = "s"
        let error = #expect(throws: ServerConfigurationError.self) { try configuration.validate() }
        #expect(error?.field == "alertWebhookURLs")
        #expect(error?.reason.contains(reason) == true, "\(String(describing: error))")
    }

    @Test("a webhook URL parses into host, port and request target")
    func webhookURLParts() throws {
        // Proves: the default port is 80, IPv6 hosts are bracketed, and the query is sent but not logged.
        let plain = try WebhookURL(parsing: "http://alerts.example.com")
        #expect(plain.host == "alerts.example.com" && plain.port == 80 && plain.target == "/")
        let full = try WebhookURL(parsing: "http://[::1]:9000/hooks/ledger?token=abc")
        #expect(full.host == "::1" && full.port == 9000 && full.target == "/hooks/ledger?token=abc")
        #expect(full.hostHeader == "[::1]:9000")
        #expect(full.description == "http://[::1]:9000/hooks/ledger")
    }

    @Test("webhooks without a secret are refused, naming the setting")
    func webhooksNeedASecret() {
        // Proves: an unsigned alert is never sent: the server does not start without a secret.
        var configuration = ServerConfiguration(databasePath: "unused.db")
        configuration.alertWebhookURLs = ["http://127.0.0.1:9/hook"]
        let error = #expect(throws: ServerConfigurationError.self) { try configuration.validate() }
        #expect(error?.field == "alertSecret")
    }

    @Test("the signature is the hex HMAC-SHA256 of the exact body, and backoff doubles up to its cap")
    func signatureAndBackoff() {
        // Proves: the sender's signature equals an independent computation (RFC 4231 test case 2),
        // and retries wait 250 ms, 500 ms, 1 s, … never more than 30 s.
        let body = Array("what do ya want for nothing?".utf8)
        #expect(
            AlertPayload.signature(of: body, secret: "Jefe")
                == "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        let timing = AlertTiming()
        #expect(timing.backoff(afterFailures: 1) == .milliseconds(250))
        #expect(timing.backoff(afterFailures: 3) == .seconds(1))
        #expect(timing.backoff(afterFailures: 9) == .seconds(30))
        #expect(timing.backoff(afterFailures: 1_000) == .seconds(30))
    }
}
