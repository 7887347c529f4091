@testable import BudgetLedger
import Foundation
import LedgerSQLite
import Testing

/// What a consume's commit writes to the WAL (issue 21): the single-caller rate is a matter of
/// the pages a commit writes (docs/performance.md).
@Suite("The pages a consume's commit writes")
struct CommitPagesTests {
    /// The b-trees a plain consume (an open thread, an idempotency key, no scope budget, no
    /// hold) writes, outside a fold; and page 1 (dbstat names it sqlite_schema), whose header
    /// counts the file's pages, when a leaf's split grows the file.
    static let consumeOwners: Set<String> = ["events", "events_idempotency_key", "thread_state", "sqlite_schema"]

    @Test("a consume's commit writes the events, its key's index and the thread's row, nothing else; only a fold writes ledger_settings")
    func consumeCommitPages() throws {
        // Proves migration 0017's point from the WAL itself: the frames each commit appends are
        // read back and named by the b-tree that owns their page (SQLite's dbstat). Outside a
        // fold a commit writes the pages of exactly three b-trees (0016 took the timestamp
        // index's, 0017 ledger_settings'): no sums (they wait for the fold); the commit of a
        // 1,024th event writes them.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        defer { ledger.close() }
        for thread in 0..<4 { try ledger.setLimit("t\(thread)", maxTokens: LedgerLimits.maxTokensMax) }
        let reader = try Connection(path: path)
        defer { reader.close() }
        // A read transaction held open keeps the WAL from starting over after a checkpoint, so
        // each commit's frames are the bytes it appends.
        let pin = try Connection(path: path)
        try pin.execute(sql: "BEGIN")
        _ = try pin.prepare("SELECT count(*) FROM events").fetchOne { try $0[0] as Int64 }
        defer {
            try? pin.execute(sql: "COMMIT")
            pin.close()
        }
        var foldCommits = 0
        var plainCommits = 0
        for call in 0..<1_100 {
            let before = try WALFile.size(path + "-wal")
            let result = try ledger.consume("t\(call % 4)", promptTokens: 10, idempotencyKey: "key-\(call)")
            // Only the last commits are read, around the fold at the 1,024th event.
            guard call >= 900 else { continue }
            let owners = try Set(WALFile.pages(path + "-wal", from: before).map { page in
                try reader.prepare("SELECT name FROM dbstat WHERE pageno = ?").fetchOne([Int64(page)]) { try $0[0] as String } ?? "?"
            })
            if result.event.id % FoldMark.foldEveryEvents == 0 {
                foldCommits += 1
                #expect(owners.contains("ledger_settings"), "the fold at event \(result.event.id) wrote \(owners.sorted())")
            } else {
                #expect(owners.isSubset(of: Self.consumeOwners), "event \(result.event.id) wrote \(owners.sorted())")
                #expect(owners.isSuperset(of: ["events", "events_idempotency_key", "thread_state"]),
                        "event \(result.event.id) wrote \(owners.sorted())")
                plainCommits += 1
            }
        }
        #expect(foldCommits == 1 && plainCommits == 199, "\(foldCommits) folds, \(plainCommits) plain commits")
    }
}

/// The frames of a WAL file (https://www.sqlite.org/fileformat.html#the_write_ahead_log).
private enum WALFile {
    static func size(_ path: String) throws -> UInt64 {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
    }

    /// The page number of every frame from byte `offset` (a frame boundary) to the end.
    static func pages(_ path: String, from offset: UInt64) throws -> [UInt32] {
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? file.close() }
        let header = Array(try file.read(upToCount: 32) ?? Data())
        let pageSize = Int(word(header, at: 8))
        try file.seek(toOffset: max(offset, 32))
        let tail = Array(try file.readToEnd() ?? Data())
        return stride(from: 0, to: tail.count - 24 - pageSize + 1, by: 24 + pageSize).map { word(tail, at: $0) }
    }

    private static func word(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        bytes[offset..<offset + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }
}
