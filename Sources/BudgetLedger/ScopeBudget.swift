/// What a scope budget covers: the whole fleet, or one org, user, agent or model.
///
/// Written `global`, `org:ID`, `user:ID`, `agent:ID` or `model:NAME`. A call falls under
/// `global`, its metadata's `org_id` and `user_id`, its agent and its model (normalised by
/// `ModelName.normalized`, as prices and rollups compare models).
public struct BudgetScope: Sendable, Hashable, Comparable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        case global, org, user, agent, model
    }

    public let kind: Kind
    /// `global`, or the kind and the id: how the scope is written and stored.
    public let description: String

    /// The org, user, agent or (normalised) model; empty for `global`.
    /// (Dropped by Unicode scalar: the colon and an id's leading combining mark are one Character.)
    public var id: String {
        kind == .global ? "" : String(String.UnicodeScalarView(description.unicodeScalars.dropFirst(kind.rawValue.count + 1)))
    }

    public static let global = BudgetScope(kind: .global, id: "")

    /// The scope of `kind` named `id` (a model name is normalised).
    ///
    /// - Throws: `LedgerError.invalidInput` naming `field` for an empty, oversized or malformed id.
    public init(kind: Kind, id: String, field: String = "scope") throws {
        switch kind {
        case .global:
            guard id.isEmpty else {
                throw LedgerError.invalidInput(field: field, reason: "global takes no id (write it as global)")
            }
            self.init(kind: .global, id: "")
        case .model:
            try Validate.identifier(id, field: field)
            let normalized = ModelName.normalized(id)
            guard !normalized.isEmpty else {
                throw LedgerError.invalidInput(field: field, reason: "model: needs a model name")
            }
            self.init(kind: .model, id: normalized)
        case .org, .user, .agent:
            try Validate.identifier(id, field: field)
            self.init(kind: kind, id: id)
        }
    }

    /// Parses `global`, `org:ID`, `user:ID`, `agent:ID` or `model:NAME`.
    ///
    /// - Throws: `LedgerError.invalidInput` naming `field`, with the forms it accepts.
    public init(parsing text: String, field: String = "scope") throws {
        if text == "global" {
            self = .global
            return
        }
        // Split by Unicode scalars, not Characters: an id that starts with a combining mark or
        // an emoji modifier makes one Character of the colon and itself (":🏻"), which a
        // Character search would never find (the REST fuzzer found it).
        let scalars = text.unicodeScalars
        guard let colon = scalars.firstIndex(of: ":"),
            let kind = Kind(rawValue: String(scalars[..<colon])), kind != .global
        else {
            throw LedgerError.invalidInput(
                field: field, reason: "must be global, org:ID, user:ID, agent:ID or model:NAME (got \(text.debugDescription))")
        }
        let id = String(scalars[scalars.index(after: colon)...])
        guard !id.isEmpty else {
            throw LedgerError.invalidInput(field: field, reason: "\(kind.rawValue): needs an id after the colon")
        }
        try self.init(kind: kind, id: id, field: field)
    }

    /// A scope as `scope_budgets` stores it, whose form the schema's insert check has enforced:
    /// split at the first colon, without validating the id again (listing 100,000 budgets).
    package init(stored text: String) throws {
        // 100,000 of these per listing: the kind is read from the first byte, and the text is
        // kept as it is, with no id string split off (`id` is computed when asked for).
        let kind: Kind? =
            switch text.utf8.first {
            case UInt8(ascii: "g"): text == "global" ? .global : nil
            case UInt8(ascii: "o"): text.utf8.starts(with: "org:".utf8) ? .org : nil
            case UInt8(ascii: "u"): text.utf8.starts(with: "user:".utf8) ? .user : nil
            case UInt8(ascii: "a"): text.utf8.starts(with: "agent:".utf8) ? .agent : nil
            case UInt8(ascii: "m"): text.utf8.starts(with: "model:".utf8) ? .model : nil
            default: nil
            }
        guard let kind else {
            throw LedgerError.conflict("scope_budgets holds a malformed scope \(text.debugDescription)")
        }
        self.kind = kind
        description = text
    }

    private init(kind: Kind, id: String) {
        self.kind = kind
        description = kind == .global ? "global" : "\(kind.rawValue):\(id)"
    }

    public static func < (left: BudgetScope, right: BudgetScope) -> Bool { left.description < right.description }

    /// The scopes a call with these fields falls under, `global` first; the same five
    /// candidates as the consume trigger of migration 0010.
    package static func candidates(agentID: String?, model: String?, organizationID: String?, userID: String?) -> [String] {
        var scopes = ["global"]
        if let organizationID { scopes.append("org:" + organizationID) }
        if let userID { scopes.append("user:" + userID) }
        if let agentID { scopes.append("agent:" + agentID) }
        if let model { scopes.append("model:" + ModelName.normalized(model)) }
        return scopes
    }
}

/// The calendar period of a scope budget's windows, in UTC.
///
/// A window is derived from a time alone, with no job: a new day, ISO week (from Monday) or
/// month starts at zero exactly at its boundary. The same arithmetic is written in SQL in
/// migration 0010; `ScopeBudgetTests` proves the two agree.
public enum BudgetPeriod: String, Sendable, CaseIterable {
    /// One window for all time.
    case none
    case day, week, month

