#!/bin/sh
# examples/nginx/run.sh: starts the example nginx (make nginx-demo) on
# 127.0.0.1 with Debian's nginx and lua module, in a fresh temp prefix
# (non-root safe), prints the URLs, and stops it (by its pid file) on
# Ctrl-C or after NGINX_DEMO_SECONDS (default: until Ctrl-C).
#   PORT (default 9145) and TARGET_PORT (9146) choose the loopback ports.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PORT=${PORT:-9145}
TARGET_PORT=${TARGET_PORT:-9146}
NGINX=${NGINX:-/usr/sbin/nginx}
[ -x "$NGINX" ] || { echo "nginx not found: apt-get install nginx libnginx-mod-http-lua" >&2; exit 1; }
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] ||
    { echo "the lua module is missing: apt-get install libnginx-mod-http-lua" >&2; exit 1; }
[ -f "$ROOT/build/luajit/promscrape/core.so" ] ||
    { echo "build/luajit/promscrape/core.so is missing: run make luajit" >&2; exit 1; }
PREFIX=$(mktemp -d "${TMPDIR:-/tmp}/promscrape-nginx.XXXXXX")
mkdir -p "$PREFIX/tmp" "$PREFIX/logs"
# as root, the workers run as nobody: they must read the rendered config
chmod 755 "$PREFIX"
render() {
    sed -e "s|@ROOT@|$ROOT|g" -e "s|@PREFIX@|$PREFIX|g" \
        -e "s|@PORT@|$PORT|g" -e "s|@TARGET_PORT@|$TARGET_PORT|g" "$1" > "$2"
}
render "$ROOT/examples/nginx/nginx.conf" "$PREFIX/nginx.conf"
render "$ROOT/examples/nginx/prometheus.yml" "$PREFIX/prometheus.yml"
stop() {
    if [ -f "$PREFIX/nginx.pid" ]; then
        pid=$(cat "$PREFIX/nginx.pid")
        kill -QUIT "$pid" 2>/dev/null || true
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "stopped; logs were in $PREFIX (removed)"
    rm -rf "$PREFIX"
}
trap 'stop; exit 0' INT TERM
"$NGINX" -p "$PREFIX" -c "$PREFIX/nginx.conf" -e "$PREFIX/error.log"
cat <<MSG
nginx is running (pid $(cat "$PREFIX/nginx.pid"), prefix $PREFIX):
  http://127.0.0.1:$PORT/targets          the targets page
  http://127.0.0.1:$PORT/api/v1/targets   the same as JSON (Prometheus's shape)
  http://127.0.0.1:$PORT/federate         the memory store as text exposition
  http://127.0.0.1:$TARGET_PORT/metrics          a scraped target (/slow: a slow one)
Ctrl-C stops it.
MSG
if [ -n "${NGINX_DEMO_SECONDS:-}" ]; then
    sleep "$NGINX_DEMO_SECONDS"
    stop
else
    while :; do sleep 1; done
fi
