import BudgetLedger
import BudgetLedgerStore
import BudgetLedgerWire
import Crypto
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// Posts every alert of the ledger (threshold, scope_threshold and refusal events) to the
/// configured webhooks, driven by the durable feed.
///
/// Each URL has its own cursor in the ledger (`LedgerStore.alertCursor(for:)`): the last event id it
/// acknowledged with a 2xx. Alerts go one at a time, in event-id order (so in order per thread
/// and per scope), each retried with exponential backoff (`AlertTiming`) until a 2xx; only then
/// does the cursor move past it. Delivery is therefore at least once: an alert whose 2xx was
/// lost to a crash, or whose cursor write failed, is posted again after the restart. A URL that
/// fails holds back only its own alerts. Receivers deduplicate by `X-BudgetLedger-Event-Id`.
///
/// It runs on either store. On PostgreSQL, servers of one database posting to the same URL
/// share its cursor and each follows the feed: every alert is delivered at least once overall,
/// and an alert two servers read before either acknowledged it is posted by both (each server
/// posts in event-id order; the receiver may see a duplicate after a newer alert).
///
/// As a `Service` it runs after the ledger's service and stops before it, on graceful shutdown.
final class AlertWebhookService: Service, Sendable {
    /// Events read per feed page.
    static let pageSize = 1_000

    private let ledger: any LedgerStore
    private let urls: [WebhookURL]
    private let secret: String
    private let timing: AlertTiming
    private let poster: WebhookPoster
    private let logger: Logger

    /// - Parameters:
    ///   - urls: the validated webhook URLs (`WebhookURL(parsing:)`).
    ///   - secret: the HMAC-SHA256 key of the signature header.
    init(ledger: any LedgerStore, urls: [WebhookURL], secret: String, timing: AlertTiming = AlertTiming(), logger: Logger) {
        self.ledger = ledger
        self.urls = urls
        self.secret = secret
        self.timing = timing
        self.poster = WebhookPoster(timeout: timing.requestTimeout)
        self.logger = logger
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                for url in self.urls {
                    group.addTask { await self.follow(url) }
                }
            }
        }
    }

    /// Follows the feed for `url` until cancelled: reads a page after the cursor, posts its alerts
    /// in order, and moves the cursor past each alert acknowledged and past the page.
    private func follow(_ url: WebhookURL) async {
        var cursor: Int64?
        var failures = 0
        while !Task.isCancelled {
            do {
                var after: Int64
                if let cursor {
                    after = cursor
                } else {
                    after = try await ledger.alertCursor(for: url.text)
                    cursor = after
                }
                let pageStart = after
                let page = try await ledger.events(after: pageStart, limit: Self.pageSize)
                if page.events.isEmpty {
                    try await Task.sleep(for: timing.pollInterval)
                    continue
                }
                for event in page.events where Ledger.alertKinds.contains(event.kind) {
                    try await deliver(event, to: url)
                    try await ledger.advanceAlertCursor(for: url.text, to: event.id)
                    (cursor, after) = (event.id, event.id)
                }
                if page.lastID > after {
                    try await ledger.advanceAlertCursor(for: url.text, to: page.lastID)
                    cursor = page.lastID
                }
                failures = 0
                // A short page is the end of the feed: wait, rather than write a cursor for every
                // few events of a busy ledger.
                if page.events.count < Self.pageSize { try await Task.sleep(for: timing.pollInterval) }
            } catch is CancellationError {
                return
            } catch {
                // The ledger refused a read or a cursor write (busy, overloaded, shutting down):
                // nothing moved; wait and read the page again.
                failures += 1
                logger.warning(
                    "alert webhook: ledger call failed", metadata: ["url": "\(url)", "error": "\(error)"])
                try? await Task.sleep(for: timing.backoff(afterFailures: failures))
            }
        }
    }

    /// Posts `event`'s alert to `url` until it answers 2xx.
    ///
    /// - Throws: `CancellationError` only (shutdown); every other failure is retried.
    private func deliver(_ event: LedgerEvent, to url: WebhookURL) async throws {
        let body = Array(AlertPayload.json(for: event).utf8)
        let headers = [
            (AlertPayload.signatureHeader, AlertPayload.signature(of: body, secret: secret)),
            (AlertPayload.eventIDHeader, String(event.id)),
        ]
        var failures = 0
        while true {
            try Task.checkCancellation()
            let outcome: String
            do {
                let status = try await poster.post(body, to: url, headers: headers)
                if (200..<300).contains(status) { return }
                outcome = "answered \(status)"
            } catch {
                try Task.checkCancellation()
                outcome = "failed: \(error)"
            }
            failures += 1
            let wait = timing.backoff(afterFailures: failures)
            logger.warning(
                "alert webhook: delivery \(outcome); retrying",
                metadata: ["url": "\(url)", "eventId": "\(event.id)", "attempt": "\(failures)", "retryIn": "\(wait)"])
            try await Task.sleep(for: wait)
        }
    }
}

