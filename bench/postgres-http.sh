#!/usr/bin/env bash
# Prints check-and-consume over HTTP on the PostgreSQL store beside the SQLite store, in one run:
# one `serve` on a SQLite file, one `serve` on PostgreSQL, and four `serve` processes on the same
# PostgreSQL database (the fleet shape), each measured by wrk with 1 and 64 connections (the four
# servers get 16 connections each, from four wrk processes at once, and their rates are summed).
# PostgreSQL is a private, throwaway cluster (initdb into a temp folder, loopback only, fsync and
# synchronous_commit on, as in production), run as the unprivileged user `budgetledger` when this
# runs as root (`make deps` creates it); it is stopped and removed at exit. Figures only.
#
# Usage: bench/postgres-http.sh BIN_DIR [SECONDS]   (BIN_DIR: the release build's bin path)
set -euo pipefail
bin_dir=${1:?usage: $0 BIN_DIR [SECONDS]}
seconds=${2:-10}
here=$(cd "$(dirname "$0")" && pwd)
command -v wrk > /dev/null || { echo "wrk is not installed (Debian: apt-get install wrk)"; exit 1; }
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2> /dev/null | sort -V | tail -1)
[ -x "$pg_bin/initdb" ] || { echo "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (make deps installs them)"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/budget-ledger-bench-pg.XXXXXX")
chmod 755 "$work"
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u budgetledger -- "$@"; else "$@"; fi; }
servers=()
cleanup() {
  for pid in "${servers[@]}"; do kill -INT "$pid" 2> /dev/null || true; done
  for pid in "${servers[@]}"; do wait "$pid" 2> /dev/null || true; done
  [ -d "$work/pg/data" ] && as_postgres "$pg_bin/pg_ctl" stop -m immediate -D "$work/pg/data" > /dev/null 2>&1 || true
  [ -n "${KEEP_LOGS:-}" ] && cp "$work"/*.log "$KEEP_LOGS"/ 2> /dev/null; rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export BUDGET_LEDGER_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')

# The cluster.
mkdir "$work/pg"
[ "$(id -u)" = 0 ] && chown budgetledger "$work/pg"
as_postgres "$pg_bin/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --no-locale > "$work/initdb.log"
pg_port=$(free_port)
as_postgres "$pg_bin/pg_ctl" start -w -t 60 -D "$work/pg/data" -l "$work/pg/postgres.log" \
  -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=300 -c synchronous_commit=on" > /dev/null

# Starts `serve --db $1`; leaves its port in $port and its pid in $servers.
start_server() {
  port=$(free_port)
  "$bin_dir/budget-ledger" serve --db "$1" --port "$port" > "$work/server-$port.log" 2>&1 &
  servers+=($!)
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$port/healthz" > /dev/null && return; sleep 0.1; done
  echo "the server on $1 did not start:"; cat "$work/server-$port.log"; exit 1
}
stop_servers() {
  for pid in "${servers[@]}"; do kill -INT "$pid" 2> /dev/null || true; done
  for pid in "${servers[@]}"; do wait "$pid" 2> /dev/null || true; done
  servers=()
}
# A fresh ledger: a new SQLite file, or a new PostgreSQL database.
fresh_ledger() {
  if [ "$1" = sqlite ]; then rm -f "$work"/http.db*; echo "$work/http.db"; return; fi
  # Called in $(…), a subshell: the name must not depend on a counter kept here.
  local name="bench_$(date +%s%N)"
  "$pg_bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres -c "CREATE DATABASE $name" postgres > /dev/null
  echo "postgres://postgres@127.0.0.1:$pg_port/$name"
}
# wrk against http://127.0.0.1:$1 with $2 connections; prints requests/s.
measure() {
  local threads=$(( $2 < 2 ? 1 : 2 ))
  wrk -t"$threads" -c"$2" -d"${seconds}s" -s "$here/wrk-check-and-consume.lua" "http://127.0.0.1:$1" > "$work/wrk-$1.out"
  if grep -q "Non-2xx" "$work/wrk-$1.out"; then grep "Non-2xx" "$work/wrk-$1.out" >&2; fi
  awk '/Requests\/sec/ { print $2 }' "$work/wrk-$1.out"
}

declare -A rate
for store in sqlite postgres; do
  for connections in 1 64; do
    start_server "$(fresh_ledger $store)"
    rate[$store-$connections]=$(measure "$port" "$connections")
    printf "== %-8s 1 server,  %2d connection(s): %8.0f req/s\n" "$store" "$connections" "${rate[$store-$connections]}"
    stop_servers
  done
done
# Four servers on one PostgreSQL database, 16 connections each, measured at once.
url=$(fresh_ledger postgres)
ports=()
for _ in 1 2 3 4; do start_server "$url"; ports+=("$port"); done
loads=()
for p in "${ports[@]}"; do
  wrk -t1 -c16 -d"${seconds}s" -s "$here/wrk-check-and-consume.lua" "http://127.0.0.1:$p" > "$work/wrk-$p.out" &
  loads+=($!)
done
wait "${loads[@]}"
total=0
for p in "${ports[@]}"; do
  grep -q "Non-2xx" "$work/wrk-$p.out" && grep "Non-2xx" "$work/wrk-$p.out" >&2
  total=$(awk -v t="$total" '/Requests\/sec/ { print t + $2 }' "$work/wrk-$p.out")
done
rate[postgres4]=$total
printf "== postgres 4 servers, 4 × 16 connections: %8.0f req/s\n" "$total"
stop_servers

echo "== PostgreSQL ÷ SQLite (same run)"
for connections in 1 64; do
  awk -v c="$connections" -v p="${rate[postgres-$connections]}" -v s="${rate[sqlite-$connections]}" \
    'BEGIN { printf "   1 server, %2d connection(s): %6.0f ÷ %6.0f = %.2f×\n", c, p, s, p / s }'
done
awk -v p="${rate[postgres4]}" -v s="${rate[sqlite-64]}" \
  'BEGIN { printf "   4 servers, 64 connections:  %6.0f ÷ %6.0f = %.2f× (SQLite: one server)\n", p, s, p / s }'
