-- scrape_promscrape.lua -- the promscrape side of bench/run_scrape.sh.
--
-- Builds a scrape Manager with the default appender (the memory store,
-- `promscrape.memory()`: the latest sample of every series, no history),
-- applies a prometheus.yml-shaped config (the YAML `targets.sh config K N I`
-- prints, wrapped in `global:`/`scrape_configs:` as run_scrapers.sh does) and
-- runs it for a fixed time. It prints its own pid first, so the driver can
-- measure it from outside (../shared/bench/measure.py: CPU from
-- /proc/PID/stat, VmRSS from /proc/PID/status).
--
-- measure.py reads its sample counter from a "metrics URL"; we give it a
-- file:// URL. Every SLICE seconds the engine is paused between two
-- m:run{duration = SLICE} calls and this file is rewritten (atomically, by
-- rename) in the Prometheus text format:
--   promscrape_bench_samples_appended_total   memory store stats().appended:
--       samples really committed by the scrape loops (every scraped sample
--       plus the 5 report series per scrape: the same thing Prometheus's
--       prometheus_tsdb_head_samples_appended_total counts)
--   promscrape_bench_series                   memory store stats().series
--       (active series, report series included, like prometheus_tsdb_head_series)
--   promscrape_bench_scrapes_total            sum of pool:targets()[i].scrapes
--   promscrape_bench_targets_up               targets with health "up"
-- (the last two are refreshed every STATUS_EVERY seconds only: pool:targets()
-- builds label tables, which costs a little CPU at 200 targets.)
--
-- Usage (from the project root, after `make`):
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
--     lua5.4 bench/scrape_promscrape.lua CONFIG.yml DURATION_S METRICS_FILE [SLICE_S]
-- Output: "pid N" on the first line, then a one-line summary at the end
-- (and on any error a message on stderr and exit status 1).
local promscrape = require "promscrape"

local cfg_path, duration, metrics_path, slice = arg[1], tonumber(arg[2]), arg[3], tonumber(arg[4] or "0.2")
if not (cfg_path and duration and metrics_path and slice and slice > 0) then
  io.stderr:write("usage: scrape_promscrape.lua CONFIG.yml DURATION_S METRICS_FILE [SLICE_S]\n")
  os.exit(2)
end

local function die(...)
  io.stderr:write("scrape_promscrape: ", table.concat({ ... }, " "), "\n")
  os.exit(1)
end

-- Our pid: /proc/self is the process that opens it.
local f = assert(io.open("/proc/self/stat"))
local pid = f:read("l"):match("^(%d+)")
f:close()
io.stdout:write("pid ", pid, "\n")
io.stdout:flush()

f = io.open(cfg_path) or die("cannot open", cfg_path)
local yaml = f:read("a")
f:close()
local cfg, perr = promscrape.config.parse(yaml)
if not cfg then die("config:", tostring(perr)) end

local m, merr = promscrape.manager {} -- appender: the default memory store (m.store)
if not m then die("manager:", tostring(merr)) end
local ok, aerr = m:apply_config(cfg)
if not ok then die("apply_config:", tostring(aerr)) end
local store = m.store

local scrapes, up, ntargets, last_errors = 0, 0, 0, {}
local function target_status()
  scrapes, up, ntargets, last_errors = 0, 0, 0, {}
  for _, pool in pairs(m:pools()) do
    for _, t in ipairs(pool:targets()) do
      ntargets = ntargets + 1
      scrapes = scrapes + (t.scrapes or 0)
      if t.health == "up" then up = up + 1 end
      if t.last_error and t.last_error ~= "" then last_errors[t.last_error] = (last_errors[t.last_error] or 0) + 1 end
    end
  end
end

local tmp_path = metrics_path .. ".tmp"
local function write_metrics()
  local st = store:stats()
  local out = assert(io.open(tmp_path, "w"))
  out:write(string.format(
    "promscrape_bench_samples_appended_total %d\npromscrape_bench_series %d\n"
      .. "promscrape_bench_scrapes_total %d\npromscrape_bench_targets_up %d\n"
      .. "promscrape_bench_targets %d\npromscrape_bench_rejected_total %d\n",
    st.appended, st.series, scrapes, up, ntargets, st.rejected))
  out:close()
  assert(os.rename(tmp_path, metrics_path))
  return st
end

-- Wall clock with 10 ms resolution (os.time() has 1 s; os.clock() is CPU time).
local function uptime()
  local u = assert(io.open("/proc/uptime"))
  local v = tonumber(u:read("l"):match("^(%S+)"))
  u:close()
  return v
end
local t0 = uptime()
local STATUS_EVERY = 5
local next_status = 0
local elapsed = 0
write_metrics()
while elapsed < duration do
  local rok, rerr = m:run { duration = math.min(slice, duration - elapsed) }
  if not rok then die("run:", tostring(rerr)) end
  elapsed = uptime() - t0
  if elapsed >= next_status then
    target_status()
    next_status = elapsed + STATUS_EVERY
  end
  write_metrics()
end
target_status()
local st = write_metrics()
local errs = {}
for e, n in pairs(last_errors) do errs[#errs + 1] = string.format("%dx %q", n, e) end
io.stdout:write(string.format(
  "appender=memory-store targets=%d up=%d scrapes=%d samples_appended=%d series=%d rejected=%d%s\n",
  ntargets, up, scrapes, st.appended, st.series, st.rejected,
  #errs > 0 and (" last_errors: " .. table.concat(errs, "; ")) or ""))
m:close()
