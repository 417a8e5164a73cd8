#!/bin/sh
# run_relabel.sh -- the `make bench` driver for relabeling: runs
# build/bench/bench_relabel (built by the Makefile) and keeps its output in
# build/bench/bench_relabel.txt. Env: BENCH_RUNS [7].
cd "$(dirname "$0")/.." || exit 1
BENCH=${BUILD:-build}/bench/bench_relabel
if [ ! -x "$BENCH" ]; then
    echo "$BENCH not found: build it first (make bench builds it)" >&2
    exit 1
fi
mkdir -p build/bench
"$BENCH" "${BENCH_RUNS:-7}" | tee build/bench/bench_relabel.txt
