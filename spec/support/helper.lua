-- spec/support/helper.lua: loaded by busted before any spec (see .busted).
--
-- The ASan stage runs lua5.4 with libasan in LD_PRELOAD. Every program a
-- spec starts (prometheus, curl, python, openssl, nginx, our own CLI) would
-- inherit it, and Go binaries and curl hang or abort with libasan preloaded.
-- So shell commands run by specs drop LD_PRELOAD, except commands that run
-- our own Lua code again (lua5.4, luajit, bin/promscrape): they load the ASan
-- build of core.so, which needs libasan first in line. This is the one place
-- that knows about it.
local preload = os.getenv("LD_PRELOAD")
if preload and preload ~= "" then
    local execute, popen = os.execute, io.popen
    local function clean(cmd)
        if cmd:find("lua5%.4") or cmd:find("luajit") or cmd:find("bin/promscrape") then
            return cmd
        end
        return "env -u LD_PRELOAD sh -c '" .. cmd:gsub("'", "'\\''") .. "'"
    end
    os.execute = function(cmd, ...)
        if cmd == nil then return execute() end
        return execute(clean(cmd), ...)
    end
    io.popen = function(cmd, ...)
        return popen(clean(cmd), ...)
    end
end
