-- m:listen: the engine's own HTTP server (ps_httpd). Requests are answered
-- by a Lua handler on the Lua thread between engine steps; the clients
-- here are the curl CLI, started in the background while the test steps
-- the manager, writing to a temporary file.
local promscrape = require "promscrape"
local server = require "spec.support.server"
local H = require "spec.support.scrape"

local NOPRELOAD = "env -u LD_PRELOAD "

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Starts curl in the background; steps m until it finished. Returns its
-- output (with -i: status line and headers) and its exit code.
local function curl(m, args, timeout)
  local out = tmpname()
  os.execute("(" .. NOPRELOAD .. "curl -s --max-time 5 " .. args .. " > " .. out
    .. " 2>/dev/null; printf '\\nEXIT:%s\\n' $? >> " .. out .. ") &")
  local s
  H.wait(m, function()
    s = read(out)
    return s and s:match("\nEXIT:%d+\n$")
  end, timeout or 8)
  os.remove(out)
  assert(s, "curl did not finish")
  local body, code = s:match("^(.*)\nEXIT:(%d+)\n$")
  return body, tonumber(code)
end

describe("m:listen", function()
  local m, seen

  before_each(function()
    m = assert(promscrape.manager())
    seen = {}
  end)

  after_each(function()
    m:close()
  end)

  local function echo(req)
    seen[#seen + 1] = req
    if req.path == "/missing" then return 404, nil, "not here\n" end
    return 200, { ["Content-Type"] = "application/json", ["X-Served-By"] = "lua" },
      '{"path":"' .. req.path .. '","query":"' .. req.query .. '"}'
  end

  it("binds the address given, port 0 picking one", function()
    assert.is_nil(m:listen_address())
    assert.is_true(m:listen("127.0.0.1:0", echo))
    local addr = m:listen_address()
    local port = tonumber(addr:match("^127%.0%.0%.1:(%d+)$"))
    assert.is_truthy(port)
    assert.is_true(port > 0)
    local ok, err, code = m:listen("127.0.0.1:0", echo)
    assert.is_nil(ok)
    assert.matches("already listening on " .. addr:gsub("%.", "%%."), err)
    assert.equal("ESTATE", code)
  end)

  it("refuses bad addresses with nil, err, code and raises on misuse", function()
    for _, a in ipairs { ":9099", "9099", "[::1", "127.0.0.1:99999" } do
      local ok, err, code = m:listen(a, echo)
      assert.is_nil(ok)
      assert.is_string(err)
      assert.equal("EINVAL", code)
    end
    assert.has_error(function() m:listen("127.0.0.1:0") end)
    assert.has_error(function() m:listen(nil, echo) end)
  end)

  it("calls the handler with method, path, query and lowercased headers", function()
    assert(m:listen("127.0.0.1:0", echo))
    local out, code = curl(m, "-i -H 'X-Custom: Abc' 'http://" .. m:listen_address() .. "/some/path?a=1&b=2'")
    assert.equal(0, code)
    assert.matches("^HTTP/1%.1 200 OK\r\n", out)
    assert.matches("\r\nContent%-Type: application/json\r\n", out)
    assert.matches("\r\nX%-Served%-By: lua\r\n", out)
    assert.matches('\r\n\r\n{"path":"/some/path","query":"a=1&b=2"}$', out)
    assert.equal(1, #seen)
    local req = seen[1]
    assert.equal("GET", req.method)
    assert.equal("/some/path", req.path)
    assert.equal("a=1&b=2", req.query)
    assert.equal("Abc", req.headers["x-custom"])
    assert.matches("^curl/", req.headers["user-agent"])
    assert.is_nil(req.headers["User-Agent"])
  end)

  it("answers HEAD without a body, and the handler's status", function()
    assert(m:listen("127.0.0.1:0", echo))
    local out = curl(m, "-I 'http://" .. m:listen_address() .. "/x'")
    assert.matches("^HTTP/1%.1 200 OK\r\n", out)
    assert.matches("Content%-Length: 24\r\n", out)
    assert.equal("HEAD", seen[1].method)
    out = curl(m, "-i 'http://" .. m:listen_address() .. "/missing'")
    assert.matches("^HTTP/1%.1 404 Not Found\r\n", out)
    assert.matches("not here\n$", out)
  end)

  it("keeps connections alive across requests", function()
    assert(m:listen("127.0.0.1:0", echo))
    local url = "'http://" .. m:listen_address() .. "/a'"
    local out = curl(m, url .. " " .. url) -- one curl: the connection is reused
    assert.equal(2, #seen)
    assert.equal(2, select(2, out:gsub('"path":"/a"', "")))
  end)

  it("answers 500 with a generic body when the handler fails, and records the error", function()
    assert(m:listen("127.0.0.1:0", function(req)
      if req.path == "/bad_status" then return "nope" end
      error("handler exploded")
    end))
    local out = curl(m, "-i 'http://" .. m:listen_address() .. "/'")
    assert.matches("^HTTP/1%.1 500 Internal Server Error\r\n", out)
    assert.not_matches("exploded", out)
    local errs = m:errors()
    assert.equal(1, #errs)
    assert.matches("listen handler: .*handler exploded", errs[1])
    out = curl(m, "-i 'http://" .. m:listen_address() .. "/bad_status'")
    assert.matches("^HTTP/1%.1 500 ", out)
    assert.matches("HTTP status", m:errors()[1])
  end)

  it("answers 431 to an oversized header without calling the handler", function()
    assert(m:listen("127.0.0.1:0", echo))
    local out = curl(m, "-i -H 'X-Big: " .. string.rep("a", 9000) .. "' 'http://" .. m:listen_address() .. "/'")
    assert.matches("^HTTP/1%.1 431 ", out)
    assert.equal(0, #seen)
  end)

  it("serves the memory store while scraping, during run", function()
    local srv = server.start {}
    assert(m:apply_config(H.config { H.job("self", { srv:address() }) }))
    assert(m:listen("127.0.0.1:0", function(req)
      if req.path == "/federate" then
        return 200, { ["Content-Type"] = "text/plain; version=0.0.4" }, m.store:text()
      end
      return 404, {}, ""
    end))
    assert(H.wait_scrapes(m, "self", 1))
    local out = curl(m, "'http://" .. m:listen_address() .. "/federate'")
    assert.matches('up{instance="' .. srv:address():gsub("%.", "%%.") .. '",job="self"} 1', out)
    -- during m:run too: a background client, then run for a while
    local file = tmpname()
    os.execute("(sleep 0.2; " .. NOPRELOAD .. "curl -s --max-time 5 'http://" .. m:listen_address()
      .. "/federate' > " .. file .. ") &")
    assert.equal("duration", m:run { duration = 1.5 * H.SLOW })
    assert.matches("temperature_celsius", read(file) or "")
    os.remove(file)
    srv:stop()
  end)

  it("stops listening when the manager is closed", function()
    assert(m:listen("127.0.0.1:0", echo))
    local addr = m:listen_address()
    m:close()
    local p = io.popen(NOPRELOAD .. "curl -s -o /dev/null -w '%{http_code}' --max-time 2 'http://" .. addr .. "/'")
    local code = p:read("*a")
    p:close()
    assert.equal("000", code)
  end)
end)
