import BudgetLedger
import Foundation
import LedgerSQLite

/// The reference's metric names for one consume per transaction at a synchronous level.
private func referencePrefix(_ synchronous: Ledger.Durability) -> String {
    synchronous == .full ? "c1_full" : "c1_normal"
}

extension BenchmarkContext {
    /// (1) checkAndConsume from one caller on a fresh ledger, at NORMAL and at FULL.
    func measureSingleCaller() throws {
        for synchronous in [Ledger.Durability.normal, .full] {
            log("(1) checkAndConsume, 1 caller, \(synchronous.label)")
            let stats = try measureOneCaller(
                fileName: "single-\(synchronous.rawValue.lowercased()).db", synchronous: synchronous, checked: true)
            let key = "single.\(synchronous.rawValue.lowercased())"
            let prefix = referencePrefix(synchronous)
            let latency = LatencySummary(nanoseconds: stats.latenciesNanoseconds)
            let title = "checkAndConsume, 1 caller, \(synchronous.label)"
            report.add(
                "1", "\(key).txn_per_s", "\(title): throughput", Double(stats.accepted) / stats.elapsedSeconds,
                .transactionsPerSecond, reference: .figure("\(prefix).tps"))
            report.addLatencies("1", key: key, latency, referencePrefix: prefix) { "\(title): \($0)" }
            addCPUPerCall("1", key: key, title: title, stats)
        }
    }

    /// (2) The ledger has no batch call, so: plain `consume` (no budget check) from one caller at FULL.
    func measurePlainConsume() throws {
        log("(2) consume (unchecked), 1 caller, FULL — no batch API exists")
        let stats = try measureOneCaller(fileName: "plain-full.db", synchronous: .full, checked: false)
        let rate = Double(stats.accepted) / stats.elapsedSeconds
        let latency = LatencySummary(nanoseconds: stats.latenciesNanoseconds)
        let title = "consume (unchecked), 1 caller, FULL"
        report.add(
            "2", "plain.full.txn_per_s", "\(title): throughput", rate, .transactionsPerSecond,
            reference: .figure("c1_full.tps"))
        report.addLatencies("2", key: "plain.full", latency, referencePrefix: "c1_full", percentiles: ["p50"]) {
            "\(title): \($0)"
        }
        addCPUPerCall("2", key: "plain.full", title: title, stats)
        report.add(
            "2", "plain.full.vs_batch", "\(title) vs C batch of 100/txn (events/s)", rate, .eventsPerSecond,
            reference: .figure("c2_full.eps"))
    }

    /// (8) checkAndConsume at FULL from one caller with three scope budgets applying to each call
    /// (global tokens by month, its model's tokens by day, its agent's tokens by ISO week; 16 of 17
    /// calls name an agent), beside the same workload with none, alternating twice in one run so
    /// that the ratio compares like with like on a noisy machine.
    func measureScopeBudgets() throws {
        var rates: [Bool: [Double]] = [:]
        for round in 0..<2 {
            for withBudgets in [false, true] {
                log("(8) checkAndConsume, 1 caller, FULL, \(withBudgets ? "3 scope budgets" : "no scope budget") (round \(round + 1))")
                let stats = try measureOneCaller(
                    fileName: "scopes-\(withBudgets)-\(round).db", synchronous: .full, checked: true) { ledger in
                        guard withBudgets else { return }
                        try ledger.setBudget(.global, period: .month, maxTokens: WorkloadNames.unlimitedTokens)
                        for model in WorkloadNames.models {
                            try ledger.setBudget(
                                BudgetScope(kind: .model, id: model), period: .day, maxTokens: WorkloadNames.unlimitedTokens)
                        }
                        for agent in WorkloadNames.agentIDs {
                            try ledger.setBudget(
                                BudgetScope(kind: .agent, id: agent), period: .week, maxTokens: WorkloadNames.unlimitedTokens)
                        }
                    }
                rates[withBudgets, default: []].append(Double(stats.accepted) / stats.elapsedSeconds)
            }
        }
        let without = (rates[false] ?? []).reduce(0, +) / 2
        let with = (rates[true] ?? []).reduce(0, +) / 2
        report.add("8", "scopes.none.txn_per_s", "checkAndConsume, 1 caller, FULL, no scope budget", without, .transactionsPerSecond)
        report.add("8", "scopes.three.txn_per_s", "checkAndConsume, 1 caller, FULL, 3 scope budgets", with, .transactionsPerSecond)
        report.add("8", "scopes.ratio", "3 scope budgets ÷ none (goal ≥ 0.8)", with / without, .ratio)
        try measureManyScopeBudgets()
    }

