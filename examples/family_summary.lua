-- examples/family_summary.lua FILE [CONTENT_TYPE]
-- Parses an exposition body (a file, or "-" for stdin) with promscrape.parse
-- and prints one line per metric family: type, series count, help.
-- From a checkout: LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;'
local promscrape = require "promscrape"

local path, ctype = arg[1], arg[2]
if not path then
    io.stderr:write("usage: family_summary.lua FILE|- [CONTENT_TYPE]\n")
    os.exit(2)
end
local f = path == "-" and io.stdin or assert(io.open(path, "rb"))
local body = f:read("a")
if f ~= io.stdin then f:close() end

local t0 = os.clock()
local series, meta = promscrape.parse(body, ctype)
local elapsed = os.clock() - t0
if not series then
    io.stderr:write(path, ": ", meta, "\n")
    os.exit(1)
end

-- A sample belongs to the family whose metadata names it, or to the family
-- its type's suffix points at (foo_bucket -> foo); otherwise to itself.
local suffixes = { "_bucket", "_count", "_sum", "_total", "_created", "_info", "_gcount", "_gsum" }
local function family_of(name)
    if meta[name] then return name end
    for _, s in ipairs(suffixes) do
        if #name > #s and name:sub(-#s) == s then
            local base = name:sub(1, -#s - 1)
            if meta[base] then return base end
        end
    end
    return name
end

local families, order = {}, {}
for _, s in ipairs(series) do
    local fam = family_of(s.name)
    local e = families[fam]
    if not e then
        e = { samples = 0, names = {} }
        families[fam] = e
        order[#order + 1] = fam
    end
    e.samples = e.samples + 1
end
table.sort(order)

local width = 20
for _, fam in ipairs(order) do width = math.max(width, math.min(#fam, 60)) end
local fmt = "%-" .. width .. "s  %-14s %7s  %s\n"
io.write(string.format(fmt, "FAMILY", "TYPE", "SAMPLES", "HELP"))
for _, fam in ipairs(order) do
    local m = meta[fam] or {}
    local help = (m.help or ""):gsub("\n", " ")
    if #help > 60 then help = help:sub(1, 57) .. "..." end
    io.write(string.format(fmt, fam, m.type or "(none)", families[fam].samples, help))
end
io.write(string.format("\n%d families, %d samples, %d bytes parsed in %.2f ms\n",
    #order, #series, #body, elapsed * 1000))
