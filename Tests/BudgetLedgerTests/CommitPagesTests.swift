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
        // 128th event writes them.
        let folder = try TemporaryFolder()
        let path = folder.path("l.db")
        let ledger = try Ledger(path: path, configuration: Ledger.Configuration(synchronous: .normal))
        defer { ledger.close() }
        for thread in 0..<4 { try ledger.setLimit("t\(thread)", maxTokens: LedgerLimits.maxTokensMax) }
        let reader = try Connection(path: path)
        defer { reader.close() }
        var foldCommits = 0
        var plainCommits: [Int: Int] = [:]
        for call in 0..<300 {
            let before = try WALFile(path: path + "-wal")
            let result = try ledger.consume("t\(call % 4)", promptTokens: 10, idempotencyKey: "key-\(call)")
            let after = try WALFile(path: path + "-wal")
            // A checkpoint may have started the WAL over: nothing to read about this commit then.
            guard after.salt == before.salt, after.size > before.size else { continue }
            let owners = try Set(after.pages(from: before.size).map { page in
                try reader.prepare("SELECT name FROM dbstat WHERE pageno = ?").fetchOne([Int64(page)]) { try $0[0] as String } ?? "?"
            })
            if result.event.id % FoldMark.foldEveryEvents == 0 {
                foldCommits += 1
                #expect(owners.contains("ledger_settings"), "the fold at event \(result.event.id) wrote \(owners.sorted())")
            } else {
                #expect(owners.isSubset(of: Self.consumeOwners), "event \(result.event.id) wrote \(owners.sorted())")
                #expect(owners.isSuperset(of: ["events", "events_idempotency_key", "thread_state"]),
                        "event \(result.event.id) wrote \(owners.sorted())")
                plainCommits[owners.count, default: 0] += 1
            }
        }
        #expect(foldCommits >= 1 && plainCommits.values.reduce(0, +) >= 200, "\(foldCommits) folds, \(plainCommits)")
    }
}

/// The frames of a WAL file (https://www.sqlite.org/fileformat.html#the_write_ahead_log).
private struct WALFile {
    let bytes: [UInt8]
    var size: Int { bytes.count }
    /// The header's salts: they change when the WAL starts over after a checkpoint.
    var salt: UInt64 { bytes.count >= 32 ? UInt64(word(at: 16)) << 32 | UInt64(word(at: 20)) : 0 }

    init(path: String) throws {
        bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// The page number of every frame from byte `offset` (a frame boundary) to the end.
    func pages(from offset: Int) -> [UInt32] {
        let pageSize = Int(word(at: 8))
        var pages: [UInt32] = []
        var frame = max(offset, 32)
        while frame + 24 + pageSize <= bytes.count {
            pages.append(word(at: frame))
            frame += 24 + pageSize
        }
        return pages
    }

    private func word(at offset: Int) -> UInt32 {
        bytes[offset..<offset + 4].reduce(0) { $0 << 8 | UInt32($1) }
    }
}
