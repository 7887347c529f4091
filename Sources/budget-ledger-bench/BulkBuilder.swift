import BudgetLedger
import Foundation
import LedgerSQLite

/// Builds big ledgers fast, straight into `events` on a raw connection with `synchronous=OFF`,
/// so that the benchmark can measure a ledger of 10 million events without recording them one
/// call at a time. The ledger's own triggers still run for every row, so `thread_state` and
/// the rollups stay exactly right (and `verify()` agrees).
///
/// Rows are consumes on the workload's threads with an agent (or none), a model, an org (or
/// none) and the cost the price table gives; 7.776 s apart, so a million span 90 days.
struct BulkBuilder {
    let path: String
    /// The first row's timestamp: far enough back that the last row of the biggest size is in the past.
    let startMicroseconds: Int64
    /// Nano-dollars per prompt and per completion token, by model; absent: unpriced.
    let prices: [String: (prompt: Int64, completion: Int64)]
    let idempotencyKeys: Bool

    static let stepMicroseconds: Int64 = 7_776_000
    static let rowsPerTransaction = 100_000

    private static let insertConsume = """
        INSERT INTO events (timestamp_us, kind, thread_id, prompt_tokens, completion_tokens, agent_id, model, org_id,
                            cost_nanos, idempotency_key)
        VALUES (?, 'consume', ?, ?, ?, ?, ?, ?, ?, ?)
        """

    /// Migrates a fresh file through `Ledger`, then opens the workload's threads with `open` events.
    static func create(path: String, largestRowCount: Int, idempotencyKeys: Bool) throws -> BulkBuilder {
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        defer { ledger.close() }
        let start = Ledger.systemClockMicroseconds() - Int64(largestRowCount + 1) * stepMicroseconds - 86_400_000_000
        var prices: [String: (prompt: Int64, completion: Int64)] = [:]
        for model in WorkloadNames.models {
            if let price = try ledger.price(forModel: model, at: start) {
                prices[model] = (price.promptNanodollarsPerToken, price.completionNanodollarsPerToken)
            }
        }
        let builder = BulkBuilder(
            path: path, startMicroseconds: start, prices: prices, idempotencyKeys: idempotencyKeys)
        let connection = try builder.openFast()
        defer { connection.close() }
        try connection.transaction(.immediate) {
            for threadID in WorkloadNames.threadIDs {
                try connection.execute(
                    "INSERT INTO events (timestamp_us, kind, thread_id, max_tokens) VALUES (?, 'open', ?, ?)",
                    [start - 1_000_000, threadID, WorkloadNames.unlimitedTokens])
            }
        }
        return builder
    }

    /// A raw connection on the ledger file that syncs nothing until the end.
    private func openFast() throws -> Connection {
        let connection = try Connection(path: path, options: Connection.Options(synchronous: .normal))
        try connection.execute(sql: "PRAGMA synchronous = OFF")
        try connection.execute(sql: "PRAGMA cache_size = -1048576")
        return connection
    }

    /// Appends consume rows `firstRow..<endRow`, then checkpoints and syncs the file to disk
    /// (inside the timing, as the reference's bulk build). Returns the seconds it took.
    func append(rows range: Range<Int>) throws -> Double {
        var random = SplitMix64(seed: 0xB111_D000 ^ UInt64(range.lowerBound))
        let start = MonotonicClock.nowNanoseconds()
        let connection = try openFast()
        defer { connection.close() }
        let insert = try connection.cachedStatement(Self.insertConsume)
        var row = range.lowerBound
        while row < range.upperBound {
            let end = min(row + Self.rowsPerTransaction, range.upperBound)
            try connection.transaction(.immediate) {
                for index in row..<end {
                    try insert.execute(arguments(forRow: index, &random))
                }
            }
            row = end
        }
        try connection.checkpoint(.truncate)
        try Self.syncToDisk(path)
        return Double(MonotonicClock.nowNanoseconds() - start) / 1e9
    }

    private func arguments(forRow index: Int, _ random: inout SplitMix64) -> [any SQLiteBindable] {
        let thread = WorkloadNames.threadIDs[random.next(below: WorkloadNames.threadCount)]
        let agent = random.next(below: WorkloadNames.agentIDs.count + 1)
        let model = WorkloadNames.models[random.next(below: WorkloadNames.models.count)]
        let organization = random.next(below: WorkloadNames.organizationIDs.count + 1)
        let prompt = Int64(100 + random.next(below: 3_900))
        let completion = Int64(10 + random.next(below: 990))
        let cost = prices[model].map { prompt * $0.prompt + completion * $0.completion }
        return [
            startMicroseconds + Int64(index) * Self.stepMicroseconds, thread, prompt, completion,
            agent < WorkloadNames.agentIDs.count ? WorkloadNames.agentIDs[agent] : nil, model,
            organization < WorkloadNames.organizationIDs.count ? WorkloadNames.organizationIDs[organization] : nil,
            cost, idempotencyKeys ? WorkloadNames.requestKey(&random) : nil,
        ]
    }

    /// `synchronous=OFF` never synced the file: make the rows durable, as a real load would.
    private static func syncToDisk(_ path: String) throws {
        let descriptor = open(path, O_RDWR)
        guard descriptor >= 0 else { throw BenchmarkFailure("cannot open \(path) to sync it: errno \(errno)") }
        defer { close(descriptor) }
        if fsync(descriptor) != 0 { throw BenchmarkFailure("fsync of \(path) failed: errno \(errno)") }
    }
}
