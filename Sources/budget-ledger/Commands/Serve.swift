import ArgumentParser
import BudgetLedger
import BudgetLedgerPostgres
import BudgetLedgerWire
import BudgetLedgerServer
import Foundation
import NIOCore
import Synchronization

extension BudgetLedgerCommand {
    struct Serve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve the REST API until SIGINT or SIGTERM (then finish requests in flight, close the ledger, exit 0).",
            discussion: """
                Binds 127.0.0.1 by default and prints the URL it listens on (--port 0 picks a free port;
                with --json: {"url": …}). With a token, every endpoint but /healthz requires
                Authorization: Bearer TOKEN; a --host other than loopback requires one (exit 64 otherwise).
                Prefer $BUDGET_LEDGER_TOKEN to --token: other users can read command lines.
                --alert-webhook URL posts each alert, signed with --alert-secret (X-BudgetLedger-Signature:
                sha256=HMAC-SHA256 of the body), at least once and in event-id order (README: Alerts).
                The OpenAPI document is served at /openapi.yaml.
                With --db postgres://…, the server is stateless: run any number on one PostgreSQL database
                (docs/postgres.md).
                """)

        @OptionGroup var options: LedgerOptions

        @Option(help: "The address to bind.")
        var host = "127.0.0.1"

        @Option(parsing: .unconditional, help: "The TCP port (0: any free port).")
        var port = ServerConfiguration.defaultPort

        @Option(help: "The bearer token clients must send (default: $BUDGET_LEDGER_TOKEN).")
        var token: String?

        @Option(help: "Threads for ledger calls, 1…256: the most writes one group commit can batch.")
        var ledgerThreads = ServerConfiguration.defaultLedgerThreadCount

        @Option(help: "Ledger calls that may wait for a thread, 0…65536; beyond that a request gets 503.")
        var ledgerQueue = ServerConfiguration.defaultLedgerWaitingCallsMax

        @Option(help: "Post every alert (threshold crossing, first refusal of a window) to this http:// URL (repeatable).")
        var alertWebhook: [String] = []

        @Option(help: "The HMAC-SHA256 key that signs alerts (default: $BUDGET_LEDGER_ALERT_SECRET).")
        var alertSecret: String?

        static let tokenVariable = "BUDGET_LEDGER_TOKEN"
        static let alertSecretVariable = "BUDGET_LEDGER_ALERT_SECRET"

        /// Where the token came from, as the operator typed it: `--token` or the environment variable.
        var tokenSource: (name: String, value: String)? {
            if let token { return ("--token", token) }
            return ProcessInfo.processInfo.environment[Self.tokenVariable].map { ("$" + Self.tokenVariable, $0) }
        }

        var serverConfiguration: ServerConfiguration {
            var configuration = ServerConfiguration(
                databasePath: options.path, host: host, port: port, token: tokenSource?.value,
                ledgerThreadCount: ledgerThreads, ledgerWaitingCallsMax: ledgerQueue)
            configuration.alertWebhookURLs = alertWebhook
            configuration.alertSecret = alertSecret ?? ProcessInfo.processInfo.environment[Self.alertSecretVariable]
            return configuration
        }

        func validate() throws {
            // An empty token is a mistake (an unset secret in a deployment), never "no token": say where it came from.
            if let source = tokenSource, source.value.isEmpty {
                throw ValidationError(
                    "\(source.name) is empty: give the token clients must send, or leave \(source.name) out to serve without one")
            }
            do {
                try serverConfiguration.validate()
            } catch let error as ServerConfigurationError {
                let field =
                    switch error.field {
                    case "token": tokenSource?.name ?? error.field
                    case "ledgerThreadCount": "--ledger-threads"
                    case "ledgerWaitingCallsMax": "--ledger-queue"
                    case "alertWebhookURLs": "--alert-webhook"
                    case "alertSecret": alertSecret == nil ? "--alert-secret (or $\(Self.alertSecretVariable))" : "--alert-secret"
                    default: error.field
                    }
                throw ValidationError("invalid \(field): \(error.reason)")
            }
        }

        func run() throws {
            // The root command is synchronous: serve on the concurrency pool and wait here.
            let (configuration, json) = (serverConfiguration, options.json)
            let outcome = ServeOutcome()
            Task {
                do {
                    try await Self.serve(configuration, json: json)
                    outcome.finish(nil)
                } catch {
                    outcome.finish(error)
                }
            }
            if let error = outcome.wait() {
                throw Output.fail(PortInUseError(error, configuration: configuration) ?? error, json: json)
            }
        }

        private static func serve(_ configuration: ServerConfiguration, json: Bool) async throws {
            let host = configuration.host.contains(":") && !configuration.host.hasPrefix("[")
                ? "[\(configuration.host)]" : configuration.host
            let announce: @Sendable (Int) async -> Void = { port in
                let url = "http://\(host):\(port)"
                let line = json ? JSONValue.object([("url", .string(url))]).serialized() : "listening on \(url)"
                FileHandle.standardOutput.write(Data((line + "\n").utf8))
            }
            guard PostgresLedger.isPostgresURL(configuration.databasePath) else {
                try await buildApplication(configuration, onServerRunning: announce).runService()
                return
            }
            // Connects and migrates before listening: a server that cannot reach its database
            // says so and exits 1 rather than answer 503 to every call.
            let ledger = try await PostgresLedger(url: configuration.databasePath)
            do {
                try await buildApplication(configuration, postgres: ledger, onServerRunning: announce).runService()
            } catch {
                // Idempotent: the application closes the ledger itself when it ran.
                await ledger.close()
                throw error
            }
        }
    }
}

/// How the server task ended, handed to the waiting main thread.
private final class ServeOutcome: Sendable {
    private let error = Mutex<(any Error)?>(nil)
    private let finished = DispatchSemaphore(value: 0)

    func finish(_ error: (any Error)?) {
        self.error.withLock { $0 = error }
        finished.signal()
    }

    /// Blocks until `finish`; the error, if the server failed.
    func wait() -> (any Error)? {
        finished.wait()
        return error.withLock { $0 }
    }
}

/// The address `serve` was to bind is taken: NIO's `bind(descriptor:ptr:bytes:): Address already
/// in use` names neither the host nor the port the operator chose.
struct PortInUseError: Error, CustomStringConvertible {
    let host: String
    let port: Int

    /// Nil unless `error` is the system's `EADDRINUSE`.
    init?(_ error: any Error, configuration: ServerConfiguration) {
        guard let ioError = error as? IOError, ioError.errnoCode == EADDRINUSE else { return nil }
        host = configuration.host
        port = configuration.port
    }

    var description: String {
        "port \(port) on \(host) is already in use; pick another with --port"
    }
}
