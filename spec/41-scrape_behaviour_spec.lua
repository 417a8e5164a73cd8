-- Scrape behaviour against real HTTP servers (issue 4, Proof): requests as
-- Prometheus makes them, formats, gzip, staleness, limits, honor_labels,
-- honor_timestamps, metric relabeling, report series, body limit, non-200,
-- redirects, auth, TLS with a CA made by the test. Lua 5.4 and LuaJIT.
package.path = "./?.lua;" .. package.path
local promscrape = require "promscrape"
local server = require "spec.support.server"
local H = require "spec.support.scrape"

describe("scrape behaviour", function()
  local srv, dir
  local managers = {}

  local function manager(opts)
    local m = assert(promscrape.manager(opts))
    managers[#managers + 1] = m
    return m
  end

  -- Starts one job, waits for n scrapes, returns m, its target.
  local function scrape(job, extra, n)
    local m = manager()
    assert(m:apply_config(H.config { H.job(job, { srv:address() }, extra) }))
    assert.truthy(H.wait_scrapes(m, job, n or 1), job .. ": no scrape")
    return m, H.target(m, job)
  end

  lazy_setup(function()
    srv = server.start { tls = true }
    dir = srv.dir
  end)

  lazy_teardown(function()
    for _, m in ipairs(managers) do m:close() end
    if srv then srv:stop() end
  end)

  it("sends Prometheus's request headers", function()
    local m = scrape("hdr", { metrics_path = "/headers" })
    local function header(name)
      for _, s in ipairs(H.find_all(m.store, { __name__ = "request_header", job = "hdr" })) do
        if s.labels.name == name then return s.labels.value end
      end
    end
    assert.matches("^promscrape/", header("user-agent"))
    assert.matches("application/openmetrics%-text", header("accept"))
    assert.matches("text/plain", header("accept"))
    assert.matches("gzip", header("accept-encoding"))
    assert.equal(("%g"):format(H.TIMEOUT), header("x-prometheus-scrape-timeout-seconds"))

    m = scrape("hdr2", { metrics_path = "/headers", enable_compression = false,
      scrape_protocols = { "PrometheusText0.0.4" } })
    local enc
    for _, s in ipairs(H.find_all(m.store, { __name__ = "request_header", job = "hdr2" })) do
      if s.labels.name == "accept-encoding" then enc = s.labels.value end
      if s.labels.name == "accept" then
        assert.not_matches("openmetrics", s.labels.value)
      end
    end
    assert.is_true(enc == nil or not enc:find("gzip"))
  end)

  it("scrapes text 0.0.4 with the report series", function()
    local m, t = scrape("text")
    assert.equal("up", t.health)
    local st = m.store
    assert.equal(1027, (H.value(st, "http_requests_total", "text", { code = "200", method = "post" })))
    assert.equal(21.5, (H.value(st, "temperature_celsius", "text")))
    assert.equal(350, (H.value(st, "rpc_duration_seconds_count", "text")))
    assert.equal(1, (H.value(st, "up", "text")))
    assert.equal(6, (H.value(st, "scrape_samples_scraped", "text")))
    assert.equal(6, (H.value(st, "scrape_samples_post_metric_relabeling", "text")))
    assert.is_number((H.value(st, "scrape_series_added", "text")))
    local d = H.value(st, "scrape_duration_seconds", "text")
    assert.is_true(d > 0 and d < H.TIMEOUT)
    assert.is_nil(H.value(st, "scrape_timeout_seconds", "text"))
  end)

  it("adds the extra report series with extra_scrape_metrics", function()
    local m = scrape("extra", { extra_scrape_metrics = true, sample_limit = 50 })
    assert.equal(H.TIMEOUT, (H.value(m.store, "scrape_timeout_seconds", "extra")))
    assert.equal(50, (H.value(m.store, "scrape_sample_limit", "extra")))
    assert.is_true(H.value(m.store, "scrape_body_size_bytes", "extra") > 100)
  end)

  it("scrapes OpenMetrics with exemplars", function()
    local app = { exemplars = 0, labels = {} }
    function app:commit(b)
      self.exemplars = self.exemplars + #b.exemplars
      for _, l in pairs(b.new_series) do self.labels[l.__name__] = true end
    end
    local m = manager { appender = app }
    assert(m:apply_config(H.config { H.job("om", { srv:address() }, { metrics_path = "/om" }) }))
    assert.truthy(H.wait_scrapes(m, "om", 1))
    assert.equal("up", H.target(m, "om").health)
    assert.truthy(app.labels.foo_total)
    assert.truthy(app.labels.bar_seconds)
    assert.is_true(app.exemplars >= 1)

    local m2 = scrape("om2", { metrics_path = "/om" })
    assert.equal(17, (H.value(m2.store, "foo_total", "om2")))
    assert.equal(3.5, (H.value(m2.store, "bar_seconds", "om2")))
  end)

  it("decompresses gzip bodies", function()
    local m, t = scrape("gz", { metrics_path = "/gzip" })
    assert.equal("up", t.health)
    assert.equal(21.5, (H.value(m.store, "temperature_celsius", "gz")))
  end)

  it("passes params in the URL", function()
    local m, t = scrape("params", { metrics_path = "/many", params = { n = { "3" } } })
    assert.equal(srv:url("/many?n=3"), t.url)
    assert.equal(3, #H.find_all(m.store, { __name__ = "big_series", job = "params" }))
  end)

  describe("staleness", function()
    it("marks series that disappear from one scrape to the next", function()
      local app = { stale = {}, names = {} }
      function app:commit(b)
        for ref, l in pairs(b.new_series) do self.names[ref] = l.__name__ end
        for i in pairs(b.stale) do self.stale[self.names[b.refs[i]]] = true end
      end
      local m = manager { appender = app }
      assert(m:apply_config(H.config { H.job("stale", { srv:address() }, { metrics_path = "/changing" }) }))
      assert.truthy(H.wait(m, function() return app.stale.changing_b end))
      assert.is_nil(app.stale.changing_a)

      local m2 = scrape("stale2", { metrics_path = "/changing" })
      assert.truthy(H.wait(m2, function()
        local s = H.find(m2.store, { __name__ = "changing_b", job = "stale2" })
        return s and s.stale
      end))
      local s = H.find(m2.store, { __name__ = "changing_b", job = "stale2" })
      assert.is_true(s.value ~= s.value) -- NaN
      assert.not_matches("changing_b", m2.store:text()) -- stale series are not exposed
    end)

    it("marks every series when a target goes away", function()
      local m = manager()
      assert(m:apply_config(H.config { { job_name = "away", scrape_interval = H.dur(H.INTERVAL) } }))
      assert(m:sync { away = { { targets = { srv:address() } } } })
      assert.truthy(H.wait_scrapes(m, "away", 1))
      assert.is_false(H.find(m.store, { __name__ = "up", job = "away" }).stale)
      assert(m:sync { away = {} })
      -- end-of-run staleness: two intervals plus 10% later
      assert.truthy(H.wait(m, function()
        local up = H.find(m.store, { __name__ = "up", job = "away" })
        local t = H.find(m.store, { __name__ = "temperature_celsius", job = "away" })
        return up.stale and t.stale
      end, 5))
    end)

    it("marks the scraped series when a scrape fails", function()
      local m = manager()
      local cfg = H.config { H.job("fails", { srv:address() }) }
      assert(m:apply_config(cfg))
      assert.truthy(H.wait_scrapes(m, "fails", 1))
      cfg.scrape_configs[1].metrics_path = "/status/500"
      assert(m:apply_config(cfg))
      assert.truthy(H.wait(m, function()
        local t = H.find(m.store, { __name__ = "temperature_celsius", job = "fails" })
        return t.stale and H.value(m.store, "up", "fails") == 0
      end))
    end)
  end)

  describe("limits", function()
    it("sample_limit fails the whole scrape", function()
      local m, t = scrape("sl", { metrics_path = "/many", params = { n = { "20" } }, sample_limit = 5 })
      assert.equal("down", t.health)
      assert.matches("sample limit", t.last_error)
      assert.equal(0, (H.value(m.store, "up", "sl")))
      for _, s in ipairs(H.find_all(m.store, { __name__ = "big_series", job = "sl" })) do
        assert.is_true(s.stale)
      end
      local _, ok = scrape("sl_ok", { metrics_path = "/many", params = { n = { "20" } }, sample_limit = 20 })
      assert.equal("up", ok.health)
    end)

    it("label_limit and the label length limits fail the scrape", function()
      local _, t = scrape("ll", { metrics_path = "/labels", label_limit = 2 })
      assert.equal("down", t.health)
      assert.matches("label", t.last_error)
      _, t = scrape("lnl", { metrics_path = "/labels", label_name_length_limit = 3 })
      assert.equal("down", t.health)
      assert.matches("label", t.last_error)
      _, t = scrape("lvl", { metrics_path = "/labels", label_value_length_limit = 5 })
      assert.equal("down", t.health)
      assert.matches("label", t.last_error)
      _, t = scrape("ll_ok", { metrics_path = "/labels", label_limit = 10,
        label_name_length_limit = 64, label_value_length_limit = 64 })
      assert.equal("up", t.health)
    end)

    it("body_size_limit counts decompressed bytes", function()
      local _, t = scrape("body", { metrics_path = "/big", params = { bytes = { "200000" } },
        body_size_limit = "100KB" })
      assert.equal("down", t.health)
      assert.matches("body size limit", t.last_error)
      _, t = scrape("body_ok", { metrics_path = "/big", params = { bytes = { "50000" } },
        body_size_limit = "100KB" })
      assert.equal("up", t.health)
      -- gzip: the compressed body is small, the decompressed one is not
      _, t = scrape("body_gz", { metrics_path = "/gzip", body_size_limit = "100B" })
      assert.equal("down", t.health)
    end)

    it("target_limit fails every target of the pool", function()
      local m = manager()
      assert(m:apply_config(H.config { H.job("tl", { srv:address(), "localhost:" .. srv.port },
        { target_limit = 1 }) }))
      assert.truthy(H.wait_scrapes(m, "tl", 1))
      for _, t in ipairs(m:pools().tl:targets()) do
        assert.equal("down", t.health)
        assert.matches("target_limit", t.last_error)
      end
    end)
  end)

  describe("labels", function()
    it("honor_labels: false renames conflicts to exported_*", function()
      local m = scrape("hl", { metrics_path = "/labels" })
      local s = H.find(m.store, { __name__ = "clash", job = "hl" })
      assert.equal("exposed_job", s.labels.exported_job)
      assert.equal("exposed_instance", s.labels.exported_instance)
      assert.equal(srv:address(), s.labels.instance)
      assert.equal("x", s.labels.own)
    end)

    it("honor_labels: true keeps the exposed values", function()
      local m = scrape("hl2", { metrics_path = "/labels", honor_labels = true })
      local s = H.find(m.store, { __name__ = "clash", own = "x" })
      assert.equal("exposed_job", s.labels.job)
      assert.equal("exposed_instance", s.labels.instance)
      assert.is_nil(s.labels.exported_job)
      local n = H.find(m.store, { __name__ = "noclash", job = "hl2" })
      assert.equal(srv:address(), n.labels.instance)
    end)

    it("honor_timestamps decides whose timestamp a sample gets", function()
      local m = scrape("ts", { metrics_path = "/timestamps" })
      assert.equal(1000000000000, H.find(m.store, { __name__ = "with_ts", job = "ts" }).timestamp)
      local now_ms = H.now() * 1000
      assert.is_true(math.abs(H.find(m.store, { __name__ = "without_ts", job = "ts" }).timestamp - now_ms) < 5000)
      m = scrape("ts2", { metrics_path = "/timestamps", honor_timestamps = false })
      assert.is_true(math.abs(H.find(m.store, { __name__ = "with_ts", job = "ts2" }).timestamp - now_ms) < 5000)
    end)

    it("applies metric_relabel_configs", function()
      local m = scrape("mr", { metric_relabel_configs = {
        { source_labels = { "__name__" }, regex = "temperature_.*", action = "drop" },
        { target_label = "added", replacement = "yes" },
      } })
      assert.is_nil(H.find(m.store, { __name__ = "temperature_celsius", job = "mr" }))
      assert.equal("yes", H.find(m.store, { __name__ = "http_requests_total", job = "mr" }).labels.added)
      assert.equal(6, (H.value(m.store, "scrape_samples_scraped", "mr")))
      assert.equal(5, (H.value(m.store, "scrape_samples_post_metric_relabeling", "mr")))
      assert.is_nil(H.find(m.store, { __name__ = "up", job = "mr" }).labels.added) -- report series are not relabeled
    end)

    it("applies relabel_configs to targets", function()
      local _, t = scrape("tr", { relabel_configs = {
        { target_label = "team", replacement = "core" },
        { source_labels = { "__address__" }, target_label = "instance", replacement = "renamed" },
      } })
      assert.equal("core", t.labels.team)
      assert.equal("renamed", t.labels.instance)
    end)
  end)

  describe("HTTP", function()
    it("only status 200 succeeds", function()
      local _, t = scrape("s500", { metrics_path = "/status/500" })
      assert.equal("down", t.health)
      assert.matches("500", t.last_error)
      _, t = scrape("s404", { metrics_path = "/status/404" })
      assert.equal("down", t.health)
      assert.matches("404", t.last_error)
    end)

    it("follows redirects unless follow_redirects is false", function()
      local m, t = scrape("redir", { metrics_path = "/redirect" })
      assert.equal("up", t.health)
      assert.equal(21.5, (H.value(m.store, "temperature_celsius", "redir")))
      _, t = scrape("noredir", { metrics_path = "/redirect", follow_redirects = false })
      assert.equal("down", t.health)
      assert.matches("301", t.last_error)
    end)

    it("sends basic auth, and never shows the password", function()
      local _, t = scrape("basic", { metrics_path = "/basic",
        basic_auth = { username = "alice", password = "s3cret" } })
      assert.equal("up", t.health)
      local pw = dir .. "/password"
      local f = assert(io.open(pw, "w"))
      f:write("s3cret\n")
      f:close()
      _, t = scrape("basic_file", { metrics_path = "/basic",
        basic_auth = { username = "alice", password_file = pw } })
      assert.equal("up", t.health)
      local m
      m, t = scrape("basic_bad", { metrics_path = "/basic",
        basic_auth = { username = "alice", password = "wrong-pass" } })
      assert.equal("down", t.health)
      assert.matches("401", t.last_error)
      assert.not_matches("wrong%-pass", t.last_error)
      assert.not_matches("wrong%-pass", m:pools().basic_bad:fingerprint())
      for k, v in pairs(t.discovered_labels) do
        assert.not_matches("wrong%-pass", k .. v)
      end
      _, t = scrape("noauth", { metrics_path = "/basic" })
      assert.equal("down", t.health)
    end)

    it("sends bearer tokens (authorization and bearer_token)", function()
      local _, t = scrape("bearer", { metrics_path = "/bearer",
        authorization = { type = "Bearer", credentials = "tok3n" } })
      assert.equal("up", t.health)
      local tf = dir .. "/token"
      local f = assert(io.open(tf, "w"))
      f:write("tok3n")
      f:close()
      _, t = scrape("bearer_file", { metrics_path = "/bearer",
        authorization = { credentials_file = tf } })
      assert.equal("up", t.health)
      _, t = scrape("bearer_bad", { metrics_path = "/bearer",
        authorization = { credentials = "nope-secret" } })
      assert.equal("down", t.health)
      assert.not_matches("nope%-secret", t.last_error)
    end)

    it("re-reads a rotated bearer_token_file without a reload; a missing file fails the scrape", function()
      local tf = dir .. "/rotating-token"
      local function put(s)
        local f = assert(io.open(tf, "w"))
        f:write(s)
        f:close()
      end
      put("stale-t0ken\n")
      local m, t = scrape("rotate", { metrics_path = "/bearer", bearer_token_file = tf })
      assert.equal("down", t.health)
      assert.matches("401", t.last_error)
      put("tok3n\n") -- the token the server wants, no reload
      local n = t.scrapes
      assert.truthy(H.wait(m, function()
        local tt = H.target(m, "rotate")
        return tt.scrapes > n and tt.health == "up"
      end), "rotated token not used")
      os.remove(tf)
      n = H.target(m, "rotate").scrapes
      assert.truthy(H.wait(m, function()
        local tt = H.target(m, "rotate")
        return tt.scrapes > n and tt.health == "down"
      end), "missing token file did not fail the scrape")
      t = H.target(m, "rotate")
      assert.matches("cannot read", t.last_error, 1, true)
      assert.matches(tf, t.last_error, 1, true)
      assert.not_matches("tok3n", t.last_error, 1, true)
    end)

    it("verifies TLS against a CA made by the test", function()
      local tls = "127.0.0.1:" .. srv.tls_port
      local m = manager()
      -- handshakes are slow under ASan/valgrind: a generous timeout
      local function job(name, target, tls_config)
        return H.job(name, { target }, { scheme = "https", tls_config = tls_config,
          scrape_interval = H.dur(H.SLOW), scrape_timeout = H.dur(0.9 * H.SLOW) })
      end
      assert(m:apply_config(H.config {
        job("tls", tls, { ca_file = srv.ca_file }),
        job("tls_noca", tls),
        job("tls_insecure", tls, { insecure_skip_verify = true }),
        job("tls_name", "localhost:" .. srv.tls_port, { ca_file = srv.ca_file }),
      }))
      assert.truthy(H.wait_scrapes(m, "tls", 1))
      assert.truthy(H.wait_scrapes(m, "tls_noca", 1))
      assert.truthy(H.wait_scrapes(m, "tls_insecure", 1))
      assert.truthy(H.wait_scrapes(m, "tls_name", 1))
      local t = H.target(m, "tls")
      assert.equal("up", t.health, t.last_error)
      assert.equal("https://" .. tls .. "/metrics", t.url)
      assert.equal(21.5, (H.value(m.store, "temperature_celsius", "tls")))
      t = H.target(m, "tls_noca")
      assert.equal("down", t.health)
      assert.matches("certificate", t.last_error:lower())
      t = H.target(m, "tls_insecure")
      assert.equal("up", t.health, t.last_error)
      t = H.target(m, "tls_name")
      assert.equal("up", t.health, t.last_error)
    end)
  end)
end)
