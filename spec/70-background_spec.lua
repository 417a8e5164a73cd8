-- Background mode (issue 7): m:start() runs the engine on a pthread,
-- m:poll() runs Lua appenders on the Lua thread, m:stop() joins at once
-- even with transfers in flight; every method is safe while the thread
-- runs; objects refuse use from another process.
--
-- Fork safety is tested without forking: core._test_fake_pid(pid) makes
-- the binding's checks see another pid, as a forked nginx worker would
-- (a real fork from Lua needs a C helper; spec/71-nginx_spec.lua covers
-- the real thing: nginx forks its workers). Lua 5.4 and LuaJIT.
package.path = "./?.lua;" .. package.path
local promscrape = require "promscrape"
local core = promscrape.core
local server = require "spec.support.server"
local H = require "spec.support.scrape"
local socket = require "socket"

local function sleep(s) socket.sleep(s) end

describe("background mode", function()
  local srv, addr
  local managers = {}

  local function manager(opts)
    local m = assert(promscrape.manager(opts))
    managers[#managers + 1] = m
    return m
  end

  local function cfg(jobs)
    local scs = {}
    for i, j in ipairs(jobs) do
      scs[i] = {
        job_name = j.job or "bg", metrics_path = j.path or "/metrics",
        params = j.params,
        scrape_interval = H.dur(j.interval or H.INTERVAL),
        scrape_timeout = H.dur(j.timeout or H.TIMEOUT),
        scrape_align_interval = "1ms", -- first scrape at once
        metric_relabel_configs = j.mrc,
        relabel_configs = j.rc,
        static_configs = { { targets = { addr } } },
      }
    end
    return { scrape_configs = scs }
  end

  -- Polls (like an nginx timer) until pred() or timeout seconds.
  local function poll_until(m, pred, timeout)
    local deadline = H.now() + (timeout or 5) * H.SLOW
    local r = pred()
    while not r and H.now() < deadline do
      assert(m:poll())
      sleep(0.02)
      r = pred()
    end
    return r
  end

  local function scrapes(m, job)
    local t = H.target(m, job or "bg")
    return t and t.scrapes or 0
  end

  lazy_setup(function()
    srv = server.start()
    addr = srv:url(""):match("//([^/]+)")
  end)

  lazy_teardown(function()
    core._test_fake_pid(nil)
    for _, m in ipairs(managers) do m:close() end
    if srv then srv:stop() end
  end)

  it("scrapes into the memory store on the background thread", function()
    local m = manager()
    assert(m:apply_config(cfg { {} }))
    assert.is_true(m:start())
    assert.is_false(m:background().running == false)
    -- no m:step anywhere: the thread does the work
    assert.truthy(poll_until(m, function() return scrapes(m) >= 2 end))
    local t = H.target(m, "bg")
    assert.equal("up", t.health)
    assert.equal(1, H.value(m.store, "up", "bg"))
    assert.truthy(H.find(m.store, { __name__ = "http_requests_total" }))
    local info = m:background()
    assert.is_true(info.running)
    assert.is_true(info.alive)
    assert.truthy(info.steps > 0)
    assert.is_nil(info.error)
    m:stop()
    assert.is_false(m:background().running)
  end)

  it("refuses a second start and step/run while running", function()
    local m = manager()
    assert(m:apply_config(cfg { {} }))
    assert(m:start())
    local ok, err, code = m:start()
    assert.is_nil(ok)
    assert.matches("already running", err)
    assert.equal("ESTATE", code)
    assert.error_matches(function() m:step(0) end, "runs in the background")
    assert.error_matches(function() m:run { duration = 0 } end,
      "runs in the background")
    m:stop()
    assert.is_true(m:step(0)) -- step mode again after a stop
    assert(m:start())         -- and a restart
    assert.truthy(poll_until(m, function() return scrapes(m) >= 1 end))
    m:stop()
  end)

  it("stops at once while a slow scrape is in flight", function()
    local m = manager()
    assert(m:apply_config(cfg { { path = "/slow", params = { delay = { "3" } },
      interval = 5, timeout = 4 } }))
    assert(m:start())
    sleep(0.3) -- the request is connected, the server sleeps
    local t0 = H.now()
    m:stop()
    local dt = H.now() - t0
    assert.truthy(dt < 0.1 * H.SLOW, "stop took " .. dt .. " s")
    -- close also returns at once (the in-flight transfer is cancelled)
    assert(m:start())
    sleep(0.1)
    t0 = H.now()
    m:close()
    assert.truthy(H.now() - t0 < 0.1 * H.SLOW)
  end)

  it("answers status queries at once while a slow scrape is in flight", function()
    local m = manager()
    assert(m:apply_config(cfg { { job = "slow", path = "/slow",
      params = { delay = { "2" } }, interval = 5, timeout = 4 }, { job = "fast" } }))
    assert(m:start())
    sleep(0.3)
    local worst = 0
    for _ = 1, 20 do
      local t0 = H.now()
      local pools = m:pools()
      assert.equal(1, #pools.slow:targets())
      assert.equal(1, #pools.fast:targets())
      worst = math.max(worst, H.now() - t0)
      sleep(0.01)
    end
    assert.truthy(worst < 0.05 * H.SLOW, "status took " .. worst .. " s")
    m:close()
  end)

  it("runs a Lua appender's batches on the Lua thread, in poll only", function()
    local got, samples = {}, 0
    local app = {}
    function app:commit(b)
      got[#got + 1] = b
      samples = samples + #b.values
    end
    local m = manager { appender = app }
    assert(m:apply_config(cfg { {} }))
    assert(m:start())
    -- batches queue on the thread; nothing reaches Lua before a poll
    assert.truthy(poll_until(m, function() return scrapes(m) >= 2 end))
    sleep(0.3 * H.SLOW)
    local before = #got
    assert.equal(before, #got)
    -- max_samples bounds each poll: one batch at a time here
    local n, pending = m:poll { max_samples = 1 }
    assert.truthy(n >= 1)
    assert.equal(before + 1, #got)
    assert.truthy(pending >= 1)
    repeat n, pending = m:poll() until pending == 0
    assert.truthy(#got >= 3)
    assert.equal("bg", got[1].target.job)
    assert.truthy(next(got[1].new_series))
    assert.error_matches(function() m:poll { max_samples = 0 } end, "max_samples")
    m:stop()
  end)

  it("records appender errors and never raises out of poll", function()
    local app = { commit = function() error("boom") end }
    local m = manager { appender = app }
    assert(m:apply_config(cfg { {} }))
    assert(m:start())
    assert.truthy(poll_until(m, function() return #m:errors() > 0 or nil end))
    m:stop()
  end)

  it("defers stop and close requested from a poll callback", function()
    local m
    local app = { commit = function() m:close() end }
    m = manager { appender = app }
    assert(m:apply_config(cfg { {} }))
    assert(m:start())
    local deadline = H.now() + 5 * H.SLOW
    while H.now() < deadline do
      local ok, err = pcall(m.poll, m)
      if not ok then
        assert.matches("closed manager", err)
        break
      end
      sleep(0.02)
    end
    assert.error_matches(function() m:pools() end, "closed manager")
    local m2
    m2 = manager { appender = { commit = function() m2:stop() end } }
    assert(m2:apply_config(cfg { {} }))
    assert(m2:start())
    assert.truthy(poll_until(m2, function() return not m2:background().running end))
    m2:close()
  end)

  it("reloads and re-syncs while running", function()
    local m = manager()
    assert(m:apply_config(cfg { {} }))
    assert(m:start())
    assert.truthy(poll_until(m, function() return scrapes(m) >= 1 end))
    local c = cfg { {}, { job = "second" } }
    assert(m:apply_config(c))
    assert(m:sync { second = { { targets = { addr }, labels = { extra = "1" } } } })
    assert.truthy(poll_until(m, function() return scrapes(m, "second") >= 1 end))
    assert.equal(2, #m:pools().second:targets())
    m:close()
  end)

  it("accepts metric function rules in background mode (deferred to poll), and target ones", function()
    local m = manager()
    assert(m:apply_config(cfg { { mrc = { function(l) return l end } } }))
    assert.is_true(m:start()) -- no ENOTSUP any more: see spec 73
    -- target rules run in apply/sync, on the Lua thread: fine
    assert(m:apply_config(cfg { { rc = { function(l) l.fn = "yes"; return l end } } }))
    assert.truthy(poll_until(m, function() return scrapes(m) >= 1 end))
    assert.equal("yes", H.target(m, "bg").labels.fn)
    assert(m:apply_config(cfg { { mrc = { function(l) l.mfn = "1"; return l end } } }))
    assert.truthy(poll_until(m, function()
      return H.value(m.store, "temperature_celsius", "bg", { mfn = "1" })
    end))
    m:close()
  end)

  it("collects a running manager without a crash", function()
    local m = assert(promscrape.manager())
    assert(m:apply_config(cfg { {} }))
    assert(m:start())
    sleep(0.1)
    m = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
  end)

  describe("fork safety (faked pid)", function()
    it("refuses every method from another process, with a clear error", function()
      local m = manager()
      assert(m:apply_config(cfg { {} }))
      assert(m:start())
      local pool = m:pools().bg
      local store = m.store
      core._test_fake_pid(424242)
      for _, f in ipairs {
        function() m:pools() end, function() m:poll() end,
        function() m:start() end, function() m:stop() end,
        function() m:close() end, function() m:background() end,
        function() m:apply_config(cfg { {} }) end,
        function() pool:targets() end, function() store:text() end,
        function() store:series() end,
      } do
        assert.error_matches(f, "created in process %d+ and cannot be used in process 424242")
      end
      -- __gc in the "child" does nothing (the memory is the parent's copy)
      getmetatable(m).__gc(m)
      core._test_fake_pid(nil)
      assert.equal(1, #m:pools().bg:targets()) -- untouched
      m:close()
    end)
  end)
end)
