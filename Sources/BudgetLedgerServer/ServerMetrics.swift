import Foundation
import Prometheus

/// The server's Prometheus metrics, in a registry of its own (no global metrics system, so
/// every application, a test's included, counts only its own requests).
final class ServerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let consumes: Counter
    private let replays: Counter
    private let exhaustedRefusals: Counter
    /// Nil for a store that is not a file (PostgreSQL): no gauge rather than a 0 that reads as a size.
    private let ledgerFileBytes: Gauge?

    /// Latency buckets from 1 ms to 10 s.
    static let latencyBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .seconds(2.5), .seconds(10),
    ]

    /// - Parameter ledgerFile: whether the ledger is a file whose size `/metrics` reports.
    init(ledgerFile: Bool = true) {
        consumes = registry.makeCounter(
            descriptor: .init(
                namespace: "budget_ledger", metricName: "consumes", unitName: "total",
                helpText: "Consume events recorded through the API (replays excluded)."))
        replays = registry.makeCounter(
            descriptor: .init(
                namespace: "budget_ledger", metricName: "consume_replays", unitName: "total",
                helpText: "Consumes answered from an earlier call with the same idempotency key."))
        exhaustedRefusals = registry.makeCounter(
            descriptor: .init(
                namespace: "budget_ledger", metricName: "exhausted_refusals", unitName: "total",
                helpText: "Checks and checked consumes refused because the budget was exhausted."))
        ledgerFileBytes = ledgerFile
            ? registry.makeGauge(
                descriptor: .init(
                    namespace: "budget_ledger", metricName: "ledger_file", unitName: "bytes",
                    helpText: "Size of the ledger file and its write-ahead log, read at scrape time."))
            : nil
    }

    /// Counts and times one request.
    func recordRequest(route: String, method: String, status: Int, duration: Duration) {
        let labels = [("route", route), ("method", method), ("status", String(status))]
        registry.makeCounter(
            descriptor: .init(
                namespace: "budget_ledger", subsystem: "http", metricName: "requests", unitName: "total",
                helpText: "HTTP requests by route template, method and status."),
            labels: labels
        ).increment()
        registry.makeDurationHistogram(
            descriptor: .init(
                namespace: "budget_ledger", subsystem: "http", metricName: "request_duration", unitName: "seconds",
                helpText: "HTTP request latency, to the end of the response body."),
            labels: [("route", route), ("method", method)], buckets: Self.latencyBuckets
        ).record(duration)
    }

    /// Counts a consume: a new event, or a replay of an earlier one.
    func recordConsume(replayed: Bool) {
        (replayed ? replays : consumes).increment()
    }

    func recordExhaustedRefusal() {
        exhaustedRefusals.increment()
    }

    /// The Prometheus text exposition, after reading the ledger's size on disk at `ledgerPath`
    /// (nil: the ledger is not a file).
    func exposition(ledgerPath: String?) -> String {
        guard let ledgerPath, let ledgerFileBytes else { return registry.emitToString() }
        let sizes = [ledgerPath, ledgerPath + "-wal"].map { path -> Int64 in
            var status = stat()
            return stat(path, &status) == 0 ? Int64(status.st_size) : 0
        }
        ledgerFileBytes.set(sizes.reduce(0, +))
        return registry.emitToString()
    }
}
