#!/bin/sh
# make demo: starts Debian's prometheus-node-exporter on 127.0.0.1, fetches its
# /metrics, parses it with promscrape.parse and prints a per-family summary,
# then stops what it started. (The scrape engine will replace the fetch.)
set -u
cd "$(dirname "$0")/.." || exit 1
PORT=${DEMO_PORT:-19100}
EXPORTER=$(command -v prometheus-node-exporter || echo /usr/bin/prometheus-node-exporter)
tmp=$(mktemp -d)
pid=

cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

echo "starting node_exporter on 127.0.0.1:$PORT"
"$EXPORTER" --web.listen-address="127.0.0.1:$PORT" > "$tmp/exporter.log" 2>&1 &
pid=$!
i=0
until curl -sf -o /dev/null "http://127.0.0.1:$PORT/metrics"; do
    i=$((i + 1))
    if [ $i -gt 50 ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "node_exporter did not come up:" >&2
        cat "$tmp/exporter.log" >&2
        exit 1
    fi
    sleep 0.1
done

# Fetch as Prometheus does, asking for OpenMetrics first, and keep the
# Content-Type the target answered with: it picks the parser.
ctype=$(curl -s -o "$tmp/body" -w '%{content_type}' \
    -H 'Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1' \
    "http://127.0.0.1:$PORT/metrics")
echo "fetched $(wc -c < "$tmp/body") bytes, Content-Type: $ctype"
echo
LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
    lua5.4 examples/family_summary.lua "$tmp/body" "$ctype"
