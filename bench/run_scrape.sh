#!/usr/bin/env bash
# run_scrape.sh -- the `make bench` driver for the scrape engine: promscrape
# against Prometheus and vmagent, same targets, same machine, one at a time.
#
# Needs ../shared (relative to the project root): without it, prints
# "../shared not found: scrape bench skipped" and exits 0. With it:
#   1. starts the synthetic targets: ../shared/bench/targets.sh start (one nginx,
#      ports BASE_PORT..BASE_PORT+199, remote-write sink on SINK_PORT, files and
#      pid under RUN_DIR);
#   2. runs promscrape (bench/scrape_promscrape.lua: a Manager with the default
#      memory-store appender) on every scenario and measures it with
#      ../shared/bench/measure.py (CPU = utime+stime from /proc/PID/stat over the
#      window, VmRSS at the end; samples = the memory store's committed-sample
#      counter, published to measure.py through a file:// "metrics URL");
#   3. runs Prometheus (server, TSDB) and vmagent (-> the 204 sink) on the same
#      scenarios through ../shared/bench/run_scrapers.sh, which measures them the
#      same way (prometheus_tsdb_head_samples_appended_total,
#      vm_promscrape_scraped_samples_sum);
#   4. prints one comparison table (docs/bench.md explains the columns).
# Never two scrapers at once (2 cores: ../shared/bench/ANCHORS.md, section 1.2).
#
# Env (defaults in brackets):
#   WARM [20] WINDOW [30] SPLITS [3]   seconds of warm-up, measured window, sub-windows
#   SCENARIOS ["200x1000@1s 20x10000@1s"]   W1 and W2 of ANCHORS.md
#   SCRAPERS ["promscrape prom vmagent"]    any of these (also promagent, vmagentsp)
#   BASE_PORT [21000] SINK_PORT [20999]     target ports (not the anchors' 20000/19999)
#   RUN_DIR [build/bench/scrape-run]        nginx files; OUT_DIR [build/bench/scrape-results]
#   BUILD [build]                           where `make` put promscrape/core.so
#   TABLE_ONLY [0]                          1: only print the table of the results in OUT_DIR
# The anchors' setup (75 s warm-up, 60 s window in 3 x 20 s):
#   WARM=75 WINDOW=60 SPLITS=3 make bench      (or: WARM=75 WINDOW=60 bash bench/run_scrape.sh)
# Prometheus and vmagent listen on 127.0.0.1:9090 / :8429 (fixed in run_scrapers.sh):
# a scraper whose port is taken is skipped, not measured.
#
# Exit: 0 whatever the figures (a scraper that fails is a row saying so); 1 when
# a prerequisite is missing (named). Everything started here is stopped by PID,
# also on Ctrl-C or error.
# The Makefile runs this with `sh`; the body needs bash, so re-exec.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the project root: ../shared is relative to it
ROOT=$PWD
if [ ! -d ../shared ]; then
    echo "../shared not found: scrape bench skipped"
    exit 0
fi
SHARED=$(cd ../shared/bench && pwd)

