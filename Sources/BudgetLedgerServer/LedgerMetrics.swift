import BudgetLedger

/// The business metrics of `/metrics`: what the ledger holds, read at scrape time (so they count
/// every process writing the file, not only this server's requests), in Prometheus text format.
///
/// Label cardinality is bounded: at most `seriesPerDimensionMax` models and as many agents get a
/// series of their own (those with the most tokens); the rest are summed under the label value
/// `(other)`, so the series of a dimension always add up to the total. Usage recorded without a
/// model or agent is labelled `(none)`.
enum LedgerMetrics {
    /// The most models (and agents) with series of their own.
    static let seriesPerDimensionMax = 100
    static let otherLabel = "(other)"
    static let noneLabel = "(none)"

    /// The exposition of `overview` (all time) and `gauges`.
    static func exposition(overview: UsageOverview, gauges: LedgerGauges) -> String {
        var text = ""
        let models = capped(overview.byModel.map { (label: $0.model, totals: $0.totals) })
        let agents = capped(overview.byAgent.map { (label: $0.agentID, totals: $0.totals) })
        for (dimension, rows) in [("model", models), ("agent", agents)] {
            text += family(
                "budget_ledger_\(dimension)_tokens", "Tokens recorded (all time) by \(dimension), read from the ledger.",
                rows.map { ([(dimension, $0.label)], String($0.totals.totalTokens)) })
            text += family(
                "budget_ledger_\(dimension)_requests", "Consumes recorded (all time) by \(dimension).",
                rows.map { ([(dimension, $0.label)], String($0.totals.requestCount)) })
            text += family(
                "budget_ledger_\(dimension)_cost_usd",
                "Cost in USD of the priced consumes (all time) by \(dimension); unpriced ones are counted apart, never as $0.",
                rows.map { ([(dimension, $0.label)], Money.decimalString(nanodollars: $0.totals.costNanodollars)) })
            text += family(
                "budget_ledger_\(dimension)_unpriced_requests", "Consumes whose model had no price (all time) by \(dimension).",
                rows.map { ([(dimension, $0.label)], String($0.totals.unpricedRequests)) })
            text += family(
                "budget_ledger_\(dimension)_unpriced_tokens",
                "Tokens of the consumes whose model had no price (all time) by \(dimension): the usage cost_usd leaves out.",
                rows.map { ([(dimension, $0.label)], String($0.totals.unpricedTokens)) })
        }
        let single: [(String, String, Int64)] = [
            ("budget_ledger_threads_open", "Threads open now.", gauges.openThreads),
            (
                "budget_ledger_threads_near_max",
                "Open threads at \(LedgerGauges.nearMaxPercent) % of their max or more, not yet exhausted.",
                gauges.threadsNearMax
            ),
            ("budget_ledger_threads_at_or_over_max", "Open threads whose spent tokens reach their max.", gauges.threadsAtOrOverMax),
            ("budget_ledger_live_holds", "Reservations live now.", gauges.liveHolds),
            ("budget_ledger_held_tokens", "Tokens held by live reservations.", gauges.heldTokens),
            (
                "budget_ledger_unfolded_consumes",
                "Consume events not yet folded into the usage rollups (the fold's lag, in events).",
                gauges.unfoldedConsumes
            ),
        ]
        for (name, help, value) in single {
            text += family(name, help, [([], String(value))])
        }
        text += family(
            "budget_ledger_threads_past_threshold",
            "Open threads past each threshold (percent) in their current window: the threshold crossings standing.",
            gauges.threadsPastThreshold.map { ([("threshold", String($0.percent))], String($0.threads)) })
        return text
    }

    /// The first `seriesPerDimensionMax` rows (the overview sorts by tokens, most first) with
    /// their labels, and one `(other)` row summing the rest.
    static func capped(_ rows: [(label: String?, totals: UsageTotals)]) -> [(label: String, totals: UsageTotals)] {
        var kept = rows.prefix(seriesPerDimensionMax).map { (label: $0.label ?? noneLabel, totals: $0.totals) }
        let rest = rows.dropFirst(seriesPerDimensionMax)
        guard !rest.isEmpty else { return kept }
        var other = UsageTotals()
        for row in rest {
            other.promptTokens = other.promptTokens.saturatingAdd(row.totals.promptTokens)
            other.completionTokens = other.completionTokens.saturatingAdd(row.totals.completionTokens)
            other.requestCount = other.requestCount.saturatingAdd(row.totals.requestCount)
            other.costNanodollars = other.costNanodollars.saturatingAdd(row.totals.costNanodollars)
            other.unpricedRequests = other.unpricedRequests.saturatingAdd(row.totals.unpricedRequests)
            other.unpricedTokens = other.unpricedTokens.saturatingAdd(row.totals.unpricedTokens)
        }
        kept.append((label: otherLabel, totals: other))
        return kept
    }

    /// One gauge family: HELP, TYPE and a sample per row (none when `samples` is empty).
    static func family(_ name: String, _ help: String, _ samples: [([(String, String)], String)]) -> String {
        guard !samples.isEmpty else { return "" }
        var text = "# HELP \(name) \(help)\n# TYPE \(name) gauge\n"
        for (labels, value) in samples {
            let rendered = labels.map { "\($0.0)=\"\(escapedLabelValue($0.1))\"" }.joined(separator: ",")
            text += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(rendered)} \(value)\n"
        }
        return text
    }

    /// A label value as the text format writes it: backslash, double quote and line feed escaped.
    static func escapedLabelValue(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
