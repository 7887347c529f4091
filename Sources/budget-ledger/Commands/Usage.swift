import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    /// `usage [THREAD]` (that is, `usage show`) and `usage reset`. ArgumentParser parses a
    /// command's own arguments before it looks for a subcommand, so `usage` cannot take a THREAD
    /// and have a `reset` child: the reading is a default subcommand instead.
    struct Usage: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one thread's budget or the usage overview; start a new usage window.",
            subcommands: [Show.self, Reset.self],
            defaultSubcommand: Show.self)
    }
}

extension BudgetLedgerCommand.Usage {
    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one thread's budget, or the usage overview (totals, per agent, per model).",
            discussion: """
                With THREAD: that thread's budget (exit 4 when unknown). Without: the overview of the
                current usage window (--all-time: every event), or one agent's or model's totals.
                A thread named like a subcommand: `usage show reset`.
                """)

        @OptionGroup var options: LedgerOptions

        @Argument(help: "A thread id (omit for the overview).")
        var thread: String?

        @Option(name: .customLong("agent"), help: "Only this agent's totals (zeros when unknown).")
        var agentID: String?

        @Option(help: "Only this model's totals, by the model name as recorded (zeros when unknown).")
        var model: String?

        @Flag(name: .customLong("all-time"), help: "Ignore the usage window: count every event.")
        var allTime = false

        func validate() throws {
            if [thread != nil, agentID != nil, model != nil].filter({ $0 }).count > 1 {
                throw ValidationError("give at most one of THREAD, --agent, --model")
            }
        }

        func run() throws {
            let scope: UsageScope = allTime ? .allTime : .currentWindow
            try options.withExistingAnyLedger { ledger in
                if let thread {
                    guard let budget = try ledger.usage(thread) else {
                        throw Output.notFound(thread, json: options.json)
                    }
                    Output.emit(budget.json, text: Output.text(budget), asJSON: options.json)
                } else if let agentID {
                    let totals = try ledger.usage(agent: agentID, scope: scope)
                    Output.emit(
                        totals.json(key: ("agentId", .string(agentID))), text: "agent \(agentID): " + Output.text(totals),
                        asJSON: options.json)
                } else if let model {
                    let totals = try ledger.usage(model: model, scope: scope)
                    Output.emit(
                        totals.json(key: ("model", .string(model))), text: "model \(model): " + Output.text(totals),
                        asJSON: options.json)
                } else {
                    let overview = try ledger.usageOverview(scope)
                    Output.emit(overview.json, text: Output.text(overview), asJSON: options.json)
                }
            }
        }
    }

    struct Reset: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a new usage window: the overview counts from now on (no event is deleted).",
            discussion: "Thread budgets are not affected; `budget-ledger reset THREAD` starts a thread's budget window.")

        @OptionGroup var options: LedgerOptions

        func run() throws {
            try options.withAnyLedger { ledger in
                try ledger.resetUsageWindow()
                let message = "usage window reset: the overview counts from now on; no events were deleted"
                Output.emit(WriteAnswer.usageWindowReset, text: message, asJSON: options.json)
            }
        }
    }
}
