import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Events: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The billing feed: events after an id, in id order (remember lastId to resume).",
            discussion: "In text, one line per event says what it did; a page of several is an aligned table.")

        @OptionGroup var options: LedgerOptions

        @Option(parsing: .unconditional, help: "Return events with a greater id (0: from the start).")
        var after: Int64 = 0

        @Option(parsing: .unconditional, help: "At most this many events (1…10000).")
        var limit: Int = 1_000

        func run() throws {
            try options.withExistingAnyLedger { ledger in
                let page = try ledger.events(after: after, limit: limit)
                let json = page.json
                Output.emit(json, text: Output.text(page), asJSON: options.json)
            }
        }
    }
}

extension Output {
    /// A feed page: `ID TIME KIND THREAD WHAT` per event (a table with a header when there are
    /// several), then `lastId N`.
    static func text(_ page: EventPage) -> String {
        let rows = page.events.map { event in
            [
                String(event.id), Timestamps.iso8601(microseconds: event.timestampMicroseconds), event.kind,
                event.threadID ?? "-", description(of: event),
            ]
        }
        let header = rows.count > 1 ? ["id", "time", "kind", "thread", "what"] : nil
        return (table(rows, header: header, rightAligned: [0]) + ["lastId \(page.lastID)"]).joined(separator: "\n")
    }

    /// What an event did, in words: `700+60 tokens gpt-4o $0.00235`, `max 1000`,
    /// `75% (warning) at 760 of 1000 tokens`, `90 tokens until 2026-…`.
    static func description(of event: LedgerEvent) -> String {
        switch event.kind {
        case "consume": return consumeDescription(event)
        case "open": return "opened" + (event.maxTokens.map { " with max \($0)" } ?? "")
        case "limit": return event.maxTokens.map { "max \($0)" } ?? "limit changed"
        case "configure": return event.maxTokens.map { "default max \($0)" } ?? "configured"
        case "reset": return "budget window reset"
        case "cleanup": return "thread ended"
        case "usage_reset": return "usage window reset"
        case "threshold": return thresholdDescription(event)
        case "refusal":
            // The first refused call of the thread's (or the scope window's) window.
            let used = event.tokensUsed.map { " at \($0)" + (event.maxTokens.map { " of \(count($0, "token"))" } ?? " tokens") }
            return "refused" + (event.scope.map { " by \($0)" } ?? "") + (used ?? "")
        case "reserve":
            let tokens = event.heldTokens.map { count($0, "token") } ?? "tokens"
            return tokens + (event.expiresAtMicroseconds.map { " until " + Timestamps.iso8601(microseconds: $0) } ?? "")
        case "release": return "reservation \(event.reservationID.map(String.init) ?? "?") released"
        case "expire": return "reservation \(event.reservationID.map(String.init) ?? "?") expired"
        default: return "\(event.promptTokens)+\(event.completionTokens) tokens"
        }
    }

    private static func consumeDescription(_ event: LedgerEvent) -> String {
        var words = ["\(event.promptTokens)+\(event.completionTokens) tokens"]
        if let model = event.usage.model {
            words.append(model)
            words.append(event.costNanodollars.map { "$" + Money.decimalString(nanodollars: $0) } ?? "unpriced")
        }
        if let agent = event.usage.agentID { words.append("agent \(agent)") }
        if let reservation = event.reservationID { words.append("settles reservation \(reservation)") }
        return words.joined(separator: " ")
    }

    private static func thresholdDescription(_ event: LedgerEvent) -> String {
        var text = "\(event.thresholdPercent.map(String.init) ?? "?")%"
        if let severity = event.severity { text += " (\(severity))" }
        if let used = event.tokensUsed, let max = event.maxTokens { text += " at \(used) of \(count(max, "token"))" }
        return text
    }
}
