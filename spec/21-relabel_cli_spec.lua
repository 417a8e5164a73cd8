-- The relabel workbench, run as a user would: bin/promscrape via io.popen.

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p '" .. d .. "'"))
  return d
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- Runs the CLI; returns stdout, stderr, exit status (portable to LuaJIT,
-- whose popen:close() gives no status).
local function run(args, dir)
  local errf = os.tmpname()
  local p = assert(io.popen("bin/promscrape " .. args .. " 2>" .. errf
    .. "; echo \"::rc=$?\""))
  local out = p:read("a")
  p:close()
  local f = io.open(errf)
  local err = f and f:read("a") or ""
  if f then f:close() end
  os.remove(errf)
  local rc = tonumber(out:match("::rc=(%d+)\n?$"))
  out = out:gsub("::rc=%d+\n?$", "")
  return out, err, rc
end

describe("promscrape relabel (CLI)", function()
  local d
  setup(function()
    d = tmpdir()
    write(d .. "/rules.yml", [[
- source_labels: [__meta_scrape]
  regex: "true"
  action: keep
- source_labels: [__address__, __meta_port]
  regex: '([^:]+)(?::\d+)?;(\d+)'
  replacement: $1:$2
  target_label: __address__
- regex: __meta_label_(.+)
  action: labelmap
- regex: __meta_.*
  action: labeldrop
- source_labels: [__address__]
  modulus: 4
  target_label: shard
  action: hashmod
]])
    write(d .. "/sd.json", [[
[{"targets": ["10.0.0.1:8080"],
  "labels": {"__meta_scrape": "true", "__meta_port": "9102",
             "__meta_label_app": "api"}},
 {"targets": ["10.0.0.3:80"], "labels": {"__meta_scrape": "false"}}]
]])
    write(d .. "/sd.yml", [[
- targets: [a:1]
  labels:
    __meta_scrape: "true"
]])
    write(d .. "/prometheus.yml", [[
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: node
    metrics_path: /m
    static_configs:
      - targets: ["host1:9100"]
        labels: {env: prod}
    relabel_configs:
      - source_labels: [__address__]
        regex: '([^:]+):\d+'
        target_label: instance
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: go_.*
        action: drop
  - job_name: other
]])
    write(d .. "/bad.yml", "- action: hashmod\n  target_label: x\n")
    write(d .. "/badre.yml", "- target_label: x\n- regex: '(a'\n  action: keep\n")
  end)
  teardown(function()
    os.execute("rm -rf '" .. d .. "'")
  end)

  it("traces a file_sd JSON file rule by rule with change markers", function()
    local out, err, rc = run("relabel " .. d .. "/rules.yml " .. d .. "/sd.json")
    assert.equal(0, rc, err)
    assert.matches("== label set 1: {__address__=\"10.0.0.1:8080\"", out, 1, true)
    assert.matches('~ __address__="10.0.0.1:8080" -> "10.0.0.1:9102"', out, 1, true)
    assert.matches('+ app="api"', out, 1, true)
    assert.matches('- __meta_port="9102"', out, 1, true)
    -- md5("10.0.0.1:9102") via printf | md5sum, last 8 bytes mod 4
    assert.matches('+ shard="', out, 1, true)
    assert.matches('=> {__address__="10.0.0.1:9102", app="api", shard="', out,
      1, true)
    assert.matches("rule 1  keep source_labels=[__meta_scrape]", out, 1, true)
    assert.matches('x dropped: keep: regex "true" does not match "false"', out,
      1, true)
    assert.matches("(not run)", out, 1, true)
    assert.matches("=> dropped by rule 1", out, 1, true)
    assert.is_nil(out:find("\27[", 1, true)) -- not a tty: no colours
  end)

  it("reads file_sd YAML and --labels, and --quiet prints finals", function()
    local out, _, rc = run("relabel -q " .. d .. "/rules.yml " .. d .. "/sd.yml"
      .. " --labels '__meta_scrape=\"false\"'")
    assert.equal(0, rc)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(2, #lines)
    assert.equal("dropped by rule 1", lines[1]) -- --labels sets come first
    assert.matches('^{__address__="a:1", shard="%d"}$', lines[2])
  end)

  it("parses quoted, escaped and braced --labels", function()
    local out, _, rc = run("relabel -q " .. d .. "/bad.yml --labels x", nil)
    assert.equal(2, rc)
    local cli = require("promscrape.cli.relabel")
    assert.same({ a = "b", c = 'd"e', f = "g,h" },
      cli.parse_labels([[{a="b", c="d\"e", f="g,h"}]]))
    assert.same({ a = "b", c = "d" }, cli.parse_labels("a=b,c=d"))
    assert.is_nil((cli.parse_labels('a="b')))
  end)

  it("uses a prometheus.yml job: static_configs and job labels", function()
    local out, err, rc = run("relabel " .. d .. "/prometheus.yml --job node")
    assert.equal(0, rc, err)
    assert.matches('job="node"', out, 1, true)
    assert.matches('__metrics_path__="/m"', out, 1, true)
    assert.matches('__scrape_interval__="15s"', out, 1, true)
    assert.matches('+ instance="host1"', out, 1, true)
  end)

  it("--metric picks metric_relabel_configs", function()
    local out, _, rc = run("relabel " .. d .. "/prometheus.yml --job node --metric "
      .. "--labels '__name__=\"go_goroutines\"' -q")
    assert.equal(0, rc)
    assert.equal("dropped by rule 1\n", out)
  end)

  it("a prometheus.yml without --job is an error listing the jobs", function()
    local _, err, rc = run("relabel " .. d .. "/prometheus.yml")
    assert.equal(2, rc)
    assert.matches("needs --job NAME (jobs: node, other)", err, 1, true)
    _, err, rc = run("relabel " .. d .. "/prometheus.yml --job nope")
    assert.equal(2, rc)
    assert.matches("no job named 'nope'", err, 1, true)
  end)

  it("rule errors name the file and rule, status 2", function()
    local out, err, rc = run("relabel " .. d .. "/bad.yml --labels 'a=\"b\"'")
    assert.equal(2, rc)
    assert.equal("", out)
    assert.equal("promscrape relabel: " .. d .. "/bad.yml: rule 1: modulus: "
      .. "action hashmod requires a non-zero modulus\n", err)
    _, err, rc = run("relabel " .. d .. "/badre.yml --labels 'a=\"b\"'")
    assert.equal(2, rc)
    assert.matches("badre.yml: rule 2: regex: ", err, 1, true)
  end)

  it("--legacy applies the legacy name check", function()
    write(d .. "/utf8.yml", "- target_label: a.b\n  replacement: x\n")
    local out, _, rc = run("relabel " .. d .. "/utf8.yml --labels 'a=\"b\"' -q")
    assert.equal(0, rc)
    assert.equal('{a="b", a.b="x"}\n', out)
    local _, err
    _, err, rc = run("relabel " .. d .. "/utf8.yml --legacy --labels 'a=\"b\"'")
    assert.equal(2, rc)
    assert.matches('"a.b" is invalid for action replace', err, 1, true)
  end)

  it("--color forces ANSI colours", function()
    local out, _, rc = run("relabel --color " .. d .. "/rules.yml " .. d .. "/sd.json")
    assert.equal(0, rc)
    assert.matches("\27[32m+ app=", out, 1, true)
    assert.matches("\27[31m- __meta_port", out, 1, true)
  end)

  it("usage errors exit 2", function()
    local _, err, rc = run("relabel")
    assert.equal(2, rc)
    assert.matches("usage: promscrape relabel", err, 1, true)
    _, err, rc = run("relabel --bogus x")
    assert.equal(2, rc)
    _, err, rc = run("relabel " .. d .. "/missing.yml --labels a=b")
    assert.equal(2, rc)
    assert.matches("missing.yml", err, 1, true)
    _, _, rc = run("relabel " .. d .. "/rules.yml")
    assert.equal(2, rc)
    local out
    out, _, rc = run("relabel --help")
    assert.equal(0, rc)
    assert.matches("usage: promscrape relabel", out, 1, true)
  end)

  it("unknown commands print usage with status 2", function()
    local _, err, rc = run("frobnicate")
    assert.equal(2, rc)
    assert.matches("unknown command 'frobnicate'", err, 1, true)
    assert.matches("relabel", err, 1, true)
    _, err, rc = run("")
    assert.equal(2, rc)
  end)
end)
