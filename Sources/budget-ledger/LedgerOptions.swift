import ArgumentParser
import BudgetLedger
import Foundation

/// The options every subcommand takes.
struct LedgerOptions: ParsableArguments {
    @Option(name: .long, help: "The ledger file (default: $BUDGET_LEDGER_DB, else ./budget-ledger.db).")
    var db: String?

    @Flag(name: .long, help: "Print JSON instead of text.")
    var json = false

    var path: String { db ?? Ledger.defaultPath }

    /// Opens the ledger, runs `body`, and turns every ledger error into its message and exit code.
    func withLedger(_ body: (Ledger) throws -> Void) throws {
        do {
            let ledger = try Ledger(path: path)
            defer { ledger.close() }
            try body(ledger)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw Output.fail(error, json: json)
        }
    }
}
