#!/bin/sh
# bench/soak/run.sh: `make soak`, the long-running test of `promscrape run`
# (docs/soak.md). Not part of `make check`: it takes SOAK_SECONDS.
#
# It starts Debian's nginx on 127.0.0.1 as SOAK_TARGETS (+ spare, side and
# extra) scrape targets, then `bin/promscrape run --listen 127.0.0.1:0` on a
# generated prometheus.yml, as separate processes. The driver
# (bench/soak/soak.py drive) churns the file_sd targets every 30 s, reloads
# with SIGHUP every 10 s and samples RSS every 10 s; at the end it stops
# promscrape, this script stops nginx (so its access log is complete) and
# `soak.py analyze` judges the run. The pass rules are in soak.py's header.
#
# Env (defaults in brackets): SOAK_SECONDS [1800] SOAK_TARGETS [200]
#   SOAK_WARMUP [600] (seconds before the RSS baseline; see docs/soak.md),
#   SOAK_DIR [build/soak] (logs and results, kept; re-judge with
#   `python3 bench/soak/soak.py analyze build/soak`), SOAK_BASE_PORT [23000]
#   (first port tried), and the finer knobs listed in soak.py.
# Exit: 0 passed, 1 failed (the reason is the last line), 130 interrupted.
# Everything started here is stopped by pid, also on Ctrl-C and on failure.
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
SOAK_DIR=${SOAK_DIR:-$ROOT/build/soak}
case "$SOAK_DIR" in /*) ;; *) SOAK_DIR=$ROOT/$SOAK_DIR ;; esac  # nginx wants absolute paths
SOAK_PROMSCRAPE_ARGS=${SOAK_PROMSCRAPE_ARGS:-}  # extra options for promscrape run
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

for need in python3 lua5.4 curl; do
    command -v "$need" >/dev/null 2>&1 || { echo "soak: $need is missing: run 'make deps' (as root)" >&2; exit 1; }
done
[ -x "$NGINX" ] || { echo "soak: nginx is missing: run 'make deps' (as root)" >&2; exit 1; }
# bin/promscrape loads the module from build/, next to it
[ -f build/promscrape/core.so ] || { echo "soak: build/promscrape/core.so is missing: run 'make'" >&2; exit 1; }

# The files nginx serves live in a fresh folder under /tmp: nginx's workers
# run as nobody when started by root and may not reach into the clone. Its
# logs are opened by the master, so they can go to SOAK_DIR.
www=
nginx_pid=
drive_pid=
stop() {  # stop pid [signal]: signal it, wait for it
    [ -n "$1" ] || return 0
    kill "-${2:-TERM}" "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
cleanup() {
    stop "$drive_pid"
    # only if the driver could not stop it: the pid it wrote, if still there
    ps_pid=$(cat "$SOAK_DIR/promscrape.pid" 2>/dev/null)
    [ -n "$ps_pid" ] && kill -0 "$ps_pid" 2>/dev/null && kill "$ps_pid"
    stop "$nginx_pid" QUIT  # graceful: the access log is flushed
    drive_pid= nginx_pid=
    [ -n "$www" ] && rm -rf "$www"
    www=
}
trap cleanup EXIT
trap 'echo "soak: interrupted; logs in $SOAK_DIR" >&2; exit 130' INT TERM HUP

mkdir -p "$SOAK_DIR" || exit 1
# a previous run's files only: SOAK_DIR may be any folder
(cd "$SOAK_DIR" && rm -f access.log events.tsv nginx-error.log nginx.conf nginx.pid \
    prometheus.yml promscrape.err promscrape.log promscrape.pid rss.tsv sched.tsv \
    state.json targets.json)
www=$(mktemp -d "${TMPDIR:-/tmp}/promscrape-soak.XXXXXX") || exit 1
chmod 755 "$www"
python3 bench/soak/soak.py setup "$SOAK_DIR" "$www" || exit 1

"$NGINX" -p "$www" -c "$SOAK_DIR/nginx.conf" -e "$SOAK_DIR/nginx-error.log" &
nginx_pid=$!
port=$(sed -n 's/^ *listen 127\.0\.0\.1:\([0-9]*\);/\1/p' "$SOAK_DIR/nginx.conf" | head -n 1)
i=0
until curl -sf -o /dev/null "http://127.0.0.1:$port/soak-probe"; do  # soak.py skips this URI
    i=$((i + 1))
    if [ $i -gt 50 ] || ! kill -0 "$nginx_pid" 2>/dev/null; then
        echo "soak: nginx did not come up:" >&2
        cat "$SOAK_DIR/nginx-error.log" >&2
        exit 1
    fi
    sleep 0.1
done

# The driver starts promscrape itself (and stops it, also when it fails or
# gets SIGTERM). In the background, so that a signal to this script runs the
# trap at once.
SOAK_NGINX_PID=$nginx_pid python3 bench/soak/soak.py drive "$SOAK_DIR" bin/promscrape run --no-table \
    --listen 127.0.0.1:0 $SOAK_PROMSCRAPE_ARGS "$SOAK_DIR/prometheus.yml" &
drive_pid=$!
wait "$drive_pid"
rc=$?
drive_pid=
stop "$nginx_pid" QUIT
nginx_pid=
[ $rc -eq 0 ] || { echo "soak: the driver failed (status $rc); logs in $SOAK_DIR" >&2; exit 1; }
python3 bench/soak/soak.py analyze "$SOAK_DIR"
rc=$?
echo "soak: logs and results in $SOAK_DIR"
exit $rc
