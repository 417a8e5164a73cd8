--- resty.promscrape: promscrape inside nginx (OpenResty, or Debian's nginx
-- with libnginx-mod-http-lua). A small pure-Lua adapter: the only file that
-- references `ngx`; the core never does. See docs/openresty.md.
--
--   init_worker_by_lua_block {
--     require("resty.promscrape").start {
--       config = "/etc/prometheus/prometheus.yml",  -- path or table
--       -- appender = nil (memory store) | promscrape.memory() | Lua appender
--       poll_interval = 0.2,    -- seconds between m:poll() timer ticks
--       workers = "all",        -- "all": targets sharded by hashmod over
--                               -- the workers; "one": worker 0 scrapes all
--       mode = "auto",          -- "background" | "step" | "auto"
--       max_samples = 10000,    -- Lua appender samples per tick
--     }
--   }
--   exit_worker_by_lua_block { require("resty.promscrape").stop() }
--   location /federate { content_by_lua_block {
--     ngx.print(require("resty.promscrape").federate()) } }
--
-- start(opts) -> true | nil, err (also logged). Never raises for bad
--   config files or a failed start; raises for misuse (unknown options).
-- stop(): stops the thread and closes the manager (idempotent).
-- status() -> { active = { target, ... }, dropped = { ... }, mode = ...,
--   worker = id, updated = seconds }: the snapshot taken by the last timer
--   tick (handlers never wait for the engine). target: pool:targets()
--   entries (job, url, health, last_error, last_scrape, ...).
-- federate() -> text exposition of the memory store | nil, err
-- targets_json() -> Prometheus's /api/v1/targets response body
-- manager() -> the promscrape Manager of this worker (or nil)
--
-- Modes. "background": m:start() runs fetch/parse/relabel on a pthread;
-- the timer only runs Lua appenders (m:poll) and refreshes the status
-- snapshot, and m:poll also runs metric function rules for new series
-- (deferred by the engine thread). "step": the timer calls m:step(0)
-- (non-blocking) instead; for setups where the background thread is not
-- available. "auto" tries background, then falls back to step.
local promscrape = require "promscrape"

local M = {}

local ngx = ngx -- luacheck: ignore (nil outside nginx: start() refuses)

local format, concat, sort = string.format, table.concat, table.sort

local OPTS = {
  config = true, appender = true, poll_interval = true, workers = true,
  mode = true, max_samples = true, seed = true, on_error = true,
}

local S -- this worker's state: { m, mode, gen, snap, ... } or nil
local gen = 0

local function log(level, ...)
  if ngx then ngx.log(level, "promscrape: ", ...) end
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

--- Adds hashmod sharding to every scrape config of cfg (a copy): each
-- worker keeps the targets whose __address__ hashes to its id.
local function shard(cfg, n, id)
  local out = copy(cfg)
  out.scrape_configs = {}
  for i, sc in ipairs(cfg.scrape_configs or {}) do
    local c = copy(sc)
    local rules = {}
    for j, r in ipairs(sc.relabel_configs or {}) do rules[j] = r end
    rules[#rules + 1] = { source_labels = { "__address__" }, action = "hashmod",
      modulus = n, target_label = "__tmp_promscrape_worker" }
    rules[#rules + 1] = { source_labels = { "__tmp_promscrape_worker" },
      action = "keep", regex = tostring(id) }
    c.relabel_configs = rules
    out.scrape_configs[i] = c
  end
  return out
end

