-- promscrape scrape: one scrape of a URL through the real engine.
--
-- A one-target Manager with a memory store scrapes URL once (fetch, parse,
-- report series, exactly as a configured job would), then the store is
-- printed as text exposition: the samples with job="scrape" and instance
-- labels added, and the report series (up, scrape_duration_seconds, ...).
-- The last error, if any, goes to stderr.
-- Exit status: 0 if the target is up, 1 if down, 2 for usage errors.

local M = {}

local USAGE = [[
usage: promscrape scrape [options] URL

  URL  http:// or https:// URL of a metrics endpoint; user:password@ in it
       becomes basic auth, its query string becomes the job's params

options:
  --timeout S          scrape timeout in seconds (default 10)
  --format text|om     ask for text 0.0.4 or OpenMetrics 1.0.0 only
                       (default: Prometheus's Accept list, either)
  --header 'K: V'      a request header; only Authorization is supported
                       (the engine has no custom headers yet)
  --ca-file F          CA bundle to verify an https target with
  --insecure           do not verify the https target's certificate
  --job NAME           the job label (default "scrape")
  -h, --help           this text
]]

local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- scheme://[user[:pass]@]host[:port][/path][?query] -> parts, or nil, err
local function parse_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil, "not an absolute URL: " .. url end
  scheme = scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then
    return nil, "unsupported scheme '" .. scheme .. "' (http or https)"
  end
  rest = rest:gsub("#.*$", "")
  local authority, path = rest:match("^([^/?]*)(.*)$")
  local query
  path, query = path:match("^([^?]*)%??(.*)$")
  local user, pass
  local ui, host = authority:match("^(.*)@(.*)$")
  if ui then
    user, pass = ui:match("^([^:]*):?(.*)$")
    authority = host
  end
  if authority == "" then return nil, "no host in URL: " .. url end
  if path == "" then path = "/" end
  local params = {}
  for pair in query:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = unescape(k)
    params[k] = params[k] or {}
    table.insert(params[k], unescape(v))
  end
  return {
    scheme = scheme, address = authority, path = unescape(path), params = params,
    user = user and unescape(user), password = pass and unescape(pass),
  }
end

local function parse_args(args)
  local o = { timeout = 10, headers = {} }
  local i = 1
  local function value(name)
    i = i + 1
    if args[i] == nil then error({ usage = name .. " needs a value" }) end
    return args[i]
  end
  while i <= #args do
    local a = args[i]
    local k, v = a:match("^(%-%-[%w-]+)=(.*)$")
    if k then
      a = k
      table.insert(args, i + 1, v)
    end
    if a == "-h" or a == "--help" then
      o.help = true
    elseif a == "--timeout" then
      o.timeout = tonumber(value(a))
      if not o.timeout or o.timeout <= 0 then error({ usage = "--timeout: expected seconds > 0" }) end
    elseif a == "--format" then
      o.format = value(a)
      if o.format ~= "text" and o.format ~= "om" then
        error({ usage = "--format: expected text or om, got '" .. o.format .. "'" })
      end
    elseif a == "--header" then
      o.headers[#o.headers + 1] = value(a)
    elseif a == "--ca-file" then
      o.ca_file = value(a)
    elseif a == "--insecure" then
      o.insecure = true
    elseif a == "--job" then
      o.job = value(a)
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      error({ usage = "unknown option " .. a })
    elseif o.url then
      error({ usage = "one URL only" })
    else
      o.url = a
    end
    i = i + 1
  end
  return o
end

local PROTOCOLS = {
  text = { "PrometheusText0.0.4" },
  om = { "OpenMetricsText1.0.0" },
}

-- Builds the one-job config; returns cfg or nil, usage error.
local function build_config(o, u)
  local ms = math.floor(o.timeout * 1000 + 0.5)
  local sc = {
    job_name = o.job or "scrape",
    -- One scrape: an interval longer than the command lives, aligned to a
    -- 1ms grid (vmagent's scrape_align_interval) so it starts at once.
    scrape_interval = "1h",
    scrape_timeout = ms .. "ms",
    scrape_align_interval = "1ms",
    scheme = u.scheme,
    metrics_path = u.path,
    params = u.params,
    scrape_protocols = o.format and PROTOCOLS[o.format] or nil,
    static_configs = { { targets = { u.address } } },
  }
  if u.user then
    sc.basic_auth = { username = u.user, password = u.password }
  end
  for _, h in ipairs(o.headers) do
    local name, val = h:match("^%s*([^:]-)%s*:%s*(.-)%s*$")
    if not name or name == "" then
      return nil, "--header: expected 'Name: value', got '" .. h .. "'"
    end
    if name:lower() ~= "authorization" then
      return nil, "--header: only Authorization is supported, got '" .. name .. "'"
    end
    local typ, cred = val:match("^(%S+)%s+(.+)$")
    if not typ then return nil, "--header: Authorization: expected '<type> <credentials>'" end
    if sc.basic_auth then
      return nil, "--header: Authorization conflicts with the URL's user:password"
    end
    sc.authorization = { type = typ, credentials = cred }
  end
  if o.ca_file or o.insecure then
    sc.tls_config = { ca_file = o.ca_file, insecure_skip_verify = o.insecure or nil }
  end
  return { global = { scrape_interval = "1h" }, scrape_configs = { sc } }
end

local function now() return os.time() end

--- main(args [, out, err]) -> exit status
function M.main(args, out, err)
  out, err = out or io.stdout, err or io.stderr
  local ok, o = pcall(parse_args, args)
  if not ok then
    if type(o) == "table" and o.usage then
      err:write("promscrape scrape: " .. o.usage .. "\n" .. USAGE)
      return 2
    end
    error(o, 0)
  end
  if o.help then
    out:write(USAGE)
    return 0
  end
  if not o.url then
    err:write(USAGE)
    return 2
  end
  local u, uerr = parse_url(o.url)
  if not u then
    err:write("promscrape scrape: " .. uerr .. "\n")
    return 2
  end
  local cfg, cerr = build_config(o, u)
  if not cfg then
    err:write("promscrape scrape: " .. cerr .. "\n")
    return 2
  end

  local promscrape = require("promscrape")
  local m = assert(promscrape.manager())
  local applied, aerr = m:apply_config(cfg)
  if not applied then
    m:close()
    err:write("promscrape scrape: " .. tostring(aerr) .. "\n")
    return 2
  end
  local pool = m:pools()[cfg.scrape_configs[1].job_name]
  local target = pool and pool:targets()[1]
  if not target then
    local dropped = pool and pool:dropped_targets()[1]
    m:close()
    err:write("promscrape scrape: " .. o.url .. ": not a valid target"
      .. (dropped and dropped.reason ~= "" and ": " .. dropped.reason or "") .. "\n")
    return 2
  end
  -- Step until the one scrape is done; the engine's own timeout ends it,
  -- the deadline here is a safety net.
  local deadline = now() + o.timeout + 3
  while target.scrapes < 1 and now() <= deadline do
    assert(m:step(0.1))
    target = pool:targets()[1]
  end
  out:write(m.store:text())
  local up = target.health == "up"
  if target.scrapes < 1 then
    err:write("promscrape scrape: " .. o.url .. ": no scrape finished in time\n")
  elseif target.last_error ~= "" then
    err:write("promscrape scrape: " .. target.url .. ": " .. target.last_error .. "\n")
  end
  m:close()
  return up and 0 or 1
end

M._parse_url = parse_url

return M
