-- spec/check_rockspec.lua ROCKSPEC SOURCE...: the rockspec lists the C
-- sources and Lua modules by hand (luarocks' builtin type has no globs); fail
-- when it and the tree (the Makefile's wildcard, lua/**.lua) disagree, naming
-- the difference.
local path = arg[1]
local env = {}
local chunk = assert(loadfile(path, "t", env))
chunk()
local listed = {}
for _, s in ipairs(env.build.modules["promscrape.core"].sources) do
    listed[s] = true
end
local bad = {}
local seen = {}
for i = 2, #arg do
    seen[arg[i]] = true
    if not listed[arg[i]] then
        bad[#bad + 1] = arg[i] .. " is built by make but missing from " .. path
    end
end
for s in pairs(listed) do
    if not seen[s] then
        bad[#bad + 1] = s .. " is in " .. path .. " but not a source make builds"
    end
end
-- Every Lua file under lua/ must be installed as its module.
local p = io.popen("find lua -name '*.lua' | sort")
local nlua = 0
for file in p:lines() do
    nlua = nlua + 1
    local mod = file:sub(5, -5):gsub("/", "."):gsub("%.init$", "")
    if env.build.modules[mod] ~= file then
        bad[#bad + 1] = file .. " is not installed as module " .. mod .. " by " .. path
    end
end
p:close()
if #bad > 0 then
    table.sort(bad)
    io.stderr:write(table.concat(bad, "\n"), "\n")
    os.exit(1)
end
print("rockspec matches the tree (" .. (#arg - 1) .. " C files, " .. nlua .. " Lua modules)")
