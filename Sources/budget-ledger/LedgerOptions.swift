import ArgumentParser
import BudgetLedger
import BudgetLedgerWire
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

/// Writing results and errors.
enum Output {
    /// Prints `json` (with `--json`) or `text`.
    static func emit(_ json: JSONValue, text: @autoclosure () -> String, asJSON: Bool) {
        print(asJSON ? json.serialized() : text())
    }

    /// Prints `Error: …` (and, with `--json`, the error as JSON on stdout) and returns the exit code.
    static func fail(_ error: Error, json: Bool) -> ExitCode {
        let code: Int32
        var body: JSONValue?
        switch error {
        case let exhausted as BudgetExhaustedError:
            code = 3
            body = exhausted.json
        case let ledgerError as LedgerError:
            switch ledgerError {
            case .invalidInput: code = 64
            case .threadNotFound, .reservationNotFound: code = 4
            case .conflict: code = 5
            case .closed, .database, .incompatible: code = 1
            }
        default:
            code = 1
        }
        if json {
            print((body ?? .object([("error", .string("\(error)"))])).serialized())
        }
        FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
        return ExitCode(code)
    }

    /// `not found` for a thread that is not open: exit 4.
    static func notFound(_ threadID: String, json: Bool) -> ExitCode {
        fail(LedgerError.threadNotFound(threadID), json: json)
    }

    /// One line of text for a budget.
    static func text(_ budget: ThreadBudget) -> String {
        var line = "\(budget.threadID): \(budget.totalTokens) of \(budget.maxTokens) tokens used"
        line += " (\(budget.percentUsed.roundedToOneDecimal)%), \(budget.remaining) remaining"
        line += "; prompt \(budget.promptTokens), completion \(budget.completionTokens), \(budget.requestCount) requests"
        if budget.heldTokens > 0 { line += "; \(budget.heldTokens) held, \(budget.remainingAfterHolds) free after holds" }
        if budget.isExhausted { line += "; EXHAUSTED" }
        return line
    }
}
