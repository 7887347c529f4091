import BudgetLedger
import Foundation

/// `budget-ledger-bench metadata [CALLS]`: what a call's metadata costs a check-and-consume,
/// made as the REST server made it before metadata was checked at the edge (compact text, then
/// parsed again by the ledger) and as it makes it now (a `Metadata` from the parsed members).
///
/// Both run in one process on one in-memory ledger (no WAL sync, so the metadata's share is not
/// hidden behind disk latency), in alternating rounds so that a busy machine slows both alike.
enum MetadataMode {
    /// A REST body's metadata as the server's parser hands it over: an org, a user and a few notes.
    static let members: [String: Metadata.Value] = [
        "org_id": .string("acme"), "user_id": .string("ann"), "run": .integer(42), "score": .number(0.75),
        "tags": .array([.string("batch"), .string("eu-west")]), "trace": .object(["span": .string("4bf92f3577b34da6")]),
    ]

    static let rounds = 10

    static func run(_ arguments: [String]) throws {
        guard arguments.count <= 1, let calls = Int(arguments.first ?? "20000"), calls >= rounds else {
            throw UsageError(message: "metadata takes one optional count of calls, at least \(rounds)")
        }
        let ledger = try Ledger.inMemory(maxTokensPerThread: LedgerLimits.maxTokensMax)
        defer { ledger.close() }
        let variants: [(name: String, usage: () throws -> UsageDetails)] = [
            ("no metadata", { UsageDetails(agentID: "a") }),
            // Before: the edge wrote the members as text, and the ledger parsed that text again.
            ("text, parsed again", { try UsageDetails(agentID: "a", metadataJSON: try Metadata(members).json) }),
            // Now: the edge's members become the Metadata the ledger records; nothing is parsed.
            ("Metadata from members", { UsageDetails(agentID: "a", metadata: try Metadata(members)) }),
        ]
        var nanoseconds = [UInt64](repeating: 0, count: variants.count)
        for round in 0..<rounds {
            for (index, variant) in variants.enumerated() {
                let start = MonotonicClock.nowNanoseconds()
                for call in 0..<calls / rounds {
                    _ = try ledger.checkAndConsume("t\((round + call) % 64)", promptTokens: 10, usage: try variant.usage())
                }
                nanoseconds[index] += MonotonicClock.nowNanoseconds() - start
            }
        }
        print("check-and-consume, in-memory ledger, \(calls / rounds * rounds) calls per variant in \(rounds) alternating rounds:")
        for (index, variant) in variants.enumerated() {
            let perCall = Double(nanoseconds[index]) / Double(calls / rounds * rounds) / 1_000
            print("  " + padded(variant.name) + String(format: "%7.2f µs per call", perCall))
        }
        try printMetadataAlone(calls: calls)
    }

    /// The metadata step alone, without the ledger: the parse the ledger used to make of every
    /// write's metadata (`Metadata(json:)` is that code) beside making the `Metadata` from members.
    private static func printMetadataAlone(calls: Int) throws {
        let text = try Metadata(members).json
        let (_, parseSeconds) = try MonotonicClock.timed {
            for _ in 0..<calls { _ = try Metadata(json: text) }
        }
        let (_, buildSeconds) = try MonotonicClock.timed {
            for _ in 0..<calls { _ = try Metadata(members) }
        }
        print("the metadata step alone (\(text.utf8.count) bytes of text), \(calls) times:")
        print("  " + padded("parse text") + String(format: "%7.2f µs", parseSeconds * 1e6 / Double(calls)))
        print("  " + padded("Metadata from members") + String(format: "%7.2f µs", buildSeconds * 1e6 / Double(calls)))
    }

    private static func padded(_ name: String) -> String {
        name.padding(toLength: 24, withPad: " ", startingAt: 0)
    }
}
