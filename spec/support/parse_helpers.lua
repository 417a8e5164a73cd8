-- spec/support/parse_helpers.lua: what the parser specs (10, 11, 12) share:
-- parse through the façade, and assert acceptance or rejection with the
-- error's line number. Expectations stay in the specs.
local assert = require("luassert") -- specs get it from busted; modules must ask
local M = {}

M.parse = require("promscrape").parse
M.TEXT = "text/plain; version=0.0.4"
M.OM = "application/openmetrics-text; version=1.0.0"
M.STRICT = { strict = true }

local function mode(ct, opts)
  return tostring(ct) .. (opts and opts.strict and " (strict)" or "")
end

-- Parses body as ct (with opts) and returns series, meta; fails the test
-- with the parser's error otherwise.
function M.accepts(body, ct, opts)
  local series, meta = M.parse(body, ct, opts)
  if series == nil then
    error(("expected %q to parse as %s, got error: %s"):format(body, mode(ct, opts),
      tostring(meta)), 2)
  end
  assert.is_table(series)
  assert.is_table(meta)
  return series, meta
end

-- Expects body to be rejected and returns the error. line: the line the
-- error must name ("line N: ..."); false: any line, but that shape; nil: no
-- shape check (errors that are not about a line, such as a content type).
function M.rejects(body, ct, line, opts)
  local series, err = M.parse(body, ct, opts)
  if series ~= nil then
    error(("expected %q to be rejected as %s, but it parsed into %d series"):format(body,
      mode(ct, opts), type(series) == "table" and #series or -1), 2)
  end
  assert.is_string(err)
  if line ~= nil then
    local n = err:match("^line (%d+): ")
    if not n then error("error does not start with 'line N: ': " .. err, 2) end
    if line and tonumber(n) ~= line then
      error(("expected the error on line %d, got: %s"):format(line, err), 2)
    end
  end
  return err
end

function M.count_keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

return M
