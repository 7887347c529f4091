import Foundation

/// The measurements a run can make, by the names `--only` takes.
enum BenchmarkPart: String, CaseIterable, Sendable {
    /// (1) checkAndConsume, one caller, at NORMAL and at FULL.
    case single
    /// (2) consume (unchecked), one caller, at FULL: the ledger has no batch call.
    case plain
    /// (3) many threads sharing one `Ledger` at FULL.
    case concurrent
    /// (4) several processes on one file at FULL, with a verify and an overshoot check.
    case multiprocess
    /// (5)–(7) a big ledger: consume rate, open time, memory, overview and billing times.
    case growth
    /// (8) checkAndConsume with three scope budgets applying to each call, beside none, at FULL.
    case scopes
    /// (9) `budget-ledger import` of an NDJSON export into a fresh ledger, beside the reference's bulk insert.
    case `import`
}

/// What a run measures and where, from the command line.
struct BenchmarkOptions: Sendable {
    var secondsPerMeasurement = 3.0
    var concurrentCallers = 64
    var processCounts = [2, 4]
    /// Ledger sizes for the growth part, in millions of consume events, measured in ascending order.
    var eventsMillions: [Double] = [1]
    var skipMultiProcess = false
    /// Nil: every part.
    var onlyParts: Set<BenchmarkPart>?
    /// A folder for the ledger files; the run works in a fresh folder inside it and removes it.
    var temporaryDirectory: String?
    var json = false
    var referencePath: String?
    /// Give every measured consume a random idempotency key, as the reference gives every event a
    /// random unique request id.
    var idempotencyKeys = true
    /// Give the bulk-built rows random idempotency keys too (off: the unique index stays small).
    var bulkIdempotencyKeys = false
    /// `verify()` the big ledgers up to this many million events (it recomputes everything).
    var verifyUpToMillions = 1.0
    /// How long a `verify()` of a measured ledger may take before it is stopped and reported unfinished.
    var verifyTimeoutSeconds = 20.0
    /// The same for the big ledgers of the growth part.
    var verifyBigTimeoutSeconds = 60.0
    var keepFiles = false
    /// Lines of the import part (9).
    var importRows = 200_000
    /// The import part records every batch one consume at a time (the path before issue 21's
    /// batch path, and its fallback), to compare with.
    var importRowByRow = false

    /// Whether this run makes the measurements of `part`.
    func runs(_ part: BenchmarkPart) -> Bool {
        if part == .multiprocess && skipMultiProcess { return false }
        return onlyParts?.contains(part) ?? true
    }

    static let usage = """
        usage: budget-ledger-bench [options]
          --seconds S                 seconds per measurement (default 3)
          --threads N                 concurrent callers in (3) (default 64)
          --processes LIST            process counts in (4) (default 2,4)
          --events-million LIST       ledger sizes for (5)-(7), in millions of events (default 1; e.g. 1,10)
          --skip-multiprocess         leave out (4)
          --only LIST                 only these parts: single, plain, concurrent, multiprocess, growth, scopes, import
          --import-rows N             NDJSON lines the import part (9) imports (default 200000)
          --import-row-by-row         the import part records one consume at a time (the fallback path)
          --tmp DIR                   where the ledger files go (default: the system temp folder); removed afterwards
          --keep-files                leave the ledger files in place
          --json                      JSON summary lines on stdout (the table goes to stderr)
          --compare-reference FILE    a reference results-*.txt (run.sh) or report.py output: print our ÷ theirs
          --no-idempotency-keys       measured consumes carry no idempotency key
          --bulk-idempotency-keys     bulk-built rows carry random idempotency keys
          --verify-up-to-million M    verify() big ledgers up to M million events (default 1)
          --verify-timeout S          stop a verify() of a measured ledger after S seconds (default 20)
          --verify-big-timeout S      the same for the big ledgers (default 60)
        worker modes (spawned by the benchmark itself):
          worker --db PATH --seconds S --tight-thread ID [--synchronous full|normal] [--seed N] [--latency-file PATH]
          probe-open --db PATH
          verify --db PATH
        other modes:
          metadata [CALLS]            a call's metadata made as text and parsed again, beside made from members
        """

