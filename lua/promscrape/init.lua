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

--- Relabeling with Prometheus's semantics:
-- `promscrape.relabel(labels, rules)` -> labels | nil (dropped), raises on bad rules;
-- `promscrape.relabel_rules(rules)` -> compiled rules (`:apply`, `:trace`) | nil, err.
local relabel = require "promscrape.relabel"
M.relabel = relabel.relabel
M.relabel_rules = relabel.relabel_rules

--- prometheus.yml: `promscrape.config.load(path)`, `.parse(yaml_text)`.
M.config = require "promscrape.config"

--- The scrape engine: `promscrape.manager{ appender = app }` -> Manager, and
-- `promscrape.memory()` -> MemoryStore. See lua/promscrape/manager.lua.
M.manager = require("promscrape.manager").new
M.memory = core.memory

--- Remote write and fan-out appenders (issue 6): `promscrape.remote_write{...}`
-- -> RemoteWrite, `promscrape.fanout{ app, ... }` -> Fanout. See
-- lua/promscrape/remote_write.lua.
local remote_write = require "promscrape.remote_write"
M.remote_write = remote_write.new
M.fanout = remote_write.fanout

return M
