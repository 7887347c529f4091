#!/usr/bin/env bash
# Prints the REST write path's throughput beside the library's, in one run: the library
# benchmark's 64 concurrent callers (--only concurrent), check-and-consume over HTTP measured by
# wrk with 1, 16 and 64 connections (a fresh ledger for each), the library again, and then each
# HTTP figure ÷ the mean of the two library figures. The library runs before and after because
# this machine is shared and noisy: a ratio from one run is only as good as its two brackets.
# For each HTTP run it also prints the server's group commit (writes per transaction, logged at
# shutdown). Figures only, no thresholds.
#
# Usage: bench/http-check-and-consume.sh BIN_DIR [SECONDS]   (BIN_DIR: the release build's bin path)
# $SERVE_FLAGS is passed to `budget-ledger serve` (e.g. SERVE_FLAGS="--ledger-threads 2").
set -euo pipefail
bin_dir=${1:?usage: $0 BIN_DIR [SECONDS]}
seconds=${2:-10}
serve_flags=${SERVE_FLAGS:-}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/budget-ledger-bench-http.XXXXXX")
server=""
cleanup() { [ -n "$server" ] && kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
command -v wrk > /dev/null || { echo "wrk is not installed (Debian: apt-get install wrk)"; exit 1; }
export BUDGET_LEDGER_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# The library's 64 callers; prints its figures and leaves the throughput in $work/library-N.
library() {
  echo "== the library, 64 concurrent callers (budget-ledger-bench --only concurrent), ${seconds}s, FULL"
  "$bin_dir/budget-ledger-bench" --only concurrent --threads 64 --seconds "$seconds" --tmp "$work" --json 2> /dev/null \
    > "$work/library.json"
  python3 - "$work/library.json" "$work/library-$1" <<'EOF'
import json, sys
rows = {row["key"]: row["value"] for row in map(json.loads, open(sys.argv[1])) if "key" in row}
rate = rows["concurrent.full.txn_per_s"]
print(f"   {rate:8.0f} txn/s   p50 {rows['concurrent.full.p50_us'] / 1000:.2f} ms   "
      f"p99 {rows['concurrent.full.p99_us'] / 1000:.2f} ms   "
      f"writes per transaction {rows['concurrent.full.writes_per_transaction']:.2f}")
open(sys.argv[2], "w").write(f"{rate}\n")
EOF
}

# wrk against a fresh server with $1 connections; leaves the requests/s in $work/http-$1.
http() {
  local connections=$1 threads
  rm -f "$work"/http.db*
  # shellcheck disable=SC2086 # $serve_flags is a list of flags
  "$bin_dir/budget-ledger" serve --db "$work/http.db" --port "$port" $serve_flags > "$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" > /dev/null && break; sleep 0.1; done
  threads=$(( connections < 2 ? 1 : 2 ))
  echo "== HTTP check-and-consume, $connections connection(s), wrk -t$threads, ${seconds}s, FULL ${serve_flags}"
  wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$here/wrk-check-and-consume.lua" \
    "http://127.0.0.1:$port" > "$work/wrk.out"
  grep -E "Requests/sec|Non-2xx|^ +(50|99)%|Socket errors" "$work/wrk.out"
  awk '/Requests\/sec/ { print $2 }' "$work/wrk.out" > "$work/http-$connections"
  kill -INT "$server"; wait "$server" || true; server=""
  sed -n 's/.*transactions=\([0-9]*\) writes=\([0-9]*\) writesPerTransaction=\([0-9.]*\).*/    server: \2 writes in \1 transactions, \3 per transaction/p' \
    "$work/server.log"
}

library before
for connections in 1 16 64; do http "$connections"; done
library after

echo "== HTTP ÷ library (mean of before and after)"
for connections in 1 16 64; do
  awk -v c="$connections" -v h="$(cat "$work/http-$connections")" \
    -v b="$(cat "$work/library-before")" -v a="$(cat "$work/library-after")" \
    'BEGIN { printf "   %2d connection(s): %6.0f ÷ %6.0f = %.2f×\n", c, h, (b + a) / 2, h / ((b + a) / 2) }'
done
