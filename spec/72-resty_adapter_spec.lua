-- resty.promscrape (issue 7) without nginx: a fake `ngx` (worker id and
-- count, timers run by hand, a log sink) drives the adapter against
-- spec/support/server.py: start in background and step mode, sharding
-- over workers, workers = "one", errors logged and never raised from the
-- timer, the /api/v1/targets JSON, stop. spec/71-nginx_spec.lua runs it
-- in a real nginx. Lua 5.4 and LuaJIT.
package.path = "./?.lua;" .. package.path
local server = require "spec.support.server"
local H = require "spec.support.scrape"
local socket = require "socket"
local has_cjson, cjson = pcall(require, "cjson")

local function fake_ngx(id, count)
  local n = { ERR = 4, WARN = 5, logs = {}, timers = {} }
  n.worker = { id = function() return id end, count = function() return count end }
  n.timer = { every = function(iv, fn, ...)
    n.timers[#n.timers + 1] = { iv = iv, fn = fn, args = { ... } }
    return true
  end }
  function n.log(level, ...)
    n.logs[#n.logs + 1] = { level = level, msg = table.concat({ ... }) }
  end
  function n.now() return socket.gettime() end
  function n.tick()
    for _, t in ipairs(n.timers) do t.fn(false, (table.unpack or unpack)(t.args)) end
  end
  return n
end

-- A fresh adapter module bound to a fresh fake ngx.
local function adapter(id, count)
  local n = fake_ngx(id or 0, count or 1)
  _G.ngx = n
  package.loaded["resty.promscrape"] = nil
  local A = require "resty.promscrape"
  _G.ngx = nil
  return A, n
end

describe("resty.promscrape", function()
  local srv, addr
  local started = {}

  local function cfg(extra)
    local sc = {
      job_name = "app", scrape_interval = H.dur(H.INTERVAL), scrape_timeout = H.dur(H.TIMEOUT),
      scrape_align_interval = "1ms",
      static_configs = { { targets = { addr }, labels = { env = "t" } } },
    }
    for k, v in pairs(extra or {}) do sc[k] = v end
    return { scrape_configs = { sc } }
  end

  local function until_up(A, n)
    local deadline = H.now() + 5 * H.SLOW
    while H.now() < deadline do
      n.tick()
      local t = A.status().active[1]
      if t and t.health == "up" then return t end
      socket.sleep(0.05)
    end
  end

  lazy_setup(function()
    srv = server.start()
    addr = srv:url(""):match("//([^/]+)")
  end)

  lazy_teardown(function()
    for _, A in ipairs(started) do A.stop() end
    if srv then srv:stop() end
  end)

  it("starts in background mode and serves status, federate and JSON", function()
    local A, n = adapter()
    started[#started + 1] = A
    assert.is_true(A.start { config = cfg(), poll_interval = 0.1 })
    assert.equal(1, #n.timers)
    assert.equal(0.1, n.timers[1].iv)
    assert.equal("background", A.status().mode)
    local t = until_up(A, n)
    assert.truthy(t, "target not up")
    assert.equal("app", t.job)
    assert.matches('http_requests_total{code="200",env="t",instance="' .. addr:gsub("%p", "%%%0")
      .. '",job="app",method="post"} 1027', A.federate())
    local json = A.targets_json()
    assert.matches('^{"status":"success","data":{"activeTargets":%[{', json)
    if has_cjson then
      local doc = cjson.decode(json)
      local a = doc.data.activeTargets[1]
      assert.equal("app", a.scrapePool)
      assert.equal("up", a.health)
      assert.equal(A._duration(H.INTERVAL), a.scrapeInterval)
      assert.same({ env = "t", instance = addr, job = "app" }, a.labels)
      assert.same({}, doc.data.droppedTargets)
    end
    assert.is_nil(A.start { config = cfg() }) -- once per worker
    A.stop()
    A.stop() -- idempotent
    assert.equal("stopped", A.status().mode)
    n.tick() -- a tick after stop does nothing
  end)

  it("uses step mode on request, and background mode with metric function rules", function()
    local A, n = adapter()
    started[#started + 1] = A
    assert.is_true(A.start { config = cfg(), mode = "step" })
    assert.equal("step", A.status().mode)
    assert.truthy(until_up(A, n))
    A.stop()
    -- metric function rules are deferred to m:poll (spec 73): background
    A, n = adapter()
    started[#started + 1] = A
    assert.is_true(A.start { config = cfg { metric_relabel_configs = { function(l) return l end } } })
    assert.equal("background", A.status().mode)
    assert.truthy(until_up(A, n))
    A.stop()
    A, n = adapter()
    started[#started + 1] = A
    assert.is_true(A.start { config = cfg { metric_relabel_configs = { function(l) return l end } },
      mode = "background" })
    assert.equal("background", A.status().mode)
    A.stop()
  end)

  it("shards targets over workers by hashmod of __address__", function()
    local targets = {}
    for i = 1, 12 do targets[i] = "127.0.0.1:" .. (20000 + i) end
    local c = { scrape_configs = { { job_name = "many", scrape_interval = "1h",
      static_configs = { { targets = targets } } } } }
    local seen, total = {}, 0
    for id = 0, 2 do
      local A, n = adapter(id, 3)
      started[#started + 1] = A
      assert.is_true(A.start { config = c })
      n.tick()
      local st = A.status()
      for _, t in ipairs(st.active) do
        assert.is_nil(seen[t.labels.instance], "scraped by two workers")
        seen[t.labels.instance] = id
        total = total + 1
      end
      assert.equal(12, #st.active + #st.dropped)
      A.stop()
    end
    assert.equal(12, total) -- every target in exactly one worker
  end)

  it("restricts scraping to worker 0 with workers = \"one\"", function()
    local A = adapter(1, 2)
    assert.is_true(A.start { config = cfg(), workers = "one" })
    assert.is_nil(A.manager())
    assert.same({}, A.status().active)
    assert.equal("", A.federate())
    A.stop()
  end)

  it("logs errors and never raises from the timer", function()
    local A, n = adapter()
    started[#started + 1] = A
    assert.is_true(A.start { config = cfg(), appender = { commit = function() error("appender boom") end } })
    local deadline = H.now() + 5 * H.SLOW
    local found
    while not found and H.now() < deadline do
      n.tick() -- must not raise
      for _, l in ipairs(n.logs) do
        if l.msg:find("appender boom", 1, true) then found = l end
      end
      socket.sleep(0.05)
    end
    assert.truthy(found)
    assert.equal(n.WARN, found.level)
    assert.matches("no memory store", select(2, A.federate()))
    A.stop()
  end)

  it("reports a bad config file in the log and the return value", function()
    local A, n = adapter()
    local ok, err = A.start { config = "/nonexistent/prometheus.yml" }
    assert.is_nil(ok)
    assert.matches("nonexistent", err)
    assert.matches("nonexistent", n.logs[1].msg)
    assert.error_matches(function() A.start { confg = "x" } end, "unknown option 'confg'")
    assert.error_matches(function() A.start { config = cfg(), workers = "some" } end, "workers")
  end)

  it("formats durations and timestamps as Prometheus does", function()
    local A = adapter()
    assert.equal("15s", A._duration(15))
    assert.equal("1m30s", A._duration(90))
    assert.equal("100ms", A._duration(0.1))
    assert.equal("1h", A._duration(3600))
    assert.equal("0s", A._duration(0))
    assert.equal("1970-01-01T00:00:01.500Z", A._rfc3339(1.5))
    assert.equal("0001-01-01T00:00:00Z", A._rfc3339(nil))
  end)
end)
