import Foundation

/// The raw C reference's figures (`/work/shared/reference`), read from either of its formats:
/// the results file `run.sh` writes (`R metric value` lines, one per repetition; we take the
/// median) or the markdown table `report.py` prints (medians already, rounded).
struct ReferenceResults {
    /// The file the figures came from.
    let source: String
    private let medians: [String: Double]

    /// The figure a link names, when the file has it.
    func value(for link: ReferenceLink?) -> Double? {
        guard let link else { return nil }
        if let denominator = link.denominatorKey {
            // report.py prints some ratios itself; otherwise divide the medians.
            if let printed = medians[link.key + "/" + denominator] { return printed }
            guard let top = medians[link.key], let bottom = medians[denominator], bottom != 0 else { return nil }
            return top / bottom
        }
        return medians[link.key].map { $0 * link.scale }
    }

    /// Reads `path`.
    ///
    /// - Throws: when the file cannot be read or holds no figure in either format.
    static func load(path: String) throws -> ReferenceResults {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var samples: [String: [Double]] = [:]
        var printed: [String: Double] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("R ") {
                let parts = line.split(separator: " ", maxSplits: 2)
                if parts.count == 3, let number = Double(parts[2]) {
                    samples[String(parts[1]), default: []].append(number)
                }
            } else if line.hasPrefix("|"), let (key, number) = markdownFigure(line) {
                printed[key] = number
            }
        }
        var medians = printed
        for (key, values) in samples {
            medians[key] = median(values)
        }
        if medians.isEmpty {
            throw BenchmarkFailure(
                "\(path) holds no reference figures (neither `R key value` lines nor a report.py table)")
        }
        return ReferenceResults(source: path, medians: medians)
    }

    private static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    /// A row of report.py's table: `| 1 | C, 1 consume/txn, WAL+FULL: throughput | **5396** | txn/s | …`.
    private static func markdownFigure(_ line: Substring) -> (String, Double)? {
        let cells = line.split(separator: "|", omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard cells.count >= 5, let key = markdownKeys[cells[2]] else { return nil }
        var text = cells[3].replacingOccurrences(of: "**", with: "").replacingOccurrences(of: "×", with: "")
        var multiplier = 1.0
        if text.hasSuffix(" k") {
            multiplier = 1e3
        } else if text.hasSuffix(" M") {
            multiplier = 1e6
        }
        if multiplier != 1 { text = String(text.dropLast(2)) }
        guard let number = Double(text.trimmingCharacters(in: .whitespaces)) else { return nil }
        return (key, number * multiplier)
    }

    /// report.py's row titles, by the metric each shows (as report.py builds them).
    private static let markdownKeys: [String: String] = {
        var keys: [String: String] = [:]
        for sync in ["normal", "full"] {
            let upper = sync.uppercased()
            let single = "C, 1 consume/txn, WAL+\(upper)"
            keys["\(single): throughput"] = "c1_\(sync).tps"
            keys["\(single): p50 latency"] = "c1_\(sync).p50_us"
            keys["\(single): p99 latency"] = "c1_\(sync).p99_us"
            keys["\(single): max latency"] = "c1_\(sync).max_us"
            keys["C, 100 consumes/txn, WAL+\(upper): throughput"] = "c2_\(sync).eps"
            for processes in [2, 4] {
                let title = "C, \(processes) processes, WAL+\(upper)"
                let key = "c4_p\(processes)_\(sync)"
                keys["\(title): aggregate throughput"] = "\(key).tps"
                keys["\(title): p50 latency"] = "\(key).p50_us"
                keys["\(title): p99 latency"] = "\(key).p99_us"
                keys["\(title): max latency"] = "\(key).max_us"
                keys["\(title): fairness (min ÷ max txns per process)"] = "\(key).fairness_min_over_max"
            }
        }
        for size in ["1M", "10M"] {
            let key = "g\(size.lowercased())"
            keys["C, 1 consume/txn, WAL+NORMAL, events ≈ \(size)"] = "\(key).tps"
            keys["… p50 latency at ≈ \(size)"] = "\(key).p50_us"
            keys["… p99 latency at ≈ \(size)"] = "\(key).p99_us"
            keys["… max latency at ≈ \(size)"] = "\(key).max_us"
            keys["\(size) ÷ empty txn/s"] = "\(key).tps/c1_normal.tps"
        }
        keys["Build 1M events, bulk (journal off, sync off, 1 GB cache, 100k rows/txn, final fsync)"] =
            "build1m_bulk.rows_per_s"
        keys["Extend 1M → 10M events, bulk (as above), single run"] = "build10m_bulk.rows_per_s"
        keys["Billing summary (GROUP BY agent_id, model) over 1M: wall"] = "q1m.billing_ms"
        keys["Per-day rollup (GROUP BY ts/86400000) over 1M: wall"] = "q1m.daily_ms"
        keys["4 KiB overwrite + fdatasync"] = "fsync.overwrite_fdatasync_per_s"
        return keys
    }()
}
