-- promscrape relabel: the relabel workbench.
--
-- Loads rules (a relabel_configs list, or a prometheus.yml with --job) and
-- label sets (file_sd JSON/YAML, --labels, or the job's static_configs), runs
-- the rules with Rules:trace and prints each step with what changed.
-- Exit status: 0 after printing (dropped sets are results, not errors);
-- 2 for usage errors, unreadable inputs and invalid rules.

local relabel = require("promscrape.relabel")

local M = {}

local USAGE = [[
usage: promscrape relabel [options] RULES [TARGETS]

  RULES    YAML file: a relabel_configs list, a mapping holding
           relabel_configs (or metric_relabel_configs with --metric),
           or a whole prometheus.yml together with --job NAME
  TARGETS  file_sd file (JSON or YAML): [{targets: [...], labels: {...}}]
           each target becomes a label set with __address__ set

options:
  --labels 'a="b",c="d"'  a label set on the command line (repeatable)
  --job NAME              the scrape config to use from a prometheus.yml; its
                          static_configs are used when no label set is given,
                          and job, __scheme__, __metrics_path__ and the
                          interval/timeout labels are added as Prometheus does
  --metric                use metric_relabel_configs instead of relabel_configs
  --legacy                metric_name_validation_scheme: legacy
  --color, --no-color     force or disable ANSI colours (default: if a tty)
  -q, --quiet             print only the final labels of each set
  -h, --help              this text

output markers: + added, - removed, ~ changed, x dropped
]]

local NULL = {} -- a YAML null, distinct from an absent key

-- ---- YAML -----------------------------------------------------------------

-- Plain Lua values from a promscrape.config.yaml node tree. Scalars stay as
-- their raw text, as Prometheus's yaml.v2 reads relabel fields as strings
-- (`regex: 1.10` is "1.10", not 1.1).
local function plain(node)
  if node.t == "map" then
    local t = {}
    for _, k in ipairs(node.keys) do t[k] = plain(node.map[k]) end
    return t
  elseif node.t == "seq" then
    local t = {}
    for i = 1, node.n do t[i] = plain(node[i]) end
    return t
  end
  if node.null then return NULL end
  return node.raw
end

-- Fallback when the config loader is absent: lyaml, scalars stringified.
local function lyaml_plain(v, null)
  if v == null then return NULL end
  if type(v) == "table" then
    local t = {}
    for k, x in pairs(v) do t[k] = lyaml_plain(x, null) end
    return t
  end
  if type(v) == "number" and v == math.floor(v) and v < 2^53 and v > -2^53 then
    return string.format("%d", v)
  end
  return tostring(v)
end

local function load_yaml(path)
  local f, err = io.open(path, "r")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  local ok_cfg, cfg = pcall(require, "promscrape.config.yaml")
  if ok_cfg then
    local ok, root = pcall(cfg.load, text)
    if not ok then return nil, path .. ": " .. tostring(root) end
    if root == nil then return nil, path .. ": empty document" end
    return plain(root)
  end
  local lyaml = require("lyaml")
  local ok, v = pcall(lyaml.load, text)
  if not ok then return nil, path .. ": " .. tostring(v) end
  return lyaml_plain(v, lyaml.null)
end

-- ---- inputs ---------------------------------------------------------------

local RULE_KEYS = { source_labels = true, separator = true, regex = true,
  modulus = true, target_label = true, replacement = true, action = true }

-- One YAML rule mapping -> a rule table for promscrape.relabel. A null
-- regex means "" (Prometheus), other nulls mean "not given".
local function to_rule(y, i)
  if type(y) ~= "table" or y[1] ~= nil then
    return nil, "rule " .. i .. ": expected a mapping"
  end
  local r = {}
  for k, v in pairs(y) do
    if not RULE_KEYS[k] then
      r[k] = v -- let the engine report it, with the rule index
    elseif v == NULL then
      if k == "regex" then r.regex = "" end
    elseif k == "source_labels" then
      if type(v) ~= "table" then
        return nil, "rule " .. i .. ": source_labels: expected a list"
      end
      r.source_labels = {}
      for j, name in ipairs(v) do r.source_labels[j] = name end
    elseif k == "modulus" then
      local n = tonumber(v)
      if not n then
        return nil, "rule " .. i .. ": modulus: expected an integer, got "
          .. tostring(v)
      end
      r.modulus = n
    else
      r[k] = v
    end
  end
  return r
end

local function find_job(doc, job)
  local names = {}
  local scs = doc.scrape_configs
  if type(scs) ~= "table" then return nil, "no scrape_configs" end
  for _, sc in ipairs(scs) do
    if type(sc) == "table" then
      if sc.job_name == job then return sc end
      names[#names + 1] = tostring(sc.job_name)
    end
  end
  return nil, "no job named '" .. tostring(job) .. "' (jobs: "
    .. table.concat(names, ", ") .. ")"
end

-- Returns rules (array), the scrape config (or nil), or nil, err.
local function load_rules(path, opts)
  local doc, err = load_yaml(path)
  if not doc then return nil, nil, err end
  local key = opts.metric and "metric_relabel_configs" or "relabel_configs"
  local list, sc
  if type(doc) == "table" and doc[1] ~= nil then
    list = doc
  elseif type(doc) == "table" and doc.scrape_configs ~= nil then
    if not opts.job then
      local names = {}
      for _, s in ipairs(type(doc.scrape_configs) == "table"
                         and doc.scrape_configs or {}) do
        if type(s) == "table" then names[#names + 1] = tostring(s.job_name) end
      end
      return nil, nil, path .. ": a prometheus.yml needs --job NAME (jobs: "
        .. table.concat(names, ", ") .. ")"
    end
    sc, err = find_job(doc, opts.job)
    if not sc then return nil, nil, path .. ": " .. err end
    sc.__global = type(doc.global) == "table" and doc.global or {}
    list = sc[key] == NULL and {} or (sc[key] or {})
  elseif type(doc) == "table" and (doc[key] ~= nil) then
    list = doc[key] == NULL and {} or doc[key]
  elseif type(doc) == "table" and next(doc) == nil then
    list = {}
  else
    return nil, nil, path .. ": expected a list of rules or a mapping with "
      .. key
  end
  if type(list) ~= "table" then
    return nil, nil, path .. ": " .. key .. ": expected a list"
  end
  local rules = {}
  for i, y in ipairs(list) do
    local r, e = to_rule(y, i)
    if not r then return nil, nil, path .. ": " .. e end
    rules[i] = r
  end
  return rules, sc
end

-- Parses 'a="b",c="d"' (optionally in braces; values may be unquoted).
local function parse_labels(s)
  local t, i, n = {}, 1, #s
  local function skip() while i <= n and s:sub(i, i):match("%s") do i = i + 1 end end
  skip()
  local braced = s:sub(i, i) == "{"
  if braced then i = i + 1 end
  while true do
    skip()
    if i > n or (braced and s:sub(i, i) == "}") then break end
    local name = s:match('^"([^"]*)"', i)
    if name then
      i = i + #name + 2
    else
      name = s:match("^[^=,%s{}]+", i)
      if not name then return nil, "expected a label name at column " .. i end
      i = i + #name
    end
    skip()
    if s:sub(i, i) ~= "=" then return nil, "expected '=' after " .. name end
    i = i + 1
    skip()
    local v
    if s:sub(i, i) == '"' then
      local buf = {}
      i = i + 1
      while true do
        local c = s:sub(i, i)
        if c == "" then return nil, "unterminated value of " .. name end
        if c == '"' then i = i + 1 break end
        if c == "\\" then
          local d = s:sub(i + 1, i + 1)
          buf[#buf + 1] = d == "n" and "\n" or d
          i = i + 2
        else
          buf[#buf + 1] = c
          i = i + 1
        end
      end
      v = table.concat(buf)
    else
      v = s:match("^[^,}]*", i)
      i = i + #v
      v = v:gsub("%s+$", "")
    end
    t[name] = v
    skip()
    if s:sub(i, i) == "," then i = i + 1 end
  end
  return t
end

-- file_sd groups (or static_configs) -> label sets, one per target.
local function expand_groups(groups, where)
  local sets = {}
  if type(groups) ~= "table" then
    return nil, where .. ": expected a list of target groups"
  end
  for gi, g in ipairs(groups) do
    if type(g) ~= "table" or type(g.targets) ~= "table" then
      return nil, where .. ": group " .. gi .. ": expected targets list"
    end
    for _, tgt in ipairs(g.targets) do
      local l = {}
      if type(g.labels) == "table" then
        for k, v in pairs(g.labels) do
          if v ~= NULL then l[k] = v end
        end
      end
      l.__address__ = tgt
      sets[#sets + 1] = l
    end
  end
  return sets
end

-- What Prometheus's populateLabels adds before target relabeling.
local function add_job_labels(sets, sc)
  local g = sc.__global
  local defaults = {
    job = sc.job_name,
    __scheme__ = sc.scheme or "http",
    __metrics_path__ = sc.metrics_path or "/metrics",
    __scrape_interval__ = sc.scrape_interval or g.scrape_interval or "1m",
    __scrape_timeout__ = sc.scrape_timeout or g.scrape_timeout or "10s",
  }
  if type(sc.params) == "table" then
    for k, v in pairs(sc.params) do
      if type(v) == "table" and v[1] then defaults["__param_" .. k] = v[1] end
    end
  end
  for _, l in ipairs(sets) do
    for k, v in pairs(defaults) do
      if l[k] == nil and v ~= NULL then l[k] = v end
    end
  end
end

-- ---- output ---------------------------------------------------------------

local function isatty()
  if os.getenv("NO_COLOR") then return false end
  local ok = os.execute("test -t 1")
  return ok == true or ok == 0 -- Lua 5.4 returns true, LuaJIT/5.1 0
end

local function quote(v)
  return '"' .. v:gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"',
    ["\n"] = "\\n" }) .. '"'
end

local function sorted_keys(t)
  local k = {}
  for n in pairs(t) do k[#k + 1] = n end
  table.sort(k)
  return k
end

local function fmt_labels(t)
  local parts = {}
  for _, k in ipairs(sorted_keys(t)) do parts[#parts + 1] = k .. "=" .. quote(t[k]) end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local function describe(rule, action)
  if type(rule) == "function" then return "function" end
  local p = { action }
  if rule.source_labels then
    p[#p + 1] = "source_labels=[" .. table.concat(rule.source_labels, ",") .. "]"
  end
  for _, k in ipairs({ "separator", "regex", "modulus", "target_label",
                       "replacement" }) do
    if rule[k] ~= nil then
      local v = rule[k]
      p[#p + 1] = k .. "=" .. (type(v) == "string" and quote(v) or tostring(v))
    end
  end
  return table.concat(p, " ")
end

local function painter(color)
  local codes = { add = "32", del = "31", chg = "33", drop = "1;31",
    head = "1", dim = "2", keep = "1;32" }
  return function(kind, s)
    if not color then return s end
    return "\27[" .. codes[kind] .. "m" .. s .. "\27[0m"
  end
end

local function print_set(out, n, labels, steps, opts, paint)
  local final, dropped_by
  for _, st in ipairs(steps) do
    if st.dropped then dropped_by = st end
    if st.after then final = st.after end
  end
  if #steps == 0 then final = labels end
  if opts.quiet then
    if dropped_by then
      out:write(paint("drop", "dropped") .. " by rule " .. dropped_by.index
        .. "\n")
    else
      out:write(fmt_labels(final) .. "\n")
    end
    return
  end
  out:write(paint("head", "== label set " .. n .. ": ") .. fmt_labels(labels)
    .. "\n")
  for _, st in ipairs(steps) do
    local head = string.format("rule %d  %s", st.index,
      describe(st.rule, st.action))
    if st.skipped then
      out:write(paint("dim", head .. "  (not run)") .. "\n")
    else
      out:write(paint("head", head) .. "\n")
      if st.dropped then
        out:write("    " .. paint("drop", "x dropped: " .. st.reason) .. "\n")
      else
        local changed = false
        local b, a = st.before, st.after
        local names = {}
        for k in pairs(b) do names[k] = true end
        for k in pairs(a) do names[k] = true end
        for _, k in ipairs(sorted_keys(names)) do
          if b[k] == nil then
            out:write("    " .. paint("add", "+ " .. k .. "=" .. quote(a[k])) .. "\n")
            changed = true
          elseif a[k] == nil then
            out:write("    " .. paint("del", "- " .. k .. "=" .. quote(b[k])) .. "\n")
            changed = true
          elseif a[k] ~= b[k] then
            out:write("    " .. paint("chg", "~ " .. k .. "=" .. quote(b[k])
              .. " -> " .. quote(a[k])) .. "\n")
            changed = true
          end
        end
        if not changed then out:write("    " .. paint("dim", "(no change)") .. "\n") end
      end
    end
  end
  if dropped_by then
    out:write(paint("drop", "=> dropped by rule " .. dropped_by.index) .. "\n")
  else
    out:write(paint("keep", "=> ") .. fmt_labels(final) .. "\n")
  end
end

-- ---- main -----------------------------------------------------------------

local function fail(msg)
  io.stderr:write("promscrape relabel: " .. msg .. "\n")
  return 2
end

function M.main(args, out)
  out = out or io.stdout
  local opts = { labels = {} }
  local files = {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then
      out:write(USAGE)
      return 0
    elseif a == "--labels" or a == "--job" then
      local v = args[i + 1]
      if v == nil then return fail(a .. " needs a value\n" .. USAGE) end
      if a == "--job" then opts.job = v else opts.labels[#opts.labels + 1] = v end
      i = i + 1
    elseif a:match("^%-%-labels=") then
      opts.labels[#opts.labels + 1] = a:sub(10)
    elseif a:match("^%-%-job=") then
      opts.job = a:sub(7)
    elseif a == "--metric" then opts.metric = true
    elseif a == "--legacy" then opts.legacy = true
    elseif a == "--color" then opts.color = true
    elseif a == "--no-color" then opts.color = false
    elseif a == "-q" or a == "--quiet" then opts.quiet = true
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      return fail("unknown option " .. a .. "\n" .. USAGE)
    else
      files[#files + 1] = a
    end
    i = i + 1
  end
  if #files < 1 or #files > 2 then
    return fail("expected RULES [TARGETS]\n" .. USAGE)
  end

  local rules, sc, err = load_rules(files[1], opts)
  if not rules then return fail(sc or err) end
  local compiled, cerr = relabel.relabel_rules(rules,
    { metric_name_validation_scheme = opts.legacy and "legacy" or nil })
  if not compiled then return fail(files[1] .. ": " .. cerr) end

  local sets = {}
  for _, s in ipairs(opts.labels) do
    local l, perr = parse_labels(s)
    if not l then return fail("--labels: " .. perr) end
    sets[#sets + 1] = l
  end
  if files[2] then
    local groups, lerr = load_yaml(files[2])
    if not groups then return fail(lerr) end
    local more, gerr = expand_groups(groups, files[2])
    if not more then return fail(gerr) end
    for _, l in ipairs(more) do sets[#sets + 1] = l end
  end
  if #sets == 0 and sc and type(sc.static_configs) == "table" then
    local more, gerr = expand_groups(sc.static_configs, "static_configs")
    if not more then return fail(gerr) end
    sets = more
  end
  if #sets == 0 then
    return fail("no label sets: give TARGETS or --labels")
  end
  if sc and not opts.metric then add_job_labels(sets, sc) end

  local color = opts.color
  if color == nil then color = out == io.stdout and isatty() end
  local paint = painter(color)
  for n, l in ipairs(sets) do
    local ok, steps = pcall(compiled.trace, compiled, l)
    if not ok then
      compiled:close()
      return fail("label set " .. n .. ": " .. tostring(steps))
    end
    if n > 1 and not opts.quiet then out:write("\n") end
    print_set(out, n, l, steps, opts, paint)
  end
  compiled:close()
  return 0
end

M.parse_labels = parse_labels

return M
