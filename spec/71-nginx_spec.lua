-- promscrape inside a real nginx (issue 7): Debian's nginx +
-- libnginx-mod-http-lua running examples/nginx/nginx.conf in a temp prefix
-- on 127.0.0.1 (one worker), with the LuaJIT build (make luajit). Checks:
-- targets get scraped; /federate serves their series; /api/v1/targets has
-- Prometheus's shape; while the slow target takes 2 s, other locations of
-- the same worker answer in under 50 ms; /targets renders in headless
-- Chromium; HUP reload and QUIT leave no crash and no process behind.
-- nginx is always stopped by the pid in its pid file. Pending (with the
-- reason) without nginx, the lua module, the LuaJIT build or Chromium.
-- Runs under Lua 5.4 and LuaJIT alike (it drives nginx from outside).
package.path = "./?.lua;" .. package.path
local socket = require "socket"
local http = require "socket.http"
local has_cjson, cjson = pcall(require, "cjson")

local function exists(p)
  local f = io.open(p, "r")
  if f then f:close() end
  return f ~= nil
end

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

local function capture(cmd)
  local p = io.popen(cmd)
  local s = p:read("*a")
  p:close()
  return s
end

local function read(p)
  local f = io.open(p, "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local NGINX = "/usr/sbin/nginx"
local LUA_MOD = "/usr/lib/nginx/modules/ngx_http_lua_module.so"
local CORE = "build/luajit/promscrape/core.so"
local CHROMIUM
for _, c in ipairs { "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome" } do
  if exists(c) then CHROMIUM = c; break end
end

local missing = not exists(NGINX) and "nginx is not installed (apt-get install nginx)"
  or not exists(LUA_MOD) and "the nginx lua module is not installed (apt-get install libnginx-mod-http-lua)"
  or not exists(CORE) and (CORE .. " is missing (make luajit)")

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- Running: exists and is not a zombie (here PID 1 may reap exited
-- daemons late: a zombie has exited and holds nothing).
local function alive(pid)
  local stat = pid and read("/proc/" .. pid .. "/stat")
  return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
end

describe("nginx example (examples/nginx) #slow", function()
  if missing then
    pending("skipped: " .. missing)
    return
  end

  local ROOT = capture("pwd"):gsub("%s+$", "")
  local prefix, port, tport, master
  local base

  local function get(path)
    local t0 = socket.gettime()
    local body, code = http.request(base .. path)
    return body, code, socket.gettime() - t0
  end

  local function targets()
    local body, code = get("/api/v1/targets")
    if code ~= 200 or not body then return nil end
    if has_cjson then return cjson.decode(body) end
    return { raw = body }
  end

  local function target(doc, job)
    for _, t in ipairs(doc.data.activeTargets) do
      if t.scrapePool == job then return t end
    end
  end

  local function wait(pred, timeout)
    local deadline = socket.gettime() + timeout
    local r = pred()
    while not r and socket.gettime() < deadline do
      socket.sleep(0.1)
      r = pred()
    end
    return r
  end

  local function workers()
    local out = {}
    for pid in capture("pgrep -P " .. master .. " 2>/dev/null"):gmatch("%d+") do
      out[#out + 1] = pid
    end
    return out
  end

  local function error_log() return read(prefix .. "/error.log") or "" end

  local function render(src, dst)
    local s = assert(read(src))
    s = s:gsub("@ROOT@", function() return ROOT end)
      :gsub("@PREFIX@", function() return prefix end)
      :gsub("@TARGET_PORT@", function() return tostring(tport) end)
      :gsub("@PORT@", function() return tostring(port) end)
    local f = assert(io.open(dst, "w"))
    f:write(s)
    f:close()
  end

  lazy_setup(function()
    prefix = capture("mktemp -d /tmp/promscrape-nginx-spec.XXXXXX"):gsub("%s+$", "")
    assert(prefix ~= "")
    assert(sh("mkdir -p '" .. prefix .. "/tmp' && chmod 755 '" .. prefix .. "'"))
    port, tport = free_port(), free_port()
    base = "http://127.0.0.1:" .. port
    render("examples/nginx/nginx.conf", prefix .. "/nginx.conf")
    render("examples/nginx/prometheus.yml", prefix .. "/prometheus.yml")
    assert(sh(NGINX .. " -p '" .. prefix .. "' -c '" .. prefix .. "/nginx.conf' -e '"
      .. prefix .. "/error.log' >/dev/null 2>&1"), "nginx did not start: " .. error_log())
    assert(wait(function() return read(prefix .. "/nginx.pid") end, 5))
    master = read(prefix .. "/nginx.pid"):match("%d+")
  end)

  lazy_teardown(function()
    if master and alive(master) then
      sh("kill -QUIT " .. master)
      wait(function() return not alive(master) end, 5)
      if alive(master) then sh("kill -KILL " .. master) end
    end
    if prefix and prefix:match("^/tmp/promscrape%-nginx%-spec%.") then
      if os.getenv("KEEP_NGINX_PREFIX") then
        print("nginx prefix kept: " .. prefix)
      else
        sh("rm -rf '" .. prefix .. "'")
      end
    end
  end)

  it("scrapes the targets in the background", function()
    local doc = wait(function()
      local d = targets()
      if not (d and d.data) then return nil end
      local s, slow = target(d, "static"), target(d, "slow")
      return s and s.health == "up" and slow and slow.health == "up" and d
    end, 10)
    assert.truthy(doc, "targets not up; error.log:\n" .. error_log())
    assert.matches("start worker process", error_log())
    -- one worker: the manager's engine thread runs beside nginx's own
    local w = workers()
    assert.equal(1, #w)
    local tasks = capture("ls /proc/" .. w[1] .. "/task | wc -l"):match("%d+")
    assert.equal("2", tasks) -- the worker's thread and the engine thread
  end)

  it("serves the memory store on /federate", function()
    local body, code = get("/federate")
    assert.equal(200, code)
    local inst = "127.0.0.1:" .. tport
    assert.truthy(body:find('demo_requests_total{code="200",env="demo",instance="'
      .. inst .. '",job="static",method="get"} 1027 ', 1, true), body)
    assert.truthy(body:find('demo_temperature_celsius{env="demo",instance="' .. inst
      .. '",job="static"} 21.5 ', 1, true))
    assert.truthy(body:find('slow_target_answered{instance="' .. inst .. '",job="slow"} 1 ', 1, true))
    assert.truthy(body:find('up{instance="127.0.0.1:9",job="down"} 0 ', 1, true))
  end)

  it("answers /api/v1/targets in Prometheus's shape", function()
    local body, code = get("/api/v1/targets")
    assert.equal(200, code)
    if not has_cjson then
      pending("lua-cjson is not installed: only the raw shape was checked")
      assert.matches('^{"status":"success","data":{"activeTargets":%[', body)
      return
    end
    local doc = cjson.decode(body)
    assert.equal("success", doc.status)
    assert.equal(3, #doc.data.activeTargets)
    assert.same({}, doc.data.droppedTargets)
    local s = target(doc, "static")
    assert.equal("http://127.0.0.1:" .. tport .. "/metrics", s.scrapeUrl)
    assert.same({ env = "demo", instance = "127.0.0.1:" .. tport, job = "static" }, s.labels)
    assert.equal("127.0.0.1:" .. tport, s.discoveredLabels.__address__)
    assert.equal("1s", s.scrapeInterval)
    assert.equal("1s", s.scrapeTimeout)
    assert.equal("", s.lastError)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", s.lastScrape)
    assert.equal("number", type(s.lastScrapeDuration))
    local slow = target(doc, "slow")
    assert.equal("5s", slow.scrapeInterval)
    assert.equal("4s", slow.scrapeTimeout)
    assert.truthy(slow.lastScrapeDuration >= 1.9, slow.lastScrapeDuration)
    local down = target(doc, "down")
    assert.equal("down", down.health)
    assert.truthy(#down.lastError > 0)
  end)

  it("keeps answering in under 50 ms while a target takes 2 s", function()
    -- Over 5.5 s (more than the slow job's 5 s interval) a 2 s scrape of
    -- /slow is in flight for at least 2 s of the window: the engine thread
    -- waits for it, the nginx worker serves /slow itself (ngx.sleep) and
    -- every other request meanwhile.
    local t_end = socket.gettime() + 5.5
    local worst, n, lat = 0, 0, {}
    local slow_before = select(2, (read(prefix .. "/access.log") or ""):gsub("GET /slow", ""))
    while socket.gettime() < t_end do
      for _, path in ipairs { "/ping", "/api/v1/targets", "/federate" } do
        local _, code, dt = get(path)
        assert.equal(200, code)
        n = n + 1
        lat[#lat + 1] = dt
        if dt > worst then worst = dt end
      end
      socket.sleep(0.02)
    end
    local slow_after = select(2, (read(prefix .. "/access.log") or ""):gsub("GET /slow", ""))
    table.sort(lat)
    print(string.format("\n# nginx: %d requests during slow scrapes: median %.2f ms, "
      .. "p99 %.2f ms, max %.2f ms", n, lat[math.floor(#lat / 2) + 1] * 1000,
      lat[math.floor(#lat * 0.99)] * 1000, worst * 1000))
    assert.truthy(slow_after > slow_before, "no slow scrape completed in the window")
    assert.truthy(worst < 0.05, string.format("a request took %.1f ms", worst * 1000))
  end)

  it("renders /targets in headless Chromium", function()
    if not CHROMIUM then
      pending("skipped: Chromium is not installed (apt-get install chromium)")
      return
    end
    local profile = capture("mktemp -d /tmp/promscrape-chromium.XXXXXX"):gsub("%s+$", "")
    local dom = capture("timeout 60 " .. CHROMIUM .. " --headless --no-sandbox --disable-gpu"
      .. " --disable-quic --no-first-run --disable-background-networking"
      .. " --disable-component-update --disable-sync --disable-dev-shm-usage"
      .. " --user-data-dir='" .. profile .. "' --dump-dom " .. base .. "/targets 2>/dev/null")
    sh("rm -rf '" .. profile .. "'")
    assert.matches("<h1>Targets</h1>", dom, 1, true)
    local rows = {}
    for job, health in dom:gmatch('<tr class="target" data%-job="([^"]+)" data%-health="([^"]+)"') do
      rows[job] = health
    end
    assert.same({ static = "up", slow = "up", down = "down" }, rows)
    assert.truthy(dom:find("static (1/1 up)", 1, true))
    assert.truthy(dom:find("down (0/1 up)", 1, true))
    assert.truthy(dom:find("connection refused", 1, true))
    assert.truthy(dom:find('href="http://127.0.0.1:' .. tport .. '/metrics"', 1, true))
  end)

  -- A graceful stop waits for requests in flight, and this nginx serves
  -- the slow target itself: HUP/QUIT are sent outside the 2 s window in
  -- which /slow is being answered, so the timing measures our shutdown.
  local function outside_slow_window()
    local slow = wait(function() -- a fresh worker may not have scraped it yet
      local doc = targets()
      local t = doc and doc.data and target(doc, "slow")
      return t and t.lastScrape:match("^%d+") ~= "0001" and t
    end, 8)
    if not slow then return end
    local y, mo, d, h, mi, s, ms = slow.lastScrape:match("(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.(%d+)Z")
    if not y then return end
    -- seconds since the epoch of a UTC date, without os.time's local zone
    local days = 0
    local function leap(yy) return yy % 4 == 0 and (yy % 100 ~= 0 or yy % 400 == 0) end
    for yy = 1970, tonumber(y) - 1 do days = days + (leap(yy) and 366 or 365) end
    local mdays = { 31, leap(tonumber(y)) and 29 or 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
    for m = 1, tonumber(mo) - 1 do days = days + mdays[m] end
    days = days + tonumber(d) - 1
    local start = days * 86400 + h * 3600 + mi * 60 + s + ms / 1000
    local phase = (socket.gettime() - start) % 5
    if phase < 2.4 then socket.sleep(2.4 - phase)
    elseif phase > 4.3 then socket.sleep(5 - phase + 2.4) end
  end

  it("reloads on HUP without a crash or a leftover worker", function()
    local old = workers()
    assert.equal(1, #old)
    outside_slow_window()
    assert(sh("kill -HUP " .. master))
    local gone = wait(function() return not alive(old[1]) end, 3)
    assert.truthy(gone, "the old worker did not exit")
    local new = wait(function()
      local w = workers()
      return #w == 1 and w[1] ~= old[1] and w
    end, 3)
    assert.truthy(new)
    -- the new worker scrapes again, with its own engine thread
    assert.truthy(wait(function()
      local d = targets()
      local s = d and d.data and target(d, "static")
      return s and s.health == "up"
    end, 5))
    assert.equal("2", capture("ls /proc/" .. new[1] .. "/task | wc -l"):match("%d+"))
  end)

  it("quits on QUIT within 1 s, leaving no process, no crash", function()
    local w = workers()
    outside_slow_window()
    local t0 = socket.gettime()
    assert(sh("kill -QUIT " .. master))
    local gone = wait(function()
      if alive(master) then return false end
      for _, pid in ipairs(w) do if alive(pid) then return false end end
      return true
    end, 3)
    local dt = socket.gettime() - t0
    print(string.format("\n# nginx: QUIT to exit of master and workers: %.0f ms", dt * 1000))
    assert.truthy(gone)
    assert.truthy(dt < 1, string.format("quit took %.2f s", dt))
    local log = error_log()
    for _, bad in ipairs { "signal 11", "core dumped", "[alert]", "[emerg]", "[crit]",
      "exited on signal" } do
      assert.falsy(log:find(bad, 1, true), "error.log has " .. bad .. ":\n" .. log)
    end
    master = nil
  end)
end)
