--- promscrape.manager: the scrape Manager (Prometheus scrape.Manager) for Lua.
--
--   local promscrape = require "promscrape"
--   local m = promscrape.manager{ appender = app }   -- app optional
--   assert(m:apply_config(cfg))                     -- prometheus.yml-shaped
--   m:sync{ job = { { targets = { "127.0.0.1:9100" }, labels = { env = "t" } } } }
--   m:run{ duration = 10 }                          -- or m:step(0.1) in a loop
--   for job, pool in pairs(m:pools()) do ... pool:targets() ... end
--   print(m.store:text())
--   m:close()
--
-- promscrape.manager(opts) -> Manager | nil, msg, code
--   opts.appender: where samples go.
--     * nil (default): a new memory store, reachable as `m.store`.
--     * a MemoryStore (promscrape.memory()): shared; also `m.store`.
--     * a RemoteWrite or Fanout (promscrape.remote_write{...},
--       promscrape.fanout{...}): bound to this manager's engine; see
--       lua/promscrape/remote_write.lua and docs/remote_write.md.
--     * a table (or object) with methods, a "Lua appender":
--         app:commit(batch)   once per scrape commit, never per sample
--         app:rollback(info)  optional; a failed scrape's discarded batch
--       batch = {
--         seq = n,                         -- 1, 2, ...; a gap: dropped
--         target = { job = ..., instance = ..., ... },
--         refs = { ref, ... }, values = { v, ... }, timestamps = { ms, ... },
--         stale = { [i] = true, ... },     -- values[i] is a staleness marker
--         new_series = { [ref] = { __name__ = ..., ... } },  -- first use only
--         exemplars = { { ref, labels, value, timestamp }, ... },
--         metadata = { { ref, type, help, unit }, ... },
--         dropped = n,                     -- samples lost to the queue bound
--       }
--       info = { seq = n, target = { ... } }
--       Refs are assigned by the manager, from 1; labels are sent once per
--       series. Timestamps are milliseconds (numbers). Methods run on the
--       Lua thread after each engine iteration of m:step()/m:run(), through
--       pcall: an error is recorded (m:errors()) and passed to
--       opts.on_error(msg) if given; it never escapes step/run.
--   opts.seed: number or string spreading first scrapes (default: host name)
--   opts.on_error: function(msg) called for each appender error
--   opts.max_pending_samples: bound of the Lua appender queue (default 1e6)
--   opts.shard = { count = N, index = i }: keep only shard i of every job's
--     targets (hashmod of the discovered __address__ modulo N, then keep
--     i: two rules put before the job's own relabel_configs).
--
-- Manager methods:
--   m:apply_config(cfg) -> true | nil, err
--     cfg: a table shaped like prometheus.yml (`global`, `scrape_configs`
--     with Prometheus's field names, durations as "15s" strings), or YAML
--     text. It is validated and completed by promscrape.config exactly as a
--     file would be, so `config.load(path)`'s result is accepted as is. Two
--     vmagent extensions are accepted per scrape config of a table (not in
--     YAML text, which promscrape.config checks strictly): `scrape_offset`
--     and `scrape_align_interval` (durations; an align interval of "1ms"
--     makes the first scrape start at once). Reload semantics are Prometheus's:
--     unchanged jobs keep running untouched, changed ones restart their
--     loops keeping their caches, removed ones stop.
--     remote_write entries of cfg are written to as well (fan-out with the
--     manager's appender, which must then be a C appender); an entry whose
--     normalized text is unchanged keeps its queue across reloads.
--   m:remote_writes() -> { RemoteWrite, ... } of those entries (stats, flush)
--   m:sync(target_sets) -> true | nil, err
--     { [job_name] = { { targets = { "host:port", ... }, labels = {...},
--     source = "..." }, ... } }: replaces the job's discovered targets (its
--     static_configs stay). Unknown jobs are ignored, as in Prometheus.
--   m:pools() -> { [job_name] = pool }; m:pool(job) -> pool | nil
--   m:step([timeout_s]) -> true | nil, err: one bounded engine iteration
--   m:run{ duration = s } -> why | nil, err: blocks until m:stop(), the
--     duration (no duration: until stopped) or a watched signal; why is
--     "stopped", "duration" or "signal" (then read m:signals()). A signal
--     not yet read by m:signals() makes run return "signal" at once.
--   m:listen(addr, handler [, opts]) -> true | nil, err: serves HTTP on
--     addr ("127.0.0.1:9099", "[::1]:0"; host required, port 0 picks one)
--     from the engine's loop. handler(req) runs on the Lua thread after an
--     engine step, req = { method = "GET"|"HEAD", path, query ("" if
--     none; path and query are not percent-decoded), headers =
--     { [lowercased name] = value } }, and returns status, headers_table,
--     body_string. A Lua error answers 500 and is recorded (m:errors()).
--     opts (tests): max_connections, read_timeout_ms, idle_timeout_ms,
--     write_timeout_ms. One listener per manager; it closes with m:close().
--   m:listen_address() -> "127.0.0.1:PORT" (the bound address) | nil
--   m:http_get(url, opts, callback) -> true | nil, err: one non-blocking GET
--     on the engine's client. opts (Prometheus's field names; others are
--     ignored so a normalized http_sd_config may be passed): timeout
--     (seconds, default 30), headers = { Name = "v" | {"v", ...} },
--     basic_auth = { username, password | password_file }, authorization =
--     { type, credentials | credentials_file }, bearer_token(_file),
--     tls_config = { ca_file, cert_file, key_file, server_name,
--     insecure_skip_verify, min_version }, proxy_url, follow_redirects,
--     enable_http2, body_size_limit (bytes). callback{ status, body,
--     content_type, error } runs on the Lua thread after a step; error is
--     nil on success (status 200), body only then.
--   m:signals() -> { "HUP", ... }: signals received since the last call,
--     among those watched with promscrape.core.signal_watch{...}
--     (core.signal_unwatch() restores the defaults; core.getpid()).
-- Function rules: relabel_configs and metric_relabel_configs may mix rule
--   tables and Lua functions (function(labels) -> labels | nil), as
--   promscrape.relabel does. Metric functions run only on scrape-cache
--   misses (once per new series, cached like any relabel result); target
--   functions when targets are synced. They run on the Lua thread inside
--   step/run/apply_config/sync. An error fails that scrape (up = 0,
--   last_error "metric_relabel_configs: rule N: function failed: ...") or
--   drops that target with the error as reason; the traceback goes to
--   m:errors(). A job whose functions are the same values keeps running
--   on reload.
--   m:stop(): makes run return (from an appender callback, say)
--   m:errors() -> { msg, ... }: appender errors since the last call
--   m:appender_stats() -> batch queue counters (Lua appenders only)
--   m:close(): idempotent; also __gc, and __close on Lua 5.4. The store of
--     `m.store` stays usable after the manager is closed.
-- Pool methods:
--   pool:targets() -> { { labels, discovered_labels, url, health =
--     "up"|"down"|"unknown", last_error ("" if none), last_scrape (Unix
--     seconds, nil if never), last_scrape_duration, interval, timeout
--     (seconds), scrapes, job, all_labels, ... }, ... }
--   pool:dropped_targets() -> { { discovered_labels, reason }, ... }
--   pool:job(), pool:fingerprint(), pool:close()
-- Misuse (wrong types, unknown options, a closed object, driving the
-- manager from its own callbacks) raises; expected failures return nil, err.
local core = require "promscrape.core"

local M = {}

local methods = core.manager_methods

local has_config, config = pcall(require, "promscrape.config")

local format, concat = string.format, table.concat

------------------------------------------------------------------------------
-- cfg table -> YAML text (JSON is YAML flow syntax), so promscrape.config
-- validates and completes a table exactly as it does a file.
------------------------------------------------------------------------------

local function is_array(t)
  local n = #t
  if n == 0 then return false end
  local c = 0
  for _ in pairs(t) do c = c + 1 end
  return c == n
end

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return format("\\u%04x", c:byte())
  end) .. '"'
