-- promscrape.config: prometheus.yml loading, defaults and validation.
-- Pure Lua (lyaml + lfs); runs under Lua 5.4 and LuaJIT. Relabel rules are
-- checked structurally unless stated: `relabel_compiler = false`.

local config = require("promscrape.config")
local lfs = require("lfs")

local NOENGINE = { relabel_compiler = false }

local function parse(text, opts)
  return config.parse(text, "prometheus.yml", opts or NOENGINE)
end

local function ok_parse(text, opts)
  local cfg, err = parse(text, opts)
  assert(cfg, err)
  return cfg
end

local function err_of(text, opts)
  local cfg, err = parse(text, opts)
  assert.is_nil(cfg, "expected an error for:\n" .. text)
  assert.is_string(err)
  return err
end

local function contains(list, s)
  for _, v in ipairs(list) do
    if v == s then return true end
  end
  return false
end

local function job(extra)
  return "scrape_configs:\n  - job_name: j\n" .. (extra or "")
end

-- Temporary directory tree, removed by rm_tree.
local function tmpdir()
  local base = os.tmpname()
  os.remove(base)
  assert(lfs.mkdir(base))
  return base
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function rm_tree(path)
  if lfs.symlinkattributes(path, "mode") == "directory" then
    for name in lfs.dir(path) do
      if name ~= "." and name ~= ".." then rm_tree(path .. "/" .. name) end
    end
    lfs.rmdir(path)
  else
    os.remove(path)
  end
end

