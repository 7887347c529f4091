# BudgetLedger. `make run` serves the default ledger over REST; `make test` runs every test.
SWIFT ?= swift
DB ?= ./budget-ledger.db
PORT ?= 8765
BENCH_FLAGS ?=
REFERENCE ?= ../shared/reference

.PHONY: deps build test test-python run bench bench-http bench-compare bench-floor clean

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
	$(MAKE) --no-print-directory test-python

# The Python client's tests (clients/python) against the built server, in a venv of their own
# (.build-python/venv; Debian's python3-venv is installed first when `python3 -m venv` fails).
PYTHON ?= python3
PYTHON_VENV ?= .build-python/venv
PYTHON_TEST_SECONDS ?= 240
test-python: deps
	$(SWIFT) build --product budget-ledger
	@if [ ! -x $(PYTHON_VENV)/bin/pip ]; then \
		rm -rf $(PYTHON_VENV); \
		if ! $(PYTHON) -m venv $(PYTHON_VENV) > /dev/null 2>&1; then \
			echo "Installing python3-venv (python3 -m venv needs it on Debian)"; \
			if [ "$$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
			$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
			rm -rf $(PYTHON_VENV) && $(PYTHON) -m venv $(PYTHON_VENV) || exit 1; \
		fi; \
	fi
	$(PYTHON_VENV)/bin/pip install -q --disable-pip-version-check ./clients/python pytest
	BUDGET_LEDGER_BIN=$$($(SWIFT) build --show-bin-path)/budget-ledger timeout -k 10 $(PYTHON_TEST_SECONDS) \
		$(PYTHON_VENV)/bin/python -m pytest -q -p no:cacheprovider clients/python/tests

# Serves the ledger file $(DB) (created on first run) on http://127.0.0.1:$(PORT) until Ctrl-C.
run: build
	$(SWIFT) run budget-ledger serve --db $(DB) --port $(PORT)

# The benchmark, in release mode: figures for the real Ledger API (flags: BENCH_FLAGS=...).
bench: deps
	$(SWIFT) build -c release --product budget-ledger-bench
	$$($(SWIFT) build -c release --show-bin-path)/budget-ledger-bench $(BENCH_FLAGS)

# check-and-consume over HTTP, measured by wrk with 1, 16 and 64 connections, beside the
# library's 64 concurrent callers (release build; figures only). Installs Debian's wrk if missing.
BENCH_HTTP_SECONDS ?= 10
bench-http: deps
	@if ! command -v wrk > /dev/null; then \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; \
	fi
	$(SWIFT) build -c release --product budget-ledger
	$(SWIFT) build -c release --product budget-ledger-bench
	bench/http-check-and-consume.sh $$($(SWIFT) build -c release --show-bin-path) $(BENCH_HTTP_SECONDS)

# The benchmark beside the raw C reference in ../shared/reference, run in the same session.
bench-compare: deps
	$(SWIFT) build -c release --product budget-ledger-bench
	@mkdir -p .build-reference
	@if [ -x $(REFERENCE)/run.sh ]; then \
		(cd .build-reference && LEDGER_TMP=$$(pwd) bash $(abspath $(REFERENCE))/run.sh); \
		$$($(SWIFT) build -c release --show-bin-path)/budget-ledger-bench $(BENCH_FLAGS) --compare-reference .build-reference/results.txt; \
	else \
		echo "no reference benchmark at $(REFERENCE); running ours alone"; \
		$$($(SWIFT) build -c release --show-bin-path)/budget-ledger-bench $(BENCH_FLAGS); \
	fi

# The floor under our write path: the ledger's own SQL for one check-and-consume, run from C
# on a fresh ledger (Sources/schema-floor), each run as "level, writes per transaction, calls,
# auto-checkpoint frames": one per transaction and 16 or 64 per transaction at FULL (what
# group commit could reach with this schema here), and the statements alone (no checkpoint).
FLOOR_CALLS ?= 20000
bench-floor: deps
	$(SWIFT) build --product budget-ledger
	$(SWIFT) build -c release --product schema-floor
	@mkdir -p .build-floor
	@for run in "full 1 5000 1000" "full 16 $(FLOOR_CALLS) 1000" "full 64 $(FLOOR_CALLS) 1000" \
			"normal 1 $(FLOOR_CALLS) 1000" "normal 16 $(FLOOR_CALLS) 0"; do \
		set -- $$run; rm -f .build-floor/floor.db*; \
		$$($(SWIFT) build --show-bin-path)/budget-ledger init --db .build-floor/floor.db > /dev/null || exit 1; \
		$$($(SWIFT) build -c release --show-bin-path)/schema-floor .build-floor/floor.db $$1 $$2 $$3 $$4 || exit 1; \
	done
	@rm -f .build-floor/floor.db*

clean:
	$(SWIFT) package clean
	rm -rf .build
