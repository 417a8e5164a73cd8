#!/usr/bin/env bash
# run_remote_write_e2e.sh -- `make bench`, remote write end to end: promscrape
# scraping the synthetic targets and remote-writing everything to the nginx
# 204 sink, then vmagent doing the same (same targets, same sink, one after
# the other: 2 cores). CPU per million samples, side by side in one table.
#
# Reuses ../shared/bench (targets.sh: nginx targets on BASE_PORT.. and the
# remote-write sink on SINK_PORT; measure.py; run_scrapers.sh for vmagent),
# like bench/run_scrape.sh. Without ../shared: prints a line and exits 0.
# Env [defaults]: WARM [20] WINDOW [30] SPLITS [3]
#   SCENARIOS ["200x1000@1s 20x10000@1s"] SHARDS [0] (promscrape's queue
#   shards; 0: Prometheus's defaults, resharding between 1 and 50)
#   BASE_PORT [21000] SINK_PORT [20999] BUILD [build]
#   RUN_DIR [build/bench/rw-run] OUT_DIR [build/bench/rw-results]
# Everything started here is stopped by PID, also on Ctrl-C or error.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
if [ ! -d ../shared ]; then echo "../shared not found: remote write bench skipped"; exit 0; fi
SHARED=$(cd ../shared/bench && pwd)
WARM="${WARM:-20}"; WINDOW="${WINDOW:-30}"; SPLITS="${SPLITS:-3}"
SCENARIOS="${SCENARIOS:-200x1000@1s 20x10000@1s}"; SHARDS="${SHARDS:-0}"; BUILD="${BUILD:-build}"
export BASE_PORT="${BASE_PORT:-21000}" SINK_PORT="${SINK_PORT:-20999}"
RUN_DIR="${RUN_DIR:-$ROOT/build/bench/rw-run}"; OUT_DIR="${OUT_DIR:-$ROOT/build/bench/rw-results}"
export RUN_DIR OUT_DIR WARM WINDOW SPLITS
SINK="http://127.0.0.1:$SINK_PORT/api/v1/write"
[ -e "$BUILD/promscrape/core.so" ] || { echo "run make first" >&2; exit 1; }
command -v nginx > /dev/null || { echo "nginx not found" >&2; exit 1; }
mkdir -p "$RUN_DIR" "$OUT_DIR"
rm -f "$OUT_DIR"/*.json "$OUT_DIR"/*.out

PIDS=(); STARTED_NGINX=0
stop_pid() { kill "$1" 2> /dev/null || return 0; for _ in $(seq 50); do kill -0 "$1" 2> /dev/null || return 0; sleep 0.2; done; kill -9 "$1" 2> /dev/null || true; }
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do for c in $(pgrep -P "$p" 2> /dev/null || true); do stop_pid "$c"; done; stop_pid "$p"; done
    if [ "$STARTED_NGINX" = 1 ]; then "$SHARED/targets.sh" stop > /dev/null 2>&1 || true; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -s "$RUN_DIR/nginx/nginx.pid" ] && kill -0 "$(cat "$RUN_DIR/nginx/nginx.pid")" 2> /dev/null; then
    echo "targets: nginx already running from $RUN_DIR"
else
    if (exec 3<> "/dev/tcp/127.0.0.1/$BASE_PORT") 2> /dev/null || (exec 3<> "/dev/tcp/127.0.0.1/$SINK_PORT") 2> /dev/null; then
        echo "run_remote_write_e2e.sh: port $BASE_PORT or $SINK_PORT is in use (another bench?): set BASE_PORT/SINK_PORT, or RUN_DIR to its nginx" >&2
        exit 1
    fi
    STARTED_NGINX=1
    "$SHARED/targets.sh" start > /dev/null 2>&1 || { echo "targets.sh start failed" >&2; exit 1; }
fi
NGINX_WORKER=$(pgrep -P "$(cat "$RUN_DIR/nginx/nginx.pid")" | head -1)
echo "== remote write bench: warm ${WARM}s, window ${WINDOW}s; scenarios: $SCENARIOS; sink $SINK"
echo "   load before start: $(cut -d' ' -f1-3 /proc/loadavg)"

for sc in $SCENARIOS; do
    K=${sc%%x*}; rest=${sc#*x}; N=${rest%%@*}; I=${rest#*@}
    name="promscrape_rw_${K}x${N}_${I}"; cfg="$RUN_DIR/$name.yml"; met="$RUN_DIR/$name.metrics"; out="$OUT_DIR/$name.out"
    { echo "global: {scrape_interval: $I, scrape_timeout: $I}"; echo "scrape_configs:"
      "$SHARED/targets.sh" config "$K" "$N" "$I" synthetic; } > "$cfg"
    rm -f "$met"
    LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" LUA_CPATH="$ROOT/$BUILD/?.so;;" \
        lua5.4 bench/scrape_remote_write.lua "$cfg" "$((WARM + WINDOW + 5))" "$met" "$SINK" "$SHARDS" "$WARM" > "$out" 2>&1 &
    lpid=$!; PIDS+=("$lpid")
    for _ in $(seq 100); do [ -s "$met" ] && break; sleep 0.1; done
    echo "== $name pid $lpid" >&2
    python3 "$SHARED/measure.py" --pid "$lpid" --metrics-url "file://$met" \
        --counter promscrape_bench_samples_appended_total --series-gauge promscrape_bench_series \
        --extra-pid "$NGINX_WORKER" --warm "$WARM" --window "$WINDOW" --splits "$SPLITS" \
        --label "$name" --json "$OUT_DIR/$name.json" > "$OUT_DIR/$name.measure.txt" 2>&1 || true
    wait "$lpid" || true
    echo "   $(tail -1 "$out")" >&2
    sleep 2
    "$SHARED/run_scrapers.sh" "vmagent:$sc" > /dev/null &
    PIDS+=("$!"); wait "$!" || echo "== vmagent $sc: run_scrapers.sh failed" >&2
    sleep 2
done

echo
echo "== remote write bench: CPU-s per 1M samples (median of $SPLITS sub-windows of ${WINDOW}s), scrape + remote write to the same 204 sink"
python3 - "$OUT_DIR" "$SCENARIOS" <<'PY'
import json, os, sys
out, scenarios = sys.argv[1], sys.argv[2].split()
def load(n):
    try: return json.load(open(os.path.join(out, n + ".json")))
    except (OSError, ValueError): return None
rows = [["scraper", "scenario", "CPU-s/1M samples", "samples/s", "RSS end", "vs vmagent (CPU)", "machine busy"]]
for sc in scenarios:
    k, rest = sc.split("x", 1); n, i = rest.split("@", 1); tag = "%sx%s_%s" % (k, n, i)
    p, v = load("promscrape_rw_" + tag), load("vmagent_" + tag)
    for label, r in (("promscrape -> remote write", p), ("vmagent -> remote write", v)):
        if not r or r.get("median_sub_cpu_s_per_1M") is None:
            rows.append([label, sc, "no result", "-", "-", "-", "-"]); continue
        ratio = "-"
        if r is p and v and v.get("median_sub_cpu_s_per_1M"):
            ratio = "%.2fx" % (r["median_sub_cpu_s_per_1M"] / v["median_sub_cpu_s_per_1M"])
        rows.append([label, sc, "%.2f" % r["median_sub_cpu_s_per_1M"], "{:,}".format(r["samples_per_s"]),
                     "%.0f MiB" % r["rss_mib"], ratio, "%s%%" % r["machine_busy_pct"]])
w = [max(len(str(x[c])) for x in rows) for c in range(len(rows[0]))]
for j, x in enumerate(rows):
    print("| " + " | ".join(str(s).ljust(w[c]) for c, s in enumerate(x)) + " |")
    if j == 0: print("|" + "|".join("-" * (m + 2) for m in w) + "|")
print("goal (issue 6): promscrape <= 1/3 of vmagent's CPU per sample")
PY
