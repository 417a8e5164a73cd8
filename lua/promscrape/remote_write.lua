--- promscrape.remote_write: Prometheus remote write and fan-out appenders.
--
--   local rw = assert(promscrape.remote_write{
--     url = "http://127.0.0.1:9090/api/v1/write",
--     queue_config = { capacity = 50000, batch_send_deadline = "1s" },
--   })
--   local m = promscrape.manager{ appender = promscrape.fanout{ promscrape.memory(), rw } }
--   ... m:run{ duration = 60 } ...
--   rw:flush(10); m:close(); rw:close()
--
-- promscrape.remote_write(entry) -> RemoteWrite | nil, msg, code
--   entry: one `remote_write` entry of prometheus.yml as a Lua table, with
--   Prometheus's field names and durations as strings ("30s"): url,
--   remote_timeout, headers, basic_auth { username, password |
--   password_file }, authorization { type, credentials | credentials_file },
--   tls_config { ca_file, cert_file, key_file, server_name,
--   insecure_skip_verify, min_version }, proxy_url, follow_redirects,
--   enable_http2, write_relabel_configs, queue_config { capacity,
--   max_shards, min_shards, max_samples_per_send, batch_send_deadline,
--   min_backoff, max_backoff, retry_on_http_429 }, metadata_config { send,
--   send_interval, max_samples_per_send }, send_exemplars, name.
--   It goes through promscrape.config's remote_write schema, so defaults
--   and errors are those of a file. Not supported (an error): oauth2,
--   sigv4, azuread, google_iam, remote write 2.0 (protobuf_message).
--   The object is unbound: it sends nothing until a manager adopts it with
--   promscrape.manager{ appender = rw } (alone or inside a fanout), which
--   binds it to that manager's engine (curl multi handle) for good.
-- rw:stats() -> { sent, failed, retried, dropped, relabel_dropped, pending,
--   inflight, requests, series, shards, desired_shards, reshards,
--   exemplars_sent, exemplars_dropped, metadata_sent, metadata_failed,
--   last_send (Unix s), last_status, last_error, name, url, attached }
--   shards moves between queue_config's min_shards and max_shards with the
--   load (Prometheus's dynamic resharding, every 10 s, sooner on drops);
--   desired_shards is what the last computation asked for.
-- rw:flush([seconds = 60]) -> true | nil, msg, "ELIMIT": sends everything
--   queued now and drives the engine until delivered or the deadline. The
--   manager's scrapes go on meanwhile. Works after m:close() too.
-- rw:close() (also __gc, __close): releases the object; a manager still
--   using it keeps it alive (and sending) until the manager is closed.
--
-- promscrape.fanout{ app, ... } -> Fanout: one scrape forwarded to each app
--   (MemoryStore, RemoteWrite, Fanout). fanout:stats() -> { { kind,
--   errors, rejected, commits, last_error, remote_write = rw stats }, ... }
local core = require "promscrape.core"
local config = require "promscrape.config"

local M = {}

local format = string.format

local function ms(d, what)
  local v, err = config.parse_duration(d)
  if not v then error(format("%s: %s", what, tostring(err)), 0) end
  return v
end

local UNSUPPORTED = { "oauth2", "sigv4", "azuread", "google_iam" }

--- One normalized entry (promscrape.config's shape) -> the flat table
-- core.remote_write_new reads. Raises a message on what we cannot do.
local function flatten(e, path)
  for _, k in ipairs(UNSUPPORTED) do
    if e[k] ~= nil then error(format("%s.%s: not supported by promscrape", path, k), 0) end
  end
  if e.protobuf_message and e.protobuf_message ~= "prometheus.WriteRequest" then
    error(format("%s.protobuf_message: only prometheus.WriteRequest (remote write 1.0) is supported", path), 0)
  end
  local q, md = e.queue_config or {}, e.metadata_config or {}
  local f = {
    name = e.name, url = e.url,
    remote_timeout_ms = ms(e.remote_timeout or "30s", path .. ".remote_timeout"),
    proxy_url = e.proxy_url,
    disable_http2 = e.enable_http2 == false,
    disable_follow_redirects = e.follow_redirects == false,
    write_relabel_configs = e.write_relabel_configs,
    capacity = q.capacity, max_shards = q.max_shards, min_shards = q.min_shards,
    max_samples_per_send = q.max_samples_per_send,
    batch_send_deadline_ms = q.batch_send_deadline and ms(q.batch_send_deadline, path .. ".queue_config.batch_send_deadline"),
    min_backoff_ms = q.min_backoff and ms(q.min_backoff, path .. ".queue_config.min_backoff"),
    max_backoff_ms = q.max_backoff and ms(q.max_backoff, path .. ".queue_config.max_backoff"),
    retry_on_http_429 = q.retry_on_http_429 == true,
    metadata_disable = md.send == false,
    metadata_send_interval_ms = md.send_interval and ms(md.send_interval, path .. ".metadata_config.send_interval"),
    metadata_max_samples_per_send = md.max_samples_per_send,
    send_exemplars = e.send_exemplars == true,
  }
  local hs = {}
  for k, v in pairs(e.headers or {}) do hs[#hs + 1] = k .. ": " .. tostring(v) end
  table.sort(hs)
  f.headers = hs
  if type(e.basic_auth) == "table" then
    f.basic_auth_user = e.basic_auth.username or ""
    -- *_file secrets go down as paths: the request reads them when a send
    -- starts and again when the file changed, as Prometheus does per request
    f.basic_auth_password = e.basic_auth.password
    f.basic_auth_password_file = e.basic_auth.password_file
  end
  local a = e.authorization
  if type(a) == "table" then
    f.auth_type = a.type
    f.auth_credentials = a.credentials
    f.auth_credentials_file = a.credentials_file
  end
  if e.bearer_token or e.bearer_token_file then
    f.auth_type = "Bearer"
    f.auth_credentials = e.bearer_token
    f.auth_credentials_file = e.bearer_token_file
  end
  local t = e.tls_config
  if type(t) == "table" then
    f.tls_ca_file, f.tls_cert_file, f.tls_key_file = t.ca_file, t.cert_file, t.key_file
    f.tls_server_name, f.tls_min_version = t.server_name, t.min_version
    f.tls_insecure_skip_verify = t.insecure_skip_verify == true
  end
  return f
end

local function encode(v)
  return require("promscrape.manager")._encode(v, "")
end

--- promscrape.remote_write(entry) (see the header).
function M.new(entry)
  if type(entry) ~= "table" then
    error("bad argument #1 to 'remote_write' (table expected, got " .. type(entry) .. ")", 2)
  end
  local ok, text = pcall(encode, { remote_write = { entry } })
  if not ok then return nil, "remote_write: " .. tostring(text), "EINVAL" end
  local n, err = config.parse(text, "remote_write")
  if not n then return nil, err, "EINVAL" end
  local flat
  ok, flat = pcall(flatten, n.remote_write[1], "remote_write")
  if not ok then return nil, flat, "EINVAL" end
  return core.remote_write_new(flat)
end

--- promscrape.fanout{ app, ... } (see the header).
function M.fanout(apps)
  if type(apps) ~= "table" then
    error("bad argument #1 to 'fanout' (table expected, got " .. type(apps) .. ")", 2)
  end
  return core.fanout_new(apps)
end

--- The remote_write entries of a normalized config -> the list that
-- core.remote_write_apply takes ({ key, opts }), or nil, err. The key is
-- the canonical text of the normalized entry: an entry whose text is
-- unchanged across a reload keeps its queue (Prometheus's hash rule).
function M.prepare(list)
  local out = {}
  for i, e in ipairs(list or {}) do
    local path = format("remote_write[%d]", i - 1)
    local ok, flat = pcall(flatten, e, path)
    if not ok then return nil, flat end
    local okk, key = pcall(encode, e)
    if not okk then return nil, path .. ": " .. tostring(key) end
    -- Validate now (on a scratch engine), before the scrape config changes.
    local probe, perr = core.remote_write_new(flat)
    if not probe then return nil, path .. ": " .. tostring(perr) end
    probe:close()
    out[i] = { key = key, opts = flat }
  end
  return out
end

M.of_manager = core.manager_remote_writes

------------------------------------------------------------------------------
-- Sharding: promscrape.manager{ shard = { count = N, index = i } }
------------------------------------------------------------------------------

local shards = setmetatable({}, { __mode = "k" }) -- manager -> { count, index }

--- Validates a shard option; raises (at `level`) on misuse.
function M.check_shard(s, level)
  level = (level or 1) + 1
  if type(s) ~= "table" then error("manager: shard must be a table { count = N, index = i }", level) end
  for k in pairs(s) do
    if k ~= "count" and k ~= "index" then error("manager: shard: unknown field '" .. tostring(k) .. "'", level) end
  end
  local n, i = s.count, s.index
  if type(n) ~= "number" or n < 1 or n ~= math.floor(n) then
    error("manager: shard.count must be an integer >= 1", level)
  end
  if type(i) ~= "number" or i < 0 or i >= n or i ~= math.floor(i) then
    error("manager: shard.index must be an integer in [0, count)", level)
  end
  return { count = n, index = i }
end

function M.set_shard(m, s) shards[m] = s end

--- The two target relabel rules of shard s, as promscrape.config normalizes
-- rules: hashmod of the discovered __address__, then keep this shard.
function M.shard_rules(s)
  return {
    { source_labels = { "__address__" }, separator = ";", regex = "(.*)", modulus = s.count,
      target_label = "__tmp_promscrape_shard", replacement = "$1", action = "hashmod" },
    { source_labels = { "__tmp_promscrape_shard" }, separator = ";", regex = format("%d", s.index),
      target_label = "", replacement = "$1", action = "keep" },
  }
end

--- Called by m:apply_config with the flat config before it is applied: adds
-- the shard rules in front of every job's relabel_configs and validates
-- the remote_write entries. Returns what after_apply takes, or nil, err.
function M.before_apply(m, flat)
  local s = shards[m]
  if s then
    for _, j in ipairs(flat.jobs) do
      local rules = M.shard_rules(s)
      for _, r in ipairs(j.relabel_configs or {}) do rules[#rules + 1] = r end
      j.relabel_configs = rules
    end
  end
  return M.prepare(flat.remote_write)
end

--- After the scrape config is applied: the remote_write set (reload
-- diffing by canonical text, see prepare).
function M.after_apply(m, rws)
  return core.remote_write_apply(m, rws)
end

return M
