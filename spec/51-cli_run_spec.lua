-- `promscrape run` (issue 5): a prometheus.yml scraped against real servers
-- on 127.0.0.1 with --duration; one log line per state change without a
-- terminal; SIGHUP reloads (a failed reload keeps the old config); SIGTERM
-- stops cleanly; --listen serves /api/v1/targets (Prometheus's shape) and
-- /federate. Runs in child processes with this busted run's interpreter and
-- C core. Parts that need engine services this build lacks (m:listen,
-- signal watching) are pending, saying so.
package.path = "./?.lua;" .. package.path
local server = require "spec.support.server"
local H = require "spec.support.scrape"
local promscrape = require "promscrape"

local function read(path)
  local f = io.open(path, "r")
  local s = f and f:read("*a") or ""
  if f then f:close() end
  return s
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function q(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

local function has(method)
  local m = assert(promscrape.manager())
  local ok = m[method] ~= nil
  m:close()
  return ok
end

local function has_signals()
  return type(promscrape.core.signal_watch) == "function" and has("signals")
end

local function curl(url)
  local p = io.popen("env -u LD_PRELOAD curl -s --max-time 5 " .. q(url))
  local body = p:read("*a")
  p:close()
  return body
end

local function cli(tmp, name, ...)
  local args = {}
  for i, a in ipairs { ... } do args[i] = q(a) end
  return ("%s spec/support/run_cli.lua %s run %s >%s 2>%s"):format(
    H.interpreter(), q(H.cpath()), table.concat(args, " "),
    q(tmp .. "/" .. name .. ".out"), q(tmp .. "/" .. name .. ".err"))
end

-- Runs to completion: status, stdout, stderr.
local function run(tmp, ...)
  local p = io.popen(cli(tmp, "fg", ...) .. "; echo $?")
  local status = tonumber(p:read("*a"):match("%d+"))
  p:close()
  return status, read(tmp .. "/fg.out"), read(tmp .. "/fg.err")
end

-- Starts in the background: a handle with pid, out(), err(), wait().
local function spawn(tmp, name, ...)
  local pidf, stf = tmp .. "/" .. name .. ".pid", tmp .. "/" .. name .. ".status"
  os.remove(pidf); os.remove(stf)
  assert(sh("sh -c " .. q(cli(tmp, name, ...) .. " & echo $! > " .. q(pidf)
    .. "; wait $!; echo $? > " .. q(stf)) .. " >/dev/null 2>&1 &"))
  local pid
  for _ = 1, 100 do
    pid = tonumber(read(pidf):match("%d+"))
    if pid then break end
    server.sleep(0.05)
  end
  assert(pid, "no pid")
  local h = { pid = pid }
  function h.out() return read(tmp .. "/" .. name .. ".out") end
  function h.err() return read(tmp .. "/" .. name .. ".err") end
  function h.wait(secs)
    for _ = 1, (secs or 10) * 20 do
      local s = tonumber(read(stf):match("%d+"))
      if s then return s end
      server.sleep(0.05)
    end
    return nil
  end
  function h.kill(sig) return sh("kill -" .. sig .. " " .. pid .. " 2>/dev/null") end
  function h.until_out(pattern, secs)
    for _ = 1, (secs or 10) * 20 do
      local o = h.out()
      if o:find(pattern, 1, true) then return o end
      if tonumber(read(stf):match("%d+")) then break end
      server.sleep(0.05)
    end
    return nil
  end
  return h
end

describe("promscrape run #slow", function()
  local srv, tmp, procs

  lazy_setup(function()
    srv = server.start()
    local p = io.popen("mktemp -d /tmp/promscrape-run.XXXXXX")
    tmp = p:read("*l")
    p:close()
    procs = {}
  end)
  lazy_teardown(function()
    for _, h in ipairs(procs) do h.kill("KILL") end
    if srv then srv:stop() end
    os.execute("rm -rf " .. q(tmp))
  end)

  local function bg(name, ...)
    local h = spawn(tmp, name, ...)
    procs[#procs + 1] = h
    return h
  end

  local function config(name, text)
    local p = tmp .. "/" .. name
    write(p, text)
    return p
  end

  it("scrapes real targets for --duration and logs state changes, one line each", function()
    write(tmp .. "/fs.json", ('[{"targets":["%s"],"labels":{"from":"file"}}]'):format(srv:address()))
    local cfg = config("p.yml", ([[
global: {scrape_interval: 1s}
rule_files: [rules.yml]
scrape_configs:
  - job_name: up
    static_configs: [{targets: ["%s"]}]
  - job_name: files
    file_sd_configs: [{files: ["fs.json"], refresh_interval: 1s}]
  - job_name: down
    static_configs: [{targets: ["127.0.0.1:%d"]}]
]]):format(srv:address(), server.closed_port()))
    local status, out, err = run(tmp, cfg, "--duration", "2.5")
    assert.equal(0, status)
    assert.matches("warning: rule_files: not used by promscrape, ignored", err, 1, true)
    assert.matches('level=info msg="starting promscrape"', out, 1, true)
    assert.matches('msg="target added" job=up instance=' .. srv:address(), out, 1, true)
    assert.matches('msg="target up" job=up instance=' .. srv:address(), out, 1, true)
    assert.matches('msg="target up" job=files instance=' .. srv:address(), out, 1, true)
    assert.matches('msg="target down" job=down instance=127.0.0.1:%d+ error=', out)
    assert.matches("msg=stopping reason=duration", out, 1, true)
    -- one line per change: a target that stays up is logged up once
    local n = 0
    for _ in out:gmatch('msg="target up" job=up ') do n = n + 1 end
    assert.equal(1, n)
    for line in out:gmatch("[^\n]+") do
      assert.matches("^ts=%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z level=%a+ msg=", line)
    end
    assert.is_nil(out:find("\27[", 1, true)) -- no ANSI without a terminal
  end)

  it("follows file_sd changes while running, and keeps targets of a broken file", function()
    local fs = tmp .. "/live.json"
    write(fs, ('[{"targets":["%s"]}]'):format(srv:address()))
    local cfg = config("live.yml", [[
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: live
    file_sd_configs: [{files: ["live.json"], refresh_interval: 1s}]
]])
    local h = bg("live", cfg, "--duration", "15", "--throttle", "0.5")
    assert.truthy(h.until_out('msg="target up" job=live', 5), h.out() .. h.err())
    local port = server.closed_port()
    write(fs, ('[{"targets":["%s","127.0.0.1:%d"]}]'):format(srv:address(), port))
    assert.truthy(h.until_out('msg="target added" job=live instance=127.0.0.1:' .. port, 5), h.out())
    write(fs, '[{"targets":') -- broken: an error line, the targets stay
    local out = assert(h.until_out('msg="discovery error" job=live provider=live/file_sd/0', 5), h.out())
    assert.matches("error reading file " .. fs, out, 1, true)
    server.sleep(1.5)
    assert.is_nil(h.out():find('msg="target removed"', 1, true))
    os.remove(fs) -- removed: its targets go
    assert.truthy(h.until_out('msg="target removed" job=live instance=127.0.0.1:' .. port, 5), h.out())
    h.kill("TERM")
    h.wait(10)
  end)

  it("exits 1 with the loader's message on a bad config, 2 on usage errors", function()
    local cfg = config("bad.yml", "scrape_configs:\n  - job_name: a\n    scrape_intervall: 1s\n")
    local status, out, err = run(tmp, cfg)
    assert.equal(1, status)
    assert.equal("", out)
    assert.matches("scrape_configs[0].scrape_intervall: unknown field", err, 1, true)
    status, _, err = run(tmp, tmp .. "/missing.yml")
    assert.equal(1, status)
    assert.matches("cannot read", err)
    assert.equal(2, (run(tmp)))
    assert.equal(2, (run(tmp, cfg, "--duration", "x")))
    assert.equal(2, (run(tmp, cfg, "--bogus")))
  end)

  it("never prints secrets", function()
    local cfg = config("secret.yml", ([[
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: basic
    basic_auth: {username: alice, password: wrong-hunter2}
    metrics_path: /basic
    static_configs: [{targets: ["%s"]}]
]]):format(srv:address()))
    local status, out, err = run(tmp, cfg, "--duration", "1.5")
    assert.equal(0, status)
    assert.matches('msg="target down" job=basic', out, 1, true)
    assert.is_nil((out .. err):find("hunter2", 1, true))
  end)

  it("serves /api/v1/targets in Prometheus's shape and /federate with --listen", function()
    if not has("listen") then
      pending("the engine has no m:listen in this build")
      return
    end
    local cfg = config("listen.yml", ([[
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: srv
    static_configs: [{targets: ["%s"], labels: {env: spec}}]
  - job_name: gone
    static_configs: [{targets: ["127.0.0.1:1"]}]
    relabel_configs: [{action: drop, source_labels: [__address__], regex: ".*"}]
]]):format(srv:address()))
    local h = bg("listen", cfg, "--duration", "8", "--listen", "127.0.0.1:0")
    local out = assert(h.until_out("msg=listening", 5), h.err())
    local addr = out:match("msg=listening address=(%S+)")
    assert.truthy(addr)
    assert.truthy(h.until_out('msg="target up" job=srv', 5))
    local cjson = require "cjson"
    local body = curl("http://" .. addr .. "/api/v1/targets")
    local okd, doc = pcall(cjson.decode, body)
    assert(okd, "not JSON: " .. body)
    assert.equal("success", doc.status)
    local a = doc.data.activeTargets
    assert.equal(1, #a)
    local t = a[1]
    assert.equal("srv", t.scrapePool)
    assert.equal("http://" .. srv:address() .. "/metrics", t.scrapeUrl)
    assert.is_string(t.globalUrl)
    assert.equal("up", t.health)
    assert.equal("", t.lastError)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[%.%d]*Z$", t.lastScrape)
    assert.is_number(t.lastScrapeDuration)
    assert.equal("1s", t.scrapeInterval)
    assert.equal("1s", t.scrapeTimeout)
    assert.same({ env = "spec", instance = srv:address(), job = "srv" }, t.labels)
    assert.equal(srv:address(), t.discoveredLabels.__address__)
    assert.equal(1, #doc.data.droppedTargets)
    assert.equal("127.0.0.1:1", doc.data.droppedTargets[1].discoveredLabels.__address__)
    assert.same({ srv = 0, gone = 1 }, doc.data.droppedTargetCounts)
    assert.matches('"droppedTargets":[', body, 1, true)
    -- ?state=active leaves an empty dropped list, as an array
    local active = curl("http://" .. addr .. "/api/v1/targets?state=active")
    assert.matches('"droppedTargets":[]', active, 1, true)
    local fed = curl("http://" .. addr .. "/federate")
    assert.matches('up{env="spec",instance="' .. srv:address() .. '",job="srv"} 1 ', fed, 1, true)
    assert.matches("http_requests_total{", fed, 1, true)
    assert.matches("promscrape_targets{", curl("http://" .. addr .. "/metrics"), 1, true)
    h.kill("TERM")
    assert.equal(0, h.wait(10))
    -- an address in use: exit 1, with the address in the message
    local status, _, err = run(tmp, cfg, "--duration", "1", "--listen", srv:address())
    assert.equal(1, status)
    assert.matches("--listen " .. srv:address(), err, 1, true)
  end)

  it("shows no secret in logs, /api/v1/targets, /metrics or /federate (SECURITY.md)", function()
    if not has("listen") then
      pending("the engine has no m:listen in this build")
      return
    end
    local tok = tmp .. "/token"
    write(tok, "tok-hunter3\n")
    local cfg = config("secrets-listen.yml", ([[
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: basic
    basic_auth: {username: alice, password: wrong-hunter2}
    metrics_path: /basic
    static_configs: [{targets: ["%s"]}]
  - job_name: tokfile
    bearer_token_file: %s
    metrics_path: /bearer
    static_configs: [{targets: ["%s"]}]
  - job_name: proxied
    proxy_url: http://bob:proxy-hunter4@127.0.0.1:1
    static_configs: [{targets: ["%s"]}]
]]):format(srv:address(), tok, srv:address(), srv:address()))
    local h = bg("secrets", cfg, "--duration", "8", "--listen", "127.0.0.1:0")
    local out = assert(h.until_out("msg=listening", 5), h.err())
    local addr = out:match("msg=listening address=(%S+)")
    assert.truthy(h.until_out("job=proxied", 5), h.err())
    local seen = {}
    for _, path in ipairs { "/api/v1/targets", "/metrics", "/federate" } do
      seen[#seen + 1] = curl("http://" .. addr .. path)
    end
    assert.matches('"scrapePool":"tokfile"', seen[1], 1, true)
    h.kill("TERM")
    assert.equal(0, h.wait(10))
    seen[#seen + 1] = h.out() .. h.err()
    for _, text in ipairs(seen) do
      for _, secret in ipairs { "hunter2", "hunter3", "hunter4" } do
        assert.is_nil(text:find(secret, 1, true), secret .. " shown in: " .. text:sub(1, 300))
      end
    end
  end)

  it("reads a bare :PORT or PORT as 127.0.0.1:PORT", function()
    local cli_run = require "promscrape.cli.run"
    assert.equal("127.0.0.1:9099", cli_run._listen_address(":9099"))
    assert.equal("127.0.0.1:9099", cli_run._listen_address("9099"))
    assert.equal("0.0.0.0:9099", cli_run._listen_address("0.0.0.0:9099"))
    assert.equal("x http://<secret>@h/p", cli_run._scrub("x http://u:pw@h/p"))
  end)

  it("reloads on SIGHUP, keeps the old config when the reload fails, stops on SIGTERM", function()
    if not has_signals() then
      pending("the engine has no signal watching (core.signal_watch, m:signals) in this build")
      return
    end
    local path = tmp .. "/hup.yml"
    write(path, ([[
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: first
    static_configs: [{targets: ["%s"]}]
]]):format(srv:address()))
    local h = bg("hup", path, "--duration", "20")
    assert.truthy(h.until_out('msg="target up" job=first', 5), h.out() .. h.err())
    write(path, ([[
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: first
    static_configs: [{targets: ["%s"]}]
  - job_name: second
    static_configs: [{targets: ["%s"]}]
]]):format(srv:address(), srv:address()))
    assert.is_true(h.kill("HUP"))
    assert.truthy(h.until_out('msg="configuration reloaded"', 5), h.out() .. h.err())
    assert.truthy(h.until_out('msg="target up" job=second', 5), h.out())
    -- a broken config: the error is logged, both jobs keep running
    write(path, "scrape_configs:\n  - job_name: x\n    bogus: 1\n")
    assert.is_true(h.kill("HUP"))
    local out = assert(h.until_out('msg="reload failed, keeping the old configuration"', 5), h.out())
    assert.matches("scrape_configs[0].bogus: unknown field", out, 1, true)
    server.sleep(1.5)
    out = h.out()
    assert.is_nil(out:find('msg="target removed"', 1, true))
    assert.is_nil(out:find('msg="target down"', 1, true))
    assert.is_true(h.kill("TERM"))
    assert.equal(0, h.wait(10))
    assert.matches("msg=stopping reason=\"signal TERM\"", h.out(), 1, true)
  end)
end)
