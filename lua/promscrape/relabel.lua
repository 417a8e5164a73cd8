-- promscrape.relabel: the Lua side of relabeling.
--
-- A rule list may mix Prometheus rule tables and Lua functions. It is split
-- into segments: each run of consecutive tables is compiled once by the C
-- engine (core.relabel_compile), each function stands alone. Applying walks
-- the segments in order, so C rules never call back into Lua.
--
-- Exported (and re-exported by the promscrape façade):
--   relabel(labels, rules [, opts])  -> labels | nil      (raises on bad rules)
--   relabel_rules(rules [, opts])    -> Rules | nil, err, code
--   Rules:apply(labels)              -> labels | nil, rule_index
--   Rules:trace(labels)              -> { step, ... }
--   Rules:close()
-- opts.metric_name_validation_scheme = "utf8" (default) | "legacy".

local core = require("promscrape.core")

local M = {}

local Rules = {}
Rules.__index = Rules

local function copy_labels(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- Labels as the engine sees them: string names, string values, and no
-- empty values (Prometheus treats "" as absent). Raises on misuse.
local function normalize(t, what)
  if type(t) ~= "table" then
    error(what .. ": expected a table of labels, got " .. type(t), 3)
  end
  local c = {}
  for k, v in pairs(t) do
    if type(k) ~= "string" then
      error(what .. ": label names must be strings, got " .. type(k), 3)
    end
    local tv = type(v)
    if tv == "number" then
      v = tostring(v)
    elseif tv ~= "string" then
      error(what .. ": value of '" .. k .. "' must be a string, got " .. tv, 3)
    end
    if v ~= "" then c[k] = v end
  end
  return c
end

local function check_opts(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error("relabel: opts must be a table", 3)
  end
  for k in pairs(opts) do
    if k ~= "metric_name_validation_scheme" then
      error("relabel: unknown option '" .. tostring(k) .. "'", 3)
    end
  end
  local s = opts.metric_name_validation_scheme
  if s ~= nil and s ~= "utf8" and s ~= "legacy" then
    error("relabel: metric_name_validation_scheme: expected \"utf8\" or "
          .. "\"legacy\", got " .. tostring(s), 3)
  end
  return opts
end

--- Compiles a mixed list. Returns a Rules object or nil, message, code.
function M.relabel_rules(rules, opts)
  if type(rules) ~= "table" then
    error("bad argument #1 to 'relabel_rules' (table expected, got "
          .. type(rules) .. ")", 2)
  end
  opts = check_opts(opts)
  local scheme = opts.metric_name_validation_scheme
  local n = #rules
  for k in pairs(rules) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
      return nil, "rules: expected an array of rules, found key "
        .. tostring(k), "EINVAL"
    end
  end
  local self = setmetatable({ rules = {}, segments = {}, n = n }, Rules)
  local i = 1
  while i <= n do
    local r = rules[i]
    self.rules[i] = r
    if type(r) == "function" then
      self.segments[#self.segments + 1] = { fn = r, first = i, count = 1 }
      i = i + 1
    elseif type(r) == "table" then
      local j = i
      local run = {}
      while j <= n and type(rules[j]) == "table" do
        run[#run + 1] = rules[j]
        self.rules[j] = rules[j]
        j = j + 1
      end
      local c, err, code = core.relabel_compile(run, {
        metric_name_validation_scheme = scheme, index_base = i })
      if not c then
        self:close()
        return nil, err, code
      end
      self.segments[#self.segments + 1] = { c = c, first = i, count = j - i }
      i = j
    else
      self:close()
      return nil, "rule " .. i .. ": expected a table or a function, got "
        .. type(r), "EINVAL"
    end
  end
  return self
end

-- Runs the function rule of segment seg on a copy of labels.
local function call_fn(seg, labels)
  local ok, res = pcall(seg.fn, copy_labels(labels))
  if not ok then
    error("rule " .. seg.first .. ": function failed: " .. tostring(res), 0)
  end
  if res == nil or res == false then return nil end
  if type(res) ~= "table" then
    error("rule " .. seg.first .. ": function must return a label table "
          .. "or nil, got " .. type(res), 0)
  end
  return normalize(res, "rule " .. seg.first)
end

--- Applies the rules. Returns a new label table, or nil and the index of
--- the rule that dropped the set. The input table is never modified.
function Rules:apply(labels)
  local cur = normalize(labels, "labels")
  for _, seg in ipairs(self.segments) do
    if seg.fn then
      cur = call_fn(seg, cur)
      if cur == nil then return nil, seg.first end
    else
      local out, at = seg.c:apply(cur)
      if out == nil then return nil, seg.first + at - 1 end
      cur = out
    end
  end
  return cur
end

-- The joined source value of a table rule, for drop explanations.
local function source_value(rule, labels)
  local sl = rule.source_labels or {}
  local vals = {}
  for i, name in ipairs(sl) do vals[i] = labels[name] or "" end
  return table.concat(vals, rule.separator or ";")
end

local function why_dropped(action, rule, before)
  if action == "function" then return "function returned nil" end
  local v = string.format("%q", source_value(rule, before))
  local re = string.format("%q", rule.regex or "(.*)")
  if action == "keep" then
    return "keep: regex " .. re .. " does not match " .. v
  elseif action == "drop" then
    return "drop: regex " .. re .. " matches " .. v
  end
  local t = rule.target_label
  local tv = string.format("%q", before[t] or "")
  if action == "keepequal" then
    return "keepequal: " .. v .. " differs from " .. t .. "=" .. tv
  end
  return "dropequal: " .. v .. " equals " .. t .. "=" .. tv
end

--- One entry per rule: { index, rule, action, before, after, dropped,
--- reason, skipped }. Rules after a drop are present with skipped = true.
function Rules:trace(labels)
  local cur = normalize(labels, "labels")
  local steps = {}
  for _, seg in ipairs(self.segments) do
    for k = 1, seg.count do
      local i = seg.first + k - 1
      local step = { index = i, rule = self.rules[i] }
      steps[i] = step
      if cur == nil then
        step.skipped = true
        step.action = seg.fn and "function" or seg.c:action(k)
      else
        step.before = cur
        local after
        if seg.fn then
          step.action = "function"
          after = call_fn(seg, cur)
        else
          step.action = seg.c:action(k)
          after = seg.c:apply(cur, k, 1)
        end
        step.after = after
        step.dropped = after == nil
        if after == nil then
          step.reason = why_dropped(step.action, step.rule, cur)
        end
        cur = after
      end
    end
  end
  return steps
end

function Rules:count()
  return self.n
end

--- Frees the compiled C segments now (also left to the GC otherwise).
function Rules:close()
  for _, seg in ipairs(self.segments) do
    if seg.c then seg.c:close() end
  end
  self.segments = {}
end

Rules.__close = Rules.close
M.Rules = Rules

--- One-shot: compiles rules (or takes a Rules object) and applies them.
--- Raises an error naming the rule when a rule is invalid.
function M.relabel(labels, rules, opts)
  if getmetatable(rules) == Rules then
    return (rules:apply(labels))
  end
  local r, err = M.relabel_rules(rules, opts)
  if not r then error(err, 2) end
  local out = r:apply(labels)
  r:close()
  return out
end

return M
