--- promscrape.config.values: the scalar types of a Prometheus config.
-- Durations (prometheus/common model.Duration), byte sizes
-- (alecthomas/units Base2Bytes), label names (UTF-8 or legacy), relabel
-- target templates, a light RE2 syntax check and a url.Parse-like check.
-- Re-exported by promscrape.config. Lua 5.1/LuaJIT and 5.4.
local M = {}

local format, concat = string.format, table.concat

-- Go's %q, enough for config values.
local function q(s)
    s = tostring(s)
    return '"' .. s:gsub('[\\"]', "\\%0"):gsub("\n", "\\n"):gsub("\t", "\\t"):gsub("\r", "\\r") .. '"'
end
M.quote = q

------------------------------------------------------------------------------
-- Durations (prometheus/common model.Duration) and byte sizes (units.Base2Bytes)
------------------------------------------------------------------------------

local DURATION_UNITS = {
    { "y", 1000 * 60 * 60 * 24 * 365 },
    { "w", 1000 * 60 * 60 * 24 * 7 },
    { "d", 1000 * 60 * 60 * 24 },
    { "h", 1000 * 60 * 60 },
    { "m", 1000 * 60 },
    { "s", 1000 },
    { "ms", 1 },
}
M.DURATION_UNITS = DURATION_UNITS

local MAX_DURATION_MS = 9223372036854 -- time.Duration is int64 nanoseconds

--- Parses a Prometheus duration ("1h30m", "10s", "0") into milliseconds.
-- Units in this order, each at most once: y w d h m s ms; integers only.
function M.parse_duration(s)
    if type(s) ~= "string" then
        return nil, format("not a valid duration string: %s", q(tostring(s)))
    end
    if s == "" then return nil, "empty duration string" end
    if s == "0" then return 0 end
    local rest, total, next_unit = s, 0, 1
    while rest ~= "" do
        local num, unit, tail = rest:match("^(%d+)(%a+)(.*)$")
        if not num then
            return nil, format("not a valid duration string: %s", q(s))
        end
        local found
        for k = next_unit, #DURATION_UNITS do
            if DURATION_UNITS[k][1] == unit then found = k break end
        end
        if not found then
            return nil, format("not a valid duration string: %s", q(s))
        end
        next_unit = found + 1
        total = total + tonumber(num) * DURATION_UNITS[found][2]
        if total > MAX_DURATION_MS then
            return nil, "duration out of range"
        end
        rest = tail
    end
    return total
end

