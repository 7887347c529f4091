import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Threads: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List every open thread, hottest first.")

        @OptionGroup var options: LedgerOptions

        func run() throws {
            try options.withExistingAnyLedger { ledger in
                let budgets = try ledger.allUsage()
                let defaultMax = try ledger.maxTokensPerThread
                let json = ThreadList.json(budgets, defaultMaxTokens: defaultMax)
                let lines = ["\(Output.count(budgets.count, "thread")) (default max \(Output.count(defaultMax, "token")))"] + budgets.map(Output.text)
                Output.emit(json, text: lines.joined(separator: "\n"), asJSON: options.json)
            }
        }
    }
}
