import ArgumentParser
import BudgetLedger
import BudgetLedgerServer
import Foundation
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
                The OpenAPI document is served at /openapi.yaml.
                """)

        @OptionGroup var options: LedgerOptions

        @Option(help: "The address to bind.")
        var host = "127.0.0.1"

        @Option(parsing: .unconditional, help: "The TCP port (0: any free port).")
        var port = ServerConfiguration.defaultPort

        @Option(help: "The bearer token clients must send (default: $BUDGET_LEDGER_TOKEN).")
        var token: String?

        var serverConfiguration: ServerConfiguration {
            ServerConfiguration(
                databasePath: options.path, host: host, port: port,
                token: token ?? ProcessInfo.processInfo.environment["BUDGET_LEDGER_TOKEN"])
        }

        func validate() throws {
            do {
                try serverConfiguration.validate()
            } catch let error as ServerConfigurationError {
                throw ValidationError(error.description)
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
                throw Output.fail(error, json: json)
            }
        }

        private static func serve(_ configuration: ServerConfiguration, json: Bool) async throws {
            let host = configuration.host.contains(":") && !configuration.host.hasPrefix("[")
                ? "[\(configuration.host)]" : configuration.host
            let app = try buildApplication(configuration) { port in
                let url = "http://\(host):\(port)"
                let line = json ? JSONValue.object([("url", .string(url))]).serialized() : "listening on \(url)"
                FileHandle.standardOutput.write(Data((line + "\n").utf8))
            }
            try await app.runService()
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
