import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

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
            // Metadata is parsed and checked here, once, before the ledger is opened.
            let details = try options.checkingInput { try usage.details() }
            try options.withAnyLedger { ledger in
                let result = try ledger.consume(
                    thread, promptTokens: spent.prompt, completionTokens: spent.completion,
                    idempotencyKey: spent.idempotencyKey, usage: details, checked: enforce)
                var text = (result.isReplay ? "replayed (already recorded): " : "recorded: ") + Output.text(result.budget)
                text += "\nevent \(result.event.id), cost " + (result.event.costNanodollars.map { "$" + Money.decimalString(nanodollars: $0) } ?? "unknown (no price for the model)")
                for crossing in result.crossedThresholds {
                    text += "\nthreshold \(crossing.thresholdPercent)% (\(crossing.severity)) crossed"
                }
                for crossing in result.crossedScopeThresholds {
                    text += "\nscope \(crossing.scope) threshold \(crossing.thresholdPercent)% (\(crossing.severity)) crossed"
                }
                Output.emit(result.json, text: text, asJSON: options.json)
            }
        }
    }
}