--- Takes the status snapshot (under the engine lock, briefly).
local function snapshot(st)
  local active, dropped, counts = {}, {}, {}
  local pools = st.m:pools()
  local jobs = {}
  for job in pairs(pools) do jobs[#jobs + 1] = job end
  sort(jobs)
  for _, job in ipairs(jobs) do
    local p = pools[job]
    for _, t in ipairs(p:targets()) do
      t.job = job
      active[#active + 1] = t
    end
    local d = p:dropped_targets()
    counts[job] = #d
    for _, t in ipairs(d) do
      t.job = job
      dropped[#dropped + 1] = t
    end
    p:close()
  end
  st.snap = { active = active, dropped = dropped, dropped_counts = counts,
    mode = st.mode, worker = st.worker, updated = ngx and ngx.now() or os.time() }
end

local function tick(premature, st)
  if premature or S ~= st or st.closed then return end
  local ok, err = pcall(function()
    if st.mode == "background" then
      local n, e2 = st.m:poll { max_samples = st.max_samples }
      if not n then log(ngx.ERR, "background engine: ", e2) end
    else
      local r, e2 = st.m:step(0)
      if not r then log(ngx.ERR, "step: ", e2) end
    end
    for _, msg in ipairs(st.m:errors()) do log(ngx.WARN, msg) end
    snapshot(st)
  end)
  if not ok then log(ngx.ERR, "timer: ", err) end
end

--- start(opts) -> true | nil, err (see the header).
function M.start(opts)
  if type(opts) ~= "table" then
    error("resty.promscrape.start: options table expected, got " .. type(opts), 2)
  end
  for k in pairs(opts) do
    if not OPTS[k] then error("resty.promscrape.start: unknown option '" .. tostring(k) .. "'", 2) end
  end
  if not ngx then return nil, "resty.promscrape: not running inside nginx" end
  if S then return nil, "resty.promscrape: already started in this worker" end
  local workers = opts.workers or "all"
  local mode = opts.mode or "auto"
  if workers ~= "all" and workers ~= "one" then
    error("resty.promscrape.start: workers must be \"all\" or \"one\"", 2)
  end
  if mode ~= "auto" and mode ~= "background" and mode ~= "step" then
    error("resty.promscrape.start: mode must be \"auto\", \"background\" or \"step\"", 2)
  end
  local interval = opts.poll_interval or 0.2
  local id, count = ngx.worker.id() or 0, ngx.worker.count() or 1
  gen = gen + 1
  local st = { gen = gen, worker = id, mode = "idle", max_samples = opts.max_samples or 10000,
    snap = { active = {}, dropped = {}, dropped_counts = {}, mode = "idle", worker = id } }
  if workers == "one" and id ~= 0 then
    S = st -- this worker serves status only: worker 0 scrapes
    return true
  end

  local cfg, err = opts.config, nil
  if type(cfg) == "string" then
    cfg, err = promscrape.config.load(cfg)
    if not cfg then
      log(ngx.ERR, err)
      return nil, err
    end
  elseif type(cfg) ~= "table" then
    error("resty.promscrape.start: config must be a path or a table", 2)
  end
  if workers == "all" and count > 1 then cfg = shard(cfg, count, id) end

  local m, e2 = promscrape.manager { appender = opts.appender, seed = opts.seed,
    on_error = opts.on_error }
  if not m then
    log(ngx.ERR, e2)
    return nil, e2
  end
  local ok
  ok, err = m:apply_config(cfg)
  if not ok then
    log(ngx.ERR, "apply_config: ", err)
    m:close()
    return nil, err
  end
  st.m = m
  if mode ~= "step" then
    if m.start then
      ok, err = m:start()
    else
      ok, err = nil, "this promscrape build has no background mode"
    end
    if ok then
      st.mode = "background"
    elseif mode == "background" then
      log(ngx.ERR, "start: ", err)
      m:close()
      return nil, err
    else
      log(ngx.WARN, "background mode unavailable (", err, "): using step mode")
    end
  end
  if st.mode ~= "background" then st.mode = "step" end
  S = st
  ok, err = ngx.timer.every(interval, tick, st)
  if not ok then
    log(ngx.ERR, "ngx.timer.every: ", err)
    M.stop()
    return nil, err
  end
  pcall(snapshot, st)
  return true
end

--- stop(): in exit_worker_by_lua_block. Idempotent; never raises.
function M.stop()
  local st = S
  S = nil
  if not st or not st.m then return end
  st.closed = true
  local ok, err = pcall(function()
    st.m:stop()
    st.m:close()
  end)
  if not ok then log(ngx and ngx.ERR, "stop: ", err) end
end

function M.manager()
  return S and S.m
end

function M.status()
  return S and S.snap or { active = {}, dropped = {}, dropped_counts = {}, mode = "stopped" }
end

function M.federate()
  if not S then return nil, "promscrape is not started in this worker" end
  if not S.m then return "" end -- workers = "one": worker 0 holds the store
  local store = S.m.store
  if not store then return nil, "no memory store: a Lua appender is configured" end
  return store:text()
end

------------------------------------------------------------------------------
-- /api/v1/targets (Prometheus's response shape), with a tiny JSON encoder.
------------------------------------------------------------------------------

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function jstr(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    return ESC[c] or format("\\u%04x", c:byte())
  end) .. '"'
end

local function jlabels(t)
  local keys, out = {}, {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  sort(keys)
  for i, k in ipairs(keys) do out[i] = jstr(k) .. ":" .. jstr(t[k]) end
  return "{" .. concat(out, ",") .. "}"
end

--- Seconds as a Prometheus duration ("15s", "1m30s", "100ms").
local function pdur(s)
  local ms = math.floor((s or 0) * 1000 + 0.5)
  if ms == 0 then return "0s" end
  local out = {}
  for _, u in ipairs { { "h", 3600000 }, { "m", 60000 }, { "s", 1000 }, { "ms", 1 } } do
    if ms >= u[2] then
      out[#out + 1] = format("%d%s", math.floor(ms / u[2]), u[1])
      ms = ms % u[2]
    end
  end
  return concat(out)
end
M._duration = pdur

--- Unix seconds as RFC 3339 UTC with milliseconds (Go's zero time if nil).
local function rfc3339(t)
  if not t then return "0001-01-01T00:00:00Z" end
  local sec = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. format(".%03dZ", math.floor((t - sec) * 1000))
end
M._rfc3339 = rfc3339

function M.targets_json()
  local snap = M.status()
  local act, drop, counts = {}, {}, {}
  for i, t in ipairs(snap.active) do
    act[i] = "{" .. concat({
      '"discoveredLabels":' .. jlabels(t.discovered_labels),
      '"labels":' .. jlabels(t.labels),
      '"scrapePool":' .. jstr(t.job),
      '"scrapeUrl":' .. jstr(t.url),
      '"globalUrl":' .. jstr(t.url),
      '"lastError":' .. jstr(t.last_error or ""),
      '"lastScrape":' .. jstr(rfc3339(t.last_scrape)),
      '"lastScrapeDuration":' .. format("%.6f", t.last_scrape_duration or 0),
      '"health":' .. jstr(t.health),
      '"scrapeInterval":' .. jstr(pdur(t.interval)),
      '"scrapeTimeout":' .. jstr(pdur(t.timeout)),
    }, ",") .. "}"
  end
  for i, t in ipairs(snap.dropped) do
    drop[i] = '{"discoveredLabels":' .. jlabels(t.discovered_labels) .. "}"
  end
  local jobs = {}
  for job in pairs(snap.dropped_counts or {}) do jobs[#jobs + 1] = job end
  sort(jobs)
  for i, job in ipairs(jobs) do counts[i] = jstr(job) .. ":" .. snap.dropped_counts[job] end
  return '{"status":"success","data":{"activeTargets":[' .. concat(act, ",")
    .. '],"droppedTargets":[' .. concat(drop, ",")
    .. '],"droppedTargetCounts":{' .. concat(counts, ",") .. "}}}"
end

M._shard = shard

return M
