import LedgerSQLite

extension LedgerError {
    /// True when another process held the ledger's lock past the busy timeout: the call wrote
    /// nothing and may be retried. The REST server answers 503 for it, not 500.
    public var isBusy: Bool {
        if case .database(_, let error) = self { return error.isBusy }
        return false
    }
}
