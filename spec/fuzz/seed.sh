#!/usr/bin/env bash
# seed.sh -- builds the seed corpora in build/fuzz/corpus/ (parse, response).
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

# The response fuzzer (fuzz_response.c reads 3 option bytes, then responses
# separated by SEP, each with its own option bytes): the same sources served
# as built 200 responses, so the real formats reach the parser through
# curl. A capture is cut at a line boundary to CUT bytes, so two scrapes
# fit in run.sh's -max_len: the first gzipped with Content-Length, the
# second a shorter cut, chunked (its missing series go stale). Option bytes
# in octal: 041 = 2 scrapes + extra metrics; 220 = text + gzip; 020 = text,
# 241 = chunked with 1601-byte chunks; 040 = OpenMetrics 1.0.0.
ROUT=build/fuzz/corpus/response
SEP='\n--8<--\n'
CUT=24000
mkdir -p "$ROUT"
# The lines of file $2 that fit in $1 bytes.
lines_upto() {
    awk -v max="$1" '{ n += length($0) + 1; if (n > max) exit; print }' "$2"
}
r=0
for f in ../shared/bench/real/*.prom; do
    [ -e "$f" ] || continue
    { printf '\041\000\000\220\000'; lines_upto "$CUT" "$f"
      printf "$SEP"'\020\241'; lines_upto $((CUT / 2)) "$f"
    } > "$ROUT/real-$(basename "$f" .prom)"
    r=$((r + 1))
done
for f in ../shared/conformance/openmetrics/*/metrics; do
    [ -e "$f" ] || continue
    { printf '\000\000\000\040\000'; cat "$f"; } \
        > "$ROUT/om-$(basename "$(dirname "$f")")"
    r=$((r + 1))
done
echo "seeded $ROUT: $r inputs"
