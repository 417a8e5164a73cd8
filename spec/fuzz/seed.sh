#!/usr/bin/env bash
# seed.sh -- builds the parse fuzzer's seed corpus in build/fuzz/corpus/parse/.
#
# Sources: the OpenMetrics conformance cases (../shared/conformance/openmetrics/
# */metrics) and the real captures (../shared/bench/real/*.prom). ../shared is
# not ours: its files are copied into build/ (never into the repository),
# each three times, prefixed with the mode byte fuzz_parse.c reads first
# (0 text, 1 OpenMetrics, 2 OpenMetrics strict), so every seed reaches both
# parsers. The checked-in regression corpus spec/fuzz/corpus/parse/ already
# carries its mode bytes; run.sh passes it to libFuzzer as a second corpus.
#
# Without ../shared it says so and leaves an empty (but existing) corpus
# directory: the fuzzer still runs from the checked-in corpus.
# The Makefile runs this with `sh`; the body needs bash (arrays), so re-exec.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."  # the project root
OUT=build/fuzz/corpus/parse
mkdir -p "$OUT"

# Writes mode byte + file for each mode. $1 = source file, $2 = seed name.
seed3() {
    { printf '\000'; cat "$1"; } > "$OUT/$2.m0"
    { printf '\001'; cat "$1"; } > "$OUT/$2.m1"
    { printf '\002'; cat "$1"; } > "$OUT/$2.m2"
}

if [ ! -d ../shared ]; then
    echo "../shared not found: seed corpus skipped ($OUT left as is)"
    exit 0
fi
n=0
for f in ../shared/conformance/openmetrics/*/metrics; do
    [ -e "$f" ] || continue
    seed3 "$f" "om-$(basename "$(dirname "$f")")"
    n=$((n + 1))
done
for f in ../shared/bench/real/*.prom; do
    [ -e "$f" ] || continue
    seed3 "$f" "real-$(basename "$f" .prom)"
    n=$((n + 1))
done
echo "seeded $OUT: $n sources x 3 modes = $((n * 3)) inputs"
