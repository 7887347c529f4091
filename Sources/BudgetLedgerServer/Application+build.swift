import BudgetLedger
import BudgetLedgerPostgres
import BudgetLedgerStore
import BudgetLedgerWire
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// Builds the REST server that `budget-ledger serve` runs on a SQLite ledger (tests build the same one).
///
/// Opens the ledger at `configuration.databasePath`; the application owns it and closes it on
/// graceful shutdown, after the requests in flight have finished. A `postgres://` URL is
/// refused here: open it with `PostgresLedger(url:)` (it is asynchronous) and pass it to
/// `buildApplication(_:postgres:logger:onServerRunning:)`. The SQLite ledger is served through
/// `SQLiteLedgerStore` (BudgetLedgerStore), the store `openLedgerStore` returns for a file path.
///
/// - Parameters:
///   - configuration: where the ledger is, where to listen, the token.
///   - logger: the server's logger; by default "budget-ledger" at info level, or `$LOG_LEVEL`.
///   - onServerRunning: called with the bound port once the server listens (useful with port 0).
/// - Throws: `ServerConfigurationError` for an unusable configuration (nothing is opened);
///   `LedgerError` when the ledger cannot be opened.
public func buildApplication(
    _ configuration: ServerConfiguration,
    logger: Logger? = nil,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) throws -> some ApplicationProtocol {
    try configuration.validate()
    guard !PostgresLedger.isPostgresURL(configuration.databasePath) else {
        throw ServerConfigurationError(
            field: "databasePath", reason: "a postgres:// URL is served by buildApplication(_:postgres:), not opened as a file")
    }
    let ledger = try Ledger(path: configuration.databasePath)
    // A webhook's cursor exists before the server answers a call: every alert recorded from here
    // on is delivered, even one recorded before the delivery task first runs.
    do {
        for url in configuration.alertWebhookURLs { _ = try ledger.alertCursor(for: url) }
    } catch {
        ledger.close()
        throw error
    }
    return buildApplication(configuration, ledger: ledger, logger: logger, onServerRunning: onServerRunning)
}

/// Builds the server around `ledger`, which it then owns: what `buildApplication(_:logger:onServerRunning:)`
/// does once the ledger is open. Tests pass a ledger they configured (a capped one, a closed one).
func buildApplication(
    _ configuration: ServerConfiguration, ledger: Ledger, logger: Logger? = nil,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    let logger = logger ?? defaultLogger()
    let ledger = SQLiteLedgerStore(
        ledger: ledger, threadCount: configuration.ledgerThreadCount, waitingCallsMax: configuration.ledgerWaitingCallsMax)
    let router = buildRouter(ledger: ledger, metrics: ServerMetrics(), configuration: configuration)
    var services: [any Service] = [SQLiteStoreService(store: ledger, logger: logger)]
    if !configuration.alertWebhookURLs.isEmpty, let secret = configuration.alertSecret {
        // Validated by `configuration.validate()`; after the ledger's service, so it stops first.
        let urls = configuration.alertWebhookURLs.compactMap { try? WebhookURL(parsing: $0) }
        services.append(AlertWebhookService(ledger: ledger, urls: urls, secret: secret, logger: logger))
    }
    return application(configuration, router: router, services: services, logger: logger, onServerRunning: onServerRunning)
}

/// Builds the REST server on an open PostgreSQL ledger, which it then owns (it is closed on
/// graceful shutdown, after the requests in flight). Stateless: any number of these may serve
/// one database (docs/postgres.md); those given the same alert webhook share its cursor. Routes
/// whose operation the PostgreSQL store does not have yet answer 501.
///
/// - Throws: `ServerConfigurationError` for an unusable configuration; the store's errors when
///   a webhook's cursor cannot be read or stored (the ledger is left open: the caller closes it).
public func buildApplication(
    _ configuration: ServerConfiguration, postgres ledger: PostgresLedger, logger: Logger? = nil,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) async throws -> some ApplicationProtocol {
    try configuration.validate()
    // As on SQLite: a webhook's cursor exists before the server answers a call.
    for url in configuration.alertWebhookURLs { _ = try await ledger.alertCursor(for: url) }
    let logger = logger ?? defaultLogger()
    let router = buildRouter(ledger: ledger, metrics: ServerMetrics(ledgerFile: false), configuration: configuration)
    var services: [any Service] = [PostgresStoreService(ledger: ledger, logger: logger)]
    if !configuration.alertWebhookURLs.isEmpty, let secret = configuration.alertSecret {
        // Validated by `configuration.validate()`; after the store's service, so it stops first.
        let urls = configuration.alertWebhookURLs.compactMap { try? WebhookURL(parsing: $0) }
        services.append(AlertWebhookService(ledger: ledger, urls: urls, secret: secret, logger: logger))
    }
    return application(configuration, router: router, services: services, logger: logger, onServerRunning: onServerRunning)
}

/// "budget-ledger" at info level, or `$LOG_LEVEL`.
private func defaultLogger() -> Logger {
    var logger = Logger(label: "budget-ledger")
    logger.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .info
    return logger
}

/// The application around `router`: the address, the services (stopped in reverse order, after the HTTP server).
private func application(
    _ configuration: ServerConfiguration, router: Router<BasicRequestContext>, services: [any Service], logger: Logger,
    onServerRunning: @escaping @Sendable (Int) async -> Void
) -> Application<RouterResponder<BasicRequestContext>> {
    let port = configuration.port
    return Application(
        router: router,
        configuration: ApplicationConfiguration(
            address: .hostname(configuration.host, port: configuration.port), serverName: "budget-ledger"),
        services: services,
        onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? port) },
        logger: logger)
}

/// The routes and middleware. Order matters: middleware applies to the routes added after it.
///
/// The request id sits outermost so every response carries it; metrics next, so they see every
/// final status; errors become JSON next; `/healthz` and the dashboard page are added before the
/// token check, everything else (the router's own 404 included) after it.
func buildRouter(
    ledger: any ServerLedgerStore, metrics: ServerMetrics, configuration: ServerConfiguration
) -> Router<BasicRequestContext> {
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: RequestIDMiddleware())
    router.add(middleware: RequestMetricsMiddleware(metrics: metrics))
    router.add(middleware: APIErrorMiddleware())
    HealthController(ledger: ledger).addRoutes(to: router)
    DashboardController().addRoutes(to: router)
    if let token = configuration.token {
        router.add(middleware: BearerTokenMiddleware(token: token))
    }
    let bodyLimit = configuration.requestBodyBytesMax
    OperationsController(ledger: ledger, metrics: metrics).addRoutes(to: router)
    UsageController(ledger: ledger, requestBodyBytesMax: bodyLimit).addRoutes(to: router)
    ThreadsController(ledger: ledger, metrics: metrics, requestBodyBytesMax: bodyLimit).addRoutes(to: router)
    ReservationsController(ledger: ledger, metrics: metrics, requestBodyBytesMax: bodyLimit).addRoutes(to: router)
    BillingController(ledger: ledger).addRoutes(to: router)
    ConfigController(ledger: ledger, requestBodyBytesMax: bodyLimit).addRoutes(to: router)
    PricesController(ledger: ledger, requestBodyBytesMax: bodyLimit).addRoutes(to: router)
    BudgetsController(ledger: ledger, requestBodyBytesMax: bodyLimit).addRoutes(to: router)
    return router
}
