-- The Manager's Lua API (issue 4): construction, apply_config and reload,
-- sync, pools and targets, Lua appenders, run/step/stop/close, misuse.
-- Against spec/support/server.py on 127.0.0.1. Lua 5.4 and LuaJIT.
package.path = "./?.lua;" .. package.path
local promscrape = require "promscrape"
local server = require "spec.support.server"
local H = require "spec.support.scrape"

describe("promscrape.manager", function()
  local srv
  local managers = {}

  local function manager(opts)
    local m = assert(promscrape.manager(opts))
    managers[#managers + 1] = m
    return m
  end

  lazy_setup(function()
    srv = server.start()
  end)

  lazy_teardown(function()
    for _, m in ipairs(managers) do m:close() end
    if srv then srv:stop() end
  end)

  describe("construction", function()
    it("defaults to a memory store reachable as m.store", function()
      local m = manager()
      assert.matches("^promscrape.MemoryStore", tostring(m.store))
      assert.same({}, m.store:series())
      assert.equal("", m.store:text())
      assert.matches("^promscrape.Manager", tostring(m))
    end)

    it("appends to an explicit promscrape.memory() store, shared", function()
      local store = assert(promscrape.memory())
      local m1 = manager { appender = store }
      local m2 = manager { appender = store }
      assert.equal(store, m1.store)
      assert.equal(store, m2.store)
      assert(m1:apply_config(H.config { H.job("one", { srv:address() }) }))
      assert(m2:apply_config(H.config { H.job("two", { srv:address() }) }))
      assert.truthy(H.wait(m1, function()
        m2:step(0)
        return H.value(store, "up", "one") == 1 and H.value(store, "up", "two") == 1
      end))
      m1:close()
      m2:close()
      -- the store outlives its managers
      assert.equal(1, (H.value(store, "up", "one")))
      store:close()
      store:close()
      assert.has_error(function() store:series() end, "attempt to use a closed memory store")
    end)

    it("reports store statistics and takes forget_after", function()
      local store = assert(promscrape.memory { forget_after = 3600 })
      local m = manager { appender = store }
      assert(m:apply_config(H.config { H.job("stats", { srv:address() }) }))
      assert.truthy(H.wait_scrapes(m, "stats", 2))
      local st = store:stats()
      assert.equal(11, st.series) -- 6 samples + 5 report series
      assert.is_true(st.appended >= 22)
      assert.equal(0, st.rejected)
      assert.equal(0, st.forgotten)
      assert.has_error(function() promscrape.memory { forget_after = -1 } end)
      m:close()
      store:close()
    end)

    it("keeps the store alive when the store is closed before the manager", function()
      local store = assert(promscrape.memory())
      local m = manager { appender = store }
      store:close()
      assert(m:apply_config(H.config { H.job("j", { srv:address() }) }))
      assert.truthy(H.wait_scrapes(m, "j", 1))
      m:close()
    end)
  end)

  describe("apply_config", function()
    it("starts jobs from static_configs and reports their targets", function()
      local m = manager()
      local cfg = H.config { H.job("node", { srv:address() }, {
        static_configs = { { targets = { srv:address() }, labels = { env = "test" } } },
      }) }
      assert.is_true(m:apply_config(cfg))
      local pools = m:pools()
      assert.matches("^promscrape.ScrapePool", tostring(pools.node))
      assert.equal("node", m:pool("node"):job())
      assert.is_nil(m:pool("nope"))
      assert.equal("node", pools.node:job())
      local t = pools.node:targets()[1]
      assert.equal("unknown", t.health)
      assert.equal("", t.last_error)
      assert.is_nil(t.last_scrape)
      assert.equal(srv:url("/metrics"), t.url)
      assert.same({ job = "node", instance = srv:address(), env = "test" }, t.labels)
      assert.equal(srv:address(), t.discovered_labels.__address__)
      assert.equal("test", t.discovered_labels.env)
      assert.equal("/metrics", t.discovered_labels.__metrics_path__)
      assert.equal(H.INTERVAL, t.interval)
      assert.equal(H.TIMEOUT, t.timeout)

      assert.equal("duration", m:run { duration = 3 * H.INTERVAL })
      t = m:pools().node:targets()[1]
      assert.equal("up", t.health)
      assert.equal("", t.last_error)
      assert.is_true(t.scrapes >= 1)
      assert.is_number(t.last_scrape)
      assert.is_true(math.abs(t.last_scrape - H.now()) < 5)
      assert.is_true(t.last_scrape_duration > 0 and t.last_scrape_duration < H.TIMEOUT)
      local up = H.find(m.store, { __name__ = "up", job = "node" })
      assert.same({ __name__ = "up", job = "node", instance = srv:address(), env = "test" }, up.labels)
      assert.equal(1, up.value)
      assert.is_false(up.stale)
      assert.is_number(up.timestamp)
      assert.matches('up{env="test",instance="' .. srv:address():gsub("%p", "%%%0")
        .. '",job="node"} 1 %d+', m.store:text())
      assert.equal(1027, (H.value(m.store, "http_requests_total", "node", { code = "200" })))
    end)

    it("accepts YAML text and config.load/parse results", function()
      local m = manager()
      local yaml = ([[
global:
  scrape_interval: 200ms
scrape_configs:
  - job_name: yaml
    scrape_timeout: 100ms
    static_configs:
      - targets: ["%s"]
]]):format(srv:address())
      assert.is_true(m:apply_config(yaml))
      assert.equal(0.1, H.target(m, "yaml").timeout)
      local parsed = assert(promscrape.config.parse(yaml))
      assert.is_true(m:apply_config(parsed))
      assert.equal(0.2, H.target(m, "yaml").interval)
    end)

    it("returns nil, err for invalid configs and keeps the running state", function()
      local m = manager()
      assert(m:apply_config(H.config { H.job("keep", { srv:address() }) }))
      local ok, err = m:apply_config(H.config { H.job("bad", { srv:address() }, {
        scrape_interval = "100ms", scrape_timeout = "1s" }) })
      assert.is_nil(ok)
      assert.matches("scrape_timeout", err)
      ok, err = m:apply_config(H.config { H.job("bad", { srv:address() }, { no_such_field = 1 }) })
      assert.is_nil(ok)
      assert.matches("no_such_field", err)
      ok, err = m:apply_config(H.config { H.job("dup", { srv:address() }), H.job("dup", { srv:address() }) })
      assert.is_nil(ok)
      assert.matches("dup", err)
      ok, err = m:apply_config(H.config { H.job("rx", { srv:address() }, {
        relabel_configs = { { source_labels = { "a" }, regex = "(", action = "keep" } } }) })
      assert.is_nil(ok)
      assert.is_string(err)
      -- function rules are accepted since issue 4's gap was closed (see
      -- 44-function_rules_spec.lua); a non-rule value still is not
      ok, err = m:apply_config(H.config { H.job("fn", { srv:address() }, {
        relabel_configs = { 42 } }) })
      assert.is_nil(ok)
      assert.is_string(err)
      assert.truthy(m:pools().keep)
      assert.is_nil(m:pools().bad)
    end)

    it("accepts vmagent's scrape_align_interval and scrape_offset", function()
      local m = manager()
      assert(m:apply_config(H.config { H.job("aligned", { srv:address() }, {
        scrape_interval = "1h", scrape_timeout = "1s", scrape_align_interval = "1ms" }) }))
      -- with Prometheus's hashed offset an 1h job could wait up to an hour
      assert.truthy(H.wait_scrapes(m, "aligned", 1, 3))
      local ok, err = m:apply_config(H.config { H.job("aligned", { srv:address() }, {
        scrape_align_interval = "often" }) })
      assert.is_nil(ok)
      assert.matches("scrape_align_interval", err)
    end)

    it("reloads as Prometheus: unchanged jobs keep running untouched", function()
      local m = manager()
      local a = H.job("stay", { srv:address() })
      local b = H.job("change", { srv:address() })
      local c = H.job("gone", { srv:address() })
      assert(m:apply_config(H.config { a, b, c }))
      assert.truthy(H.wait_scrapes(m, "stay", 2))
      assert.truthy(H.wait_scrapes(m, "change", 2))
      local before = H.target(m, "stay")
      local fp_stay = m:pools().stay:fingerprint()
      local fp_change = m:pools().change:fingerprint()
      local gone_pool = m:pools().gone

      local b2 = H.job("change", { srv:address() }, { sample_limit = 1000 })
      assert(m:apply_config(H.config { a, b2 }))
      assert.equal(fp_stay, m:pools().stay:fingerprint())
      assert.are_not.equal(fp_change, m:pools().change:fingerprint())
      assert.is_nil(m:pools().gone)
      assert.has_error(function() gone_pool:targets() end,
        "scrape pool 'gone' no longer exists (removed by a reload)")
      -- the unchanged loop was not restarted: its count goes on
      local after = H.target(m, "stay")
      assert.is_true(after.scrapes >= before.scrapes)
      assert.truthy(H.wait(m, function() return H.target(m, "stay").scrapes > before.scrapes end))
      assert.truthy(H.wait_scrapes(m, "change", 1))
      assert.equal("up", H.target(m, "change").health)

      -- applying the same config again is a no-op for every job
      local s0 = H.target(m, "stay").scrapes
      local c0 = H.target(m, "change").scrapes
      assert(m:apply_config(H.config { a, b2 }))
      assert.is_true(H.target(m, "stay").scrapes >= s0)
      assert.is_true(H.target(m, "change").scrapes >= c0)
    end)
  end)

  describe("reload and the scrape cache", function()
    -- Prometheus's reusableCache: a reload keeps a target's cache only when
    -- nothing but the interval, timeout, sample_limit or HTTP client changed.
    local function added_after_reload(m, job)
      local n = H.target(m, job).scrapes
      assert.truthy(H.wait(m, function() return H.target(m, job).scrapes >= n + 1 end))
      return (H.value(m.store, "scrape_series_added", job))
    end

    it("keeps the cache when only sample_limit and the HTTP client change", function()
      local m = manager()
      assert(m:apply_config(H.config { H.job("keep", { srv:address() }) }))
      assert.truthy(H.wait_scrapes(m, "keep", 2))
      assert(m:apply_config(H.config { H.job("keep", { srv:address() },
        { sample_limit = 1000, follow_redirects = false }) }))
      assert.equal(0, added_after_reload(m, "keep"))
    end)

    it("starts a fresh cache when metric relabeling changes, so new rules apply to known series", function()
      local m = manager()
      local function job(v)
        return H.job("fresh", { srv:address() }, { metric_relabel_configs = {
          { target_label = "rule", replacement = v } } })
      end
      assert(m:apply_config(H.config { job("one") }))
      assert.truthy(H.wait_scrapes(m, "fresh", 2))
      assert.truthy(H.find(m.store, { __name__ = "http_requests_total", job = "fresh", rule = "one" }))
      assert(m:apply_config(H.config { job("two") }))
      assert.is_true(added_after_reload(m, "fresh") > 0)
      assert.truthy(H.find(m.store, { __name__ = "http_requests_total", job = "fresh", rule = "two" }))
    end)
  end)

  describe("sync", function()
    it("feeds target sets to jobs, with group labels and sources", function()
      local m = manager()
      assert(m:apply_config(H.config { { job_name = "sd", scrape_interval = H.dur(H.INTERVAL) } }))
      assert.same({}, m:pools().sd:targets())
      assert.is_true(m:sync {
        sd = {
          { targets = { srv:address() }, labels = { zone = "a" }, source = "file:1" },
          { targets = { "localhost:" .. srv.port }, source = "file:2" },
        },
        unknown_job = { { targets = { "127.0.0.1:1" } } }, -- ignored, as Prometheus
      })
      local ts = m:pools().sd:targets()
      assert.equal(2, #ts)
      local by = {}
      for _, t in ipairs(ts) do by[t.labels.instance] = t end
      assert.equal("a", by[srv:address()].labels.zone)
      assert.is_nil(by["localhost:" .. srv.port].labels.zone)
      assert.truthy(H.wait_scrapes(m, "sd", 1))
      -- a new set replaces the old one
      assert.is_true(m:sync { sd = { { targets = { srv:address() } } } })
      ts = m:pools().sd:targets()
      assert.equal(1, #ts)
      assert.equal(srv:address(), ts[1].labels.instance)
      assert.is_nil(ts[1].labels.zone)
    end)

    it("keeps static_configs alongside synced groups", function()
      local m = manager()
      assert(m:apply_config(H.config { H.job("mix", { srv:address() }) }))
      assert(m:sync { mix = { { targets = { "localhost:" .. srv.port } } } })
      assert.equal(2, #m:pools().mix:targets())
      assert(m:sync { mix = {} })
      assert.equal(1, #m:pools().mix:targets())
    end)

    it("lists dropped targets with the reason", function()
      local m = manager()
      assert(m:apply_config(H.config { H.job("drop", { srv:address(), "127.0.0.1:1" }, {
        relabel_configs = { { source_labels = { "__address__" }, regex = "127\\.0\\.0\\.1:1", action = "drop" } },
      }) }))
      local pool = m:pools().drop
      assert.equal(1, #pool:targets())
      local d = pool:dropped_targets()
      assert.equal(1, #d)
      assert.equal("127.0.0.1:1", d[1].discovered_labels.__address__)
      assert.equal("", d[1].reason)
      assert(m:sync { drop = { { targets = { { __address__ = "bad/host" } } } } })
      local found
      for _, x in ipairs(m:pools().drop:dropped_targets()) do
        if x.discovered_labels.__address__ == "bad/host" then found = x end
      end
      assert.truthy(found)
      assert.matches("bad/host", found.reason)
    end)
  end)

  describe("Lua appenders", function()
    local function recorder()
      local app = { commits = {}, rollbacks = {} }
      function app:commit(batch) self.commits[#self.commits + 1] = batch end
      function app:rollback(info) self.rollbacks[#self.rollbacks + 1] = info end
      return app
    end

    it("get one batch per scrape commit, labels once per series", function()
      local app = recorder()
      local m = manager { appender = app }
      assert.is_nil(m.store)
      assert(m:apply_config(H.config { H.job("lua", { srv:address() }) }))
      assert.truthy(H.wait_scrapes(m, "lua", 3))
      local scrapes = H.target(m, "lua").scrapes
      assert.equal(scrapes, #app.commits) -- once per commit, never per sample
      local first = app.commits[1]
      assert.same({ job = "lua", instance = srv:address() }, first.target)
      assert.equal(#first.refs, #first.values)
      assert.equal(#first.refs, #first.timestamps)
      assert.is_true(#first.refs >= 11) -- 6 samples + 5 report series
      local names, up_ref = {}, nil
      for ref, labels in pairs(first.new_series) do
        names[labels.__name__] = true
        if labels.__name__ == "up" then up_ref = ref end
        assert.equal("lua", labels.job)
      end
      assert.truthy(names.http_requests_total and names.temperature_celsius
        and names.scrape_duration_seconds and names.scrape_samples_scraped)
      assert.truthy(up_ref)
      for i, ref in ipairs(first.refs) do
        assert.truthy(first.new_series[ref], "every ref is announced")
        if ref == up_ref then assert.equal(1, first.values[i]) end
        assert.is_true(first.timestamps[i] > 1e12)
      end
      -- later batches reuse the refs and carry no labels
      local second = app.commits[2]
      assert.same({}, second.new_series)
      assert.equal(#first.refs, #second.refs)
      assert.is_true(second.seq > first.seq)
      local st = m:appender_stats()
      assert.equal(#app.commits, st.batches)
      assert.equal(0, st.dropped_samples)
    end)

    it("get rollback(info) when a scrape fails after appending", function()
      local app = recorder()
      local m = manager { appender = app }
      assert(m:apply_config(H.config { H.job("limited", { srv:address() }, {
        metrics_path = "/many", params = { n = { "20" } }, sample_limit = 5 }) }))
      assert.truthy(H.wait(m, function() return #app.rollbacks >= 1 end))
      assert.same({ job = "limited", instance = srv:address() }, app.rollbacks[1].target)
      -- the failed scrape still commits its report series: up = 0
      assert.truthy(H.wait(m, function() return #app.commits >= 1 end))
      local b = app.commits[#app.commits]
      local up
      for ref, l in pairs(app.commits[1].new_series) do
        if l.__name__ == "up" then up = ref end
      end
      for i, ref in ipairs(b.refs) do
        if ref == up then assert.equal(0, b.values[i]) end
      end
    end)

    it("errors are recorded with a traceback, never raised out of step", function()
      local seen = {}
      local app = { n = 0 }
      function app:commit() self.n = self.n + 1; error("appender broke") end
      local m = manager { appender = app, on_error = function(msg) seen[#seen + 1] = msg end }
      assert(m:apply_config(H.config { H.job("err", { srv:address() }) }))
      assert.truthy(H.wait(m, function() return app.n >= 2 end))
      local errs = m:errors()
      assert.is_true(#errs >= 2)
      assert.matches("appender broke", errs[1])
      assert.matches("traceback", errs[1])
      assert.equal(#errs, #seen)
      assert.same({}, m:errors()) -- errors() hands them over once
      assert.equal("up", H.target(m, "err").health) -- the scrape itself is fine
    end)

    it("may stop run, and may close the manager, from a callback", function()
      local m
      local app = { n = 0 }
      function app:commit() self.n = self.n + 1; m:stop() end
      m = manager { appender = app }
      assert(m:apply_config(H.config { H.job("stopper", { srv:address() }) }))
      local t0 = H.now()
      assert.equal("stopped", m:run { duration = 10 })
      assert.is_true(H.now() - t0 < 5)
      assert.equal(1, app.n)

      local closer = {}
      function closer:commit()
        m:close()
        assert(not pcall(m.step, m, 0)) -- closed now
      end
      m = manager { appender = closer }
      assert(m:apply_config(H.config { H.job("closer", { srv:address() }) }))
      assert.equal("stopped", m:run { duration = 10 })
      assert.has_error(function() m:pools() end, "attempt to use a closed manager")
    end)

    it("may not drive the manager from its own callbacks", function()
      local m
      local app = { n = 0 }
      function app:commit() self.n = self.n + 1; m:step(0) end
      m = manager { appender = app }
      assert(m:apply_config(H.config { H.job("reenter", { srv:address() }) }))
      assert.truthy(H.wait(m, function() return app.n >= 1 end))
      assert.matches("manager is running", m:errors()[1])
    end)
  end)

  describe("driving and closing", function()
    it("run returns after the duration, step after its timeout", function()
      local m = manager()
      local t0 = H.now()
      assert.equal("duration", m:run { duration = 0.3 })
      local el = H.now() - t0
      assert.is_true(el >= 0.25 and el < 2, "run took " .. el)
      t0 = H.now()
      assert.is_true(m:step(0.1))
      assert.is_true(H.now() - t0 < 1)
      assert.is_true(m:step())
    end)

    it("stop before run makes the next run return at once", function()
      local m = manager()
      m:stop()
      local t0 = H.now()
      assert.equal("stopped", m:run { duration = 5 })
      assert.is_true(H.now() - t0 < 1)
    end)

    it("close is idempotent and methods raise afterwards", function()
      local m = manager()
      assert(m:apply_config(H.config { H.job("c", { srv:address() }) }))
      local pool = m:pools().c
      m:close()
      m:close()
      assert.has_error(function() m:step(0) end, "attempt to use a closed manager")
      assert.has_error(function() m:apply_config(H.config {}) end, "attempt to use a closed manager")
      assert.has_error(function() m:sync {} end, "attempt to use a closed manager")
      assert.has_error(function() pool:targets() end, "scrape pool 'c': its manager is closed")
      pool:close()
      pool:close()
      assert.has_error(function() pool:targets() end, "attempt to use a closed scrape pool")
      -- the store is still readable
      assert.is_table(m.store:series())
    end)

    it("is closed by the garbage collector", function()
      local store = assert(promscrape.memory())
      do
        local m = assert(promscrape.manager { appender = store })
        assert(m:apply_config(H.config { H.job("gc", { srv:address() }) }))
        assert.truthy(H.wait_scrapes(m, "gc", 1))
      end
      collectgarbage()
      collectgarbage()
      assert.equal(1, (H.value(store, "up", "gc")))
      store:close()
    end)

    if _VERSION == "Lua 5.4" and not jit then
      it("supports to-be-closed variables (5.4)", function()
        local f = assert(load([[
          local promscrape = ...
          local m <close> = assert(promscrape.manager())
          local s = m.store
          return m, s
        ]]))
        local m, s = f(promscrape)
        assert.has_error(function() m:step(0) end, "attempt to use a closed manager")
        assert.is_table(s:series())
      end)
    end
  end)

  describe("misuse raises", function()
    it("in the constructor", function()
      assert.has_error(function() promscrape.manager("x") end)
      assert.has_error(function() promscrape.manager { bogus = 1 } end, "manager: unknown option 'bogus'")
      assert.has_error(function() promscrape.manager { appender = 42 } end)
      assert.has_error(function() promscrape.manager { appender = {} } end, "manager: appender has no commit method")
      assert.has_error(function() promscrape.manager { appender = io.stdout } end)
      assert.has_error(function() promscrape.manager { on_error = 1 } end)
      assert.has_error(function() promscrape.memory { bogus = 1 } end)
    end)

    it("in methods", function()
      local m = manager()
      assert.has_error(function() m:apply_config(42) end)
      assert.has_error(function() m:sync(42) end)
      assert.has_error(function() m:sync { [1] = {} } end)
      assert.has_error(function() m:sync { j = { { targets = { 42 } } } } end)
      assert.has_error(function() m:step(-1) end)
      assert.has_error(function() m:step("soon") end)
      assert.has_error(function() m:run { duration = -1 } end)
      assert.has_error(function() m:run(5) end)
      assert.has_error(function() m.step(io.stdout, 0) end)
      assert.has_error(function() m.store.series(m) end)
    end)
  end)
end)
