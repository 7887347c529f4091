extension Ledger {
    /// The BudgetLedger release this binary was built from.
    public static let version = "0.1.0"
}
