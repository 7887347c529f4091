import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Price: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage model prices (USD per million tokens; an exact model name, or a pattern with one trailing *).",
            subcommands: [Set.self, List.self, Show.self, Withdraw.self, Replace.self, Reprice.self])

        /// The model is an argument (`MODEL`) here, not `--model` as elsewhere.
        static let fieldNames = ["model": "MODEL", "prompt price": "--prompt", "completion price": "--completion"]

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
                try options.withAnyLedger(fieldNames: Price.fieldNames) { ledger in
                    let price = try ledger.setPrice(
                        model: model, promptUSDPerMillion: prompt, completionUSDPerMillion: completion, effectiveFrom: start)
                    Output.emit(price.json, text: "price set: " + Output.text(price), asJSON: options.json)
                }
            }
        }

        struct Withdraw: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Withdraw a price that has not taken effect yet (one in effect can only be superseded).")

            @OptionGroup var options: LedgerOptions

            @Argument(help: "The model name or pattern, as the price was set.")
            var model: String

            @Option(help: "The start of the price to withdraw: ISO 8601 UTC date or date-time.")
            var from: String

            func validate() throws {
                _ = try Timestamps.parse(from, option: "--from")
            }

            func run() throws {
                let start = try Timestamps.parse(from, option: "--from")
                try options.withExistingAnyLedger(fieldNames: Price.fieldNames) { ledger in
                    let price = try ledger.withdrawPrice(model: model, effectiveFrom: start)
                    Output.emit(price.json, text: "price withdrawn: " + Output.text(price), asJSON: options.json)
                }
            }
        }

        struct Replace: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Replace a price that has not taken effect yet with new rates (and optionally a new start).")

            @OptionGroup var options: LedgerOptions

            @Argument(help: "The model name or pattern, as the price was set.")
            var model: String

            @Option(help: "The start of the price to replace: ISO 8601 UTC date or date-time.")
            var from: String

            @Option(help: "USD per million prompt tokens, e.g. 2.5 (at most 3 decimals).")
            var prompt: String

            @Option(help: "USD per million completion tokens, e.g. 10.")
            var completion: String

            @Option(name: .customLong("new-from"), help: "The replacement's start, in the future (default: the same).")
            var newFrom: String?

            func validate() throws {
                _ = try Timestamps.parse(from, option: "--from")
                _ = try newFrom.map { try Timestamps.parse($0, option: "--new-from") }
            }

            func run() throws {
                let start = try Timestamps.parse(from, option: "--from")
                let newStart = try newFrom.map { try Timestamps.parse($0, option: "--new-from") }
                try options.withExistingAnyLedger(fieldNames: Price.fieldNames) { ledger in
                    let price = try ledger.replacePrice(
                        model: model, effectiveFrom: start, promptUSDPerMillion: prompt, completionUSDPerMillion: completion,
                        newEffectiveFrom: newStart)
                    Output.emit(price.json, text: "price replaced: " + Output.text(price), asJSON: options.json)
                }
            }
        }

        struct Reprice: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Bill a model's consumes recorded while it was unpriced, at the prices now in the table.",
                discussion: """
                    Appends one reprice event per consume in [--from, --to) recorded with no cost that the price \
                    table now prices (at the price in force at the consume's own time). Billed consumes are never \
                    repriced, and a consume is repriced once: running it again is a no-op.
                    """)

            @OptionGroup var options: LedgerOptions

            @Option(help: "The model name, or a pattern with one trailing * (gpt-4o-20*).")
            var model: String

            @Option(help: "The start of the range (inclusive): ISO 8601 UTC date or date-time.")
            var from: String

            @Option(help: "The end of the range (exclusive): ISO 8601 UTC date or date-time.")
            var to: String

            func validate() throws {
                _ = try Timestamps.parse(from, option: "--from")
                _ = try Timestamps.parse(to, option: "--to")
            }

            func run() throws {
                let start = try Timestamps.parse(from, option: "--from")
                let end = try Timestamps.parse(to, option: "--to")
                try options.withExistingAnyLedger { ledger in
                    let result = try ledger.reprice(model: model, from: start, to: end)
                    Output.emit(
                        result.json,
                        text: "repriced \(Output.count(result.repricedCount, "consume")): "
                            + "$\(Money.decimalString(nanodollars: result.costNanodollars)); "
                            + "\(Output.count(result.unpricedCount, "consume")) still unpriced"
                            + (result.isComplete ? "" : " (limit reached: run it again)"),
                        asJSON: options.json)
                }
            }
        }

        struct List: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "List every price row; the rows in force now are marked.")

            @OptionGroup var options: LedgerOptions

            func run() throws {
                try options.withExistingAnyLedger { ledger in
                    let prices = try ledger.prices()
                    let now = ledger.now
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
                try options.withExistingAnyLedger(fieldNames: Price.fieldNames) { ledger in
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
