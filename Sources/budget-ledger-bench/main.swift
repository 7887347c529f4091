print("budget-ledger-bench: not written yet")
