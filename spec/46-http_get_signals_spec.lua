-- m:http_get (a one-off GET on the engine's libcurl client, for http_sd)
-- and signals (core.signal_watch, m:signals, m:run returning "signal").
local promscrape = require "promscrape"
local core = require "promscrape.core"
local server = require "spec.support.server"
local H = require "spec.support.scrape"

-- Steps m until the callback ran; returns its result table.
local function get(m, url, opts)
  local res
  local ok, err, code = m:http_get(url, opts or {}, function(r) res = r end)
  if not ok then return nil, err, code end
  H.wait(m, function() return res ~= nil end, 8)
  return res
end

describe("m:http_get", function()
  local srv, m

  lazy_setup(function()
    srv = server.start {}
  end)

  lazy_teardown(function()
    if srv then srv:stop() end
  end)

  before_each(function()
    m = assert(promscrape.manager())
  end)

  after_each(function()
    m:close()
  end)

  it("fetches a URL and passes status, body and content type to the callback", function()
    local r = assert(get(m, srv:url("/metrics")))
    assert.equal(200, r.status)
    assert.matches("http_requests_total", r.body)
    assert.matches("^text/plain", r.content_type)
    assert.is_nil(r.error)
  end)

  it("sends headers, basic auth and authorization as Prometheus names them", function()
    local r = assert(get(m, srv:url("/headers"), { headers = { ["X-Custom"] = "v1" } }))
    assert.matches('request_header{name="x%-custom",value="v1"} 1', r.body)
    r = assert(get(m, srv:url("/basic"), { basic_auth = { username = "alice", password = "s3cret" } }))
    assert.equal(200, r.status)
    local f = os.tmpname()
    local fh = assert(io.open(f, "w"))
    fh:write("s3cret\n")
    fh:close()
    r = assert(get(m, srv:url("/basic"), { basic_auth = { username = "alice", password_file = f } }))
    assert.equal(200, r.status)
    os.remove(f)
    r = assert(get(m, srv:url("/bearer"), { authorization = { type = "Bearer", credentials = "tok3n" } }))
    assert.equal(200, r.status)
    r = assert(get(m, srv:url("/basic"), { basic_auth = { username = "alice", password = "wrong" } }))
    assert.equal(401, r.status)
    assert.matches("401", r.error)
    assert.is_nil(r.body)
  end)

  it("ignores fields it does not use, so an http_sd_config can be passed as is", function()
    local r = assert(get(m, srv:url("/metrics"), {
      url = srv:url("/other"), refresh_interval = "60s", follow_redirects = true, enable_http2 = true,
      no_proxy = "", body_size_limit = 0,
    }))
    assert.equal(200, r.status)
  end)

  it("reports failures in the callback, never by raising", function()
    local r = assert(get(m, srv:url("/status/500")))
    assert.equal(500, r.status)
    assert.equal("server returned HTTP status 500 Internal Server Error", r.error)
    r = assert(get(m, "http://127.0.0.1:1/"))
    assert.equal(0, r.status)
    assert.is_string(r.error)
    r = assert(get(m, srv:url("/slow?delay=3"), { timeout = 0.3 }))
    assert.matches("timeout", r.error)
    r = assert(get(m, srv:url("/big?bytes=100000"), { body_size_limit = 1000 }))
    assert.matches("body size limit", r.error)
  end)

  it("returns nil, err for bad requests and raises on misuse", function()
    local ok, err, code = m:http_get("http://[bad", {}, function() end)
    assert.is_nil(ok)
    assert.is_string(err)
    assert.equal("EINVAL", code)
    ok, err, code = m:http_get(srv:url("/"), { oauth2 = { client_id = "x" } }, function() end)
    assert.is_nil(ok)
    assert.matches("oauth2", err)
    assert.equal("ENOTSUP", code)
    ok, err = m:http_get(srv:url("/"), { basic_auth = { username = "a", password_file = "/nonexistent/pw" } },
      function() end)
    assert.is_nil(ok)
    assert.matches("/nonexistent/pw", err)
    assert.has_error(function() m:http_get(srv:url("/")) end)
    assert.has_error(function() m:http_get(srv:url("/"), {}, "not a function") end)
    assert.has_error(function() m:http_get(srv:url("/"), { timeout = -1 }, function() end) end)
  end)

  it("records a callback's error in m:errors() and runs callbacks during run", function()
    local n = 0
    -- either may finish first: the second callback to run stops the run
    local function count() n = n + 1; if n == 2 then m:stop() end end
    assert(m:http_get(srv:url("/metrics"), {}, function() count(); error("callback failed") end))
    assert(m:http_get(srv:url("/metrics"), {}, count))
    assert.equal("stopped", m:run { duration = 5 })
    assert.equal(2, n)
    local errs = m:errors()
    assert.equal(1, #errs)
    assert.matches("callback failed", errs[1])
  end)

  it("drops requests in flight on close, without calling back", function()
    local called = false
    assert(m:http_get(srv:url("/slow?delay=1"), {}, function() called = true end))
    m:step(0.05)
    m:close()
    collectgarbage()
    assert.is_false(called)
  end)
end)

describe("signals", function()
  local m

  before_each(function()
    m = assert(promscrape.manager())
  end)

  after_each(function()
    core.signal_unwatch()
    m:close()
  end)

  it("core.getpid is the pid of this process", function()
    local f = io.open("/proc/self/stat")
    if f then
      local pid = tonumber(f:read("*l"):match("^(%d+)"))
      f:close()
      assert.equal(pid, core.getpid())
    else
      assert.is_number(core.getpid())
    end
  end)

  it("makes run return \"signal\" and m:signals() name it once", function()
    assert.is_true(core.signal_watch { "HUP", "INT", "TERM" })
    assert.same({}, m:signals())
    os.execute("kill -HUP " .. core.getpid())
    local t0 = os.time()
    assert.equal("signal", m:run { duration = 30 })
    assert.is_true(os.time() - t0 <= 2)
    assert.same({ "HUP" }, m:signals())
    assert.same({}, m:signals())
    assert.equal("duration", m:run { duration = 0.05 })
    -- system() ignores SIGINT while it waits: send it from the background
    os.execute("(kill -TERM " .. core.getpid() .. "; sleep 0.2; kill -INT "
      .. core.getpid() .. ") &")
    assert.equal("signal", m:run())
    H.wait(m, function() return false end, 0.5)
    assert.same({ "INT", "TERM" }, m:signals())
  end)

  it("ends a run blocked in a long wait", function()
    assert(core.signal_watch { "USR1" })
    -- a child process sends the signal while run waits
    os.execute("(sleep 0.3; kill -USR1 " .. core.getpid() .. ") &")
    local t0 = os.time()
    assert.equal("signal", m:run { duration = 20 })
    assert.is_true(os.time() - t0 <= 3)
    assert.same({ "USR1" }, m:signals())
  end)

  it("does not report signals received before the manager was made", function()
    assert(core.signal_watch { "USR2" })
    os.execute("kill -USR2 " .. core.getpid())
    local m2 = assert(promscrape.manager())
    assert.equal("duration", m2:run { duration = 0.05 })
    assert.same({}, m2:signals())
    m2:close()
    assert.same({ "USR2" }, m:signals())
  end)

  it("raises on unknown signal names", function()
    assert.has_error(function() core.signal_watch { "NOPE" } end)
    assert.has_error(function() core.signal_watch("HUP") end)
  end)
end)
