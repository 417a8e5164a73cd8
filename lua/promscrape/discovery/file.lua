--- promscrape.discovery.file: file_sd_configs (Prometheus discovery/file).
--
--   local p = require("promscrape.discovery.file").new{
--     files = { "targets/*.json", "more.yml" }, refresh_interval = "5m" }
--   d:add_provider("job", p)
--
-- Files are JSON or YAML lists of target groups
--   [ { "targets": ["host:port", ...], "labels": { "k": "v" } }, ... ]
-- chosen by extension (.json, .yml, .yaml). As in Prometheus:
--   * each group's source is "<path>:<index>" and its labels get
--     __meta_filepath = <path> (the path as the glob matched it);
--   * a file that cannot be read or parsed keeps its last good groups and
--     the error is reported; a removed file's groups are removed;
--   * label values must be strings (JSON numbers are an error).
-- Prometheus watches the files with inotify and re-reads them every
-- refresh_interval; here the globs are re-listed and the files stat'ed
-- (mtime, size) every `check_interval` seconds (default 1, never above the
-- refresh interval), and every refresh_interval every file is read again
-- and compared by content, which catches same-size rewrites within a second.
-- Needs LuaFileSystem; JSON needs lua-cjson, YAML lyaml. Lua 5.1-5.4.
local fs = require "promscrape.config.fs"
local discovery = require "promscrape.discovery"

local M = {}

local format = string.format

local has_lfs, lfs = pcall(require, "lfs")

local function duration_seconds(s, default)
  if s == nil then return default end
  if type(s) == "number" then return s end
  local ok, config = pcall(require, "promscrape.config")
  if ok then
    local v = config.duration_seconds(s)
    if v then return v end
  end
  error("refresh_interval: invalid duration " .. tostring(s), 0)
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  if s == nil then return nil, path .. ": read error" end
  return s
end

------------------------------------------------------------------------------
-- Decoding
------------------------------------------------------------------------------

