-- OpenMetrics 1.0 text format: default mode (what Prometheus 3.x's
-- OpenMetricsParser accepts/rejects) and strict mode (full OM 1.0).
--
-- The official OpenMetrics parser suite (../shared/conformance/openmetrics)
-- is run by another spec; this file picks rules that suite covers thinly and,
-- above all, the places where Prometheus is laxer or stricter than the spec.
--
-- Sources: prometheus/prometheus model/textparse/openmetricslex.l,
-- openmetricsparse.go, openmetricsparse_test.go. Lexer facts relied on:
--   #{S} then HELP{S} | TYPE{S} | UNIT{S} | "EOF"\n?   (S = exactly one ' ')
--   <sMeta2>{S}{C}*\n   text after the family name (first blank dropped)
--   <sValue>{S}[^ \n]+  value; <sTimestamp>{S}[^ \n]+ timestamp (float s)
--   <sTimestamp>{S}#{S}\{  exemplar start
--   no rule for tabs, for blank lines or for free comments
-- openmetricsparse.go: HELP uses lvalReplacer (\" \\ \n), TYPE in
-- {counter,gauge,histogram,gaugehistogram,summary,info,stateset,unknown},
-- UNIT must be a "_"-suffix of the family name, label set: comma or '}'
-- after each value (free trailing comma allowed), "# EOF" must end the data.

local H = require("spec.support.parse_helpers")
local parse = H.parse
local OM, STRICT = H.OM, H.STRICT

local function accepts(body, opts)
  return H.accepts(body, OM, opts)
end

-- line: expected line number in "line N: ..."; false/nil: only the shape.
local function rejects(body, line, opts)
  return H.rejects(body, OM, line or false, opts)
end

-- Accepted by default mode, rejected by strict mode (on `line`).
local function strict_only(body, line)
  accepts(body)
  rejects(body, line, STRICT)
end

-- Accepted in both modes.
local function both_accept(body)
  local s, m = accepts(body)
  accepts(body, STRICT)
  return s, m
end

-- Rejected in both modes on `line`.
local function both_reject(body, line)
  rejects(body, line)
  rejects(body, line, STRICT)
end

local function one(body)
  local series, meta = accepts(body)
  assert.are.equal(1, #series)
  return series[1], meta
end

local count_keys = H.count_keys

describe("OpenMetrics (default mode)", function()

  describe("ported from TestOpenMetricsParse", function()
    local input = table.concat({
      "# HELP go_gc_duration_seconds A summary of the GC invocation durations.",
      "# TYPE go_gc_duration_seconds summary",
      "# UNIT go_gc_duration_seconds seconds",
      'go_gc_duration_seconds{quantile="0.25"} 7.424100000000001e-05',
      'go_gc_duration_seconds{quantile="0.5",a="b"} 8.3835e-05',
      "# HELP nohelp1 ",
      "# HELP help2 escape \\ \\n \\\\ \\\" \\x chars",
      "# UNIT nounit ",
      "go_gc_duration_seconds_count 99",
      'some:aggregate:rate5m{a_b="c"} 1',
      "# TYPE go_goroutines gauge",
      "go_goroutines 33 123.123",
      "# TYPE hhh histogram",
      'hhh_bucket{le="+Inf"} 1 # {id="histogram-bucket-test"} 4',
      'hhh_count 1 # {id="histogram-count-test"} 4',
      "# TYPE ggh gaugehistogram",
      'ggh_bucket{le="+Inf"} 1 # {id="gaugehistogram-bucket-test",xx="yy"} 4 123.123',
      "# TYPE smr_seconds summary",
      'smr_seconds_count 2.0 # {id="summary-count-test"} 1 123.321',
      "# TYPE ii info",
      'ii{foo="bar"} 1',
      "# TYPE ss stateset",
      'ss{ss="foo"} 1',
      'ss{ss="bar"} 0',
      "# TYPE un unknown",
      "# TYPE foo counter",
      'foo_total 17.0 1520879607.789 # {id="counter-test"} 5',
      "foo_created 1520872607.123",
      'testmetric{label="\\"bar\\""} 1',
      "# EOF",
    }, "\n") .. "\n"

    local series, meta
    setup(function() series, meta = parse(input, OM) end)

    it("parses all 15 samples", function()
      assert.is_table(series, tostring(meta))
      assert.are.equal(15, #series)
    end)
    it("reads HELP, TYPE and UNIT", function()
      local m = meta.go_gc_duration_seconds
      assert.are.equal("A summary of the GC invocation durations.", m.help)
      assert.are.equal("summary", m.type)
      assert.are.equal("seconds", m.unit)
    end)
    it("reads empty HELP and empty UNIT", function()
      assert.are.equal("", meta.nohelp1.help)
      assert.are.equal("", meta.nounit.unit)
    end)
    it("unescapes HELP with the label-value replacer (\\\" too)", function()
      assert.are.equal("escape \\ \n \\ \" \\x chars", meta.help2.help)
    end)
    it("converts fractional-second timestamps to ms", function()
      assert.are.equal(123123, series[5].timestamp)
      assert.are.equal(1520879607789, series[13].timestamp)
    end)
    it("reads exemplars without timestamp", function()
      local e = series[6].exemplar
      assert.is_table(e)
      assert.are.same({ id = "histogram-bucket-test" }, e.labels)
      assert.are.equal(4, e.value)
      assert.is_nil(e.timestamp)
    end)
    it("reads exemplars with timestamp", function()
      local e = series[8].exemplar
      assert.are.same({ id = "gaugehistogram-bucket-test", xx = "yy" }, e.labels)
      assert.are.equal(123123, e.timestamp)
      assert.are.equal(123321, series[9].exemplar.timestamp)
    end)
    it("reads exemplar after a sample timestamp", function()
      assert.are.equal(5, series[13].exemplar.value)
      assert.are.equal(17, series[13].value)
    end)
    it("reads info, stateset, unknown and gaugehistogram types", function()
      assert.are.equal("info", meta.ii.type)
      assert.are.equal("stateset", meta.ss.type)
      assert.are.equal("unknown", meta.un.type)
      assert.are.equal("gaugehistogram", meta.ggh.type)
      assert.are.same({ ss = "bar" }, series[12].labels)
      assert.are.equal(0, series[12].value)
    end)
    it("returns foo_created as an ordinary sample", function()
      assert.are.equal("foo_created", series[14].name)
      assert.are.equal(1520872607.123, series[14].value)
    end)
    it("unescapes \\\" in label values", function()
      assert.are.same({ label = '"bar"' }, series[15].labels)
    end)
  end)

  describe("ported from TestOpenMetricsParseErrors", function()
    it("accepts '# EOF' without newline", function() assert.are.equal(0, #accepts("# EOF")) end)
    it("accepts '# EOF\\n'", function() assert.are.equal(0, #accepts("# EOF\n")) end)
    it("rejects empty data (no # EOF)", function() rejects("", false) end)
    it("rejects a lone newline", function() rejects("\n", 1) end)
    it("rejects 'metric' without value", function() rejects("metric", 1) end)
    it("rejects 'metric 1' without # EOF", function() rejects("metric 1", false) end)
    it("rejects 'metric 1\\n' without # EOF", function() rejects("metric 1\n", false) end)
    it("rejects an exemplar line without # EOF", function() rejects('metric_total 1 # {aa="bb"} 4', false) end)
    it("rejects 'a' then '#EOF'", function() rejects("a\n#EOF\n", 1) end)
    it("rejects blank lines then '#EOF'", function() rejects("\n\n#EOF\n", 1) end)
    it("rejects a leading blank", function() rejects(" a 1\n#EOF\n", 1) end)
    it("rejects a digit as start token", function() rejects("9\n#EOF\n", 1) end)
    it("rejects TYPE untyped", function() rejects("# TYPE u untyped\n# EOF\n", 1) end)
    it("rejects 'counter ' (trailing blank)", function() rejects("# TYPE c counter \n# EOF\n", 1) end)
    it("rejects '#  TYPE' (two blanks)", function() rejects("#  TYPE c counter\n# EOF\n", 1) end)
    it("rejects TYPE without name", function() rejects("# TYPE \n# EOF\n", 1) end)
    it("rejects TYPE without type", function() rejects("# TYPE m\n# EOF\n", 1) end)
    it("rejects UNIT that is not a suffix", function() rejects("# UNIT metric suffix\n# EOF\n", 1) end)
    it("rejects UNIT suffix without '_'", function() rejects("# UNIT metricsuffix suffix\n# EOF\n", 1) end)
    it("rejects UNIT longer than the name", function() rejects("# UNIT m suffix\n# EOF\n", 1) end)
    it("rejects UNIT without name", function() rejects("# UNIT \n# EOF\n", 1) end)
    it("rejects UNIT without unit", function() rejects("# UNIT m\n# EOF\n", 1) end)
    it("rejects HELP without name", function() rejects("# HELP \n# EOF\n", 1) end)
    it("rejects HELP without text", function() rejects("# HELP m\n# EOF\n", 1) end)
    it("rejects a tab after the name", function() rejects("a\t1\n# EOF\n", 1) end)
    it("rejects a tab inside the value", function() rejects("a 1\t2\n# EOF\n", 1) end)
    it("rejects a trailing blank after the timestamp", function() rejects("a 1 2 \n# EOF\n", 1) end)
    it("rejects a trailing '#'", function() rejects("a 1 2 #\n# EOF\n", 1) end)
    it("rejects a bad timestamp 1z", function() rejects("a 1 1z\n# EOF\n", 1) end)
    it("rejects ' # EOF'", function() rejects(" # EOF\n", 1) end)
    it("rejects data after # EOF", function() rejects("# EOF\na 1", 2) end)
    it("rejects an empty line after # EOF", function() rejects("# EOF\n\n", 2) end)
    it("rejects '# EOFa 1'", function() rejects("# EOFa 1", 1) end)
    it("rejects '#\\tTYPE'", function() rejects("#\tTYPE c counter\n# EOF\n", 1) end)
    it("rejects '# TYPE c  counter'", function() rejects("# TYPE c  counter\n# EOF\n", 1) end)
    it("rejects four fields", function() rejects("a 1 1 1\n# EOF\n", 1) end)
    it("rejects single-quoted values", function() rejects("a{b='c'} 1\n# EOF\n", 1) end)
    it("rejects a leading comma", function() rejects('a{,b="c"} 1\n# EOF\n', 1) end)
    it("rejects a missing comma", function() rejects('a{b="c"d="e"} 1\n# EOF\n', 1) end)
    it("rejects a double comma", function() rejects('a{b="c",,d="e"} 1\n# EOF\n', 1) end)
    it("rejects a label set cut at '='", function() rejects("a{b=\n# EOF\n", 1) end)
    it("rejects a non-ASCII label name byte", function() rejects('a{\xff="foo"} 1\n# EOF\n', 1) end)
    it("rejects invalid UTF-8 in a label value", function() rejects('a{b="\xff"} 1\n# EOF\n', 1) end)
    it("rejects a quoted name followed by a bad pair", function() rejects('{"a","b = "c"}\n# EOF\n', 1) end)
    it("rejects a backslash in a bare label name", function() rejects('{"a",b\\nc="d"} 1\n# EOF\n', 1) end)
    it("rejects value 'true'", function() rejects("a true\n# EOF\n", 1) end)
    it("rejects an unterminated label value", function() rejects('something_weird{problem="\n# EOF\n', 1) end)
    it("rejects an empty label name", function() rejects('empty_label_name{=""} 0\n# EOF\n', 1) end)
    it("rejects 1_2 as value", function() rejects("foo 1_2\n\n# EOF\n", 1) end)
    it("rejects 0x1p-3 as value", function() rejects("foo 0x1p-3\n\n# EOF\n", 1) end)
    it("rejects 0x1P-3 as value", function() rejects("foo 0x1P-3\n\n# EOF\n", 1) end)
    it("rejects 1_2 as timestamp", function() rejects("foo 0 1_2\n\n# EOF\n", 1) end)
    it("rejects an unquoted exemplar label value", function() rejects("custom_metric_total 1 # {aa=bb}\n# EOF\n", 1) end)
    it("rejects an exemplar without value", function() rejects('custom_metric_total 1 # {aa="bb"}\n# EOF\n', 1) end)
    it("rejects an exemplar label without value", function() rejects('custom_metric_total 1 # {bb}\n# EOF\n', 1) end)
    it("rejects a quoted-name-like exemplar entry", function() rejects('custom_metric_total 1 # {bb, a="dd"}\n# EOF\n', 1) end)
    it("rejects a double comma in an exemplar", function() rejects('custom_metric_total 1 # {aa="bb",,cc="dd"} 1\n# EOF\n', 1) end)
    it("rejects 1_2 as exemplar value", function() rejects('custom_metric_total 1 # {aa="bb"} 1_2\n# EOF\n', 1) end)
    it("rejects a hex exemplar value", function() rejects('custom_metric_total 1 # {aa="bb"} 0x1p-3\n# EOF\n', 1) end)
    it("rejects exemplar value 'true'", function() rejects('custom_metric_total 1 # {aa="bb"} true\n# EOF\n', 1) end)
    it("rejects an exemplar label without value after '='", function() rejects('custom_metric_total 1 # {aa="bb",cc=}\n# EOF\n', 1) end)
    it("rejects a label set without metric name", function() rejects('{b="c",} 1\n# EOF\n', 1) end)
    it("rejects a NaN timestamp", function() rejects("a 1 NaN\n# EOF\n", 1) end)
    it("rejects a -Inf timestamp", function() rejects("a 1 -Inf\n# EOF\n", 1) end)
    it("rejects an Inf timestamp", function() rejects("a 1 Inf\n# EOF\n", 1) end)
    it("rejects a NaN exemplar timestamp", function()
      rejects('# TYPE hhh histogram\nhhh_bucket{le="+Inf"} 1 # {aa="bb"} 4 NaN\n# EOF\n', 2)
    end)
    it("rejects a -Inf exemplar timestamp", function()
      rejects('# TYPE hhh histogram\nhhh_bucket{le="+Inf"} 1 # {aa="bb"} 4 -Inf\n# EOF\n', 2)
    end)
  end)

  describe("ported from TestOMNullByteHandling", function()
    it("rejects NUL before a label value", function() rejects('a{b=\0"ssss"} 1\n# EOF\n', 1) end)
    it("rejects NUL in a label name", function() rejects('a{b\0="hiih"} 1\n# EOF\n', 1) end)
    it("rejects NUL after the metric name", function() rejects('a\0{b="ddd"} 1\n# EOF\n', 1) end)
    it("rejects NUL in an exemplar label value", function()
      rejects('custom_metric_total 1 # {b="\0ss"} 1\n# EOF\n', 1)
    end)
    it("rejects '#' alone", function() rejects("#", 1) end)
    it("rejects '# H'", function() rejects("# H", 1) end)
  end)

  describe("metric and label names", function()
    it("accepts [a-zA-Z_:][a-zA-Z0-9_:]* names", function()
      assert.are.equal("aZ_9:x", one("aZ_9:x 1\n# EOF\n").name)
    end)
    it("rejects a name with '-'", function() rejects("ok 1\na-b 1\n# EOF\n", 2) end)
    it("accepts [a-zA-Z_][a-zA-Z0-9_]* label names", function()
      assert.are.same({ _a9 = "x" }, one('m{_a9="x"} 1\n# EOF\n').labels)
    end)
    it("rejects ':' in a label name", function() rejects('m{a:b="x"} 1\n# EOF\n', 1) end)
    it("accepts a quoted metric name and quoted label name", function()
      local s = one('{"my.metric","label.name"="v"} 1\n# EOF\n')
      assert.are.equal("my.metric", s.name)
      assert.are.same({ ["label.name"] = "v" }, s.labels)
    end)
    it("accepts the quoted name between labels (TestUTF8OpenMetricsParse)", function()
      local s = one('{q="0.9","http.status",a="b"} 8.3835e-05\n# EOF\n')
      assert.are.equal("http.status", s.name)
      assert.are.same({ q = "0.9", a = "b" }, s.labels)
    end)
    it("accepts a quoted label name in an exemplar (TestUTF8OpenMetricsParse)", function()
      local s = one('quotedexemplar_count 1 # {"id.thing"="histogram-count-test",other="hello"} 4\n# EOF\n')
      assert.are.same({ ["id.thing"] = "histogram-count-test", other = "hello" }, s.exemplar.labels)
    end)
    it("rejects a bare quoted string in an exemplar", function()
      rejects('m_total 1 # {"a"} 4\n# EOF\n', 1)
    end)
    it("rejects two quoted metric names", function() rejects('{"a","b"} 1\n# EOF\n', 1) end)
    it("rejects a quoted name outside braces", function() rejects('"my.metric" 1\n# EOF\n', 1) end)
  end)

  describe("label values and sets", function()
    it("unescapes \\\\, \\\" and \\n", function()
      local s = one('m{a="x\\\\y",b="q\\"q",c="l1\\nl2"} 1\n# EOF\n')
      assert.are.same({ a = "x\\y", b = 'q"q', c = "l1\nl2" }, s.labels)
    end)
    it("keeps unknown escapes verbatim (conformance 'escaping' accepts \\z)", function()
      assert.are.equal("b\\a\\z", one('m{foo="b\\\\a\\z"} 1\n# EOF\n').labels.foo)
    end)
    it("accepts ' # ' inside a label value", function()
      assert.are.equal("b # ", one('m{foo="b # "} 3\n# EOF\n').labels.foo)
    end)
    it("accepts an empty label value", function()
      assert.are.equal("", one('m{a=""} 1\n# EOF\n').labels.a)
    end)
    it("rejects a raw newline in a label value", function()
      rejects('m{a="x\ny"} 1\n# EOF\n', 1)
    end)
    it("accepts empty braces", function()
      assert.are.equal(0, count_keys(one("m{} 1\n# EOF\n").labels))
    end)
    it("accepts a free trailing comma", function()
      assert.are.same({ a = "1" }, one('m{a="1",} 1\n# EOF\n').labels)
    end)
    it("rejects a blank after a comma", function() rejects('m{a="1", b="2"} 1\n# EOF\n', 1) end)
    it("rejects a blank after '{'", function() rejects('m{ a="1"} 1\n# EOF\n', 1) end)
    it("rejects a blank around '='", function() rejects('m{a = "1"} 1\n# EOF\n', 1) end)
    it("rejects a blank between name and '{'", function() rejects('m {a="1"} 1\n# EOF\n', 1) end)
    it("rejects duplicate label names", function() rejects('ok 1\nm{a="1",a="2"} 1\n# EOF\n', 2) end)
  end)

  describe("values", function()
    local good = { { "1", 1 }, { "-1.5", -1.5 }, { "1e3", 1000 }, { ".5", 0.5 },
      { "+Inf", math.huge }, { "-Inf", -math.huge }, { "Inf", math.huge },
      { "inf", math.huge }, { "Infinity", math.huge }, { "007", 7 } }
    for _, c in ipairs(good) do
      it("accepts " .. c[1], function()
        assert.are.equal(c[2], one("m " .. c[1] .. "\n# EOF\n").value)
      end)
    end
    for _, c in ipairs({ { "nan" }, { "NAN" }, { "-inf", -math.huge },
      { "+infinity", math.huge }, { "-Infinity", -math.huge } }) do
      it("accepts the spelling " .. c[1] .. " (ParseFloat is case-insensitive)", function()
        local v = one("m " .. c[1] .. "\n# EOF\n").value
        if c[2] then assert.are.equal(c[2], v) else assert.is_true(v ~= v) end
      end)
    end
    for _, v in ipairs({ "Inf1", "infinit", "NaNa", "+-1" }) do
      it("rejects the spelling " .. v, function() rejects("m " .. v .. "\n# EOF\n", 1) end)
    end
    it("accepts NaN", function()
      local v = one("m NaN\n# EOF\n").value
      assert.is_true(v ~= v)
    end)
    for _, v in ipairs({ "0x10", "1e400", "1.2.3", "nan1", "", "1f" }) do
      it("rejects '" .. v .. "'", function() rejects("ok 1\nm " .. v .. "\n# EOF\n", 2) end)
    end
    it("rejects two blanks before the value", function() rejects("m  1\n# EOF\n", 1) end)
    it("rejects a trailing blank after the value", function() rejects("m 1 \n# EOF\n", 1) end)
  end)

  describe("timestamps", function()
    it("reads integer seconds as ms", function()
      local t = one("m 1 1520879607\n# EOF\n").timestamp
      assert.are.equal(1520879607000, t)
    end)
    it("reads negative seconds", function()
      assert.are.equal(-1500, one("m 1 -1.5\n# EOF\n").timestamp)
    end)
    it("reads an exponent timestamp", function()
      assert.are.equal(1000000, one("m 1 1e3\n# EOF\n").timestamp)
    end)
    it("leaves timestamp nil when absent", function()
      assert.is_nil(one("m 1\n# EOF\n").timestamp)
    end)
    it("accepts a '+' sign on a timestamp (ParseFloat)", function()
      assert.are.equal(1000, one("m 1 +1\n# EOF\n").timestamp)
    end)
    it("rejects a two-blank gap before the timestamp", function() rejects("m 1  2\n# EOF\n", 1) end)
    it("rejects a hex timestamp", function() rejects("m 1 0x1p3\n# EOF\n", 1) end)
  end)

  describe("exemplars", function()
    it("accepts empty exemplar labels", function()
      local e = one("m_total 1 # {} 2\n# EOF\n").exemplar
      assert.is_table(e)
      assert.are.equal(0, count_keys(e.labels))
      assert.are.equal(2, e.value)
    end)
    it("leaves exemplar nil when absent", function()
      assert.is_nil(one("m_total 1\n# EOF\n").exemplar)
    end)
    it("reads a fractional exemplar timestamp", function()
      assert.are.equal(1520879607789,
        one('m_total 1 # {a="b"} 1 1520879607.789\n# EOF\n').exemplar.timestamp)
    end)
    it("accepts a trailing comma in exemplar labels", function()
      assert.are.same({ a = "b" }, one('m_total 1 # {a="b",} 1\n# EOF\n').exemplar.labels)
    end)
    it("rejects '#{' without blank", function() rejects('m_total 1 #{a="b"} 1\n# EOF\n', 1) end)
    it("rejects two blanks before '#'", function() rejects('m_total 1  # {a="b"} 1\n# EOF\n', 1) end)
    it("rejects an exemplar without braces", function() rejects('m_total 1 # a 1\n# EOF\n', 1) end)
    it("rejects an extra field after the exemplar timestamp", function()
      rejects('m_total 1 # {a="b"} 1 2 3\n# EOF\n', 1)
    end)
    it("rejects a trailing blank after an exemplar", function()
      rejects('m_total 1 # {a="b"} 1 \n# EOF\n', 1)
    end)
  end)

  describe("HELP, TYPE, UNIT and comments", function()
    for _, t in ipairs({ "counter", "gauge", "histogram", "gaugehistogram", "summary",
      "info", "stateset", "unknown" }) do
      it("accepts TYPE " .. t, function()
        local _, meta = accepts("# TYPE m " .. t .. "\n# EOF\n")
        assert.are.equal(t, meta.m.type)
      end)
    end
    it("rejects TYPE Counter (case matters)", function() rejects("# TYPE m Counter\n# EOF\n", 1) end)
    it("accepts UNIT as a _suffix", function()
      local _, meta = accepts("# TYPE m_seconds gauge\n# UNIT m_seconds seconds\nm_seconds 1\n# EOF\n")
      assert.are.equal("seconds", meta.m_seconds.unit)
    end)
    it("accepts a quoted family in UNIT", function()
      local _, meta = accepts('# UNIT "a.b_bytes" bytes\n# EOF\n')
      assert.are.equal("bytes", meta["a.b_bytes"].unit)
    end)
    it("keeps the HELP text after exactly one blank", function()
      local _, meta = accepts("# HELP m  two\n# EOF\n")
      assert.are.equal(" two", meta.m.help)
    end)
    it("rejects invalid UTF-8 in HELP", function() rejects("# HELP m \xff\n# EOF\n", 1) end)
    it("rejects a free comment", function() rejects("# hello\n# EOF\n", 1) end)
    it("rejects '#' alone on a line", function() rejects("m 1\n#\n# EOF\n", 2) end)
    it("rejects a blank line between samples", function() rejects("a 1\n\nb 1\n# EOF\n", 2) end)
    it("rejects a whitespace-only line", function() rejects("a 1\n \n# EOF\n", 2) end)
  end)

  describe("default mode is lenient where Prometheus is", function()
    it("accepts interleaved families", function()
      accepts('# TYPE a counter\na_total 1\n# TYPE b gauge\nb 1\na_total{x="y"} 2\n# EOF\n')
    end)
    it("accepts buckets out of order", function()
      accepts('# TYPE h histogram\nh_bucket{le="2"} 1\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_count 2\nh_sum 3\n# EOF\n')
    end)
    it("accepts a histogram without +Inf bucket", function()
      accepts('# TYPE h histogram\nh_bucket{le="1"} 1\nh_count 1\nh_sum 1\n# EOF\n')
    end)
    it("accepts a negative counter", function()
      assert.are.equal(-1, accepts("# TYPE c counter\nc_total -1\n# EOF\n")[1].value)
    end)
    it("accepts an exemplar on a gauge", function()
      accepts('# TYPE g gauge\ng 1 # {a="b"} 1\n# EOF\n')
    end)
  end)
end)

describe("OpenMetrics (strict mode)", function()
  describe("accepted in both modes", function()
    it("accepts a well-formed exposition", function()
      local series, meta = both_accept(table.concat({
        "# TYPE a_seconds counter",
        "# UNIT a_seconds seconds",
        "# HELP a_seconds Help.",
        'a_seconds_total 1 # {t="x"} 1 1.5',
        "a_seconds_created 2",
        "# EOF",
      }, "\n") .. "\n")
      assert.are.equal(2, #series)
      assert.are.equal("counter", meta.a_seconds.type)
      assert.are.equal("seconds", meta.a_seconds.unit)
      assert.are.equal(1500, series[1].exemplar.timestamp)
    end)
    it("accepts empty braces", function() both_accept("# TYPE a gauge\na{} 1\n# EOF\n") end)
    it("accepts an exemplar of exactly 128 characters", function()
      both_accept('# TYPE c counter\nc_total 1 # {a="' .. ("x"):rep(127) .. '"} 1\n# EOF\n')
    end)
    it("accepts unknown escapes in HELP (conformance 'help_escaping' accepts \\foo)", function()
      both_accept("# TYPE a0 counter\n# HELP a0 \\foo\na0_total 1\n# EOF\n")
    end)
    it("accepts a stateset", function()
      both_accept('# TYPE s stateset\ns{s="a"} 1\ns{s="b"} 0\n# EOF\n')
    end)
    for _, v in ipairs({ "NaN", "nan", "+Inf", "-inf", "Infinity" }) do
      it("accepts gauge value " .. v, function()
        both_accept("# TYPE g gauge\ng " .. v .. "\n# EOF\n")
      end)
    end
    it("accepts a gaugehistogram with _gcount and _gsum", function()
      local series = both_accept('# TYPE g gaugehistogram\ng_bucket{le="+Inf"} 1\ng_gcount 1\ng_gsum 2\n# EOF\n')
      assert.are.equal(3, #series)
      assert.are.equal("g_gcount", series[2].name)
      assert.are.equal("g_gsum", series[3].name)
      assert.are.equal(2, series[3].value)
    end)
    it("accepts an info metric", function()
      both_accept('# TYPE i info\ni_info{v="1.2"} 1\n# EOF\n')
    end)
  end)

  describe("rejected in both modes", function()
    it("rejects a blank line", function() both_reject("# TYPE a gauge\na 1\n\n# EOF\n", 3) end)
    it("rejects UNIT not a suffix", function() both_reject("# UNIT a_seconds bytes\n# EOF\n", 1) end)
    it("rejects a missing # EOF", function()
      rejects("# TYPE a gauge\na 1\n", false)
      rejects("# TYPE a gauge\na 1\n", false, STRICT)
    end)
    it("rejects data after # EOF", function() both_reject("# EOF\n# EOF\n", 2) end)
    it("rejects two blanks between tokens", function() both_reject("# TYPE a gauge\na  1\n# EOF\n", 2) end)
  end)

  describe("strict-only rejections", function()
    it("rejects an interleaved family", function()
      strict_only('# TYPE a counter\na_total 1\n# TYPE b gauge\nb 1\na_total{x="y"} 2\n# EOF\n', 5)
    end)
    it("rejects buckets out of order", function()
      strict_only('# TYPE h histogram\nh_bucket{le="2"} 1\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_count 2\nh_sum 3\n# EOF\n', 3)
    end)
    it("rejects a histogram without +Inf bucket", function()
      strict_only('# TYPE h histogram\nh_bucket{le="1"} 1\nh_count 1\nh_sum 1\n# EOF\n', false)
    end)
    it("rejects a negative counter value", function()
      strict_only("# TYPE c counter\nc_total -1\n# EOF\n", 2)
    end)
    it("rejects an exemplar of 129 characters", function()
      strict_only('# TYPE c counter\nc_total 1 # {a="' .. ("x"):rep(128) .. '"} 1\n# EOF\n', 2)
    end)
    it("counts exemplar length in code points, not bytes", function()
      -- 1 + 127 two-byte characters = 128 code points (254 bytes): allowed
      both_accept('# TYPE c counter\nc_total 1 # {a="' .. ("é"):rep(127) .. '"} 1\n# EOF\n')
    end)
    it("rejects an exemplar on a gauge", function()
      strict_only('# TYPE g gauge\ng 1 # {a="b"} 1\n# EOF\n', 2)
    end)
    it("rejects a trailing comma in a label set", function()
      strict_only('# TYPE a gauge\na{a="1",} 1\n# EOF\n', 2)
    end)
    it("rejects a trailing comma in exemplar labels", function()
      strict_only('# TYPE c counter\nc_total 1 # {a="b",} 1\n# EOF\n', 2)
    end)
    it("rejects an exemplar on a summary _count", function()
      strict_only('# TYPE s summary\ns_count 1 # {a="b"} 1\ns_sum 1\n# EOF\n', 2)
    end)
    it("rejects an interleaved series inside a family", function()
      strict_only('# TYPE a gauge\na{x="1"} 1 1\na{x="2"} 1 1\na{x="1"} 2 2\n# EOF\n', 4)
    end)
    it("rejects an info sample without _info suffix", function()
      strict_only('# TYPE i info\ni{a="b"} 1\n# EOF\n', 2)
    end)
    it("accepts repeated samples of one series with equal timestamps", function()
      both_accept("# TYPE a gauge\na 1 1\na 2 1\n# EOF\n")
    end)
    it("rejects metadata after the family's samples", function()
      strict_only("# TYPE a gauge\na 1\n# HELP a help\n# EOF\n", 3)
    end)
    it("rejects a repeated TYPE line", function()
      strict_only("# TYPE a gauge\n# TYPE a gauge\na 1\n# EOF\n", 2)
    end)
    it("rejects a counter sample without _total", function()
      strict_only("# TYPE c counter\nc 1\n# EOF\n", 2)
    end)
    it("rejects a stateset value other than 0/1", function()
      strict_only('# TYPE s stateset\ns{s="a"} 2\n# EOF\n', 2)
    end)
  end)
end)
