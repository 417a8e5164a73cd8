--- promscrape.discovery: service discovery in Lua (Prometheus discovery.Manager).
--
--   local discovery = require "promscrape.discovery"
--   local m = promscrape.manager()
--   local d = discovery.new{ manager = m }          -- throttle = 5 (seconds)
--   assert(d:apply_config(cfg))                     -- engine config + providers
--   while true do m:step(0.1); d:poll() end         -- or d:run{ duration = 30 }
--
-- A provider is a Lua object that produces target groups
--   { targets = { "host:port", ... }, labels = { k = "v" }, source = "..." }
-- and hands them to the discovery manager through the `up` function it is
-- given when started (see docs/discovery.md):
--   provider:start(up, ctx)   once; up(groups) sends groups, up(nil, err)
--                             reports an error (the last good groups stay)
--   provider:poll(now)        optional; called on every d:poll()
--   provider:stop()           optional; called when the job goes away
-- Groups are kept per provider and per `source`, as in Prometheus: a group
-- replaces the previous group of the same source, a group with no targets
-- removes it. The manager merges all providers of a job and calls
-- `m:sync{ [job] = groups }` at most once per `throttle` seconds (Prometheus
-- uses 5 s); the first update is sent at once.
--
-- Built-in providers: static_configs (promscrape.discovery.static),
-- file_sd_configs (promscrape.discovery.file), http_sd_configs
-- (promscrape.discovery.http). Other *_sd_configs are left alone (the config
-- loader already warned about them).
--
-- Library code: runs on Lua 5.1/LuaJIT and 5.4.
local M = {}

local format = string.format

------------------------------------------------------------------------------
-- A clock in seconds with sub-second resolution when one can be found.
------------------------------------------------------------------------------

local function find_clock()
  local ok, core = pcall(require, "promscrape.core")
  if ok and type(core) == "table" then
    for _, name in ipairs { "monotonic", "now", "time" } do
      if type(core[name]) == "function" then return core[name] end
    end
  end
  local has_socket, socket = pcall(require, "socket")
  if has_socket and type(socket) == "table" and type(socket.gettime) == "function" then
    return socket.gettime
  end
  return os.time
end

M.clock = find_clock()

------------------------------------------------------------------------------
-- Target group checks shared by the providers.
------------------------------------------------------------------------------

local has_values, values = pcall(require, "promscrape.config.values")
local valid_utf8 = has_values and values.valid_utf8 or nil

--- Checks one decoded target group (targets: strings; labels: string to
-- string). Returns a normalized copy or nil, err. `where` prefixes errors.
function M.check_group(g, where)
  where = where or "target group"
  if type(g) ~= "table" then
    return nil, format("%s: expected a target group object, got %s", where, type(g) == "userdata" and "null" or type(g))
  end
  local out = { targets = {}, labels = {}, source = g.source }
  local targets = g.targets
  if targets ~= nil and type(targets) ~= "table" then
    return nil, format("%s: targets: expected a list of strings", where)
  end
  for i, t in ipairs(targets or {}) do
    if type(t) ~= "string" then
      return nil, format("%s: targets[%d]: expected a string, got %s", where, i - 1, type(t))
    end
    out.targets[i] = t
  end
  local labels = g.labels
  if labels ~= nil and type(labels) ~= "table" then
    return nil, format("%s: labels: expected a map of strings", where)
  end
  for k, v in pairs(labels or {}) do
    if type(k) ~= "string" or k == "" then
      return nil, format("%s: labels: invalid label name %s", where, tostring(k))
    end
    if type(v) ~= "string" then
      -- Prometheus: json: cannot unmarshal number into Go value of type model.LabelValue
      return nil, format("%s: labels.%s: label value must be a string, got %s", where, k,
        type(v) == "userdata" and "null" or type(v))
    end
    if valid_utf8 and not valid_utf8(k) then
      return nil, format("%s: labels: %q is not a valid label name", where, k)
    end
    if valid_utf8 and not valid_utf8(v) then
      return nil, format("%s: labels.%s: invalid UTF-8 in label value", where, k)
    end
    out.labels[k] = v
  end
  return out
end

------------------------------------------------------------------------------
-- The discovery manager.
------------------------------------------------------------------------------

local Manager = {}
Manager.__index = Manager

local OPTS = { manager = true, throttle = true, clock = true, on_error = true, on_update = true,
  on_sync = true, providers = true }

