import ArgumentParser
import BudgetLedger

extension BudgetLedgerCommand {
    struct Configure: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set the default max for threads created from now on.")

        @OptionGroup var options: LedgerOptions

        @Option(name: .customLong("default-max"), parsing: .unconditional, help: "The default max per thread, in tokens.")
        var defaultMax: Int64

        func run() throws {
            try options.withLedger { ledger in
                try ledger.configure(maxTokensPerThread: defaultMax)
                Output.emit(
                    .object([("defaultMaxTokens", .integer(defaultMax))]),
                    text: "default max per thread: \(defaultMax) tokens", asJSON: options.json)
            }
        }
    }
}
