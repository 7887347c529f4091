import ArgumentParser
import BudgetLedger
import BudgetLedgerWire
import Foundation

extension BudgetLedgerCommand {
    struct Consume: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record token usage on a thread (with --enforce: only if it fits the budget).")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The thread id.")
        var thread: String

        @OptionGroup var spent: SpentTokens

        @Flag(help: "Check and consume in one transaction; refuse (exit 3) what does not fit.")
        var enforce = false

        @OptionGroup var usage: UsageFlags

        func run() throws {
            let details = try usage.details()
            try options.withLedger { ledger in
                let result =
                    enforce
                    ? try ledger.checkAndConsume(
                        thread, promptTokens: spent.prompt, completionTokens: spent.completion,
                        idempotencyKey: spent.idempotencyKey, usage: details)
                    : try ledger.consume(
                        thread, promptTokens: spent.prompt, completionTokens: spent.completion,
                        idempotencyKey: spent.idempotencyKey, usage: details)
                var text = (result.isReplay ? "replayed (already recorded): " : "recorded: ") + Output.text(result.budget)
                text += "\nevent \(result.event.id), cost " + (result.event.costNanos.map { "$" + Money.decimalString(nanos: $0) } ?? "unknown (no price for the model)")
                for crossing in result.crossedThresholds {
                    text += "\nthreshold \(crossing.thresholdPercent)% (\(crossing.severity)) crossed"
                }
                Output.emit(result.json, text: text, asJSON: options.json)
            }
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check that a thread can spend an estimate (exit 3 when it cannot).")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The thread id.")
        var thread: String

        @Option(parsing: .unconditional, help: "Tokens the next call is expected to spend.")
        var estimate: Int64 = 0

        func run() throws {
            try options.withLedger { ledger in
                let budget = try ledger.checkBudget(thread, estimatedTokens: estimate)
                Output.emit(budget.json, text: "ok: " + Output.text(budget), asJSON: options.json)
            }
        }
    }
}

/// The tokens a call spent, and the key that makes retrying it safe (consume and settle).
struct SpentTokens: ParsableArguments {
    @Option(parsing: .unconditional, help: "Prompt tokens spent.")
    var prompt: Int64

    @Option(parsing: .unconditional, help: "Completion tokens spent.")
    var completion: Int64 = 0

    @Option(name: .customLong("idempotency-key"), help: "A retried call with the same key records nothing new.")
    var idempotencyKey: String?
}

/// The optional usage details of a consume, for billing.
struct UsageFlags: ParsableArguments {
    @Option(name: .customLong("agent"), help: "The agent that made the call.")
    var agentID: String?

    @Option(help: "The model called (priced by longest prefix).")
    var model: String?

    @Option(help: "The provider of the model.")
    var provider: String?

    @Option(name: .customLong("latency-ms"), parsing: .unconditional, help: "The call's latency in milliseconds.")
    var latencyMilliseconds: Int64?

    @Option(name: .customLong("meta"), help: "A metadata entry KEY=VALUE (repeatable; org_id and user_id are indexed).")
    var metadataPairs: [String] = []

    @Option(name: .customLong("meta-json"), help: "Metadata as a JSON object; --meta entries are added to it.")
    var metadataJSON: String?

    /// The usage details, with `--meta` entries merged over `--meta-json`.
    func details() throws -> UsageDetails {
        UsageDetails(
            agentID: agentID, model: model, provider: provider, latencyMilliseconds: latencyMilliseconds,
            metadataJSON: try mergedMetadata())
    }

    private func mergedMetadata() throws -> String? {
        guard metadataJSON != nil || !metadataPairs.isEmpty else { return nil }
        var object: [String: Any] = [:]
        if let metadataJSON {
            guard let parsed = try? JSONSerialization.jsonObject(with: Data(metadataJSON.utf8)) as? [String: Any] else {
                throw ValidationError("--meta-json must be a JSON object, got: \(metadataJSON)")
            }
            object = parsed
        }
        for pair in metadataPairs {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw ValidationError("--meta takes KEY=VALUE, got: \(pair)")
            }
            object[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
        }
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
