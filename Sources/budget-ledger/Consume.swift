import ArgumentParser
import BudgetLedger

extension BudgetLedgerCommand {
    struct Consume: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record token usage on a thread (with --enforce: only if it fits the budget).")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The thread id.")
        var thread: String

        @Option(parsing: .unconditional, help: "Prompt tokens spent.")
        var prompt: Int64

        @Option(parsing: .unconditional, help: "Completion tokens spent.")
        var completion: Int64 = 0

        @Option(name: .customLong("idempotency-key"), help: "A retried call with the same key records nothing new.")
        var idempotencyKey: String?

        @Flag(help: "Check and consume in one transaction; refuse (exit 3) what does not fit.")
        var enforce = false

        func run() throws {
            try options.withLedger { ledger in
                let result =
                    enforce
                    ? try ledger.checkAndConsume(
                        thread, promptTokens: prompt, completionTokens: completion, idempotencyKey: idempotencyKey)
                    : try ledger.consume(
                        thread, promptTokens: prompt, completionTokens: completion, idempotencyKey: idempotencyKey)
                var text = (result.isReplay ? "replayed (already recorded): " : "recorded: ") + Output.text(result.budget)
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
