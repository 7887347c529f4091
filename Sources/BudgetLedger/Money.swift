/// Exact money: integer nano-dollars (10⁻⁹ USD), rendered as plain decimals only at the edge.
public enum Money {
    /// Nano-dollars in one dollar.
    public static let nanodollarsPerDollar: Int64 = 1_000_000_000

    /// `nanodollars` as a plain decimal number of dollars: `18`, `12.5`, `0.00045`, never `4.5E-4`.
    public static func decimalString(nanodollars: Int64) -> String {
        let negative = nanodollars < 0
        let magnitude = nanodollars.magnitude
        let whole = magnitude / UInt64(nanodollarsPerDollar)
        let fraction = magnitude % UInt64(nanodollarsPerDollar)
        var text = (negative ? "-" : "") + String(whole)
        if fraction != 0 {
            var digits = String(fraction)
            digits = String(repeating: "0", count: 9 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            text += "." + digits
        }
        return text
    }

    /// Parses a price in USD per million tokens (`2.5`, `0.15`, `15`) into nano-dollars per token.
    ///
    /// One nano-dollar per token is $0.001 per million tokens, so at most three decimals are
    /// accepted: anything finer would not be exact.
    ///
    /// - Throws: `LedgerError.invalidInput` naming `field` for anything else.
    public static func nanodollarsPerToken(fromUSDPerMillion text: String, field: String) throws -> Int64 {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let wholePart = parts[0]
        let fractionPart = parts.count > 1 ? parts[1] : ""
        let isDigits = { (part: Substring) in part.allSatisfy { $0.isASCII && $0.isNumber } }
        guard !wholePart.isEmpty, isDigits(wholePart), isDigits(fractionPart), parts.count == 1 || !fractionPart.isEmpty
        else {
            throw LedgerError.invalidInput(
                field: field, reason: "\"\(text)\" is not a plain decimal number of USD per million tokens")
        }
        guard fractionPart.count <= 3 else {
            throw LedgerError.invalidInput(
                field: field,
                reason: "\(text) has more than 3 decimals; prices are kept exactly in nano-dollars per token "
                    + "($0.001 per million tokens)")
        }
        let scaled = String(wholePart) + fractionPart + String(repeating: "0", count: 3 - fractionPart.count)
        guard let nanos = Int64(scaled), nanos <= LedgerLimits.priceNanodollarsPerTokenMax else {
            throw LedgerError.invalidInput(
                field: field,
                reason: "\(text) USD per million tokens is above the limit of "
                    + "\(usdPerMillion(nanodollarsPerToken: LedgerLimits.priceNanodollarsPerTokenMax)) USD per million tokens")
        }
        return nanos
    }

    /// Parses an amount of USD (`500`, `500.00`, `0.000000001`) into nano-dollars, exactly: at
    /// most 9 decimals (one nano-dollar), no sign, no exponent, no floating point.
    ///
    /// - Throws: `LedgerError.invalidInput` naming `field` for anything else, or an amount over
    ///   `maximum` nano-dollars.
    public static func nanodollars(fromUSD text: String, field: String, maximum: Int64 = .max) throws -> Int64 {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let wholePart = parts[0]
        let fractionPart = parts.count > 1 ? parts[1] : ""
        let isDigits = { (part: Substring) in part.allSatisfy { $0.isASCII && $0.isNumber } }
        guard !wholePart.isEmpty, isDigits(wholePart), isDigits(fractionPart), parts.count == 1 || !fractionPart.isEmpty
        else {
            throw LedgerError.invalidInput(field: field, reason: "\"\(text)\" is not a plain decimal number of USD, e.g. 500 or 12.50")
        }
        guard fractionPart.count <= 9 else {
            throw LedgerError.invalidInput(
                field: field, reason: "\(text) has more than 9 decimals; amounts are kept exactly in nano-dollars (10^-9 USD)")
        }
        let digits = String(wholePart.drop { $0 == "0" }) + fractionPart + String(repeating: "0", count: 9 - fractionPart.count)
        let tooLarge = LedgerError.invalidInput(
            field: field, reason: "\(text) USD is above the limit of \(decimalString(nanodollars: maximum)) USD")
        // 19 digits may still fit Int64; more never do.
        guard digits.count <= 19 else { throw tooLarge }
        guard let nanos = Int64(digits), nanos <= maximum else { throw tooLarge }
        return nanos
    }

    /// A price in nano-dollars per token as USD per million tokens: 2500 → `2.5`.
    public static func usdPerMillion(nanodollarsPerToken: Int64) -> String {
        // nano-dollars per token × 10⁶ tokens = dollars × 10⁹ / 10³.
        decimalString(nanodollars: nanodollarsPerToken * 1_000_000)
    }

    /// The cost of a call, or nil when it overflows 64 bits (over $9.2 billion).
    package static func cost(promptTokens: Int64, completionTokens: Int64, price: ModelPrice) -> Int64? {
        let (prompt, promptOverflow) = promptTokens.multipliedReportingOverflow(by: price.promptNanodollarsPerToken)
        let (completion, completionOverflow) = completionTokens.multipliedReportingOverflow(by: price.completionNanodollarsPerToken)
        let (sum, sumOverflow) = prompt.addingReportingOverflow(completion)
        return promptOverflow || completionOverflow || sumOverflow ? nil : sum
    }
}

/// One row of the price table.
public struct ModelPrice: Sendable, Equatable {
    /// The normalised model name the row prices (`ModelName.normalized`), or a pattern: a
    /// literal and one trailing `*`. The exact name wins, then the longest literal.
    public let modelPattern: String
    public let promptNanodollarsPerToken: Int64
    public let completionNanodollarsPerToken: Int64
    /// UTC microseconds from which the price holds.
    public let effectiveFromMicroseconds: Int64
    /// Where the price came from.
    public let source: String

