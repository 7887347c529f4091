#!/usr/bin/env bash
# Compares builds of `budget-ledger serve` on check-and-consume over HTTP, in one run: for each
# round, each binary in turn gets a fresh ledger and wrk (the same script as make bench-http) at
# CONNECTIONS connections for SECONDS. Prints requests/s and the server's CPU per request (user +
# system, from /proc/PID/stat), which a shared machine disturbs less than requests/s. Alternating
# the binaries round by round spreads the other sessions' load over all of them alike.
# Figures only, no thresholds.
#
# Usage: bench/http-ab.sh ROUNDS SECONDS CONNECTIONS LABEL=BINARY [LABEL=BINARY …]
set -euo pipefail
rounds=${1:?usage: $0 ROUNDS SECONDS CONNECTIONS LABEL=BINARY…}
seconds=${2:?}
connections=${3:?}
shift 3
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/budget-ledger-http-ab.XXXXXX")
server=""
cleanup() { [ -n "$server" ] && kill -INT "$server" 2>/dev/null && wait "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export BUDGET_LEDGER_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

threads=$(( connections < 2 ? 1 : 2 ))
for round in $(seq "$rounds"); do
  for pair in "$@"; do
    label=${pair%%=*}
    binary=${pair#*=}
    rm -f "$work"/ab.db*
    "$binary" serve --db "$work/ab.db" --port "$port" > "$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/healthz" > /dev/null && break; sleep 0.1; done
    before=$(cpu_ticks "$server")
    wrk -t"$threads" -c"$connections" -d"${seconds}s" -s "$here/wrk-check-and-consume.lua" \
      "http://127.0.0.1:$port" > "$work/wrk.out"
    after=$(cpu_ticks "$server")
    kill -INT "$server"; wait "$server" || true; server=""
    rate=$(awk '/Requests\/sec/ { print $2 }' "$work/wrk.out")
    requests=$(awk '/requests in/ { print $1 }' "$work/wrk.out")
    non2xx=$(awk '/Non-2xx/ { print $NF }' "$work/wrk.out")
    load=$(cut -d' ' -f1 /proc/loadavg)
    awk -v r="$round" -v l="$label" -v rate="$rate" -v t=$((after - before)) -v hz="$ticks" -v n="$requests" \
      -v load="$load" -v bad="${non2xx:-0}" \
      'BEGIN { printf "round %d  %-14s %8.0f req/s  %6.1f µs CPU/request  load %s  non-2xx %s\n",
               r, l, rate, t / hz * 1e6 / n, load, bad }'
  done
done
