#!/usr/bin/env bash
# Compares builds of budget-ledger-bench on the write path beside the raw C reference, in one run:
# each round runs the reference (../shared/reference/run.sh, SKIP_GROWTH=1 REPS=1), then each
# binary's single-caller and 64-caller parts against that round's reference, then the reference's
# bulk insert (ledgerbench build … --bulk, as run.sh does) and each binary's import part. The
# order of the binaries is reversed every other round, so the machine's drift falls on all alike.
# Figures only, no thresholds.
#
# Usage: bench/write-path-ab.sh ROUNDS LABEL=BENCH_BINARY [LABEL=BENCH_BINARY …]
#   (BENCH_BINARY: a release build's budget-ledger-bench; REFERENCE=dir of run.sh, default ../shared/reference)
set -euo pipefail
rounds=${1:?usage: $0 ROUNDS LABEL=BINARY…}
shift
reference=${REFERENCE:-$(cd "$(dirname "$0")/.." && pwd)/../shared/reference}
work=$(mktemp -d "${TMPDIR:-/tmp}/budget-ledger-write-ab.XXXXXX")
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/ledgerbench" "$reference/ledgerbench.c" -lsqlite3
builds=("$@")
for round in $(seq 1 "$rounds"); do
    mkdir -p "$work/reference"
    (cd "$work/reference" && SKIP_GROWTH=1 REPS=1 LEDGER_TMP="$work/reference" bash "$reference/run.sh" > /dev/null 2>&1)
    echo "round $round, load $(cut -d' ' -f1 /proc/loadavg); reference: $(grep -E '^R (c1_normal|c1_full)\.tps|^R fsync.overwrite_fdatasync_us' "$work/reference/results.txt" | awk '{printf "%s=%s ", $2, $3}')"
    order=("${builds[@]}")
    if [ $((round % 2)) -eq 0 ]; then order=(); for ((i = ${#builds[@]} - 1; i >= 0; i--)); do order+=("${builds[$i]}"); done; fi
    for build in "${order[@]}"; do
        rm -rf "$work/ledgers"; mkdir -p "$work/ledgers"
        "${build#*=}" --only single,concurrent --seconds 3 --tmp "$work/ledgers" --compare-reference "$work/reference/results.txt" 2>&1 \
            | grep -E '^[13] ' | grep -E 'throughput|CPU per call|writes per|share|÷ \(1\)' | sed 's/  */ /g; s/^/'"${build%%=*}"': /'
    done
    rm -rf "$work/bulk"; mkdir -p "$work/bulk"
    echo "reference bulk insert: $("$work/ledgerbench" build --db "$work/bulk/bulk.db" --fresh --rows 1000000 --bulk --cache-mb 1024 --batch 100000 --label build1m_bulk 2>&1 | grep rows_per_s)"
    rm -rf "$work/bulk" "$work/reference"
    for build in "${order[@]}"; do
        rm -rf "$work/ledgers"; mkdir -p "$work/ledgers"
        "${build#*=}" --only import --import-rows 200000 --tmp "$work/ledgers" 2>&1 \
            | grep -E '^9 ' | grep -E 'rows|CPU' | sed 's/  */ /g; s/^/'"${build%%=*}"': /'
    done
done
