-- promscrape run: scrape the targets of a prometheus.yml.
--
-- Loads the config (promscrape.config), starts discovery (static_configs,
-- file_sd_configs, http_sd_configs through promscrape.discovery) and the
-- scrape engine. On a terminal it redraws a table of the targets about once
-- a second; otherwise it logs one logfmt line per state change (target
-- added/removed/up/down/error changed, discovery errors, reloads).
-- SIGHUP reloads the config (a failed reload keeps the running one);
-- SIGINT/SIGTERM stop cleanly. --listen serves /federate (the memory store
-- as text exposition), /api/v1/targets (Prometheus's JSON), /metrics
-- (promscrape's own) and /-/healthy.
-- Exit status: 0 after a clean stop, 1 config or listen errors, 2 usage.

local util = require "promscrape.cli.util"

local M = {}

local format = string.format

local USAGE = [[
usage: promscrape run [options] CONFIG

  CONFIG  a prometheus.yml (see docs/config.md)

options:
  --duration S        stop after S seconds (default: run until Ctrl-C/SIGTERM)
  --listen ADDR       serve /federate, /api/v1/targets and /metrics on ADDR
                      (HOST:PORT; a bare :PORT or PORT means 127.0.0.1:PORT)
  --table, --no-table force or disable the live table (default: on a terminal)
  --throttle S        minimum seconds between two target updates from
                      discovery to the scrape engine (default 5, as Prometheus)
  --refresh S         table refresh period in seconds (default 1); without
                      a table, how often target health is checked for the log
  --forget-after S    drop series with no sample for S seconds from the
                      store behind /federate (default 300, as Prometheus's
                      lookback delta; 0 keeps every series forever)
  --shard I/N         scrape only shard I (0..N-1) of every job's targets:
                      hashmod of __address__ (docs/remote_write.md)
  -h, --help          this text

signals: SIGHUP reloads CONFIG, SIGINT/SIGTERM stop.
]]

-- ---- arguments -----------------------------------------------------------

local function parse_args(args)
  local o = { throttle = 5, refresh = 1, forget_after = 300 }
  local i = 1
  local function value(name)
    i = i + 1
    if args[i] == nil then error({ usage = name .. " needs a value" }) end
    return args[i]
  end
  local function number(name, min)
    local v = tonumber(value(name))
    if not v or v < min then error({ usage = format("%s: expected a number >= %s", name, tostring(min)) }) end
    return v
  end
  while i <= #args do
    local a = args[i]
    local k, v = a:match("^(%-%-[%w-]+)=(.*)$")
    if k then
      a = k
      table.insert(args, i + 1, v)
    end
    if a == "-h" or a == "--help" then
      o.help = true
    elseif a == "--duration" then
      o.duration = number(a, 0)
    elseif a == "--listen" then
      o.listen = value(a)
    elseif a == "--table" then
      o.table = true
    elseif a == "--no-table" then
      o.table = false
    elseif a == "--throttle" then
      o.throttle = number(a, 0)
    elseif a == "--refresh" then
      o.refresh = number(a, 0.05)
    elseif a == "--forget-after" then
      o.forget_after = number(a, 0)
    elseif a == "--shard" then -- issue 6
      local si, sn = value(a):match("^(%d+)/(%d+)$")
      si, sn = tonumber(si), tonumber(sn)
      if not si or sn < 1 or si >= sn then error({ usage = "--shard: expected I/N with 0 <= I < N" }) end
      o.shard = { index = si, count = sn }
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      error({ usage = "unknown option " .. a })
    elseif o.config then
      error({ usage = "one CONFIG only" })
    else
      o.config = a
    end
    i = i + 1
  end
  return o
end

--- ":9099", "9099" -> "127.0.0.1:9099"; "host:port" unchanged.
local function listen_address(s)
  if s:match("^%d+$") then return "127.0.0.1:" .. s end
  if s:match("^:%d+$") then return "127.0.0.1" .. s end
  return s
end

-- ---- output --------------------------------------------------------------

-- Secrets never appear in output: URLs lose user:password@.
local function scrub(s)
  s = tostring(s or "")
  return (s:gsub("(%a[%w+.-]*://)[^/@%s\"]*@", "%1<secret>@"))
end

local function logfmt_value(v)
  v = scrub(v)
  if v == "" or v:find('[%s"=]') then
    return '"' .. v:gsub('["\\]', "\\%0"):gsub("\n", "\\n") .. '"'
  end
  return v
end

local Run = {}
Run.__index = Run

function Run:log(level, msg, kv)
  if self.tty_table then
    -- on the table: keep recent events under it
    local line = msg
    for i = 1, #(kv or {}), 2 do line = line .. " " .. kv[i] .. "=" .. logfmt_value(kv[i + 1]) end
    self.events[#self.events + 1] = os.date("%H:%M:%S ") .. line
    if #self.events > 5 then table.remove(self.events, 1) end
    return
  end
  local parts = { "ts=" .. util.rfc3339(self.clock()), "level=" .. level, "msg=" .. logfmt_value(msg) }
  for i = 1, #(kv or {}), 2 do parts[#parts + 1] = kv[i] .. "=" .. logfmt_value(kv[i + 1]) end
  self.out:write(table.concat(parts, " "), "\n")
  self.out:flush()
end

-- All targets of all pools, in config order: { job, instance, t }.
function Run:targets()
  local list = {}
  local pools = self.m:pools()
  for _, job in ipairs(self.jobs) do
    local pool = pools[job]
    if pool then
      for _, t in ipairs(pool:targets()) do
        list[#list + 1] = { job = job, instance = (t.labels or {}).instance or "", t = t }
      end
    end
  end
  return list
end

-- Logs state changes of targets (non-tty) and keeps counters for /metrics.
function Run:watch_targets()
  local seen = {}
  for _, e in ipairs(self:targets()) do
    local t = e.t
    local key = e.job .. "\0" .. util.target_url(t) .. "\0" .. util.labels_string(t.labels)
    seen[key] = true
    local prev = self.state[key]
    local health, err = t.health, t.last_error or ""
    if not prev then
      self:log("info", "target added", { "job", e.job, "instance", e.instance, "url", util.target_url(t) })
      prev = { health = "unknown", err = "" }
    end
    if health ~= prev.health then
      if health == "up" then
        self:log("info", "target up", { "job", e.job, "instance", e.instance,
          "duration", format("%.3fs", t.last_scrape_duration or 0), "samples", t.last_samples or 0 })
      elseif health == "down" then
        self:log("warn", "target down", { "job", e.job, "instance", e.instance, "error", err })
      end
    elseif health == "down" and err ~= prev.err then
      self:log("warn", "target error changed", { "job", e.job, "instance", e.instance, "error", err })
    end
    self.state[key] = { health = health, err = err, job = e.job, instance = e.instance }
  end
  for key, st in pairs(self.state) do
    if not seen[key] then
      self:log("info", "target removed", { "job", st.job, "instance", st.instance })
      self.state[key] = nil
    end
  end
end

local function ago(t, now)
  if not t then return "never" end
  local d = now - t
  if d < 0 then d = 0 end
  if d < 60 then return format("%ds ago", math.floor(d)) end
  return format("%dm%ds ago", math.floor(d / 60), math.floor(d % 60))
end

local function cut(s, n)
  s = tostring(s or "")
  if #s > n then return s:sub(1, n - 1) .. "~" end
  return s
end

local COLOR = { up = "\27[32m", down = "\27[31m", unknown = "\27[33m" }

function Run:draw()
  local now = os.time()
  local list = self:targets()
  local up = 0
  for _, e in ipairs(list) do if e.t.health == "up" then up = up + 1 end end
  local lines = {}
  lines[#lines + 1] = format("promscrape run %s: %d job(s), %d target(s), %d up  %s%s",
    self.config_path, #self.jobs, #list, up, os.date("%H:%M:%S"),
    self.listen_addr and ("  http://" .. self.listen_addr) or "")
  lines[#lines + 1] = "Ctrl-C stops, SIGHUP reloads the config"
  lines[#lines + 1] = ""
  local hdr = format("%-14s %-24s %-8s %-12s %-9s %-8s %s", "JOB", "INSTANCE", "HEALTH",
    "LAST SCRAPE", "DURATION", "SAMPLES", "LAST ERROR")
  lines[#lines + 1] = "\27[1m" .. hdr .. "\27[0m"
  for _, e in ipairs(list) do
    local t = e.t
    local health = t.health or "unknown"
    lines[#lines + 1] = format("%-14s %-24s %s%-8s\27[0m %-12s %-9s %-8s %s",
      cut(e.job, 14), cut(e.instance, 24), COLOR[health] or "", health,
      ago(t.last_scrape, now),
      t.last_scrape and format("%.1fms", (t.last_scrape_duration or 0) * 1000) or "-",
      tostring(t.last_samples or 0), cut(scrub(t.last_error), 60))
  end
  if #list == 0 then lines[#lines + 1] = "(no targets yet)" end
  if #self.events > 0 then
    lines[#lines + 1] = ""
    for _, ev in ipairs(self.events) do lines[#lines + 1] = cut(ev, 120) end
  end
  local buf = { self.drawn and "\27[H" or "\27[H\27[2J" }
  for _, l in ipairs(lines) do buf[#buf + 1] = l .. "\27[K\n" end
  buf[#buf + 1] = "\27[J"
  self.out:write(table.concat(buf))
  self.out:flush()
  self.drawn = true
end

-- ---- the HTTP endpoints ---------------------------------------------------

local function duration_string(sec)
  local ok, config = pcall(require, "promscrape.config")
  if ok and sec then return config.format_duration(math.floor(sec * 1000 + 0.5)) end
  return tostring(sec) .. "s"
end

local function query_params(q)
  local p = {}
  for pair in (q or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    local function un(s)
      return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
    end
    p[un(k)] = un(v)
  end
  return p
end

local function scrub_labels(l)
  local out = {}
  for k, v in pairs(l or {}) do out[k] = scrub(v) end
  return out
end

function Run:api_targets(q)
  local params = query_params(q)
  local state = params.state or "any"
  local pool_filter = params.scrapePool
  local active, dropped, counts = util.array(), util.array(), {}
  local pools = self.m:pools()
  for _, job in ipairs(self.jobs) do
    local pool = pools[job]
    if pool and (not pool_filter or pool_filter == job) then
      if state == "any" or state == "active" then
        for _, t in ipairs(pool:targets()) do
          local url = util.target_url(t)
          active[#active + 1] = {
            discoveredLabels = scrub_labels(t.discovered_labels),
            labels = t.labels or {},
            scrapePool = job,
            scrapeUrl = url,
            globalUrl = url,
            lastError = scrub(t.last_error),
            lastScrape = util.rfc3339(t.last_scrape),
            lastScrapeDuration = t.last_scrape_duration or 0,
            health = t.health or "unknown",
            scrapeInterval = duration_string(t.interval),
            scrapeTimeout = duration_string(t.timeout),
          }
        end
      end
      local dl = pool:dropped_targets()
      counts[job] = #dl
      if state == "any" or state == "dropped" then
        for _, t in ipairs(dl) do
          dropped[#dropped + 1] = { discoveredLabels = scrub_labels(t.discovered_labels), scrapePool = job }
        end
      end
    end
  end
  return util.json({ status = "success", data = {
    activeTargets = active, droppedTargets = dropped, droppedTargetCounts = counts } })
end

local function prom_escape(v)
  return (tostring(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

function Run:self_metrics()
  local out = {
    "# HELP promscrape_targets Targets per job and health.",
    "# TYPE promscrape_targets gauge",
  }
  local by = {}
  local scrapes, samples = {}, {}
  for _, e in ipairs(self:targets()) do
    local k = e.job .. "\0" .. (e.t.health or "unknown")
    by[k] = (by[k] or 0) + 1
    scrapes[e.job] = (scrapes[e.job] or 0) + (e.t.scrapes or 0)
    samples[e.job] = (samples[e.job] or 0) + (e.t.last_samples or 0)
  end
  local keys = {}
  for k in pairs(by) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local job, health = k:match("^(.*)%z(.*)$")
    out[#out + 1] = format('promscrape_targets{job="%s",health="%s"} %d', prom_escape(job), health, by[k])
  end
  out[#out + 1] = "# HELP promscrape_scrapes_total Scrapes done by the current targets, per job."
  out[#out + 1] = "# TYPE promscrape_scrapes_total counter"
  local jobs = {}
  for j in pairs(scrapes) do jobs[#jobs + 1] = j end
  table.sort(jobs)
  for _, j in ipairs(jobs) do
    out[#out + 1] = format('promscrape_scrapes_total{job="%s"} %d', prom_escape(j), scrapes[j])
  end
  out[#out + 1] = "# HELP promscrape_last_samples Samples in the last scrape of each target, summed per job."
  out[#out + 1] = "# TYPE promscrape_last_samples gauge"
  for _, j in ipairs(jobs) do
    out[#out + 1] = format('promscrape_last_samples{job="%s"} %d', prom_escape(j), samples[j])
  end
  out[#out + 1] = "# HELP promscrape_config_reloads_total Config reloads by result."
  out[#out + 1] = "# TYPE promscrape_config_reloads_total counter"
  out[#out + 1] = format('promscrape_config_reloads_total{result="success"} %d', self.reloads_ok)
  out[#out + 1] = format('promscrape_config_reloads_total{result="failure"} %d', self.reloads_failed)
  out[#out + 1] = "# HELP promscrape_config_last_reload_successful Whether the last reload worked."
  out[#out + 1] = "# TYPE promscrape_config_last_reload_successful gauge"
  out[#out + 1] = format("promscrape_config_last_reload_successful %d", self.last_reload_ok and 1 or 0)
  out[#out + 1] = "# HELP promscrape_sd_errors_total Discovery errors since start."
  out[#out + 1] = "# TYPE promscrape_sd_errors_total counter"
  out[#out + 1] = format("promscrape_sd_errors_total %d", self.sd_errors)
  return table.concat(out, "\n") .. "\n"
end

function Run:handle(req)
  local path = req.path or "/"
  if req.method ~= "GET" and req.method ~= "HEAD" then
    return 405, { ["Content-Type"] = "text/plain", Allow = "GET" }, "method not allowed\n"
  end
  if path == "/federate" then
    return 200, { ["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8" }, self.m.store:text()
  elseif path == "/api/v1/targets" then
    return 200, { ["Content-Type"] = "application/json" }, self:api_targets(req.query)
  elseif path == "/metrics" then
    return 200, { ["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8" }, self:self_metrics()
  elseif path == "/-/healthy" or path == "/-/ready" then
    return 200, { ["Content-Type"] = "text/plain" }, "promscrape is " .. (path == "/-/healthy" and "Healthy" or "Ready") .. ".\n"
  elseif path == "/" then
    return 200, { ["Content-Type"] = "text/plain" },
      "promscrape run\n\n/federate\n/api/v1/targets\n/metrics\n/-/healthy\n"
  end
  return 404, { ["Content-Type"] = "text/plain" }, "not found\n"
end

-- ---- config and reload ----------------------------------------------------

local function job_names(cfg)
  local jobs = {}
  for i, sc in ipairs(cfg.scrape_configs or {}) do jobs[i] = sc.job_name end
  return jobs
end

function Run:reload(reason)
  self:log("info", "reloading configuration", { "file", self.config_path, "reason", reason })
  local config = require "promscrape.config"
  local cfg, err = config.load(self.config_path)
  if cfg then
    local ok, aerr = self.d:apply_config(cfg)
    if not ok then cfg, err = nil, aerr end
  end
  if not cfg then
    self.reloads_failed = self.reloads_failed + 1
    self.last_reload_ok = false
    self:log("error", "reload failed, keeping the old configuration", { "error", err })
    return false
  end
  for _, w in ipairs(cfg.warnings or {}) do self:log("warn", "config warning", { "warning", w }) end
  self.cfg = cfg
  self.jobs = job_names(cfg)
  self.reloads_ok = self.reloads_ok + 1
  self.last_reload_ok = true
  self:log("info", "configuration reloaded", { "file", self.config_path, "jobs", #self.jobs })
  return true
end

-- ---- main -----------------------------------------------------------------

--- main(args [, out, err]) -> exit status
function M.main(args, out, err)
  out, err = out or io.stdout, err or io.stderr
  local okp, o = pcall(parse_args, args)
  if not okp then
    if type(o) == "table" and o.usage then
      err:write("promscrape run: " .. o.usage .. "\n" .. USAGE)
      return 2
    end
    error(o, 0)
  end
  if o.help then
    out:write(USAGE)
    return 0
  end
  if not o.config then
    err:write(USAGE)
    return 2
  end

  local config = require "promscrape.config"
  local cfg, cerr = config.load(o.config)
  if not cfg then
    err:write("promscrape run: " .. tostring(cerr) .. "\n")
    return 1
  end
  for _, w in ipairs(cfg.warnings or {}) do err:write("promscrape run: warning: " .. w .. "\n") end

  local promscrape = require "promscrape"
  local core = promscrape.core
  local discovery = require "promscrape.discovery"
  local tty = o.table
  if tty == nil then
    local term = os.getenv("TERM")
    tty = out == io.stdout and term ~= nil and term ~= "" and term ~= "dumb" and util.isatty()
  end

  -- The store keeps the latest sample of every series: without forgetting,
  -- the series of every target that ever went away (stale now) would stay
  -- in memory for good, growing with target churn (found by `make soak`).
  -- Prometheus's /federate does not return series older than its lookback
  -- delta (5m) either.
  local store, serr = promscrape.memory { forget_after = o.forget_after }
  if not store then
    err:write("promscrape run: " .. tostring(serr) .. "\n")
    return 1
  end
  local m, merr = promscrape.manager { appender = store, shard = o.shard }
  if not m then
    err:write("promscrape run: " .. tostring(merr) .. "\n")
    return 1
  end
  local self = setmetatable({
    out = out, err = err, m = m, config_path = o.config, cfg = cfg,
    jobs = job_names(cfg), state = {}, events = {}, tty_table = tty,
    clock = discovery.clock, reloads_ok = 0, reloads_failed = 0, last_reload_ok = true,
    sd_errors = 0,
  }, Run)
  if tty then
    for _, w in ipairs(cfg.warnings or {}) do self:log("warn", "config warning", { "warning", w }) end
  end
  self.d = discovery.new {
    -- targets were added or removed: log that at once (see the main loop)
    on_sync = function() self.watch_now = true end,
    manager = m,
    throttle = o.throttle,
    on_error = function(job, provider, e)
      self.sd_errors = self.sd_errors + 1
      self:log("warn", "discovery error", { "job", job, "provider", provider, "error", e })
    end,
  }
  local ok, aerr = self.d:apply_config(cfg)
  if not ok then
    m:close()
    err:write("promscrape run: " .. tostring(aerr) .. "\n")
    return 1
  end

  if o.listen then
    if not m.listen then
      m:close()
      err:write("promscrape run: --listen: this build of the engine cannot serve HTTP\n")
      return 1
    end
    local addr = listen_address(o.listen)
    local lok, lerr = m:listen(addr, function(req) return self:handle(req) end)
    if not lok then
      m:close()
      err:write(format("promscrape run: --listen %s: %s\n", addr, tostring(lerr)))
      return 1
    end
    self.listen_addr = m.listen_address and m:listen_address() or addr
  end

  local signals = type(core.signal_watch) == "function"
  if signals then
    local sok, serr = pcall(core.signal_watch, { "HUP", "INT", "TERM" })
    if not sok then
      signals = false
      self:log("warn", "cannot watch signals", { "error", serr })
    end
  end

  local kv = { "config", o.config, "jobs", #self.jobs }
  if core.getpid then kv[#kv + 1] = "pid"; kv[#kv + 1] = core.getpid() end
  self:log("info", "starting promscrape", kv)
  if self.listen_addr then self:log("info", "listening", { "address", self.listen_addr }) end

  local t0 = self.clock()
  local next_draw, next_watch = 0, 0
  local stop_reason = "duration"
  local step = math.min(0.1, o.refresh)
  while true do
    local now = self.clock()
    if o.duration and now - t0 >= o.duration then break end
    local slice = step
    if o.duration then slice = math.max(0.001, math.min(step, o.duration - (now - t0))) end
    local rok, rres
    if m.signals then
      rok, rres = m:run { duration = slice }
    else
      rok, rres = m:step(slice)
    end
    if rok == nil then
      self:log("error", "engine error", { "error", rres })
      stop_reason = "error"
      break
    end
    local stop = false
    if m.signals then
      for _, s in ipairs(m:signals() or {}) do
        if s == "HUP" or s == "SIGHUP" then
          self:reload("SIGHUP")
        elseif s == "INT" or s == "TERM" or s == "SIGINT" or s == "SIGTERM" then
          stop, stop_reason = true, "signal " .. s
        end
      end
    end
    if rok == "stopped" then stop, stop_reason = true, "stopped" end
    if stop then break end
    self.d:poll()
    if self.tty_table then
      now = self.clock()
      if now >= next_draw then
        next_draw = now + o.refresh
        self:draw()
      end
    elseif self.watch_now or self.clock() >= next_watch then
      -- watch_targets rebuilds every target's status to diff it: doing that
      -- on every 0.1 s step cost more CPU than the scraping (make soak).
      -- Additions and removals only come with a sync, which sets watch_now;
      -- health changes come with scrapes, so once per --refresh sees them.
      self.watch_now = false
      next_watch = self.clock() + o.refresh
      self:watch_targets()
    end
  end

  if self.tty_table then self:draw() end
  self.tty_table = false
  self:log("info", "stopping", { "reason", stop_reason })
  if signals and core.signal_unwatch then pcall(core.signal_unwatch) end
  self.d:stop()
  m:close()
  -- remote_write entries: send what is queued (up to 10 s each), as
  -- Prometheus's flush_deadline does on shutdown
  for _, rw in ipairs(m.remote_writes and m:remote_writes() or {}) do
    local fok, ferr = rw:flush(10)
    if not fok then self:log("warn", "remote write not flushed", { "url", scrub(rw:stats().url), "error", ferr }) end
  end
  self:log("info", "stopped")
  return stop_reason == "error" and 1 or 0
end

M._listen_address = listen_address
M._scrub = scrub

return M
