-- Bad input and faults (issue 4, Proof): refused connection, timeout, reset
-- mid-body, oversize body, corrupt gzip, garbage body, wrong content type,
-- non-200. Each gives up = 0 with a clear last_error, the loop keeps
-- scraping, and a target that recovers comes back up. Lua 5.4 and LuaJIT;
-- run under ASan/valgrind for the leak half of the proof.
package.path = "./?.lua;" .. package.path
local promscrape = require "promscrape"
local server = require "spec.support.server"
local H = require "spec.support.scrape"

describe("scrape faults", function()
  local srv, m

  -- job -> { target, extra config, last_error pattern (lowercase) }
  local FAULTS

  lazy_setup(function()
    srv = server.start()
    local refused = "127.0.0.1:" .. server.closed_port()
    FAULTS = {
      refused = { refused, {}, "refused" },
      timeout = { srv:address(), { metrics_path = "/slow", params = { delay = { "2" } },
        scrape_interval = "300ms", scrape_timeout = "150ms" }, "timeout" },
      reset = { srv:address(), { metrics_path = "/reset" }, "reset" },
      oversize = { srv:address(), { metrics_path = "/big", body_size_limit = "1KB" }, "body size limit" },
      badgzip = { srv:address(), { metrics_path = "/badgzip" }, "gzip" },
      garbage = { srv:address(), { metrics_path = "/garbage" }, "." },
      wrongtype = { srv:address(), { metrics_path = "/wrongtype" }, "content.type" },
      status500 = { srv:address(), { metrics_path = "/status/500" }, "status 500" },
    }
    m = assert(promscrape.manager())
    local scs = {}
    for job, f in pairs(FAULTS) do
      scs[#scs + 1] = H.job(job, { f[1] }, f[2])
    end
    assert(m:apply_config(H.config(scs)))
    for job in pairs(FAULTS) do
      assert.truthy(H.wait_scrapes(m, job, 2, 8), job .. ": fewer than 2 scrapes")
    end
  end)

  lazy_teardown(function()
    if m then m:close() end
    if srv then srv:stop() end
  end)

  local function check(job)
    local f = FAULTS[job]
    local t = H.target(m, job)
    assert.equal("down", t.health, job)
    assert.is_true(#t.last_error > 0, job .. ": empty last_error")
    assert.matches(f[3], t.last_error:lower(), 1)
    assert.equal(0, (H.value(m.store, "up", job)))
    -- the loop continues after the failure
    assert.is_true(t.scrapes >= 2)
    local n = t.scrapes
    assert.truthy(H.wait(m, function() return H.target(m, job).scrapes > n end, 3), job .. ": loop stopped")
    return t
  end

  for _, job in ipairs { "refused", "timeout", "reset", "oversize", "badgzip", "garbage", "wrongtype", "status500" } do
    it(job .. " -> up = 0, a clear last_error, the loop continues", function()
      check(job)
    end)
  end

  it("a timeout ends the scrape at the timeout", function()
    local t = H.target(m, "timeout")
    assert.is_true(t.last_scrape_duration >= 0.14 and t.last_scrape_duration < H.SLOW,
      "duration " .. t.last_scrape_duration)
    local d = H.value(m.store, "scrape_duration_seconds", "timeout")
    assert.is_true(d >= 0.14 and d < H.SLOW)
  end)

  it("wrong content type is scraped with fallback_scrape_protocol", function()
    local m2 = assert(promscrape.manager())
    assert(m2:apply_config(H.config {
      H.job("fallback", { srv:address() }, { metrics_path = "/wrongtype",
        fallback_scrape_protocol = "PrometheusText0.0.4" }),
    }))
    assert.truthy(H.wait_scrapes(m2, "fallback", 1))
    -- the body is JSON, so the text parser fails on it instead
    local t = H.target(m2, "fallback")
    assert.equal("down", t.health)
    assert.not_matches("content.type", t.last_error:lower())
    m2:close()
  end)

  it("a target that recovers comes back up", function()
    local m2 = assert(promscrape.manager())
    local cfg = H.config { H.job("recover", { srv:address() }, { metrics_path = "/status/500" }) }
    assert(m2:apply_config(cfg))
    assert.truthy(H.wait_scrapes(m2, "recover", 1))
    assert.equal("down", H.target(m2, "recover").health)
    cfg.scrape_configs[1].metrics_path = "/metrics"
    assert(m2:apply_config(cfg))
    assert.truthy(H.wait(m2, function() return H.target(m2, "recover").health == "up" end))
    assert.equal("", H.target(m2, "recover").last_error)
    assert.equal(1, (H.value(m2.store, "up", "recover")))
    m2:close()
  end)

  it("many failing and working targets on one engine keep their own state", function()
    local m2 = assert(promscrape.manager())
    local targets = {}
    for i = 1, 20 do targets[i] = srv:address() end
    local scs = {
      H.job("ok", { srv:address(), "localhost:" .. srv.port }),
      H.job("bad", { "127.0.0.1:" .. server.closed_port() }),
    }
    assert(m2:apply_config(H.config(scs)))
    assert.truthy(H.wait_scrapes(m2, "ok", 2))
    assert.truthy(H.wait_scrapes(m2, "bad", 2))
    for _, t in ipairs(m2:pools().ok:targets()) do assert.equal("up", t.health) end
    assert.equal("down", H.target(m2, "bad").health)
    m2:close()
  end)
end)
