import Foundation

/// The unit a figure is in; it says which way is better, too.
enum FigureUnit: String, Sendable {
    case transactionsPerSecond = "txn/s"
    case eventsPerSecond = "events/s"
    case rowsPerSecond = "rows/s"
    case microseconds = "µs"
    case milliseconds = "ms"
    case megabytes = "MiB"
    case ratio = "×"
    case count = "count"
}

/// The reference figure a row compares with: one median (times `scale`, to convert its unit to
/// ours), or the ratio of two medians.
struct ReferenceLink: Sendable {
    let key: String
    let denominatorKey: String?
    let scale: Double

    static func figure(_ key: String, scale: Double = 1) -> ReferenceLink {
        ReferenceLink(key: key, denominatorKey: nil, scale: scale)
    }

    static func ratio(_ key: String, over denominatorKey: String) -> ReferenceLink {
        ReferenceLink(key: key, denominatorKey: denominatorKey, scale: 1)
    }

    var description: String {
        denominatorKey.map { "\(key) ÷ \($0)" } ?? key
    }
}

/// One measured figure.
struct ResultRow: Sendable {
    /// The measurement's number in the brief: 1 … 7.
    let section: String
    /// A stable machine name, e.g. `single.full.txn_per_s`.
    let key: String
    let label: String
    let value: Double
    let unit: FigureUnit
    let reference: ReferenceLink?
}

/// How a check came out. `unfinished`: it could not run to the end in its time (a verify
/// cut off by its timeout), which says nothing either way.
enum CheckOutcome: String, Sendable {
    case passed = "OK"
    case failed = "FAIL"
    case unfinished = "N/A"
}

/// One check: a verify, the overshoot check, failed calls.
struct CheckRow: Sendable {
    let name: String
    let outcome: CheckOutcome
    let detail: String
}

/// Collects the figures and checks as the run goes, and prints them at the end.
final class Report {
    private(set) var rows: [ResultRow] = []
    private(set) var checks: [CheckRow] = []

    /// Records a figure and shows it at once on stderr.
    func add(
        _ section: String, _ key: String, _ label: String, _ value: Double, _ unit: FigureUnit,
        reference: ReferenceLink? = nil
    ) {
        rows.append(ResultRow(section: section, key: key, label: label, value: value, unit: unit, reference: reference))
        log("  \(label): \(Self.format(value)) \(unit.rawValue)")
    }

    /// Records percentiles of `latency` (`p50`, `p99`, `max`) as rows keyed `<key>.<name>_us`,
    /// beside the reference's `<referencePrefix>.<name>_us` when a prefix is given.
    func addLatencies(
        _ section: String, key: String, _ latency: LatencySummary, referencePrefix: String?,
        percentiles: [String] = ["p50", "p99", "max"], label: (String) -> String
    ) {
        let values = ["p50": latency.p50Microseconds, "p99": latency.p99Microseconds, "max": latency.maxMicroseconds]
        for name in percentiles {
            guard let value = values[name] else { preconditionFailure("no percentile \(name)") }
            add(
                section, "\(key).\(name)_us", label(name), value, .microseconds,
                reference: referencePrefix.map { .figure("\($0).\(name)_us") })
        }
    }

    func check(_ name: String, passed: Bool, detail: String) {
        check(name, outcome: passed ? .passed : .failed, detail: detail)
    }

    func check(_ name: String, outcome: CheckOutcome, detail: String) {
        checks.append(CheckRow(name: name, outcome: outcome, detail: detail))
        log("  check \(Self.padded(outcome)) \(name): \(detail)")
    }

    private static func padded(_ outcome: CheckOutcome) -> String {
        outcome.rawValue.padding(toLength: 4, withPad: " ", startingAt: 0)
    }

    /// The rows in section order (1 … 7), each section in the order measured.
    private var rowsBySection: [ResultRow] {
        rows.enumerated().sorted { ($0.element.section, $0.offset) < ($1.element.section, $1.offset) }.map(\.element)
    }

