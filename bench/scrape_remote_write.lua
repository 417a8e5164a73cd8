-- scrape_remote_write.lua -- the promscrape side of bench/run_remote_write_e2e.sh.
--
-- Like bench/scrape_promscrape.lua, but the Manager's appender is a remote
-- write to URL only (promscrape.remote_write{...}, no memory store), so the
-- CPU measured is scraping + remote write (encode, snappy, POST), the same
-- work vmagent does against the same sink. Prints "pid N" first; rewrites
-- METRICS_FILE (text format, by rename) every SLICE seconds for
-- ../shared/bench/measure.py:
--   promscrape_bench_samples_appended_total   samples committed to the remote
--       write (sent + failed + dropped + pending + inflight: everything the
--       scrape loops handed over, report series included)
--   promscrape_bench_series                   series known to the remote write
--   promscrape_bench_samples_sent_total       acknowledged by the sink (2xx)
-- The one-line summary at the end says sent / dropped / failed.
--
-- Usage (from the project root, after `make`):
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
--     lua5.4 bench/scrape_remote_write.lua CONFIG.yml DURATION_S METRICS_FILE URL [SHARDS [WARM_S]]
-- SHARDS 0 (the default): Prometheus's queue_config (min_shards 1,
-- max_shards 50), resharding as the load asks; N > 0 pins N shards.
-- WARM_S: the summary also says what was dropped after that many seconds,
-- i.e. inside measure.py's window.
local promscrape = require "promscrape"

local cfg_path, duration, metrics_path, url = arg[1], tonumber(arg[2]), arg[3], arg[4]
local shards = tonumber(arg[5] or "0")
local warm = tonumber(arg[6] or "0")
if not (cfg_path and duration and metrics_path and url) then
  io.stderr:write("usage: scrape_remote_write.lua CONFIG.yml DURATION_S METRICS_FILE URL [SHARDS]\n")
  os.exit(2)
end
local function die(...)
  io.stderr:write("scrape_remote_write: ", table.concat({ ... }, " "), "\n")
  os.exit(1)
end

local f = assert(io.open("/proc/self/stat"))
io.stdout:write("pid ", f:read("*l"):match("^(%d+)"), "\n")
io.stdout:flush()
f:close()

f = io.open(cfg_path) or die("cannot open", cfg_path)
local cfg, perr = promscrape.config.parse(f:read("*a"))
f:close()
if not cfg then die("config:", tostring(perr)) end

-- Prometheus's queue defaults (resharding between 1 and 50 shards), or a
-- fixed shard count. MAX_PER_SEND (env, default Prometheus's 2000): samples
-- per request.
local per_send = tonumber(os.getenv("MAX_PER_SEND") or "2000")
local qc = { max_samples_per_send = per_send, capacity = math.max(10000, 2 * per_send) }
if shards > 0 then qc.min_shards, qc.max_shards = shards, shards end
local rw, rerr = promscrape.remote_write { url = url, name = "sink", queue_config = qc }
if not rw then die("remote_write:", tostring(rerr)) end
local m, merr = promscrape.manager { appender = rw }
if not m then die("manager:", tostring(merr)) end
local ok, aerr = m:apply_config(cfg)
if not ok then die("apply_config:", tostring(aerr)) end

local tmp_path = metrics_path .. ".tmp"
local function write_metrics()
  local st = rw:stats()
  local out = assert(io.open(tmp_path, "w"))
  out:write(string.format("promscrape_bench_samples_appended_total %d\npromscrape_bench_series %d\n"
    .. "promscrape_bench_samples_sent_total %d\n",
    st.sent + st.failed + st.dropped + st.pending + st.inflight, st.series, st.sent))
  out:close()
  assert(os.rename(tmp_path, metrics_path))
  return st
end

local function uptime()
  local u = assert(io.open("/proc/uptime"))
  local v = tonumber(u:read("*l"):match("^(%S+)"))
  u:close()
  return v
end
local t0, elapsed = uptime(), 0
local dropped_at_warm
write_metrics()
while elapsed < duration do
  local rok, err = m:run { duration = math.min(0.2, duration - elapsed) }
  if not rok then die("run:", tostring(err)) end
  elapsed = uptime() - t0
  local st = write_metrics()
  if not dropped_at_warm and elapsed >= warm then dropped_at_warm = st.dropped end
end
local up, ntargets = 0, 0
for _, pool in pairs(m:pools()) do
  for _, t in ipairs(pool:targets()) do
    ntargets = ntargets + 1
    if t.health == "up" then up = up + 1 end
  end
end
local st = write_metrics()
io.stdout:write(string.format(
  "appender=remote-write targets=%d up=%d sent=%d dropped=%d (after %ds: %d) failed=%d retried=%d pending=%d requests=%d shards=%d reshards=%d last_error=%q\n",
  ntargets, up, st.sent, st.dropped, warm, st.dropped - (dropped_at_warm or st.dropped), st.failed, st.retried,
  st.pending, st.requests, st.shards or 0, st.reshards or 0, st.last_error))
m:close()
rw:close()
