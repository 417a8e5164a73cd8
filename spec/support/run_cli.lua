-- spec/support/run_cli.lua: runs lua/promscrape/cli/<cmd>.lua the way
-- bin/promscrape does (main(args) -> exit status), for commands bin/ does
-- not list yet and for the C core of another build (LuaJIT, ASan):
--   lua spec/support/run_cli.lua CPATH CMD [args...]
-- CPATH is a package.cpath template such as "build/?.so".
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = arg[1] .. ";" .. package.cpath
local mod = require("promscrape.cli." .. arg[2])
local args = {}
for i = 3, #arg do args[#args + 1] = arg[i] end
local ok, status = xpcall(function() return mod.main(args) end, debug.traceback)
if not ok then
  io.stderr:write("internal error: " .. tostring(status) .. "\n")
  os.exit(70)
end
io.stdout:flush()
os.exit(status or 0)
