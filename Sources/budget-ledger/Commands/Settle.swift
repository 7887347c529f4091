import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Settle: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record what a held call actually spent and end the hold (exit 4 unknown, 5 no longer live).")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The reservation id.")
        var reservation: Int64

        @OptionGroup var spent: SpentTokens

        @OptionGroup var usage: UsageFlags

        func run() throws {
            // Metadata is parsed and checked here, once, before the ledger is opened.
            let details = try options.checkingInput { try usage.details() }
            try options.withAnyLedger { ledger in
                let result = try ledger.settle(
                    reservation, promptTokens: spent.prompt, completionTokens: spent.completion,
                    idempotencyKey: spent.idempotencyKey, usage: details)
                let expired = result.holdHadExpired ? " (the hold had expired; the spend is recorded)" : ""
                Output.emit(
                    result.json, text: "settled reservation \(reservation)\(expired): " + Output.text(result.consume.budget),
                    asJSON: options.json)
            }
        }
    }
}
