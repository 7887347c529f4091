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
            Exit codes: 0 ok; 1 failure (I/O, corrupt file, …); 3 budget exhausted; 4 not found;
            5 conflict; 64 bad input.
            """,
        version: Ledger.version,
        subcommands: [
            Init.self, Consume.self, Check.self, Usage.self, Threads.self, Reset.self, Cleanup.self,
            SetLimit.self, Configure.self, Verify.self, Price.self, Export.self, Events.self, Reserve.self,
            Settle.self, Release.self, Holds.self, Serve.self,
        ]
    )
}
