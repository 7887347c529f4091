import ArgumentParser
import BudgetLedger
import BudgetLedgerPostgres
import BudgetLedgerWire
import Foundation

/// The options every subcommand takes. They may also be typed before the subcommand
/// (`budget-ledger --db x threads`): see `CommandLineRewrite`.
struct LedgerOptions: ParsableArguments {
    @Option(
        name: .long,
        help: "The ledger file, or a postgres:// URL (default: $BUDGET_LEDGER_DB, else ./budget-ledger.db).")
    var db: String?

    @Flag(name: .long, help: "Print JSON instead of text.")
    var json = false

    var path: String { db ?? Ledger.defaultPath }

    /// Opens the ledger, creating it when missing (init and the writes), runs `body`, and turns
    /// every ledger error into its message and exit code (`fieldNames`: see `Output.fail`).
    func withLedger(fieldNames: [String: String] = [:], _ body: (Ledger) throws -> Void) throws {
        do {
            if PostgresLedger.isPostgresURL(path) { throw NotOnPostgresError() }
            let ledger = try Ledger(path: path)
            defer { ledger.close() }
            try body(ledger)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw Output.fail(error, json: json, fieldNames: fieldNames)
        }
    }

    /// Runs `body`, which checks input before any ledger is opened, and reports a ledger error it
    /// throws as `withLedger` would (message, `--json` body, exit code); a `ValidationError`
    /// passes through to ArgumentParser (exit 64).
    func checkingInput<Value>(fieldNames: [String: String] = [:], _ body: () throws -> Value) throws -> Value {
        do {
            return try body()
        } catch let error as LedgerError {
            throw Output.fail(error, json: json, fieldNames: fieldNames)
        }
    }

    /// Like `withLedger`, for a read: a missing file is `NoLedgerError` (exit 1) and nothing is
    /// created, so a read typed in the wrong folder says so instead of answering from a new, empty
    /// ledger and leaving its files behind.
    ///
    /// The check runs before the open; a file removed in between is created empty, as before.
    func withExistingLedger(fieldNames: [String: String] = [:], _ body: (Ledger) throws -> Void) throws {
        guard FileManager.default.fileExists(atPath: path) || PostgresLedger.isPostgresURL(path) else {
            throw Output.fail(NoLedgerError(path: path), json: json)
        }
        try withLedger(fieldNames: fieldNames, body)
    }
}

extension LedgerOptions {
    /// `withLedger` for the commands that run on both stores: a `postgres://` URL opens (and
    /// migrates) the PostgreSQL ledger, anything else the SQLite file.
    func withAnyLedger(fieldNames: [String: String] = [:], _ body: (any CommandLedger) throws -> Void) throws {
        guard PostgresLedger.isPostgresURL(path) else {
            try withLedger(fieldNames: fieldNames) { ledger in try body(ledger) }
            return
        }
        do {
            let url = path
            let ledger = try BlockingPostgresLedger.wait { try await PostgresLedger(url: url) }
            defer { _ = try? BlockingPostgresLedger.wait { await ledger.close() } }
            try body(BlockingPostgresLedger(ledger: ledger))
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw Output.fail(error, json: json, fieldNames: fieldNames)
        }
    }

    /// `withExistingLedger` for the commands that run on both stores (a database is opened as by a write).
    func withExistingAnyLedger(fieldNames: [String: String] = [:], _ body: (any CommandLedger) throws -> Void) throws {
        guard PostgresLedger.isPostgresURL(path) else {
            try withExistingLedger(fieldNames: fieldNames) { ledger in try body(ledger) }
            return
        }
        try withAnyLedger(fieldNames: fieldNames, body)
    }
}

/// A read found no ledger file at the path it was given.
struct NoLedgerError: Error, CustomStringConvertible {
    let path: String

    /// `no ledger at PATH; create one with: budget-ledger init --db PATH`.
    var description: String {
        "no ledger at \(path); create one with: budget-ledger init --db \(Self.shellQuoted(path))"
    }

    /// `path` as a shell word: as is when it is plain, else in single quotes.
    static func shellQuoted(_ path: String) -> String {
        let plain = path.unicodeScalars.allSatisfy {
            $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "/._-+,:@%".unicodeScalars.contains($0))
        }
        return plain && !path.isEmpty ? path : "'" + path.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
    }
}
