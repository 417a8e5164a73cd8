-- spec/check_rockspec.lua ROCKSPEC SOURCE...: the rockspec lists the C
-- sources by hand (luarocks' builtin type has no globs); fail when it and the
-- Makefile's wildcard disagree, naming the difference.
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
if #bad > 0 then
    table.sort(bad)
    io.stderr:write(table.concat(bad, "\n"), "\n")
    os.exit(1)
end
print("rockspec sources match the Makefile (" .. (#arg - 1) .. " files)")
