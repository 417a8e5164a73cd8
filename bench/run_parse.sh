#!/usr/bin/env bash
# run_parse.sh -- the `make bench` driver for the parser.
#
# Runs build/bench/bench_parse (built by the Makefile, never here) over:
#   - the real captures ../shared/bench/real/*.prom, when ../shared exists;
#   - a synthetic 10,000-series exposition in build/bench/: from
#     ../shared/bench/gen_exposition.py when it exists, else from a small awk
#     generator below (same shape: HELP/TYPE, k8s-style labels, histograms).
# then times `promtool check metrics < FILE` (whole process: Go expfmt parser
# + lint + start-up; bench/ANCHORS.md section 3) as a slow reference, and
# prints one summary table.
#
# Env: PROMTOOL_RUNS [5]  BENCH_RUNS [7] (passed on to bench_parse)
# Exit: 0 on success (parse errors are results), 1 if bench_parse is missing
# or fails to run.
# The Makefile runs this with `sh`; the body needs bash (arrays), so re-exec.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the project root: ../shared is relative to it
BENCH=build/bench/bench_parse
OUT=build/bench
RUNS="${PROMTOOL_RUNS:-5}"

if [ ! -x "$BENCH" ]; then
    echo "$BENCH not found: build it first (make bench builds it)" >&2
    exit 1
fi
mkdir -p "$OUT"

# Writes an exposition of about $1 sample lines to stdout. Only for clones
# without ../shared: not byte-identical to gen_exposition.py, but the same
# mix (30% counters, 20% gauges, 40% histograms with 11 buckets, 10% summaries),
# 5-8 labels of k8s-like values, one escaped quote now and then.
synth_awk() {
    awk -v N="$1" 'BEGIN {
        srand(42)
        split("prod-eu-west-1 staging payments kube-system monitoring", ns, " ")
        split("api-gateway user-service order-service inventory auth-proxy", app, " ")
        split("GET POST PUT DELETE", meth, " ")
        split("/api/v1/users/{id} /api/v1/orders /healthz /metrics /login", hd, " ")
        split("200 201 404 500 503", code, " ")
        split("0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 +Inf", le, " ")
        n = 0; fam = 0
        while (n < N) {
            fam++; r = rand()
            kind = r < 0.3 ? "counter" : r < 0.5 ? "gauge" : r < 0.9 ? "histogram" : "summary"
            name = sprintf("app%d_%s", fam, kind == "counter" ? "requests_total" : kind == "gauge" ? "in_flight" : "duration_seconds")
            printf "# HELP %s Synthetic %s family number %d.\n", name, kind, fam
            printf "# TYPE %s %s\n", name, kind
            kids = 1 + int(rand() * 12)
            for (c = 0; c < kids && n < N; c++) {
                a = app[1 + int(rand() * 5)]
                ls = sprintf("namespace=\"%s\",pod=\"%s-%06x-%05x\",container=\"app\",app_kubernetes_io_name=\"%s\",zone=\"eu-west-1%c\",method=\"%s\",handler=\"%s\",code=\"%s\"",
                    ns[1 + int(rand() * 5)], a, int(rand() * 16777216), int(rand() * 1048576), a,
                    97 + int(rand() * 3), meth[1 + int(rand() * 4)], hd[1 + int(rand() * 5)], code[1 + int(rand() * 5)])
                if (rand() < 0.02) ls = ls ",reason=\"upstream said \\\"no\\\"\""
                if (kind == "counter" || kind == "gauge") {
                    printf "%s{%s} %.6g\n", name, ls, rand() * 1e7; n++
                } else if (kind == "histogram") {
                    t = int(rand() * 1e6); v = 0
                    for (i = 1; i <= 11; i++) { v = i == 11 ? t : v + int((t - v) * rand() * 0.5)
                        printf "%s_bucket{%s,le=\"%s\"} %d\n", name, ls, le[i], v }
                    printf "%s_sum{%s} %.6f\n%s_count{%s} %d\n", name, ls, t * rand(), name, ls, t; n += 13
                } else {
                    printf "%s{%s,quantile=\"0.5\"} %.9g\n%s{%s,quantile=\"0.9\"} %.9g\n%s{%s,quantile=\"0.99\"} %.9g\n", name, ls, rand(), name, ls, rand(), name, ls, rand()
                    printf "%s_sum{%s} %.6f\n%s_count{%s} %d\n", name, ls, rand() * 1e3, name, ls, int(rand() * 1e6); n += 5
                }
            }
        }
    }'
}

