# BudgetLedger. `make run` serves the default ledger over REST; `make test` runs every test.
SWIFT ?= swift
DB ?= ./budget-ledger.db
PORT ?= 8765
BENCH_FLAGS ?=
REFERENCE ?= ../shared/reference

.PHONY: deps venv-deps fuzz-deps build test test-python run fuzz fuzz-short bench bench-http bench-postgres bench-compare bench-floor schema screenshot clean

# Installs Debian packages, as root or through sudo: $(call apt_install,PACKAGES).
apt_install = if [ "$$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1)

# Installs the system SQLite headers, Debian's chromium (the dashboard's browser tests) and
# PostgreSQL (the PostgreSQL store's tests) when they are missing (a fresh machine); does nothing otherwise.
deps:
	@if ! pkg-config --exists sqlite3 2>/dev/null; then \
		echo "Installing libsqlite3-dev (SQLite headers and pkg-config file)"; \
		$(call apt_install,libsqlite3-dev pkg-config sqlite3); \
	fi
	@if ! command -v chromium > /dev/null 2>&1; then \
		echo "Installing chromium (headless, for the dashboard's browser tests and screenshots)"; \
		$(call apt_install,chromium); \
	fi
	@# The PostgreSQL store's tests start a server of their own (PostgresTestCluster): Debian's
	@# postgresql puts initdb and pg_ctl in /usr/lib/postgresql/N/bin; PostgreSQL refuses to run as
	@# root, so as root the tests run it as the unprivileged user budgetledger.
	@if ! command -v initdb > /dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1; then \
		echo "Installing postgresql (the server the PostgreSQL store's tests start)"; \
		$(call apt_install,postgresql); \
	fi
	@if [ "$$(id -u)" -eq 0 ] && ! id budgetledger > /dev/null 2>&1; then \
		echo "Creating the unprivileged user budgetledger (PostgreSQL's tests run the server as it)"; \
		useradd --system --no-create-home --shell /usr/sbin/nologin budgetledger; \
	fi

# Python's venv module and ensurepip, which Debian ships apart (python3-venv): for the venvs of
# the Python client's tests and of the fuzzer.
venv-deps:
	@if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
		echo "Installing python3-venv (the venv module and ensurepip)"; \
		$(call apt_install,python3-venv); \
	fi

build: deps
	$(SWIFT) build

# The Swift tests run under scripts/swift-test.sh: past SWIFT_TEST_SECONDS it names the tests
# that never ended and prints the test process's stacks, instead of hanging.
SWIFT_TEST_SECONDS ?= 1500
test: deps
	$(SWIFT) build --build-tests
	SWIFT="$(SWIFT)" SWIFT_TEST_SECONDS=$(SWIFT_TEST_SECONDS) bash scripts/swift-test.sh
	$(MAKE) --no-print-directory test-python PYTHON_BUILD_FLAGS=--build-tests
	$(MAKE) --no-print-directory fuzz-short FUZZ_BUILD_FLAGS=--build-tests

# The Python client's tests (clients/python) against the built server, in a venv of their own
# (.build-python/venv).
PYTHON_VENV ?= .build-python/venv
PYTHON_TEST_SECONDS ?= 240
# What it builds: the CLI alone, or (from `make test`) what the tests just built (a product build
# and a test build of one checkout recompile each other's dependencies).
PYTHON_BUILD_FLAGS ?= --product budget-ledger
test-python: deps venv-deps
	$(SWIFT) build $(PYTHON_BUILD_FLAGS)
	@if [ ! -x $(PYTHON_VENV)/bin/pip ]; then rm -rf $(PYTHON_VENV) && python3 -m venv $(PYTHON_VENV); fi
	$(PYTHON_VENV)/bin/pip install -q --disable-pip-version-check ./clients/python pytest
	BUDGET_LEDGER_BIN=$$($(SWIFT) build --show-bin-path)/budget-ledger timeout -k 10 $(PYTHON_TEST_SECONDS) \
		$(PYTHON_VENV)/bin/python -m pytest -q -p no:cacheprovider clients/python/tests

# Serves the ledger file $(DB) (created on first run) on http://127.0.0.1:$(PORT) until Ctrl-C.
run: build
	$(SWIFT) run budget-ledger serve --db $(DB) --port $(PORT)

# Schemathesis against the real server: every operation of the OpenAPI document it serves, with
# FUZZ_EXAMPLES examples each (positive and negative), the coverage phase (boundaries, every
# undocumented method) and the stateful phase (reserve -> settle / release through the links),
# under every check. The server runs on a fresh ledger in a temporary folder, on a free loopback
# port, with a random token; it stops when the run ends, when make is interrupted, when this
# recipe's shell dies (a watchdog), and at the latest after FUZZ_SERVER_SECONDS.
#
# The stateful phase follows the links the document declares, not links schemathesis infers from
# field names: 4.32.5 follows an inferred link from a list field (events[*].reservationId) with
# one of its null values as well, and sends `/reservations/None/release` as schema-valid data.
FUZZ_EXAMPLES ?= 1000
FUZZ_SERVER_SECONDS ?= 7200
FUZZ_FLAGS ?=
# What the run builds: the CLI alone, or (from `make test`) what the tests just built, since a
# product build and a test build of the same checkout recompile each other's dependencies.
FUZZ_BUILD_FLAGS ?= --product budget-ledger
FUZZ_DIR = .build-fuzz
SCHEMATHESIS_VERSION = 4.32.5
SCHEMATHESIS = $(FUZZ_DIR)/venv/bin/schemathesis

# A virtual environment of its own with the pinned schemathesis.
fuzz-deps: $(FUZZ_DIR)/venv/schemathesis-$(SCHEMATHESIS_VERSION)

$(FUZZ_DIR)/venv/schemathesis-$(SCHEMATHESIS_VERSION): | venv-deps
	rm -rf $(FUZZ_DIR)/venv
	python3 -m venv $(FUZZ_DIR)/venv
	$(FUZZ_DIR)/venv/bin/pip install --quiet "schemathesis==$(SCHEMATHESIS_VERSION)"
	touch $@

fuzz: deps fuzz-deps
	$(SWIFT) build $(FUZZ_BUILD_FLAGS)
	@set -eu; \
	binary="$$($(SWIFT) build --show-bin-path)/budget-ledger"; \
	work="$$(mktemp -d "$${TMPDIR:-/tmp}/budget-ledger-fuzz.XXXXXX")"; \
	server=""; watchdog=""; \
	stop() { \
		[ -z "$$watchdog" ] || kill "$$watchdog" 2>/dev/null || true; \
		if [ -n "$$server" ] && kill -0 "$$server" 2>/dev/null; then \
			kill -TERM "$$server" 2>/dev/null || true; wait "$$server" 2>/dev/null || true; \
		fi; \
		rm -rf "$$work"; \
	}; \
	trap stop EXIT; trap 'exit 130' INT; trap 'exit 143' TERM HUP; \
	export BUDGET_LEDGER_TOKEN="$$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"; \
	timeout --signal=TERM $(FUZZ_SERVER_SECONDS) "$$binary" serve --db "$$work/ledger.db" --host 127.0.0.1 --port 0 \
		> "$$work/server.out" 2> "$$work/server.log" & \
	server=$$!; \
	shell=$$$$; ( while kill -0 "$$shell" 2>/dev/null; do sleep 1; done; \
		kill -TERM "$$server" 2>/dev/null; sleep 2; rm -rf "$$work" ) & \
	watchdog=$$!; \
	url=""; for attempt in $$(seq 1 100); do \
		url="$$(sed -n 's/^listening on //p' "$$work/server.out")"; \
		[ -n "$$url" ] && $(FUZZ_DIR)/venv/bin/python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
			"$$url/healthz" 2> /dev/null && break; \
		kill -0 "$$server" 2>/dev/null || { cat "$$work/server.log"; exit 1; }; \
		url=""; sleep 0.2; \
	done; \
	[ -n "$$url" ] || { echo "the server did not answer /healthz"; cat "$$work/server.log"; exit 1; }; \
	echo "fuzzing $$url with $(FUZZ_EXAMPLES) examples per operation"; \
	printf '[phases.stateful.inference]\nalgorithms = ["location-headers"]\n' > "$$work/schemathesis.toml"; \
	start=$$(date +%s); status=0; \
	$(SCHEMATHESIS) --config-file "$$work/schemathesis.toml" run "$$url/openapi.yaml" --checks all -H "Authorization: Bearer $$BUDGET_LEDGER_TOKEN" \
		--phases examples,coverage,fuzzing,stateful --max-examples $(FUZZ_EXAMPLES) \
		--generation-database "$(abspath $(FUZZ_DIR))/examples" --report junit --report-dir "$(abspath $(FUZZ_DIR))/report" \
		--no-color $(FUZZ_FLAGS) || status=$$?; \
	echo "schemathesis exit status $$status after $$(( $$(date +%s) - start )) s"; \
	if grep -q "request failed\|export failed" "$$work/server.log"; then \
		echo "the server logged failures:"; grep "request failed\|export failed" "$$work/server.log" | head -20; \
	fi; \
	exit $$status

# The bounded run `make test` ends with (CI): 50 examples per operation, a few minutes.
fuzz-short:
	$(MAKE) fuzz FUZZ_EXAMPLES=50

# The benchmark, in release mode: figures for the real Ledger API (flags: BENCH_FLAGS=...).
bench: deps
	$(SWIFT) build -c release --product budget-ledger-bench
	$$($(SWIFT) build -c release --show-bin-path)/budget-ledger-bench $(BENCH_FLAGS)

# check-and-consume over HTTP, measured by wrk with 1, 16 and 64 connections, bracketed by the
# library's 64 concurrent callers, and each HTTP figure ÷ the library's (release build; figures
# only). BENCH_HTTP_SERVE_FLAGS go to `serve` (e.g. --ledger-threads 2). Installs Debian's wrk if missing.
BENCH_HTTP_SECONDS ?= 10
BENCH_HTTP_SERVE_FLAGS ?=
bench-http: deps
	@if ! command -v wrk > /dev/null; then $(call apt_install,wrk); fi
	$(SWIFT) build -c release --product budget-ledger
	$(SWIFT) build -c release --product budget-ledger-bench
	SERVE_FLAGS="$(BENCH_HTTP_SERVE_FLAGS)" bench/http-check-and-consume.sh $$($(SWIFT) build -c release --show-bin-path) $(BENCH_HTTP_SECONDS)

# check-and-consume over HTTP on the PostgreSQL store beside the SQLite store: one server of each
# with 1 and 64 connections, and four servers on one PostgreSQL database (a private throwaway
# cluster, stopped at the end; release build; figures only). Installs Debian's wrk if missing.
BENCH_POSTGRES_SECONDS ?= 10
bench-postgres: deps
	@if ! command -v wrk > /dev/null; then $(call apt_install,wrk); fi
	$(SWIFT) build -c release --product budget-ledger
	bench/postgres-http.sh $$($(SWIFT) build -c release --show-bin-path) $(BENCH_POSTGRES_SECONDS)

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

# Rewrites migrations/schema.sql, the whole schema after the last migration (generated; a test
# fails when it is stale).
schema: deps
	$(SWIFT) build --build-tests
	BUDGET_LEDGER_UPDATE_SCHEMA=1 $(SWIFT) test --skip-build --filter SchemaSnapshotTests

# PNGs of the dashboard at desktop (1280) and phone (390) width in .build/screenshots: headless
# Chromium against `budget-ledger serve` on a seeded ledger in a temporary folder, on a free
# loopback port; the test that takes them stops the server (DashboardBrowserTests).
screenshot: deps
	$(SWIFT) build --build-tests
	BUDGET_LEDGER_SCREENSHOT_DIR="$(abspath .build/screenshots)" $(SWIFT) test --skip-build \
		--filter DashboardBrowserTests/screenshotsOfTheSeededPage
	@ls -l .build/screenshots/*.png

clean:
	$(SWIFT) package clean
	rm -rf .build $(FUZZ_DIR) .build-python
