-- Service discovery (issue 5): promscrape.discovery and its providers
-- (static, file_sd, http_sd), the per-job merge, the throttle, and the
-- hand-over to the scrape engine (m:sync). Lua 5.4 and LuaJIT.
package.path = "./?.lua;" .. package.path
local server = require "spec.support.server"
local discovery = require "promscrape.discovery"
local file_sd = require "promscrape.discovery.file"
local http_sd = require "promscrape.discovery.http"
local SLOW = require("spec.support.scrape").SLOW or 1

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function mktemp_dir()
  local p = io.popen("mktemp -d /tmp/promscrape-sd.XXXXXX")
  local d = p:read("*l")
  p:close()
  return d
end

-- A stand-in for the scrape Manager: records every sync.
local function fake_manager()
  return {
    syncs = {},
    sync = function(self, sets)
      self.syncs[#self.syncs + 1] = sets
      return true
    end,
    apply_config = function() return true end,
    last = function(self) return self.syncs[#self.syncs] end,
  }
end

-- job's merged groups as a sorted list of "source target labels" strings
local function flat(sets, job)
  local out = {}
  for _, g in ipairs(sets[job] or {}) do
    local keys = {}
    for k in pairs(g.labels) do keys[#keys + 1] = k end
    table.sort(keys)
    local l = {}
    for _, k in ipairs(keys) do l[#l + 1] = k .. "=" .. g.labels[k] end
    for _, t in ipairs(g.targets) do
      out[#out + 1] = t .. " " .. table.concat(l, ",")
    end
  end
  table.sort(out)
  return out
end

local function clocked()
  local c = { t = 0 }
  c.fn = function() return c.t end
  return c
end

describe("discovery manager", function()
  it("runs static_configs as a provider, sources by index, first sync at once", function()
    local m, c = fake_manager(), clocked()
    local d = discovery.new { manager = m, clock = c.fn }
    assert(d:apply_config { scrape_configs = {
      { job_name = "a", static_configs = {
        { targets = { "h1:1", "h2:2" }, labels = { env = "x" } },
        { targets = { "h3:3" } } } },
      { job_name = "b" },
    } })
    assert.equal(1, #m.syncs)
    local sets = m:last()
    assert.same({ "h1:1 env=x", "h2:2 env=x", "h3:3 " }, flat(sets, "a"))
    assert.same({}, sets.b) -- every job is sent, empty ones too
    assert.equal("a/static/0", sets.a[1].source)
    assert.equal("a/static/1", sets.a[2].source)
  end)

  it("throttles syncs (one per throttle period) and merges providers per job", function()
    local m, c = fake_manager(), clocked()
    local d = discovery.new { manager = m, clock = c.fn, throttle = 5 }
    local up1, up2
    d:add_provider("j", { start = function(_, up) up1 = up end })
    d:add_provider("j", { start = function(_, up) up2 = up end })
    up1 { { targets = { "a:1" }, source = "s" } }
    d:poll()
    assert.equal(1, #m.syncs)
    c.t = 1
    up2 { { targets = { "b:1" }, source = "s" } } -- same source, other provider
    d:poll()
    c.t = 4.9
    up1 { { targets = { "a:2" }, source = "s" } }
    d:poll()
    assert.equal(1, #m.syncs)
    c.t = 5
    d:poll()
    assert.equal(2, #m.syncs)
    assert.same({ "a:2 ", "b:1 " }, flat(m:last(), "j"))
    c.t = 20
    d:poll() -- nothing changed: no sync
    assert.equal(2, #m.syncs)
    up1 { { source = "s" } } -- an empty group removes its source
    d:poll()
    assert.equal(3, #m.syncs)
    assert.same({ "b:1 " }, flat(m:last(), "j"))
  end)

  it("keeps the last groups of a provider that reports an error", function()
    local m, c = fake_manager(), clocked()
    local errors = {}
    local d = discovery.new { manager = m, clock = c.fn, throttle = 0,
      on_error = function(job, p, e) errors[#errors + 1] = job .. " " .. p .. " " .. e end }
    local up
    d:add_provider("j", { name = "mine", start = function(_, u) up = u end })
    up { { targets = { "a:1" } } }
    d:poll()
    up(nil, "boom")
    d:poll()
    assert.same({ "j mine boom" }, errors)
    assert.same({ "a:1 " }, flat(d:targets(), "j"))
    assert.equal("boom", d:status()[1].last_error)
  end)

  it("keeps unchanged jobs' providers on apply_config and stops removed ones", function()
    local m, c = fake_manager(), clocked()
    local started, stopped = 0, 0
    local d = discovery.new { manager = m, clock = c.fn, providers = {
      custom_sd_configs = function(section)
        return { start = function(_, up) started = started + 1; up { { targets = section.targets } } end,
          stop = function() stopped = stopped + 1 end }
      end } }
    local cfg = { scrape_configs = { { job_name = "j", custom_sd_configs = { { targets = { "x:1" } } } } } }
    assert(d:apply_config(cfg))
    assert(d:apply_config(cfg))
    assert.equal(1, started)
    cfg.scrape_configs[1].custom_sd_configs[1].targets = { "y:1" }
    assert(d:apply_config(cfg))
    assert.equal(2, started)
    assert.equal(1, stopped)
    assert.same({ "y:1 " }, flat(m:last(), "j"))
    assert(d:apply_config { scrape_configs = {} })
    assert.equal(2, stopped)
  end)
end)

describe("file_sd", function()
  local dir
  before_each(function() dir = mktemp_dir() end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  local function start(files, refresh)
    local m, c = fake_manager(), clocked()
    local errors = {}
    local d = discovery.new { manager = m, clock = c.fn, throttle = 0,
      on_error = function(_, _, e) errors[#errors + 1] = e end }
    assert(d:apply_config { scrape_configs = { { job_name = "f",
      file_sd_configs = { { files = files, refresh_interval = refresh or "10s" } } } } })
    return d, m, c, errors
  end

  it("reads JSON and YAML, sets __meta_filepath and the path:index source", function()
    write(dir .. "/a.json", '[{"targets":["a:1","a:2"],"labels":{"team":"x"}},{"targets":["a:3"]}]')
    write(dir .. "/b.yml", "- targets: [b:1]\n  labels:\n    port: 8080\n    empty:\n")
    local d, m = start { dir .. "/a.json", dir .. "/b.yml" }
    assert.same({
      "a:1 __meta_filepath=" .. dir .. "/a.json,team=x",
      "a:2 __meta_filepath=" .. dir .. "/a.json,team=x",
      "a:3 __meta_filepath=" .. dir .. "/a.json",
      "b:1 __meta_filepath=" .. dir .. "/b.yml,empty=,port=8080",
    }, flat(m:last(), "f"))
    local sources = {}
    for _, g in ipairs(m:last().f) do sources[#sources + 1] = g.source end
    table.sort(sources)
    assert.same({ "f/file_sd/0/" .. dir .. "/a.json:0", "f/file_sd/0/" .. dir .. "/a.json:1",
      "f/file_sd/0/" .. dir .. "/b.yml:0" }, sources)
    d:stop()
  end)

  it("expands globs and picks up new and removed files", function()
    write(dir .. "/one.json", '[{"targets":["one:1"]}]')
    write(dir .. "/skip.txt", "not a target file")
    local d, m, c = start({ dir .. "/*.json", dir .. "/*.yaml" }, "10s")
    assert.same({ "one:1 __meta_filepath=" .. dir .. "/one.json" }, flat(m:last(), "f"))
    write(dir .. "/two.yaml", "- targets: ['two:1']\n")
    c.t = 1.5
    d:poll()
    assert.same({ "one:1 __meta_filepath=" .. dir .. "/one.json",
      "two:1 __meta_filepath=" .. dir .. "/two.yaml" }, flat(m:last(), "f"))
    os.remove(dir .. "/one.json")
    c.t = 3
    d:poll()
    assert.same({ "two:1 __meta_filepath=" .. dir .. "/two.yaml" }, flat(m:last(), "f"))
    d:stop()
  end)

  it("picks up a change within refresh_interval, even one stat cannot see", function()
    local p = dir .. "/t.json"
    write(p, '[{"targets":["x:1"]}]')
    local d, m, c = start({ p }, "5s")
    local n = #m.syncs
    write(p, '[{"targets":["y:1"]}]') -- same size, same second
    c.t = 0.5
    d:poll()
    assert.equal(n, #m.syncs) -- the 1 s stat check has not come yet
    c.t = 5
    d:poll() -- the refresh reads every file again
    assert.same({ "y:1 __meta_filepath=" .. p }, flat(m:last(), "f"))
    write(p, '[{"targets":["z:1","z:2"]}]') -- size changes: seen by the stat check
    c.t = 6.1
    d:poll()
    assert.same({ "z:1 __meta_filepath=" .. p, "z:2 __meta_filepath=" .. p }, flat(m:last(), "f"))
    d:stop()
  end)

  it("keeps the last good targets of a broken file and reports the error", function()
    local p = dir .. "/t.json"
    write(p, '[{"targets":["good:1"]},{"targets":["good:2"]}]')
    local d, m, c, errors = start({ p }, "2s")
    write(p, '[{"targets":["bad:1"]') -- truncated JSON
    c.t = 2
    d:poll()
    assert.equal(1, #errors)
    assert.matches("error reading file " .. p:gsub("%p", "%%%0"), errors[1])
    assert.same({ "good:1 __meta_filepath=" .. p, "good:2 __meta_filepath=" .. p }, flat(d:targets(), "f"))
    assert.same({ "good:1 __meta_filepath=" .. p, "good:2 __meta_filepath=" .. p }, flat(m:last(), "f"))
    assert.is_string(d:status()[1].last_error)
    -- fixed, with one group less: the second source is removed
    write(p, '[{"targets":["fixed:1"]}]')
    c.t = 4
    d:poll()
    assert.same({ "fixed:1 __meta_filepath=" .. p }, flat(m:last(), "f"))
    assert.is_nil(d:status()[1].last_error)
    d:stop()
  end)

  it("rejects what Prometheus rejects: non-string label values, unknown YAML fields, null groups", function()
    local function bad(name, text, pattern)
      local p = dir .. "/" .. name
      write(p, text)
      local groups, err = file_sd.read(p)
      assert.is_nil(groups)
      assert.matches(pattern, err)
    end
    bad("n.json", '[{"targets":["a:1"],"labels":{"port":8080}}]', "label value must be a string")
    bad("t.json", '[{"targets":[1]}]', "expected a string")
    bad("o.json", '{"targets":["a:1"]}', "cannot unmarshal object")
    bad("nil.json", '[null]', "nil target group item found")
    bad("u8.json", '[{"targets":["a:1"],"labels":{"a":"\255"}}]', "invalid UTF%-8")
    bad("u.yml", "- targets: [a:1]\n  lables: {a: b}\n", "field lables not found")
    bad("s.yml", "- targets: [a:1\n", "yaml:")
    -- YAML scalars are strings, as yaml.v2 reads them into label values
    write(dir .. "/ok.yml", "- targets: [a:1]\n  labels: {n: 1.10, b: yes}\n")
    local groups = assert(file_sd.read(dir .. "/ok.yml"))
    assert.equal("1.10", groups[1].labels.n)
    assert.equal("yes", groups[1].labels.b)
    -- an empty YAML file is no groups, an empty JSON file an error
    write(dir .. "/e.yml", "")
    assert.same({}, (file_sd.read(dir .. "/e.yml")))
    write(dir .. "/e.json", "")
    assert.is_nil((file_sd.read(dir .. "/e.json")))
  end)
end)

describe("http_sd", function()
  it("decodes Prometheus's response shape and checks status and content type", function()
    local g = assert(http_sd.decode("http://sd/x", 200, "application/json; charset=utf-8",
      '[{"targets":["a:1"],"labels":{"k":"v"}}]'))
    assert.same({ targets = { "a:1" }, labels = { k = "v", __meta_url = "http://sd/x" },
      source = "http://sd/x:0" }, g[1])
    local _, err = http_sd.decode("u", 500, "application/json", "[]")
    assert.equal("server returned HTTP status 500", err)
    _, err = http_sd.decode("u", 200, "text/plain", "[]")
    assert.equal('unsupported content type "text/plain"', err)
    _, err = http_sd.decode("u", 200, "application/json", '{"metrics":[1]}')
    assert.matches("cannot unmarshal object", err)
    _, err = http_sd.decode("u", 200, "application/json", '[{"targets":["a"],"labels":{"x":1}}]')
    assert.matches("label value must be a string", err)
  end)

  it("refreshes every refresh_interval through a fetch function, keeping the last good groups", function()
    local m, c = fake_manager(), clocked()
    local answers = {
      { status = 200, content_type = "application/json", body = '[{"targets":["a:1"]},{"targets":["a:2"]}]' },
      { status = 200, content_type = "text/html", body = "<html>" },
      { error = "connection refused" },
      { status = 200, content_type = "application/json", body = '[{"targets":["b:1"]}]' },
    }
    local calls, errors = {}, {}
    local d = discovery.new { manager = m, clock = c.fn, throttle = 0,
      on_error = function(_, _, e) errors[#errors + 1] = e end,
      providers = { http_sd_configs = function(section, job, i)
        return http_sd.new(section, { name = job .. "/http", fetch = function(url, opts, cb)
          calls[#calls + 1] = { url = url, opts = opts }
          cb(table.remove(answers, 1))
          return true
        end })
      end } }
    assert(d:apply_config { scrape_configs = { { job_name = "h", http_sd_configs = {
      { url = "http://sd.example/t", refresh_interval = "30s",
        basic_auth = { username = "u", password = "p" } } } } } })
    local url = "http://sd.example/t"
    assert.same({ "a:1 __meta_url=" .. url, "a:2 __meta_url=" .. url }, flat(m:last(), "h"))
    assert.equal("application/json", calls[1].opts.headers.Accept)
    assert.equal("30", calls[1].opts.headers["X-Prometheus-Refresh-Interval-Seconds"])
    assert.same({ username = "u", password = "p" }, calls[1].opts.basic_auth)
    c.t = 29
    d:poll()
    assert.equal(1, #calls)
    c.t = 30
    d:poll()
    c.t = 60
    d:poll()
    assert.equal(3, #calls)
    assert.same({ "error refreshing " .. url .. ': unsupported content type "text/html"',
      "error refreshing " .. url .. ": connection refused" }, errors)
    assert.same({ "a:1 __meta_url=" .. url, "a:2 __meta_url=" .. url }, flat(m:last(), "h"))
    c.t = 90
    d:poll()
    assert.same({ "b:1 __meta_url=" .. url }, flat(m:last(), "h"))
  end)
end)

describe("discovery with the scrape engine", function()
  local promscrape = require "promscrape"
  local config = promscrape.config
  local dir, srv

  lazy_setup(function()
    dir = mktemp_dir()
    srv = server.start()
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
    os.execute("rm -rf '" .. dir .. "'")
  end)

  local function target_addresses(m, job)
    local out = {}
    local pool = m:pools()[job]
    for _, t in ipairs(pool and pool:targets() or {}) do
      out[#out + 1] = t.discovered_labels.__address__
    end
    table.sort(out)
    return out
  end

  it("hands static and file_sd targets to m:sync; the engine relabels them", function()
    write(dir .. "/t.json", '[{"targets":["127.0.0.1:1","127.0.0.1:2"],"labels":{"drop":"yes"}},'
      .. '{"targets":["127.0.0.1:3"]}]')
    local cfg = assert(config.parse(([[
scrape_configs:
  - job_name: s
    static_configs: [{targets: ["127.0.0.1:9"]}]
    file_sd_configs: [{files: ["%s/*.json"]}]
    relabel_configs:
      - {source_labels: [drop], regex: "yes", action: drop}
]]):format(dir)))
    local m = assert(promscrape.manager())
    local d = discovery.new { manager = m, throttle = 0 }
    assert(d:apply_config(cfg))
    assert.same({ "127.0.0.1:3", "127.0.0.1:9" }, target_addresses(m, "s"))
    local pool = m:pools().s
    assert.equal(2, #pool:dropped_targets())
    for _, t in ipairs(pool:targets()) do
      if t.discovered_labels.__address__ == "127.0.0.1:3" then
        assert.equal(dir .. "/t.json", t.discovered_labels.__meta_filepath)
      end
    end
    d:stop()
    m:close()
  end)

  it("http_sd fetches through m:http_get, with auth, and survives bad answers", function()
    local m = assert(promscrape.manager())
    if not m.http_get then
      m:close()
      pending("the engine has no m:http_get in this build")
      return
    end
    local function set(name, body, ctype, status)
      local q = "body=" .. body:gsub("[^%w%-%._~]", function(ch) return string.format("%%%02X", ch:byte()) end)
      if ctype then q = q .. "&ctype=" .. ctype:gsub("[^%w%-%._~]", function(ch) return string.format("%%%02X", ch:byte()) end) end
      if status then q = q .. "&status=" .. status end
      assert.equal("ok\n", srv:get("/sdset/" .. name .. "?" .. q))
    end
    local target = srv:address()
    set("a", '[{"targets":["' .. target .. '"],"labels":{"sd":"http"}}]')
    local url = srv:url("/sd/a?auth=basic")
    local cfg = assert(config.parse(([[
scrape_configs:
  - job_name: h
    scrape_interval: 1s
    http_sd_configs:
      - url: "%s"
        refresh_interval: 1s
        basic_auth: {username: alice, password: s3cret}
]]):format(url)))
    local errors = {}
    local d = discovery.new { manager = m, throttle = 0,
      on_error = function(_, _, e) errors[#errors + 1] = e end }
    assert(d:apply_config(cfg))
    local function wait(pred, secs)
      local t0 = os.time()
      while os.time() - t0 <= (secs or 5) * SLOW do
        assert(m:step(0.05))
        d:poll()
        if pred() then return true end
      end
      return false
    end
    assert.is_true(wait(function() return #target_addresses(m, "h") == 1 end))
    local t = m:pools().h:targets()[1]
    assert.equal(url, t.discovered_labels.__meta_url)
    assert.equal("http", t.labels.sd)
    assert.equal("application/json", srv:get("/sdheader/a?h=accept"))
    assert.equal("1", srv:get("/sdheader/a?h=x-prometheus-refresh-interval-seconds"))
    -- a wrong content type: error reported, targets kept
    set("a", '[{"targets":["127.0.0.1:7"]}]', "text/plain")
    assert.is_true(wait(function() return #errors > 0 end))
    assert.matches('unsupported content type "text/plain"', errors[1])
    assert.same({ target }, target_addresses(m, "h"))
    -- a 500: error, targets kept
    set("a", "oops", "application/json", 500)
    local n = #errors
    assert.is_true(wait(function() return #errors > n end))
    assert.matches("server returned HTTP status 500", errors[#errors])
    assert.same({ target }, target_addresses(m, "h"))
    -- a good answer again: replaced
    set("a", '[{"targets":["127.0.0.1:7"]}]')
    assert.is_true(wait(function() return target_addresses(m, "h")[1] == "127.0.0.1:7" end))
    d:stop()
    m:close()
  end)
end)
