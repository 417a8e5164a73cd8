-- Helpers shared by `promscrape run` and `promscrape check`.
local M = {}

local format = string.format

--- {a="b", c="d"} as Prometheus prints a label set: {a="b", c="d"}, sorted.
function M.labels_string(l, skip_meta)
  local keys = {}
  for k in pairs(l or {}) do
    if not (skip_meta and k:sub(1, 2) == "__") then keys[#keys + 1] = k end
  end
  table.sort(keys)
  local out = {}
  for i, k in ipairs(keys) do
    out[i] = format('%s="%s"', k, (tostring(l[k]):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" })))
  end
  return "{" .. table.concat(out, ", ") .. "}"
end

--- Removes user:password@ from URLs (secrets never appear in output).
function M.redact_url(u)
  if type(u) ~= "string" then return u end
  return (u:gsub("^(%a[%w+.-]*://)[^/@]*@", "%1<secret>@"))
end

--- Scrape URL of a target from its labels (as Prometheus's target.URL()).
function M.target_url(t)
  if t.url and t.url ~= "" then return M.redact_url(t.url) end
  local l = t.labels or {}
  return format("%s://%s%s", l.__scheme__ or "http", l.__address__ or "?", l.__metrics_path__ or "/metrics")
end

function M.isatty()
  local ok = os.execute("test -t 1")
  return ok == true or ok == 0
end

-- ---- JSON (lua-cjson 2.1 cannot tell an empty array from an empty object) --

local ARRAY = {}

--- Marks t as a JSON array (also when empty).
function M.array(t)
  return setmetatable(t or {}, ARRAY)
end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    if c == "\r" then return "\\r" end
    return format("\\u%04x", c:byte())
  end) .. '"'
end

--- Encodes a Lua value as JSON: keys of objects sorted; tables marked with
-- M.array (or non-empty sequences) become arrays.
function M.json(v)
  local t = type(v)
  if t == "string" then return json_string(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%.0f", v) end
    return format("%.17g", v)
  end
  if t == "boolean" then return tostring(v) end
  if t ~= "table" then return "null" end
  local out = {}
  if getmetatable(v) == ARRAY or (#v > 0 and next(v, #v) == nil) then
    for i = 1, #v do out[i] = M.json(v[i]) end
    return "[" .. table.concat(out, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for i, k in ipairs(keys) do out[i] = json_string(k) .. ":" .. M.json(v[k]) end
  return "{" .. table.concat(out, ",") .. "}"
end

--- RFC 3339 UTC time with milliseconds (as Go's time.Time marshals, roughly).
function M.rfc3339(t)
  if not t or t == 0 then return "0001-01-01T00:00:00Z" end
  local s = math.floor(t)
  local ms = math.floor((t - s) * 1000 + 0.5)
  if ms >= 1000 then s, ms = s + 1, ms - 1000 end
  local base = os.date("!%Y-%m-%dT%H:%M:%S", s)
  if ms == 0 then return base .. "Z" end
  return (format("%s.%03d", base, ms):gsub("0+$", "")) .. "Z"
end

return M
