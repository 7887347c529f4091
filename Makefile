# BudgetLedger. `make run` serves/uses the default ledger; `make test` runs every test.
SWIFT ?= swift
DB ?= ./budget-ledger.db

.PHONY: deps build test run bench clean

# Installs the system SQLite headers when they are missing (a fresh machine); does nothing otherwise.
deps:
	@if ! pkg-config --exists sqlite3 2>/dev/null; then \
		echo "Installing libsqlite3-dev (SQLite headers and pkg-config file)"; \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsqlite3-dev pkg-config sqlite3; \
	fi

build: deps
	$(SWIFT) build

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

run: build
	$(SWIFT) run budget-ledger init --db $(DB)
	$(SWIFT) run budget-ledger threads --db $(DB)

bench:
	@echo "make bench: the benchmark arrives with the performance issue; nothing to run yet."

clean:
	$(SWIFT) package clean
	rm -rf .build
