--- promscrape.discovery.static: static_configs as a discovery provider
-- (Prometheus discovery.StaticProvider). Each static config becomes one
-- target group whose source is its index ("0", "1", ...), sent once.
--
--   local p = require("promscrape.discovery.static").new(sc.static_configs)
--   d:add_provider("job", p)
local M = {}

local Provider = {}
Provider.__index = Provider

--- new(static_configs [, opts]) -> provider; opts.name names it in errors.
function M.new(configs, opts)
  opts = opts or {}
  local groups = {}
  for i, c in ipairs(configs or {}) do
    local targets, labels = {}, {}
    for j, t in ipairs(c.targets or {}) do targets[j] = t end
    for k, v in pairs(c.labels or {}) do labels[k] = v end
    groups[#groups + 1] = { targets = targets, labels = labels, source = tostring(i - 1) }
  end
  return setmetatable({ name = opts.name or "static", groups = groups }, Provider)
end

function Provider:start(up)
  up(self.groups)
end

--- The groups, without a discovery manager (promscrape check config).
function Provider:discover()
  return self.groups
end

return M
