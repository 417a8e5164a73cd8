--- promscrape.config.fs: paths and globs for the config loader.
-- `join_dir` is Prometheus' config.JoinDir (relative paths in a config file
-- are relative to that file's directory); `glob` is Go's filepath.Glob
-- (`*`, `?`, `[...]`, `\` escapes; matches sorted per directory), written
-- over LuaFileSystem directory listings: no shell, no io.popen.
local M = {}

--- filepath.Clean for "/"-separated paths.
function M.clean(p)
    if p == "" then return "." end
    local abs = p:sub(1, 1) == "/"
    local out = {}
    for seg in p:gmatch("[^/]+") do
        if seg == ".." then
            if #out > 0 and out[#out] ~= ".." then
                out[#out] = nil
            elseif not abs then
                out[#out + 1] = ".."
            end
        elseif seg ~= "." then
            out[#out + 1] = seg
        end
    end
    local s = table.concat(out, "/")
    if abs then return "/" .. s end
    if s == "" then return "." end
    return s
end

function M.is_abs(p)
    return p:sub(1, 1) == "/"
end

function M.dirname(p)
    local d = p:match("^(.*)/[^/]*$")
    if d == nil then return "." end
    if d == "" then return "/" end
    return M.clean(d)
end

--- Prometheus config.JoinDir: "" and absolute paths are kept as they are.
function M.join_dir(dir, p)
    if p == nil or p == "" or M.is_abs(p) or dir == nil then
        return p
    end
    return M.clean(dir .. "/" .. p)
end

function M.abs(p)
    if M.is_abs(p) then return M.clean(p) end
    local ok, lfs = pcall(require, "lfs")
    local cwd = ok and lfs.currentdir() or os.getenv("PWD") or "."
    return M.clean(cwd .. "/" .. p)
end

local function has_meta(s)
    return s:find("[%*%?%[\\]") ~= nil
end

-- Length in bytes of the UTF-8 sequence starting at s[i] (1 on bad input).
local function char_len(s, i)
    local c = s:byte(i)
    if c == nil then return 0 end
    if c >= 0xF0 and c < 0xF8 then return 4 end
    if c >= 0xE0 then return 3 end
    if c >= 0xC0 then return 2 end
    return 1
end

-- Parses a [...] class of pattern `pat` at `pi` (just after "[") against the
-- character `ch`. Returns matched (bool), next pattern index; raises "bad" on
-- a malformed class.
local function match_class(pat, pi, ch)
    local negate = false
    if pat:sub(pi, pi) == "^" then
        negate = true
        pi = pi + 1
    end
    local matched, first = false, true
    while true do
        local c = pat:sub(pi, pi)
        if c == "" then error("bad", 0) end
        if c == "]" and not first then
            pi = pi + 1
            break
        end
        first = false
        local lo
        if c == "\\" then
            pi = pi + 1
            if pi > #pat then error("bad", 0) end
        end
        local n = char_len(pat, pi)
        lo = pat:sub(pi, pi + n - 1)
        pi = pi + n
        local hi = lo
        if pat:sub(pi, pi) == "-" then
            pi = pi + 1
            local c2 = pat:sub(pi, pi)
            if c2 == "" or c2 == "]" then error("bad", 0) end
            if c2 == "\\" then
                pi = pi + 1
                if pi > #pat then error("bad", 0) end
            end
            local n2 = char_len(pat, pi)
            hi = pat:sub(pi, pi + n2 - 1)
            pi = pi + n2
        end
        if lo <= ch and ch <= hi then
            matched = true
        end
    end
    return matched ~= negate, pi
end

--- filepath.Match for one path segment; raises "bad" on a malformed pattern.
local function match(pat, name)
    local function m(pi, ni)
        while pi <= #pat do
            local c = pat:sub(pi, pi)
            if c == "*" then
                while pat:sub(pi, pi) == "*" do pi = pi + 1 end
                if pi > #pat then
                    return not name:find("/", ni, true)
                end
                for k = ni, #name + 1 do
                    if k > ni and name:sub(k - 1, k - 1) == "/" then break end
                    if m(pi, k) then return true end
                end
                return false
            elseif c == "?" then
                if ni > #name or name:sub(ni, ni) == "/" then return false end
                ni = ni + char_len(name, ni)
                pi = pi + 1
            elseif c == "[" then
                if ni > #name then
                    -- Still validate the class syntax, as Go does.
                    match_class(pat, pi + 1, "")
                    return false
                end
                local n = char_len(name, ni)
                local ok, npi = match_class(pat, pi + 1, name:sub(ni, ni + n - 1))
                if not ok then return false end
                pi, ni = npi, ni + n
            else
                if c == "\\" then
                    pi = pi + 1
                    if pi > #pat then error("bad", 0) end
                    c = pat:sub(pi, pi)
                end
                if name:sub(ni, ni) ~= c then return false end
                pi, ni = pi + 1, ni + 1
            end
        end
        return ni > #name
    end
    return m(1, 1)
end

-- Validates the whole pattern's syntax (Go reports ErrBadPattern even when
-- nothing is listed).
local function check_pattern(pat)
    for seg in pat:gmatch("[^/]+") do
        if has_meta(seg) then
            local ok, err = pcall(match, seg, "")
            if not ok then
                if err == "bad" then return false end
                error(err, 0)
            end
            -- Exercise every class once against a probe character.
            local i = 1
            while i <= #seg do
                local c = seg:sub(i, i)
                if c == "\\" then
                    if i == #seg then return false end
                    i = i + 2
                elseif c == "[" then
                    local ok2, res = pcall(function()
                        local _, ni = match_class(seg, i + 1, "a")
                        return ni
                    end)
                    if not ok2 then return false end
                    i = res
                else
                    i = i + 1
                end
            end
        end
    end
    return true
end

M.match = function(pat, name)
    local ok, res = pcall(match, pat, name)
    if not ok then
        if res == "bad" then return nil, "syntax error in pattern" end
        error(res, 0)
    end
    return res
end

--- filepath.Glob. Returns a sorted list of existing paths, or nil, err for a
-- malformed pattern. Needs LuaFileSystem.
function M.glob(pattern)
    local lfs = require "lfs"
    if not check_pattern(pattern) then
        return nil, "syntax error in pattern"
    end
    if not has_meta(pattern) then
        if lfs.symlinkattributes(pattern) then
            return { pattern }
        end
        return {}
    end
    local abs = M.is_abs(pattern)
    local segs = {}
    for seg in pattern:gmatch("[^/]+") do
        segs[#segs + 1] = seg
    end
    local bases = { abs and "/" or "" }
    for i, seg in ipairs(segs) do
        local last = i == #segs
        local nextb = {}
        for _, base in ipairs(bases) do
            local dir = base == "" and "." or base
            local prefix = (base == "" or base:sub(-1) == "/") and base or base .. "/"
            if has_meta(seg) then
                local names = {}
                local ok, iter, state = pcall(lfs.dir, dir)
                if ok then
                    for name in iter, state do
                        if name ~= "." and name ~= ".." and match(seg, name) then
                            names[#names + 1] = name
                        end
                    end
                end
                table.sort(names)
                for _, name in ipairs(names) do
                    local p = prefix .. name
                    if last or lfs.attributes(p, "mode") == "directory" then
                        nextb[#nextb + 1] = p
                    end
                end
            else
                local p = prefix .. seg
                if last then
                    if lfs.symlinkattributes(p) then nextb[#nextb + 1] = p end
                elseif lfs.attributes(p, "mode") == "directory" then
                    nextb[#nextb + 1] = p
                end
            end
        end
        bases = nextb
        if #bases == 0 then break end
    end
    return bases
end

return M
