import ArgumentParser
import BudgetLedger
import Foundation

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

    /// One line of text for usage totals.
    static func text(_ totals: UsageTotals) -> String {
        var line = "\(totals.totalTokens) tokens (prompt \(totals.promptTokens), completion \(totals.completionTokens))"
        line += " in \(totals.requestCount) requests, cost $\(Money.decimalString(nanos: totals.costNanos))"
        if totals.unpricedRequests > 0 { line += " + \(totals.unpricedRequests) unpriced requests" }
        if let latency = totals.averageLatencyMilliseconds { line += ", avg latency \(latency.roundedToOneDecimal) ms" }
        return line
    }

    /// The usage overview: totals, then one line per agent and per model.
    static func text(_ overview: UsageOverview) -> String {
        var lines = ["total: " + text(overview.totals), "active threads: \(overview.activeThreads)"]
        lines += overview.byAgent.map { "agent \($0.agentID ?? "(none)"): " + text($0.totals) }
        lines += overview.byModel.map { "model \($0.model ?? "(none)"): " + text($0.totals) }
        return lines.joined(separator: "\n")
    }

    /// One line of text for a price row.
    static func text(_ price: ModelPrice) -> String {
        "\(price.modelPrefix): $\(Money.usdPerMillion(nanosPerToken: price.promptNanosPerToken)) prompt, "
            + "$\(Money.usdPerMillion(nanosPerToken: price.completionNanosPerToken)) completion per million tokens, "
            + "from \(Timestamps.iso8601(microseconds: price.effectiveFromMicroseconds))"
    }
}
