import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

/// `budget-ledger`: the command-line face of the ledger.
@main
struct BudgetLedgerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "budget-ledger",
        abstract: "A durable, append-only SQLite ledger of LLM token usage with per-thread budgets.",
        discussion: """
            --db and --json may come before or after the subcommand. A read (usage, threads, check, holds,
            price list, budget list/show, events, export, verify, configure without a value) needs an existing ledger;
            init, writes and serve create one.
            Exit codes: 0 ok; 1 failure (I/O, corrupt file, no ledger, …); 3 budget exhausted; 4 not found;
            5 conflict; 64 bad input.
            """,
        version: Ledger.version,
        subcommands: [
            Init.self, Consume.self, Check.self, Usage.self, Threads.self, Reset.self, Cleanup.self,
            SetLimit.self, Configure.self, Verify.self, Price.self, Export.self, Events.self, Reserve.self,
            Settle.self, Release.self, Holds.self, Budget.self, Serve.self, Copy.self, Import.self,
        ]
    )

    /// Parses and runs the command line as ArgumentParser's `main()` does, after `CommandLineRewrite`
    /// (global options before the subcommand, negative numbers as values), and with a "did you
    /// mean" for a mistyped subcommand.
    static func main() {
        let arguments = CommandLineRewrite.rewritten(Array(CommandLine.arguments.dropFirst()), root: Self.self)
        var command: any ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            // Only a line that did not parse: `usage rest` is a thread named "rest", not a typo of `usage reset`.
            if let suggestion = SubcommandSuggestion(for: arguments, root: Self.self) {
                exit(withError: ValidationError(suggestion.message))
            }
            exit(withError: error)
        }
        do {
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