    /// (8) Listing 100,000 scope budgets with their current windows: the library's `budgets()`
    /// and the `budget_windows` view. Both read `scope_budgets` and the live holds only, never the
    /// events, so the ledger's size does not enter (the budgets are inserted as events in one
    /// transaction, through the triggers, as a writer using plain SQL would).
    private func measureManyScopeBudgets() throws {
        let count = 100_000
        log("(8) listing \(count) scope budgets")
        let path = try createLedger(named: "many-scopes.db")
        defer { if !options.keepFiles { removeLedgerFiles(at: path) } }
        do {
            let connection = try Connection(path: path)
            defer { connection.close() }
            try connection.execute(sql: """
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < \(count))
                INSERT INTO events (timestamp_us, kind, scope, period, max_tokens, max_cost_nanos)
                SELECT CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER), 'budget',
                       CASE i % 4 WHEN 0 THEN 'org:o' WHEN 1 THEN 'user:u' WHEN 2 THEN 'agent:a' ELSE 'model:m' END || i,
                       CASE i % 3 WHEN 0 THEN 'day' WHEN 1 THEN 'month' ELSE 'none' END, 1000000, 5000000
                FROM n
                """)
        }
        let ledger = try Ledger(path: path)
        defer { ledger.close() }
        _ = try ledger.budgets()
        let (listed, librarySeconds) = try MonotonicClock.timed { try ledger.budgets() }
        let connection = try Connection(path: path)
        defer { connection.close() }
        let (rows, viewSeconds) = try MonotonicClock.timed {
            try connection.prepare("SELECT count(*), max(percent_used) FROM budget_windows").fetchOne { try $0[0] as Int64 }
        }
        report.add("8", "scopes.list_100k_ms", "budgets() with \(listed.count) scope budgets (goal ≤ 50)", librarySeconds * 1_000, .milliseconds)
        report.add("8", "scopes.view_100k_ms", "budget_windows view, \(rows ?? 0) rows (goal ≤ 50)", viewSeconds * 1_000, .milliseconds)
    }

    /// One caller, one fresh ledger (prepared by `setUp`), `--seconds` of calls; then a verify of the file.
    private func measureOneCaller(
        fileName: String, synchronous: Ledger.Durability, checked: Bool, setUp: (Ledger) throws -> Void = { _ in }
    ) throws -> CallerStats {
        let path = try createLedger(named: fileName)
        defer { if !options.keepFiles { removeLedgerFiles(at: path) } }
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: synchronous))
        defer { ledger.close() }
        try setUp(ledger)
        var workload = Workload(seed: 0x5EED_0001, idempotencyKeys: options.idempotencyKeys)
        let deadline = MonotonicClock.deadline(afterSeconds: options.secondsPerMeasurement)
        let stats = runCalls(until: deadline, workload: &workload, expectedCalls: expectedCallsPerCaller) { call in
            if checked {
                try ledger.checkAndConsume(call)
            } else {
                try ledger.consume(call)
            }
        }
        let what = "\(checked ? "checkAndConsume" : "consume") at \(synchronous.label)"
        checkFailures(stats, in: what)
        verify(path: path, after: "\(what) (\(stats.accepted) calls)", timeoutSeconds: options.verifyTimeoutSeconds)
        return stats
    }
}
