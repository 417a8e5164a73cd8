-- promscrape check config: validates a prometheus.yml and shows, per job,
-- the targets it would scrape.
--
-- The config is loaded with promscrape.config (the same checks as `run`),
-- then static_configs and file_sd_configs are resolved through the
-- discovery providers and handed to a scrape Manager that is never stepped:
-- the engine's own target relabeling decides which targets are active and
-- which are dropped, exactly as `run` would. http_sd_configs are listed as
-- discovered at run time (nothing is fetched).
-- Exit status: 0 valid, 1 invalid (config errors, unreadable or broken
-- file_sd files), 2 usage errors.

local util = require "promscrape.cli.util"

local M = {}

local format = string.format

local USAGE = [[
usage: promscrape check config [options] FILE...

  Validates each prometheus.yml and prints its jobs and the targets they
  would scrape after target relabeling (static_configs and file_sd_configs
  resolved; http_sd_configs are discovered at run time).

options:
  -q, --quiet   print only errors and the SUCCESS/FAILED lines
  -h, --help    this text
]]

local function describe_job(sc, out)
  local interval, timeout = sc.scrape_interval, sc.scrape_timeout
  out:write(format("job %q: every %s, timeout %s, %s://<address>%s\n", sc.job_name,
    tostring(interval), tostring(timeout), sc.scheme or "http", sc.metrics_path or "/metrics"))
end

local function check_one(path, o, out, err)
  local config = require "promscrape.config"
  out:write(format("Checking %s\n", path))
  local cfg, cerr = config.load(path)
  if not cfg then
    err:write(format("  FAILED: %s\n", cerr))
    return false
  end
  for _, w in ipairs(cfg.warnings or {}) do
    out:write(format("  warning: %s\n", w))
  end

  -- Resolve the providers that do not need the network.
  local static = require "promscrape.discovery.static"
  local file = require "promscrape.discovery.file"
  local sets, notes, ok = {}, {}, true
  for _, sc in ipairs(cfg.scrape_configs or {}) do
    local job = sc.job_name
    local groups = {}
    notes[job] = {}
    for _, g in ipairs(static.new(sc.static_configs or {}):discover()) do groups[#groups + 1] = g end
    for i, section in ipairs(sc.file_sd_configs or {}) do
      local p = file.new(section)
      local files = p:list()
      local gs, errs = p:discover()
      for _, g in ipairs(gs) do groups[#groups + 1] = g end
      notes[job][#notes[job] + 1] = format("file_sd_configs[%d]: %s: %d file(s), %d group(s)",
        i - 1, table.concat(section.files or {}, ", "), #files, #gs)
      if #files == 0 then
        notes[job][#notes[job] + 1] = format("  warning: no file matches %s",
          table.concat(section.files or {}, ", "))
      end
      for _, e in ipairs(errs) do
        err:write(format("  FAILED: job %q: file_sd_configs[%d]: %s\n", job, i - 1, e))
        ok = false
      end
    end
    for i, section in ipairs(sc.http_sd_configs or {}) do
      notes[job][#notes[job] + 1] = format("http_sd_configs[%d]: %s: discovered at run time",
        i - 1, util.redact_url(section.url))
    end
    sets[job] = groups
  end

  -- The engine's own target population, without scraping.
  local promscrape = require "promscrape"
  local discovery = require "promscrape.discovery"
  local m = assert(promscrape.manager())
  local applied, aerr = m:apply_config(discovery.engine_config(cfg))
  if not applied then
    m:close()
    err:write(format("  FAILED: %s\n", aerr))
    return false
  end
  local synced, serr = m:sync(sets)
  if not synced then
    m:close()
    err:write(format("  FAILED: %s\n", serr))
    return false
  end
  local pools = m:pools()
  if not o.quiet then
    for _, sc in ipairs(cfg.scrape_configs or {}) do
      local job = sc.job_name
      out:write("\n")
      describe_job(sc, out)
      for _, n in ipairs(notes[job]) do out:write("  " .. n .. "\n") end
      local pool = pools[job]
      local targets = pool and pool:targets() or {}
      local dropped = pool and pool:dropped_targets() or {}
      out:write(format("  %d target(s):\n", #targets))
      for _, t in ipairs(targets) do
        out:write(format("    %s  %s\n", util.target_url(t), util.labels_string(t.labels)))
      end
      if #dropped > 0 then
        out:write(format("  %d dropped by relabeling:\n", #dropped))
        for _, t in ipairs(dropped) do
          out:write(format("    %s%s\n", util.labels_string(t.discovered_labels),
            (t.reason and t.reason ~= "") and ("  (" .. t.reason .. ")") or ""))
        end
      end
    end
    out:write("\n")
  end
  m:close()
  if ok then
    out:write(format("  SUCCESS: %s is valid\n", path))
  else
    err:write(format("  FAILED: %s has errors\n", path))
  end
  return ok
end

--- main(args [, out, err]) -> exit status
function M.main(args, out, err)
  out, err = out or io.stdout, err or io.stderr
  local o, files = {}, {}
  local sub = args[1]
  if sub == "-h" or sub == "--help" then
    out:write(USAGE)
    return 0
  end
  if sub ~= "config" then
    err:write("promscrape check: expected 'config', got " .. tostring(sub) .. "\n" .. USAGE)
    return 2
  end
  for i = 2, #args do
    local a = args[i]
    if a == "-h" or a == "--help" then
      out:write(USAGE)
      return 0
    elseif a == "-q" or a == "--quiet" then
      o.quiet = true
    elseif a:sub(1, 1) == "-" then
      err:write("promscrape check config: unknown option " .. a .. "\n" .. USAGE)
      return 2
    else
      files[#files + 1] = a
    end
  end
  if #files == 0 then
    err:write(USAGE)
    return 2
  end
  local all = true
  for _, f in ipairs(files) do
    if not check_one(f, o, out, err) then all = false end
  end
  return all and 0 or 1
end

return M
