import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Price: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage model prices (USD per million tokens; matched by longest prefix, case-insensitive).",
            subcommands: [Set.self, List.self])

        struct Set: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Add a price for a model, from a time on (default now; recorded events keep their price).")

            @OptionGroup var options: LedgerOptions

            @Argument(help: "The model name or prefix, e.g. gpt-4o.")
            var model: String

            @Option(help: "USD per million prompt tokens, e.g. 2.5 (at most 3 decimals).")
            var prompt: String

            @Option(help: "USD per million completion tokens, e.g. 10.")
            var completion: String

            @Option(help: "When the price starts: ISO 8601 UTC date or date-time (default: now).")
            var from: String?

            func validate() throws {
                _ = try from.map { try Timestamps.parse($0, option: "--from") }
            }

            func run() throws {
                let start = try from.map { try Timestamps.parse($0, option: "--from") }
                try options.withLedger { ledger in
                    let price = try ledger.setPrice(
                        model: model, promptUSDPerMillion: prompt, completionUSDPerMillion: completion, effectiveFrom: start)
                    Output.emit(price.json, text: "price set: " + Output.text(price), asJSON: options.json)
                }
            }
        }

        struct List: ParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List every price row.")

            @OptionGroup var options: LedgerOptions

            func run() throws {
                try options.withExistingLedger { ledger in
                    let prices = try ledger.prices()
                    Output.emit(
                        .object([("prices", .array(prices.map(\.json))), ("count", .integer(Int64(prices.count)))]),
                        text: prices.map(Output.text).joined(separator: "\n"), asJSON: options.json)
                }
            }
        }
    }
}