    /// The figure recorded under `key`, if any.
    func value(of key: String) -> Double? {
        rows.last { $0.key == key }?.value
    }

    /// No check failed (an unfinished one is not a failure).
    var noCheckFailed: Bool { !checks.contains { $0.outcome == .failed } }

    /// Numbers as report.py prints them: 28.7k, 5396, 13.4, 0.67.
    static func format(_ value: Double) -> String {
        let magnitude = abs(value)
        if magnitude >= 1e6 { return String(format: "%.2fM", value / 1e6) }
        if magnitude >= 1e4 { return String(format: "%.1fk", value / 1e3) }
        if magnitude >= 100 { return String(format: "%.0f", value) }
        if magnitude >= 10 { return String(format: "%.1f", value) }
        if magnitude >= 0.1 || magnitude == 0 { return String(format: "%.2f", value) }
        return String(format: "%.2g", value)
    }

    /// The summary table: measurement, our figure, the reference's, and ours ÷ theirs.
    func table(reference: ReferenceResults?) -> String {
        var lines: [[String]] = [["#", "measurement", "ours", "unit", "reference", "ours ÷ ref"]]
        for row in rowsBySection {
            let theirs = reference.flatMap { $0.value(for: row.reference) }
            let ratio = theirs.flatMap { $0 == 0 ? nil : row.value / $0 }
            lines.append([
                row.section, row.label, Self.format(row.value), row.unit.rawValue,
                theirs.map(Self.format) ?? "", ratio.map { Self.format($0) + "×" } ?? "",
            ])
        }
        let widths = (0..<lines[0].count).map { column in lines.map { $0[column].count }.max() ?? 0 }
        let rightAligned: Set<Int> = [2, 4, 5]
        let rendered = lines.map { cells in
            cells.enumerated().map { column, cell in
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                return rightAligned.contains(column) ? padding + cell : cell + padding
            }.joined(separator: "  ")
        }
        let rule = String(repeating: "-", count: rendered[0].count)
        var text = ([rendered[0], rule] + rendered.dropFirst()).joined(separator: "\n") + "\n"
        if let reference {
            text += "reference: \(reference.source) (medians of its runs; ratio > 1 means ours is higher)\n"
        }
        text += "\nchecks:\n"
        for check in checks {
            text += "  \(Self.padded(check.outcome)) \(check.name): \(check.detail)\n"
        }
        return text
    }

    /// One JSON object per figure and per check, for machines.
    func jsonLines(reference: ReferenceResults?) -> String {
        var lines: [String] = []
        for row in rowsBySection {
            var fields = [
                "\"section\":\(Self.json(row.section))", "\"key\":\(Self.json(row.key))",
                "\"measurement\":\(Self.json(row.label))", "\"value\":\(Self.json(row.value))",
                "\"unit\":\(Self.json(row.unit.rawValue))",
            ]
            if let link = row.reference {
                fields.append("\"reference_key\":\(Self.json(link.description))")
                if let theirs = reference?.value(for: link) {
                    fields.append("\"reference\":\(Self.json(theirs))")
                    if theirs != 0 { fields.append("\"ratio\":\(Self.json(row.value / theirs))") }
                }
            }
            lines.append("{" + fields.joined(separator: ",") + "}")
        }
        for check in checks {
            lines.append(
                "{\"check\":\(Self.json(check.name)),\"outcome\":\(Self.json(check.outcome.rawValue)),"
                    + "\"detail\":\(Self.json(check.detail))}")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func json(_ number: Double) -> String {
        number.isFinite ? String(format: "%.6g", number) : "null"
    }

    private static func json(_ text: String) -> String {
        var escaped = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\t": escaped += "\\t"
            case _ where scalar.value < 0x20: escaped += String(format: "\\u%04x", scalar.value)
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped + "\""
    }
}
