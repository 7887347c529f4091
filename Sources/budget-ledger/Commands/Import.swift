import ArgumentParser
import BudgetLedger
import BudgetLedgerWire
import Foundation

extension BudgetLedgerCommand {
    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record an NDJSON event export (export --format ndjson) as consumes: a migration's import.",
            discussion: """
                Each line becomes a consume with the line's thread, tokens, agent, model, provider, latency,
                metadata and timestamp, checked as a consume is, priced by the price in force at its timestamp,
                and keyed import:<its event id>. Lines are recorded in batches, each in one transaction: a bad
                line (exit 64) or a conflict (exit 5) names the line and writes nothing of its batch, while the
                batches before it stay recorded. Running the same import again skips every line already
                recorded, so an interrupted or refused import is finished by running it again.
                """)

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The NDJSON export, or - for standard input.")
        var file: String

        @Option(name: .customLong("batch-size"), help: "Lines per transaction, 1…\(Ledger.importBatchMax).")
        var batchSize: Int = Ledger.importBatchDefault

        func validate() throws {
            guard (1...Ledger.importBatchMax).contains(batchSize) else {
                throw ValidationError("--batch-size must be 1…\(Ledger.importBatchMax) (got \(batchSize))")
            }
            guard file == "-" || FileManager.default.isReadableFile(atPath: file) else {
                throw ValidationError("cannot read \(file): no such readable file (use - for standard input)")
            }
        }

        func run() throws {
            var summary = ImportSummary()
            // The first batch is read and checked before the ledger is opened: input that is bad
            // from its first lines is refused without creating (or migrating) a ledger file.
            let reader: LineReader
            let first: [ImportedConsume]
            do {
                reader = try LineReader(path: file, lineBytesMax: ConsumeImport.lineBytesMax)
                first = try readBatch(from: reader, summary: &summary)
            } catch let error as LedgerError {
                throw Output.fail(summary.explaining(error), json: options.json)
            } catch {
                throw Output.fail(error, json: options.json)
            }
            try options.withAnyLedger { ledger in
                do {
                    try importLines(first: first, from: reader, into: ledger, summary: &summary)
                } catch let error as LedgerError {
                    throw summary.explaining(error)
                }
                Output.emit(summary.json, text: summary.text, asJSON: options.json)
            }
        }

        /// Reads and checks up to `batchSize` lines (fewer at the end of the input).
        private func readBatch(from reader: LineReader, summary: inout ImportSummary) throws -> [ImportedConsume] {
            var batch: [ImportedConsume] = []
            batch.reserveCapacity(batchSize)
            while batch.count < batchSize, let line = try reader.next() {
                // Blank lines (a trailing newline, a hand-edited file) hold no event.
                if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) { continue }
                summary.pending = (summary.pending?.first ?? reader.lineNumber, reader.lineNumber)
                batch.append(try ConsumeImport.consume(line: line, number: reader.lineNumber))
            }
            return batch
        }

        /// Records `first`, then reads, checks and records every further line, `batchSize` lines
        /// per transaction.
        private func importLines(
            first: [ImportedConsume], from reader: LineReader, into ledger: any CommandLedger,
            summary: inout ImportSummary
        ) throws {
            var batch = first
            while !batch.isEmpty {
                summary.add(try ledger.importConsumes(batch))
                batch = try readBatch(from: reader, summary: &summary)
            }
        }
    }
}

/// What an import has recorded so far, for its summary and for the error that stops it.
struct ImportSummary {
    var imported = 0
    var skipped = 0
    var batches = 0
    /// The first and last line of the batch being read or recorded, if any.
    var pending: (first: Int, last: Int)?

    mutating func add(_ result: ImportBatchResult) {
        imported += result.imported
        skipped += result.skipped
        batches += 1
        pending = nil
    }

    var json: JSONValue {
        .object([
            ("imported", .integer(Int64(imported))), ("skipped", .integer(Int64(skipped))),
            ("batches", .integer(Int64(batches))),
        ])
    }

    var text: String {
        "imported \(Output.count(imported, "consume")), skipped \(skipped) already recorded, "
            + "in \(Output.count(batches, "batch", plural: "batches"))"
    }

    /// `error` with what it left behind: nothing of its batch, and the earlier batches recorded
    /// (which a second run skips). A storage error keeps its own words.
    func explaining(_ error: LedgerError) -> LedgerError {
        let batch = pending.map { "nothing of lines \($0.first)…\($0.last) (its batch) was recorded" } ?? "nothing of its batch was recorded"
        let before =
            batches == 0
            ? "" : "; kept: \(Output.count(batches, "earlier batch", plural: "earlier batches")) (\(imported) imported, "
                + "\(skipped) skipped), which running the same import again skips"
        switch error {
        case .invalidInput(let field, let reason):
            return .invalidInput(field: field, reason: "\(reason) (\(batch)\(before))")
        case .conflict(let reason):
            return .conflict("\(reason) (\(batch)\(before))")
        default:
            return error
        }
    }
}