/// How often the feed is read and how retries back off.
struct AlertTiming: Sendable {
    /// The wait before reading the feed again when it had nothing new.
    var pollInterval: Duration = .milliseconds(500)
    /// The first retry's wait; each later one doubles, up to `maximumBackoff`.
    var initialBackoff: Duration = .milliseconds(250)
    var maximumBackoff: Duration = .seconds(30)
    /// The longest one delivery (connect, send, response) may take.
    var requestTimeout: TimeAmount = .seconds(10)

    /// The wait after `failures` failures in a row (1: `initialBackoff`).
    func backoff(afterFailures failures: Int) -> Duration {
        // 2^7 × 250 ms is past any sensible cap; a larger shift would only overflow.
        let doubled = initialBackoff * (1 << min(max(failures - 1, 0), 7))
        return min(doubled, maximumBackoff)
    }
}

/// The JSON body of an alert and its signature.
enum AlertPayload {
    /// `sha256=` and the lowercase hex HMAC-SHA256 of the exact body bytes, keyed with the secret.
    static let signatureHeader = "X-BudgetLedger-Signature"
    /// The alert's event id: the same alert posted twice carries the same id.
    static let eventIDHeader = "X-BudgetLedger-Event-Id"

    /// `{eventId, kind, timestamp, threadId, scope, windowStart, thresholdPercent, severity,
    /// tokensUsed, maxTokens, costUsed, maxCost, causedBy}`; fields that do not apply are null.
    static func json(for event: LedgerEvent) -> String {
        JSONValue.object([
            ("eventId", .integer(event.id)),
            ("kind", .string(event.kind)),
            ("timestamp", .string(Timestamps.iso8601(microseconds: event.timestampMicroseconds))),
            ("threadId", .optional(event.threadID)),
            ("scope", .optional(event.scope)),
            ("windowStart", .optional(event.windowStartMicroseconds.map { Timestamps.iso8601(microseconds: $0) })),
            ("thresholdPercent", .optional(event.thresholdPercent.map(Int64.init))),
            ("severity", .optional(event.severity)),
            ("tokensUsed", .optional(event.tokensUsed)),
            ("maxTokens", .optional(event.maxTokens)),
            ("costUsed", event.nanodollarsUsed.map { JSONValue.cost($0) } ?? .null),
            ("maxCost", event.maxNanodollars.map { JSONValue.cost($0) } ?? .null),
            ("causedBy", .optional(event.causedBy)),
        ]).serialized()
    }

    /// The signature header's value for `body`.
    static func signature(of body: [UInt8], secret: String) -> String {
        let code = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Array(secret.utf8)))
        let hexDigits = Array("0123456789abcdef".utf8)
        var hex: [UInt8] = []
        for byte in code {
            hex.append(hexDigits[Int(byte >> 4)])
            hex.append(hexDigits[Int(byte & 0x0F)])
        }
        return "sha256=" + String(decoding: hex, as: UTF8.self)
    }
}

/// A webhook URL: `http://HOST[:PORT][/PATH][?QUERY]`. Plain HTTP only, to any host: the body
/// is signed, not encrypted (put a TLS-terminating proxy on the receiver's side if the path
/// leaves a trusted network).
struct WebhookURL: Sendable, Equatable, CustomStringConvertible {
    /// The URL as configured (the cursor's key in the ledger).
    let text: String
    let host: String
    let port: Int
    /// The path and query sent in the request line.
    let target: String

