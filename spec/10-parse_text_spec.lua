-- Prometheus text exposition format 0.0.4, default mode.
--
-- Every expectation below is derived from Prometheus's own parser
-- (prometheus/prometheus model/textparse/promlex.l, promparse.go,
-- promparse_test.go), not from promscrape's implementation. Where a case is
-- ported from a Prometheus test table, the test name is cited.
--
-- Lexer facts relied on (promlex.l):
--   {M}({M}|{D})*  metric name, M = [a-zA-Z_:]      (sInit)
--   {L}({L}|{D})*  label name,  L = [a-zA-Z_]       (sLabels)
--   \"(\\.|[^\\"])*\"  label value / quoted name   (any escape is lexed)
--   <*>[ \t]+      whitespace is skipped everywhere (any amount, tabs too)
--   <sValue>[^{ \t\n]+  value token, then strconv.ParseFloat (no p/P/_)
--   <sTimestamp>{D}+    timestamp: digits only, strconv.ParseInt
--   #[ \t]+ HELP|TYPE[\t ]+ ... metadata; any other '#' line is a comment
-- promparse.go: lvalReplacer (\" \\ \n), helpReplacer (\\ \n only),
-- TYPE in {counter,gauge,histogram,summary,untyped}, label value and HELP
-- text must be valid UTF-8, blank lines allowed, free trailing comma.

local H = require("spec.support.parse_helpers")
local parse = H.parse
local TEXT = H.TEXT

local function accepts(body)
  return H.accepts(body, TEXT)
end

-- line: expected line number in "line N: ..."; false/nil: only the shape.
local function rejects(body, line)
  return H.rejects(body, TEXT, line or false)
end

-- Parses a body that must hold exactly one sample and returns it.
local function one(body)
  local series, meta = accepts(body)
  assert.are.equal(1, #series)
  return series[1], meta
end

local count_keys = H.count_keys

describe("text 0.0.4 (default mode)", function()

  describe("ported from TestPromParse", function()
    -- The table input of TestPromParse, minus the NUL byte lines (the NUL
    -- policy is covered in 12-parse_api_spec.lua).
    local input = table.concat({
      "# HELP go_gc_duration_seconds A summary of the GC invocation durations.",
      "# \tTYPE go_gc_duration_seconds summary",
      'go_gc_duration_seconds{quantile="0.1"} 4.9351e-05',
      'go_gc_duration_seconds{quantile="0.25",} 7.424100000000001e-05',
      'go_gc_duration_seconds{quantile="0.5",a="b"} 8.3835e-05',
      'go_gc_duration_seconds{quantile="0.8", a="b"} 8.3835e-05',
      'go_gc_duration_seconds{ quantile="0.9", a="b"} 8.3835e-05',
      "# Hrandom comment starting with prefix of HELP",
      "#",
      'wind_speed{A="2",c="3"} 12345',
      "# comment with escaped \\n newline",
      "# comment with escaped \\ escape character",
      "# HELP nohelp1",
      "# HELP nohelp2 ",
      'go_gc_duration_seconds{ quantile="1.0", a="b" } 8.3835e-05',
      'go_gc_duration_seconds { quantile="1.0", a="b" } 8.3835e-05',
      'go_gc_duration_seconds { quantile= "1.0", a= "b", } 8.3835e-05',
      'go_gc_duration_seconds { quantile = "1.0", a = "b" } 8.3835e-05',
      'go_gc_duration_seconds { quantile = "2.0" a = "b" } 8.3835e-05',
      "go_gc_duration_seconds_count 99",
      'some:aggregate:rate5m{a_b="c"}\t1',
      "# HELP go_goroutines Number of goroutines that currently exist.",
      "# TYPE go_goroutines gauge",
      "go_goroutines 33  \t123123",
      "_metric_starting_with_underscore 1",
      'testmetric{_label_starting_with_underscore="foo"} 1',
      'testmetric{label="\\"bar\\""} 1',
    }, "\n")

    local series, meta
    setup(function() series, meta = parse(input, TEXT) end)

    it("parses the whole input into 17 samples", function()
      assert.is_table(series, tostring(meta))
      assert.are.equal(17, #series)
    end)

    it("reads HELP and a TYPE written as '# \\tTYPE'", function()
      assert.are.equal("A summary of the GC invocation durations.",
        meta.go_gc_duration_seconds.help)
      assert.are.equal("summary", meta.go_gc_duration_seconds.type)
      assert.are.equal("gauge", meta.go_goroutines.type)
    end)

    it("reads '# HELP name' and '# HELP name ' as empty help", function()
      assert.are.equal("", meta.nohelp1.help)
      assert.are.equal("", meta.nohelp2.help)
    end)

    it("accepts every whitespace layout inside braces", function()
      for _, i in ipairs({ 2, 3, 4, 5, 7, 8, 9, 10, 11 }) do
        assert.are.equal("go_gc_duration_seconds", series[i].name)
      end
      assert.are.same({ quantile = "1.0", a = "b" }, series[9].labels)
      -- { quantile = "2.0" a = "b" }: no comma between the pairs
      assert.are.same({ quantile = "2.0", a = "b" }, series[11].labels)
    end)

    it("keeps the values", function()
      assert.are.equal(4.9351e-05, series[1].value)
      assert.are.equal(7.424100000000001e-05, series[2].value)
      assert.are.equal(12345, series[6].value)
      assert.are.equal(99, series[12].value)
    end)

    it("reads tab separators and a multi-blank timestamp gap", function()
      assert.are.equal("some:aggregate:rate5m", series[13].name)
      assert.are.same({ a_b = "c" }, series[13].labels)
      assert.are.equal(33, series[14].value)
      assert.are.equal(123123, series[14].timestamp)
    end)

    it("reads names and labels starting with an underscore", function()
      assert.are.equal("_metric_starting_with_underscore", series[15].name)
      assert.are.same({ _label_starting_with_underscore = "foo" }, series[16].labels)
    end)

    it("unescapes \\\" in a label value", function()
      assert.are.same({ label = '"bar"' }, series[17].labels)
    end)
  end)

  describe("ported from TestPromParseErrors", function()
    it("rejects a name without value: 'a'", function() rejects("a", 1) end)
    it("rejects single-quoted label values", function() rejects("a{b='c'} 1\n", 1) end)
    it("rejects a label set cut at '='", function() rejects("a{b=\n", 1) end)
    it("rejects a non-ASCII byte as label name", function() rejects("a{\xff=\"foo\"} 1\n", 1) end)
    it("rejects invalid UTF-8 in a label value", function() rejects("a{b=\"\xff\"} 1\n", 1) end)
    it("rejects a quoted label name without '='", function() rejects('{"a", "b = "c"}', 1) end)
    it("rejects a backslash in an unquoted label name", function() rejects('{"a",b\\nc="d"} 1', 1) end)
    it("rejects a non-numeric value 'true'", function() rejects("a true\n", 1) end)
    it("rejects an unterminated label value", function() rejects('something_weird{problem="', 1) end)
    it("rejects an empty label name", function() rejects('empty_label_name{=""} 0', 1) end)
    it("rejects '_' in a value (1_2)", function() rejects("foo 1_2\n", 1) end)
    it("rejects a hex float value 0x1p-3", function() rejects("foo 0x1p-3\n", 1) end)
    it("rejects a hex float value 0x1P-3", function() rejects("foo 0x1P-3\n", 1) end)
    it("rejects '_' in a timestamp (0 1_2)", function() rejects("foo 0 1_2\n", 1) end)
    it("rejects a label set without metric name", function() rejects('{a="ok"} 1', 1) end)
    it("rejects '# TYPE #'", function() rejects("# TYPE #\n#EOF\n", 1) end)
    it("rejects '# HELP #'", function() rejects("# HELP #\n#EOF\n", 1) end)
  end)

  describe("metric names", function()
    it("accepts [a-zA-Z_:][a-zA-Z0-9_:]*", function()
      local s = one("aZ_9:x:1 1\n")
      assert.are.equal("aZ_9:x:1", s.name)
    end)
    it("accepts a name starting with ':'", function()
      assert.are.equal(":a", one(":a 1\n").name)
    end)
    it("rejects a name starting with a digit", function() rejects("9a 1\n", 1) end)
    it("rejects '-' in a name (the rest is lexed as the value)", function() rejects("a-b 1\n", 1) end)
    it("rejects '.' in an unquoted name", function() rejects("ok 1\na.b 1\n", 2) end)
    it("rejects a line starting with '='", function() rejects("=a 1\n", 1) end)
  end)

  describe("label names", function()
    it("accepts [a-zA-Z_][a-zA-Z0-9_]*", function()
      assert.are.same({ aZ_09 = "x", _b = "y" }, one('m{aZ_09="x",_b="y"} 1\n').labels)
    end)
    it("rejects a label name starting with a digit", function() rejects('m{1a="x"} 1\n', 1) end)
    it("rejects ':' in a label name", function() rejects('m{a:b="x"} 1\n', 1) end)
    it("rejects '.' in an unquoted label name", function() rejects('m{a.b="x"} 1\n', 1) end)
    it("accepts a quoted label name with '.'", function()
      assert.are.same({ ["a.b"] = "x" }, one('m{"a.b"="x"} 1\n').labels)
    end)
  end)

  describe("label values", function()
    it("unescapes \\\\, \\\" and \\n (lvalReplacer)", function()
      local s = one('m{a="x\\\\y",b="q\\"q",c="l1\\nl2"} 1\n')
      assert.are.equal("x\\y", s.labels.a)
      assert.are.equal('q"q', s.labels.b)
      assert.are.equal("l1\nl2", s.labels.c)
    end)
    it("keeps other escapes such as \\t verbatim (not in lvalReplacer)", function()
      assert.are.equal("a\\tb", one('m{a="a\\tb"} 1\n').labels.a)
    end)
    it("keeps \\z verbatim", function()
      assert.are.equal("\\z", one('m{a="\\z"} 1\n').labels.a)
    end)
    it("accepts an empty label value", function()
      assert.are.equal("", one('m{a=""} 1\n').labels.a)
    end)
    it("accepts '#', '{', '}', ',' and '=' inside a value", function()
      assert.are.equal("# {a},=", one('m{a="# {a},="} 1\n').labels.a)
    end)
    it("accepts UTF-8 in a label value", function()
      assert.are.equal("Heizölrückstoß €", one('m{a="Heizölrückstoß €"} 1\n').labels.a)
    end)
    it("rejects an unquoted label value", function() rejects('ok 1\nm{a=b} 1\n', 2) end)
    it("rejects a label value ending in an escaped quote", function() rejects('m{a="x\\"} 1\n', 1) end)
    it("rejects a missing label value", function() rejects('m{a=} 1\n', 1) end)
    it("rejects a missing '='", function() rejects('m{a"x"} 1\n', 1) end)
  end)

  describe("label sets", function()
    it("accepts empty braces", function()
      local s = one("m{} 1\n")
      assert.are.equal("m", s.name)
      assert.are.equal(0, count_keys(s.labels))
    end)
    it("rejects empty braces without a name", function() rejects("{} 1\n", 1) end)
    it("accepts a free trailing comma", function()
      assert.are.same({ a = "1" }, one('m{a="1",} 1\n').labels)
    end)
    it("rejects a leading comma", function() rejects('m{,a="1"} 1\n', 1) end)
    it("rejects a lone comma", function() rejects('m{,} 1\n', 1) end)
    it("rejects a double comma", function() rejects('m{a="1",,b="2"} 1\n', 1) end)
    it("rejects an unclosed label set", function() rejects('m{a="1" 1\n', 1) end)
    it("rejects duplicate label names", function() rejects('m{a="1",a="2"} 1\n', 1) end)
    it("rejects __name__ next to a bare metric name (duplicate __name__)", function()
      rejects('a{__name__="b"} 1\n', 1)
    end)
    it("rejects __name__ as the only name source (parser: metric name not set)", function()
      rejects('{__name__="b"} 1\n', 1)
    end)
    it("keeps label order-independent content", function()
      assert.are.same({ z = "1", a = "2", m = "3" }, one('m{z="1",a="2",m="3"} 1\n').labels)
    end)
  end)

  describe("quoted (UTF-8) metric names", function()
    -- TestUTF8PromParse
    it("accepts the name as the first quoted string in braces", function()
      local s = one('{"go.gc_duration_seconds",quantile="0.5",a="b"} 8.3835e-05\n')
      assert.are.equal("go.gc_duration_seconds", s.name)
      assert.are.same({ quantile = "0.5", a = "b" }, s.labels)
    end)
    it("accepts the name in braces with blanks and a trailing comma", function()
      local s = one('{ "go.gc_duration_seconds", quantile= "1.0", a= "b", } 8.3835e-05\n')
      assert.are.equal("go.gc_duration_seconds", s.name)
      assert.are.same({ quantile = "1.0", a = "b" }, s.labels)
    end)
    it("unescapes the quoted name and quoted label name", function()
      local s = one('{"Heizöl 10€ \\"x\\" {a\\nb}","strange©™\\n\'q\' \\"n\\""="6"} 10.0\n')
      assert.are.equal('Heizöl 10€ "x" {a\nb}', s.name)
      assert.are.equal("6", s.labels["strange©™\n'q' \"n\""])
    end)
    it("accepts the quoted name after a label", function()
      local s = one('{a="b","my.metric"} 1\n')
      assert.are.equal("my.metric", s.name)
      assert.are.same({ a = "b" }, s.labels)
    end)
    it("rejects two quoted names", function() rejects('{"a","b"} 1\n', 1) end)
    it("rejects a quoted name after a bare name", function() rejects('a{"b"} 1\n', 1) end)
    it("rejects a quoted name outside braces", function() rejects('"my.metric"{a="b"} 1\n', 1) end)
    it("accepts a quoted name in HELP and TYPE", function()
      local _, meta = accepts('# HELP "go.gc" A summary.\n# TYPE "go.gc" summary\n')
      assert.are.equal("A summary.", meta["go.gc"].help)
      assert.are.equal("summary", meta["go.gc"].type)
    end)
  end)

  describe("values", function()
    local good = {
      { "1", 1 }, { "-1", -1 }, { "+1", 1 }, { "1.5", 1.5 }, { ".5", 0.5 },
      { "5.", 5 }, { "1e3", 1000 }, { "1E3", 1000 }, { "1e-3", 0.001 },
      { "-1.5e+10", -1.5e10 }, { "007", 7 }, { "+Inf", math.huge },
      { "-Inf", -math.huge }, { "Inf", math.huge }, { "inf", math.huge },
      { "Infinity", math.huge }, { "-infinity", -math.huge },
      { "1.7976931348623157e308", 1.7976931348623157e308 },
    }
    for _, c in ipairs(good) do
      it("accepts " .. c[1], function()
        assert.are.equal(c[2], one("m " .. c[1] .. "\n").value)
      end)
    end
    for _, v in ipairs({ "NaN", "nan", "NAN" }) do
      it("accepts " .. v .. " as NaN", function()
        local x = one("m " .. v .. "\n").value
        assert.is_number(x)
        assert.is_true(x ~= x)
      end)
    end
    local bad = { "0x10", "1_000", "1.2.3", "1e", "--1", "1,5", "NaN1", "in",
      "true", "0x1.8p1", "1e400", "1f", "∞" }
    for _, v in ipairs(bad) do
      it("rejects " .. v, function() rejects("ok 1\nm " .. v .. "\n", 2) end)
    end
    it("accepts an underflowing 1e-400 as 0 (ParseFloat returns 0, no error)", function()
      assert.are.equal(0, one("m 1e-400\n").value)
    end)
    it("rejects a missing value after labels", function() rejects('m{a="b"}\n', 1) end)
    it("rejects CRLF line endings (\\r becomes part of the value)", function()
      rejects("m 1\r\n", 1)
    end)
  end)

  describe("timestamps", function()
    it("accepts integer milliseconds", function()
      assert.are.equal(1395066363000, one("m 1 1395066363000\n").timestamp)
    end)
    it("accepts 0", function() assert.are.equal(0, one("m 1 0\n").timestamp) end)
    it("accepts leading zeros (ParseInt base 10)", function()
      assert.are.equal(123, one("m 1 0123\n").timestamp)
    end)
    it("accepts the int64 maximum", function()
      -- LuaJIT has no integers: there the nearest double is what comes back.
      assert.are.equal(math.maxinteger or 2^63, one("m 1 9223372036854775807\n").timestamp)
    end)
    it("leaves timestamp nil when absent", function()
      assert.is_nil(one("m 1\n").timestamp)
    end)
    it("rejects a '+' sign on a timestamp (lexer: {D}+)", function() rejects("m 1 +1\n", 1) end)
    it("accepts blanks after the timestamp", function()
      assert.are.equal(2, one("m 1 2 \t\n").timestamp)
    end)
    it("rejects a negative timestamp (lexer: {D}+)", function() rejects("m 1 -1\n", 1) end)
    it("rejects a fractional timestamp", function() rejects("m 1 1.5\n", 1) end)
    it("rejects an exponent timestamp", function() rejects("m 1 1e3\n", 1) end)
    it("rejects an int64 overflow", function() rejects("m 1 9223372036854775808\n", 1) end)
    it("rejects a third field", function() rejects("m 1 2 3\n", 1) end)
    it("rejects an OpenMetrics exemplar", function() rejects('m_total 1 # {a="b"} 1\n', 1) end)
  end)

  describe("whitespace", function()
    it("accepts tabs and several blanks between tokens", function()
      local s = one("m \t  1 \t 42\n")
      assert.are.equal(1, s.value)
      assert.are.equal(42, s.timestamp)
    end)
    it("accepts a blank between name and '{'", function()
      assert.are.same({ a = "b" }, one('m {a="b"} 1\n').labels)
    end)
    it("accepts blanks around '=' and ','", function()
      assert.are.same({ a = "b", c = "d" }, one('m{ a = "b" , c = "d" } 1\n').labels)
    end)
    it("accepts leading and trailing whitespace", function()
      local s = one("  \tm 1 \t\n")
      assert.are.equal("m", s.name)
      assert.are.equal(1, s.value)
    end)
    it("accepts a tab right after the name", function()
      assert.are.equal(2, one("m\t2\n").value)
    end)
    it("accepts a value glued to the closing brace", function()
      -- {sLabels}\} switches to sValue; the value needs no blank before it.
      assert.are.equal(1, one('m{a="b"}1\n').value)
    end)
  end)

  describe("blank lines and comments", function()
    it("accepts empty lines anywhere", function()
      local series = accepts("\n\nm 1\n\n\nn 2\n\n")
      assert.are.equal(2, #series)
      assert.are.equal("n", series[2].name)
    end)
    it("accepts whitespace-only lines", function()
      assert.are.equal(1, #accepts("   \n\t\nm 1\n"))
    end)
    it("accepts arbitrary comments", function()
      local series, meta = accepts("# hello world\n#\n#no blank\nm 1\n")
      assert.are.equal(1, #series)
      assert.are.equal(0, count_keys(meta))
    end)
    it("treats '#HELP' (no blank) as a comment, not metadata", function()
      local _, meta = accepts("#HELP m some help\nm 1\n")
      assert.is_nil(meta.m)
    end)
    it("treats '# HELP' without a name as a comment", function()
      assert.are.equal(1, #accepts("# HELP\nm 1\n"))
    end)
    it("treats '# UNIT' as a plain comment", function()
      local _, meta = accepts("# UNIT m_seconds seconds\nm_seconds 1\n")
      assert.is_true(meta.m_seconds == nil or meta.m_seconds.unit == nil)
    end)
    it("treats '# EOF' as a plain comment", function()
      assert.are.equal(2, #accepts("m 1\n# EOF\nn 2\n"))
    end)
    it("accepts metadata after leading whitespace", function()
      local _, meta = accepts("  # HELP m the help\n")
      assert.are.equal("the help", meta.m.help)
    end)
    it("rejects a line starting with '{' garbage after a comment", function()
      rejects("# fine\n{\n", 2)
    end)
  end)

  describe("HELP", function()
    it("unescapes \\\\ and \\n only (helpReplacer)", function()
      local _, meta = accepts('# HELP m a\\\\b\\nc\n')
      assert.are.equal("a\\b\nc", meta.m.help)
    end)
    it("keeps \\\" verbatim (not in helpReplacer)", function()
      local _, meta = accepts('# HELP m say \\"hi\\"\n')
      assert.are.equal('say \\"hi\\"', meta.m.help)
    end)
    it("keeps \\t verbatim", function()
      local _, meta = accepts('# HELP m a\\tb\n')
      assert.are.equal("a\\tb", meta.m.help)
    end)
    it("keeps quotes, braces and '#' literally", function()
      local _, meta = accepts('# HELP m "q" {x} # y\n')
      assert.are.equal('"q" {x} # y', meta.m.help)
    end)
    it("keeps trailing blanks", function()
      local _, meta = accepts('# HELP m text  \n')
      assert.are.equal("text  ", meta.m.help)
    end)
    it("keeps all but the first blank after the name", function()
      -- <sMeta2>{C}* takes "  two", text = buf[1:].
      local _, meta = accepts('# HELP m  two\n')
      assert.are.equal(" two", meta.m.help)
    end)
    it("accepts a tab after HELP", function()
      local _, meta = accepts('# HELP\tm tabbed\n')
      assert.are.equal("tabbed", meta.m.help)
    end)
    it("keeps a trailing lone backslash", function()
      local _, meta = accepts('# HELP m x\\\n')
      assert.are.equal("x\\", meta.m.help)
    end)
    it("rejects '# HELP ' without a name", function() rejects("m 1\n# HELP \n", 2) end)
    it("rejects invalid UTF-8 in help text", function() rejects("# HELP m bad \xff\xfe\n", 1) end)
    it("rejects a digit-leading family name", function() rejects("# HELP 1m help\n", 1) end)
  end)

  describe("TYPE", function()
    for _, t in ipairs({ "counter", "gauge", "histogram", "summary" }) do
      it("accepts " .. t, function()
        local _, meta = accepts("# TYPE m " .. t .. "\n")
        assert.are.equal(t, meta.m.type)
      end)
    end
    it("accepts untyped", function()
      local _, meta = accepts("# TYPE m untyped\nm 1\n")
      assert.are.equal("untyped", meta.m.type)
    end)
    for _, t in ipairs({ "unknown", "info", "stateset", "gaugehistogram", "Counter", "GAUGE" }) do
      it("rejects " .. t, function() rejects("m 1\n# TYPE m " .. t .. "\n", 2) end)
    end
    it("rejects a missing type", function() rejects("# TYPE m\n", 1) end)
    it("rejects extra words after the type", function() rejects("# TYPE m counter extra\n", 1) end)
    it("rejects a trailing blank after the type (text is 'counter ')", function()
      rejects("# TYPE m counter \n", 1)
    end)
    it("rejects two blanks before the type (text is ' counter')", function()
      rejects("# TYPE m  counter\n", 1)
    end)
    it("accepts a tab before the type", function()
      local _, meta = accepts("# TYPE m\tcounter\n")
      assert.are.equal("counter", meta.m.type)
    end)
    it("reads TYPE placed after the samples (no ordering rules)", function()
      local _, meta = accepts("m 1\n# TYPE m gauge\n")
      assert.are.equal("gauge", meta.m.type)
    end)
  end)

  describe("families (lenient)", function()
    it("accepts interleaved families", function()
      local series = accepts("# TYPE a counter\na 1\n# TYPE b gauge\nb 1\na{x=\"y\"} 2\n")
      assert.are.equal(3, #series)
      assert.are.equal("a", series[3].name)
    end)
    it("accepts histogram buckets in any order and without +Inf", function()
      local series = accepts('# TYPE h histogram\nh_bucket{le="2"} 1\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n')
      assert.are.equal(4, #series)
    end)
    it("accepts negative counter values", function()
      assert.are.equal(-5, accepts("# TYPE c counter\nc -5\n")[1].value)
    end)
    it("returns _sum/_count/_bucket as ordinary samples", function()
      local series = accepts('# TYPE h histogram\nh_bucket{le="+Inf"} 3\nh_sum 4.5\nh_count 3\n')
      assert.are.equal("h_bucket", series[1].name)
      assert.are.equal("+Inf", series[1].labels.le)
      assert.are.equal("h_sum", series[2].name)
      assert.are.equal(4.5, series[2].value)
      assert.are.equal("h_count", series[3].name)
    end)
  end)

  describe("line numbers", function()
    it("names the failing line after comments and blank lines", function()
      rejects("# HELP a x\n# TYPE a counter\na 1\n\nb{ 1\n", 5)
    end)
    it("names the failing line when it is the last, unterminated one", function()
      rejects("a 1\nb 2\nc", 3)
    end)
    it("counts lines inside a big input", function()
      local t = {}
      for i = 1, 999 do t[i] = "m{i=\"" .. i .. "\"} " .. i end
      t[1000] = "m{i=} 1"
      rejects(table.concat(t, "\n") .. "\n", 1000)
    end)
  end)
end)