    package init(
        modelPattern: String, promptNanodollarsPerToken: Int64, completionNanodollarsPerToken: Int64,
        effectiveFromMicroseconds: Int64, source: String
    ) {
        self.modelPattern = modelPattern
        self.promptNanodollarsPerToken = promptNanodollarsPerToken
        self.completionNanodollarsPerToken = completionNanodollarsPerToken
        self.effectiveFromMicroseconds = effectiveFromMicroseconds
        self.source = source
    }
}

extension ModelPrice {
    /// Whether the row names one model exactly or is a pattern.
    public var match: PriceMatch { PriceMatch(pattern: modelPattern) }

    /// The most a hold of `tokens` can cost for `model` at this price: every token at the higher
    /// of the two rates, so that the hold covers the call however it splits.
    ///
    /// - Throws: `LedgerError.invalidInput` (field `tokens`) when that is above
    ///   `LedgerLimits.costNanodollarsPerCallMax` (or 64 bits).
    package func mostCost(ofHeldTokens tokens: Int64, model: String) throws -> Int64 {
        let rate = max(promptNanodollarsPerToken, completionNanodollarsPerToken)
        let (cost, overflow) = tokens.multipliedReportingOverflow(by: rate)
        guard !overflow, cost <= LedgerLimits.costNanodollarsPerCallMax else {
            throw LedgerError.invalidInput(
                field: "tokens",
                reason: "the most this hold can cost at \(model)'s price is above the limit of "
                    + "\(Money.decimalString(nanodollars: LedgerLimits.costNanodollarsPerCallMax)) USD per call")
        }
        return cost
    }

    /// Whether this row is the latest of its name or pattern that has started by `now`.
    public func isInForce(among prices: [ModelPrice], at now: Int64) -> Bool {
        guard effectiveFromMicroseconds <= now else { return false }
        return !prices.contains { other in
            other.modelPattern == modelPattern && other.effectiveFromMicroseconds <= now
                && other.effectiveFromMicroseconds > effectiveFromMicroseconds
        }
    }
}