describe("promscrape.config", function()
  describe("durations", function()
    local good = {
      { "0", 0 }, { "0s", 0 }, { "1ms", 1 }, { "500ms", 500 }, { "10s", 10000 },
      { "1m", 60000 }, { "1h30m", 5400000 }, { "1d", 86400000 },
      { "2w", 1209600000 }, { "1y", 31536000000 }, { "1h0m5s", 3605000 },
      { "1y2w3d4h5m6s7ms", 31536000000 + 1209600000 + 259200000 + 14400000 + 300000 + 6000 + 7 },
    }
    for _, c in ipairs(good) do
      it("parses " .. c[1], function()
        assert.equal(c[2], config.parse_duration(c[1]))
      end)
    end
    local bad = { "", "10", "1.5s", "-1s", "1 m", "1M", "1m1h", "1s1s", "s", "1x", "1h 30m" }
    for _, s in ipairs(bad) do
      it("rejects " .. string.format("%q", s), function()
        local v, err = config.parse_duration(s)
        assert.is_nil(v)
        assert.is_string(err)
      end)
    end
    it("names the bad string like Prometheus", function()
      assert.same({ nil, 'not a valid duration string: "1.5s"' }, { config.parse_duration("1.5s") })
      assert.same({ nil, "empty duration string" }, { config.parse_duration("") })
      assert.same({ nil, "duration out of range" }, { config.parse_duration("300y") })
    end)
    local fmts = {
      { 0, "0s" }, { 1, "1ms" }, { 500, "500ms" }, { 60000, "1m" }, { 90000, "1m30s" },
      { 5400000, "1h30m" }, { 86400000 * 8, "1w1d" }, { 31536000000, "1y" }, { 1500, "1s500ms" },
    }
    for _, c in ipairs(fmts) do
      it("formats " .. c[1] .. "ms as " .. c[2], function()
        assert.equal(c[2], config.format_duration(c[1]))
      end)
    end
    it("normalizes and converts to seconds", function()
      assert.equal("1m", config.normalize_duration("60s"))
      assert.equal("2h", config.normalize_duration("120m"))
      assert.equal("1d", config.normalize_duration("24h"))
      assert.equal(90, config.duration_seconds("1m30s"))
      assert.equal(0.5, config.duration_seconds("500ms"))
      assert.equal(0, config.duration_seconds("0"))
      local v, err = config.duration_seconds("1.5s")
      assert.is_nil(v)
      assert.matches("not a valid duration", err)
    end)
    it("returns durations normalized in the config", function()
      local cfg = ok_parse("global:\n  scrape_interval: 60s\n  scrape_timeout: 10000ms\n")
      assert.equal("1m", cfg.global.scrape_interval)
      assert.equal("10s", cfg.global.scrape_timeout)
    end)
  end)

  describe("byte sizes (units.Base2Bytes)", function()
    local good = {
      { "0", 0 }, { "512B", 512 }, { "1KB", 1024 }, { "1KiB", 1024 }, { "10MB", 10485760 },
      { "10MiB", 10485760 }, { "1GB", 1073741824 }, { "1GiB", 1073741824 },
      { "2TiB", 2199023255552 }, { "1.5KiB", 1536 }, { "1MB512KB", 1572864 },
    }
    for _, c in ipairs(good) do
      it("parses " .. c[1], function()
        assert.equal(c[2], config.parse_bytes(c[1]))
      end)
    end
    it("rejects SI kB, bare numbers as strings and junk", function()
      assert.same({ nil, "units: unknown unit kB in 1kB" }, { config.parse_bytes("1kB") })
      assert.same({ nil, "units: unknown unit  in 10" }, { config.parse_bytes("10") })
      assert.is_nil((config.parse_bytes("MB")))
      assert.is_nil((config.parse_bytes("")))
    end)
    it("body_size_limit defaults to 64 MiB; an explicit 0 means no limit", function()
      local cfg = ok_parse(job())
      assert.equal(67108864, cfg.global.body_size_limit)
      assert.equal(67108864, cfg.scrape_configs[1].body_size_limit)
      cfg = ok_parse("global:\n  body_size_limit: 0\n" .. job())
      assert.equal(0, cfg.scrape_configs[1].body_size_limit)
      cfg = ok_parse("global:\n  body_size_limit: 0\n" .. job("    body_size_limit: 1GiB\n"))
      assert.equal(1073741824, cfg.scrape_configs[1].body_size_limit)
    end)
    it("body_size_limit takes units or a plain integer, as bytes", function()
      local cfg = ok_parse("global:\n  body_size_limit: 10MB\n" .. job("    body_size_limit: 1024\n"))
      assert.equal(10485760, cfg.global.body_size_limit)
      assert.equal(1024, cfg.scrape_configs[1].body_size_limit)
      cfg = ok_parse("global:\n  body_size_limit: 1GiB\n" .. job())
      assert.equal(1073741824, cfg.scrape_configs[1].body_size_limit)
    end)
    it("names the field on a bad size", function()
      assert.equal("prometheus.yml: scrape_configs[0].body_size_limit: units: unknown unit kB in 10kB",
        err_of(job("    body_size_limit: 10kB\n")))
    end)
  end)

  describe("glob matching (Go filepath.Match)", function()
    local fs = require("promscrape.config.fs")
    local cases = {
      { "*.yml", "a.yml", true }, { "*.yml", "a.yaml", false }, { "*", ".hidden", true },
      { "a?c", "abc", true }, { "a?c", "ac", false }, { "[a-c]x", "bx", true },
      { "[^a-c]x", "bx", false }, { "[!a]", "!", true }, { "\\*", "*", true }, { "\\*", "a", false },
      { "job_[0-9][0-9].yml", "job_07.yml", true }, { "*b*", "abc", true }, { "a*", "a/b", false },
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " vs " .. c[2], function()
        assert.equal(c[3], fs.match(c[1], c[2]))
      end)
    end
    it("bad patterns", function()
      assert.same({ nil, "syntax error in pattern" }, { fs.match("[a", "a") })
      assert.same({ nil, "syntax error in pattern" }, { fs.glob("x/[") })
      assert.same({ nil, "syntax error in pattern" }, { fs.glob("x\\") })
    end)
    it("join_dir and clean", function()
      assert.equal("/etc/p/a.pem", fs.join_dir("/etc/p", "a.pem"))
      assert.equal("/abs", fs.join_dir("/etc/p", "/abs"))
      assert.equal("", fs.join_dir("/etc/p", ""))
      assert.equal("/etc/x", fs.join_dir("/etc/p", "../x"))
      assert.equal("a", fs.join_dir(".", "./a"))
      assert.equal("../b", fs.clean("a/../../b"))
    end)
  end)

  describe("defaults", function()
    it("an empty file is the default config", function()
      for _, text in ipairs { "", "# only a comment\n", "---\n", "~\n" } do
        local cfg = ok_parse(text)
        assert.same({}, cfg.scrape_configs)
        assert.same({}, cfg.remote_write)
        assert.same({}, cfg.scrape_config_files)
        assert.same({}, cfg.warnings)
        assert.equal("1m", cfg.global.scrape_interval)
      end
    end)
    it("global", function()
      local g = ok_parse("").global
      assert.same({
        scrape_interval = "1m", scrape_timeout = "10s", evaluation_interval = "1m",
        rule_query_offset = "0s", external_labels = {}, body_size_limit = 64 * 1024 * 1024,
        sample_limit = 0, target_limit = 0, label_limit = 0, label_name_length_limit = 0,
        label_value_length_limit = 0, keep_dropped_targets = 0,
        metric_name_validation_scheme = "utf8", metric_name_escaping_scheme = "allow-utf-8",
        scrape_native_histograms = false, convert_classic_histograms_to_nhcb = false,
        always_scrape_classic_histograms = false, extra_scrape_metrics = false,
      }, g)
    end)
    it("scrape_config", function()
      local sc = ok_parse(job()).scrape_configs[1]
      assert.same({
        job_name = "j", honor_labels = false, honor_timestamps = true,
        track_timestamps_staleness = false, params = {}, scrape_interval = "1m",
        scrape_timeout = "10s",
        scrape_protocols = { "OpenMetricsText1.0.0", "OpenMetricsText0.0.1",
          "PrometheusText1.0.0", "PrometheusText0.0.4" },
        scrape_native_histograms = false, always_scrape_classic_histograms = false,
        convert_classic_histograms_to_nhcb = false, extra_scrape_metrics = false,
        metrics_path = "/metrics", scheme = "http", enable_compression = true,
        body_size_limit = 64 * 1024 * 1024, sample_limit = 0, target_limit = 0, label_limit = 0,
        label_name_length_limit = 0, label_value_length_limit = 0,
        native_histogram_bucket_limit = 0, native_histogram_min_bucket_factor = 0,
        keep_dropped_targets = 0, metric_name_validation_scheme = "utf8",
        metric_name_escaping_scheme = "allow-utf-8", relabel_configs = {},
        metric_relabel_configs = {}, static_configs = {}, file_sd_configs = {},
        http_sd_configs = {}, tls_config = { insecure_skip_verify = false },
        follow_redirects = true, enable_http2 = true, proxy_from_environment = false,
      }, sc)
    end)
    it("relabel rule", function()
      local r = ok_parse(job("    relabel_configs:\n      - target_label: x\n")).scrape_configs[1].relabel_configs[1]
      assert.same({ source_labels = {}, separator = ";", regex = "(.*)", modulus = 0,
        target_label = "x", replacement = "$1", action = "replace" }, r)
    end)
    it("actions are case-insensitive and come back lower case", function()
      local r = ok_parse(job("    relabel_configs:\n      - {source_labels: [a], regex: x, action: DROP}\n"))
        .scrape_configs[1].relabel_configs[1]
      assert.equal("drop", r.action)
    end)
    it("remote_write", function()
      local rw = ok_parse("remote_write:\n  - url: http://127.0.0.1:9090/api/v1/write\n").remote_write[1]
      assert.same({
        url = "http://127.0.0.1:9090/api/v1/write", remote_timeout = "30s", headers = {},
        write_relabel_configs = {}, send_exemplars = false, send_native_histograms = false,
        round_robin_dns = false, protobuf_message = "prometheus.WriteRequest",
        queue_config = { capacity = 10000, max_shards = 50, min_shards = 1,
          max_samples_per_send = 2000, batch_send_deadline = "5s", min_backoff = "30ms",
          max_backoff = "5s", retry_on_http_429 = false, sample_age_limit = "0s" },
        metadata_config = { send = true, send_interval = "1m", max_samples_per_send = 2000 },
        tls_config = { insecure_skip_verify = false }, follow_redirects = true,
        enable_http2 = false, proxy_from_environment = false,
      }, rw)
    end)
    it("file_sd_configs and http_sd_configs", function()
      local sc = ok_parse(job("    file_sd_configs:\n      - files: [targets/*.json]\n" ..
        "    http_sd_configs:\n      - url: http://sd.example:8080/targets\n")).scrape_configs[1]
      assert.same({ files = { "targets/*.json" }, refresh_interval = "5m" }, sc.file_sd_configs[1])
      local h = sc.http_sd_configs[1]
      assert.equal("1m", h.refresh_interval)
      assert.is_true(h.follow_redirects)
      assert.is_true(h.enable_http2)
      assert.same({ insecure_skip_verify = false }, h.tls_config)
    end)
    it("static_configs", function()
      local sc = ok_parse(job("    static_configs:\n      - targets: [a:1, b:2]\n        labels: {env: x}\n      - labels: {only: labels}\n")).scrape_configs[1]
      assert.same({ { targets = { "a:1", "b:2" }, labels = { env = "x" } },
        { targets = {}, labels = { only = "labels" } } }, sc.static_configs)
    end)
    it("params are lists of values", function()
      local sc = ok_parse(job("    params:\n      module: [http_2xx]\n      target: [a, b]\n")).scrape_configs[1]
      assert.same({ module = { "http_2xx" }, target = { "a", "b" } }, sc.params)
    end)
  end)

  describe("global settings applied to jobs", function()
    it("timeout is min(global timeout, interval) when unset", function()
      local cfg = ok_parse("global:\n  scrape_interval: 5s\n")
      assert.equal("5s", cfg.global.scrape_timeout)
      cfg = ok_parse(job("    scrape_interval: 5s\n"))
      assert.equal("5s", cfg.scrape_configs[1].scrape_timeout)
      cfg = ok_parse("global:\n  scrape_interval: 1m\n  scrape_timeout: 20s\n" .. job("    scrape_interval: 15s\n"))
      assert.equal("15s", cfg.scrape_configs[1].scrape_interval)
      assert.equal("15s", cfg.scrape_configs[1].scrape_timeout)
      cfg = ok_parse("global:\n  scrape_interval: 1m\n  scrape_timeout: 20s\n" .. job("    scrape_interval: 30s\n"))
      assert.equal("20s", cfg.scrape_configs[1].scrape_timeout)
    end)
    it("a job inherits interval and timeout", function()
      local sc = ok_parse("global:\n  scrape_interval: 30s\n  scrape_timeout: 25s\n" .. job()).scrape_configs[1]
      assert.equal("30s", sc.scrape_interval)
      assert.equal("25s", sc.scrape_timeout)
    end)
    it("timeout equal to the interval is fine", function()
      local sc = ok_parse(job("    scrape_interval: 10s\n    scrape_timeout: 10s\n")).scrape_configs[1]
      assert.equal("10s", sc.scrape_timeout)
    end)
    it("a zero interval means the default", function()
      local cfg = ok_parse("global:\n  scrape_interval: 0s\n" .. job("    scrape_interval: 0\n"))
      assert.equal("1m", cfg.global.scrape_interval)
      assert.equal("1m", cfg.scrape_configs[1].scrape_interval)
    end)
    it("limits: 0 or unset takes the global value", function()
      local cfg = ok_parse("global:\n  sample_limit: 100\n  label_limit: 30\n  target_limit: 5\n" ..
        "  label_name_length_limit: 64\n  label_value_length_limit: 256\n  keep_dropped_targets: 9\n" ..
        "scrape_configs:\n  - job_name: a\n  - job_name: b\n    sample_limit: 50\n    label_limit: 0\n")
      local a, b = cfg.scrape_configs[1], cfg.scrape_configs[2]
      assert.equal(100, a.sample_limit)
      assert.equal(30, a.label_limit)
      assert.equal(5, a.target_limit)
      assert.equal(64, a.label_name_length_limit)
      assert.equal(256, a.label_value_length_limit)
      assert.equal(9, a.keep_dropped_targets)
      assert.equal(50, b.sample_limit)
      assert.equal(30, b.label_limit)
    end)
    it("scrape_protocols: global, native histograms, local", function()
      local cfg = ok_parse("global:\n  scrape_protocols: [PrometheusText0.0.4]\n" .. job())
      assert.same({ "PrometheusText0.0.4" }, cfg.scrape_configs[1].scrape_protocols)
      cfg = ok_parse(job("    scrape_native_histograms: true\n"))
      assert.same(config.DEFAULT_PROTO_FIRST_SCRAPE_PROTOCOLS, cfg.scrape_configs[1].scrape_protocols)
      cfg = ok_parse("global:\n  scrape_native_histograms: true\n" .. job())
      assert.is_true(cfg.scrape_configs[1].scrape_native_histograms)
      assert.equal("PrometheusProto", cfg.scrape_configs[1].scrape_protocols[1])
      cfg = ok_parse(job("    scrape_protocols: [PrometheusProto, PrometheusText1.0.0]\n" ..
        "    fallback_scrape_protocol: PrometheusText0.0.4\n"))
      assert.same({ "PrometheusProto", "PrometheusText1.0.0" }, cfg.scrape_configs[1].scrape_protocols)
      assert.equal("PrometheusText0.0.4", cfg.scrape_configs[1].fallback_scrape_protocol)
    end)
    it("histogram and extra-metrics switches inherit", function()
      local sc = ok_parse("global:\n  always_scrape_classic_histograms: true\n" ..
        "  convert_classic_histograms_to_nhcb: true\n  extra_scrape_metrics: true\n" ..
        job("    extra_scrape_metrics: false\n")).scrape_configs[1]
      assert.is_true(sc.always_scrape_classic_histograms)
      assert.is_true(sc.convert_classic_histograms_to_nhcb)
      assert.is_false(sc.extra_scrape_metrics)
    end)
    it("scrape_classic_histograms (2.x name) is read as always_scrape_classic_histograms", function()
      local cfg = ok_parse(job("    scrape_classic_histograms: true\n"))
      local sc = cfg.scrape_configs[1]
      assert.is_true(sc.always_scrape_classic_histograms)
      assert.is_nil(sc.scrape_classic_histograms)
      assert.truthy(cfg.warnings[1]:find("scrape_configs[0].scrape_classic_histograms", 1, true))
    end)
    it("name validation and escaping schemes", function()
      local cfg = ok_parse("global:\n  metric_name_validation_scheme: legacy\n" .. job())
      assert.equal("underscores", cfg.global.metric_name_escaping_scheme)
      assert.equal("legacy", cfg.scrape_configs[1].metric_name_validation_scheme)
      assert.equal("underscores", cfg.scrape_configs[1].metric_name_escaping_scheme)
      cfg = ok_parse(job("    metric_name_validation_scheme: legacy\n"))
      assert.equal("underscores", cfg.scrape_configs[1].metric_name_escaping_scheme)
      cfg = ok_parse(job("    metric_name_escaping_scheme: dots\n"))
      assert.equal("dots", cfg.scrape_configs[1].metric_name_escaping_scheme)
      cfg = ok_parse("global:\n  metric_name_escaping_scheme: values\n" .. job())
      assert.equal("values", cfg.scrape_configs[1].metric_name_escaping_scheme)
    end)
    it("bearer_token and bearer_token_file become authorization", function()
      local sc = ok_parse(job("    bearer_token: s3cr3t\n")).scrape_configs[1]
      assert.same({ type = "Bearer", credentials = "s3cr3t" }, sc.authorization)
      assert.is_nil(sc.bearer_token)
      sc = ok_parse(job("    bearer_token_file: /etc/token\n")).scrape_configs[1]
      assert.same({ type = "Bearer", credentials_file = "/etc/token" }, sc.authorization)
    end)
    it("authorization type defaults to Bearer and is trimmed", function()
      local sc = ok_parse(job("    authorization:\n      credentials: x\n")).scrape_configs[1]
      assert.equal("Bearer", sc.authorization.type)
      sc = ok_parse(job("    authorization:\n      type: ' Token '\n      credentials: x\n")).scrape_configs[1]
      assert.equal("Token", sc.authorization.type)
    end)
    it("HTTP client fields are kept", function()
      local sc = ok_parse(job([[
    scheme: https
    basic_auth: {username: u, password_file: /etc/pw}
    tls_config: {ca_file: /etc/ca.pem, cert_file: c.pem, key_file: k.pem, server_name: s,
                 insecure_skip_verify: true, min_version: TLS12, max_version: TLS13}
    proxy_url: http://proxy:3128
    no_proxy: localhost,127.0.0.1
    proxy_connect_header: {X-Who: [me]}
    follow_redirects: false
    enable_http2: false
    http_headers:
      X-Tenant: {values: [a, b]}
]])).scrape_configs[1]
      assert.same({ username = "u", password_file = "/etc/pw" }, sc.basic_auth)
      assert.same({ ca_file = "/etc/ca.pem", cert_file = "c.pem", key_file = "k.pem", server_name = "s",
        insecure_skip_verify = true, min_version = "TLS12", max_version = "TLS13" }, sc.tls_config)
      assert.equal("http://proxy:3128", sc.proxy_url)
      assert.equal("localhost,127.0.0.1", sc.no_proxy)
      assert.same({ ["X-Who"] = { "me" } }, sc.proxy_connect_header)
      assert.is_false(sc.follow_redirects)
      assert.is_false(sc.enable_http2)
      assert.same({ ["X-Tenant"] = { values = { "a", "b" } } }, sc.http_headers)
    end)
    it("external labels expand the environment", function()
      local home = os.getenv("HOME") or ""
      local cfg = ok_parse("global:\n  external_labels:\n    a: '${HOME}'\n    b: 'x-$HOME'\n" ..
        "    c: '$$HOME'\n    d: '${PROMSCRAPE_SURELY_UNSET_VAR}'\n")
      assert.equal(home, cfg.global.external_labels.a)
      assert.equal("x-" .. home, cfg.global.external_labels.b)
      assert.equal("$HOME", cfg.global.external_labels.c)
      assert.equal("", cfg.global.external_labels.d)
      assert.equal('global.external_labels.d: environment variable "PROMSCRAPE_SURELY_UNSET_VAR" is empty',
        cfg.warnings[1])
    end)
  end)

  describe("YAML handling", function()
    it("null (~, null, empty) means unset", function()
      local cfg = ok_parse("global: ~\nscrape_configs: null\nremote_write:\n")
      assert.equal("1m", cfg.global.scrape_interval)
      assert.same({}, cfg.scrape_configs)
      cfg = ok_parse("global:\n  scrape_interval: ~\n  scrape_timeout: null\n" ..
        job("    metrics_path:\n    honor_timestamps: ~\n    static_configs:\n    relabel_configs: ~\n"))
      local sc = cfg.scrape_configs[1]
      assert.equal("/metrics", sc.metrics_path)
      assert.is_true(sc.honor_timestamps)
      assert.same({}, sc.static_configs)
      assert.same({}, sc.relabel_configs)
    end)
    it("a null label value is the empty string", function()
      local sc = ok_parse(job("    static_configs:\n      - targets: [a:1]\n        labels: {x: ~}\n")).scrape_configs[1]
      assert.equal("", sc.static_configs[1].labels.x)
    end)
    it("a null list element is an error", function()
      assert.equal("prometheus.yml: scrape_configs[1]: empty or null scrape config section",
        err_of("scrape_configs:\n  - job_name: a\n  - ~\n"))
      assert.equal("prometheus.yml: scrape_configs[0].relabel_configs[0]: empty or null target relabeling rule in scrape config",
        err_of(job("    relabel_configs:\n      - ~\n")))
      assert.equal("prometheus.yml: remote_write[0]: empty or null remote write config section",
        err_of("remote_write:\n  -\n"))
    end)
    it("unsupported sections keep nulls as config.null", function()
      local sc = ok_parse(job("    consul_sd_configs:\n      - server: ~\n")).scrape_configs[1]
      assert.equal(config.null, sc.consul_sd_configs[1].server)
    end)
    it("scalars read as strings keep their text (yaml.v2)", function()
      local cfg = ok_parse("scrape_configs:\n  - job_name: 123\n    static_configs:\n" ..
        "      - targets: [a:1]\n        labels: {version: 1.10, flag: yes, n: 0x10}\n")
      local sc = cfg.scrape_configs[1]
      assert.equal("123", sc.job_name)
      assert.same({ version = "1.10", flag = "yes", n = "0x10" }, sc.static_configs[1].labels)
    end)
    it("YAML 1.1 booleans; a quoted boolean is a string", function()
      local sc = ok_parse(job("    honor_labels: yes\n    honor_timestamps: off\n")).scrape_configs[1]
      assert.is_true(sc.honor_labels)
      assert.is_false(sc.honor_timestamps)
      assert.equal('prometheus.yml: scrape_configs[0].honor_labels: expected a boolean (true or false), got "true"',
        err_of(job("    honor_labels: 'true'\n")))
    end)
    it("anchors, aliases and merge keys", function()
      local cfg = ok_parse([[
scrape_configs:
  - &common
    job_name: base
    scrape_interval: 30s
    metrics_path: /m
  - <<: *common
    job_name: derived
    metrics_path: /other
]])
      local a, b = cfg.scrape_configs[1], cfg.scrape_configs[2]
      assert.equal("30s", a.scrape_interval)
      assert.equal("derived", b.job_name)
      assert.equal("30s", b.scrape_interval)
      assert.equal("/other", b.metrics_path)
    end)
    it("duplicate keys are an error, as in yaml.v2", function()
      assert.equal('prometheus.yml: yaml: line 3: key "scrape_interval" already set in map (first set at line 2)',
        err_of("global:\n  scrape_interval: 1m\n  scrape_interval: 2m\n"))
    end)
    it("syntax errors name the line", function()
      local err = err_of("scrape_configs:\n  - job_name: [a\n")
      assert.matches("^prometheus%.yml: yaml: line %d+, column %d+: ", err)
    end)
    it("the top level must be a map", function()
      assert.equal("prometheus.yml: expected a map at the top level, got a list", err_of("- a\n"))
      assert.equal('prometheus.yml: expected a map at the top level, got "hello"', err_of("hello\n"))
    end)
    it("non-string input", function()
      local cfg, err = config.parse(42)
      assert.is_nil(cfg)
      assert.equal("config: expected YAML text (a string), got number", err)
    end)
  end)

  describe("validation errors name the file, the field path and the reason", function()
    local cases = {
      -- unknown fields
      { "foo: 1\n", "foo: unknown field (not a field of the top-level config)" },
      { "global:\n  scrape_intervall: 1m\n", "global.scrape_intervall: unknown field (not a field of global)" },
      { job("    scrape_intervall: 1m\n"), "scrape_configs[0].scrape_intervall: unknown field (not a field of scrape_config)" },
      { job("    tls_config: {ca_fil: x}\n"), "scrape_configs[0].tls_config.ca_fil: unknown field (not a field of tls_config)" },
      { job("    relabel_configs:\n      - {target_label: x, regexp: a}\n"),
        "scrape_configs[0].relabel_configs[0].regexp: unknown field (not a field of relabel_config)" },
      { job("    static_configs:\n      - {targets: [a:1], label: {a: b}}\n"),
        "scrape_configs[0].static_configs[0].label: unknown field (not a field of static_config)" },
      { job("    foo_sd_configs: []\n"), "scrape_configs[0].foo_sd_configs: unknown field (not a field of scrape_config)" },
      { "remote_write:\n  - url: http://a/\n    queue_config: {shards: 1}\n",
        "remote_write[0].queue_config.shards: unknown field (not a field of queue_config)" },
      { job("    basic_auth: {username: u, password_ref: p}\n"),
        "scrape_configs[0].basic_auth.password_ref: unknown field (not a field of basic_auth)" },
      -- durations
      { job("    scrape_interval: 15\n"), 'scrape_configs[0].scrape_interval: not a valid duration string: "15"' },
      { job("    scrape_interval: 1.5m\n"), 'scrape_configs[0].scrape_interval: not a valid duration string: "1.5m"' },
      { "global:\n  evaluation_interval: 1x\n", 'global.evaluation_interval: not a valid duration string: "1x"' },
      { job("    file_sd_configs:\n      - {files: [a.json], refresh_interval: soon}\n"),
        'scrape_configs[0].file_sd_configs[0].refresh_interval: not a valid duration string: "soon"' },
      { "remote_write:\n  - url: http://a/\n    queue_config: {min_backoff: 30}\n",
        'remote_write[0].queue_config.min_backoff: not a valid duration string: "30"' },
      -- interval and timeout
      { job("    scrape_interval: 10s\n    scrape_timeout: 20s\n"),
        'scrape_configs[0].scrape_timeout: "20s" is greater than scrape_interval "10s"' },
      { "global:\n  scrape_interval: 10s\n" .. job("    scrape_timeout: 11s\n"),
        'scrape_configs[0].scrape_timeout: "11s" is greater than scrape_interval "10s"' },
      { "global:\n  scrape_interval: 10s\n  scrape_timeout: 20s\n",
        'global.scrape_timeout: "20s" is greater than scrape_interval "10s"' },
      -- jobs
      { "scrape_configs:\n  - job_name: a\n  - job_name: b\n  - job_name: a\n",
        'scrape_configs[2].job_name: found multiple scrape configs with job name "a"' },
      { "scrape_configs:\n  - metrics_path: /m\n", "scrape_configs[0].job_name: job_name is empty" },
      { "scrape_configs:\n  - job_name: ''\n", "scrape_configs[0].job_name: job_name is empty" },
      { job("    scheme: ftp\n"), 'scrape_configs[0].scheme: "ftp" is not a valid scheme, must be "http" or "https"' },
      -- wrong types
      { "scrape_configs:\n  job_name: a\n", "scrape_configs: expected a list, got a map" },
      { "scrape_configs: [a]\n", 'scrape_configs[0]: expected a map (scrape_config), got "a"' },
      { job("    static_configs:\n      - targets: 'a:1'\n"),
        'scrape_configs[0].static_configs[0].targets: expected a list, got "a:1"' },
      { job("    honor_labels: maybe\n"),
        'scrape_configs[0].honor_labels: expected a boolean (true or false), got "maybe"' },
      { job("    sample_limit: -1\n"), 'scrape_configs[0].sample_limit: expected a non-negative integer, got "-1"' },
      { job("    sample_limit: 1.5\n"), 'scrape_configs[0].sample_limit: expected a non-negative integer, got "1.5"' },
      { job("    sample_limit: many\n"), 'scrape_configs[0].sample_limit: expected a non-negative integer, got "many"' },
      { job("    metrics_path: [a]\n"), "scrape_configs[0].metrics_path: expected a string, got a list" },
      { job("    params: {a: b}\n"), 'scrape_configs[0].params.a: expected a list, got "b"' },
      { "global:\n  external_labels: [a]\n", "global.external_labels: expected a map, got a list" },
      { "scrape_config_files: a.yml\n", 'scrape_config_files: expected a list, got "a.yml"' },
      -- labels
      { job("    static_configs:\n      - targets: [a:1]\n        labels: {'': x}\n"),
        'scrape_configs[0].static_configs[0].labels.: "" is not a valid label name' },
      { "global:\n  metric_name_validation_scheme: legacy\n  external_labels: {a-b: x}\n",
        'global.external_labels.a-b: "a-b" is not a valid label name' },
      { "global:\n  external_labels: {'': x}\n", 'global.external_labels.: "" is not a valid label name' },
      { job("    static_configs:\n      - targets: ['http://a:1/metrics']\n"),
        'scrape_configs[0].static_configs[0].targets[0]: "http://a:1/metrics" is not a valid hostname' },
      -- protocols and schemes
      { job("    scrape_protocols: [PrometheusText0.0.4, Foo]\n"),
        "scrape_configs[0].scrape_protocols[1]: unknown scrape protocol Foo, supported: " ..
        "[OpenMetricsText0.0.1 OpenMetricsText1.0.0 PrometheusProto PrometheusText0.0.4 PrometheusText1.0.0]" },
      { job("    scrape_protocols: [PrometheusText0.0.4, prometheustext0.0.4]\n"),
        "scrape_configs[0].scrape_protocols: duplicated protocol in scrape_protocols, got [PrometheusText0.0.4 prometheustext0.0.4]" },
      { job("    scrape_protocols: []\n"), "scrape_configs[0].scrape_protocols: scrape_protocols cannot be empty" },
      { "global:\n  scrape_protocols: []\n", "global.scrape_protocols: scrape_protocols cannot be empty" },
      { job("    fallback_scrape_protocol: text\n"),
        "scrape_configs[0].fallback_scrape_protocol: unknown scrape protocol text, supported: " ..
        "[OpenMetricsText0.0.1 OpenMetricsText1.0.0 PrometheusProto PrometheusText0.0.4 PrometheusText1.0.0]" },
      { "global:\n  metric_name_validation_scheme: ascii\n",
        'global.metric_name_validation_scheme: "ascii" is not a valid metric_name_validation_scheme, must be "utf8" or "legacy"' },
      { job("    metric_name_validation_scheme: legacy\n    metric_name_escaping_scheme: allow-utf-8\n"),
        "scrape_configs[0].metric_name_escaping_scheme: utf8 metric names requested but validation scheme is not set to UTF8" },
      { job("    metric_name_escaping_scheme: hyphens\n"),
        "scrape_configs[0].metric_name_escaping_scheme: unknown scrape config name escaping method specified, " ..
        "must be one of 'allow-utf-8', 'underscores', 'dots', or 'values', got \"hyphens\"" },
      -- relabeling (structural checks)
      { job("    relabel_configs:\n      - {target_label: x}\n      - {action: keep}\n      - {action: nope}\n"),
        'scrape_configs[0].relabel_configs[2].action: unknown relabel action "nope"' },
      { job("    relabel_configs:\n      - {action: hashmod, target_label: x}\n"),
        "scrape_configs[0].relabel_configs[0].modulus: relabel configuration for hashmod requires non-zero modulus" },
      { job("    relabel_configs:\n      - {source_labels: [a]}\n"),
        "scrape_configs[0].relabel_configs[0].target_label: relabel configuration for replace action requires 'target_label' value" },
      { job("    relabel_configs:\n      - {action: labeldrop, source_labels: [a], regex: x}\n"),
        "scrape_configs[0].relabel_configs[0]: labeldrop action requires only 'regex', and no other fields" },
      { job("    relabel_configs:\n      - {action: keepequal, source_labels: [a], target_label: b, regex: x}\n"),
        "scrape_configs[0].relabel_configs[0]: keepequal action requires only 'source_labels' and `target_label`, and no other fields" },
      { job("    relabel_configs:\n      - {action: lowercase, source_labels: [a], target_label: b, replacement: x}\n"),
        "scrape_configs[0].relabel_configs[0].replacement: 'replacement' can not be set for lowercase action" },
      { job("    relabel_configs:\n      - {source_labels: [''], target_label: x}\n"),
        'scrape_configs[0].relabel_configs[0].source_labels[0]: "" is not a valid label name' },
      { job("    metric_relabel_configs:\n      - {source_labels: [a], target_label: '1$x'}\n    metric_name_validation_scheme: legacy\n"),
        "scrape_configs[0].metric_relabel_configs[0].target_label: \"1$x\" is invalid 'target_label' for replace action" },
      { "scrape_configs:\n  - job_name: a\n  - job_name: b\n  - job_name: c\n    relabel_configs:\n      - {target_label: x}\n      - {source_labels: [a], regex: '(abc', action: keep}\n",
        "scrape_configs[2].relabel_configs[1].regex: error parsing regexp: missing closing ): `(abc`" },
      { job("    metric_relabel_configs:\n      - {source_labels: [a], regex: 'a**', action: drop}\n"),
        "scrape_configs[0].metric_relabel_configs[0].regex: error parsing regexp: invalid nested repetition operator: `**`" },
      { job("    relabel_configs:\n      - {source_labels: [a], regex: '[a-z', action: drop}\n"),
        "scrape_configs[0].relabel_configs[0].regex: error parsing regexp: missing closing ]: `[a-z`" },
      { job("    relabel_configs:\n      - {source_labels: [a], regex: 'a(?=b)', action: drop}\n"),
        "scrape_configs[0].relabel_configs[0].regex: error parsing regexp: invalid or unsupported Perl syntax: `(?=`" },
      { job("    relabel_configs:\n      - {source_labels: [a], regex: '*a', action: drop}\n"),
        "scrape_configs[0].relabel_configs[0].regex: error parsing regexp: missing argument to repetition operator: `*`" },
      { job("    relabel_configs:\n      - {source_labels: [a], regex: 'a{2000}', action: drop}\n"),
        "scrape_configs[0].relabel_configs[0].regex: error parsing regexp: invalid repeat count: `{2000}`" },
      { job("    relabel_configs:\n      - {source_labels: [a], regex: 'a)', action: drop}\n"),
        "scrape_configs[0].relabel_configs[0].regex: error parsing regexp: unexpected ): `a)`" },
      { "remote_write:\n  - url: http://a/\n    write_relabel_configs:\n      - {action: hashmod, target_label: x}\n",
        "remote_write[0].write_relabel_configs[0].modulus: relabel configuration for hashmod requires non-zero modulus" },
      -- HTTP client
      { job("    basic_auth: {username: u}\n    bearer_token: t\n"),
        "scrape_configs[0]: at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured" },
      { job("    bearer_token: t\n    bearer_token_file: f\n"),
        "scrape_configs[0]: at most one of bearer_token & bearer_token_file must be configured" },
      { job("    authorization: {credentials: x}\n    bearer_token: t\n"),
        "scrape_configs[0]: authorization is not compatible with bearer_token & bearer_token_file" },
      { job("    authorization: {credentials: x}\n    basic_auth: {username: u}\n"),
        "scrape_configs[0]: at most one of basic_auth, oauth2 & authorization must be configured" },
      { job("    authorization: {type: Basic, credentials: x}\n"),
        'scrape_configs[0].authorization.type: authorization type cannot be set to "basic", use "basic_auth" instead' },
      { job("    authorization: {credentials: x, credentials_file: f}\n"),
        "scrape_configs[0].authorization: at most one of authorization credentials & credentials_file must be configured" },
      { job("    basic_auth: {username: u, password: p, password_file: f}\n"),
        "scrape_configs[0].basic_auth: at most one of basic_auth password & password_file must be configured" },
      { job("    basic_auth: {username: u, username_file: f}\n"),
        "scrape_configs[0].basic_auth: at most one of basic_auth username & username_file must be configured" },
      { job("    tls_config: {cert_file: c.pem}\n"),
        "scrape_configs[0].tls_config: exactly one of key or key_file must be configured when a client certificate is configured" },
      { job("    tls_config: {key: k}\n"),
        "scrape_configs[0].tls_config: exactly one of cert or cert_file must be configured when a client key is configured" },
      { job("    tls_config: {ca: x, ca_file: y}\n"), "scrape_configs[0].tls_config: at most one of ca & ca_file must be configured" },
      { job("    tls_config: {min_version: TLS14}\n"), "scrape_configs[0].tls_config.min_version: unknown TLS version: TLS14" },
      { job("    tls_config: {min_version: TLS13, max_version: TLS12}\n"),
        "scrape_configs[0].tls_config.max_version: tls_config.max_version must be greater than or equal to tls_config.min_version if both are specified" },
      { job("    proxy_url: http://p:3128\n    proxy_from_environment: true\n"),
        "scrape_configs[0]: if proxy_from_environment is configured, proxy_url must not be configured" },
      { job("    no_proxy: localhost\n"), "scrape_configs[0]: if no_proxy is configured, proxy_url must also be configured" },
      { job("    proxy_connect_header: {a: [b]}\n"),
        "scrape_configs[0]: if proxy_connect_header is configured, proxy_url or proxy_from_environment must also be configured" },
      { job("    proxy_url: 'http://a b:1'\n"),
        'scrape_configs[0].proxy_url: "http://a b:1" is not a valid URL: invalid character " " in host name' },
      { job("    http_headers: {User-Agent: {values: [x]}}\n"),
        'scrape_configs[0].http_headers.User-Agent: setting header "User-Agent" is not allowed' },
      { job("    oauth2: {token_url: http://t/}\n"), "scrape_configs[0].oauth2: oauth2 client_id must be configured" },
      { job("    oauth2: {client_id: c}\n"), "scrape_configs[0].oauth2: oauth2 token_url must be configured" },
      -- service discovery
      { job("    file_sd_configs:\n      - files: [targets.txt]\n"),
        'scrape_configs[0].file_sd_configs[0].files[0]: path name "targets.txt" is not valid for file discovery' },
      { job("    file_sd_configs:\n      - files: ['a/*/b.json']\n"),
        'scrape_configs[0].file_sd_configs[0].files[0]: path name "a/*/b.json" is not valid for file discovery' },
      { job("    file_sd_configs:\n      - refresh_interval: 1m\n"),
        "scrape_configs[0].file_sd_configs[0].files: file service discovery config must contain at least one path name" },
      { job("    http_sd_configs:\n      - refresh_interval: 1m\n"), "scrape_configs[0].http_sd_configs[0].url: URL is missing" },
      { job("    http_sd_configs:\n      - url: ftp://sd/x\n"),
        "scrape_configs[0].http_sd_configs[0].url: \"ftp://sd/x\": URL scheme must be 'http' or 'https'" },
      { job("    http_sd_configs:\n      - url: 'http:///x'\n"),
        'scrape_configs[0].http_sd_configs[0].url: "http:///x": host is missing in URL' },
      -- remote_write
      { "remote_write:\n  - name: a\n", "remote_write[0].url: url for remote_write is empty" },
      { "remote_write:\n  - url: localhost:9090/api/v1/write\n",
        "remote_write[0].url: \"localhost:9090/api/v1/write\": URL scheme must be 'http' or 'https'" },
      { "remote_write:\n  - url: 'http://a/%zz'\n", 'remote_write[0].url: "http://a/%zz" is not a valid URL: invalid URL escape "%zz"' },
      { "remote_write:\n  - url: http://a/\n    headers: {Authorization: x}\n",
        "remote_write[0].headers.Authorization: authorization header must be changed via the basic_auth, authorization, oauth2, sigv4, azuread or google_iam parameter" },
      { "remote_write:\n  - url: http://a/\n    headers: {Content-Type: x}\n",
        "remote_write[0].headers.Content-Type: Content-Type is a reserved header. It must not be changed" },
      { "remote_write:\n  - url: http://a/\n    basic_auth: {username: u}\n    sigv4: {region: eu-west-1}\n",
        "remote_write[0]: at most one of basic_auth, authorization, oauth2, sigv4, azuread or google_iam must be configured. Currently configured: [basic_auth sigv4]" },
      { "remote_write:\n  - {url: 'http://a/', name: x}\n  - {url: 'http://b/', name: x}\n",
        'remote_write[1].name: found multiple remote write configs with job name "x"' },
      { "remote_write:\n  - url: http://a/\n    protobuf_message: v3\n",
        'remote_write[0].protobuf_message: unknown remote write protobuf message v3, must be "prometheus.WriteRequest" or "io.prometheus.write.v2.Request"' },
      -- scrape_config_files
      { "scrape_config_files: ['a/*/b.yml']\n", 'scrape_config_files[0]: invalid scrape config file path "a/*/b.yml"' },
    }
    for _, c in ipairs(cases) do
      it(c[2], function()
        assert.equal("prometheus.yml: " .. c[2], err_of(c[1]))
      end)
    end

    it("several remote writes without names are fine", function()
      local cfg = ok_parse("remote_write:\n  - url: http://a/\n  - url: https://b/\n")
      assert.equal(2, #cfg.remote_write)
    end)
    it("a URL target is allowed when relabel_configs rewrite it", function()
      ok_parse(job("    static_configs:\n      - targets: ['http://a:1/x']\n" ..
        "    relabel_configs:\n      - {source_labels: [__address__], target_label: __param_target}\n"))
    end)
    it("valid regexes pass the structural check", function()
      for _, re in ipairs { "(.*)", "a|b", "[]a]", "[^]a]", "(?i)abc", "(?:a)+?", "(?P<n>x)", "a{2,3}",
        "x{,3}", "\\(", "[[:alpha:]]+", "\\d+\\.\\d+", "^foo$", "a*?", "\\pL", "\\p{Greek}" } do
        assert.is_nil(config.check_regex(re), re)
      end
    end)
    it("source defaults to \"config\"", function()
      local cfg, err = config.parse("foo: 1\n", nil, NOENGINE)
      assert.is_nil(cfg)
      assert.equal("config: foo: unknown field (not a field of the top-level config)", err)
    end)
  end)

  describe("relabel rules through the relabel engine", function()
    it("passes only the fields the file set, with the job's scheme", function()
      local seen
      local function compiler(rules, opts)
        seen = { rules = rules, opts = opts }
        return { close = function() end }
      end
      ok_parse(job("    metric_name_validation_scheme: legacy\n    relabel_configs:\n" ..
        "      - {action: KeepEqual, source_labels: [a], target_label: b}\n"), { relabel_compiler = compiler })
      assert.same({ { action = "keepequal", source_labels = { "a" }, target_label = "b" } }, seen.rules)
      assert.same({ metric_name_validation_scheme = "legacy" }, seen.opts)
    end)
    it("maps 'rule N: field: reason' to the field path", function()
      local function compiler()
        return nil, "rule 2: regex: missing closing parenthesis at offset 4", "EINVAL"
      end
      local err = err_of(job("    relabel_configs:\n      - {target_label: a}\n      - {regex: '(abcd', action: keep}\n"),
        { relabel_compiler = compiler })
      assert.equal("prometheus.yml: scrape_configs[0].relabel_configs[1].regex: missing closing parenthesis at offset 4", err)
      err = err_of(job("    metric_relabel_configs:\n      - {target_label: a}\n"),
        { relabel_compiler = function() return nil, "rule 1: something odd" end })
      assert.equal("prometheus.yml: scrape_configs[0].metric_relabel_configs[0]: something odd", err)
    end)
    local has_engine = pcall(function()
      local r = require("promscrape.relabel")
      assert(type(r.relabel_rules) == "function")
    end)
    local with_engine = has_engine and it or pending
    with_engine("the real engine reports a bad regex at its path", function()
      local cfg, err = config.parse(job("    relabel_configs:\n      - {source_labels: [a], regex: '(abc', action: keep}\n"),
        "prometheus.yml")
      assert.is_nil(cfg)
      assert.matches("^prometheus%.yml: scrape_configs%[0%]%.relabel_configs%[0%]%.regex: ", err)
    end)
    with_engine("the real engine accepts the example config", function()
      assert(config.load("examples/prometheus.yml"))
    end)
  end)

  describe("warnings", function()
    it("a full Prometheus config loads, unused sections warned about", function()
      local cfg = ok_parse([[
global:
  scrape_interval: 15s
  evaluation_interval: 30s
  query_log_file: /var/log/prometheus/query.log
  external_labels:
    cluster: prod
    replica: "0"

runtime:
  gogc: 75

rule_files:
  - "rules/*.yml"
  - alerts.yml

alerting:
  alertmanagers:
    - static_configs:
        - targets: ["alertmanager:9093"]
      timeout: 10s

storage:
  tsdb:
    out_of_order_time_window: 30m

tracing:
  endpoint: otel:4317

otlp:
  promote_resource_attributes: [service.name]

scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["localhost:9090"]

  - job_name: node
    scrape_interval: 30s
    scrape_timeout: 25s
    body_size_limit: 50MB
    sample_limit: 100000
    file_sd_configs:
      - files: ["/etc/prometheus/targets/node_*.json"]
        refresh_interval: 1m
    relabel_configs:
      - source_labels: [__address__]
        regex: "([^:]+):\\d+"
        target_label: host
        replacement: "$1"
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: "node_(scrape|textfile)_.*"
        action: drop
      - regex: "(id|path)"
        action: labeldrop

  - job_name: kubernetes-pods
    kubernetes_sd_configs:
      - role: pod
    oauth2:
      client_id: promscrape
      client_secret_file: /etc/secret
      token_url: https://auth.example/token
    relabel_configs:
      - action: labelmap
        regex: __meta_kubernetes_pod_label_(.+)
      - source_labels: [__meta_kubernetes_namespace]
        action: replace
        target_label: namespace

  - job_name: blackbox
    metrics_path: /probe
    params:
      module: [http_2xx]
    static_configs:
      - targets: ["https://example.com"]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - target_label: __address__
        replacement: 127.0.0.1:9115

remote_write:
  - url: https://metrics.example/api/v1/write
    name: central
    basic_auth:
      username: prom
      password_file: /etc/prometheus/rw-password
    queue_config:
      max_shards: 10
    write_relabel_configs:
      - source_labels: [__name__]
        regex: "go_.*"
        action: drop

remote_read:
  - url: https://metrics.example/api/v1/read
]])
      assert.equal(4, #cfg.scrape_configs)
      assert.equal("30s", cfg.global.evaluation_interval)
      assert.same({ cluster = "prod", replica = "0" }, cfg.global.external_labels)
      local node = cfg.scrape_configs[2]
      assert.equal(52428800, node.body_size_limit)
      assert.equal("25s", node.scrape_timeout)
      assert.equal(10, cfg.remote_write[1].queue_config.max_shards)
      assert.equal(2000, cfg.remote_write[1].queue_config.max_samples_per_send)
      for _, w in ipairs {
        "runtime: not used by promscrape, ignored",
        "alerting: not used by promscrape, ignored",
        "rule_files: not used by promscrape, ignored",
        "storage: not used by promscrape, ignored",
        "tracing: not used by promscrape, ignored",
        "remote_read: not used by promscrape, ignored",
        "otlp: not used by promscrape, ignored",
        "scrape_configs[2].kubernetes_sd_configs: not supported by promscrape, ignored",
        "scrape_configs[2].oauth2: not supported by promscrape, requests are sent without OAuth2 credentials",
      } do
        assert.is_true(contains(cfg.warnings, w), w .. " missing from:\n" .. table.concat(cfg.warnings, "\n"))
      end
      assert.equal(9, #cfg.warnings)
      assert.is_nil(cfg.rule_files)
      assert.is_nil(cfg.alerting)
      assert.same({ { role = "pod" } }, cfg.scrape_configs[3].kubernetes_sd_configs)
    end)
    it("every unsupported *_sd_configs is accepted with a warning", function()
      for _, name in ipairs(config.UNSUPPORTED_SD) do
        local cfg = ok_parse(job("    " .. name .. ": [{}]\n"))
        assert.same({ "scrape_configs[0]." .. name .. ": not supported by promscrape, ignored" }, cfg.warnings)
      end
    end)
    it("sigv4 on remote_write is kept with a warning", function()
      local cfg = ok_parse("remote_write:\n  - url: https://aps.example/\n    sigv4: {region: eu-west-1}\n")
      assert.same({ region = "eu-west-1" }, cfg.remote_write[1].sigv4)
      assert.same({ "remote_write[0].sigv4: not supported by promscrape, kept but unused" }, cfg.warnings)
    end)
  end)

  describe("files", function()
    local dir
    before_each(function() dir = tmpdir() end)
    after_each(function() rm_tree(dir) end)

    it("load() reads a file and names it in errors", function()
      write(dir .. "/prometheus.yml", job("    scrape_interval: 10s\n    scrape_timeout: 20s\n"))
      local cfg, err = config.load(dir .. "/prometheus.yml", NOENGINE)
      assert.is_nil(cfg)
      assert.equal(dir .. '/prometheus.yml: scrape_configs[0].scrape_timeout: "20s" is greater than scrape_interval "10s"', err)
    end)
    it("a missing file", function()
      local cfg, err = config.load(dir .. "/nope.yml")
      assert.is_nil(cfg)
      assert.equal("cannot read " .. dir .. "/nope.yml: No such file or directory", err)
    end)
    it("a directory", function()
      local cfg, err = config.load(dir)
      assert.is_nil(cfg)
      assert.matches("^cannot read ", err)
    end)
    it("the example config loads without warnings", function()
      local cfg = assert(config.load("examples/prometheus.yml", NOENGINE))
      assert.same({}, cfg.warnings)
      assert.equal("127.0.0.1:9100", cfg.scrape_configs[1].static_configs[1].targets[1])
      assert.equal("127.0.0.1:9099", cfg.scrape_configs[2].static_configs[1].targets[1])
    end)
    it("relative paths are relative to the config file", function()
      write(dir .. "/prometheus.yml", [[
global:
  query_log_file: logs/q.log
scrape_configs:
  - job_name: a
    tls_config: {ca_file: certs/ca.pem, cert_file: /abs/c.pem, key_file: ../k.pem}
    basic_auth: {username: u, password_file: secrets/pw}
    bearer_token_file: ""
    file_sd_configs:
      - files: [targets/*.json]
remote_write:
  - url: http://a/
    authorization: {credentials_file: tok}
]])
      local cfg = assert(config.load(dir .. "/prometheus.yml", NOENGINE))
      local sc = cfg.scrape_configs[1]
      assert.equal(dir .. "/logs/q.log", cfg.global.query_log_file)
      assert.equal(dir .. "/certs/ca.pem", sc.tls_config.ca_file)
      assert.equal("/abs/c.pem", sc.tls_config.cert_file)
      assert.equal(dir:match("^(.*)/[^/]*$") .. "/k.pem", sc.tls_config.key_file)
      assert.equal(dir .. "/secrets/pw", sc.basic_auth.password_file)
      assert.equal(dir .. "/targets/*.json", sc.file_sd_configs[1].files[1])
      assert.equal(dir .. "/tok", cfg.remote_write[1].authorization.credentials_file)
    end)

    describe("scrape_config_files", function()
      it("globs relative to the config file, sorted, and appends the jobs", function()
        lfs.mkdir(dir .. "/jobs")
        lfs.mkdir(dir .. "/more")
        write(dir .. "/jobs/b.yml", "scrape_configs:\n  - job_name: b\n    file_sd_configs:\n      - files: [t.json]\n")
        write(dir .. "/jobs/a.yml", "scrape_configs:\n  - job_name: a1\n  - job_name: a2\n    scrape_interval: 5s\n")
        write(dir .. "/jobs/c.txt", "not: yaml: at all: [\n")
        write(dir .. "/more/x.yaml", "scrape_configs:\n  - job_name: x\n")
        write(dir .. "/more/z.yaml", "scrape_configs:\n  - job_name: z\n")
        write(dir .. "/more/empty.yml", "")
        write(dir .. "/prometheus.yml", "global:\n  scrape_interval: 20s\n" ..
          "scrape_config_files: ['jobs/*.yml', 'more/[a-x].yaml', 'none/*.yml']\n" ..
          "scrape_configs:\n  - job_name: main\n")
        local cfg = assert(config.load(dir .. "/prometheus.yml", NOENGINE))
        local names = {}
        for i, sc in ipairs(cfg.scrape_configs) do names[i] = sc.job_name end
        assert.same({ "main", "a1", "a2", "b", "x" }, names)
        assert.same({ dir .. "/jobs/*.yml", dir .. "/more/[a-x].yaml", dir .. "/none/*.yml" }, cfg.scrape_config_files)
        assert.equal("20s", cfg.scrape_configs[2].scrape_interval) -- the main file's global applies
        assert.equal("5s", cfg.scrape_configs[3].scrape_timeout)
        assert.equal(dir .. "/jobs/t.json", cfg.scrape_configs[4].file_sd_configs[1].files[1])
      end)
      it("a job name already used in the main file", function()
        lfs.mkdir(dir .. "/jobs")
        write(dir .. "/jobs/a.yml", "scrape_configs:\n  - job_name: other\n  - job_name: main\n")
        write(dir .. "/prometheus.yml", "scrape_config_files: [jobs/*.yml]\nscrape_configs:\n  - job_name: main\n")
        local cfg, err = config.load(dir .. "/prometheus.yml", NOENGINE)
        assert.is_nil(cfg)
        assert.equal(dir .. '/jobs/a.yml: scrape_configs[1].job_name: found multiple scrape configs with job name "main", first found in main config file', err)
      end)
      it("a job name used in another included file", function()
        lfs.mkdir(dir .. "/jobs")
        write(dir .. "/jobs/a.yml", "scrape_configs:\n  - job_name: dup\n")
        write(dir .. "/jobs/b.yml", "scrape_configs:\n  - job_name: dup\n")
        write(dir .. "/prometheus.yml", "scrape_config_files: [jobs/*.yml]\n")
        local cfg, err = config.load(dir .. "/prometheus.yml", NOENGINE)
        assert.is_nil(cfg)
        assert.equal(dir .. '/jobs/b.yml: scrape_configs[0].job_name: found multiple scrape configs with job name "dup", first found in "' .. dir .. '/jobs/a.yml"', err)
      end)
      it("errors in an included file name that file", function()
        write(dir .. "/jobs.yml", "global:\n  scrape_interval: 1m\nscrape_configs: []\n")
        write(dir .. "/bad.yml", "scrape_configs:\n  - job_name: a\n    scrape_timeout: 2m\n")
        write(dir .. "/prometheus.yml", "scrape_config_files: [jobs.yml]\n")
        local cfg, err = config.load(dir .. "/prometheus.yml", NOENGINE)
        assert.is_nil(cfg)
        assert.equal(dir .. "/jobs.yml: global: unknown field (a scrape config file holds scrape_configs only)", err)
        write(dir .. "/prometheus.yml", "scrape_config_files: [bad.yml]\n")
        cfg, err = config.load(dir .. "/prometheus.yml", NOENGINE)
        assert.is_nil(cfg)
        assert.equal(dir .. '/bad.yml: scrape_configs[0].scrape_timeout: "2m" is greater than scrape_interval "1m"', err)
      end)
      it("warnings from an included file are prefixed with it", function()
        write(dir .. "/k8s.yml", "scrape_configs:\n  - job_name: k\n    kubernetes_sd_configs: [{role: node}]\n")
        write(dir .. "/prometheus.yml", "scrape_config_files: [k8s.yml]\n")
        local cfg = assert(config.load(dir .. "/prometheus.yml", NOENGINE))
        assert.same({ dir .. "/k8s.yml: scrape_configs[0].kubernetes_sd_configs: not supported by promscrape, ignored" },
          cfg.warnings)
      end)
      it("a malformed glob", function()
        write(dir .. "/prometheus.yml", "scrape_config_files: ['jobs/[a.yml']\n")
        local cfg, err = config.load(dir .. "/prometheus.yml", NOENGINE)
        assert.is_nil(cfg)
        assert.equal(dir .. '/prometheus.yml: scrape_config_files[0]: error retrieving scrape config files for "' ..
          dir .. '/jobs/[a.yml": syntax error in pattern', err)
      end)
      it("parse() globs relative to opts.dir", function()
        write(dir .. "/one.yml", "scrape_configs:\n  - job_name: one\n")
        local cfg = assert(config.parse("scrape_config_files: ['*.yml']\n", "inline",
          { dir = dir, relabel_compiler = false }))
        assert.equal("one", cfg.scrape_configs[1].job_name)
      end)
    end)
  end)
end)
