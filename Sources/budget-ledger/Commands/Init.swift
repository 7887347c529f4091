import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create or migrate the ledger.")

        @OptionGroup var options: LedgerOptions

        func run() throws {
            try options.withAnyLedger { ledger in
                let defaultMax = try ledger.maxTokensPerThread
                Output.emit(
                    .object([("path", .string(ledger.location)), ("defaultMaxTokens", .integer(defaultMax))]),
                    text: "ledger ready at \(ledger.location) (default max per thread: \(Output.count(defaultMax, "token")))",
                    asJSON: options.json)
            }
        }
    }
}
