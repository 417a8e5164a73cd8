#!/bin/sh
# make demo: starts Debian's prometheus-node-exporter on 127.0.0.1 and runs
#   bin/promscrape run <config> --duration 20 --listen 127.0.0.1:9099
# with examples/prometheus.yml: it scrapes node_exporter and promscrape's own
# --listen endpoint (/metrics) for a short, visible while (a live table on a
# terminal, log lines otherwise), fetches /api/v1/targets once and prints a
# summary, then stops what it started. Installs nothing: `make demo` runs the
# deps step (.ci/deps.sh) first.
set -u
cd "$(dirname "$0")/.." || exit 1
DURATION=${DEMO_DURATION:-20}
EXPORTER=$(command -v prometheus-node-exporter || echo /usr/bin/prometheus-node-exporter)
tmp=$(mktemp -d)
exporter_pid=
run_pid=

cleanup() {
    [ -n "$run_pid" ] && kill "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
    [ -n "$exporter_pid" ] && kill "$exporter_pid" 2>/dev/null && wait "$exporter_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ ! -x "$EXPORTER" ]; then
    echo "prometheus-node-exporter is not installed: run 'make deps' (as root) first" >&2
    exit 1
fi

# A port on 127.0.0.1 nobody answers on: the wanted one, else a free one.
port_for() {
    if ! curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/"; then
        echo "$1"
    else
        python3 -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    fi
}
NODE_PORT=$(port_for "${DEMO_NODE_PORT:-9100}")
LISTEN_PORT=$(port_for "${DEMO_LISTEN_PORT:-9099}")

echo "starting node_exporter on 127.0.0.1:$NODE_PORT"
"$EXPORTER" --web.listen-address="127.0.0.1:$NODE_PORT" > "$tmp/exporter.log" 2>&1 &
exporter_pid=$!
i=0
until curl -sf -o /dev/null "http://127.0.0.1:$NODE_PORT/metrics"; do
    i=$((i + 1))
    if [ $i -gt 50 ] || ! kill -0 "$exporter_pid" 2>/dev/null; then
        echo "node_exporter did not come up:" >&2
        cat "$tmp/exporter.log" >&2
        exit 1
    fi
    sleep 0.1
done

# examples/prometheus.yml, pointed at the ports actually used.
sed -e "s/127\.0\.0\.1:9100/127.0.0.1:$NODE_PORT/" \
    -e "s/127\.0\.0\.1:9099/127.0.0.1:$LISTEN_PORT/" \
    examples/prometheus.yml > "$tmp/prometheus.yml"
# A short interval so the demo shows a few scrapes in its 20 seconds.
sed -i -e 's/^  scrape_interval: 15s.*/  scrape_interval: 5s/' -e 's/^  scrape_timeout: 10s.*/  scrape_timeout: 5s/' \
    "$tmp/prometheus.yml"

echo "running: bin/promscrape run prometheus.yml --duration $DURATION --listen 127.0.0.1:$LISTEN_PORT"
sleep 1
bin/promscrape run "$tmp/prometheus.yml" --duration "$DURATION" \
    --listen "127.0.0.1:$LISTEN_PORT" &
run_pid=$!

# Fetch the target list once, near the end of the run, quietly.
sleep $((DURATION - 4))
curl -s --max-time 3 "http://127.0.0.1:$LISTEN_PORT/api/v1/targets" > "$tmp/targets.json"
wait "$run_pid"
status=$?
run_pid=

echo
echo "GET http://127.0.0.1:$LISTEN_PORT/api/v1/targets (fetched during the run):"
lua5.4 - "$tmp/targets.json" <<'LUA'
local f = io.open(arg[1]) local body = f and f:read("*a") or "" if f then f:close() end
local ok, doc = pcall(require("cjson").decode, body)
if not ok or type(doc) ~= "table" or doc.status ~= "success" then
  print("  (no answer: " .. (body ~= "" and body or "empty") .. ")") os.exit(1)
end
print(string.format("  %-12s %-24s %-8s %-10s %s", "POOL", "INSTANCE", "HEALTH", "DURATION", "LAST SCRAPE"))
for _, t in ipairs(doc.data.activeTargets) do
  print(string.format("  %-12s %-24s %-8s %-10s %s", t.scrapePool, t.labels.instance or "",
    t.health, string.format("%.1fms", (t.lastScrapeDuration or 0) * 1000), t.lastScrape))
  if t.lastError ~= "" then print("    last error: " .. t.lastError) end
end
print(string.format("  %d active, %d dropped", #doc.data.activeTargets, #doc.data.droppedTargets))
LUA
echo
echo "stopping node_exporter"
exit $status
