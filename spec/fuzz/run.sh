#!/usr/bin/env bash
# run.sh TARGET SECONDS -- one libFuzzer session on build/fuzz/fuzz_TARGET.
#
# Corpora: build/fuzz/corpus/TARGET (first: libFuzzer writes new inputs
# there, so the repository stays clean; make it with seed.sh) and the
# checked-in spec/fuzz/corpus/TARGET (read only). Crash, leak and timeout
# inputs go to build/fuzz/artifacts/. spec/fuzz/TARGET.dict is used when it
# exists. Prints the final execution count; exits with libFuzzer's status
# (non-zero when it found something). Extra arguments go to libFuzzer.
# The Makefile runs this with `sh`; the body needs bash (arrays), so re-exec.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."  # the project root
if [ $# -lt 2 ]; then
    echo "usage: $0 TARGET SECONDS [libFuzzer options...]" >&2
    exit 2
fi
T=$1 SECS=$2
shift 2
BIN=build/fuzz/fuzz_$T
if [ ! -x "$BIN" ]; then
    echo "$BIN not found: build it first (make fuzz)" >&2
    exit 1
fi
mkdir -p "build/fuzz/corpus/$T" build/fuzz/artifacts
corpora=("build/fuzz/corpus/$T")
[ -d "spec/fuzz/corpus/$T" ] && corpora+=("spec/fuzz/corpus/$T")
dict=()
[ -f "spec/fuzz/$T.dict" ] && dict=("-dict=spec/fuzz/$T.dict")
log=build/fuzz/fuzz_$T.log

rc=0
"$BIN" -max_total_time="$SECS" -max_len=65536 -print_final_stats=1 \
    -artifact_prefix=build/fuzz/artifacts/ "${dict[@]}" "$@" \
    "${corpora[@]}" 2>&1 | tee "$log" || rc=$?
execs=$(awk '/stat::number_of_executed_units:/ { n = $2 } END { print n + 0 }' "$log")
echo "fuzz_$T: $execs executions in ${SECS}s (log: $log)"
if [ "$rc" -ne 0 ]; then
    echo "fuzz_$T: libFuzzer exited $rc; see build/fuzz/artifacts/ and $log" >&2
fi
exit "$rc"
