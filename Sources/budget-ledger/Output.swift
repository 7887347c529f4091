import ArgumentParser
import BudgetLedger
import BudgetLedgerWire
import Foundation

/// Writing results and errors.
enum Output {
    /// Prints `json` (with `--json`) or `text`.
    static func emit(_ json: JSONValue, text: @autoclosure () -> String, asJSON: Bool) {
        print(asJSON ? json.serialized() : text())
    }

    /// Prints `Error: …` (and, with `--json`, the error as JSON on stdout) and returns the exit code.
    ///
    /// A bad field is named as the user typed it (`CommandLineNames`); `fieldNames` overrides
    /// the usual names for a command whose arguments differ.
    static func fail(_ error: Error, json: Bool, fieldNames: [String: String] = [:]) -> ExitCode {
        let code: Int32
        var body: JSONValue?
        switch error {
        case let exhausted as BudgetExhaustedError:
            code = 3
            body = exhausted.json
        case let ledgerError as LedgerError:
            switch ledgerError {
            case .invalidInput: code = 64
            case .threadNotFound, .reservationNotFound, .priceNotFound: code = 4
            case .conflict: code = 5
            case .closed, .database, .incompatible: code = 1
            }
        case is ScopeBudgetNotFoundError:
            code = 4
        default:  // I/O, no ledger for a read, a port in use
            code = 1
        }
        let message = CommandLineNames.describe(error, overrides: fieldNames)
        if json {
            print((body ?? .object([("error", .string(message))])).serialized())
        }
        FileHandle.standardError.write(Data("Error: \(message)\n".utf8))
        return ExitCode(code)
    }

    /// `1 request`, `2 requests`, `0 requests`: a count and its noun, plural unless the count is 1.
    static func count<Count: BinaryInteger>(_ count: Count, _ singular: String, plural: String? = nil) -> String {
        "\(count) " + (count == 1 ? singular : plural ?? singular + "s")
    }

    /// `not found` for a thread that is not open: exit 4.
    static func notFound(_ threadID: String, json: Bool) -> ExitCode {
        fail(LedgerError.threadNotFound(threadID), json: json)
    }

    /// One line of text for a budget.
    static func text(_ budget: ThreadBudget) -> String {
        var line = "\(budget.threadID): \(budget.totalTokens) of \(count(budget.maxTokens, "token")) used"
        line += " (\(budget.percentUsed.roundedToOneDecimal)%), \(budget.remaining) remaining"
        line += "; prompt \(budget.promptTokens), completion \(budget.completionTokens), \(count(budget.requestCount, "request"))"
        if budget.heldTokens > 0 { line += "; \(budget.heldTokens) held, \(budget.remainingAfterHolds) free after holds" }
        if budget.isExhausted { line += "; EXHAUSTED" }
        return line
    }

    /// One line of text for usage totals.
    static func text(_ totals: UsageTotals) -> String {
        var line = "\(count(totals.totalTokens, "token")) (prompt \(totals.promptTokens), completion \(totals.completionTokens))"
        line += " in \(count(totals.requestCount, "request")), "
        // Unpriced usage is never folded into a figure that reads as complete: the priced cost
        // is marked partial, and the usage it leaves out is named in requests and tokens.
        let unpriced = "\(count(totals.unpricedRequests, "unpriced request")), \(count(totals.unpricedTokens, "token"))"
        if let cost = totals.knownCostNanodollars {
            line += "cost $\(Money.decimalString(nanodollars: cost))"
            if !totals.isCostComplete { line += " for the priced ones only (partial: \(unpriced))" }
        } else {
            line += "cost unknown (\(unpriced))"
        }
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
        "\(price.modelPattern): $\(Money.usdPerMillion(nanodollarsPerToken: price.promptNanodollarsPerToken)) prompt, "
            + "$\(Money.usdPerMillion(nanodollarsPerToken: price.completionNanodollarsPerToken)) completion per million tokens, "
            + "from \(Timestamps.iso8601(microseconds: price.effectiveFromMicroseconds))"
    }
}

extension Output {
    /// Rows as lines of columns padded to the widest cell (plus the header's), two spaces apart;
    /// the columns in `rightAligned` (numbers) are padded on the left. The last column is not
    /// padded, so no line ends in spaces.
    static func table(_ rows: [[String]], header: [String]?, rightAligned: Set<Int> = []) -> [String] {
        let all = (header.map { [$0] } ?? []) + rows
        guard let columnCount = all.map(\.count).max() else { return [] }
        let widths = (0..<columnCount).map { column in
            all.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0
        }
        return all.map { row in
            row.enumerated().map { column, cell in
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                if rightAligned.contains(column) { return padding + cell }
                return column == row.count - 1 ? cell : cell + padding
            }.joined(separator: "  ")
        }
    }
}
