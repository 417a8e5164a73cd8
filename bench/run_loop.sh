#!/bin/sh
# run_loop.sh -- the `make bench` driver for one scraped sample without HTTP
# (parse + scrape cache + staleness + memory store): runs
# build/bench/bench_loop (built by the Makefile, never here) on
#   - ../shared/bench/gen_exposition.py bodies of 1,000 and 10,000 series
#     (k8s-style, generated once into build/bench/), and
#   - the real captures ../shared/bench/real/*.prom,
# with the fast line path (the default) and with full_parse (-f).
# Without ../shared it prints "../shared not found: loop bench skipped" and
# exits 0.
#
# Env: LOOP_ROUNDS [20] LOOP_RUNS [5] (bench_loop -r / -n); BUILD [build]
#      CALLGRIND [0]: 1 also counts instructions per sample under
#      valgrind --tool=callgrind (one run of 5 steady scrapes per body; this is
#      what docs/bench.md quotes; about a minute).
set -eu
cd "$(dirname "$0")/.."
BENCH=${BUILD:-build}/bench/bench_loop
OUT=build/bench
if [ ! -x "$BENCH" ]; then
    echo "$BENCH not found: build it first (make bench builds it)" >&2
    exit 1
fi
if [ ! -d ../shared ]; then
    echo "../shared not found: loop bench skipped"
    exit 0
fi
mkdir -p "$OUT"
for n in 1000 10000; do
    # Deterministic (same N and seed -> same bytes), so generate once.
    if [ ! -s "$OUT/m$n.prom" ]; then
        python3 ../shared/bench/gen_exposition.py $n > "$OUT/m$n.prom.tmp" 2>/dev/null
        mv "$OUT/m$n.prom.tmp" "$OUT/m$n.prom"
    fi
done
set -- "$OUT/m1000.prom" "$OUT/m10000.prom" ../shared/bench/real/*.prom
R=${LOOP_ROUNDS:-20}
N=${LOOP_RUNS:-5}

echo "== bench_loop (steady scrapes, every series a cache hit; median of $N runs)"
"$BENCH" -r "$R" -n "$N" "$@"
"$BENCH" -f -r "$R" -n "$N" "$@"

if [ "${CALLGRIND:-0}" = 1 ]; then
    if ! command -v valgrind > /dev/null 2>&1; then
        echo "valgrind not found: instruction counts skipped"
        exit 0
    fi
    echo
    echo "== instructions per sample (callgrind, 5 steady scrapes)"
    printf '%-28s %10s %10s\n' body fast full
    for f in "$@"; do
        row=""
        for flag in "" -f; do
            cg="$OUT/callgrind.loop.$$"
            samples=$(valgrind --tool=callgrind --callgrind-out-file="$cg" \
                --toggle-collect=measured_scrapes "$BENCH" $flag -n 1 -r 5 "$f" \
                2> /dev/null | awk '{ print $2 }')
            ir=$(awk '/^summary:/ { print $2 }' "$cg")
            rm -f "$cg"
            row="$row $(awk -v i="$ir" -v s="$samples" 'BEGIN { printf "%10.0f", i / (5 * s) }')"
        done
        printf '%-28s%s\n' "$(basename "$f")" "$row"
    done
fi
