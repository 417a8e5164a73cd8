-- OpenMetrics conformance suite (../shared/conformance/openmetrics, 211
-- cases, each a folder with `metrics` and `test.json`).
--
-- Strict mode must agree with every case's shouldParse. Default mode
-- follows Prometheus, which accepts some "bad" cases on purpose, so there we
-- only check the shape of the answer: a table pair or nil plus a
-- "line N: ..." message, never a raise.

local core = require("promscrape.core")

local ROOT = "../shared/conformance/openmetrics"
local OM = "application/openmetrics-text; version=1.0.0"

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Case folder names, sorted, without a directory-listing dependency: the
-- suite's README is not a case, so list folders through the shell.
local function cases()
  local p = io.popen('ls -1 "' .. ROOT .. '" 2>/dev/null')
  if not p then return {} end
  local out = {}
  for name in p:lines() do
    if read(ROOT .. "/" .. name .. "/test.json") then
      out[#out + 1] = name
    end
  end
  p:close()
  table.sort(out)
  return out
end

-- test.json is a tiny fixed-shape object: a pattern match is enough.
local function should_parse(json)
  local v = json:match('"shouldParse"%s*:%s*(%a+)')
  assert(v == "true" or v == "false", "test.json without shouldParse")
  return v == "true"
end

local list = cases()

describe("OpenMetrics conformance", function()
  if #list == 0 then
    pending(ROOT .. " not found: conformance cases skipped")
    return
  end

  describe("strict mode agrees with shouldParse", function()
    for _, name in ipairs(list) do
      it(name, function()
        local dir = ROOT .. "/" .. name
        local want = should_parse(read(dir .. "/test.json"))
        local body = assert(read(dir .. "/metrics"))
        local series, err = core.parse(body, OM, { strict = true })
        if want then
          assert(series ~= nil, "expected to parse, got: " .. tostring(err))
          assert.is_table(series)
          assert.is_table(err) -- meta
        else
          assert(series == nil, "expected a rejection, but it parsed")
          assert.is_string(err)
          assert.is_truthy(err:match("^line %d+: "))
        end
      end)
    end
  end)

  describe("default mode answers every case without raising", function()
    for _, name in ipairs(list) do
      it(name, function()
        local body = assert(read(ROOT .. "/" .. name .. "/metrics"))
        local ok, series, second = pcall(core.parse, body, OM)
        assert(ok, "raised: " .. tostring(series))
        if series == nil then
          assert.is_string(second)
          assert.is_truthy(second:match("^line %d+: "), second)
        else
          assert.is_table(series)
          assert.is_table(second)
        end
        -- A strictly valid case must also pass the lenient mode.
        if should_parse(read(ROOT .. "/" .. name .. "/test.json")) then
          assert(series ~= nil, "default mode rejected a valid case: "
            .. tostring(second))
        end
      end)
    end
  end)
end)
