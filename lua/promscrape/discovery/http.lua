--- promscrape.discovery.http: http_sd_configs (Prometheus discovery/http).
--
--   local p = require("promscrape.discovery.http").new(
--     { url = "http://sd.example/targets", refresh_interval = "1m",
--       basic_auth = { username = "u", password = "p" } },
--     { manager = m })                        -- whose m:http_get is used
--   d:add_provider("job", p)
--
-- Every refresh_interval the URL is fetched with the engine's non-blocking
-- HTTP client (m:http_get; the section's HTTP client fields: basic_auth,
-- authorization, tls_config, proxy_url, follow_redirects, http_headers ...),
-- with Accept: application/json and X-Prometheus-Refresh-Interval-Seconds,
-- as Prometheus does. The answer must be 200, Content-Type application/json
-- and a JSON list of target groups; each group gets source "<url>:<index>"
-- and the label __meta_url = <url>. A failed refresh (transport error,
-- status, content type, shape) is reported and the last good groups stay;
-- groups that disappeared from a good answer are removed.
-- Library code: Lua 5.1-5.4; needs lua-cjson.
local discovery = require "promscrape.discovery"

local M = {}

local format = string.format

local HTTP_FIELDS = {
  "basic_auth", "authorization", "oauth2", "tls_config", "proxy_url", "no_proxy",
  "proxy_from_environment", "proxy_connect_header", "follow_redirects", "enable_http2",
  "http_headers",
}

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

--- Prometheus's check: ^(?i:application/json(;\s*charset=("utf-8"|utf-8))?)$
function M.valid_content_type(ct)
  if type(ct) ~= "string" then return false end
  local s = ct:lower()
  if s == "application/json" then return true end
  local cs = s:match("^application/json;%s*charset=(.*)$")
  return cs == "utf-8" or cs == '"utf-8"'
end

--- decode(url, status, content_type, body) -> groups | nil, err
function M.decode(url, status, ctype, body)
  if status ~= 200 then
    return nil, format("server returned HTTP status %s", tostring(status))
  end
  if not M.valid_content_type(ctype) then
    return nil, format("unsupported content type %q", tostring(ctype or ""))
  end
  local cjson = require "cjson.safe"
  local v, err = cjson.decode(body or "")
  if v == nil and err then return nil, err end
  if v == nil or v == cjson.null then v = {} end
  if type(v) ~= "table" or (next(v) ~= nil and #v == 0) then
    return nil, "json: cannot unmarshal object into Go value of type []*targetgroup.Group"
  end
  local out = {}
  for i, g in ipairs(v) do
    if g == cjson.null then return nil, "nil target group item found" end
    if type(g) ~= "table" then
      return nil, format("json: cannot unmarshal %s into Go value of type targetgroup.Group", type(g))
    end
    local tg = { targets = g.targets, labels = g.labels }
    if tg.targets == cjson.null then tg.targets = nil end
    if tg.labels == cjson.null then tg.labels = nil end
    local checked, cerr = discovery.check_group(tg, format("group %d", i - 1))
    if not checked then return nil, cerr end
    checked.source = url .. ":" .. (i - 1)
    checked.labels.__meta_url = url
    out[i] = checked
  end
  return out
end

local Provider = {}
Provider.__index = Provider

--- new(section [, opts]) -> provider
--   section: an http_sd_configs entry ({ url, refresh_interval, HTTP fields })
--   opts.manager: the scrape Manager whose http_get is used (the discovery
--     manager passes its own); opts.fetch(url, req_opts, callback) replaces
--     it; opts.name; opts.timeout (seconds, default min(refresh, 30))
function M.new(section, opts)
  opts = opts or {}
  if type(section) ~= "table" or type(section.url) ~= "string" then
    error("http_sd: section must have a url", 2)
  end
  local refresh = duration_seconds(section.refresh_interval, 60)
  local req = {
    timeout = opts.timeout or math.min(refresh, 30),
    headers = {
      Accept = "application/json",
      ["X-Prometheus-Refresh-Interval-Seconds"] = format("%d", math.floor(refresh)),
    },
  }
  for _, f in ipairs(HTTP_FIELDS) do req[f] = section[f] end
  return setmetatable({
    name = opts.name or "http_sd",
    url = section.url,
    refresh_s = refresh,
    req = req,
    manager = opts.manager,
    fetch = opts.fetch,
    last_n = 0,
    next_refresh = 0,
    inflight = false,
    refreshes = 0,
  }, Provider)
end

function Provider:_get(cb)
  if self.fetch then return self.fetch(self.url, self.req, cb) end
  local m = self.manager
  if not m or not m.http_get then
    return nil, "no HTTP client: the scrape manager has no http_get"
  end
  return m:http_get(self.url, self.req, cb)
end

function Provider:handle(res)
  self.inflight = false
  self.refreshes = self.refreshes + 1
  if res.error and res.error ~= "" then
    self.up(nil, format("error refreshing %s: %s", self.url, res.error))
    return
  end
  local groups, err = M.decode(self.url, res.status, res.content_type, res.body)
  if not groups then
    self.up(nil, format("error refreshing %s: %s", self.url, err))
    return
  end
  local send = {}
  for i, g in ipairs(groups) do send[i] = g end
  for i = #groups, self.last_n - 1 do send[#send + 1] = { source = self.url .. ":" .. i } end
  self.last_n = #groups
  self.up(send)
end

function Provider:start(up, ctx)
  self.up = up
  if not self.manager and ctx then self.manager = ctx.manager end
  self:poll(((ctx and ctx.clock) or discovery.clock)())
end

function Provider:poll(now)
  if self.stopped or self.inflight or now < self.next_refresh then return end
  self.next_refresh = now + self.refresh_s
  self.inflight = true
  local me = self
  local ok, err = self:_get(function(res)
    if not me.stopped then me:handle(res or { error = "no response" }) end
  end)
  if not ok then
    self.inflight = false
    self.up(nil, format("error refreshing %s: %s", self.url, tostring(err)))
  end
end

function Provider:stop()
  self.stopped = true
end

return M
