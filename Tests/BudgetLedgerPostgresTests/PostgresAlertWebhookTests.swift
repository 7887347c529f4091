import BudgetLedger
import BudgetLedgerPostgres
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

/// A webhook receiver on 127.0.0.1 in the test process: records every POST, checks its
/// signature as a receiver would, and answers 200, or holds the request open while `holding`.
private final class AlertReceiver: Sendable {
    struct Delivery: Sendable {
        let headerEventID: Int64?
        let bodyEventID: Int64?
        let signatureIsValid: Bool
        /// 200, or nil: held open, never answered.
        let status: Int?
    }

    let secret: String
    private let state = Mutex<(holding: Bool, deliveries: [Delivery])>((false, []))
    private let channel: Mutex<(any Channel)?> = Mutex(nil)

    init(secret: String) {
        self.secret = secret
    }

    var deliveries: [Delivery] { state.withLock { $0.deliveries } }
    /// The ids answered 200, in the order answered.
    var acknowledgedIDs: [Int64] { deliveries.filter { $0.status == 200 }.compactMap(\.bodyEventID) }

    func hold(_ holding: Bool) { state.withLock { $0.holding = holding } }

    /// Listens on a free port; the webhook URL.
    func start() async throws -> String {
        let bound = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(ReceiverHandler(receiver: self))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        channel.withLock { $0 = bound }
        return "http://127.0.0.1:\(try #require(bound.localAddress?.port))/hook"
    }

    func stop() async {
        try? await channel.withLock { $0 }?.close()
    }

    /// Records a POST; the status to answer, or nil to hold it.
    fileprivate func arrive(headers: HTTPHeaders, body: [UInt8]) -> Int? {
        let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
        let code = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Data(secret.utf8)))
        let expected = "sha256=" + code.map { String(format: "%02x", $0) }.joined()
        return state.withLock { state in
            let status = state.holding ? nil : 200
            state.deliveries.append(
                Delivery(
                    headerEventID: headers.first(name: "X-BudgetLedger-Event-Id").flatMap { Int64($0) },
                    bodyEventID: number(object?["eventId"]),
                    signatureIsValid: headers.first(name: "X-BudgetLedger-Signature") == expected, status: status))
            return status
        }
    }
}

