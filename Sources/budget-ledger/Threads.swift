import ArgumentParser
import BudgetLedger
import BudgetLedgerWire
import Foundation

extension BudgetLedgerCommand {

    struct Threads: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List every open thread, hottest first.")

        @OptionGroup var options: LedgerOptions

        func run() throws {
            try options.withLedger { ledger in
                let budgets = try ledger.allUsage()
                let defaultMax = try ledger.maxTokensPerThread
                let json = JSONValue.object([
                    ("threads", .array(budgets.map(\.json))),
                    ("count", .integer(Int64(budgets.count))),
                    ("defaultMaxTokens", .integer(defaultMax)),
                ])
                let lines = ["\(budgets.count) threads (default max \(defaultMax) tokens)"] + budgets.map(Output.text)
                Output.emit(json, text: lines.joined(separator: "\n"), asJSON: options.json)
            }
        }
    }

    struct Reset: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a new budget window: spent reads zero, the max stays, thresholds re-arm.")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The thread id.")
        var thread: String

        func run() throws {
            try options.withLedger { ledger in
                guard let budget = try ledger.resetThread(thread) else {
                    throw Output.notFound(thread, json: options.json)
                }
                Output.emit(budget.json, text: "reset: " + Output.text(budget), asJSON: options.json)
            }
        }
    }

    struct Cleanup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End a thread: print its final budget; afterwards the thread is unknown.")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The thread id.")
        var thread: String

        func run() throws {
            try options.withLedger { ledger in
                guard let budget = try ledger.cleanupThread(thread) else {
                    throw Output.notFound(thread, json: options.json)
                }
                Output.emit(budget.json, text: "cleaned up: " + Output.text(budget), asJSON: options.json)
            }
        }
    }

    struct SetLimit: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-limit", abstract: "Set one thread's max (creating the thread when needed).")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The thread id.")
        var thread: String

        @Argument(help: "The new max, in tokens (0 blocks the thread).")
        var maxTokens: Int64

        func run() throws {
            try options.withLedger { ledger in
                let budget = try ledger.setLimit(thread, maxTokens: maxTokens)
                Output.emit(budget.json, text: "limit set: " + Output.text(budget), asJSON: options.json)
            }
        }
    }

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

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute every derived total from the events and check integrity (exit 1 on any difference).")

        @OptionGroup var options: LedgerOptions

        func run() throws {
            try options.withLedger { ledger in
                // On a terminal, a progress line that rewrites itself; never in a pipe or a log.
                let onTerminal = isatty(STDERR_FILENO) == 1
                let report = try ledger.verify { read, total in
                    guard onTerminal else { return }
                    let end = read == total ? "\n" : ""
                    FileHandle.standardError.write(Data("\rverify: \(read) of \(total) events\(end)".utf8))
                }
                let json = JSONValue.object([
                    ("ok", .bool(report.isConsistent)),
                    ("events", .integer(report.eventCount)),
                    ("threads", .integer(report.threadCount)),
                    ("problems", .array(report.problems.map(JSONValue.string))),
                ])
                let text =
                    report.isConsistent
                    ? "ok: \(report.eventCount) events, \(report.threadCount) open threads; derived totals equal the events"
                    : (["FAILED: \(report.problems.count) problems"] + report.problems).joined(separator: "\n")
                Output.emit(json, text: text, asJSON: options.json)
                if !report.isConsistent {
                    FileHandle.standardError.write(Data("Error: verify found \(report.problems.count) problems\n".utf8))
                    throw ExitCode(1)
                }
            }
        }
    }
}