end

local encode

local function encode_number(v)
  if v ~= v or v == math.huge or v == -math.huge then
    error("not a finite number", 0)
  end
  if v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
    return format("%.0f", v)
  end
  return format("%.17g", v)
end

encode = function(v, path)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "number" then return encode_number(v) end
  if t == "boolean" then return tostring(v) end
  if t ~= "table" then
    error(format("%s: cannot be a %s", path, t), 0)
  end
  if has_config and v == config.null then return "null" end
  local out = {}
  if is_array(v) then
    for i = 1, #v do out[i] = encode(v[i], format("%s[%d]", path, i - 1)) end
    return "[" .. concat(out, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do
    if type(k) ~= "string" then
      error(format("%s: keys must be strings, found a %s", path, type(k)), 0)
    end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local x = v[k]
    -- An empty table is ambiguous (list or map): leave it to the defaults.
    if not (type(x) == "table" and next(x) == nil) then
      out[#out + 1] = quote(k) .. ":" .. encode(x, path == "" and k or path .. "." .. k)
    end
  end
  return "{" .. concat(out, ",") .. "}"
end

-- vmagent extensions: not Prometheus fields, so kept out of validation.
local EXTENSIONS = { "scrape_offset", "scrape_align_interval" }

-- Rule lists that may hold Lua functions (function rules, see
-- promscrape.relabel): kept out of the YAML text and spliced back.
local RULE_LISTS = { "relabel_configs", "metric_relabel_configs" }

-- Merges normalized table rules and functions (by original position).
local function splice(tables, fns)
  local out, k, pos = {}, 1, 1
  local n = #tables
  for _ in pairs(fns) do n = n + 1 end
  while pos <= n do
    if fns[pos] then
      out[pos] = fns[pos]
    else
      out[pos] = tables[k]
      k = k + 1
    end
    pos = pos + 1
  end
  return out
end

local function shallow(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function ms(d, what)
  local v, err = config.parse_duration(d)
  if not v then error(format("%s: %s", what, tostring(err)), 0) end
  return v
end

--- Normalizes cfg (table or YAML text) with promscrape.config, then flattens
-- it into what core's Manager:_apply reads (durations as *_ms numbers).
-- Returns flat or nil, err.
local function prepare(cfg)
  if not has_config then
    return nil, "apply_config: promscrape.config is not available: " .. tostring(config)
  end
  local text, ext = cfg, {}
  if type(cfg) == "table" then
    local c = shallow(cfg)
    c.warnings = nil -- left by config.parse/config.load in its result
    if type(c.scrape_configs) == "table" then
      local scs = {}
      for i, sc in ipairs(c.scrape_configs) do
        if type(sc) ~= "table" then
          return nil, format("config: scrape_configs[%d]: expected a table, got %s", i - 1, type(sc))
        end
        sc = shallow(sc)
        ext[i] = {}
        -- Function rules cannot travel through the YAML text: take them out
        -- by position and splice them back after normalization.
        for _, f in ipairs(RULE_LISTS) do
          if type(sc[f]) == "table" then
            local tables, fns = {}, nil
            for j = 1, #sc[f] do
              local r = sc[f][j]
              if type(r) == "function" then
                fns = fns or {}
                fns[j] = r
              else
                tables[#tables + 1] = r
              end
            end
            if fns then
              ext[i][f] = fns
              sc[f] = tables
            end
          end
        end
        for _, f in ipairs(EXTENSIONS) do
          ext[i][f], sc[f] = sc[f], nil
        end
        scs[i] = sc
      end
      c.scrape_configs = scs
    end
    local ok, res = pcall(encode, c, "")
    if not ok then return nil, "config: " .. tostring(res) end
    text = res
  end
  local n, err = config.parse(text, "config")
  if not n then return nil, err end

  local ok, flat = pcall(function()
    local g = shallow(n.global)
    g.scrape_interval_ms = ms(g.scrape_interval, "global.scrape_interval")
    g.scrape_timeout_ms = ms(g.scrape_timeout, "global.scrape_timeout")
    local jobs = {}
    for i, sc in ipairs(n.scrape_configs) do
      local j = shallow(sc)
      local path = format("scrape_configs[%d]", i - 1)
      j.scrape_interval_ms = ms(sc.scrape_interval, path .. ".scrape_interval")
      j.scrape_timeout_ms = ms(sc.scrape_timeout, path .. ".scrape_timeout")
      for _, f in ipairs(EXTENSIONS) do
        local v = ext[i] and ext[i][f]
        if v ~= nil then j[f .. "_ms"] = ms(v, path .. "." .. f) end
      end
      for _, f in ipairs(RULE_LISTS) do
        local fns = ext[i] and ext[i][f]
        if fns then j[f] = splice(j[f] or {}, fns) end
      end
      jobs[i] = j
    end
    return { global = g, jobs = jobs, remote_write = n.remote_write }
  end)
  if not ok then return nil, "config: " .. tostring(flat) end
  return flat
end

--- m:apply_config(cfg) -> true | nil, err (see the header).
function methods.apply_config(m, cfg)
  local t = type(cfg)
  if t ~= "table" and t ~= "string" then
    error("bad argument #1 to 'apply_config' (table expected, got " .. t .. ")", 2)
  end
  local flat, err = prepare(cfg)
  if not flat then return nil, err end
  -- issue 6: shard rules and remote_write entries (promscrape.remote_write)
  local rw = require "promscrape.remote_write"
  local rws, rerr = rw.before_apply(m, flat)
  if not rws then return nil, rerr end
  local ok, aerr, code = m:_apply(flat)
  if not ok then return ok, aerr, code end
  return rw.after_apply(m, rws)
end

--- m:remote_writes() -> { RemoteWrite, ... } of the applied config's
-- remote_write entries (see promscrape.remote_write: stats, flush).
function methods.remote_writes(m)
  return require("promscrape.remote_write").of_manager(m)
end

local OPTS = { appender = true, seed = true, on_error = true, max_pending_samples = true, shard = true }

--- promscrape.manager([opts]) -> Manager | nil, msg, code (see the header).
function M.new(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error("bad argument #1 to 'manager' (table expected, got " .. type(opts) .. ")", 2)
  end
  for k in pairs(opts) do
    if not OPTS[k] then error("manager: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local o = { seed = opts.seed, on_error = opts.on_error, max_pending_samples = opts.max_pending_samples }
  local app = opts.appender
  if app == nil then
    local store, err, code = core.memory()
    if not store then return nil, err, code end
    o.appender = store -- C appenders go through the switch (remote_write)
  elseif type(app) == "userdata" then
    o.appender = app -- MemoryStore, RemoteWrite or Fanout: the core checks
  elseif type(app) == "table" then
    if app.commit == nil then
      error("manager: appender has no commit method", 2)
    end
    o.appender = app
  else
    error("manager: appender must be a MemoryStore or a table with a commit method, got " .. type(app), 2)
  end
  local shard = opts.shard ~= nil and require("promscrape.remote_write").check_shard(opts.shard, 2)
  local m, err, code = core.manager_new(o)
  if m and shard then require("promscrape.remote_write").set_shard(m, shard) end
  return m, err, code
end

M.memory = core.memory
M._encode = encode -- for promscrape.remote_write's canonical keys

return M
