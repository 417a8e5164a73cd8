-- examples/discovery_provider.lua: a service discovery provider in Lua.
--
-- A provider is any object with start(up[, ctx]) and, optionally,
-- poll(now) and stop(). It hands target groups to `up`:
--   up{ { targets = { "host:port", ... }, labels = { k = "v" }, source = "id" } }
-- or reports an error with up(nil, "message") (the last groups stay).
--
-- This one is "DNS-like": it resolves a list of host names with the system
-- resolver (getent ahostsv4: /etc/hosts, then DNS) every `refresh` seconds
-- and produces one group per name with one target per address, labelled
-- __meta_dns_name as Prometheus's dns_sd_configs does.
--
-- From a checkout, after `make` (node_exporter from `make demo` listens on
-- 127.0.0.1:9100; without it the target is simply down):
--   lua5.4 examples/discovery_provider.lua [seconds]
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (jit and "build/luajit/?.so;" or "build/?.so;") .. package.cpath

local promscrape = require "promscrape"
local discovery = require "promscrape.discovery"

local DnsLike = {}
DnsLike.__index = DnsLike

function DnsLike.new(names, port, refresh)
  return setmetatable({ name = "dns-like", names = names, port = port,
    refresh = refresh or 10, next = 0 }, DnsLike)
end

local function resolve(name)
  local p = io.popen("getent ahostsv4 '" .. name:gsub("'", "") .. "' 2>/dev/null")
  local seen, out = {}, {}
  for line in p:lines() do
    local ip = line:match("^(%d+%.%d+%.%d+%.%d+)")
    if ip and not seen[ip] then seen[ip] = true; out[#out + 1] = ip end
  end
  p:close()
  return out
end

function DnsLike:start(up)
  self.up = up
end

function DnsLike:poll(now)
  if now < self.next then return end
  self.next = now + self.refresh
  local groups = {}
  for _, name in ipairs(self.names) do
    local targets = {}
    for _, ip in ipairs(resolve(name)) do targets[#targets + 1] = ip .. ":" .. self.port end
    if #targets == 0 then self.up(nil, "no address for " .. name) end
    -- An empty group (no targets) removes what this source had before.
    groups[#groups + 1] = { targets = targets, labels = { __meta_dns_name = name }, source = name }
  end
  self.up(groups)
end

-- The scrape engine, a job without static targets, and the provider.
local seconds = tonumber(arg[1]) or 5
local m = assert(promscrape.manager())
local d = discovery.new { manager = m, throttle = 1,
  on_error = function(job, provider, err) print(("discovery error: %s %s: %s"):format(job, provider, err)) end }
assert(d:apply_config(assert(promscrape.config.parse([[
global: {scrape_interval: 2s}
scrape_configs:
  - job_name: dns_like
    relabel_configs:
      - {source_labels: [__meta_dns_name], target_label: host}
]]))))
d:add_provider("dns_like", DnsLike.new({ "localhost" }, 9100, 10))

d:run { duration = seconds } -- steps the engine and polls the providers

for _, t in ipairs(m:pools().dns_like:targets()) do
  print(("%-24s host=%-10s health=%-7s samples=%d %s"):format(t.labels.instance, t.labels.host,
    t.health, t.last_samples or 0, t.last_error))
end
d:stop()
m:close()