--- Formats milliseconds as Prometheus does (model.Duration.String).
function M.format_duration(ms)
    ms = math.floor(ms)
    if ms == 0 then return "0s" end
    local out = {}
    for _, u in ipairs(DURATION_UNITS) do
        local v = math.floor(ms / u[2])
        if v > 0 then
            out[#out + 1] = format("%d%s", v, u[1])
            ms = ms - v * u[2]
        end
    end
    return concat(out)
end

--- Seconds (a number, fractional for ms) of a Prometheus duration string.
function M.duration_seconds(s)
    local ms, err = M.parse_duration(s)
    if not ms then return nil, err end
    return ms / 1000
end

--- Normalizes a duration string ("60s" -> "1m"); nil, err if invalid.
function M.normalize_duration(s)
    local ms, err = M.parse_duration(s)
    if not ms then return nil, err end
    return M.format_duration(ms)
end

-- units.Base2Bytes: KB and KiB are both 1024 (the base-2 map tried first).
local BYTE_UNITS = {
    B = 1,
    KB = 1024, KiB = 1024,
    MB = 1048576, MiB = 1048576,
    GB = 1073741824, GiB = 1073741824,
    TB = 1099511627776, TiB = 1099511627776,
    PB = 1125899906842624, PiB = 1125899906842624,
    EB = 1152921504606846976, EiB = 1152921504606846976,
}
M.BYTE_UNITS = BYTE_UNITS

--- Parses a byte size ("10MB", "1.5GiB", "512B", "0", or a number) into bytes.
function M.parse_bytes(s)
    if type(s) == "number" then
        if s ~= math.floor(s) then return nil, format("units: invalid %s", tostring(s)) end
        return s
    end
    if type(s) ~= "string" then return nil, "units: invalid " .. tostring(s) end
    local orig, neg = s, false
    local c = s:sub(1, 1)
    if c == "-" or c == "+" then
        neg = c == "-"
        s = s:sub(2)
    end
    if s == "0" then return 0 end
    if s == "" then return nil, "units: invalid " .. orig end
    local total = 0.0
    while s ~= "" do
        local int, frac, unit, tail = s:match("^(%d*)%.?(%d*)([^%d%.]*)(.*)$")
        if int == nil or (int == "" and frac == "") then
            return nil, "units: invalid " .. orig
        end
        local mult = BYTE_UNITS[unit]
        if not mult then
            return nil, format("units: unknown unit %s in %s", unit, orig)
        end
        local g = tonumber(int ~= "" and int or "0") + 0.0
        if frac ~= "" then
            g = g + tonumber(frac) / (10 ^ #frac)
        end
        total = total + g * mult
        s = tail
    end
    if total >= 2 ^ 63 then return nil, "units: overflow parsing unit" end
    total = math.floor(total)
    return neg and -total or total
end

------------------------------------------------------------------------------
-- Names, label sets, URLs, regular expressions
------------------------------------------------------------------------------

local function valid_utf8(s)
    local i, n = 1, #s
    while i <= n do
        local c = s:byte(i)
        local len, lo, hi = 0, 0x80, 0xBF
        if c < 0x80 then
            len = 1
        elseif c >= 0xC2 and c <= 0xDF then
            len = 2
        elseif c >= 0xE0 and c <= 0xEF then
            len = 3
            if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
        elseif c >= 0xF0 and c <= 0xF4 then
            len = 4
            if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
        else
            return false
        end
        for k = 1, len - 1 do
            local b = s:byte(i + k)
            if b == nil then return false end
            if k == 1 then
                if b < lo or b > hi then return false end
            elseif b < 0x80 or b > 0xBF then
                return false
            end
        end
        i = i + len
    end
    return true
end
M.valid_utf8 = valid_utf8

local function legacy_name(s)
    return s:match("^[A-Za-z_][A-Za-z0-9_]*$") ~= nil
end

--- Label name validity under a validation scheme ("utf8", the default, or "legacy").
function M.valid_label_name(s, scheme)
    if scheme == "legacy" then return legacy_name(s) end
    return #s > 0 and valid_utf8(s)
end

-- relabel's relabelTargetLegacy: ^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$
local function legacy_relabel_target(s)
    if s == "" then return false end
    local i, first = 1, true
    while i <= #s do
        local c = s:sub(i, i)
        if c:match("[A-Za-z_]") then
            i = i + 1
        elseif c == "$" then
            local ref = s:match("^%${[%w_]+}", i) or s:match("^%$[%w_]+", i)
            if not ref then return false end
            i = i + #ref
        elseif c:match("%d") and not first then
            i = i + 1
        else
            return false
        end
        first = false
    end
    return true
end

local function valid_relabel_target(s, scheme)
    if scheme == "legacy" then return legacy_relabel_target(s) end
    return M.valid_label_name(s, scheme)
end

--- A light RE2 syntax check, used when no relabel engine is loaded: it
-- catches unbalanced ( ) [ ], misplaced repetition operators, bad repeat
-- counts, Perl-only groups and a trailing backslash, with Go's messages.
function M.check_regex(re)
    local function err(code, frag)
        return format("error parsing regexp: %s: `%s`", code, frag)
    end
    local n, i, depth = #re, 1, 0
    local can_repeat = false -- an atom precedes
    local rep = 0 -- 1 after a repetition operator, 2 after its lazy '?'
    while i <= n do
        local c = re:sub(i, i)
        if c == "\\" then
            if i == n then return err("trailing backslash at end of expression", "") end
            local d = re:sub(i + 1, i + 1)
            if d == "Q" then
                local e = re:find("\\E", i + 2, true)
                i = e and e + 2 or n + 1
            elseif (d == "p" or d == "P" or d == "x") and re:sub(i + 2, i + 2) == "{" then
                local e = re:find("}", i + 3, true)
                if not e then return err("invalid escape sequence", re:sub(i)) end
                i = e + 1
            elseif d == "p" or d == "P" then
                i = i + 3
            else
                i = i + 2
            end
            can_repeat, rep = true, 0
        elseif c == "[" then
            local j = i + 1
            if re:sub(j, j) == "^" then j = j + 1 end
            if re:sub(j, j) == "]" then j = j + 1 end
            local closed = false
            while j <= n do
                local d = re:sub(j, j)
                if d == "\\" then
                    j = j + 2
                elseif d == "[" and re:sub(j + 1, j + 1) == ":" then
                    local e = re:find(":]", j + 2, true)
                    j = e and e + 2 or j + 1
                elseif d == "]" then
                    closed = true
                    break
                else
                    j = j + 1
                end
            end
            if not closed then return err("missing closing ]", re:sub(i)) end
            i = j + 1
            can_repeat, rep = true, 0
        elseif c == "(" then
            if re:sub(i + 1, i + 1) == "?" then
                local flags = re:match("^[imsU%-]*[:)]", i + 2)
                local named = re:match("^P?<[%w_]+>", i + 2)
                if flags and flags:sub(-1) == ")" then
                    i = i + 2 + #flags -- (?i): sets flags, opens nothing
                    can_repeat, rep = false, 0
                elseif flags then
                    i = i + 2 + #flags
                    depth = depth + 1
                    can_repeat, rep = false, 0
                elseif named then
                    i = i + 2 + #named
                    depth = depth + 1
                    can_repeat, rep = false, 0
                else
                    return err("invalid or unsupported Perl syntax", re:sub(i, i + 2))
                end
            else
                i = i + 1
                depth = depth + 1
                can_repeat, rep = false, 0
            end
        elseif c == ")" then
            if depth == 0 then return err("unexpected )", re) end
            depth = depth - 1
            i = i + 1
            can_repeat, rep = true, 0
        elseif c == "|" then
            i = i + 1
            can_repeat, rep = false, 0
        elseif c == "*" or c == "+" or c == "?" then
            if rep == 1 and c == "?" then
                rep = 2
            elseif rep > 0 then
                return err("invalid nested repetition operator", re:sub(i - 1, i))
            elseif not can_repeat then
                return err("missing argument to repetition operator", c)
            else
                rep = 1
            end
            i = i + 1
        elseif c == "{" and re:match("^{%d+,?%d*}", i) then
            local brace = re:match("^{%d+,?%d*}", i)
            if rep > 0 then return err("invalid nested repetition operator", brace) end
            if not can_repeat then return err("missing argument to repetition operator", brace) end
            local lo, comma, hi = brace:match("^{(%d+)(,?)(%d*)}$")
            lo, hi = tonumber(lo), tonumber(hi)
            if lo > 1000 or (hi and (hi > 1000 or hi < lo)) then
                return err("invalid repeat count", brace)
            end
            i = i + #brace
            rep = 1
        else
            i = i + 1
            can_repeat, rep = true, 0
        end
    end
    if depth > 0 then return err("missing closing )", re) end
    return nil
end

--- A url.Parse-like check. Returns { scheme, host, ... } or nil, reason.
function M.parse_url(s)
    if s:find("[%z\1-\31\127]") then
        return nil, "invalid control character in URL"
    end
    for esc in s:gmatch("%%(..?)") do
        if not esc:match("^%x%x$") then
            return nil, format("invalid URL escape %s", q("%" .. esc))
        end
    end
    if s:sub(1, 1) == ":" then return nil, "missing protocol scheme" end
    local u = {}
    local scheme, rest = s:match("^([A-Za-z][A-Za-z0-9+.%-]*):(.*)$")
    if scheme then
        u.scheme = scheme:lower()
    else
        rest = s
    end
    local authority = rest:match("^//([^/?#]*)")
    if authority then
        local hostport = authority:match("@([^@]*)$") or authority
        u.userinfo = authority:match("^(.*)@")
        local host, port
        if hostport:sub(1, 1) == "[" then
            host, port = hostport:match("^(%[[%x:.%%%w]*%])(.*)$")
            if not host then return nil, "missing ']' in host" end
        else
            host, port = hostport:match("^([^:]*)(.*)$")
        end
        if port ~= "" and not port:match("^:%d*$") then
            return nil, format("invalid port %s after host", q(port))
        end
        if host:find("[ <>\"{}|\\^`]") then
            return nil, format("invalid character %s in host name", q(host:match("[ <>\"{}|\\^`]")))
        end
        u.host = host
        u.port = port ~= "" and port:sub(2) or nil
    end
    return u
end


M.valid_relabel_target = valid_relabel_target

return M