local function decode_json(text)
  local cjson = require "cjson.safe"
  local v, err = cjson.decode(text)
  if v == nil and err then return nil, err end
  if v == nil or v == cjson.null then return {} end
  if type(v) ~= "table" or (next(v) ~= nil and #v == 0) then
    return nil, "json: cannot unmarshal object into Go value of type []*targetgroup.Group"
  end
  local out = {}
  for i, g in ipairs(v) do
    if g == cjson.null then return nil, "nil target group item found" end
    if type(g) ~= "table" then
      return nil, format("json: cannot unmarshal %s into Go value of type targetgroup.Group", type(g))
    end
    -- JSON null is "no value": an empty list or map.
    local tg = { targets = g.targets, labels = g.labels }
    if tg.targets == cjson.null then tg.targets = nil end
    if tg.labels == cjson.null then tg.labels = nil end
    if type(tg.labels) == "table" then
      local l = {}
      for k, x in pairs(tg.labels) do
        if x == cjson.null then x = "" end
        l[k] = x
      end
      tg.labels = l
    end
    local checked, cerr = discovery.check_group(tg, format("group %d", i - 1))
    if not checked then return nil, cerr end
    out[i] = checked
  end
  return out
end

local function yaml_scalar(n, what)
  if n.t ~= "scalar" then
    return nil, format("line %d: %s: expected a string", n.line or 0, what)
  end
  if n.null and n.plain then return "" end
  return n.raw
end

local function decode_yaml(text)
  local yaml = require "promscrape.config.yaml"
  local ok, root = pcall(yaml.load, text)
  if not ok then return nil, "yaml: " .. tostring(root) end
  if root == nil or (root.t == "scalar" and root.null) then return {} end
  if root.t ~= "seq" then
    return nil, format("yaml: line %d: cannot unmarshal into []*targetgroup.Group", root.line or 0)
  end
  local out = {}
  for i = 1, root.n do
    local g = root[i]
    if g.t == "scalar" and g.null then return nil, "nil target group item found" end
    if g.t ~= "map" then
      return nil, format("yaml: line %d: cannot unmarshal into targetgroup.Group", g.line or 0)
    end
    local tg = { targets = {}, labels = {} }
    for _, k in ipairs(g.keys) do
      local v = g.map[k]
      if k == "targets" then
        if v.t == "seq" then
          for j = 1, v.n do
            local s, err = yaml_scalar(v[j], "targets")
            if not s then return nil, "yaml: " .. err end
            tg.targets[#tg.targets + 1] = s
          end
        elseif not (v.t == "scalar" and v.null) then
          return nil, format("yaml: line %d: targets: expected a list of strings", v.line or 0)
        end
      elseif k == "labels" then
        if v.t == "map" then
          for _, lk in ipairs(v.keys) do
            local s, err = yaml_scalar(v.map[lk], "labels." .. lk)
            if not s then return nil, "yaml: " .. err end
            tg.labels[lk] = s
          end
        elseif not (v.t == "scalar" and v.null) then
          return nil, format("yaml: line %d: labels: expected a map of strings", v.line or 0)
        end
      else
        -- yaml.UnmarshalStrict, as Prometheus reads these files
        return nil, format("yaml: unmarshal errors: line %d: field %s not found in type targetgroup.Group",
          g.line or 0, k)
      end
    end
    local checked, cerr = discovery.check_group(tg, format("group %d", i - 1))
    if not checked then return nil, cerr end
    out[i] = checked
  end
  return out
end

--- decode(path, text) -> groups | nil, err (by extension).
function M.decode(path, text)
  local ext = (path:match("%.([^./]+)$") or ""):lower()
  if ext == "json" then return decode_json(text) end
  if ext == "yml" or ext == "yaml" then return decode_yaml(text) end
  return nil, "unsupported file extension: " .. path
end

--- Reads one file: groups with source and __meta_filepath, or nil, err.
function M.read(path)
  local text, err = read_file(path)
  if not text then return nil, err end
  local groups, derr = M.decode(path, text)
  if not groups then return nil, derr end
  for i, g in ipairs(groups) do
    g.source = path .. ":" .. (i - 1)
    g.labels.__meta_filepath = path
  end
  return groups, nil, text
end

------------------------------------------------------------------------------
-- The provider
------------------------------------------------------------------------------

local Provider = {}
Provider.__index = Provider

--- new(section [, opts]) -> provider
--   section: { files = {...}, refresh_interval = "5m" } (a file_sd_configs
--   entry as promscrape.config returns it: paths already joined with the
--   config file's directory)
--   opts.name; opts.check_interval (seconds, default 1)
function M.new(section, opts)
  opts = opts or {}
  if type(section) ~= "table" or type(section.files) ~= "table" then
    error("file_sd: section must have a files list", 2)
  end
  local refresh = duration_seconds(section.refresh_interval, 300)
  local check = opts.check_interval or 1
  if check > refresh then check = refresh end
  return setmetatable({
    name = opts.name or "file_sd",
    files = section.files,
    refresh_s = refresh,
    check = check,
    state = {},  -- path -> { mtime, size, text, n (groups sent), err }
    next_check = 0, next_refresh = 0,
  }, Provider)
end

-- Lists the files the patterns match now (unique, in pattern order).
function Provider:list()
  local out, seen, errs = {}, {}, {}
  for _, pat in ipairs(self.files) do
    local matches, err = fs.glob(pat)
    if not matches then
      errs[#errs + 1] = format("%s: %s", pat, err)
    else
      for _, p in ipairs(matches) do
        local ext = (p:match("%.([^./]+)$") or ""):lower()
        if not seen[p] and (ext == "json" or ext == "yml" or ext == "yaml") then
          seen[p] = true
          out[#out + 1] = p
        end
      end
    end
  end
  return out, errs
end

local function stat(path)
  if not has_lfs then return nil end
  local a = lfs.attributes(path)
  if not a then return nil end
  return a.modification, a.size
end

--- One refresh. full: read every file; otherwise only files whose mtime or
-- size changed, new files, and files that vanished.
function Provider:refresh(full)
  local up = self.up
  local files, errs = self:list()
  for _, e in ipairs(errs) do up(nil, e) end
  local present = {}
  local send = {}
  for _, path in ipairs(files) do
    present[path] = true
    local st = self.state[path]
    local mtime, size = stat(path)
    local changed = full or not st or st.mtime ~= mtime or st.size ~= size
    if changed then
      if not st then
        st = { n = 0 }
        self.state[path] = st
      end
      st.mtime, st.size = mtime, size
      local groups, err, text = M.read(path)
      if not groups then
        -- Keep the last good groups (Prometheus: "Prevent deletion").
        if st.err ~= err or full then up(nil, format("error reading file %s: %s", path, err)) end
        st.err = err
      else
        st.err = nil
        if text ~= st.text then
          st.text = text
          for _, g in ipairs(groups) do send[#send + 1] = g end
          for i = #groups, st.n - 1 do send[#send + 1] = { source = path .. ":" .. i } end
          st.n = #groups
        end
      end
    end
  end
  for path, st in pairs(self.state) do
    if not present[path] then
      for i = 0, st.n - 1 do send[#send + 1] = { source = path .. ":" .. i } end
      self.state[path] = nil
    end
  end
  if #send > 0 then up(send) end
end

function Provider:start(up, ctx)
  self.up = up
  self.started = true
  self:poll(((ctx and ctx.clock) or discovery.clock)())
end

function Provider:poll(now)
  if now >= self.next_refresh then
    self.next_refresh = now + self.refresh_s
    self.next_check = now + self.check
    self:refresh(true)
  elseif now >= self.next_check then
    self.next_check = now + self.check
    self:refresh(false)
  end
end

function Provider:stop()
  self.up = function() end
end

--- One-shot read without a manager: groups, errors (promscrape check config).
function Provider:discover()
  local groups, errors = {}, {}
  local files, errs = self:list()
  for _, e in ipairs(errs) do errors[#errors + 1] = e end
  for _, path in ipairs(files) do
    local g, err = M.read(path)
    if g then
      for _, x in ipairs(g) do groups[#groups + 1] = x end
    else
      errors[#errors + 1] = format("error reading file %s: %s", path, err)
    end
  end
  return groups, errors
end

return M