WARM="${WARM:-20}"; WINDOW="${WINDOW:-30}"; SPLITS="${SPLITS:-3}"
SCENARIOS="${SCENARIOS:-200x1000@1s 20x10000@1s}"
SCRAPERS="${SCRAPERS:-promscrape prom vmagent}"
BUILD="${BUILD:-build}"
export BASE_PORT="${BASE_PORT:-21000}" SINK_PORT="${SINK_PORT:-20999}"
RUN_DIR="${RUN_DIR:-$ROOT/build/bench/scrape-run}"
OUT_DIR="${OUT_DIR:-$ROOT/build/bench/scrape-results}"
case "$RUN_DIR" in /*) ;; *) RUN_DIR="$ROOT/$RUN_DIR" ;; esac  # nginx -p wants absolute paths
case "$OUT_DIR" in /*) ;; *) OUT_DIR="$ROOT/$OUT_DIR" ;; esac
export RUN_DIR OUT_DIR WARM WINDOW SPLITS

# ---- the table (from the JSONs in OUT_DIR) ------------------------------
print_table() {
echo
echo "== scrape bench: CPU-s per 1M samples = median of $SPLITS sub-windows of ${WINDOW}s; RSS at the end of the window"
python3 - "$OUT_DIR" "$SCRAPERS" "$SCENARIOS" <<'EOF'
import json, os, sys
out, scrapers, scenarios = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
names = {"promscrape": "promscrape (memory store)", "prom": "Prometheus 2.42 (TSDB)",
         "promagent": "Prometheus agent", "vmagent": "vmagent 1.79 (-> sink)",
         "vmagentsp": "vmagent streamParse"}
def load(s, sc):
    k, rest = sc.split("x", 1); n, i = rest.split("@", 1)
    try:
        return json.load(open(os.path.join(out, "%s_%sx%s_%s.json" % (s, k, n, i))))
    except (OSError, ValueError):
        return None
hdr = ["scraper", "scenario", "CPU-s/1M samples (median)", "RSS end", "RSS B/series",
       "samples/s", "vs vmagent (CPU, RSS/series)", "machine busy"]
rows = []
for s in scrapers:
    for sc in scenarios:
        r, vm = load(s, sc), load("vmagent", sc)
        if r is None or r.get("cpu_s_per_1M_samples") is None:
            rows.append([names.get(s, s), sc, "no result", "-", "-", "-", "-", "-"]); continue
        cpu, bps = r["median_sub_cpu_s_per_1M"], r["rss_bytes_per_series"]
        ratio = "-"
        if vm and vm.get("median_sub_cpu_s_per_1M") and vm.get("rss_bytes_per_series"):
            ratio = "%.2fx, %.2fx" % (cpu / vm["median_sub_cpu_s_per_1M"], bps / vm["rss_bytes_per_series"])
        rows.append([names.get(s, s), sc, "%.2f" % cpu, "%.0f MiB" % r["rss_mib"], "{:,}".format(bps),
                     "{:,}".format(r["samples_per_s"]), ratio, "%s%%" % r["machine_busy_pct"]])
w = [max(len(str(x[i])) for x in rows + [hdr]) for i in range(len(hdr))]
line = lambda x: "| " + " | ".join(str(v).ljust(w[i]) for i, v in enumerate(x)) + " |"
print(line(hdr)); print("|" + "|".join("-" * (n + 2) for n in w) + "|")
for x in rows: print(line(x))
print("goal: promscrape <= 0.20x vmagent CPU per sample and <= 0.25x its RSS per series; direction 0.4 CPU-s/1M")
EOF
echo "(raw JSON, health snapshots and promscrape's summary lines: $OUT_DIR)"
for f in "$OUT_DIR"/promscrape_*.out; do
    if [ -e "$f" ]; then echo "   $(basename "$f" .out): $(tail -1 "$f")"; fi
done
return 0
}

if [ "${TABLE_ONLY:-0}" = 1 ]; then  # print the last run's table again, run nothing
    print_table
    exit 0
fi

missing() { echo "run_scrape.sh: $1 not found${2:+ ($2)}: cannot run the scrape bench" >&2; exit 1; }
for f in targets.sh run_scrapers.sh measure.py gen_exposition.py; do
    [ -e "$SHARED/$f" ] || missing "../shared/bench/$f"
done
command -v nginx > /dev/null || missing nginx "Debian package nginx"
command -v python3 > /dev/null || missing python3
command -v lua5.4 > /dev/null || missing lua5.4 "Debian package lua5.4"
command -v curl > /dev/null || missing curl
[ -e "$BUILD/promscrape/core.so" ] || missing "$BUILD/promscrape/core.so" "run make first"

mkdir -p "$RUN_DIR" "$OUT_DIR"
rm -f "$OUT_DIR"/*.json "$OUT_DIR"/*.health "$OUT_DIR"/*.out "$OUT_DIR"/*.measure.txt "$OUT_DIR"/*.self-metrics.txt

# ---- cleanup: every process we started, by PID --------------------------
STARTED_NGINX=0
BG_PIDS=()   # direct background children (lua, measure.py, run_scrapers.sh)
RS_BEFORE="" # run_scrapers.sh temp dirs that existed before we ran it

# PIDs of the descendants of $1 (recursive, by parent PID).
descendants() {
    local c
    for c in $(pgrep -P "$1" 2> /dev/null || true); do
        descendants "$c"
        echo "$c"
    done
}

stop_pid() {
    local p=$1
    kill "$p" 2> /dev/null || return 0
    for _ in $(seq 50); do kill -0 "$p" 2> /dev/null || return 0; sleep 0.2; done
    kill -9 "$p" 2> /dev/null || true
}

cleanup() {
    local rc=$? p d i all=() dirs=() kids=()
    trap - EXIT INT TERM
    for p in "${BG_PIDS[@]}"; do
        kill -0 "$p" 2> /dev/null || continue
        # Collect the whole tree first: once run_scrapers.sh is gone, its
        # prometheus/vmagent would be re-parented and no longer findable.
        mapfile -t kids < <(descendants "$p")
        all+=("${kids[@]}" "$p")
    done
    for p in "${all[@]}"; do
        # run_scrapers.sh's temp dir (TSDB, vmagent queue), from the cmdline.
        d=$(tr '\0' '\n' 2> /dev/null < "/proc/$p/cmdline" | grep -o '/tmp/scrape-bench-run\.[A-Za-z0-9]*' | head -1 || true)
        [ -n "$d" ] && dirs+=("$d")
    done
    # Parents first (the driver scripts), so they do not start anything new.
    for ((i = ${#all[@]} - 1; i >= 0; i--)); do kill "${all[i]}" 2> /dev/null || true; done
    for p in "${all[@]}"; do stop_pid "$p"; done
    # A scraper killed by the Ctrl-C itself is gone before we read its cmdline:
    # also take the run_scrapers.sh temp dirs created since it started that
    # point at our targets.
    if [ -n "$RS_BEFORE" ]; then
        for d in /tmp/scrape-bench-run.*; do
            [ -d "$d" ] || continue
            case " $RS_BEFORE " in *" $d "*) continue ;; esac
            grep -qs "127.0.0.1:$BASE_PORT\$" "$d/scrape.yml" && dirs+=("$d")
        done
    fi
    for d in "${dirs[@]}"; do rm -rf "$d"; done
    if [ "$STARTED_NGINX" = 1 ]; then "$SHARED/targets.sh" stop > /dev/null 2>&1 || true; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "run_scrape.sh: interrupted" >&2; exit 130' INT TERM

port_busy() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }

# Runs "$@" in the background and waits for it (wait is interruptible, so
# Ctrl-C reaches the trap at once). Returns its status.
bg_wait() {
    "$@" &
    local p=$!
    BG_PIDS+=("$p")
    local rc=0
    wait "$p" || rc=$?
    return "$rc"
}

# ---- targets ------------------------------------------------------------
if [ -s "$RUN_DIR/nginx/nginx.pid" ] && kill -0 "$(cat "$RUN_DIR/nginx/nginx.pid")" 2> /dev/null; then
    echo "targets: nginx already running from $RUN_DIR (pid $(cat "$RUN_DIR/nginx/nginx.pid")); using it, leaving it running"
else
    if port_busy "$BASE_PORT" || port_busy "$SINK_PORT"; then
        echo "run_scrape.sh: port $BASE_PORT or $SINK_PORT is already in use: set BASE_PORT/SINK_PORT" >&2
        exit 1
    fi
    STARTED_NGINX=1
    "$SHARED/targets.sh" start 2> /dev/null || missing "running targets" "../shared/bench/targets.sh start failed: see $RUN_DIR/nginx/logs/error.log"
fi
NGINX_WORKER=$(pgrep -P "$(cat "$RUN_DIR/nginx/nginx.pid")" | head -1)
[ -n "$NGINX_WORKER" ] || missing "an nginx worker" "targets.sh start failed: see $RUN_DIR/nginx/logs/error.log"

echo "== scrape bench: warm ${WARM}s, window ${WINDOW}s in $SPLITS sub-windows; scenarios: $SCENARIOS; scrapers: $SCRAPERS"
echo "   load before start: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores: anything else running skews CPU figures)"

# ---- promscrape ---------------------------------------------------------
run_promscrape() { # K N I
    local K=$1 N=$2 I=$3 name="promscrape_${1}x${2}_${3}" cfg met out lpid mpid pid
    cfg="$RUN_DIR/$name.yml"; met="$RUN_DIR/$name.metrics"; out="$OUT_DIR/$name.out"
    { echo "global: {scrape_interval: $I, scrape_timeout: $I}"
      echo "scrape_configs:"; "$SHARED/targets.sh" config "$K" "$N" "$I" synthetic
    } > "$cfg"
    rm -f "$met"
    LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;" LUA_CPATH="$ROOT/$BUILD/?.so;;" \
        lua5.4 "$ROOT/bench/scrape_promscrape.lua" "$cfg" "$((WARM + WINDOW + 5))" "$met" > "$out" 2>&1 &
    lpid=$!
    BG_PIDS+=("$lpid")
    for _ in $(seq 100); do [ -s "$met" ] && break; kill -0 "$lpid" 2> /dev/null || break; sleep 0.1; done
    pid=$(sed -n 's/^pid \([0-9]*\)$/\1/p' "$out" | head -1)
    if [ ! -s "$met" ] || [ "$pid" != "$lpid" ]; then
        echo "== $name: promscrape did not start: $(tail -3 "$out" | tr '\n' ' ')" >&2
        stop_pid "$lpid"
        return 0
    fi
    echo "== $name pid $pid (warm ${WARM}s, window ${WINDOW}s)" >&2
    python3 "$SHARED/measure.py" --pid "$pid" --metrics-url "file://$met" \
        --counter promscrape_bench_samples_appended_total --series-gauge promscrape_bench_series \
        --extra-pid "$NGINX_WORKER" --warm "$WARM" --window "$WINDOW" --splits "$SPLITS" \
        --label "$name" --json "$OUT_DIR/$name.json" > "$OUT_DIR/$name.measure.txt" 2>&1 &
    mpid=$!
    BG_PIDS+=("$mpid")
    wait "$mpid" || echo "== $name: measure.py failed: $(tail -2 "$OUT_DIR/$name.measure.txt" | tr '\n' ' ')" >&2
    wait "$lpid" || echo "== $name: promscrape exited with an error: $(tail -2 "$out" | tr '\n' ' ')" >&2
    tail -1 "$out" | sed 's/^/   /' >&2
}

for scraper in $SCRAPERS; do
    for sc in $SCENARIOS; do
        K=${sc%%x*}; rest=${sc#*x}; N=${rest%%@*}; I=${rest#*@}
        case "$scraper" in
            promscrape) run_promscrape "$K" "$N" "$I" ;;
            prom | promagent | vmagent | vmagentsp)
                case "$scraper" in
                    prom*) bin=prometheus port=9090 pkg=prometheus ;;
                    *) bin=vmagent port=8429 pkg=victoria-metrics ;;
                esac
                if ! command -v "$bin" > /dev/null; then
                    echo "== $scraper $sc: $bin not found (Debian package $pkg): skipped" >&2
                    continue
                fi
                if port_busy "$port"; then
                    echo "== $scraper $sc: 127.0.0.1:$port is taken by another process: skipped" >&2
                    continue
                fi
                RS_BEFORE="- $(echo /tmp/scrape-bench-run.*)"
                bg_wait "$SHARED/run_scrapers.sh" "$scraper:$sc" > /dev/null ||
                    echo "== $scraper $sc: run_scrapers.sh failed" >&2
                ;;
            *) echo "== unknown scraper '$scraper' in SCRAPERS: skipped" >&2 ;;
        esac
        sleep 2
    done
done

print_table
exit 0
