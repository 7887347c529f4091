import BudgetLedgerStore

/// How the REST server is run: where the ledger lives, where to listen, who may call.
public struct ServerConfiguration: Sendable {
    /// The ledger file the server opens (and closes when it shuts down), or a `postgres://` URL,
    /// which `buildApplication(_:postgres:)` serves once the caller has opened it.
    public var databasePath: String
    /// The address to bind: a loopback address unless a token is set.
    public var host: String
    /// The TCP port; 0 asks the system for a free one (see `buildApplication`'s `onServerRunning`).
    public var port: Int
    /// The bearer token every endpoint but `/healthz` requires; nil leaves the API open
    /// (allowed on loopback only).
    public var token: String?
    /// The largest request body accepted; a larger one is refused with 413.
    public var requestBodyBytesMax: Int
    /// Threads that run the ledger's blocking SQLite calls, off the event loops. A write holds
    /// its thread until its commit is durable, and group commit batches only writes that hold
    /// one: this is the most writes one transaction of the server's can carry.
    public var ledgerThreadCount: Int
    /// Ledger calls that may wait for a thread when all are busy; one more is refused with 503.
    public var ledgerWaitingCallsMax: Int
    /// URLs (http:// only) that every alert (threshold, scope_threshold, refusal events) is
    /// posted to, signed with `alertSecret` (see `AlertWebhookService`).
    public var alertWebhookURLs: [String] = []
    /// The shared secret of the alerts' HMAC-SHA256 signature; required with any webhook.
    public var alertSecret: String?

    /// The default port of `budget-ledger serve`.
    public static let defaultPort = 8765
    /// The default body limit: 64 KiB, four times the largest metadata the ledger accepts.
    public static let defaultRequestBodyBytesMax = 64 * 1024
    /// The default number of threads for ledger calls: enough for 64 concurrent writes to meet
    /// in group commit (docs/performance.md has the measurements).
    public static let defaultLedgerThreadCount = LedgerStoreOptions.defaultSQLiteThreadCount
    /// The most threads for ledger calls (more than `Ledger.groupCommitBatchMax` cannot enlarge a batch).
    public static let ledgerThreadCountMax = LedgerStoreOptions.sqliteThreadCountMax
    /// The default number of ledger calls that may wait for a thread.
    public static let defaultLedgerWaitingCallsMax = LedgerStoreOptions.defaultSQLiteWaitingCallsMax
    /// The most ledger calls that may be allowed to wait for a thread.
    public static let ledgerWaitingCallsMaxLimit = LedgerStoreOptions.sqliteWaitingCallsMaxLimit
    /// The longest token accepted, in UTF-8 bytes.
    public static let tokenBytesMax = 4096
    /// The most alert webhooks one server posts to.
    public static let alertWebhooksMax = 16

    /// - Parameters:
    ///   - databasePath: the ledger file.
    ///   - host: the address to bind (default loopback).
    ///   - port: the TCP port (default 8765; 0 picks a free one).
    ///   - token: the bearer token, or nil for none.
    ///   - requestBodyBytesMax: the body limit (default 64 KiB).
    ///   - ledgerThreadCount: threads for ledger calls (default 64; 1…256).
    ///   - ledgerWaitingCallsMax: calls that may wait for one of them (default 1024; 0…65536).
    public init(
        databasePath: String, host: String = "127.0.0.1", port: Int = ServerConfiguration.defaultPort,
        token: String? = nil, requestBodyBytesMax: Int = ServerConfiguration.defaultRequestBodyBytesMax,
        ledgerThreadCount: Int = ServerConfiguration.defaultLedgerThreadCount,
        ledgerWaitingCallsMax: Int = ServerConfiguration.defaultLedgerWaitingCallsMax
    ) {
        self.databasePath = databasePath
        self.host = host
        self.port = port
        self.token = token
        self.requestBodyBytesMax = requestBodyBytesMax
        self.ledgerThreadCount = ledgerThreadCount
        self.ledgerWaitingCallsMax = ledgerWaitingCallsMax
    }

