-- `promscrape scrape URL` (issue 4): one scrape through the real engine,
-- the samples and report series printed as text exposition, the last error
-- on stderr, exit 0 if up and 1 if down, 2 for usage errors.
-- The command runs in a child process with the interpreter and C core of
-- this busted run (lua5.4 or LuaJIT, the plain or ASan build).
package.path = "./?.lua;" .. package.path
local server = require "spec.support.server"
local H = require "spec.support.scrape"

describe("promscrape scrape", function()
  local srv, tmp

  local function read(path)
    local f = io.open(path, "r")
    local s = f and f:read("*a") or ""
    if f then f:close() end
    return s
  end

  local function sh_quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
  end

  -- Runs the command; returns exit status, stdout, stderr.
  local function run(...)
    local args = {}
    for i, a in ipairs { ... } do args[i] = sh_quote(a) end
    local cmd = ("%s spec/support/run_cli.lua %s scrape %s >%s 2>%s; echo $?"):format(
      H.interpreter(), sh_quote(H.cpath()), table.concat(args, " "),
      tmp .. "/out", tmp .. "/err")
    local p = io.popen(cmd)
    local status = tonumber(p:read("*a"):match("%d+"))
    p:close()
    return status, read(tmp .. "/out"), read(tmp .. "/err")
  end

  lazy_setup(function()
    srv = server.start { tls = true }
    tmp = srv.dir
  end)

  lazy_teardown(function()
    if srv then srv:stop() end
  end)

  it("prints the samples and report series, exit 0 when up", function()
    local status, out, err = run(srv:url("/metrics"))
    assert.equal(0, status, err)
    local inst = srv:address():gsub("%p", "%%%0")
    assert.matches('temperature_celsius{instance="' .. inst .. '",job="scrape"} 21.5 %d+', out)
    assert.matches('http_requests_total{code="200",instance="' .. inst .. '",job="scrape",method="post"} 1027', out)
    assert.matches('\nup{instance="' .. inst .. '",job="scrape"} 1 %d+', out)
    assert.matches("scrape_duration_seconds{", out)
    assert.matches("scrape_samples_scraped{[^}]*} 6 ", out)
    assert.equal("", err)
  end)

  it("prints the last error and exits 1 when down", function()
    local status, out, err = run(srv:url("/status/500"))
    assert.equal(1, status)
    assert.matches('up{[^}]*} 0 ', out)
    assert.matches("HTTP status 500", err)

    status, out, err = run("http://127.0.0.1:" .. server.closed_port() .. "/metrics")
    assert.equal(1, status)
    assert.matches('up{[^}]*} 0 ', out)
    assert.matches("refused", err)
  end)

  it("honours --timeout", function()
    local t0 = H.now()
    local status, _, err = run(srv:url("/slow?delay=5"), "--timeout", "0.3")
    assert.equal(1, status)
    assert.matches("timeout", err)
    assert.is_true(H.now() - t0 < 4)
  end)

  it("asks for one format with --format", function()
    local status, out, err = run(srv:url("/om"), "--format", "om")
    assert.equal(0, status, err)
    assert.matches("foo_total{[^}]*} 17 ", out)
    status, out = run(srv:url("/headers"), "--format", "text")
    assert.equal(0, status)
    assert.matches('name="accept",value="text/plain;version=0.0.4', out, 1, true)
    assert.not_matches("openmetrics", out)
  end)

  it("sends user:password@ as basic auth and --header Authorization", function()
    local u = srv:url("/basic"):gsub("^http://", "http://alice:s3cret@")
    local status, out, err = run(u)
    assert.equal(0, status, err)
    assert.matches("basic_ok{", out)
    status, out, err = run(srv:url("/bearer"), "--header", "Authorization: Bearer tok3n")
    assert.equal(0, status, err)
    assert.matches("bearer_ok{", out)
    status, _, err = run(srv:url("/bearer"), "--header", "Authorization: Bearer wrong-tok3n")
    assert.equal(1, status)
    assert.matches("401", err)
    assert.not_matches("wrong%-tok3n", err)
  end)

  it("scrapes https with --ca-file or --insecure", function()
    local url = srv:tls_url("/metrics")
    local status, out, err = run(url, "--ca-file", srv.ca_file)
    assert.equal(0, status, err)
    assert.matches("temperature_celsius{", out)
    status, _, err = run(url)
    assert.equal(1, status)
    assert.matches("certificate", err)
    status = run(url, "--insecure")
    assert.equal(0, status)
  end)

  it("passes the query string as params and names the job with --job", function()
    local status, out = run(srv:url("/many?n=2"), "--job", "probe")
    assert.equal(0, status)
    assert.matches('big_series{i="1",instance="[^"]+",job="probe"} 1', out)
  end)

  it("is dispatched by bin/promscrape", function()
    local f = assert(io.open("bin/promscrape", "r"))
    local bin = f:read("*a")
    f:close()
    if not bin:find('"scrape"', 1, true) then
      pending("bin/promscrape does not list the scrape command yet")
      return
    end
    if H.interpreter() ~= "lua5.4" or H.cpath() ~= "build/?.so" then
      pending("bin/promscrape runs lua5.4 against build/: only checked in that run")
      return
    end
    local p = io.popen("bin/promscrape scrape " .. sh_quote(srv:url("/metrics")) .. " 2>&1; echo \"rc=$?\"")
    local out = p:read("*a")
    p:close()
    assert.matches("rc=0", out)
    assert.matches('\nup{[^}]*} 1 ', out)
  end)

  it("exits 2 on usage errors", function()
    local status, _, err = run()
    assert.equal(2, status)
    assert.matches("usage: promscrape scrape", err)
    status, _, err = run("--bogus", srv:url())
    assert.equal(2, status)
    assert.matches("unknown option %-%-bogus", err)
    status, _, err = run("ftp://example.org/x")
    assert.equal(2, status)
    assert.matches("unsupported scheme", err)
    status, _, err = run(srv:url(), "--header", "X-Custom: 1")
    assert.equal(2, status)
    assert.matches("only Authorization", err)
    status, _, err = run(srv:url(), "--format", "json")
    assert.equal(2, status)
    status, _, err = run(srv:url(), "--timeout", "soon")
    assert.equal(2, status)
    local out
    status, out = run("--help")
    assert.equal(0, status)
    assert.matches("usage: promscrape scrape", out)
  end)
end)
