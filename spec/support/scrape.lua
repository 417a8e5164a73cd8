--- spec/support/scrape.lua: helpers shared by the scrape engine specs
-- (40-43). Lua 5.1/LuaJIT and 5.4.
local M = {}

local has_socket, socket = pcall(require, "socket")

--- Timing scale: valgrind (which preloads vgpreload_*.so into the client)
-- runs code 20-50x slower, so the specs' intervals, timeouts and waits grow.
M.SLOW = (os.getenv("LD_PRELOAD") or ""):find("vgpreload") and 5 or 1
M.INTERVAL = 0.2 * M.SLOW -- seconds: the default job's scrape_interval
M.TIMEOUT = 0.15 * M.SLOW -- and its scrape_timeout

--- Seconds as a Prometheus duration string ("150ms").
function M.dur(s)
  return string.format("%dms", math.floor(s * 1000 + 0.5))
end

--- Wall-clock seconds, sub-second when luasocket is installed.
function M.now()
  if has_socket then return socket.gettime() end
  return os.time()
end

--- Steps m until pred() is true or `timeout` seconds passed; returns the
-- last pred() result. Every step is bounded (50 ms).
function M.wait(m, pred, timeout)
  local deadline = M.now() + (timeout or 5) * M.SLOW + (has_socket and 0 or 1)
  local r = pred()
  while not r and M.now() < deadline do
    assert(m:step(0.05))
    r = pred()
  end
  return r
end

--- The first active target of job (a table), or nil.
function M.target(m, job)
  local pool = m:pools()[job]
  return pool and pool:targets()[1]
end

--- Waits until every target of job has done at least n scrapes.
function M.wait_scrapes(m, job, n, timeout)
  return M.wait(m, function()
    local pool = m:pools()[job]
    if not pool then return false end
    local ts = pool:targets()
    if #ts == 0 then return false end
    for _, t in ipairs(ts) do
      if t.scrapes < n then return false end
    end
    return true
  end, timeout)
end

local function matches(labels, want)
  for k, v in pairs(want) do
    if labels[k] ~= v then return false end
  end
  return true
end

--- Store series whose labels include `want` ({ __name__ = "up", job = ... }).
function M.find_all(store, want)
  local out = {}
  for _, s in ipairs(store:series()) do
    if matches(s.labels, want) then out[#out + 1] = s end
  end
  return out
end

--- The one store series matching want, or nil.
function M.find(store, want)
  return M.find_all(store, want)[1]
end

--- The value of series `name` for job (nil if absent).
function M.value(store, name, job, extra)
  local want = { __name__ = name, job = job }
  for k, v in pairs(extra or {}) do want[k] = v end
  local s = M.find(store, want)
  return s and s.value, s
end

--- A one-job prometheus.yml-shaped table, fast by default (0.2 s interval).
function M.job(name, targets, extra)
  local sc = {
    job_name = name,
    scrape_interval = M.dur(M.INTERVAL),
    scrape_timeout = M.dur(M.TIMEOUT),
    static_configs = { { targets = targets } },
  }
  for k, v in pairs(extra or {}) do sc[k] = v end
  return sc
end

function M.config(scs, global)
  return { global = global or { scrape_interval = M.dur(M.INTERVAL) }, scrape_configs = scs }
end

--- The interpreter running the specs, to run the CLI with.
function M.interpreter()
  if jit then return "luajit" end
  return "lua5.4"
end

--- The cpath entry busted was given (build/?.so, build/luajit/?.so, ...).
function M.cpath()
  return package.cpath:match("^[^;]+")
end

return M