files=()
if [ -d ../shared ]; then
    for f in ../shared/bench/real/*.prom; do
        [ -e "$f" ] && files+=("$f")
    done
    synth="$OUT/m10000.prom"
    # Deterministic (same N and seed -> same bytes), so generate once.
    if [ ! -s "$synth" ]; then
        python3 ../shared/bench/gen_exposition.py 10000 > "$synth.tmp" 2>/dev/null
        mv "$synth.tmp" "$synth"
    fi
else
    echo "../shared not found: real captures skipped"
    synth="$OUT/synth10000.prom"  # another name: not the same bytes as m10000
    if [ ! -s "$synth" ]; then
        synth_awk 10000 > "$synth.tmp"
        mv "$synth.tmp" "$synth"
    fi
fi
files+=("$synth")

echo "== bench_parse (in-process parse; median of runs)"
"$BENCH" "${files[@]}" | tee "$OUT/bench_parse.txt"

# Median of the wall times (seconds) given as arguments.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Wall seconds of one `promtool check metrics < $1`. Lint findings make
# promtool exit non-zero: that is a result, not a failure here.
promtool_once() {
    local t0 t1
    t0=$EPOCHREALTIME
    promtool check metrics < "$1" > /dev/null 2>&1 || true
    t1=$EPOCHREALTIME
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }'
}

declare -A pt_mbs
if command -v promtool > /dev/null 2>&1; then
    echo
    echo "== promtool check metrics < FILE (whole process, median of $RUNS wall times)"
    times=()
    for ((i = 0; i < RUNS; i++)); do times+=("$(promtool_once /dev/null)"); done
    start=$(median "${times[@]}")
    printf '%-24s %10s %9.1f ms  (start-up only)\n' "/dev/null" 0 "$(awk -v s="$start" 'BEGIN { print s * 1e3 }')"
    for f in "${files[@]}"; do
        promtool_once "$f" > /dev/null  # warm-up: page cache, binary
        times=()
        for ((i = 0; i < RUNS; i++)); do times+=("$(promtool_once "$f")"); done
        med=$(median "${times[@]}")
        bytes=$(wc -c < "$f")
        mbs=$(awk -v b="$bytes" -v t="$med" 'BEGIN { printf "%.1f", b / t / 1e6 }')
        pt_mbs[$(basename "$f")]=$mbs
        printf '%-24s %10d %9.1f ms  %8s MB/s\n' "$(basename "$f")" "$bytes" \
            "$(awk -v s="$med" 'BEGIN { print s * 1e3 }')" "$mbs"
    done
else
    echo
    echo "promtool not found (Debian package prometheus): promtool reference skipped"
fi

# Summary: the text-mode row of each file, with promtool next to it. Error
# rows have "error:" in the samples column and are shown as such.
echo
echo "== summary (parser: text format, default mode; promtool MB/s is whole-process)"
printf '%-24s %10s %8s %10s %10s %12s %9s %14s\n' file bytes samples \
    "parser_MB/s" ns/sample memchr_MB/s x_memchr promtool_MB/s
awk '$2 == "text"' "$OUT/bench_parse.txt" | while read -r file _mode bytes samples rest; do
    pt=${pt_mbs[$file]:-skipped}
    if [ "$samples" = error: ]; then
        printf '%-24s %10s %s\n' "$file" "$bytes" "parse error: $rest"
        continue
    fi
    read -r mbs nsps mcmbs xmc <<< "$rest"
    printf '%-24s %10s %8s %10s %10s %12s %9s %14s\n' "$file" "$bytes" "$samples" \
        "$mbs" "$nsps" "$mcmbs" "$xmc" "$pt"
done
