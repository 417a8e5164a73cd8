-- Lua function rules in the scrape path: metric_relabel_configs functions
-- run only on scrape-cache misses (once per new series, not per sample)
-- and their results are cached; relabel_configs functions run when
-- targets are synced. Errors fail the scrape (up = 0) or drop the target.
local promscrape = require "promscrape"
local server = require "spec.support.server"
local H = require "spec.support.scrape"

describe("function rules", function()
  local srv

  lazy_setup(function()
    srv = server.start {}
  end)

  lazy_teardown(function()
    if srv then srv:stop() end
  end)

  local function run_job(extra, scrapes)
    local m = assert(promscrape.manager())
    assert(m:apply_config(H.config { H.job("fn", { srv:address() }, extra) }))
    assert(H.wait_scrapes(m, "fn", scrapes or 1))
    return m
  end

  it("renames and drops series in metric_relabel_configs, once per new series", function()
    local calls = 0
    local m = run_job({
      metric_relabel_configs = {
        function(l)
          calls = calls + 1
          if l.__name__ == "temperature_celsius" then return nil end
          if l.__name__ == "rpc_duration_seconds_sum" then
            l.__name__ = "rpc_sum"
            l.renamed = "yes"
          end
          return l
        end,
      },
    }, 4)
    local store = m.store
    assert.is_nil(H.value(store, "temperature_celsius", "fn"))
    assert.is_nil(H.value(store, "rpc_duration_seconds_sum", "fn"))
    local v, s = H.value(store, "rpc_sum", "fn")
    assert.equal(17.5, v)
    assert.equal("yes", s.labels.renamed)
    assert.equal(1027, (H.value(store, "http_requests_total", "fn", { code = "200" })))
    -- 6 series exposed; only the first scrape misses the cache
    local t = H.target(m, "fn")
    assert.is_true(t.scrapes >= 4)
    assert.equal(6, calls)
    assert.equal("up", t.health)
    m:close()
  end)

  it("runs mixed with table rules in list order", function()
    local seen = {}
    local m = run_job({
      metric_relabel_configs = {
        { source_labels = { "__name__" }, regex = "temperature_celsius", action = "drop" },
        function(l)
          seen[#seen + 1] = l.__name__
          l.stage = "fn"
          return l
        end,
        { source_labels = { "stage" }, target_label = "stage2", replacement = "after_${1}" },
        { regex = "stage", action = "labeldrop" },
      },
    }, 2)
    for _, name in ipairs(seen) do
      assert.not_equal("temperature_celsius", name) -- dropped before the function
    end
    assert.equal(5, #seen)
    local _, s = H.value(m.store, "rpc_duration_seconds_count", "fn")
    assert.equal("after_fn", s.labels.stage2)
    assert.is_nil(s.labels.stage)
    m:close()
  end)

  it("fails the scrape with a clear last_error when a function errors", function()
    local m = run_job({
      metric_relabel_configs = {
        { regex = "nothing", action = "labeldrop" },
        function(l)
          if l.__name__ == "temperature_celsius" then error("no temperatures please") end
          return l
        end,
      },
    }, 2)
    local t = H.target(m, "fn")
    assert.equal("down", t.health)
    assert.matches("metric_relabel_configs: rule 2: function failed: .*no temperatures please",
      t.last_error)
    assert.equal(0, (H.value(m.store, "up", "fn")))
    local errs = m:errors()
    assert.is_true(#errs >= 1)
    assert.matches("stack traceback", errs[1])
    -- a bad return value is an error too
    m:close()
    m = run_job({ metric_relabel_configs = { function() return 42 end } })
    t = H.target(m, "fn")
    assert.equal("down", t.health)
    assert.matches("rule 1: function failed: .*label table or nil, got number", t.last_error)
    m:close()
  end)

  it("runs in relabel_configs on targets at sync time", function()
    local calls = 0
    local m = assert(promscrape.manager())
    assert(m:apply_config(H.config { H.job("fn", { srv:address(), "127.0.0.1:1" }, {
      relabel_configs = {
        function(l)
          calls = calls + 1
          if l.__address__ == "127.0.0.1:1" then return nil end
          l.team = "lua"
          return l
        end,
        { source_labels = { "team" }, target_label = "team_copy" },
      },
    }) }))
    assert.equal(2, calls)
    local pool = m:pools().fn
    local ts = pool:targets()
    assert.equal(1, #ts)
    assert.equal("lua", ts[1].labels.team)
    assert.equal("lua", ts[1].labels.team_copy)
    assert.is_nil(ts[1].discovered_labels.team)
    local dropped = pool:dropped_targets()
    assert.equal(1, #dropped)
    assert.equal("", dropped[1].reason)
    assert(H.wait_scrapes(m, "fn", 1))
    assert.equal(1, (H.value(m.store, "up", "fn", { team = "lua" })))
    -- a reload with the same function keeps the pool (fingerprint by identity)
    m:close()
  end)

  it("drops a target whose function errors, with the error as reason", function()
    local m = assert(promscrape.manager())
    assert(m:apply_config(H.config { H.job("fn", { srv:address() }, {
      relabel_configs = { function() error("boom") end },
    }) }))
    local pool = m:pools().fn
    assert.equal(0, #pool:targets())
    local d = pool:dropped_targets()
    assert.equal(1, #d)
    assert.matches("relabel_configs: rule 1: function failed: .*boom", d[1].reason)
    m:close()
  end)

  it("keeps a job untouched on reload when its functions are the same", function()
    local f = function(l) return l end
    local cfg = H.config { H.job("fn", { srv:address() }, { metric_relabel_configs = { f } }) }
    local m = assert(promscrape.manager())
    assert(m:apply_config(cfg))
    local fp = m:pools().fn:fingerprint()
    assert(m:apply_config(cfg))
    assert.equal(fp, m:pools().fn:fingerprint())
    assert(m:apply_config(H.config { H.job("fn", { srv:address() }, {
      metric_relabel_configs = { function(l) return l end } }) }))
    assert.not_equal(fp, m:pools().fn:fingerprint())
    m:close()
  end)

  it("does not scrape function rules off the Lua thread once the manager is closed", function()
    local m = run_job({ metric_relabel_configs = { function(l) return l end } })
    m:close()
    collectgarbage()
    collectgarbage()
  end)
end)

describe("function rules and re-entry", function()
  local srv

  lazy_setup(function()
    srv = server.start {}
  end)

  lazy_teardown(function()
    if srv then srv:stop() end
  end)

  it("may not drive or reconfigure the manager from inside a rule", function()
    local m
    local errs = {}
    m = assert(promscrape.manager())
    assert(m:apply_config(H.config { H.job("re", { srv:address() }, {
      metric_relabel_configs = {
        function(l)
          for _, f in ipairs {
            function() m:step(0) end,
            function() m:sync {} end,
            function() m:apply_config(H.config {}) end,
          } do
            local ok, err = pcall(f)
            if not ok then errs[#errs + 1] = err end
          end
          return l
        end,
      },
    }) }))
    assert(H.wait_scrapes(m, "re", 1))
    assert.is_true(#errs >= 3)
    assert.matches("manager is running", errs[1])
    assert.matches("not allowed from a function rule", errs[2])
    assert.equal("up", H.target(m, "re").health)
    m:close()
  end)

  it("may reconfigure from an http_get callback (between steps)", function()
    local m = assert(promscrape.manager())
    assert(m:apply_config(H.config { H.job("cb", {}) }))
    local done
    assert(m:http_get(srv:url("/metrics"), {}, function()
      done = assert(m:sync { cb = { { targets = { srv:address() } } } })
    end))
    assert(H.wait_scrapes(m, "cb", 1))
    assert.is_true(done)
    m:close()
  end)
end)
