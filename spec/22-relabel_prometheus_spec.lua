-- Differential test against a real Prometheus: the same rules and label sets
-- go through `prometheus` (file_sd + relabel_configs, read back from
-- /api/v1/targets) and through promscrape.relabel, and the results must be
-- identical. Pending when no `prometheus` binary (Debian package
-- `prometheus`) or no `curl` is installed. Prometheus listens on loopback
-- only and is stopped by its pid.
--
-- Rules and values avoid what differs between Prometheus 2.x and 3.x (dot
-- matching newlines, UTF-8 names); with 2.x the legacy name scheme is used.

local ok_ps, ps = pcall(require, "promscrape")
if not ok_ps or type(ps) ~= "table" or not ps.relabel_rules then
  ps = require("promscrape.relabel")
end
local cjson_ok, cjson = pcall(require, "cjson")

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

local function have(bin)
  return sh("command -v " .. bin .. " 2>/dev/null") ~= ""
end

local VALUES = { "foo", "bar", "Foo-Bar_1", "ÄÖÜ straße ǅ ſ", "a;b", "",
  "10.0.0.1", "x y", "$1", "prod", "ıİ", "k8s-node-7", "ΣΑΣ", "123" }
local NAMES = { "a", "b", "c", "env", "__meta_x_app", "__meta_x_team",
  "__meta_y", "zone" }

local JOBS = {
  j_replace = {
    { source_labels = { "a", "b" }, regex = "(.*);(.*)", target_label = "ab",
      replacement = "${2}x$1" },
    { source_labels = { "a" }, regex = "(f)(o+)", target_label = "t1",
      replacement = "$1x-$2-$$-${1}" },
    { source_labels = { "nope", "c" }, target_label = "t2" },
    { source_labels = { "b" }, regex = "(?P<w>[a-z]+)",
      target_label = "w_${w}", replacement = "[$w]" },
    { source_labels = { "c" }, regex = "(.*)", target_label = "$1",
      replacement = "v" },
    { source_labels = { "env" }, regex = "p(.*)", target_label = "env",
      replacement = "$2" },
    { source_labels = { "zone" }, regex = "(?i)FOO|bar",
      target_label = "zmatch", replacement = "yes" },
  },
  j_hash = {
    { source_labels = { "a" }, modulus = 7, target_label = "h7",
      action = "hashmod" },
    { source_labels = { "a", "b", "__address__" }, modulus = 1000003,
      target_label = "hbig", action = "hashmod" },
    { source_labels = { "zone" }, separator = "", modulus = 2,
      target_label = "h2", action = "hashmod" },
  },
  j_map = {
    { regex = "__meta_x_(.+)", action = "labelmap" },
    { regex = "__meta_(.)_(.*)", replacement = "m_${1}_$2",
      action = "labelmap" },
    { regex = "b|c", action = "labeldrop" },
  },
  j_keepl = { { regex = "__.*|a|env", action = "labelkeep" } },
  j_case = {
    { source_labels = { "a" }, target_label = "lo", action = "lowercase" },
    { source_labels = { "b", "c" }, target_label = "up",
      action = "uppercase" },
  },
  j_dropeq = { { source_labels = { "a" }, target_label = "b",
    action = "dropequal" } },
  j_keepeq = { { source_labels = { "a" }, target_label = "c",
    action = "keepequal" } },
  j_keep = {
    { source_labels = { "env" }, regex = "prod|", action = "keep" },
    { source_labels = { "a" }, regex = "f.*", action = "Drop" },
  },
}

