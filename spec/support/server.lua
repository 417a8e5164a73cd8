--- spec/support/server.lua: starts spec/support/server.py for a spec file.
--
--   local server = require "spec.support.server"   -- or dofile
--   local srv = server.start{ tls = true }         -- in setup()/lazy_setup()
--   srv:url("/metrics")       -> "http://127.0.0.1:<port>/metrics"
--   srv:tls_url("/metrics")   -> "https://127.0.0.1:<tlsport>/metrics"
--   srv.ca_file               -- the self-signed CA that signed the TLS cert
--   server.start{ untrusted = true }: one more TLS listener whose certificate
--   is self-signed, trusted by nobody unless given as its own CA:
--   srv:untrusted_url("/metrics"), srv.untrusted_cert
--   srv:hits("/metrics")      -- requests seen for that path (via /hits)
--   srv:stop()                -- in teardown(): kills by pid, removes files
--
-- The server binds 127.0.0.1 only and exits by itself after `lifetime`
-- seconds (default 600). The TLS material (a CA and a server certificate
-- for IP 127.0.0.1 and DNS localhost) is made here with the openssl CLI in a
-- fresh temporary directory. Lua 5.1/LuaJIT and 5.4.
local M = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/support"

-- Helper processes run without LD_PRELOAD: an ASan run of the specs
-- preloads libasan, which curl and python do not take well.
local NOPRELOAD = "env -u LD_PRELOAD "

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0 -- 5.4 returns true; 5.1 returns the status
end

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Debian's interpreter when present: a pyenv shim costs a second per start.
local PYTHON = "python3"
do
  local f = io.open("/usr/bin/python3", "r")
  if f then f:close(); PYTHON = "/usr/bin/python3" end
end

local function sleep(s)
  sh("sleep " .. s)
end

local function mktemp_dir()
  local p = io.popen("mktemp -d /tmp/promscrape-spec.XXXXXX")
  local d = p:read("*l")
  p:close()
  assert(d and d ~= "", "mktemp -d failed")
  return d
end

--- Makes a CA and a server certificate signed by it in dir (EC P-256: fast).
local function make_tls(dir)
  local q = "'" .. dir .. "'"
  local ext = dir .. "/ext.cnf"
  local f = assert(io.open(ext, "w"))
  f:write("subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n",
    "extendedKeyUsage=serverAuth\n")
  f:close()
  local cmds = {
    NOPRELOAD .. "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      .. " -keyout " .. q .. "/ca.key -out " .. q .. "/ca.crt -days 1"
      .. " -subj '/CN=promscrape spec CA'",
    NOPRELOAD .. "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
      .. " -keyout " .. q .. "/server.key -out " .. q .. "/server.csr"
      .. " -subj '/CN=127.0.0.1'",
    NOPRELOAD .. "openssl x509 -req -in " .. q .. "/server.csr -CA " .. q .. "/ca.crt"
      .. " -CAkey " .. q .. "/ca.key -CAcreateserial -out " .. q .. "/server.crt"
      .. " -days 1 -extfile " .. q .. "/ext.cnf",
  }
  for _, c in ipairs(cmds) do
    assert(sh(c .. " >/dev/null 2>&1"), "openssl failed: " .. c)
  end
  return dir .. "/ca.crt", dir .. "/server.crt", dir .. "/server.key"
end

--- A self-signed certificate (its own issuer, no CA) for 127.0.0.1.
local function make_self_signed(dir)
  local q = "'" .. dir .. "'"
  local cmd = NOPRELOAD .. "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
    .. " -nodes -keyout " .. q .. "/self.key -out " .. q .. "/self.crt -days 1"
    .. " -subj '/CN=127.0.0.1' -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost'"
  assert(sh(cmd .. " >/dev/null 2>&1"), "openssl failed: " .. cmd)
  return dir .. "/self.crt", dir .. "/self.key"
end

local Server = {}
Server.__index = Server

function Server:url(path)
  return "http://127.0.0.1:" .. self.port .. (path or "/metrics")
end

function Server:tls_url(path)
  return "https://127.0.0.1:" .. self.tls_port .. (path or "/metrics")
end

function Server:untrusted_url(path)
  return "https://127.0.0.1:" .. self.untrusted_port .. (path or "/metrics")
end

function Server:address()
  return "127.0.0.1:" .. self.port
end

--- GETs a path with the curl CLI: body (or nil on failure).
function Server:get(path)
  local p = io.popen(NOPRELOAD .. "curl -s --max-time 5 '" .. self:url(path) .. "'")
  local body = p:read("*a")
  p:close()
  return body
end

--- How many requests the server saw for path (path and query, exactly).
function Server:hits(path)
  local s = self:get("/hits?path=" .. path:gsub("[^%w%-%._~/]", function(c)
    return string.format("%%%02X", c:byte())
  end))
  return tonumber(s) or 0
end

function Server:stop()
  if self.pid then
    sh("kill " .. self.pid .. " 2>/dev/null")
    self.pid = nil
  end
  if self.dir then
    sh("rm -rf '" .. self.dir .. "'")
    self.dir = nil
  end
end

--- Starts a server. opts.tls: also a TLS listener; opts.untrusted: a TLS
-- listener with a self-signed certificate; opts.lifetime: seconds.
-- Raises if it is not ready within 10 seconds.
function M.start(opts)
  opts = opts or {}
  local dir = mktemp_dir()
  local self = setmetatable({ dir = dir }, Server)
  local args = " --lifetime " .. (opts.lifetime or 600) .. " --ready '" .. dir .. "/ready'"
  if opts.tls then
    self.ca_file, self.cert_file, self.key_file = make_tls(dir)
    args = args .. " --cert '" .. self.cert_file .. "' --key '" .. self.key_file .. "'"
  end
  if opts.untrusted then
    local crt, key = make_self_signed(dir)
    self.untrusted_cert = crt
    args = args .. " --untrusted-cert '" .. crt .. "' --untrusted-key '" .. key .. "'"
  end
  assert(sh(NOPRELOAD .. PYTHON .. " '" .. here .. "/server.py'" .. args
    .. " >'" .. dir .. "/log' 2>&1 &"), "cannot start server.py")
  local line
  for _ = 1, 200 do
    line = read(dir .. "/ready")
    if line and line:match("PID") then break end
    sleep(0.05)
  end
  assert(line and line:match("PID"), "server.py did not start: " .. tostring(read(dir .. "/log")))
  local port, tls_port, pid = line:match("PORT (%d+) TLSPORT (%d+) PID (%d+)")
  self.port, self.tls_port, self.pid = tonumber(port), tonumber(tls_port), tonumber(pid)
  self.untrusted_port = tonumber(line:match("UNTRUSTEDPORT (%d+)"))
  -- Ready means listening; make sure it answers before the specs run.
  for _ = 1, 100 do
    if self:get("/hits?path=/") == "0" then return self end
    sleep(0.05)
  end
  self:stop()
  error("server.py does not answer")
end

--- A port nothing listens on (for "connection refused"): bind, close, reuse.
function M.closed_port()
  local p = io.popen(NOPRELOAD .. PYTHON .. [[ -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()']])
  local port = tonumber(p:read("*l"))
  p:close()
  return port
end

M.sleep = sleep

return M