--- discovery.new(opts) -> DiscoveryManager
--   opts.manager:   the scrape Manager to m:sync (optional: without it,
--                   d:targets() still gives the merged groups)
--   opts.throttle:  minimum seconds between two syncs (default 5)
--   opts.clock:     function() -> seconds (default: the best clock found)
--   opts.on_error:  function(job, provider_name, err) for provider errors
--   opts.on_update: function(job, provider_name) after a provider's update
--   opts.on_sync:   function(target_sets) after each m:sync
--   opts.providers: { [sd_name] = constructor } extra or replacement
--                   providers for config sections (e.g. dns_sd_configs =
--                   function(section, job, index, d) -> provider)
function M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("discovery.new: opts must be a table", 2) end
  for k in pairs(opts) do
    if not OPTS[k] then error("discovery.new: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local d = setmetatable({
    m = opts.manager,
    throttle = opts.throttle or 5,
    clock = opts.clock or M.clock,
    on_error = opts.on_error,
    on_update = opts.on_update,
    on_sync = opts.on_sync,
    constructors = {},
    jobs = {},        -- job -> { providers = { p, ... }, order = n }
    job_order = {},   -- job names in config order
    dirty = false,
    last_sync = nil,
    syncs = 0,
    errors = {},      -- recent errors { job, provider, err, time }
  }, Manager)
  for k, v in pairs(M.constructors) do d.constructors[k] = v end
  for k, v in pairs(opts.providers or {}) do d.constructors[k] = v end
  return d
end

-- Built-in constructors: function(section, job, index, d, sc) -> provider
M.constructors = {
  static_configs = function(sections, job)
    return require("promscrape.discovery.static").new(sections, { name = job .. "/static" })
  end,
  file_sd_configs = function(section, job, i)
    return require("promscrape.discovery.file").new(section, { name = format("%s/file_sd/%d", job, i) })
  end,
  http_sd_configs = function(section, job, i, d)
    return require("promscrape.discovery.http").new(section, {
      name = format("%s/http_sd/%d", job, i), manager = d.m,
    })
  end,
}

