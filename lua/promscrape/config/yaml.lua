--- promscrape.config.yaml: a YAML loader for configuration files.
-- Built on lyaml's event parser (`require "yaml"`, Debian `lua-yaml`) rather
-- than `lyaml.load`, because a config loader needs what `lyaml.load` throws
-- away: the raw text of every scalar (Prometheus' yaml.v2 reads `job_name: 123`
-- as the string "123" and `version: 1.10` as "1.10"), whether a scalar was
-- quoted, duplicate keys (an error, as in yaml.v2) and line numbers.
--
-- `load(text)` returns the first document as a node tree, or nil for an empty
-- stream, or raises a string error "line L, column C: reason". Nodes:
--   { t = "map", keys = { "k1", ... } (document order), map = { k1 = node } }
--   { t = "seq", n = count, [1] = node, ... }
--   { t = "scalar", raw = "text", plain = bool, tag = "!!str"|nil, null = bool }
-- every node also carries `line` (1-based) and `size`: its node count with
-- aliases expanded, which is what a walker of the tree will visit.
-- Merge keys (`<<: *anchor`) are resolved as yaml.v2 does: explicit keys win.
--
-- Limits, so that a small file cannot make the walkers behind this loader
-- (which visit a shared node once per reference) run for hours:
-- * aliases: yaml.v2's rule (decode.go allowedAliasRatio), applied to the
--   whole document: past 1000 nodes and 100 aliased ones, at most 99% of
--   the expanded nodes may come from aliases, falling linearly to 10% at
--   4M nodes ("billion laughs" documents are refused);
-- * nesting: MAX_DEPTH levels (yaml.v2 stops at 10000; ours is lower because
--   the walkers recurse, and LuaJIT's Lua stack holds fewer frames).
local yaml = require "yaml"

local M = {}

local MAX_DEPTH = 1000
M.MAX_DEPTH = MAX_DEPTH

-- Sizes saturate here: a chain of aliases can describe more nodes than a
-- double counts exactly, and any such document is refused anyway.
local SIZE_CAP = 1e15

-- yaml.v2's allowedAliasRatio(decodeCount).
local ALIAS_LOW, ALIAS_HIGH = 400000, 4000000
local function allowed_alias_ratio(n)
    if n <= ALIAS_LOW then return 0.99 end
    if n >= ALIAS_HIGH then return 0.10 end
    return 0.99 - 0.89 * ((n - ALIAS_LOW) / (ALIAS_HIGH - ALIAS_LOW))
end

local function add_size(a, b)
    local s = a + b
    if s > SIZE_CAP then return SIZE_CAP end
    return s
end

local TAG_PREFIX = "tag:yaml.org,2002:"

local NULL_WORDS = { [""] = true, ["~"] = true, null = true, Null = true, NULL = true }

-- YAML 1.1 booleans, as yaml.v2 resolves them.
local BOOL_WORDS = {
    y = true, Y = true, yes = true, Yes = true, YES = true, on = true, On = true, ON = true,
    ["true"] = true, True = true, TRUE = true,
    n = false, N = false, no = false, No = false, NO = false, off = false, Off = false, OFF = false,
    ["false"] = false, False = false, FALSE = false,
}
M.BOOL_WORDS = BOOL_WORDS

local function short_tag(tag)
    if tag == nil then return nil end
    local s = tag:match("^" .. TAG_PREFIX:gsub("%p", "%%%0") .. "(.*)$")
    if s then return "!!" .. s end
    return tag
end

local function clean_libyaml_error(msg)
    msg = tostring(msg)
    -- "did not find expected key at document: 1, line: 3, column: 1\nwhile parsing ..."
    local what, line, col, rest = msg:match("^(.-) at document: %d+, line: (%d+), column: (%d+)(.*)$")
    if what then
        rest = rest:gsub("^%s+", ""):gsub("%s+$", ""):gsub("at line: (%d+), column: (%d+)", "at line %1, column %2")
        if rest ~= "" then
            return ("line %s, column %s: %s (%s)"):format(line, col, what, rest)
        end
        return ("line %s, column %s: %s"):format(line, col, what)
    end
    return msg
end

function M.load(text)
    local next_event = yaml.parser(text)
    local ev
    local function advance()
        local ok, e = pcall(next_event)
        if not ok then
            error(clean_libyaml_error(e), 0)
        end
        ev = e
        return e.type
    end
    local function here()
        return ev.start_mark.line + 1, ev.start_mark.column + 1
    end
    local function fail(fmt, ...)
        local line, col = here()
        error(("line %d, column %d: " .. fmt):format(line, col, ...), 0)
    end

    local anchors = {}
    local load_node

    local function merge_into(merged, order, src)
        if src.t ~= "map" then
            return false
        end
        for _, k in ipairs(src.keys) do
            if merged[k] == nil then
                merged[k] = src.map[k]
                order[#order + 1] = k
            end
        end
        return true
    end

    local depth, written = 0, 0

    local function load_map(line)
        local node = { t = "map", keys = {}, map = {}, line = line, size = 1 }
        local merged, merged_order = {}, {}
        local key_line = {}
        while true do
            local kind = advance()
            if kind == "MAPPING_END" then
                break
            end
            local kline = ev.start_mark.line + 1
            local key = load_node(kind)
            if key.t ~= "scalar" then
                error(("line %d: mapping keys must be scalars"):format(kline), 0)
            end
            local value = load_node(advance())
            if key.plain and key.raw == "<<" or key.tag == "!!merge" then
                local ok = true
                if value.t == "seq" then
                    -- Earlier maps in the list take precedence.
                    for i = 1, value.n do
                        ok = ok and merge_into(merged, merged_order, value[i])
                    end
                else
                    ok = merge_into(merged, merged_order, value)
                end
                if not ok then
                    error(("line %d: map merge requires map or sequence of maps as the value"):format(kline), 0)
                end
            else
                local k = key.raw
                if node.map[k] ~= nil then
                    error(("line %d: key %q already set in map (first set at line %d)"):format(kline, k, key_line[k]), 0)
                end
                key_line[k] = kline
                node.map[k] = value
                node.keys[#node.keys + 1] = k
            end
        end
        for _, k in ipairs(merged_order) do
            if node.map[k] == nil then
                node.map[k] = merged[k]
                node.keys[#node.keys + 1] = k
            end
        end
        local size = 1
        for _, k in ipairs(node.keys) do
            size = add_size(size, 1 + node.map[k].size)
        end
        node.size = size
        return node
    end

    local function load_seq(line)
        local node = { t = "seq", n = 0, line = line, size = 1 }
        while true do
            local kind = advance()
            if kind == "SEQUENCE_END" then
                break
            end
            node.n = node.n + 1
            local child = load_node(kind)
            node[node.n] = child
            node.size = add_size(node.size, child.size)
        end
        return node
    end

    load_node = function(kind)
        local line = ev.start_mark.line + 1
        local anchor = ev.anchor
        local node
        if kind == "SCALAR" then
            local tag = short_tag(ev.tag)
            local plain = ev.style == "PLAIN" and tag == nil
            node = {
                t = "scalar",
                raw = ev.value,
                plain = plain,
                tag = tag,
                line = line,
                size = 1,
                null = (plain and NULL_WORDS[ev.value] == true) or tag == "!!null",
            }
        elseif kind == "MAPPING_START" or kind == "SEQUENCE_START" then
            if depth >= MAX_DEPTH then
                fail("exceeded max depth of %d", MAX_DEPTH)
            end
            depth = depth + 1
            if kind == "MAPPING_START" then
                node = load_map(line)
            else
                node = load_seq(line)
            end
            depth = depth - 1
        elseif kind == "ALIAS" then
            node = anchors[ev.anchor]
            if node == nil then
                fail("unknown anchor %q referenced", tostring(ev.anchor))
            end
            return node
        else
            fail("unexpected YAML event %s", tostring(kind))
        end
        written = written + 1
        if anchor ~= nil then
            anchors[anchor] = node
        end
        return node
    end

    if advance() ~= "STREAM_START" then
        fail("expected the start of a YAML stream")
    end
    local kind = advance()
    if kind == "STREAM_END" then
        return nil
    end
    if kind ~= "DOCUMENT_START" then
        fail("expected a YAML document")
    end
    local root = load_node(advance())
    if advance() ~= "DOCUMENT_END" then
        fail("expected the end of the YAML document")
    end
    local expanded = root.size
    local aliased = expanded - written
    if aliased > 100 and expanded > 1000 and aliased / expanded > allowed_alias_ratio(expanded) then
        error(("document contains excessive aliasing: its %d nodes expand to %s through aliases and merge keys"
            .. " (at most %d%% of the expanded nodes may come from aliases at that size)"):format(
            written, expanded >= SIZE_CAP and "more than 10^15" or ("%.0f"):format(expanded),
            math.floor(allowed_alias_ratio(expanded) * 100 + 0.5)), 0)
    end
    -- yaml.v2 reads the first document only; so do we.
    return root
end

-- Integers are kept within +-2^53: every Lua the loader runs on holds them
-- exactly (LuaJIT's numbers are doubles), and the manager hands the config
-- on as JSON numbers. yaml.v2 would take int64; nothing in a Prometheus
-- config needs more than 2^53.
local MAX_INT = 2 ^ 53
M.MAX_INT = MAX_INT

local INT_FORMS = {
    { "^0[xX](%x+)$", 16 }, { "^0[bB]([01]+)$", 2 }, { "^0[oO]([0-7]+)$", 8 },
    { "^0([0-7]+)$", 8 }, { "^(%d+)$", 10 },
}

-- Returns the integer, or nil when s is not one, or nil, "range".
local function parse_int(s)
    local sign = 1
    local body = s:gsub("_", "")
    local c = body:sub(1, 1)
    if c == "+" or c == "-" then
        if c == "-" then sign = -1 end
        body = body:sub(2)
    end
    if body == "" then return nil end
    for _, form in ipairs(INT_FORMS) do
        local digits = body:match(form[1])
        if digits then
            -- Digit by digit rather than tonumber(): that wraps around (5.4
            -- with a base) or goes float (without) on overflow.
            local v, base = 0, form[2]
            for i = 1, #digits do
                v = v * base + tonumber(digits:sub(i, i), 16)
                if v > MAX_INT then return nil, "range" end
            end
            return sign * v
        end
    end
    return nil
end
M.parse_int = parse_int

--- Resolves a plain scalar's text as yaml.v2 would (YAML 1.1 rules).
-- Returns the Lua value and a type name: "null", "bool", "int", "float",
-- "string", or "bigint" (an integer out of range; the value is the text).
function M.resolve(node)
    if node.null then
        return nil, "null"
    end
    local raw = node.raw
    if not node.plain then
        if node.tag == "!!bool" and BOOL_WORDS[raw] ~= nil then
            return BOOL_WORDS[raw], "bool"
        elseif node.tag == "!!int" then
            local i, why = parse_int(raw)
            if i then return i, "int" end
            if why then return raw, "bigint" end
        elseif node.tag == "!!float" and tonumber(raw) then
            return tonumber(raw), "float"
        end
        return raw, "string"
    end
    local b = BOOL_WORDS[raw]
    if b ~= nil then
        return b, "bool"
    end
    local i, why = parse_int(raw)
    if i ~= nil then
        return i, "int"
    elseif why then
        return raw, "bigint"
    end
    -- yaml.v2's float pattern: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
    local f = raw:gsub("_", "")
    local mant, exp = f:match("^([-+]?[%d%.]+)(.*)$")
    if mant and (mant:match("^[-+]?%.%d+$") or mant:match("^[-+]?%d+%.?%d*$"))
        and (exp == "" or exp:match("^[eE][-+]?%d+$")) then
        return tonumber(f), "float"
    end
    local sign, word = raw:match("^([-+]?)%.(%a+)$")
    if word == "inf" or word == "Inf" or word == "INF" then
        return (sign == "-" and -1 or 1) * math.huge, "float"
    end
    if sign == "" and (word == "nan" or word == "NaN" or word == "NAN") then
        return 0 / 0, "float"
    end
    return raw, "string"
end

return M
