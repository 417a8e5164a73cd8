#!/bin/sh
# run_remote_write.sh -- the `make bench` driver for remote write: runs
# build/bench/bench_remote_write (built by the Makefile, never here).
# Env: REMOTE_WRITE_ROUNDS [200] (2,000-sample batches per run)
set -eu
cd "$(dirname "$0")/.."
BENCH=build/bench/bench_remote_write
if [ ! -x "$BENCH" ]; then
    echo "$BENCH not found: build it first (make bench builds it)" >&2
    exit 1
fi
echo "== bench_remote_write"
"$BENCH" "${REMOTE_WRITE_ROUNDS:-200}"
