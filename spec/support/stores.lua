--- spec/support/stores.lua: real remote-write receivers for the specs.
--
--   local stores = require "spec.support.stores"
--   if not stores.have("victoria-metrics") then pending(...) end
--   local vm = stores.start("victoria-metrics")   -- or "prometheus"
--   vm:write_url()                 -> "http://127.0.0.1:<port>/api/v1/write"
--   vm:query(promql)               -> Prometheus API `data.result` (table)
--   vm:series(match)               -> /api/v1/series result (table)
--   vm:stop(); vm:start()          -- a real outage: the process exits and
--                                  -- restarts on the same data dir and port
--   vm:cleanup()                   -- stop + rm -rf the data dir (teardown)
--
-- Every process binds 127.0.0.1 and is started and stopped by its pid.
-- Prometheus 2.42 needs --web.enable-remote-write-receiver; VictoriaMetrics
-- runs with -search.latencyOffset=0s (else the last 30 s are hidden) and
-- is flushed (/internal/force_flush) before each query.
local cjson = require "cjson"
local server = require "spec.support.server"

local M = {}

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function capture(cmd)
  local p = io.popen(cmd)
  local s = p:read("*a")
  p:close()
  return s
end

local BIN = {
  ["prometheus"] = "/usr/bin/prometheus",
  ["victoria-metrics"] = "/usr/bin/victoria-metrics",
  ["vmagent"] = "/usr/bin/vmagent",
  ["node-exporter"] = "/usr/bin/prometheus-node-exporter",
}

--- true if the binary of kind is installed.
function M.have(kind)
  local f = io.open(BIN[kind], "r")
  if f then f:close() end
  return f ~= nil
end

local Store = {}
Store.__index = Store

function Store:url(path) return "http://127.0.0.1:" .. self.port .. path end

function Store:write_url() return self:url("/api/v1/write") end

local function alive(pid)
  return pid and sh("kill -0 " .. pid .. " 2>/dev/null")
end

--- (Re)starts the process on its port and data dir; waits until ready.
function Store:start()
  assert(not alive(self.pid), "already running")
  local cmd
  if self.kind == "prometheus" then
    cmd = ("%s --config.file=%s --storage.tsdb.path=%s --web.listen-address=127.0.0.1:%d"
      .. " --web.enable-remote-write-receiver --log.level=warn"):format(
      BIN.prometheus, q(self.dir .. "/prometheus.yml"), q(self.dir .. "/data"), self.port)
  elseif self.kind == "victoria-metrics" then
    cmd = ("%s -storageDataPath=%s -httpListenAddr=127.0.0.1:%d -search.latencyOffset=0s"
      .. " -retentionPeriod=100y -loggerLevel=WARN"):format(
      BIN["victoria-metrics"], q(self.dir .. "/data"), self.port)
  elseif self.kind == "node-exporter" then
    cmd = ("%s --web.listen-address=127.0.0.1:%d"):format(BIN["node-exporter"], self.port)
  else
    error("unknown kind " .. self.kind)
  end
  local pid = capture("env -u LD_PRELOAD sh -c " .. q(cmd .. " >>" .. q(self.dir .. "/log")
    .. " 2>&1 & echo $!"))
  self.pid = assert(tonumber(pid), "cannot start " .. self.kind)
  local ready = self.kind == "prometheus" and "/-/ready"
    or self.kind == "victoria-metrics" and "/health" or "/metrics"
  for _ = 1, 300 do
    local code = capture("env -u LD_PRELOAD curl -s -o /dev/null -w '%{http_code}' --max-time 2 "
      .. q(self:url(ready)))
    if code == "200" then return self end
    if not alive(self.pid) then break end
    server.sleep(0.05)
  end
  local log = capture("tail -20 " .. q(self.dir .. "/log"))
  self:cleanup()
  error(self.kind .. " did not start: " .. log)
end

--- Stops the process (SIGTERM, then SIGKILL after 15 s) and waits for it.
function Store:stop()
  if not self.pid then return end
  sh("kill " .. self.pid .. " 2>/dev/null")
  for i = 1, 300 do
    if not alive(self.pid) then break end
    if i == 300 then sh("kill -9 " .. self.pid .. " 2>/dev/null") end
    server.sleep(0.05)
  end
  -- reap a zombie left by the sh that started it: it is not our child,
  -- so a dead pid is gone once kill -0 fails
  self.pid = nil
end

function Store:cleanup()
  self:stop()
  if self.dir then sh("rm -rf " .. q(self.dir)) end
  self.dir = nil
end

local function get_json(self, path)
  local body = capture("env -u LD_PRELOAD curl -s --max-time 30 -g " .. q(self:url(path)))
  local ok, doc = pcall(cjson.decode, body)
  assert(ok and type(doc) == "table", "bad answer from " .. path .. ": " .. body:sub(1, 300))
  assert(doc.status == "success", "query failed: " .. path .. ": " .. body:sub(1, 300))
  return doc.data
end

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

--- Makes what was written visible to queries.
function Store:flush()
  if self.kind == "victoria-metrics" then
    capture("env -u LD_PRELOAD curl -s --max-time 30 " .. q(self:url("/internal/force_flush")))
  end
end

--- Instant query (at `time`, Unix seconds, default now) -> result list.
function Store:query(promql, time)
  self:flush()
  local path = "/api/v1/query?query=" .. urlencode(promql)
  if time then path = path .. "&time=" .. string.format("%.3f", time) end
  return get_json(self, path).result
end

--- /api/v1/series for one matcher over the last `window` seconds.
function Store:series(match, window)
  self:flush()
  local now = os.time()
  return get_json(self, ("/api/v1/series?match[]=%s&start=%d&end=%d"):format(
    urlencode(match), now - (window or 3600), now + 60))
end

--- VictoriaMetrics' /api/v1/export: every raw sample of the matching
-- series -> { { metric = {...}, values = {...}, timestamps = {...} }, ... }
-- (the exact check: instant queries look a little into the past).
function Store:export(match)
  assert(self.kind == "victoria-metrics", "export: VictoriaMetrics only")
  self:flush()
  local body = capture("env -u LD_PRELOAD curl -s --max-time 30 -g "
    .. q(self:url("/api/v1/export?match[]=" .. urlencode(match) .. "&start=0&end=" .. (os.time() + 3600))))
  local out = {}
  for line in body:gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
  return out
end

--- Starts a store of kind ("prometheus", "victoria-metrics", or
-- "node-exporter", a scrape target) on a free port with a temp dir.
function M.start(kind)
  local dir = capture("mktemp -d /tmp/promscrape-store.XXXXXX"):gsub("%s+$", "")
  local self = setmetatable({ kind = kind, dir = dir, port = server.closed_port() }, Store)
  if kind == "prometheus" then
    local f = assert(io.open(dir .. "/prometheus.yml", "w"))
    f:write("global: {}\n")
    f:close()
  end
  return self:start()
end

return M
