import Foundation
import PostgresNIO

/// A `postgres://` (or `postgresql://`) URL read into a client configuration.
///
/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require][&host=/socket/dir]`:
/// the libpq forms the CLI and tests use. A `host` parameter that is a folder (or an empty host
/// with one) connects through the unix socket `.s.PGSQL.PORT` in it. Without `sslmode`, TLS is
/// preferred (used when the server offers it), as libpq's default.
struct PostgresURL: Sendable {
    let configuration: PostgresClient.Configuration
    /// The URL without its password, for messages.
    let redacted: String

    static func isPostgres(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    init(_ text: String) throws {
        guard Self.isPostgres(text), let components = URLComponents(string: text) else {
            throw PostgresLedgerError.invalidURL("expected postgres://user@host:port/database")
        }
        let parameters = Dictionary(
            (components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { _, last in last })
        let username = components.user.flatMap { $0.removingPercentEncoding } ?? "postgres"
        let password = components.password.flatMap { $0.removingPercentEncoding }
        let database = String(components.path.drop(while: { $0 == "/" })).removingPercentEncoding
        let port = components.port ?? 5432
        let tls: PostgresClient.Configuration.TLS
        switch parameters["sslmode"] ?? "prefer" {
        case "disable": tls = .disable
        case "prefer", "allow": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-ca", "verify-full": tls = .require(.makeClientConfiguration())
        case let mode: throw PostgresLedgerError.invalidURL("unknown sslmode \(mode)")
        }
        let socketFolder = parameters["host"].flatMap { $0.hasPrefix("/") ? $0 : nil }
        if let socketFolder {
            configuration = PostgresClient.Configuration(
                unixSocketPath: "\(socketFolder)/.s.PGSQL.\(port)", username: username, password: password,
                database: database?.isEmpty == false ? database : nil)
        } else {
            guard let host = components.host, !host.isEmpty else {
                throw PostgresLedgerError.invalidURL("no host (give one, or ?host=/socket/folder)")
            }
            configuration = PostgresClient.Configuration(
                host: host, port: port, username: username, password: password,
                database: database?.isEmpty == false ? database : nil, tls: tls)
        }
        var shown = components
        if shown.password != nil { shown.password = "***" }
        redacted = shown.string ?? "postgres://"
    }
}