    /// Parses the arguments after the program name.
    ///
    /// - Throws: `UsageError` for an unknown flag, a missing value or a value outside its limits.
    static func parse(_ arguments: [String]) throws -> BenchmarkOptions {
        var options = BenchmarkOptions()
        var cursor = ArgumentCursor(arguments)
        while let flag = try cursor.nextFlag() {
            switch flag {
            case "--seconds": options.secondsPerMeasurement = try cursor.double(for: flag, in: 0.1...600)
            case "--threads": options.concurrentCallers = try cursor.integer(for: flag, in: 1...1_024)
            case "--processes": options.processCounts = try cursor.integerList(for: flag, in: 1...64)
            case "--events-million":
                options.eventsMillions = try cursor.doubleList(for: flag, in: 0.001...100).sorted()
            case "--skip-multiprocess": options.skipMultiProcess = true
            case "--only": options.onlyParts = try cursor.parts(for: flag)
            case "--tmp": options.temporaryDirectory = try cursor.value(for: flag)
            case "--keep-files": options.keepFiles = true
            case "--import-rows": options.importRows = try cursor.integer(for: flag, in: 1...10_000_000)
            case "--import-row-by-row": options.importRowByRow = true
            case "--json": options.json = true
            case "--compare-reference": options.referencePath = try cursor.value(for: flag)
            case "--no-idempotency-keys": options.idempotencyKeys = false
            case "--bulk-idempotency-keys": options.bulkIdempotencyKeys = true
            case "--verify-up-to-million": options.verifyUpToMillions = try cursor.double(for: flag, in: 0...100)
            case "--verify-timeout": options.verifyTimeoutSeconds = try cursor.double(for: flag, in: 1...3_600)
            case "--verify-big-timeout": options.verifyBigTimeoutSeconds = try cursor.double(for: flag, in: 1...36_000)
            case "--help", "-h": throw UsageError(message: nil)
            default: throw UsageError(message: "unknown argument \(flag)")
            }
        }
        return options
    }
}

/// A command line the benchmark cannot run; nil message: the user asked for help.
struct UsageError: Error {
    let message: String?
}

/// Something the benchmark needed failed (a file, a worker process): the run stops with its message.
struct BenchmarkFailure: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Walks the arguments: flags, their values, and `--flag=value` spelled as one word.
struct ArgumentCursor {
    private var remaining: ArraySlice<String>
    private var pendingValue: String?

    init(_ arguments: [String]) {
        remaining = arguments[...]
    }

    /// The next flag; nil at the end.
    mutating func nextFlag() throws -> String? {
        if let pendingValue {
            throw UsageError(message: "unexpected value \(pendingValue)")
        }
        guard let word = remaining.popFirst() else { return nil }
        if word.hasPrefix("--"), let equals = word.firstIndex(of: "=") {
            pendingValue = String(word[word.index(after: equals)...])
            return String(word[..<equals])
        }
        return word
    }

    mutating func value(for flag: String) throws -> String {
        if let pending = pendingValue {
            pendingValue = nil
            return pending
        }
        guard let word = remaining.popFirst() else {
            throw UsageError(message: "\(flag) needs a value")
        }
        return word
    }

    mutating func double(for flag: String, in limits: ClosedRange<Double>) throws -> Double {
        let text = try value(for: flag)
        return try Self.double(text, flag: flag, in: limits)
    }

    mutating func integer(for flag: String, in limits: ClosedRange<Int>) throws -> Int {
        let text = try value(for: flag)
        return try Self.integer(text, flag: flag, in: limits)
    }

    mutating func doubleList(for flag: String, in limits: ClosedRange<Double>) throws -> [Double] {
        try Self.list(try value(for: flag), flag: flag).map { try Self.double($0, flag: flag, in: limits) }
    }

    mutating func integerList(for flag: String, in limits: ClosedRange<Int>) throws -> [Int] {
        try Self.list(try value(for: flag), flag: flag).map { try Self.integer($0, flag: flag, in: limits) }
    }

    mutating func parts(for flag: String) throws -> Set<BenchmarkPart> {
        let names = try Self.list(try value(for: flag), flag: flag)
        return Set(
            try names.map { name in
                guard let part = BenchmarkPart(rawValue: name) else {
                    let known = BenchmarkPart.allCases.map(\.rawValue).joined(separator: ", ")
                    throw UsageError(message: "\(flag): unknown part \(name) (known: \(known))")
                }
                return part
            })
    }

    private static func list(_ text: String, flag: String) throws -> [String] {
        let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        if items.isEmpty {
            throw UsageError(message: "\(flag) needs at least one value")
        }
        if items.count > 16 {
            throw UsageError(message: "\(flag) takes at most 16 values")
        }
        return items
    }

    private static func double(_ text: String, flag: String, in limits: ClosedRange<Double>) throws -> Double {
        guard let number = Double(text), number.isFinite, limits.contains(number) else {
            throw UsageError(
                message: "\(flag) must be a number in \(limits.lowerBound)…\(limits.upperBound) (got \(text))")
        }
        return number
    }

    private static func integer(_ text: String, flag: String, in limits: ClosedRange<Int>) throws -> Int {
        guard let number = Int(text), limits.contains(number) else {
            throw UsageError(
                message: "\(flag) must be a whole number in \(limits.lowerBound)…\(limits.upperBound) (got \(text))")
        }
        return number
    }
}