    /// Whether `host` names this machine only: `localhost`, `::1` or any 127.x.x.x address.
    public var bindsLoopbackOnly: Bool {
        Self.isLoopback(host)
    }

    /// Checks the configuration before anything is opened or bound.
    ///
    /// - Throws: `ServerConfigurationError` naming what is wrong.
    public func validate() throws {
        guard (0...65_535).contains(port) else {
            throw ServerConfigurationError(field: "port", reason: "must be 0…65535 (got \(port))")
        }
        if let token {
            guard !token.isEmpty, token.utf8.count <= Self.tokenBytesMax else {
                throw ServerConfigurationError(
                    field: "token", reason: "must be 1…\(Self.tokenBytesMax) bytes (got \(token.utf8.count))")
            }
            guard token.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7F }) else {
                throw ServerConfigurationError(
                    field: "token", reason: "must be printable ASCII without spaces, to fit an Authorization header")
            }
        }
        if token == nil && !bindsLoopbackOnly {
            throw ServerConfigurationError(
                field: "host",
                reason: "refusing to serve \(host) without a token: anyone on the network could spend budgets; "
                    + "pass --token or set BUDGET_LEDGER_TOKEN, or bind 127.0.0.1")
        }
        try validateAlerts()
        guard (1...65_536).contains(requestBodyBytesMax) else {
            throw ServerConfigurationError(
                field: "requestBodyBytesMax", reason: "must be 1…65536 (got \(requestBodyBytesMax))")
        }
        guard (1...Self.ledgerThreadCountMax).contains(ledgerThreadCount) else {
            throw ServerConfigurationError(
                field: "ledgerThreadCount", reason: "must be 1…\(Self.ledgerThreadCountMax) (got \(ledgerThreadCount))")
        }
        guard (0...Self.ledgerWaitingCallsMaxLimit).contains(ledgerWaitingCallsMax) else {
            throw ServerConfigurationError(
                field: "ledgerWaitingCallsMax",
                reason: "must be 0…\(Self.ledgerWaitingCallsMaxLimit) (got \(ledgerWaitingCallsMax))")
        }
    }

    /// Each webhook URL parses as plain http://; webhooks need a secret to sign with.
    private func validateAlerts() throws {
        guard alertWebhookURLs.count <= Self.alertWebhooksMax else {
            throw ServerConfigurationError(
                field: "alertWebhookURLs", reason: "at most \(Self.alertWebhooksMax) webhooks (got \(alertWebhookURLs.count))")
        }
        for url in alertWebhookURLs {
            do {
                _ = try WebhookURL(parsing: url)
            } catch {
                throw ServerConfigurationError(field: "alertWebhookURLs", reason: error.description)
            }
        }
        if let alertSecret, alertSecret.isEmpty || alertSecret.utf8.count > Self.tokenBytesMax {
            throw ServerConfigurationError(
                field: "alertSecret", reason: "must be 1…\(Self.tokenBytesMax) bytes (got \(alertSecret.utf8.count))")
        }
        if !alertWebhookURLs.isEmpty && alertSecret == nil {
            throw ServerConfigurationError(
                field: "alertSecret",
                reason: "alert webhooks are signed: give the shared secret receivers verify them with")
        }
    }

    static func isLoopback(_ host: String) -> Bool {
        let lowered = host.lowercased()
        if lowered == "localhost" || lowered == "::1" || lowered == "[::1]" { return true }
        let octets = lowered.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }
}

/// A server configuration that cannot be used; nothing was opened or bound.
public struct ServerConfigurationError: Error, Sendable, CustomStringConvertible {
    /// The setting that is wrong.
    public let field: String
    /// What is wrong with it.
    public let reason: String

    /// `invalid FIELD: REASON`.
    public var description: String { "invalid \(field): \(reason)" }
}
