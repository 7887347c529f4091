import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Price: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage model prices (USD per million tokens; an exact model name, or a pattern with one trailing *).",
            subcommands: [Set.self, List.self, Show.self])

        struct Set: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Add a price for a model, from a time on (default now; recorded events keep their price).")

            @OptionGroup var options: LedgerOptions

            @Argument(help: "The model name (gpt-4o) or a pattern with one trailing * (gpt-4o-20*).")
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
            static let configuration = CommandConfiguration(
                abstract: "List every price row; the rows in force now are marked.")

            @OptionGroup var options: LedgerOptions

            func run() throws {
                try options.withExistingLedger { ledger in
                    let prices = try ledger.prices()
                    let now = ledger.configuration.clock()
                    Output.emit(
                        PriceTableJSON.json(prices, at: now),
                        text: prices.map { price in
                            (price.isInForce(among: prices, at: now) ? "* " : "  ") + Output.text(price)
                        }.joined(separator: "\n"),
                        asJSON: options.json)
                }
            }
        }

        struct Show: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Say which price row a model name gets at a time (default now), and why.")

            @OptionGroup var options: LedgerOptions

            @Argument(help: "The model name as a consume would record it.")
            var model: String

            @Option(help: "The time to ask about: ISO 8601 UTC date or date-time (default: now).")
            var at: String?

            func validate() throws {
                _ = try at.map { try Timestamps.parse($0, option: "--at") }
            }

            func run() throws {
                let time = try at.map { try Timestamps.parse($0, option: "--at") }
                try options.withExistingLedger { ledger in
                    let price = try ledger.price(forModel: model, at: time)
                    let normalized = ModelName.normalized(model)
                    Output.emit(
                        PriceTableJSON.json(model: model, price: price),
                        text: price.map { price in
                            "\(normalized): " + (price.match == .exact ? "exact price " : "pattern \(price.modelPattern): ")
                                + Output.text(price)
                        } ?? "\(normalized): unpriced (its consumes have no cost)",
                        asJSON: options.json)
                }
            }
        }
    }
}
