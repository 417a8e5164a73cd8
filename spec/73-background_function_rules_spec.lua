-- Background mode (issue 7) with metric function rules: on the engine
-- thread a scrape-cache miss that reaches a Lua function rule is deferred
-- (the series is parked, its samples held); m:poll runs the rules on the
-- Lua thread and the engine's next step installs the results (cache entry
-- and held samples, or cached as dropped). See docs/scrape.md.
package.path = "./?.lua;" .. package.path
local promscrape = require "promscrape"
local server = require "spec.support.server"
local H = require "spec.support.scrape"
local socket = require "socket"

local function sleep(s) socket.sleep(s) end

describe("background mode: metric function rules", function()
  local srv, addr
  local managers = {}
  local in_poll = false

  local function manager(opts)
    local m = assert(promscrape.manager(opts))
    managers[#managers + 1] = m
    return m
  end

  local function cfg(mrc)
    return { scrape_configs = { {
      job_name = "bg", metrics_path = "/metrics",
      scrape_interval = H.dur(H.INTERVAL),
      scrape_timeout = H.dur(H.TIMEOUT),
      scrape_align_interval = "1ms",
      metric_relabel_configs = mrc,
      static_configs = { { targets = { addr } } },
    } } }
  end

  local function poll(m, opts)
    in_poll = true
    local a, b, c = m:poll(opts)
    in_poll = false
    return a, b, c
  end

  local function poll_until(m, pred, timeout)
    local deadline = H.now() + (timeout or 5) * H.SLOW
    local r = pred()
    while not r and H.now() < deadline do
      assert(poll(m))
      sleep(0.02)
      r = pred()
    end
    return r
  end

  local function target(m) return H.target(m, "bg") end
  local function deferred(m) return (target(m) or {}).deferred or {} end

  lazy_setup(function()
    srv = server.start()
    addr = srv:url(""):match("//([^/]+)")
  end)

  lazy_teardown(function()
    for _, m in ipairs(managers) do m:close() end
    if srv then srv:stop() end
  end)

  -- Counts committed samples per metric name (stale markers apart).
  local function counting_appender()
    local names, counts, stale = {}, {}, {}
    local app = {}
    function app:commit(b)
      for ref, labels in pairs(b.new_series) do names[ref] = labels.__name__ end
      for i, ref in ipairs(b.refs) do
        local n = names[ref]
        if b.stale[i] then
          stale[n] = (stale[n] or 0) + 1
        else
          counts[n] = (counts[n] or 0) + 1
        end
      end
    end
    return app, counts, stale
  end

  it("renames and drops series in m:poll only, once per series, losing no sample", function()
    local calls, outside = {}, 0
    local function rule(l)
      if not in_poll then outside = outside + 1 end
      calls[l.__name__] = (calls[l.__name__] or 0) + 1
      if l.__name__ == "temperature_celsius" then
        l.__name__ = "fn_temperature"
        return l
      elseif l.__name__ == "rpc_duration_seconds_sum" then
        return nil
      end
      return l
    end
    local app, counts = counting_appender()
    local m = manager { appender = app }
    -- a table rule before and after the function: both segments run
    assert(m:apply_config(cfg {
      { target_label = "before", replacement = "b" },
      rule,
      { target_label = "after", replacement = "a" },
    }))
    assert(m:start())
    -- no poll for a few scrapes: the new series are parked, samples held
    local deadline = H.now() + 5 * H.SLOW
    while ((target(m) or {}).scrapes or 0) < 3 and H.now() < deadline do
      sleep(0.02)
    end
    assert.equal(0, outside)
    assert.is_nil(next(calls)) -- nothing ran before a poll
    local d = deferred(m)
    assert.equal(6, d.pending) -- the six exposed series
    assert.truthy(d.held >= 6 * 3)
    -- polls resolve them; the engine installs; later scrapes hit the cache
    assert.truthy(poll_until(m, function()
      local t = target(m)
      return t.scrapes >= 8 and (t.deferred or {}).pending == 0
    end))
    m:stop()
    assert.truthy(poll_until(m, function() return select(2, poll(m)) == 0 end))
    assert.equal(0, outside)
    for _, n in ipairs { "http_requests_total", "temperature_celsius", "rpc_duration_seconds",
                         "rpc_duration_seconds_sum", "rpc_duration_seconds_count" } do
      local want = n == "http_requests_total" and 2 or 1 -- two series
      assert.equal(want, calls[n], n)
    end
    d = deferred(m)
    assert.equal(0, d.pending)
    assert.equal(0, d.held)
    assert.equal(0, d.lost)
    assert.equal(0, d.failed)
    assert.equal(6, d.resolved)
    -- every scrape's sample, the held first ones included
    local ups = counts.up
    assert.truthy(ups >= 8)
    assert.equal(ups, counts.fn_temperature)
    assert.equal(ups, counts.rpc_duration_seconds_count)
    assert.equal(2 * ups, counts.http_requests_total)
    assert.is_nil(counts.temperature_celsius)
    assert.is_nil(counts.rpc_duration_seconds_sum)
  end)

  it("puts the renamed series in the memory store, with both table segments", function()
    local m = manager()
    assert(m:apply_config(cfg {
      { target_label = "before", replacement = "b" },
      function(l)
        if l.__name__ == "temperature_celsius" then
          l.__name__ = "fn_temperature"
          l.saw_before = l.before
          return l
        end
        return l
      end,
      { target_label = "after", replacement = "a" },
    }))
    assert(m:start())
    assert.truthy(poll_until(m, function()
      return H.value(m.store, "fn_temperature", "bg")
    end))
    local v, s = H.value(m.store, "fn_temperature", "bg")
    assert.equal(21.5, v)
    assert.equal("b", s.labels.saw_before)
    assert.equal("a", s.labels.after)
    assert.is_nil(H.value(m.store, "temperature_celsius", "bg"))
    m:close()
  end)

  it("records a failing rule, discards that series' held samples, retries it", function()
    local calls = 0
    local m = manager()
    assert(m:apply_config(cfg { function(l)
      if l.__name__ == "temperature_celsius" then
        calls = calls + 1
        error("no temperatures")
      end
      return l
    end }))
    assert(m:start())
    assert.truthy(poll_until(m, function()
      return (deferred(m).failed or 0) >= 2 and H.value(m.store, "rpc_duration_seconds_count", "bg")
    end))
    local errs = m:errors()
    assert.truthy(#errs >= 1)
    assert.matches("no temperatures", errs[1])
    assert.truthy(calls >= 2) -- not cached: queued again when scraped again
    assert.truthy(deferred(m).lost >= 2)
    assert.is_nil(H.value(m.store, "temperature_celsius", "bg"))
    assert.equal("up", target(m).health) -- the scrape itself succeeded
    m:close()
  end)
end)
