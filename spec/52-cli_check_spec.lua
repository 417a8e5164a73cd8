-- `promscrape check config` (issue 5): validates a prometheus.yml and lists
-- the targets each job would scrape after target relabeling (the engine's
-- own target population, without scraping). Exit 0 valid, 1 invalid, 2 usage.
-- Runs in a child process with this busted run's interpreter and C core.
package.path = "./?.lua;" .. package.path
local H = require "spec.support.scrape"

describe("promscrape check config", function()
  local tmp

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

  local function check(...)
    local args = {}
    for i, a in ipairs { ... } do args[i] = q(a) end
    local cmd = ("%s spec/support/run_cli.lua %s check %s >%s 2>%s; echo $?"):format(
      H.interpreter(), q(H.cpath()), table.concat(args, " "), tmp .. "/out", tmp .. "/err")
    local p = io.popen(cmd)
    local status = tonumber(p:read("*a"):match("%d+"))
    p:close()
    return status, read(tmp .. "/out"), read(tmp .. "/err")
  end

  lazy_setup(function()
    local p = io.popen("mktemp -d /tmp/promscrape-check.XXXXXX")
    tmp = p:read("*l")
    p:close()
  end)
  lazy_teardown(function() os.execute("rm -rf " .. q(tmp)) end)

  it("lists jobs and relabeled targets: static, file_sd, http_sd at run time", function()
    write(tmp .. "/targets.json", '[{"targets":["10.0.0.1:9100","10.0.0.2:9100"],"labels":{"rack":"a"}}]')
    write(tmp .. "/p.yml", [[
global:
  scrape_interval: 15s
rule_files: [rules.yml]
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:9100"]
        labels: {env: demo}
    file_sd_configs:
      - files: ["*.json"]
    relabel_configs:
      - source_labels: [__address__]
        regex: "10.0.0.2:.*"
        action: drop
  - job_name: sd
    http_sd_configs:
      - url: http://user:hunter2@sd.example:8080/targets
]])
    local status, out, err = check("config", tmp .. "/p.yml")
    assert.equal("", err)
    assert.equal(0, status)
    assert.matches("Checking " .. tmp:gsub("%p", "%%%0") .. "/p.yml", out)
    assert.matches("warning: rule_files: not used by promscrape, ignored", out, 1, true)
    assert.matches('job "node": every 15s, timeout 10s', out, 1, true)
    assert.matches('http://127.0.0.1:9100/metrics  {env="demo", instance="127.0.0.1:9100", job="node"}', out, 1, true)
    assert.matches('http://10.0.0.1:9100/metrics  {instance="10.0.0.1:9100", job="node", rack="a"}', out, 1, true)
    assert.matches("2 target(s):", out, 1, true)
    assert.matches("1 dropped by relabeling:", out, 1, true)
    assert.matches('__address__="10.0.0.2:9100"', out, 1, true)
    assert.matches("file_sd_configs[0]: " .. tmp .. "/*.json: 1 file(s), 1 group(s)", out, 1, true)
    assert.matches("http_sd_configs[0]: http://<secret>@sd.example:8080/targets: discovered at run time", out, 1, true)
    assert.is_nil(out:find("hunter2", 1, true))
    assert.matches("SUCCESS", out)
  end)

  it("exits 1 with the loader's message on an invalid config", function()
    write(tmp .. "/bad.yml", [[
scrape_configs:
  - job_name: a
    scrape_interval: 10s
    scrape_timeout: 20s
]])
    local status, out, err = check("config", tmp .. "/bad.yml")
    assert.equal(1, status, err)
    assert.matches('scrape_configs[0].scrape_timeout: "20s" is greater than scrape_interval "10s"', err, 1, true)
    assert.matches("FAILED", err)
    assert.is_nil(out:find("SUCCESS", 1, true))
  end)

  it("exits 1 for a broken file_sd file, 0 when a glob matches nothing (a warning)", function()
    os.execute("mkdir -p " .. q(tmp .. "/b"))
    write(tmp .. "/b/broken.json", '[{"targets":')
    write(tmp .. "/b/p.yml", "scrape_configs:\n  - job_name: f\n    file_sd_configs: [{files: [broken.json]}]\n")
    local status, _, err = check("config", tmp .. "/b/p.yml")
    assert.equal(1, status, err)
    assert.matches("error reading file " .. tmp .. "/b/broken.json", err, 1, true)
    write(tmp .. "/b/q.yml", "scrape_configs:\n  - job_name: f\n    file_sd_configs: [{files: [none*.yml]}]\n")
    local status2, out2 = check("config", tmp .. "/b/q.yml")
    assert.equal(0, status2)
    assert.matches("warning: no file matches", out2, 1, true)
  end)

  it("exits 1 for a missing file and 2 for usage errors", function()
    local status, _, err = check("config", tmp .. "/nope.yml")
    assert.equal(1, status, err)
    assert.matches("cannot read", err)
    assert.equal(2, (check()))
    assert.equal(2, (check("config")))
    assert.equal(2, (check("rules", "x.yml")))
    local s, out = check("--help")
    assert.equal(0, s)
    assert.matches("usage: promscrape check config", out, 1, true)
  end)
end)
