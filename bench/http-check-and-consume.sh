#!/usr/bin/env bash
# Prints the REST write path's throughput beside the library's: check-and-consume over HTTP
# measured by wrk with 1, 16 and 64 connections (a fresh ledger for each), then the library
# benchmark's 64 concurrent callers (--only concurrent). Figures only, no thresholds.
#
# Usage: bench/http-check-and-consume.sh BIN_DIR [SECONDS]   (BIN_DIR: the release build's bin path)
set -euo pipefail
bin_dir=${1:?usage: $0 BIN_DIR [SECONDS]}
seconds=${2:-10}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/budget-ledger-bench-http.XXXXXX")
server=""
cleanup() { [ -n "$server" ] && kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
command -v wrk > /dev/null || { echo "wrk is not installed (Debian: apt-get install wrk)"; exit 1; }
export BUDGET_LEDGER_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

for connections in 1 16 64; do
  rm -f "$work"/http.db*
  "$bin_dir/budget-ledger" serve --db "$work/http.db" --port "$port" > "$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" > /dev/null && break; sleep 0.1; done
  threads=$(( connections < 2 ? 1 : 2 ))
  echo "== HTTP check-and-consume, $connections connection(s), wrk -t$threads, ${seconds}s, FULL"
  wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency -s "$here/wrk-check-and-consume.lua" \
    "http://127.0.0.1:$port" | grep -E "Requests/sec|Non-2xx|50%|99%|Socket errors"
  kill -INT "$server"; wait "$server" || true; server=""
done

echo "== the library, 64 concurrent callers (budget-ledger-bench --only concurrent)"
"$bin_dir/budget-ledger-bench" --only concurrent --threads 64 --seconds "$seconds" --tmp "$work"