local function fmt(t)
  if not t then return "nil" end
  local k = {}
  for n, v in pairs(t) do k[#k + 1] = n .. "=" .. v end
  table.sort(k)
  return "{" .. table.concat(k, ",") .. "}"
end

describe("relabel against a real Prometheus #slow", function()
  it("agrees on every target of every job", function()
    if not (have("prometheus") and have("curl") and cjson_ok) then
      pending("needs prometheus, curl and lua-cjson")
      return
    end
    local major = tonumber(sh("prometheus --version 2>&1")
      :match("version (%d+)%.") or "3")
    local opts = major < 3 and { metric_name_validation_scheme = "legacy" }
      or nil

    -- Deterministic label sets (a tiny LCG, same on every Lua).
    local seed = 7
    local function rnd(n)
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n
    end
    local groups, by_addr = {}, {}
    for i = 1, 60 do
      local labels = {}
      for _, n in ipairs(NAMES) do
        if rnd(10) < 6 then
          local v = VALUES[rnd(#VALUES) + 1]
          if v ~= "" then labels[n] = v end
        end
      end
      local addr = "t" .. i .. ":80"
      groups[i] = { targets = { addr }, labels = labels }
      by_addr[addr] = labels
    end

    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'"))
    local function write(p, s)
      local f = assert(io.open(p, "w"))
      -- cjson writes "\/", which YAML 1.1 (yaml.v2) does not accept; the
      -- data holds no backslashes, so undoing it is safe.
      f:write((s:gsub("\\/", "/")))
      f:close()
    end
    write(dir .. "/sd.json", cjson.encode(groups))
    local scs = {}
    for job, rules in pairs(JOBS) do
      scs[#scs + 1] = { job_name = job, relabel_configs = rules,
        file_sd_configs = { { files = { dir .. "/sd.json" } } } }
    end
    -- JSON is YAML: Prometheus reads this as its config file.
    write(dir .. "/prometheus.yml", cjson.encode({
      global = { scrape_interval = "10m", scrape_timeout = "10s" },
      scrape_configs = scs }))

    local port = 19000 + os.time() % 900
    local pid = tonumber(sh("prometheus --config.file='" .. dir
      .. "/prometheus.yml' --storage.tsdb.path='" .. dir .. "/data' "
      .. "--web.listen-address=127.0.0.1:" .. port .. " >'" .. dir
      .. "/prom.log' 2>&1 & echo $!"))
    local njobs = 0
    for _ in pairs(JOBS) do njobs = njobs + 1 end
    local data
    for _ = 1, 60 do
      os.execute("sleep 0.5")
      local body = sh("curl -s 'http://127.0.0.1:" .. port
        .. "/api/v1/targets?state=any'")
      local okj, doc = pcall(cjson.decode, body)
      if okj and type(doc) == "table" and doc.data
         and #doc.data.activeTargets + #doc.data.droppedTargets
             == njobs * #groups then
        data = doc.data
        break
      end
    end
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    os.execute("sleep 0.2; rm -rf '" .. dir .. "'")
    assert.truthy(data, "prometheus did not report all targets in time")

    local compiled = {}
    for job, rules in pairs(JOBS) do
      compiled[job] = assert(ps.relabel_rules(rules, opts))
    end
    local agree, diffs = 0, {}
    local function check(dl, want, pool)
      -- Rebuild the input: Prometheus 2.x may rewrite discoveredLabels in
      -- place while relabeling (relabel.Process reuses the slice).
      local job = pool or dl.job
      local input = { __address__ = dl.__address__, job = job,
        __metrics_path__ = "/metrics", __scheme__ = "http",
        __scrape_interval__ = "10m", __scrape_timeout__ = "10s",
        __meta_filepath = dir .. "/sd.json" }
      for k, v in pairs(by_addr[dl.__address__]) do input[k] = v end
      local got = compiled[job]:apply(input)
      if got then -- what the targets API shows: no "__" labels, instance
        local pub = {}
        for k, v in pairs(got) do
          if k:sub(1, 2) ~= "__" then pub[k] = v end
        end
        pub.instance = pub.instance or got.__address__
        got = pub
      end
      if fmt(got) == fmt(want) then
        agree = agree + 1
      else
        diffs[#diffs + 1] = job .. " " .. fmt(input) .. "\n  prometheus "
          .. fmt(want) .. "\n  promscrape " .. fmt(got)
      end
    end
    for _, t in ipairs(data.activeTargets) do
      check(t.discoveredLabels, t.labels, t.scrapePool)
    end
    for _, t in ipairs(data.droppedTargets) do
      check(t.discoveredLabels, nil)
    end
    assert.equal("", table.concat(diffs, "\n"))
    assert.equal(njobs * #groups, agree)
  end)
end)
