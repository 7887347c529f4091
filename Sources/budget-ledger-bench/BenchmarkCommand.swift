import BudgetLedger
import Foundation
import LedgerSQLite

/// The entry point: the full benchmark, or one of the worker modes it spawns.
enum BenchmarkCommand {
    /// Runs the command line and returns the exit status: 0 when no check failed, 1 when a
    /// check failed or the run broke, 64 for a bad command line.
    static func main(_ arguments: [String]) -> Int32 {
        do {
            switch arguments.first {
            case "worker":
                try WorkerMode.run(try WorkerMode.parse(Array(arguments.dropFirst())))
                return 0
            case "verify":
                try VerifyMode.run(Array(arguments.dropFirst()))
                return 0
            case "probe-open":
                try ProbeOpenMode.run(Array(arguments.dropFirst()))
                return 0
            case "metadata":
                try MetadataMode.run(Array(arguments.dropFirst()))
                return 0
            default:
                return try runBenchmarks(try BenchmarkOptions.parse(arguments))
            }
        } catch let error as UsageError {
            guard let message = error.message else {
                print(BenchmarkOptions.usage)
                return 0
            }
            log("budget-ledger-bench: \(message)\n\(BenchmarkOptions.usage)")
            return 64
        } catch {
            log("budget-ledger-bench: \(error)")
            return 1
        }
    }

    private static func runBenchmarks(_ options: BenchmarkOptions) throws -> Int32 {
        let reference = try options.referencePath.map(ReferenceResults.load(path:))
        let base = options.temporaryDirectory ?? NSTemporaryDirectory()
        let directory = (base as NSString).appendingPathComponent("budget-ledger-bench-\(getpid())")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer {
            if !options.keepFiles { try? FileManager.default.removeItem(atPath: directory) }
        }
        let context = BenchmarkContext(options: options, report: Report(), directory: directory)
        log(try header(options, directory: directory))
        let (_, seconds) = MonotonicClock.timed { runParts(context) }
        let table = context.report.table(reference: reference)
        if options.json {
            log(table)
            print(context.report.jsonLines(reference: reference), terminator: "")
        } else {
            print(table, terminator: "")
        }
        log(String(format: "run took %.0f s; load average now %@", seconds, ProcessFacts.loadAverage))
        return context.report.noCheckFailed ? 0 : 1
    }

    /// Each part in turn; one that throws is recorded as a failed check and the rest still run.
    private static func runParts(_ context: BenchmarkContext) {
        let parts: [(BenchmarkPart, () throws -> Void)] = [
            (.single, context.measureSingleCaller),
            (.plain, context.measurePlainConsume),
            (.concurrent, context.measureConcurrentCallers),
            (.multiprocess, context.measureMultiProcess),
            (.growth, context.measureGrowth),
            (.scopes, context.measureScopeBudgets),
            (.import, context.measureImport),
        ]
        for (part, measure) in parts where context.options.runs(part) {
            do {
                try measure()
            } catch {
                context.report.check("\(part.rawValue) ran to the end", passed: false, detail: "\(error)")
            }
        }
    }

    private static func header(_ options: BenchmarkOptions, directory: String) throws -> String {
        let memory = Connection.inMemoryVersion
        return """
            budget-ledger-bench: \(ProcessInfo.processInfo.activeProcessorCount) cores, load \(ProcessFacts.loadAverage), \
            SQLite \(memory), files in \(directory)
            \(options.secondsPerMeasurement) s per measurement; \(options.concurrentCallers) concurrent callers; \
            processes \(options.processCounts.map(String.init).joined(separator: ",")); \
            growth sizes \(options.eventsMillions.map { "\($0)M" }.joined(separator: ",")); \
            idempotency keys \(options.idempotencyKeys ? "on" : "off")
            """
    }
}

extension Connection {
    /// The SQLite library's version, from a throwaway in-memory connection.
    static var inMemoryVersion: String {
        guard let connection = try? Connection(path: ":memory:") else { return "?" }
        defer { connection.close() }
        return (try? connection.prepare("SELECT sqlite_version()").fetchOne { try $0[0] as String }) ?? "?"
    }
}