private final class ReceiverHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let receiver: AlertReceiver
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(receiver: AlertReceiver) {
        self.receiver = receiver
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
        case .body(var buffer):
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard let head, let status = receiver.arrive(headers: head.headers, body: body) else { return }
            var response = HTTPResponseHead(version: head.version, status: HTTPResponseStatus(statusCode: status))
            response.headers.add(name: "Content-Length", value: "0")
            response.headers.add(name: "Connection", value: "close")
            context.write(wrapOutboundOut(.head(response)), promise: nil)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// Waits until `condition` holds, polling every 50 ms, at most `seconds`; whether it held.
private func eventually(seconds: Double, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

@Suite("Alert webhooks on PostgreSQL")
struct PostgresAlertWebhookTests {
    @Test("alerts arrive signed and in order, and a restart or a SIGKILL mid-delivery resumes from the stored cursor")
    func alertsSurviveRestartsOnPostgres() async throws {
        // Proves: `serve --db postgres://… --alert-webhook` posts each threshold crossing of
        // consumes made through it, signed, first deliveries in event-id order, and moves the
        // cursor in the database past them; after a SIGTERM, the next server starts from that
        // cursor (it posts the alerts recorded while no server ran, and none acknowledged
        // before); after a SIGKILL while the receiver holds a delivery, the next server posts it
        // again and every later alert: none is lost.
        let url = try await PostgresTestCluster.freshDatabase()
        let ledger = try await PostgresLedger(url: url)
        let secret = "webhook-secret-\(UUID().uuidString)"
        let receiver = AlertReceiver(secret: secret)
        let hook = try await receiver.start()
        let arguments = ["--alert-webhook", hook, "--alert-secret", secret]
        let alerts = { () async throws -> [Int64] in
            try await ledger.events(after: 0, limit: 1_000).events.filter { Ledger.alertKinds.contains($0.kind) }.map(\.id)
        }

        let first = try ServeProcess(databaseURL: url, extraArguments: arguments)
        for thread in ["alpha", "beta"] { try await Self.crossThresholds(thread, through: first.baseURL) }
        let beforeRestart = try await alerts()
        #expect(beforeRestart.count == 6)
        let delivered = await eventually(seconds: 60) { Set(receiver.acknowledgedIDs).isSuperset(of: beforeRestart) }
        #expect(delivered, "acknowledged \(receiver.acknowledgedIDs) of \(beforeRestart)")
        let cursorMoved = try await eventually(seconds: 30) { try await ledger.alertCursor(for: hook) >= beforeRestart.last! }
        #expect(cursorMoved, "the stored cursor never reached event \(beforeRestart.last!)")
        #expect(first.stop() == 0)
        let deliveriesBeforeRestart = receiver.deliveries.count

        // Recorded while no server runs: only the stored cursor can bring these to the receiver.
        try await ledger.setLimit("gamma", maxTokens: 100)
        _ = try await ledger.consume("gamma", promptTokens: 80)
        _ = try await ledger.consume("gamma", promptTokens: 15)
        let whileStopped = try await alerts().filter { $0 > beforeRestart.last! }
        #expect(whileStopped.count == 3)

        receiver.hold(true)
        let second = try ServeProcess(databaseURL: url, extraArguments: arguments)
        let held = await eventually(seconds: 60) { receiver.deliveries.count > deliveriesBeforeRestart }
        #expect(held, "the restarted server posted nothing")
        // The first post after the restart is the first alert past the cursor.
        #expect(receiver.deliveries.dropFirst(deliveriesBeforeRestart).first?.bodyEventID == whileStopped.first)
        second.kill9()

        receiver.hold(false)
        let third = try ServeProcess(databaseURL: url, extraArguments: arguments)
        try await Self.crossThresholds("delta", through: third.baseURL)
        let expected = try await alerts()
        #expect(expected.count == 12)
        let allArrived = await eventually(seconds: 60) { Set(receiver.acknowledgedIDs).isSuperset(of: expected) }
        #expect(allArrived, "missing \(Set(expected).subtracting(receiver.acknowledgedIDs).sorted())")
        let cursorCaughtUp = try await eventually(seconds: 30) { try await ledger.alertCursor(for: hook) >= expected.last! }
        #expect(cursorCaughtUp, "the stored cursor never reached event \(expected.last!)")
        #expect(third.stop() == 0)
        await receiver.stop()
        await ledger.close()

        let deliveries = receiver.deliveries
        #expect(deliveries.allSatisfy { $0.signatureIsValid }, "a delivery had a bad signature")
        #expect(deliveries.allSatisfy { $0.headerEventID != nil && $0.headerEventID == $0.bodyEventID })
        // At least once, in order: each id's first delivery comes in event-id order.
        var firstSeen: [Int64] = []
        for id in deliveries.compactMap(\.bodyEventID) where !firstSeen.contains(id) { firstSeen.append(id) }
        #expect(firstSeen == expected)
        // Nothing acknowledged before the clean stop was posted again.
        let afterRestart = deliveries.dropFirst(deliveriesBeforeRestart).compactMap(\.bodyEventID)
        #expect(Set(afterRestart).isDisjoint(with: beforeRestart), "\(afterRestart)")
    }

    /// Limit 100, then 80 and 15 tokens through the server's routes: the 75 %, 90 % and 95 % alerts.
    private static func crossThresholds(_ thread: String, through base: String) async throws {
        #expect(try await call(.PUT, base, "/api/v1/threads/\(thread)/limit", json: #"{"maxTokens": 100}"#).status == 200)
        #expect(try await call(.POST, base, "/api/v1/threads/\(thread)/consume", json: #"{"promptTokens": 80}"#).status == 200)
        #expect(try await call(.POST, base, "/api/v1/threads/\(thread)/consume", json: #"{"promptTokens": 15}"#).status == 200)
    }

    @Test("a new webhook starts at the end of the feed, and its cursor never moves back")
    func cursorRules() async throws {
        // Proves the PostgreSQL cursor keeps SQLite's rules: a URL first seen starts after every
        // committed event (no history is sent), is stored at once (a second server reads the
        // same row), moves forward only (GREATEST in the upsert), and bad input is refused.
        try await withPostgresLedger { ledger, url in
            _ = try await ledger.consume("t", promptTokens: 5)
            let end = try await ledger.events(after: 0, limit: 1_000).lastID
            #expect(try await ledger.alertCursor(for: "http://a.example/hook") == end)
            try await ledger.advanceAlertCursor(for: "http://a.example/hook", to: end + 7)
            try await ledger.advanceAlertCursor(for: "http://a.example/hook", to: end + 2)
            let other = try await PostgresLedger(url: url)
            #expect(try await other.alertCursor(for: "http://a.example/hook") == end + 7)
            await other.close()
            _ = try await ledger.consume("t", promptTokens: 5)
            let later = try await ledger.events(after: end, limit: 1_000).lastID
            #expect(later > end)
            #expect(try await ledger.alertCursor(for: "http://b.example/hook") == later)

            let tooLong = "http://a.example/" + String(repeating: "x", count: Ledger.alertURLBytesMax)
            for bad in ["", tooLong] {
                await #expect(throws: LedgerError.self) { try await ledger.alertCursor(for: bad) }
            }
            await #expect(throws: LedgerError.self) { try await ledger.advanceAlertCursor(for: "http://a.example/hook", to: -1) }
        }
    }

    @Test("serve refuses bad --alert-webhook values on a postgres:// ledger with exit 64, naming the flag")
    func badWebhooksAreRefused() throws {
        // Proves the start-up checks still hold on PostgreSQL, before any connection is made
        // (the database URL names no server).
        let database = "postgres://nobody@127.0.0.1:1/none"
        let https = try runCLI(["serve", "--db", database, "--alert-webhook", "https://a.example/hook", "--alert-secret", "s"])
        #expect(https.status == 64)
        #expect(https.stderr.contains("--alert-webhook") && https.stderr.contains("only http://"), "\(https.stderr)")
        let unsigned = try runCLI(["serve", "--db", database, "--alert-webhook", "http://127.0.0.1:9/hook"])
        #expect(unsigned.status == 64)
        #expect(unsigned.stderr.contains("--alert-secret"), "\(unsigned.stderr)")
    }
}