    init(parsing text: String) throws(WebhookURLError) {
        guard !text.isEmpty, text.utf8.count <= Ledger.alertURLBytesMax else {
            throw WebhookURLError(text, "must be 1…\(Ledger.alertURLBytesMax) bytes")
        }
        guard text.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7F }) else {
            throw WebhookURLError(text, "must be printable ASCII without spaces")
        }
        let lowered = text.lowercased()
        if lowered.hasPrefix("https://") {
            throw WebhookURLError(text, "only http:// is supported (put a TLS proxy in front of the receiver)")
        }
        guard lowered.hasPrefix("http://") else { throw WebhookURLError(text, "must start with http://") }
        guard !text.contains("#") else { throw WebhookURLError(text, "must not have a fragment (#)") }
        let rest = text.dropFirst("http://".count)
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard !authority.contains("@") else { throw WebhookURLError(text, "must not carry a user or password") }
        let (host, portText) = Self.split(authority)
        guard !host.isEmpty else { throw WebhookURLError(text, "needs a host") }
        var port = 80
        if let portText {
            guard let parsed = Int(portText), (1...65_535).contains(parsed) else {
                throw WebhookURLError(text, "has a port outside 1…65535")
            }
            port = parsed
        }
        let target = String(rest[authorityEnd...])
        self.text = text
        self.host = host
        self.port = port
        self.target = target.isEmpty ? "/" : (target.hasPrefix("?") ? "/" + target : target)
    }

    /// The host and optional port of an authority; an IPv6 host is written in brackets.
    private static func split(_ authority: Substring) -> (host: String, port: String?) {
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            let host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            return (host, after.hasPrefix(":") ? String(after.dropFirst()) : (after.isEmpty ? nil : ""))
        }
        guard let colon = authority.lastIndex(of: ":") else { return (String(authority), nil) }
        return (String(authority[..<colon]), String(authority[authority.index(after: colon)...]))
    }

    /// The Host header: the host (bracketed when IPv6) and a port other than 80.
    var hostHeader: String {
        let name = host.contains(":") ? "[\(host)]" : host
        return port == 80 ? name : "\(name):\(port)"
    }

    /// Host, port and path, without the query (which may carry a receiver's token), for logs.
    var description: String {
        "http://\(hostHeader)\(target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/")"
    }
}

/// A webhook URL that cannot be used.
struct WebhookURLError: Error, Sendable, CustomStringConvertible {
    let url: String
    let reason: String

    init(_ url: String, _ reason: String) {
        self.url = url
        self.reason = reason
    }

    var description: String { "\(url.debugDescription) \(reason)" }
}

/// One POST per connection over SwiftNIO's HTTP/1.1 codec: small, and no client library to
/// build. Alerts are rare and go one at a time per URL, so a pool would buy nothing.
struct WebhookPoster: Sendable {
    let timeout: TimeAmount

    /// Posts `body` as JSON; returns the response status.
    ///
    /// - Throws: connection errors, `WebhookPosterError` when the peer closed without a
    ///   response or `timeout` passed (the connection is closed).
    func post(_ body: [UInt8], to url: WebhookURL, headers: [(String, String)]) async throws -> UInt {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(timeout)
            .connect(host: url.host, port: url.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                        wrappingChannelSynchronously: channel)
                }
            }
        // Closing the channel ends the exchange below: on the deadline, and on cancellation.
        let deadline = channel.channel.eventLoop.scheduleTask(in: timeout) { channel.channel.close(promise: nil) }
        defer { deadline.cancel() }
        return try await withTaskCancellationHandler {
            try await channel.executeThenClose { inbound, outbound in
                var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: url.target)
                head.headers.add(name: "Host", value: url.hostHeader)
                head.headers.add(name: "Content-Type", value: "application/json")
                head.headers.add(name: "Content-Length", value: String(body.count))
                head.headers.add(name: "Connection", value: "close")
                head.headers.add(name: "User-Agent", value: "budget-ledger/\(Ledger.version)")
                for (name, value) in headers { head.headers.add(name: name, value: value) }
                try await outbound.write(.head(head))
                try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body))))
                try await outbound.write(.end(nil))
                var status: UInt?
                for try await part in inbound {
                    switch part {
                    case .head(let response): status = response.status.code
                    case .body: continue
                    case .end: if let status { return status }
                    }
                }
                throw WebhookPosterError.noResponse
            }
        } onCancel: {
            channel.channel.close(promise: nil)
        }
    }
}

enum WebhookPosterError: Error, CustomStringConvertible {
    case noResponse

    var description: String { "the receiver closed the connection (or the request timed out) without a response" }
}