local function record_error(d, job, pname, err)
  local e = { job = job, provider = pname, err = err, time = d.clock() }
  d.errors[#d.errors + 1] = e
  if #d.errors > 100 then table.remove(d.errors, 1) end
  if d.on_error then d.on_error(job, pname, err) end
end

--- Adds a provider for a job; starts it. Returns the provider's state entry.
function Manager:add_provider(job, provider)
  if type(job) ~= "string" then error("add_provider: job must be a string", 2) end
  if type(provider) ~= "table" and type(provider) ~= "userdata" then
    error("add_provider: provider must be an object", 2)
  end
  local j = self.jobs[job]
  if not j then
    j = { providers = {} }
    self.jobs[job] = j
    self.job_order[#self.job_order + 1] = job
  end
  local st = {
    provider = provider,
    name = provider.name or format("%s/%d", job, #j.providers),
    groups = {},      -- source -> group
    sources = {},     -- sources in first-seen order
    last_error = nil,
    updates = 0,
  }
  j.providers[#j.providers + 1] = st
  local d = self
  local function up(groups, err)
    if st.stopped then return end
    if groups == nil then
      st.last_error = tostring(err)
      record_error(d, job, st.name, st.last_error)
      return
    end
    st.last_error = nil
    for i, g in ipairs(groups) do
      local src = g.source
      if src == nil then src = tostring(i - 1) end
      if g.targets == nil or #g.targets == 0 then
        if st.groups[src] then
          st.groups[src] = nil
        end
      else
        if not st.groups[src] then st.sources[#st.sources + 1] = src end
        st.groups[src] = { targets = g.targets, labels = g.labels or {}, source = src }
      end
    end
    -- forget removed sources, keep the order of the others
    local keep, seen = {}, {}
    for _, s in ipairs(st.sources) do
      if st.groups[s] and not seen[s] then keep[#keep + 1] = s; seen[s] = true end
    end
    st.sources = keep
    st.updates = st.updates + 1
    d.dirty = true
    if d.on_update then d.on_update(job, st.name) end
  end
  st.up = up
  if provider.start then
    local ok, err = pcall(provider.start, provider, up, { job = job, manager = self.m, clock = self.clock,
      discovery = self })
    if not ok then up(nil, "start: " .. tostring(err)) end
  end
  self.dirty = true
  return st
end

local function stop_job(j)
  for _, st in ipairs(j.providers) do
    st.stopped = true
    if st.provider.stop then pcall(st.provider.stop, st.provider) end
  end
end

-- A provider's identity across reloads: its section's content.
local function key_of(v)
  local t = type(v)
  if t ~= "table" then return t .. ":" .. tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local x = v[k]
    if x == nil then x = v[tonumber(k)] end
    out[#out + 1] = k .. "=" .. key_of(x)
  end
  return "{" .. table.concat(out, ",") .. "}"
end

--- Builds the providers of one scrape config: a list of { key, make }.
local function providers_of(d, sc)
  local list = {}
  if type(sc.static_configs) == "table" and #sc.static_configs > 0 then
    local make = d.constructors.static_configs
    if make then
      list[#list + 1] = { key = "static" .. key_of(sc.static_configs),
        make = function() return make(sc.static_configs, sc.job_name, 0, d, sc) end }
    end
  end
  local names = {}
  for k in pairs(sc) do
    if type(k) == "string" and k:match("_sd_configs$") then names[#names + 1] = k end
  end
  table.sort(names)
  for _, k in ipairs(names) do
    local make = d.constructors[k]
    if make and type(sc[k]) == "table" then
      for i, section in ipairs(sc[k]) do
        list[#list + 1] = { key = k .. ":" .. key_of(section),
          make = function() return make(section, sc.job_name, i - 1, d, sc) end }
      end
    end
  end
  return list
end

--- Strips what discovery provides (static_configs) from a config, so that
-- the engine gets every target through m:sync, as Prometheus's scrape
-- manager does. Returns a shallow copy.
function M.engine_config(cfg)
  local c = {}
  for k, v in pairs(cfg) do c[k] = v end
  local scs = {}
  for i, sc in ipairs(cfg.scrape_configs or {}) do
    local s = {}
    for k, v in pairs(sc) do s[k] = v end
    s.static_configs = nil
    scs[i] = s
  end
  c.scrape_configs = scs
  return c
end

--- d:apply_config(cfg [, opts]) -> true | nil, err
-- cfg: promscrape.config's result. Applies it to the scrape Manager (with
-- static_configs moved to discovery) unless opts.engine == false, then
-- starts, keeps or stops providers: a job whose discovery sections did not
-- change keeps its providers (and their targets); others are restarted,
-- removed jobs stopped. Sends the first update at once.
function Manager:apply_config(cfg, opts)
  opts = opts or {}
  if type(cfg) ~= "table" then error("apply_config: cfg must be a table", 2) end
  if self.m and opts.engine ~= false then
    local ok, err = self.m:apply_config(M.engine_config(cfg))
    if not ok then return nil, err end
  end
  local seen, order = {}, {}
  for _, sc in ipairs(cfg.scrape_configs or {}) do
    local job = sc.job_name
    seen[job] = true
    order[#order + 1] = job
    local plist = providers_of(self, sc)
    local keys = {}
    for _, p in ipairs(plist) do keys[#keys + 1] = p.key end
    local key = table.concat(keys, "\n")
    local j = self.jobs[job]
    if not j or j.key ~= key then
      if j then stop_job(j) end
      self.jobs[job] = { providers = {}, key = key }
      for _, p in ipairs(plist) do
        local ok, prov = pcall(p.make)
        if ok and prov then
          self:add_provider(job, prov)
        else
          record_error(self, job, p.key:match("^[^:{]*"), tostring(prov))
        end
      end
      self.jobs[job].key = key
    end
  end
  for job, j in pairs(self.jobs) do
    if not seen[job] then
      stop_job(j)
      self.jobs[job] = nil
    end
  end
  self.job_order = order
  self.dirty = true
  self.last_sync = nil -- a reload is sent at once
  self:poll()
  return true
end

--- d:targets() -> { [job] = { group, ... } }: the merged groups per job.
function Manager:targets()
  local sets = {}
  for job, j in pairs(self.jobs) do
    local list = {}
    for _, st in ipairs(j.providers) do
      for _, src in ipairs(st.sources) do
        local g = st.groups[src]
        if g then
          list[#list + 1] = { targets = g.targets, labels = g.labels,
            source = st.name .. "/" .. src }
        end
      end
    end
    sets[job] = list
  end
  return sets
end

--- d:status() -> { { job, provider, last_error, updates, groups }, ... }
function Manager:status()
  local out = {}
  for _, job in ipairs(self.job_order) do
    local j = self.jobs[job]
    for _, st in ipairs(j and j.providers or {}) do
      local n = 0
      for _ in pairs(st.groups) do n = n + 1 end
      out[#out + 1] = { job = job, provider = st.name, last_error = st.last_error,
        updates = st.updates, groups = n }
    end
  end
  return out
end

--- d:flush() -> true | nil, err: syncs now, whatever the throttle.
function Manager:flush()
  self.dirty = false
  self.last_sync = self.clock()
  self.syncs = self.syncs + 1
  local sets = self:targets()
  if self.m then
    local ok, err = self.m:sync(sets)
    if not ok then return nil, err end
  end
  if self.on_sync then self.on_sync(sets) end
  return true
end

--- d:poll([now]) -> true | nil, err: lets providers work (file polling,
-- HTTP refreshes), then syncs if something changed and the throttle allows.
function Manager:poll(now)
  now = now or self.clock()
  for _, job in ipairs(self.job_order) do
    local j = self.jobs[job]
    for _, st in ipairs(j and j.providers or {}) do
      if st.provider.poll and not st.stopped then
        local ok, err = pcall(st.provider.poll, st.provider, now)
        if not ok then st.up(nil, "poll: " .. tostring(err)) end
      end
    end
  end
  if self.dirty and (self.last_sync == nil or now - self.last_sync >= self.throttle) then
    return self:flush()
  end
  return true
end

--- d:run{ duration = s, step = 0.1 }: steps the scrape Manager and polls.
function Manager:run(o)
  o = o or {}
  local stepv = o.step or 0.1
  local t0 = self.clock()
  while true do
    if o.duration and self.clock() - t0 >= o.duration then return "duration" end
    if self.m then
      local ok, err = self.m:step(stepv)
      if not ok then return nil, err end
    end
    local ok, err = self:poll()
    if not ok then return nil, err end
  end
end

--- d:stop(): stops every provider.
function Manager:stop()
  for _, j in pairs(self.jobs) do stop_job(j) end
  self.jobs, self.job_order = {}, {}
end

M.Manager = Manager

return M
