-- API shape of parse(body, content_type [, opts]) -> series, meta | nil, err.
-- Format-level expectations follow Prometheus's model/textparse (see
-- 10-parse_text_spec.lua and 11-parse_openmetrics_spec.lua for sources).

-- math.type exists from Lua 5.3 on; LuaJIT has doubles only, so there the
-- check is that the value is a number.
local function assert_numtype(t, v)
  assert.is_number(v)
  if math.type then assert.are.equal(t, math.type(v)) end
end

local function load_parse()
  local ok, m = pcall(require, "promscrape")
  if ok and type(m) == "table" and type(m.parse) == "function" then
    return m.parse, m
  end
  local core = require("promscrape.core")
  return core.parse, nil
end
local parse, facade = load_parse()
local core = require("promscrape.core")

local H = require("spec.support.parse_helpers")
local TEXT, OM = H.TEXT, H.OM
local accepts, rejects, count_keys = H.accepts, H.rejects, H.count_keys

-- An OM-only body: rejected by the text parser, accepted by OpenMetrics.
local OM_ONLY = 'a_total 1 # {t="x"} 2\n# EOF\n'
-- A text-only body: no "# EOF", so OpenMetrics rejects it.
local TEXT_ONLY = "a 1\n"

describe("parse() API", function()

  describe("module", function()
    it("core exports parse", function()
      assert.is_function(core.parse)
    end)
    it("the façade re-exports core.parse", function()
      local ps = require("promscrape")
      assert.are.equal(core.parse, ps.parse)
    end)
  end)

  describe("success shape", function()
    local series, meta
    setup(function()
      series, meta = parse(table.concat({
        "# HELP http_requests_total The total number of HTTP requests.",
        "# TYPE http_requests_total counter",
        'http_requests_total{method="post",code="200"} 1027 1395066363000',
        'http_requests_total{method="post",code="400"}    3 1395066363000',
        "metric_without_timestamp_and_labels 12.47",
      }, "\n") .. "\n", TEXT)
    end)

    it("returns an array of series in input order", function()
      assert.is_table(series, tostring(meta))
      assert.are.equal(3, #series)
      assert.are.equal("200", series[1].labels.code)
      assert.are.equal("400", series[2].labels.code)
      assert.are.equal("metric_without_timestamp_and_labels", series[3].name)
    end)
    it("gives name, labels, value and timestamp", function()
      local s = series[1]
      assert.are.equal("http_requests_total", s.name)
      assert.are.same({ method = "post", code = "200" }, s.labels)
      assert.are.equal(1027.0, s.value)
      assert.are.equal(1395066363000, s.timestamp)
      assert.is_nil(s.exemplar)
    end)
    it("never puts __name__ into labels", function()
      for _, s in ipairs(series) do assert.is_nil(s.labels.__name__) end
    end)
    it("gives an empty labels table for a bare sample", function()
      assert.is_table(series[3].labels)
      assert.are.equal(0, count_keys(series[3].labels))
      assert.is_nil(series[3].timestamp)
    end)
    it("returns values as floats", function()
      assert_numtype("float", series[1].value)
      assert_numtype("float", series[3].value)
      assert.are.equal(12.47, series[3].value)
    end)
    it("returns timestamps as integers", function()
      assert_numtype("integer", series[1].timestamp)
    end)
    it("maps family name to type and help", function()
      local m = meta.http_requests_total
      assert.is_table(m)
      assert.are.equal("counter", m.type)
      assert.are.equal("The total number of HTTP requests.", m.help)
      assert.is_nil(m.unit)
    end)
    it("gives distinct label tables per series", function()
      assert.are_not.equal(series[1].labels, series[2].labels)
    end)
  end)

  describe("OpenMetrics shape", function()
    local series, meta
    setup(function()
      series, meta = parse(table.concat({
        "# TYPE rpc_seconds histogram",
        "# UNIT rpc_seconds seconds",
        "# HELP rpc_seconds RPC latency.",
        'rpc_seconds_bucket{le="0.5"} 1 # {trace_id="KOO5S4vxi0o"} 0.67 1520879607.789',
        'rpc_seconds_bucket{le="+Inf"} 2 1520879607.5',
        "rpc_seconds_count 2",
        "rpc_seconds_sum 3.5",
        "rpc_seconds_created 1520430000.123",
        "# EOF",
      }, "\n") .. "\n", OM)
    end)

    it("gives type, help and unit", function()
      assert.is_table(series, tostring(meta))
      assert.are.same({ type = "histogram", unit = "seconds", help = "RPC latency." }, meta.rpc_seconds)
    end)
    it("gives an exemplar table with labels, value and integer ms timestamp", function()
      local e = series[1].exemplar
      assert.is_table(e)
      assert.are.same({ trace_id = "KOO5S4vxi0o" }, e.labels)
      assert.are.equal(0.67, e.value)
      assert.are.equal(1520879607789, e.timestamp)
      assert_numtype("integer", e.timestamp)
    end)
    it("converts fractional-second sample timestamps to integer ms", function()
      assert.are.equal(1520879607500, series[2].timestamp)
      assert_numtype("integer", series[2].timestamp)
      assert.is_nil(series[1].timestamp)
    end)
    it("returns _created as an ordinary sample", function()
      assert.are.equal(5, #series)
      assert.are.equal("rpc_seconds_created", series[5].name)
      assert.are.equal(1520430000.123, series[5].value)
    end)
    it("converts small and negative OM timestamps", function()
      local s = accepts("a 1 1\nb 1 0.001\nc 1 -2.5\nd 1 0\n# EOF\n", OM)
      assert.are.equal(1000, s[1].timestamp)
      assert.are.equal(1, s[2].timestamp)
      assert.are.equal(-2500, s[3].timestamp)
      assert.are.equal(0, s[4].timestamp)
      for i = 1, 4 do assert_numtype("integer", s[i].timestamp) end
    end)
    it("gives an exemplar without timestamp a nil timestamp", function()
      local e = accepts(OM_ONLY, OM)[1].exemplar
      assert.are.equal(2, e.value)
      assert.is_nil(e.timestamp)
    end)
  end)

  describe("argument errors raise", function()
    it("body 42", function() assert.has_error(function() parse(42) end) end)
    it("body nil", function() assert.has_error(function() parse(nil, TEXT) end) end)
    it("no arguments", function() assert.has_error(function() parse() end) end)
    it("body as a table", function() assert.has_error(function() parse({}, TEXT) end) end)
    it("content type as a table", function() assert.has_error(function() parse("a 1\n", {}) end) end)
    it("opts as a string", function() assert.has_error(function() parse("x", nil, "notatable") end) end)
    it("opts as a number", function() assert.has_error(function() parse("a 1\n", TEXT, 1) end) end)
    it("opts.strict as a string", function()
      assert.has_error(function() parse("a 1\n# EOF\n", OM, { strict = "yes" }) end)
    end)
    it("does not raise on bad input data", function()
      assert.has_no.errors(function() parse("{{{", TEXT) end)
    end)
  end)

  describe("content type", function()
    it("nil means Prometheus text", function()
      assert.are.equal(1, #accepts(TEXT_ONLY, nil))
      rejects(OM_ONLY, nil, 1)
    end)
    it("'' means Prometheus text", function()
      assert.are.equal(1, #accepts(TEXT_ONLY, ""))
      rejects(OM_ONLY, "", 1)
    end)
    it("text/plain without parameters is text", function()
      assert.are.equal(1, #accepts(TEXT_ONLY, "text/plain"))
    end)
    it("text/plain with charset is text", function()
      assert.are.equal(1, #accepts(TEXT_ONLY, "text/plain; version=0.0.4; charset=utf-8"))
    end)
    it("type and subtype are case-insensitive", function()
      assert.are.equal(1, #accepts(TEXT_ONLY, "Text/Plain; version=0.0.4"))
      assert.are.equal(1, #accepts(OM_ONLY, "APPLICATION/OPENMETRICS-TEXT; version=1.0.0"))
    end)
    it("parameters need no blank after ';'", function()
      assert.are.equal(1, #accepts(TEXT_ONLY, "text/plain;version=0.0.4"))
      assert.are.equal(1, #accepts(OM_ONLY, "application/openmetrics-text;version=1.0.0;charset=utf-8"))
    end)
    it("application/openmetrics-text is OpenMetrics", function()
      local s = accepts(OM_ONLY, OM)
      assert.is_table(s[1].exemplar)
      rejects(TEXT_ONLY, OM)
    end)
    it("application/openmetrics-text without version is OpenMetrics", function()
      assert.is_table(accepts(OM_ONLY, "application/openmetrics-text")[1].exemplar)
      rejects(TEXT_ONLY, "application/openmetrics-text")
    end)
    it("blanks around the media type and parameters are allowed", function()
      assert.are.equal(1, #accepts(OM_ONLY, " application/openmetrics-text ; version=1.0.0 "))
      assert.are.equal(1, #accepts(TEXT_ONLY, " text/plain ; version=0.0.4"))
    end)
    it("the OpenMetrics version parameter does not change the format", function()
      assert.is_table(accepts(OM_ONLY, "application/openmetrics-text; version=0.0.1")[1].exemplar)
    end)
    for _, ct in ipairs({ "application/json", "text/html", "application/octet-stream",
      "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
      "openmetrics", "garbage" }) do
      it("rejects unsupported type " .. ct, function()
        local s, err = parse(TEXT_ONLY, ct)
        assert.is_nil(s)
        assert.is_string(err)
        assert.is_true(#err > 0)
      end)
    end
  end)

  describe("error messages", function()
    it("return nil and a string", function()
      local s, err = parse("a{\n", TEXT)
      assert.is_nil(s)
      assert.is_string(err)
    end)
    it("start with 'line N: ' (text)", function()
      assert.matches("^line %d+: .", rejects("a b c\n", TEXT, 1))
    end)
    it("start with 'line N: ' (OpenMetrics)", function()
      assert.matches("^line %d+: .", rejects("a b\n# EOF\n", OM, 1))
    end)
    it("name line 1", function() rejects("a{b=} 1\nc 2\n", TEXT, 1) end)
    it("name a middle line", function() rejects("a 1\nb 2\nc{ 3\nd 4\n", TEXT, 3) end)
    it("count blank lines (text)", function() rejects("\n\n\n\na 1\nb x\n", TEXT, 6) end)
    it("count comment lines", function() rejects("# a\n# b\n# HELP x y\nx 1\nx{=} 1\n", TEXT, 5) end)
    it("name the OpenMetrics line", function()
      rejects("# TYPE a gauge\na 1\nb 1\nc{} x\n# EOF\n", OM, 4)
    end)
    it("name the line of data after # EOF", function()
      rejects("a 1\n# EOF\nb 1\n", OM, 3)
    end)
    it("name the line of a TYPE error", function()
      rejects("a 1\nb 1\n# TYPE c bogus\n", TEXT, 3)
    end)
  end)

  describe("input edges", function()
    it("accepts text without trailing newline", function()
      local s = accepts("a 1\nb 2", TEXT)
      assert.are.equal(2, #s)
      assert.are.equal(2, s[2].value)
    end)
    it("accepts text ending in a timestamp without newline", function()
      assert.are.equal(7, accepts("a 1 7", TEXT)[1].timestamp)
    end)
    it("accepts OpenMetrics '# EOF' without newline", function()
      assert.are.equal(1, #accepts("a 1\n# EOF", OM))
    end)
    it("accepts empty text input as no series and no metadata", function()
      local s, m = accepts("", TEXT)
      assert.are.equal(0, #s)
      assert.are.equal(0, count_keys(m))
    end)
    it("accepts a text body of only comments and blanks", function()
      local s, m = accepts("# hi\n\n# there\n", TEXT)
      assert.are.equal(0, #s)
      assert.are.equal(0, count_keys(m))
    end)
    it("rejects empty OpenMetrics input (no # EOF)", function()
      rejects("", OM)
    end)
    it("accepts OpenMetrics '# EOF' alone as no series", function()
      assert.are.equal(0, #accepts("# EOF\n", OM))
    end)
    it("parses 100k generated lines", function()
      local t = { "# TYPE big gauge" }
      for i = 1, 100000 do t[#t + 1] = ('big{i="%d",k="v"} %d %d'):format(i, i, i) end
      local s = accepts(table.concat(t, "\n") .. "\n", TEXT)
      assert.are.equal(100000, #s)
      assert.are.equal("100000", s[100000].labels.i)
      assert.are.equal(100000, s[100000].value)
      assert.are.equal(100000, s[100000].timestamp)
      assert.are.equal("50000", s[50000].labels.i)
    end)
    it("parses 100k generated OpenMetrics lines", function()
      local t = { "# TYPE big gauge" }
      for i = 1, 100000 do t[#t + 1] = ('big{i="%d"} %d'):format(i, i) end
      t[#t + 1] = "# EOF"
      local s = accepts(table.concat(t, "\n") .. "\n", OM)
      assert.are.equal(100000, #s)
      assert.are.equal(99999, s[99999].value)
    end)
    it("names the failing line deep in a big input", function()
      local t = {}
      for i = 1, 50000 do t[i] = "m " .. i end
      t[#t + 1] = "m{"
      rejects(table.concat(t, "\n") .. "\n", TEXT, 50001)
    end)
    it("accepts a 1 MB label value", function()
      local v = ("x"):rep(1024 * 1024)
      assert.are.equal(#v, #accepts('m{a="' .. v .. '"} 1\n', TEXT)[1].labels.a)
    end)
    it("accepts a 1000-label series", function()
      local t = {}
      for i = 1, 1000 do t[i] = ('l%d="%d"'):format(i, i) end
      local s = accepts("m{" .. table.concat(t, ",") .. "} 1\n", TEXT)
      assert.are.equal(1000, count_keys(s[1].labels))
      assert.are.equal("777", s[1].labels.l777)
    end)
  end)

  describe("NUL bytes and invalid UTF-8", function()
    -- promlex/openmetricslex: NUL is a token-breaking byte outside label
    -- values and help text (TestPromNullByteHandling, TestOMNullByteHandling).
    it("rejects NUL in a text value, naming the line", function()
      rejects("a 1\nb 2\0\n", TEXT, 2)
    end)
    it("rejects NUL after a text timestamp", function()
      rejects("a 1\nb 0 1\0\n", TEXT, 2)
    end)
    it("rejects NUL in a text label name", function()
      rejects('a 1\nb 1\na{b\0="hiih"} 1\n', TEXT, 3)
    end)
    it("rejects NUL after an OpenMetrics metric name", function()
      rejects('a 1\na\0{b="ddd"} 1\n# EOF\n', OM, 2)
    end)
    it("rejects NUL at the start of a text line (brief: NUL rejected; Prometheus's\n" ..
      "lexer would stop there silently)", function()
      rejects("a 1\n\0b 2\n", TEXT, 2)
    end)
    it("rejects an empty quoted metric name", function()
      rejects('ok 1\n{""} 1\n', TEXT, 2)
    end)
    it("rejects an empty quoted label name", function()
      rejects('m{""="v"} 1\n# EOF\n', OM, 1)
    end)
    it("rejects invalid UTF-8 in a text label value, naming the line", function()
      rejects('ok 1\nm{a="\xc3\x28"} 1\n', TEXT, 2)
    end)
    it("rejects a truncated UTF-8 sequence in an OpenMetrics label value", function()
      rejects('ok 1\nm{a="\xe2\x82"} 1\n# EOF\n', OM, 2)
    end)
    it("rejects invalid UTF-8 in text HELP", function()
      rejects("a 1\n# HELP a \xff\n", TEXT, 2)
    end)
    it("rejects invalid UTF-8 in an exemplar label value", function()
      rejects('a_total 1 # {t="\xff"} 1\n# EOF\n', OM, 1)
    end)
    it("accepts valid multi-byte UTF-8 in values and help", function()
      local s, m = accepts('# HELP a Größe 😀\na{x="日本語😀"} 1\n', TEXT)
      assert.are.equal("Größe 😀", m.a.help)
      assert.are.equal("日本語😀", s[1].labels.x)
    end)
  end)

  describe("quoted UTF-8 names", function()
    for _, ct in ipairs({ TEXT, OM }) do
      local eof = ct == OM and "# EOF\n" or ""
      it("accepts {\"my.metric\",\"label.name\"=\"v\"} (" .. ct .. ")", function()
        local s = accepts('{"my.metric","label.name"="v"} 1\n' .. eof, ct)
        assert.are.equal("my.metric", s[1].name)
        assert.are.same({ ["label.name"] = "v" }, s[1].labels)
        assert.is_nil(s[1].labels.__name__)
      end)
      it("rejects \"my.metric\"{a=\"b\"} (no lexer rule for a quote at line start) (" .. ct .. ")", function()
        rejects('"my.metric"{a="b"} 1\n' .. eof, ct, 1)
      end)
      it("rejects duplicate label names (" .. ct .. ")", function()
        rejects('ok 1\nm{a="1",b="2",a="3"} 1\n' .. eof, ct, 2)
      end)
      it("rejects duplicates spelled quoted and bare (" .. ct .. ")", function()
        rejects('m{"a"="1",a="2"} 1\n' .. eof, ct, 1)
      end)
      it("keeps meta keyed by the unquoted family name (" .. ct .. ")", function()
        local _, m = accepts('# TYPE "my.metric" gauge\n{"my.metric"} 1\n' .. eof, ct)
        assert.are.equal("gauge", m["my.metric"].type)
      end)
    end
  end)

  describe("opts", function()
    it("accepts an empty opts table", function()
      assert.are.equal(1, #accepts(TEXT_ONLY, TEXT, {}))
    end)
    it("strict=false behaves as default", function()
      accepts('# TYPE a gauge\na{x="1",} 1\n# EOF\n', OM, { strict = false })
    end)
    it("strict=true rejects what default accepts", function()
      accepts('# TYPE a gauge\na{x="1",} 1\n# EOF\n', OM)
      rejects('# TYPE a gauge\na{x="1",} 1\n# EOF\n', OM, 2, { strict = true })
    end)
    it("strict does not change text parsing", function()
      local body = "# TYPE a counter\na 1\n# TYPE b gauge\nb 1\na{x=\"y\"} -2\n\n"
      assert.are.equal(3, #accepts(body, TEXT, { strict = true }))
    end)
    it("parses are independent (an error leaves no state behind)", function()
      rejects("a{\n", OM)
      assert.are.equal(1, #accepts(TEXT_ONLY, TEXT))
      assert.are.equal(1, #accepts("a 1\n# EOF\n", OM))
    end)
  end)
end)

-- Prometheus 3.x (textparse normalizeFloatsInLabelValues) ingests le of
-- histograms and quantile of summaries as FormatOpenMetricsFloat prints them,
-- deciding by the latest TYPE line; other labels and types stay as exposed.
describe("le and quantile normalization", function()
  local function labels_of(text, ct)
    local s, err = parse(text, ct)
    assert.is_table(s, err)
    local out = {}
    for i, x in ipairs(s) do out[i] = x.labels end
    return out
  end
  it("rewrites histogram le values as Prometheus 3.x stores them", function()
    local l = labels_of('# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="0.00001"} 1\n' ..
      'h_bucket{le="1e3"} 1\nh_bucket{le="+Inf"} 1\nh_bucket{le="0.25"} 1\n')
    assert.are.same({ "1.0", "1e-05", "1000.0", "+Inf", "0.25" },
      { l[1].le, l[2].le, l[3].le, l[4].le, l[5].le })
  end)
  it("rewrites summary quantile values", function()
    local l = labels_of('# TYPE s summary\ns{quantile="0"} 1\ns{quantile="1"} 1\ns{quantile="0.5"} 1\n')
    assert.are.same({ "0.0", "1.0", "0.5" }, { l[1].quantile, l[2].quantile, l[3].quantile })
  end)
  it("does the same in OpenMetrics", function()
    local l = labels_of('# TYPE h histogram\nh_bucket{le="10"} 1\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 1\n# EOF\n',
      "application/openmetrics-text; version=1.0.0")
    assert.are.equal("10.0", l[1].le)
  end)
  it("leaves le of other types, other labels and non-numbers alone", function()
    local l = labels_of('# TYPE g gauge\ng{le="1"} 1\n# TYPE h histogram\nh_bucket{le="x",q="1"} 1\n' ..
      'h_bucket{le=" 1"} 1\nh_bucket{le="0x1"} 1\n')
    assert.are.same({ "1", "x", "1", " 1", "0x1" }, { l[1].le, l[2].le, l[2].q, l[3].le, l[4].le })
  end)
  it("follows the latest TYPE line, as Prometheus's parser does", function()
    local l = labels_of('# TYPE h histogram\nother_bucket{le="2"} 1\n')
    assert.are.equal("2.0", l[1].le)
  end)
  it("leaves exemplar labels as exposed", function()
    local s = parse('# TYPE h histogram\nh_bucket{le="1"} 1 # {le="1"} 1\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 1\n# EOF\n',
      "application/openmetrics-text; version=1.0.0")
    assert.are.equal("1.0", s[1].labels.le)
    assert.are.equal("1", s[1].exemplar.labels.le)
  end)
end)