    private static let microsecondsPerDay: Int64 = 86_400_000_000

    /// The window holding `microseconds` (UTC since 1970): its start, and its end (exclusive;
    /// nil for `none`).
    public func window(containing microseconds: Int64) -> BudgetWindow {
        let day = microseconds.floorDivided(by: Self.microsecondsPerDay)
        switch self {
        case .none:
            return BudgetWindow(startMicroseconds: 0, endMicroseconds: nil)
        case .day:
            return BudgetWindow(
                startMicroseconds: day * Self.microsecondsPerDay, endMicroseconds: (day + 1) * Self.microsecondsPerDay)
        case .week:
            // 1970-01-01 was a Thursday: day + 3 counts from a Monday.
            let monday = day - (day + 3).floorModulo(7)
            return BudgetWindow(
                startMicroseconds: monday * Self.microsecondsPerDay,
                endMicroseconds: (monday + 7) * Self.microsecondsPerDay)
        case .month:
            let (year, month, _) = CivilDate.from(daysSinceEpoch: day)
            let start = CivilDate.daysSinceEpoch(year: year, month: month, day: 1)
            let next = month == 12
                ? CivilDate.daysSinceEpoch(year: year + 1, month: 1, day: 1)
                : CivilDate.daysSinceEpoch(year: year, month: month + 1, day: 1)
            return BudgetWindow(
                startMicroseconds: start * Self.microsecondsPerDay, endMicroseconds: next * Self.microsecondsPerDay)
        }
    }
}

/// One window of a scope budget: [start, end) in UTC microseconds; `end` nil for all time.
public struct BudgetWindow: Sendable, Hashable {
    public let startMicroseconds: Int64
    public let endMicroseconds: Int64?

    public init(startMicroseconds: Int64, endMicroseconds: Int64?) {
        self.startMicroseconds = startMicroseconds
        self.endMicroseconds = endMicroseconds
    }
}

/// A scope budget and its current window: what it allows, what the window has spent, what live
/// holds under the scope keep back, and what remains.
public struct ScopeBudget: Sendable, Equatable {
    public let scope: BudgetScope
    public let period: BudgetPeriod
    /// The max in tokens; nil when the budget has none.
    public let maxTokens: Int64?
    /// The max in nano-dollars (10^-9 USD); nil when the budget has none.
    public let maxNanodollars: Int64?
    public let window: BudgetWindow
    public let spentTokens: Int64
    /// The cost of the window's priced calls.
    public let spentNanodollars: Int64
    public let requestCount: Int64
    /// Calls of the window whose model had no price (their cost is not in `spentNanodollars`).
    public let unpricedRequests: Int64
    public let heldTokens: Int64
    /// The most the live holds can cost (unpriced holds count 0 here; they cannot be made under a dollar budget).
    public let heldNanodollars: Int64
    /// The event that set the budget's current figures.
    public let setEventID: Int64

    /// Tokens left after the spend and the holds; nil without a token max.
    public var remainingTokens: Int64? {
        maxTokens.map { max(0, $0.saturatingSubtract(spentTokens).saturatingSubtract(heldTokens)) }
    }

    /// Nano-dollars left after the spend and the holds; nil without a dollar max.
    public var remainingNanodollars: Int64? {
        maxNanodollars.map { max(0, $0.saturatingSubtract(spentNanodollars).saturatingSubtract(heldNanodollars)) }
    }

    /// The higher of the two units' percent used (0 for a max of 0, as a thread's).
    public var percentUsed: Double {
        func percent(_ used: Int64, _ maximum: Int64?) -> Double {
            guard let maximum, maximum > 0 else { return 0 }
            return Double(used) / Double(maximum) * 100
        }
        return max(percent(spentTokens, maxTokens), percent(spentNanodollars, maxNanodollars))
    }

    /// Whether nothing more fits in one of its units.
    public var isExhausted: Bool {
        (maxTokens.map { spentTokens.saturatingAdd(heldTokens) >= $0 } ?? false)
            || (maxNanodollars.map { spentNanodollars.saturatingAdd(heldNanodollars) >= $0 } ?? false)
    }
}

/// A threshold that a consume made a scope window cross (once per window).
public struct ScopeThresholdCrossing: Sendable, Equatable {
    public let scope: BudgetScope
    public let window: BudgetWindow
    public let thresholdPercent: Int
    public let severity: String
    /// The window's spend after the consume.
    public let tokensUsed: Int64
    public let nanodollarsUsed: Int64
    public let maxTokens: Int64?
    public let maxNanodollars: Int64?
}

/// Proleptic Gregorian dates from days since 1970-01-01 and back (Howard Hinnant's algorithms,
/// http://howardhinnant.github.io/date_algorithms.html), for month windows without Foundation's
/// calendars.
enum CivilDate {
    static func from(daysSinceEpoch days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = z.floorDivided(by: 146_097)
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    static func daysSinceEpoch(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = y.floorDivided(by: 400)
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}

extension Int64 {
    /// Division rounding toward negative infinity.
    func floorDivided(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }

    /// The remainder of `floorDivided(by:)`, never negative for a positive divisor.
    func floorModulo(_ divisor: Int64) -> Int64 { self - floorDivided(by: divisor) * divisor }
}
