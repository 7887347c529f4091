import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Configure: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set the default max for threads created from now on; with no option, print the settings.")

        @OptionGroup var options: LedgerOptions

        @Option(name: .customLong("default-max"), parsing: .unconditional, help: "The default max per thread, in tokens.")
        var defaultMax: Int64?

        func run() throws {
            if let defaultMax {
                try options.withAnyLedger { ledger in
                    try ledger.configure(maxTokensPerThread: defaultMax)
                    emit(defaultMax: defaultMax)
                }
            } else {
                // Reading the settings is a read: it needs an existing ledger and creates none.
                try options.withExistingAnyLedger { ledger in
                    emit(defaultMax: try ledger.maxTokensPerThread)
                }
            }
        }

        private func emit(defaultMax: Int64) {
            Output.emit(
                WriteAnswer.config(defaultMaxTokens: defaultMax),
                text: "default max per thread: \(Output.count(defaultMax, "token"))", asJSON: options.json)
        }
    }
}
