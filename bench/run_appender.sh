#!/bin/sh
# run_appender.sh -- the `make bench` driver for the appenders: runs
# build/bench/bench_appender (built by the Makefile, never here).
# Env: APPENDER_SERIES [100000]  APPENDER_ROUNDS [20]
set -eu
cd "$(dirname "$0")/.."
BENCH=build/bench/bench_appender
if [ ! -x "$BENCH" ]; then
    echo "$BENCH not found: build it first (make bench builds it)" >&2
    exit 1
fi
echo "== bench_appender"
"$BENCH" "${APPENDER_SERIES:-100000}" "${APPENDER_ROUNDS:-20}"
