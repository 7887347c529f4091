import Foundation
import Synchronization

extension Ledger {
    private static let sharedLedger = Mutex<Ledger?>(nil)

    /// The default ledger file: `BUDGET_LEDGER_DB` from the environment, else `./budget-ledger.db`.
    public static var defaultPath: String {
        ProcessInfo.processInfo.environment["BUDGET_LEDGER_DB"] ?? "./budget-ledger.db"
    }

    /// The process-wide shared ledger, opened on `defaultPath` on first use unless
    /// `configureShared` opened another.
    public static func shared() throws -> Ledger {
        try sharedLedger.withLock { shared in
            if let shared { return shared }
            let opened = try Ledger(path: defaultPath)
            shared = opened
            return opened
        }
    }

    /// Opens the process-wide shared ledger on `path`, replacing (and closing) any earlier one.
    @discardableResult
    public static func configureShared(
        path: String, maxTokensPerThread: Int64? = nil, configuration: Configuration = Configuration()
    ) throws -> Ledger {
        let opened = try Ledger(path: path, maxTokensPerThread: maxTokensPerThread, configuration: configuration)
        let previous = sharedLedger.withLock { shared in
            let previous = shared
            shared = opened
            return previous
        }
        previous?.close()
        return opened
    }

    /// Closes and forgets the shared ledger; the next `shared()` opens it again. The file and its
    /// events stay: durability is the point.
    public static func resetShared() {
        let previous = sharedLedger.withLock { shared in
            let previous = shared
            shared = nil
            return previous
        }
        previous?.close()
    }
}
