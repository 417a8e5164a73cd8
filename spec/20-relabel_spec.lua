-- Relabel engine through the Lua API: Prometheus 3.x semantics.
-- Cases marked "(prometheus)" are ported from model/relabel/relabel_test.go.

local ok_ps, ps = pcall(require, "promscrape")
if not ok_ps or type(ps) ~= "table" or not ps.relabel then
  ps = require("promscrape.relabel") -- façade not built yet
end
local relabel, relabel_rules = ps.relabel, ps.relabel_rules

local function err_of(rules, opts)
  local r, err, code = relabel_rules(rules, opts)
  assert.is_nil(r)
  assert.equal("EINVAL", code)
  return err
end

describe("relabel", function()
  describe("defaults", function()
    it("action replace, regex (.*), replacement $1, separator ;", function()
      local out = relabel({ a = "x", b = "y" },
        { { source_labels = { "a", "b" }, target_label = "c" } })
      assert.same({ a = "x", b = "y", c = "x;y" }, out)
    end)
    it("no source labels gives the empty string, which deletes", function()
      local out = relabel({ a = "x", c = "old" }, { { target_label = "c" } })
      assert.same({ a = "x" }, out)
    end)
    it("a missing source label is the empty string", function()
      local out = relabel({ a = "x" },
        { { source_labels = { "nope", "a" }, target_label = "c" } })
      assert.same({ a = "x", c = ";x" }, out)
    end)
    it("action names are case-insensitive", function()
      assert.is_nil(relabel({ a = "x" },
        { { source_labels = { "a" }, regex = "x", action = "DrOp" } }))
      assert.same({ a = "x" }, relabel({ a = "x" },
        { { source_labels = { "a" }, regex = "x", action = "KEEP" } }))
    end)
    it("drops input labels with empty values", function()
      assert.same({ a = "x" }, relabel({ a = "x", e = "" }, {}))
    end)
    it("accepts numbers as label values", function()
      assert.same({ port = "9100" }, relabel({ port = 9100 }, {}))
    end)
  end)

  describe("replace", function()
    it("expands ${1} (prometheus)", function()
      local out = relabel({ a = "foo", b = "bar", c = "baz" }, { {
        source_labels = { "a" }, regex = "f(.*)", target_label = "d",
        separator = ";", replacement = "ch${1}-ch${1}", action = "replace" } })
      assert.same({ a = "foo", b = "bar", c = "baz", d = "choo-choo" }, out)
    end)
    it("chains rules (prometheus)", function()
      local out = relabel({ a = "foo", b = "bar", c = "baz" }, {
        { source_labels = { "a", "b" }, regex = "f(.*);(.*)r",
          target_label = "a", replacement = "b${1}${2}m" },
        { source_labels = { "c", "a" }, regex = "(b).*b(.*)ba(.*)",
          target_label = "d", replacement = "$1$2$2$3" } })
      assert.same({ a = "boobam", b = "bar", c = "baz", d = "boooom" }, out)
    end)
    it("is a no-op when the regex does not match (prometheus)", function()
      assert.same({ a = "boo" }, relabel({ a = "boo" }, { {
        source_labels = { "a" }, regex = "f", target_label = "b",
        replacement = "bar" } }))
    end)
    it("regex is fully anchored", function()
      assert.same({ a = "xfoo" }, relabel({ a = "xfoo" }, { {
        source_labels = { "a" }, regex = "foo", target_label = "b" } }))
      assert.same({ a = "foox" }, relabel({ a = "foox" }, { {
        source_labels = { "a" }, regex = "foo", target_label = "b" } }))
      assert.same({ a = "foo", b = "foo" }, relabel({ a = "foo" }, { {
        source_labels = { "a" }, regex = "f|foo", target_label = "b",
        replacement = "$0" } }))
    end)
    it("$ does not match before a trailing newline", function()
      assert.same({ a = "foo\n" }, relabel({ a = "foo\n" }, { {
        source_labels = { "a" }, regex = "foo$", target_label = "b" } }))
    end)
    it(". matches newlines (prometheus)", function()
      local out = relabel({ a = "line1\nline2" }, { {
        source_labels = { "a" }, regex = "line1.*line2", target_label = "d",
        replacement = "match${1}" } })
      assert.same({ a = "line1\nline2", d = "match" }, out)
    end)
    it("an empty expansion deletes the target (prometheus)", function()
      assert.same({ a = "foo" }, relabel({ a = "foo", f = "baz" }, { {
        source_labels = { "a" }, regex = "(f).*", target_label = "$1",
        replacement = "$2" } }))
    end)
    it("templated target label (prometheus)", function()
      assert.same({ a = "some-name-value", name = "value" },
        relabel({ a = "some-name-value" }, { {
          source_labels = { "a" }, regex = "some-([^-]+)-([^,]+)",
          replacement = "${2}", target_label = "${1}" } }))
    end)
    it("an invalid expanded target is a no-op (prometheus)", function()
      local rule = { source_labels = { "a" },
        regex = "some-([^-]+)-([^,]+)", replacement = "${1}",
        target_label = "${3}" }
      assert.same({ a = "some-name-0" },
        relabel({ a = "some-name-0" }, { rule, rule }))
      -- legacy names: "0abc" is no valid name, so nothing happens
      assert.same({ a = "0abc" }, relabel({ a = "0abc" }, { {
        source_labels = { "a" }, regex = "(.*)", target_label = "$1",
        replacement = "v" } }, { metric_name_validation_scheme = "legacy" }))
      -- UTF-8 names (the default): "0abc" is a fine name
      assert.same({ a = "0abc", ["0abc"] = "v" }, relabel({ a = "0abc" }, { {
        source_labels = { "a" }, regex = "(.*)", target_label = "$1",
        replacement = "v" } }))
    end)
    it("real-life tag parsing (prometheus)", function()
      local out = relabel(
        { __meta_sd_tags = "path:/secret,job:some-job,label:foo=bar" }, {
        { source_labels = { "__meta_sd_tags" },
          regex = "(?:.+,|^)path:(/[^,]+).*", replacement = "${1}",
          target_label = "__metrics_path__" },
        { source_labels = { "__meta_sd_tags" },
          regex = "(?:.+,|^)job:([^,]+).*", replacement = "${1}",
          target_label = "job" },
        { source_labels = { "__meta_sd_tags" },
          regex = "(?:.+,|^)label:([^=]+)=([^,]+).*", replacement = "${2}",
          target_label = "${1}" } })
      assert.same({ __meta_sd_tags = "path:/secret,job:some-job,label:foo=bar",
        __metrics_path__ = "/secret", job = "some-job", foo = "bar" }, out)
    end)
  end)

  describe("template expansion", function()
    local function exp(repl, regex, value)
      local out = relabel({ a = value or "abc" }, { {
        source_labels = { "a" }, regex = regex or "(a)(b)(?P<name>c)",
        target_label = "t", replacement = repl } })
      return out.t
    end
    it("$1x is the group named 1x, so empty", function()
      assert.is_nil(exp("$1x"))
    end)
    it("${1}x is group 1 then x", function()
      assert.equal("ax", exp("${1}x"))
    end)
    it("$$ is a dollar", function()
      assert.equal("$1", exp("$$1"))
      assert.equal("a$b", exp("${1}$$$2"))
    end)
    it("named groups, with $name and ${name}, (?P<n>) and (?<n>)", function()
      assert.equal("c-c", exp("$name-${name}"))
      assert.equal("b", exp("$n", "a(?<n>b)c"))
    end)
    it("unknown groups and out-of-range numbers are empty", function()
      assert.equal("[]", exp("[$nope]"))
      assert.equal("[]", exp("[$9]"))
    end)
    it("a leading zero makes a name, not a number", function()
      assert.equal("[]", exp("[$01]"))
      assert.equal("[abc]", exp("[$0]"))
    end)
    it("a malformed $ is literal", function()
      assert.equal("x$", exp("x$"))
      assert.equal("${", exp("${"))
      assert.equal("${1", exp("${1"))
      assert.equal("$-", exp("$-"))
      assert.equal("${}", exp("${}"))
    end)
    it("a group that did not participate is empty", function()
      assert.equal("[]", exp("[$2]", "(x)?(y)?abc"))
    end)
    it("a duplicated group name takes the group that matched, as Go", function()
      assert.equal("[a]", exp("[$n]", "x(?P<n>a)c|y(?P<n>b)c", "xac"))
      assert.equal("[b]b", exp("[$n]${n}", "x(?P<n>a)c|y(?P<n>b)c", "ybc"))
    end)
    it("names stop at non-word characters", function()
      assert.equal("a.b", exp("$1.$2"))
      assert.equal("a-b", exp("$1-$2"))
    end)
  end)

  describe("keep and drop", function()
    it("drop on match (prometheus)", function()
      assert.is_nil(relabel({ a = "foo" }, {
        { source_labels = { "a" }, regex = ".*o.*", action = "drop" },
        { source_labels = { "a" }, regex = "f(.*)", target_label = "d" } }))
    end)
    it("drop keeps on no match (prometheus)", function()
      assert.same({ a = "foo" }, relabel({ a = "foo" },
        { { source_labels = { "a" }, regex = "f|o", action = "drop" } }))
    end)
    it("keep (prometheus)", function()
      assert.is_nil(relabel({ a = "foo" },
        { { source_labels = { "a" }, regex = "no-match", action = "keep" } }))
      assert.same({ a = "foo" }, relabel({ a = "foo" },
        { { source_labels = { "a" }, regex = "f.*", action = "keep" } }))
    end)
    it("keep with the default regex keeps everything", function()
      assert.same({ a = "foo" }, relabel({ a = "foo" }, { { action = "keep" } }))
    end)
    it("keep on a missing label matches the empty string", function()
      assert.is_nil(relabel({ a = "foo" },
        { { source_labels = { "x" }, regex = ".+", action = "keep" } }))
    end)
    it("keepequal and dropequal (prometheus)", function()
      local l = { __tmp_port = "1234", __port1 = "1234", __port2 = "5678" }
      local function r(action, t)
        return relabel(l, { { source_labels = { "__tmp_port" },
          action = action, target_label = t } })
      end
      assert.same(l, r("keepequal", "__port1"))
      assert.is_nil(r("keepequal", "__port2"))
      assert.is_nil(r("dropequal", "__port1"))
      assert.same(l, r("dropequal", "__port2"))
    end)
  end)

  describe("hashmod", function()
    -- Expected values: printf '%s' VALUE | md5sum, take hex digits 17..32
    -- (the last 8 bytes) as a big-endian integer, mod the modulus.
    local cases = {
      { "foo", 10, "6" }, { "bar", 1000, "922" }, { "", 7, "1" },
      { "a;b", 1000, "74" }, { "10.0.0.1:9100", 10, "5" },
      { "ünïcode", 1000, "284" },
      { "foo", 9007199254740992, "4333518062920920" }, -- 2^53: exact in LuaJIT too
      { "baz", 1000, "976" },       -- (prometheus)
      { "foo\nbar", 1000, "734" },  -- (prometheus)
    }
    for _, c in ipairs(cases) do
      it(string.format("md5(%q) mod %.0f = %s", c[1], c[2], c[3]), function()
        local out = relabel({ a = c[1] ~= "" and c[1] or nil }, { {
          source_labels = { "a" }, target_label = "h", modulus = c[2],
          action = "hashmod" } })
        assert.equal(c[3], out.h)
      end)
    end
    it("joins the sources with the separator first", function()
      local out = relabel({ a = "a", b = "b" }, { {
        source_labels = { "a", "b" }, target_label = "h", modulus = 1000,
        action = "hashmod" } })
      assert.equal("74", out.h)
    end)
    it("agrees with md5sum on this machine", function()
      local p = io.popen("printf '%s' 'promscrape' | md5sum 2>/dev/null")
      local hex = p and p:read("*l")
      if p then p:close() end
      if not hex or #hex < 32 then
        pending("md5sum not available")
        return
      end
      -- last 8 bytes mod 1000, done in two 32-bit halves to stay exact
      local hi = tonumber(hex:sub(17, 24), 16)
      local lo = tonumber(hex:sub(25, 32), 16)
      local expect = ((hi % 1000) * (4294967296 % 1000) + lo % 1000) % 1000
      local out = relabel({ a = "promscrape" }, { { source_labels = { "a" },
        target_label = "h", modulus = 1000, action = "hashmod" } })
      assert.equal(string.format("%d", expect), out.h)
    end)
  end)

  describe("labelmap, labeldrop, labelkeep", function()
    it("labelmap keeps the originals (prometheus)", function()
      local out = relabel({ a = "foo", b1 = "bar", b2 = "baz" }, { {
        regex = "(b.*)", replacement = "bar_${1}", action = "labelmap" } })
      assert.same({ a = "foo", b1 = "bar", b2 = "baz", bar_b1 = "bar",
        bar_b2 = "baz" }, out)
    end)
    it("labelmap with the default replacement", function()
      local out = relabel({ __meta_my_bar = "aaa", __meta_other = "ccc" }, { {
        regex = "__meta_(my.*)", action = "labelmap" } })
      assert.same({ __meta_my_bar = "aaa", __meta_other = "ccc",
        my_bar = "aaa" }, out)
    end)
    it("labelmap overwrites an existing label", function()
      assert.same({ __x = "new", x = "new" }, relabel({ __x = "new", x = "old" },
        { { regex = "__(.*)", action = "labelmap" } }))
    end)
    it("labeldrop and labelkeep (prometheus)", function()
      local l = { a = "foo", b1 = "bar", b2 = "baz" }
      assert.same({ b1 = "bar", b2 = "baz" },
        relabel(l, { { regex = "(b.*)", action = "labelkeep" } }))
      assert.same({ a = "foo" },
        relabel(l, { { regex = "(b.*)", action = "labeldrop" } }))
    end)
    it("labeldrop then set again (prometheus issue 12283)", function()
      local out = relabel({
        __meta_kubernetes_pod_container_port_name = "foo",
        __meta_kubernetes_pod_annotation_XXX_metrics_port = "9091" }, {
        { regex = "^__meta_kubernetes_pod_container_port_name$",
          action = "labeldrop" },
        { source_labels = { "__meta_kubernetes_pod_annotation_XXX_metrics_port" },
          regex = "(.+)", replacement = "metrics",
          target_label = "__meta_kubernetes_pod_container_port_name" },
        { source_labels = { "__meta_kubernetes_pod_container_port_name" },
          regex = "^metrics$", action = "keep" } })
      assert.same({ __meta_kubernetes_pod_annotation_XXX_metrics_port = "9091",
        __meta_kubernetes_pod_container_port_name = "metrics" }, out)
    end)
  end)

  describe("lowercase and uppercase", function()
    it("ASCII (prometheus)", function()
      local out = relabel({ foo = "bAr123Foo" }, {
        { source_labels = { "foo" }, action = "uppercase",
          target_label = "foo_uppercase" },
        { source_labels = { "foo" }, action = "lowercase",
          target_label = "foo_lowercase" } })
      assert.same({ foo = "bAr123Foo", foo_lowercase = "bar123foo",
        foo_uppercase = "BAR123FOO" }, out)
    end)
    it("Unicode simple case mapping, as Go's strings.ToUpper", function()
      local out = relabel({ v = "Äöü ǅ ſ" }, {
        { source_labels = { "v" }, action = "uppercase", target_label = "u" },
        { source_labels = { "v" }, action = "lowercase", target_label = "l" } })
      assert.equal("ÄÖÜ Ǆ S", out.u)
      assert.equal("äöü ǆ ſ", out.l)
    end)
    it("invalid UTF-8 becomes U+FFFD", function()
      local out = relabel({ v = "a\255B" }, { { source_labels = { "v" },
        action = "lowercase", target_label = "l" } })
      assert.equal("a\239\191\189b", out.l)
    end)
  end)

  describe("regex syntax", function()
    local function m(regex, value)
      return relabel({ a = value }, { { source_labels = { "a" },
        regex = regex, action = "keep" } }) ~= nil
    end
    it("supports RE2 syntax", function()
      assert.is_true(m("(?i)FOO", "foo"))
      assert.is_true(m("(?P<x>a)b", "ab"))
      assert.is_true(m("[[:digit:]]+", "123"))
      assert.is_true(m("\\d+\\.\\d+", "1.5"))
      assert.is_true(m("\\pL+", "äb"))
      assert.is_true(m("\\Qa.b\\E", "a.b"))
      assert.is_false(m("\\Qa.b\\E", "axb"))
      assert.is_true(m("a{2,3}", "aaa"))
      assert.is_true(m("(?s:.)", "\n"))
      assert.is_true(m("(?)a", "a"))
      assert.is_true(m("\\x{41}{2}", "AA"))
      assert.is_true(m("\\p{Greek}{2}", "αβ"))
      assert.is_true(m("a)(b", "a)(b") == false) -- compiles, as in Go
    end)
    it("\\d and \\w are ASCII, as in Go", function()
      assert.is_false(m("\\d", "٣"))
      assert.is_false(m("\\w", "é"))
    end)
    it("is matched on characters, not bytes", function()
      assert.is_true(m("..", "äö"))
    end)
    local rejects = {
      { "(a)\\1", "backreference" }, { "a(?=b)", "lookahead" },
      { "(?<=a)b", "lookbehind" }, { "(?<!a)b", "lookbehind" },
      { "(?>a)", "Perl syntax" }, { "a*+", "possessive" },
      { "a{2}+", "possessive" }, { "a\\Z", "escape" }, { "(*UTF)a", "verbs" },
      { "(?x) a", "Perl syntax" }, { "a{1001}", "repeat count" },
      { "\\k<n>", "escape" }, { "(?P=n)", "Perl syntax" },
      { "(?i-:a)", "Perl syntax" }, { "[\\b]", "escape" },
      { "a\\e", "escape" }, { "\\x{110000}", "too large" },
    }
    for _, c in ipairs(rejects) do
      it("rejects " .. c[1] .. " like Go", function()
        local err = err_of({ { source_labels = { "a" }, regex = c[1],
          action = "keep" } })
        assert.matches("^rule 1: regex: ", err)
        assert.truthy(err:find(c[2], 1, true), err)
      end)
    end
    it("reports PCRE2 syntax errors with the offset in the user regex", function()
      local err = err_of({ { target_label = "x" }, { regex = "(a",
        action = "keep" } })
      -- The offset is within the user's regex, not the ^(?s:...)$ wrapper.
      assert.matches("^rule 2: regex: error parsing regexp: .*parenthes.* at offset 2: `%(a`$", err)
    end)
  end)

  describe("validation", function()
    local cases = {
      { { action = "foo" }, 'rule 1: action: unknown relabel action "foo"' },
      { { action = "" }, 'rule 1: action: unknown relabel action ""' },
      { { action = "hashmod", target_label = "x" },
        "rule 1: modulus: action hashmod requires a non-zero modulus" },
      { { action = "replace" },
        "rule 1: target_label: action replace requires target_label" },
      { { action = "hashmod", modulus = 2 },
        "rule 1: target_label: action hashmod requires target_label" },
      { { action = "lowercase" },
        "rule 1: target_label: action lowercase requires target_label" },
      { { action = "uppercase" },
        "rule 1: target_label: action uppercase requires target_label" },
      { { action = "keepequal" },
        "rule 1: target_label: action keepequal requires target_label" },
      { { action = "dropequal" },
        "rule 1: target_label: action dropequal requires target_label" },
      { { action = "lowercase", target_label = "x", replacement = "y" },
        "rule 1: replacement: cannot be set for action lowercase" },
      { { action = "uppercase", target_label = "x", replacement = "" },
        "rule 1: replacement: cannot be set for action uppercase" },
      { { action = "keepequal", target_label = "x", regex = "(.*)" },
        "rule 1: regex: action keepequal requires only source_labels and target_label, and no other fields" },
      { { action = "dropequal", target_label = "x", separator = "," },
        "rule 1: separator: action dropequal requires only source_labels and target_label, and no other fields" },
      { { action = "dropequal", target_label = "x", modulus = 3 },
        "rule 1: modulus: action dropequal requires only source_labels and target_label, and no other fields" },
      { { action = "labeldrop", source_labels = { "a" } },
        "rule 1: source_labels: action labeldrop requires only regex, and no other fields" },
      { { action = "labelkeep", target_label = "a" },
        "rule 1: target_label: action labelkeep requires only regex, and no other fields" },
      { { action = "labelkeep", replacement = "x" },
        "rule 1: replacement: action labelkeep requires only regex, and no other fields" },
      { { action = "labeldrop", separator = "," },
        "rule 1: separator: action labeldrop requires only regex, and no other fields" },
      { { action = "labeldrop", modulus = 1 },
        "rule 1: modulus: action labeldrop requires only regex, and no other fields" },
      { { source_labels = { "" }, target_label = "x" },
        'rule 1: source_labels: "" is not a valid label name' },
      { { source_labels = "a", target_label = "x" },
        "rule 1: source_labels: expected array of strings, got string" },
      { { source_labels = { 1 }, target_label = "x" },
        "rule 1: source_labels: expected strings, got number at 1" },
      { { target_label = "x", regex = true },
        "rule 1: regex: expected string, got boolean" },
      { { action = "hashmod", target_label = "x", modulus = -1 },
        "rule 1: modulus: expected a non-negative integer" },
      { { action = "hashmod", target_label = "x", modulus = 1.5 },
        "rule 1: modulus: expected a non-negative integer" },
      { { target_label = "x", regexp = "a" }, 'rule 1: unknown field "regexp"' },
    }
    for _, c in ipairs(cases) do
      it(c[2], function()
        assert.equal(c[2], err_of({ c[1] }))
      end)
    end
    it("names the failing rule by its position in a mixed list", function()
      assert.equal("rule 3: modulus: action hashmod requires a non-zero modulus",
        err_of({ { target_label = "a" }, function(l) return l end,
          { action = "hashmod", target_label = "b" } }))
      assert.equal("rule 2: expected a table or a function, got string",
        err_of({ { target_label = "a" }, "nope" }))
    end)
    it("relabel() raises naming the rule", function()
      assert.has_error(function()
        relabel({ a = "b" }, { { target_label = "x" }, { action = "bogus" } })
      end, 'rule 2: action: unknown relabel action "bogus"')
    end)
    it("UTF-8 target labels are valid by default, not in legacy mode", function()
      local rule = { { target_label = "ünï.code", replacement = "v" } }
      assert.same({ ["ünï.code"] = "v" }, relabel({}, rule))
      assert.equal('rule 1: target_label: "ünï.code" is invalid for action replace',
        err_of(rule, { metric_name_validation_scheme = "legacy" }))
    end)
    it("templated targets: UTF-8 accepts anything, legacy the Prometheus pattern",
      function()
      local legacy = { metric_name_validation_scheme = "legacy" }
      assert.truthy(relabel_rules({ { target_label = "x_${1}" } }, legacy))
      assert.truthy(relabel_rules({ { target_label = "$1" } }, legacy))
      assert.equal('rule 1: target_label: "1$x" is invalid for action replace',
        err_of({ { target_label = "1$x" } }, legacy))
      assert.equal('rule 1: target_label: "a-$1" is invalid for action replace',
        err_of({ { target_label = "a-$1" } }, legacy))
      assert.truthy(relabel_rules({ { target_label = "a-$1" } }))
    end)
    it("labelmap replacement is checked as a templated name", function()
      local legacy = { metric_name_validation_scheme = "legacy" }
      assert.equal('rule 1: replacement: "a-$1" is invalid for action labelmap',
        err_of({ { action = "labelmap", replacement = "a-$1" } }, legacy))
      assert.truthy(relabel_rules({ { action = "labelmap",
        replacement = "a-$1" } }))
    end)
    it("hashmod and keepequal target labels must be valid names", function()
      local legacy = { metric_name_validation_scheme = "legacy" }
      assert.equal('rule 1: target_label: "$1" is invalid for action hashmod',
        err_of({ { action = "hashmod", modulus = 2, target_label = "$1" } },
          legacy))
      assert.equal('rule 1: target_label: "a.b" is invalid for action keepequal',
        err_of({ { action = "keepequal", target_label = "a.b" } }, legacy))
    end)
    it("legacy source label names", function()
      assert.equal('rule 1: source_labels: "a.b" is not a valid label name',
        err_of({ { source_labels = { "a.b" }, target_label = "x" } },
          { metric_name_validation_scheme = "legacy" }))
      assert.same({ ["a.b"] = "v", x = "v" }, relabel({ ["a.b"] = "v" },
        { { source_labels = { "a.b" }, target_label = "x" } }))
    end)
    it("misuse raises", function()
      assert.has_error(function() relabel_rules("x") end)
      assert.has_error(function() relabel_rules({}, { bogus = 1 }) end)
      assert.has_error(function()
        relabel_rules({}, { metric_name_validation_scheme = "latin1" })
      end)
      assert.has_error(function() relabel({ [1] = "x" }, {}) end)
      assert.has_error(function() relabel({ a = true }, {}) end)
      assert.has_error(function() relabel("a", {}) end)
    end)
  end)

  describe("function rules", function()
    it("mix freely with table rules", function()
      local out = relabel({ a = "x" }, {
        { source_labels = { "a" }, target_label = "b" },
        function(l) l.c = l.b .. "!" return l end,
        { source_labels = { "c" }, target_label = "d", replacement = "<$1>" },
      })
      assert.same({ a = "x", b = "x", c = "x!", d = "<x!>" }, out)
    end)
    it("returning nil drops the set", function()
      local r = assert(relabel_rules({ { target_label = "b" },
        function() return nil end, { target_label = "never" } }))
      local out, at = r:apply({ a = "x" })
      assert.is_nil(out)
      assert.equal(2, at)
    end)
    it("receive a copy: mutating it does not touch the caller's table", function()
      local input = { a = "x" }
      relabel(input, { function(l) l.a = "changed" l.z = "1" return l end })
      assert.same({ a = "x" }, input)
    end)
    it("results are normalised: empty values removed, numbers stringified",
      function()
      assert.same({ n = "3" }, relabel({ a = "x" },
        { function() return { a = "", n = 3 } end }))
    end)
    it("a failing function raises naming the rule", function()
      assert.has_error(function()
        relabel({}, { { target_label = "a", replacement = "b" },
          function() error("boom") end })
      end)
      local ok, err = pcall(relabel, {}, { function() return 42 end })
      assert.is_false(ok)
      assert.matches("rule 1: function must return", err)
    end)
  end)

  describe("relabel_rules objects", function()
    it("apply returns new tables and never modifies the input", function()
      local r = assert(relabel_rules({
        { source_labels = { "a" }, target_label = "a", replacement = "y" },
        { regex = "b", action = "labeldrop" } }))
      local input = { a = "x", b = "1" }
      local out = r:apply(input)
      assert.same({ a = "y" }, out)
      assert.same({ a = "x", b = "1" }, input)
      assert.are_not.equal(input, out)
      assert.same({ a = "y" }, r:apply(input)) -- reusable
      assert.equal(2, r:count())
      r:close()
    end)
    it("apply with no rules copies", function()
      local r = assert(relabel_rules({}))
      local input = { a = "x" }
      local out = r:apply(input)
      assert.same(input, out)
      assert.are_not.equal(input, out)
    end)
    it("reports the index of the dropping rule", function()
      local r = assert(relabel_rules({ { target_label = "b" },
        { source_labels = { "a" }, regex = "x", action = "drop" } }))
      local out, at = r:apply({ a = "x" })
      assert.is_nil(out)
      assert.equal(2, at)
    end)
    it("relabel() accepts a compiled object", function()
      local r = assert(relabel_rules({ { target_label = "b",
        replacement = "c" } }))
      assert.same({ b = "c" }, relabel({}, r))
    end)
    it("legacy option applies to the whole list", function()
      local r, err = relabel_rules({ function(l) return l end,
        { target_label = "a.b" } }, { metric_name_validation_scheme = "legacy" })
      assert.is_nil(r)
      assert.matches("^rule 2: target_label:", err)
    end)
  end)

  describe("trace", function()
    local rules = {
      { source_labels = { "a" }, target_label = "b" },
      function(l) l.f = "1" return l end,
      { source_labels = { "a" }, regex = "x", action = "keep" },
      { target_label = "never", replacement = "1" },
    }
    it("has one entry per rule with before, after, drop and why", function()
      local r = assert(relabel_rules(rules))
      local t = r:trace({ a = "foo" })
      assert.equal(4, #t)
      assert.equal(1, t[1].index)
      assert.equal(rules[1], t[1].rule)
      assert.equal("replace", t[1].action)
      assert.same({ a = "foo" }, t[1].before)
      assert.same({ a = "foo", b = "foo" }, t[1].after)
      assert.is_false(t[1].dropped)
      assert.equal("function", t[2].action)
      assert.same({ a = "foo", b = "foo", f = "1" }, t[2].after)
      assert.equal("keep", t[3].action)
      assert.is_true(t[3].dropped)
      assert.is_nil(t[3].after)
      assert.equal('keep: regex "x" does not match "foo"', t[3].reason)
      assert.is_true(t[4].skipped)
      assert.is_nil(t[4].before)
    end)
    it("matches apply when nothing is dropped", function()
      local r = assert(relabel_rules({
        { regex = "__meta_(.*)", action = "labelmap" },
        { regex = "__meta_.*", action = "labeldrop" },
        { source_labels = { "x" }, target_label = "h", modulus = 5,
          action = "hashmod" } }))
      local input = { __meta_x = "1", __meta_y = "2" }
      local t = r:trace(input)
      assert.same(r:apply(input), t[#t].after)
      assert.same({ __meta_x = "1", __meta_y = "2" }, input)
    end)
    it("explains drop, keepequal, dropequal and function drops", function()
      local function reason(rule, l)
        local t = assert(relabel_rules({ rule })):trace(l)
        return t[1].reason
      end
      assert.equal('drop: regex "f.*" matches "foo"',
        reason({ source_labels = { "a" }, regex = "f.*", action = "drop" },
          { a = "foo" }))
      assert.equal('keepequal: "1" differs from b="2"',
        reason({ source_labels = { "a" }, target_label = "b",
          action = "keepequal" }, { a = "1", b = "2" }))
      assert.equal('dropequal: "1" equals b="1"',
        reason({ source_labels = { "a" }, target_label = "b",
          action = "dropequal" }, { a = "1", b = "1" }))
      assert.equal("function returned nil",
        reason(function() end, { a = "1" }))
    end)
  end)
end)
