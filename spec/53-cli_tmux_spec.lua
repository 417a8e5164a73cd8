-- `promscrape run` on a real terminal (issue 5): started in a detached tmux
-- session (a private tmux server, -L), the pane is captured and must show the
-- live table: its header and a row for the target with health "up".
-- Pending, saying so, when tmux is not installed (Debian package `tmux`).
package.path = "./?.lua;" .. package.path
local server = require "spec.support.server"
local H = require "spec.support.scrape"

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

local function q(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function capture(cmd)
  local p = io.popen(cmd)
  local s = p:read("*a")
  p:close()
  return s
end

local HAS_TMUX = sh("command -v tmux >/dev/null 2>&1")

describe("promscrape run in a terminal (tmux) #slow", function()
  if not HAS_TMUX then
    it("shows the live table", function()
      pending("tmux is not installed (apt-get install -y tmux)")
    end)
    return
  end

  local srv, tmp, sock

  local function tmux(args)
    return "env -u LD_PRELOAD tmux -L " .. sock .. " " .. args
  end

  lazy_setup(function()
    srv = server.start()
    tmp = capture("mktemp -d /tmp/promscrape-tmux.XXXXXX"):match("%S+")
    sock = "promscrape-spec-" .. tmp:match("([^.]+)$")
  end)
  lazy_teardown(function()
    sh(tmux("kill-server") .. " >/dev/null 2>&1")
    if srv then srv:stop() end
    sh("rm -rf " .. q(tmp))
  end)

  it("shows the live table with the header and an up target, refreshed in place", function()
    local cfg = tmp .. "/p.yml"
    local f = assert(io.open(cfg, "w"))
    f:write(([[
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: tmuxjob
    static_configs: [{targets: ["%s"]}]
]]):format(srv:address()))
    f:close()
    local pre = os.getenv("LD_PRELOAD")
    local inner = ("cd %s && %s%s spec/support/run_cli.lua %s run %s --duration 25 --refresh 0.5; sleep 30"):format(
      q(os.getenv("PWD") or "."), pre and ("LD_PRELOAD=" .. q(pre) .. " ") or "",
      H.interpreter(), q(H.cpath()), q(cfg))
    assert.is_true(sh(tmux("new-session -d -s spec -x 150 -y 30 " .. q(inner))))
    local screen = ""
    for _ = 1, 200 do
      server.sleep(0.1)
      screen = capture(tmux("capture-pane -p -t spec"))
      if screen:find("tmuxjob%s+" .. srv:address():gsub("%p", "%%%0") .. "%s+up") then break end
    end
    assert(screen:find("JOB%s+INSTANCE%s+HEALTH%s+LAST SCRAPE%s+DURATION%s+SAMPLES%s+LAST ERROR"),
      "no table header on the screen:\n" .. screen)
    assert.matches("tmuxjob%s+" .. srv:address():gsub("%p", "%%%0") .. "%s+up%s+%d+s ago%s+[%d.]+ms%s+%d+", screen)
    assert.matches("promscrape run .*1 job%(s%), 1 target%(s%), 1 up", screen)
    -- refreshed in place: one header on the screen, not one per redraw
    server.sleep(1.2)
    screen = capture(tmux("capture-pane -p -t spec"))
    local n = 0
    for _ in screen:gmatch("JOB%s+INSTANCE") do n = n + 1 end
    assert.equal(1, n)
    assert.is_nil(screen:find("level=info", 1, true)) -- no log lines while the table runs
    -- Ctrl-C stops cleanly (when the engine watches signals)
    local promscrape = require "promscrape"
    if type(promscrape.core.signal_watch) == "function" then
      assert.is_true(sh(tmux("send-keys -t spec C-c")))
      for _ = 1, 50 do
        server.sleep(0.1)
        screen = capture(tmux("capture-pane -p -t spec"))
        if screen:find("msg=stopped", 1, true) then break end
      end
      assert.matches('msg=stopping reason="signal INT"', screen, 1, true)
      assert.matches("msg=stopped", screen, 1, true)
    end
    sh(tmux("kill-session -t spec") .. " >/dev/null 2>&1")
  end)
end)
