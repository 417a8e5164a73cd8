--- promscrape: the Prometheus scrape subsystem for Lua.
-- This façade re-exports the C core (`promscrape.core`) and the Lua modules,
-- so users write `require "promscrape"` and never name the core.
local core = require "promscrape.core"

local M = {
    _VERSION = core._VERSION,
    core = core,
}

--- Parses an exposition body.
-- `promscrape.parse(body, content_type [, opts])` -> series, meta | nil, err
M.parse = core.parse

--- prometheus.yml: `promscrape.config.load(path)`, `.parse(yaml_text)`.
M.config = require "promscrape.config"

return M
