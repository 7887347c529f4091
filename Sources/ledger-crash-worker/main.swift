print("ledger-crash-worker: not written yet")
