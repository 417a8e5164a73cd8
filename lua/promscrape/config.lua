--- promscrape.config: loads and validates a Prometheus configuration file.
--
--   local config = require "promscrape.config"
--   local cfg, err = config.load("prometheus.yml")        -- or config.parse(text [, source [, opts]])
--
-- The result is a table shaped like prometheus.yml (Prometheus field names)
-- with every default filled in, the global settings applied to each scrape
-- config as Prometheus does, and the jobs of `scrape_config_files` appended
-- to `scrape_configs`. Durations are strings as Prometheus prints them ("1m",
-- "1h30m", "500ms"; see `duration_seconds`), byte sizes are integers.
-- Sections promscrape does not use are dropped with a line in `cfg.warnings`.
-- Errors are "<file>: <field path>: <reason>", e.g.
--   prometheus.yml: scrape_configs[0].scrape_timeout: "20s" is greater than scrape_interval "10s"
-- See docs/config.md.
--
-- Layout: one schema table per section (TLS, BASIC_AUTH, ..., SCRAPE_CONFIG),
-- one generic walker (`convert`) that checks types and unknown fields, fills
-- defaults and builds the field paths, and a `post` hook per section for the
-- cross-field rules. Runs on Lua 5.1/LuaJIT and 5.4.
local yamlload = require "promscrape.config.yaml"
local fs = require "promscrape.config.fs"
local values = require "promscrape.config.values"

local has_lyaml, lyaml = pcall(require, "lyaml")

local M = {}

-- The value of unset things kept verbatim (unsupported sections): lyaml's null.
M.null = has_lyaml and lyaml.null or setmetatable({}, { __tostring = function() return "null" end })

local format, concat, insert = string.format, table.concat, table.insert

------------------------------------------------------------------------------
-- Errors
------------------------------------------------------------------------------

local ConfigError = {}
ConfigError.__index = ConfigError
ConfigError.__tostring = function(e) return e.msg end

local function fail(path, fmt, ...)
    local msg = select("#", ...) > 0 and format(fmt, ...) or fmt
    error(setmetatable({ path = path, msg = msg }, ConfigError), 0)
end

local q = values.quote

local function pjoin(path, key)
    if path == "" then return key end
    return path .. "." .. key
end

local function pindex(path, i)
    return format("%s[%d]", path, i - 1) -- 0-based, as in Prometheus' docs and errors
end

local function set(s) -- Go's len(s) > 0 for optional strings
    return s ~= nil and s ~= ""
end

local function warn(ctx, path, msg)
    local w = path == "" and msg or path .. ": " .. msg
    if ctx.prefix then w = ctx.prefix .. ": " .. w end
    ctx.warnings[#ctx.warnings + 1] = w
end

------------------------------------------------------------------------------
-- Scalar types (promscrape.config.values), re-exported
------------------------------------------------------------------------------

for _, name in ipairs {
    "DURATION_UNITS", "parse_duration", "format_duration", "duration_seconds", "normalize_duration",
    "BYTE_UNITS", "parse_bytes", "valid_utf8", "valid_label_name", "check_regex", "parse_url",
} do
    M[name] = values[name]
end
local valid_utf8 = values.valid_utf8
local valid_relabel_target = values.valid_relabel_target

------------------------------------------------------------------------------
-- Schema DSL and the generic walker
------------------------------------------------------------------------------

local function kind(k, t)
    t = t or {}
    t.kind = k
    return t
end

local STRING = kind "string"
local BOOL = kind "bool"
local UINT = kind "uint"
local INT = kind "int"
local FLOAT = kind "float"
local DURATION = kind "duration"
local BYTES = kind "bytes"
local ANY = kind "any"

local function LIST(elem, null_msg) return kind("list", { elem = elem, null_msg = null_msg }) end
local function MAP(val) return kind("map", { val = val }) end
local function ENUM(values, msg) return kind("enum", { values = values, msg = msg }) end

-- fields: ordered list of { name, spec, default = v|function, required = bool, always = bool }
local function OBJECT(name, fields, post)
    local index = {}
    for _, f in ipairs(fields) do index[f[1]] = f end
    return kind("object", { name = name, fields = fields, index = index, post = post })
end

local EMPTY_MAP = { t = "map", keys = {}, map = {}, line = 0 }

local function describe(node)
    if node.t == "map" then return "a map" end
    if node.t == "seq" then return "a list" end
    return q(node.raw)
end

local function copy(v)
    if type(v) ~= "table" or v == M.null then return v end
    local t = {}
    for k, x in pairs(v) do t[k] = copy(x) end
    return t
end

-- Unsupported sections are kept as plain Lua values (nulls as config.null).
local function plain(node)
    if node.t == "map" then
        local t = {}
        for _, k in ipairs(node.keys) do
            t[k] = plain(node.map[k])
        end
        return t
    elseif node.t == "seq" then
        local t = {}
        for i = 1, node.n do t[i] = plain(node[i]) end
        return t
    end
    local v, ty = yamlload.resolve(node)
    if ty == "null" then return M.null end
    -- .inf and .nan stay text: the config travels on as JSON (manager,
    -- remote_write), which has no such numbers.
    if ty == "float" and (v ~= v or v == math.huge or v == -math.huge) then return node.raw end
    return v
end

local convert

local function convert_scalar(spec, node, path, ctx)
    local k = spec.kind
    if node.t ~= "scalar" then
        local want = ({
            string = "a string", bool = "a boolean", uint = "a non-negative integer", int = "an integer",
            float = "a number", duration = "a duration", bytes = "a byte size", enum = "a string",
        })[k]
        fail(path, "expected %s, got %s", want, describe(node))
    end
    if k == "string" then
        return node.raw
    elseif k == "bool" then
        local v, ty = yamlload.resolve(node)
        if ty ~= "bool" then fail(path, "expected a boolean (true or false), got %s", describe(node)) end
        return v
    elseif k == "uint" or k == "int" then
        local v, ty = yamlload.resolve(node)
        if ty == "bigint" then fail(path, "%s is out of range (at most 2^53)", q(node.raw)) end
        if ty ~= "int" or (k == "uint" and v < 0) then
            fail(path, "expected %s, got %s", k == "uint" and "a non-negative integer" or "an integer", describe(node))
        end
        return v
    elseif k == "float" then
        local v, ty = yamlload.resolve(node)
        if ty == "bigint" then fail(path, "%s is out of range (at most 2^53)", q(node.raw)) end
        if ty ~= "int" and ty ~= "float" then fail(path, "expected a number, got %s", describe(node)) end
        -- No field wants them, and JSON (how the manager passes the config
        -- on) cannot carry them.
        if v ~= v or v == math.huge or v == -math.huge then
            fail(path, "expected a finite number, got %s", describe(node))
        end
        return v
    elseif k == "duration" then
        local ms, err = M.parse_duration(node.raw)
        if not ms then fail(path, "%s", err) end
        return M.format_duration(ms)
    elseif k == "bytes" then
        local v, ty = yamlload.resolve(node)
        if ty == "bigint" then fail(path, "%s is out of range (at most 2^53 bytes)", q(node.raw)) end
        local b = v
        if ty ~= "int" then
            local err
            b, err = M.parse_bytes(node.raw)
            if not b then fail(path, "%s", err) end
            if b > yamlload.MAX_INT then
                fail(path, "%s is out of range (at most 2^53 bytes)", q(node.raw))
            end
        end
        -- Prometheus takes a limit <= 0 as no limit, which is our 0.
        if b < 0 then b = 0 end
        return b
    elseif k == "enum" then
        for _, v in ipairs(spec.values) do
            if v == node.raw then return v end
        end
        if spec.msg then fail(path, spec.msg, node.raw) end
        fail(path, "%s is not one of %s", q(node.raw), concat(spec.values, ", "))
    end
    error("promscrape.config: unknown schema kind " .. tostring(k))
end

convert = function(spec, node, path, ctx)
    if node == nil or node.null then
        return nil
    end
    local k = spec.kind
    if k == "object" then
        if node.t ~= "map" then
            fail(path, "expected a map (%s), got %s", spec.name, describe(node))
        end
        for _, key in ipairs(node.keys) do
            if not spec.index[key] then
                fail(pjoin(path, key), "unknown field (not a field of %s)", spec.name)
            end
        end
        local out = {}
        for _, f in ipairs(spec.fields) do
            local name, fspec = f[1], f[2]
            local child = node.map[name]
            local fpath = pjoin(path, name)
            local v = convert(fspec, child, fpath, ctx)
            if v == nil then
                if f.required then
                    fail(fpath, "missing required field")
                elseif f.always then
                    v = convert(fspec, EMPTY_MAP, fpath, ctx)
                elseif type(f.default) == "function" then
                    v = f.default()
                elseif f.default ~= nil then
                    v = f.default
                end
            end
            out[name] = v
        end
        if spec.post then spec.post(out, path, ctx, node) end
        return out
    elseif k == "list" then
        if node.t ~= "seq" then
            fail(path, "expected a list, got %s", describe(node))
        end
        local out = {}
        for i = 1, node.n do
            local ipath = pindex(path, i)
            local elem = node[i]
            if elem.null then
                fail(ipath, spec.null_msg or "empty or null list element")
            end
            out[i] = convert(spec.elem, elem, ipath, ctx)
        end
        return out
    elseif k == "map" then
        if node.t ~= "map" then
            fail(path, "expected a map, got %s", describe(node))
        end
        local out = {}
        for _, key in ipairs(node.keys) do
            local child = node.map[key]
            local v = convert(spec.val, child, pjoin(path, key), ctx)
            if v == nil and spec.val.kind == "string" then v = "" end -- yaml.v2: null -> ""
            if v == nil and spec.val.kind == "list" then v = {} end
            out[key] = v
        end
        return out
    elseif k == "any" then
        return plain(node)
    elseif k == "custom" then
        return spec.convert(node, path, ctx)
    end
    return convert_scalar(spec, node, path, ctx)
end

------------------------------------------------------------------------------
-- HTTP client (prometheus/common config.HTTPClientConfig)
------------------------------------------------------------------------------

local TLS_VERSION = ENUM({ "TLS10", "TLS11", "TLS12", "TLS13" }, "unknown TLS version: %s")
local TLS_ORDER = { TLS10 = 1, TLS11 = 2, TLS12 = 3, TLS13 = 4 }

local TLS_CONFIG = OBJECT("tls_config", {
    { "ca", STRING }, { "ca_file", STRING },
    { "cert", STRING }, { "cert_file", STRING },
    { "key", STRING }, { "key_file", STRING },
    { "server_name", STRING },
    { "insecure_skip_verify", BOOL, default = false },
    { "min_version", TLS_VERSION },
    { "max_version", TLS_VERSION },
    { "next_protos", LIST(STRING) },
}, function(t, path)
    if set(t.ca) and set(t.ca_file) then
        fail(path, "at most one of ca & ca_file must be configured")
    end
    if set(t.cert) and set(t.cert_file) then
        fail(path, "at most one of cert & cert_file must be configured")
    end
    if set(t.key) and set(t.key_file) then
        fail(path, "at most one of key & key_file must be configured")
    end
    local cert, key = set(t.cert) or set(t.cert_file), set(t.key) or set(t.key_file)
    if cert and not key then
        fail(path, "exactly one of key or key_file must be configured when a client certificate is configured")
    elseif key and not cert then
        fail(path, "exactly one of cert or cert_file must be configured when a client key is configured")
    end
    if t.min_version and t.max_version and TLS_ORDER[t.max_version] < TLS_ORDER[t.min_version] then
        fail(pjoin(path, "max_version"),
            "tls_config.max_version must be greater than or equal to tls_config.min_version if both are specified")
    end
end)

local BASIC_AUTH = OBJECT("basic_auth", {
    { "username", STRING }, { "username_file", STRING },
    { "password", STRING }, { "password_file", STRING },
}, function(t, path)
    if set(t.username) and set(t.username_file) then
        fail(path, "at most one of basic_auth username & username_file must be configured")
    end
    if set(t.password) and set(t.password_file) then
        fail(path, "at most one of basic_auth password & password_file must be configured")
    end
end)

local AUTHORIZATION = OBJECT("authorization", {
    { "type", STRING }, { "credentials", STRING }, { "credentials_file", STRING },
})

local function check_proxy(t, path)
    if t.proxy_url ~= nil then
        local u, err = M.parse_url(t.proxy_url)
        if not u then fail(pjoin(path, "proxy_url"), "%s is not a valid URL: %s", q(t.proxy_url), err) end
        if t.proxy_url ~= "" and (not u.scheme or not set(u.host)) then
            fail(pjoin(path, "proxy_url"), "%s is not a valid URL: scheme and host are required", q(t.proxy_url))
        end
    end
    local has_url = set(t.proxy_url)
    if t.proxy_connect_header and next(t.proxy_connect_header) and not t.proxy_from_environment and not has_url then
        fail(path, "if proxy_connect_header is configured, proxy_url or proxy_from_environment must also be configured")
    end
    if t.proxy_from_environment and has_url then
        fail(path, "if proxy_from_environment is configured, proxy_url must not be configured")
    end
    if t.proxy_from_environment and set(t.no_proxy) then
        fail(path, "if proxy_from_environment is configured, no_proxy must not be configured")
    end
    if not has_url and set(t.no_proxy) then
        fail(path, "if no_proxy is configured, proxy_url must also be configured")
    end
end

local function proxy_fields(list)
    insert(list, { "proxy_url", STRING })
    insert(list, { "no_proxy", STRING })
    insert(list, { "proxy_from_environment", BOOL, default = false })
    insert(list, { "proxy_connect_header", MAP(LIST(STRING)) })
    return list
end

local OAUTH2 = OBJECT("oauth2", proxy_fields {
    { "client_id", STRING },
    { "client_secret", STRING },
    { "client_secret_file", STRING },
    { "scopes", LIST(STRING) },
    { "token_url", STRING },
    { "endpoint_params", MAP(STRING) },
    { "tls_config", TLS_CONFIG, always = true },
}, function(t, path)
    check_proxy(t, path)
end)

-- prometheus/common reservedHeaders (http_headers may not set these).
local RESERVED_HEADERS = {}
for _, h in ipairs {
    "Authorization", "Host", "Content-Encoding", "Content-Length", "Content-Type", "User-Agent",
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Www-Authenticate",
    "Accept-Encoding", "X-Prometheus-Remote-Write-Version", "X-Prometheus-Remote-Read-Version",
    "X-Prometheus-Scrape-Timeout-Seconds", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256",
} do
    RESERVED_HEADERS[h:lower()] = true
end

local HEADER = OBJECT("http_headers entry", {
    { "values", LIST(STRING) }, { "secrets", LIST(STRING) }, { "files", LIST(STRING) },
})

local HTTP_HEADERS = MAP(HEADER)

--- Appends the inline HTTP client fields to an object's field list.
local function http_fields(list, enable_http2)
    insert(list, { "basic_auth", BASIC_AUTH })
    insert(list, { "authorization", AUTHORIZATION })
    insert(list, { "oauth2", OAUTH2 })
    insert(list, { "bearer_token", STRING })
    insert(list, { "bearer_token_file", STRING })
    insert(list, { "tls_config", TLS_CONFIG, always = true })
    insert(list, { "follow_redirects", BOOL, default = true })
    insert(list, { "enable_http2", BOOL, default = enable_http2 })
    insert(list, { "http_headers", HTTP_HEADERS })
    proxy_fields(list)
    return list
end

--- HTTPClientConfig.Validate: exclusivity rules; bearer_token(_file) become
-- authorization{type = "Bearer"} as in Prometheus.
local function check_http(t, path, ctx)
    local bt, btf = set(t.bearer_token), set(t.bearer_token_file)
    if bt and btf then
        fail(path, "at most one of bearer_token & bearer_token_file must be configured")
    end
    if (t.basic_auth or t.oauth2) and (bt or btf) then
        fail(path, "at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured")
    end
    local a = t.authorization
    if a then
        if bt or btf then
            fail(path, "authorization is not compatible with bearer_token & bearer_token_file")
        end
        if set(a.credentials) and set(a.credentials_file) then
            fail(pjoin(path, "authorization"), "at most one of authorization credentials & credentials_file must be configured")
        end
        a.type = (a.type or ""):match("^%s*(.-)%s*$")
        if a.type == "" then a.type = "Bearer" end
        if a.type:lower() == "basic" then
            fail(pjoin(path, "authorization.type"), 'authorization type cannot be set to "basic", use "basic_auth" instead')
        end
        if t.basic_auth or t.oauth2 then
            fail(path, "at most one of basic_auth, oauth2 & authorization must be configured")
        end
    elseif bt then
        t.authorization = { type = "Bearer", credentials = t.bearer_token }
    elseif btf then
        t.authorization = { type = "Bearer", credentials_file = t.bearer_token_file }
    end
    t.bearer_token, t.bearer_token_file = nil, nil
    if t.oauth2 then
        local o, opath = t.oauth2, pjoin(path, "oauth2")
        if t.basic_auth then
            fail(path, "at most one of basic_auth, oauth2 & authorization must be configured")
        end
        if not set(o.client_id) then fail(opath, "oauth2 client_id must be configured") end
        if not set(o.token_url) then fail(opath, "oauth2 token_url must be configured") end
        if set(o.client_secret) and set(o.client_secret_file) then
            fail(opath, "at most one of oauth2 client_secret & client_secret_file must be configured")
        end
        warn(ctx, opath, "not supported by promscrape, requests are sent without OAuth2 credentials")
    end
    check_proxy(t, path)
    if t.http_headers then
        for name in pairs(t.http_headers) do
            if RESERVED_HEADERS[name:lower()] then
                fail(pjoin(pjoin(path, "http_headers"), name), "setting header %s is not allowed", q(name))
            end
        end
    end
end

------------------------------------------------------------------------------
-- Relabeling
------------------------------------------------------------------------------

local RELABEL_ACTIONS = {
    "replace", "keep", "drop", "keepequal", "dropequal", "hashmod",
    "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase",
}
local IS_ACTION = {}
for _, a in ipairs(RELABEL_ACTIONS) do IS_ACTION[a] = true end
M.RELABEL_ACTIONS = RELABEL_ACTIONS

local ACTION = kind("custom", {
    convert = function(node, path)
        if node.t ~= "scalar" then fail(path, "expected a string, got %s", describe(node)) end
        local a = node.raw:lower()
        if not IS_ACTION[a] then fail(path, "unknown relabel action %s", q(node.raw)) end
        return a
    end,
})

local RELABEL_CONFIG = OBJECT("relabel_config", {
    { "source_labels", LIST(STRING) },
    { "separator", STRING, default = ";" },
    { "regex", STRING, default = "(.*)" },
    { "modulus", UINT, default = 0 },
    { "target_label", STRING },
    { "replacement", STRING, default = "$1" },
    { "action", ACTION, default = "replace" },
}, function(r, path, ctx, node)
    -- The fields the file set: some rules forbid setting a field at all.
    local explicit = {}
    for _, key in ipairs(node.keys) do
        if not node.map[key].null then explicit[key] = true end
    end
    ctx.explicit[r] = explicit
end)

local RELABEL_FIELD = {}
for _, f in ipairs(RELABEL_CONFIG.fields) do RELABEL_FIELD[f[1]] = true end

--- relabel.Config.Validate, plus a light regex syntax check, for one rule
-- list: used when the relabel engine is not loaded.
local function check_relabel_structure(list, path, scheme, ctx)
    for i, r in ipairs(list) do
        local rpath = pindex(path, i)
        local a, tl = r.action, r.target_label or ""
        for j, ln in ipairs(r.source_labels or {}) do
            if not M.valid_label_name(ln, "utf8") then
                fail(pindex(pjoin(rpath, "source_labels"), j), "%s is not a valid label name", q(ln))
            end
        end
        if a == "hashmod" and r.modulus == 0 then
            fail(pjoin(rpath, "modulus"), "relabel configuration for hashmod requires non-zero modulus")
        end
        local needs_target = a == "replace" or a == "hashmod" or a == "lowercase" or a == "uppercase"
            or a == "keepequal" or a == "dropequal"
        if needs_target and tl == "" then
            fail(pjoin(rpath, "target_label"), "relabel configuration for %s action requires 'target_label' value", a)
        end
        if a == "replace" and not valid_relabel_target(tl, scheme) then
            fail(pjoin(rpath, "target_label"), "%s is invalid 'target_label' for %s action", q(tl), a)
        end
        local eq_like = a == "lowercase" or a == "uppercase" or a == "keepequal" or a == "dropequal"
        if (eq_like or a == "hashmod") and not M.valid_label_name(tl, scheme) then
            fail(pjoin(rpath, "target_label"), "%s is invalid 'target_label' for %s action", q(tl), a)
        end
        if eq_like and r.replacement ~= "$1" then
            fail(pjoin(rpath, "replacement"), "'replacement' can not be set for %s action", a)
        end
        if a == "labelmap" and not valid_relabel_target(r.replacement, scheme) then
            fail(pjoin(rpath, "replacement"), "%s is invalid 'replacement' for %s action", q(r.replacement), a)
        end
        if a == "keepequal" or a == "dropequal" then
            if (ctx.explicit[r] and ctx.explicit[r].regex) or r.modulus ~= 0 or r.separator ~= ";" then
                fail(rpath, "%s action requires only 'source_labels' and `target_label`, and no other fields", a)
            end
        end
        if a == "labeldrop" or a == "labelkeep" then
            if r.source_labels ~= nil or tl ~= "" or r.modulus ~= 0 or r.separator ~= ";" or r.replacement ~= "$1" then
                fail(rpath, "%s action requires only 'regex', and no other fields", a)
            end
        end
        local rerr = M.check_regex(r.regex)
        if rerr then fail(pjoin(rpath, "regex"), "%s", rerr) end
    end
end

--- Checks a rule list: with the relabel engine (promscrape.relabel_rules)
-- when it is loaded, which reports "rule N: field: reason"; otherwise with
-- check_relabel_structure. Fills source_labels = {} afterwards.
local function check_relabel(list, path, scheme, ctx)
    if ctx.compile_relabel and #list > 0 then
        -- Only the fields the file set: the engine, like Prometheus, tells
        -- an explicit `regex: (.*)` from the default one.
        local rules = {}
        for i, r in ipairs(list) do
            local rule = {}
            for key in pairs(ctx.explicit[r] or {}) do rule[key] = copy(r[key]) end
            rule.action = r.action
            rules[i] = rule
        end
        local ok, res, err = pcall(ctx.compile_relabel, rules, { metric_name_validation_scheme = scheme })
        if not ok then
            fail(path, "%s", (tostring(res):gsub("^[^:]*%.lua:%d+: ", "")))
        end
        if not res then
            err = tostring(err or "invalid relabel rule")
            local n, rest = err:match("^rule (%d+): (.*)$")
            if n then
                local rpath = pindex(path, tonumber(n))
                local field, msg = rest:match("^([%w_]+): (.*)$")
                if field and RELABEL_FIELD[field] then
                    fail(pjoin(rpath, field), "%s", msg)
                end
                fail(rpath, "%s", rest)
            end
            fail(path, "%s", err)
        end
        -- Free the compiled rules now; they were only built to be checked.
        pcall(function() res:close() end)
    else
        check_relabel_structure(list, path, scheme, ctx)
    end
    for _, r in ipairs(list) do
        ctx.explicit[r] = nil
        r.source_labels = r.source_labels or {}
        -- These actions use no regex, and the engine (like Prometheus)
        -- refuses one that is written out, even the default: leaving the
        -- default in would make this result unreadable by parse again,
        -- which apply_config does.
        if r.action == "keepequal" or r.action == "dropequal" then r.regex = nil end
    end
end

------------------------------------------------------------------------------
-- Service discovery
------------------------------------------------------------------------------

-- Every *_sd_configs Prometheus 3.x knows; the ones promscrape has no code for
-- are kept verbatim and reported in cfg.warnings.
local UNSUPPORTED_SD = {
    "azure_sd_configs", "consul_sd_configs", "digitalocean_sd_configs", "docker_sd_configs",
    "dockerswarm_sd_configs", "dns_sd_configs", "ec2_sd_configs", "eureka_sd_configs",
    "gce_sd_configs", "hetzner_sd_configs", "ionos_sd_configs", "kubernetes_sd_configs",
    "kuma_sd_configs", "lightsail_sd_configs", "linode_sd_configs", "marathon_sd_configs",
    "nerve_sd_configs", "nomad_sd_configs", "openstack_sd_configs", "ovhcloud_sd_configs",
    "puppetdb_sd_configs", "scaleway_sd_configs", "serverset_sd_configs", "stackit_sd_configs",
    "triton_sd_configs", "uyuni_sd_configs", "vultr_sd_configs",
}
M.UNSUPPORTED_SD = UNSUPPORTED_SD

local LABEL_SET = MAP(STRING)

local function check_label_set(ls, path, scheme)
    if not ls then return end
    local names = {}
    for k in pairs(ls) do names[#names + 1] = k end
    table.sort(names)
    for _, k in ipairs(names) do
        if not M.valid_label_name(k, scheme) then
            fail(pjoin(path, k), "%s is not a valid label name", q(k))
        end
        if not valid_utf8(ls[k]) then
            fail(pjoin(path, k), "%s is not a valid label value", q(ls[k]))
        end
    end
end

local STATIC_CONFIG = OBJECT("static_config", {
    { "targets", LIST(STRING), default = function() return {} end },
    { "labels", LABEL_SET, default = function() return {} end },
}, function(t, path)
    check_label_set(t.labels, pjoin(path, "labels"), "utf8")
end)

local function valid_file_sd_name(s)
    local star = s:find("*", 1, true)
    if star and (s:find("*", star + 1, true) or s:find("/", star + 1, true)) then return false end
    local ext = s:match("%.(%w+)$")
    return ext ~= nil and ({ json = true, yml = true, yaml = true, JSON = true, YML = true, YAML = true })[ext] == true
end

local FILE_SD_CONFIG = OBJECT("file_sd_config", {
    { "files", LIST(STRING) },
    { "refresh_interval", DURATION, default = "5m" },
}, function(t, path)
    if not t.files or #t.files == 0 then
        fail(pjoin(path, "files"), "file service discovery config must contain at least one path name")
    end
    for i, f in ipairs(t.files) do
        if not valid_file_sd_name(f) then
            fail(pindex(pjoin(path, "files"), i), "path name %s is not valid for file discovery", q(f))
        end
    end
end)

-- An http(s) URL with a host (http_sd_configs, remote_write).
local function check_http_url(url, path)
    local u, err = M.parse_url(url)
    if not u then fail(path, "%s is not a valid URL: %s", q(url), err) end
    if u.scheme ~= "http" and u.scheme ~= "https" then
        fail(path, "%s: URL scheme must be 'http' or 'https'", q(url))
    end
    if not set(u.host) then
        fail(path, "%s: host is missing in URL", q(url))
    end
end

local HTTP_SD_CONFIG = OBJECT("http_sd_config", http_fields({
    { "url", STRING },
    { "refresh_interval", DURATION, default = "1m" },
}, true), function(t, path, ctx)
    if not set(t.url) then fail(pjoin(path, "url"), "URL is missing") end
    check_http_url(t.url, pjoin(path, "url"))
    check_http(t, path, ctx)
end)

------------------------------------------------------------------------------
-- global and scrape_config
------------------------------------------------------------------------------

local SCRAPE_PROTOCOLS = {
    PrometheusProto = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
    ["PrometheusText0.0.4"] = "text/plain;version=0.0.4",
    ["PrometheusText1.0.0"] = "text/plain;version=1.0.0",
    ["OpenMetricsText0.0.1"] = "application/openmetrics-text;version=0.0.1",
    ["OpenMetricsText1.0.0"] = "application/openmetrics-text;version=1.0.0",
}
M.SCRAPE_PROTOCOLS = SCRAPE_PROTOCOLS
M.DEFAULT_SCRAPE_PROTOCOLS = { "OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText1.0.0", "PrometheusText0.0.4" }
M.DEFAULT_PROTO_FIRST_SCRAPE_PROTOCOLS = {
    "PrometheusProto", "OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText1.0.0", "PrometheusText0.0.4",
}

local function supported_protocols()
    local names = {}
    for k in pairs(SCRAPE_PROTOCOLS) do names[#names + 1] = k end
    table.sort(names)
    return "[" .. concat(names, " ") .. "]"
end

local function check_protocols(list, path)
    if #list == 0 then fail(path, "scrape_protocols cannot be empty") end
    local seen = {}
    for i, p in ipairs(list) do
        if seen[p:lower()] then
            fail(path, "duplicated protocol in scrape_protocols, got [%s]", concat(list, " "))
        end
        if not SCRAPE_PROTOCOLS[p] then
            fail(pindex(path, i), "unknown scrape protocol %s, supported: %s", p, supported_protocols())
        end
        seen[p:lower()] = true
    end
end

local VALIDATION_SCHEME = ENUM({ "utf8", "legacy", "" }, '"%s" is not a valid metric_name_validation_scheme, must be "utf8" or "legacy"')
local ESCAPING_SCHEMES = { ["allow-utf-8"] = true, underscores = true, dots = true, values = true }

local function ms(d) return (M.parse_duration(d)) end

-- os.Expand over $NAME / ${NAME}; "$$" is a literal "$". An unset or empty
-- variable expands to "" with a warning, as Prometheus logs one.
local function expand_env(s, path, ctx)
    local out, i, n = {}, 1, #s
    local function lookup(name)
        local v = os.getenv(name)
        if v == nil or v == "" then
            warn(ctx, path, format("environment variable %s is empty", q(name)))
            return ""
        end
        return v
    end
    while i <= n do
        local c = s:sub(i, i)
        local d = s:sub(i + 1, i + 1)
        if c ~= "$" or d == "" then
            out[#out + 1] = c
            i = i + 1
        elseif d == "$" then
            out[#out + 1] = "$"
            i = i + 2
        elseif d == "{" then
            local e = s:find("}", i + 2, true)
            if e and e > i + 2 then
                out[#out + 1] = lookup(s:sub(i + 2, e - 1))
                i = e + 1
            else
                out[#out + 1] = "$"
                i = i + 1
            end
        else
            local name = s:match("^[%w_]+", i + 1)
            if name then
                out[#out + 1] = lookup(name)
                i = i + 1 + #name
            else
                out[#out + 1] = "$"
                i = i + 1
            end
        end
    end
    return concat(out)
end

local GLOBAL = OBJECT("global", {
    { "metric_name_validation_scheme", VALIDATION_SCHEME },
    { "metric_name_escaping_scheme", STRING },
    { "scrape_interval", DURATION, default = "1m" },
    { "scrape_timeout", DURATION },
    { "scrape_protocols", LIST(STRING) },
    { "evaluation_interval", DURATION, default = "1m" },
    { "rule_query_offset", DURATION, default = "0s" },
    { "query_log_file", STRING },
    { "scrape_failure_log_file", STRING },
    { "external_labels", LABEL_SET, default = function() return {} end },
    -- 64 MiB (PS_HTTP_DEFAULT_BODY_LIMIT in src/ps_http.h): Prometheus has no
    -- default, but an unattended scraper should not let one target's gzip
    -- bomb take the process. An explicit 0 still means no limit.
    { "body_size_limit", BYTES, default = 64 * 1024 * 1024 },
    { "sample_limit", UINT, default = 0 },
    { "target_limit", UINT, default = 0 },
    { "label_limit", UINT, default = 0 },
    { "label_name_length_limit", UINT, default = 0 },
    { "label_value_length_limit", UINT, default = 0 },
    { "keep_dropped_targets", UINT, default = 0 },
    { "scrape_native_histograms", BOOL, default = false },
    { "convert_classic_histograms_to_nhcb", BOOL, default = false },
    { "always_scrape_classic_histograms", BOOL, default = false },
    { "extra_scrape_metrics", BOOL, default = false },
}, function(g, path, ctx, node)
    if not set(g.metric_name_validation_scheme) then g.metric_name_validation_scheme = "utf8" end
    local scheme = g.metric_name_validation_scheme
    local epath = pjoin(path, "external_labels")
    check_label_set(g.external_labels, epath, scheme)
    for k, v in pairs(g.external_labels) do
        g.external_labels[k] = expand_env(v, pjoin(epath, k), ctx)
    end
    local interval = ms(g.scrape_interval)
    if interval == 0 then
        g.scrape_interval, interval = "1m", 60000
    end
    if g.scrape_timeout and ms(g.scrape_timeout) > interval then
        fail(pjoin(path, "scrape_timeout"), "%s is greater than scrape_interval %s", q(g.scrape_timeout), q(g.scrape_interval))
    end
    if g.scrape_timeout == nil or ms(g.scrape_timeout) == 0 then
        g.scrape_timeout = M.format_duration(math.min(10000, interval))
    end
    if ms(g.evaluation_interval) == 0 then g.evaluation_interval = "1m" end
    if g.scrape_protocols then
        check_protocols(g.scrape_protocols, pjoin(path, "scrape_protocols"))
    end
    local esc = g.metric_name_escaping_scheme
    if esc == nil or esc == "" then
        g.metric_name_escaping_scheme = scheme == "legacy" and "underscores" or "allow-utf-8"
    elseif not ESCAPING_SCHEMES[esc] then
        fail(pjoin(path, "metric_name_escaping_scheme"),
            "unknown global name escaping method specified, must be one of 'allow-utf-8', 'underscores', 'dots', or 'values', got %s", q(esc))
    end
    if g.metric_name_escaping_scheme == "allow-utf-8" and scheme ~= "utf8" then
        fail(pjoin(path, "metric_name_escaping_scheme"), "utf8 metric names requested but validation scheme is not set to UTF8")
    end
end)

local function sd_list(spec, what)
    return LIST(spec, "empty or null " .. what)
end

local SCRAPE_FIELDS = {
    { "job_name", STRING },
    { "honor_labels", BOOL, default = false },
    { "honor_timestamps", BOOL, default = true },
    { "track_timestamps_staleness", BOOL, default = false },
    { "params", MAP(LIST(STRING)), default = function() return {} end },
    { "scrape_interval", DURATION },
    { "scrape_timeout", DURATION },
    { "scrape_protocols", LIST(STRING) },
    { "fallback_scrape_protocol", STRING },
    { "scrape_native_histograms", BOOL },
    { "always_scrape_classic_histograms", BOOL },
    { "scrape_classic_histograms", BOOL }, -- Prometheus 2.x name; see the post hook
    { "convert_classic_histograms_to_nhcb", BOOL },
    { "extra_scrape_metrics", BOOL },
    { "scrape_failure_log_file", STRING },
    { "metrics_path", STRING, default = "/metrics" },
    { "scheme", STRING, default = "http" },
    { "enable_compression", BOOL, default = true },
    { "body_size_limit", BYTES, default = 0 },
    { "sample_limit", UINT, default = 0 },
    { "target_limit", UINT, default = 0 },
    { "label_limit", UINT, default = 0 },
    { "label_name_length_limit", UINT, default = 0 },
    { "label_value_length_limit", UINT, default = 0 },
    { "native_histogram_bucket_limit", UINT, default = 0 },
    { "native_histogram_min_bucket_factor", FLOAT, default = 0 },
    { "keep_dropped_targets", UINT, default = 0 },
    { "metric_name_validation_scheme", VALIDATION_SCHEME },
    { "metric_name_escaping_scheme", STRING },
    { "relabel_configs", LIST(RELABEL_CONFIG, "empty or null target relabeling rule in scrape config"),
        default = function() return {} end },
    { "metric_relabel_configs", LIST(RELABEL_CONFIG, "empty or null metric relabeling rule in scrape config"),
        default = function() return {} end },
    { "static_configs", sd_list(STATIC_CONFIG, "static_config"), default = function() return {} end },
    { "file_sd_configs", sd_list(FILE_SD_CONFIG, "file_sd_config"), default = function() return {} end },
    { "http_sd_configs", sd_list(HTTP_SD_CONFIG, "http_sd_config"), default = function() return {} end },
}
for _, name in ipairs(UNSUPPORTED_SD) do
    insert(SCRAPE_FIELDS, { name, ANY })
end
http_fields(SCRAPE_FIELDS, true)

--- ScrapeConfig.Validate(globalConfig): inherit from global, then check.
local function scrape_post(c, path, ctx)
    local g = ctx.global
    if not set(c.job_name) then fail(pjoin(path, "job_name"), "job_name is empty") end
    check_http(c, path, ctx)

    if c.scheme ~= "http" and c.scheme ~= "https" then
        fail(pjoin(path, "scheme"), '%s is not a valid scheme, must be "http" or "https"', q(c.scheme))
    end

    if c.scrape_interval == nil or ms(c.scrape_interval) == 0 then
        c.scrape_interval = g.scrape_interval
    end
    local interval = ms(c.scrape_interval)
    if c.scrape_timeout and ms(c.scrape_timeout) > interval then
        fail(pjoin(path, "scrape_timeout"), "%s is greater than scrape_interval %s", q(c.scrape_timeout), q(c.scrape_interval))
    end
    if c.scrape_timeout == nil or ms(c.scrape_timeout) == 0 then
        c.scrape_timeout = M.format_duration(math.min(ms(g.scrape_timeout), interval))
    end

    for _, f in ipairs { "body_size_limit", "sample_limit", "target_limit", "label_limit",
        "label_name_length_limit", "label_value_length_limit", "keep_dropped_targets" } do
        if c[f] == 0 then c[f] = g[f] end
    end
    if not set(c.scrape_failure_log_file) then c.scrape_failure_log_file = g.scrape_failure_log_file end

    if c.scrape_classic_histograms ~= nil then
        warn(ctx, pjoin(path, "scrape_classic_histograms"),
            "renamed always_scrape_classic_histograms in Prometheus 3, read as that")
        if c.always_scrape_classic_histograms == nil then
            c.always_scrape_classic_histograms = c.scrape_classic_histograms
        end
        c.scrape_classic_histograms = nil
    end
    for _, f in ipairs { "scrape_native_histograms", "always_scrape_classic_histograms",
        "convert_classic_histograms_to_nhcb", "extra_scrape_metrics" } do
        if c[f] == nil then c[f] = g[f] end
    end

    if c.scrape_protocols == nil then
        if g.scrape_protocols then
            c.scrape_protocols = copy(g.scrape_protocols)
        elseif c.scrape_native_histograms then
            c.scrape_protocols = copy(M.DEFAULT_PROTO_FIRST_SCRAPE_PROTOCOLS)
        else
            c.scrape_protocols = copy(M.DEFAULT_SCRAPE_PROTOCOLS)
        end
    end
    check_protocols(c.scrape_protocols, pjoin(path, "scrape_protocols"))
    if set(c.fallback_scrape_protocol) and not SCRAPE_PROTOCOLS[c.fallback_scrape_protocol] then
        fail(pjoin(path, "fallback_scrape_protocol"), "unknown scrape protocol %s, supported: %s",
            c.fallback_scrape_protocol, supported_protocols())
    end
    if c.fallback_scrape_protocol == "" then c.fallback_scrape_protocol = nil end

    local local_unset = not set(c.metric_name_validation_scheme)
    if local_unset then c.metric_name_validation_scheme = g.metric_name_validation_scheme end
    local esc = c.metric_name_escaping_scheme
    if esc == nil or esc == "" then
        if local_unset then
            c.metric_name_escaping_scheme = g.metric_name_escaping_scheme
        elseif c.metric_name_validation_scheme == "legacy" then
            c.metric_name_escaping_scheme = "underscores"
        else
            c.metric_name_escaping_scheme = "allow-utf-8"
        end
    elseif not ESCAPING_SCHEMES[esc] then
        fail(pjoin(path, "metric_name_escaping_scheme"),
            "unknown scrape config name escaping method specified, must be one of 'allow-utf-8', 'underscores', 'dots', or 'values', got %s", q(esc))
    end
    if c.metric_name_escaping_scheme == "allow-utf-8" and c.metric_name_validation_scheme ~= "utf8" then
        fail(pjoin(path, "metric_name_escaping_scheme"), "utf8 metric names requested but validation scheme is not set to UTF8")
    end

    local scheme = c.metric_name_validation_scheme
    check_relabel(c.relabel_configs, pjoin(path, "relabel_configs"), scheme, ctx)
    check_relabel(c.metric_relabel_configs, pjoin(path, "metric_relabel_configs"), scheme, ctx)

    -- checkStaticTargets: a URL where host:port belongs.
    if #c.relabel_configs == 0 then
        for i, sc in ipairs(c.static_configs) do
            for j, t in ipairs(sc.targets) do
                if t:find("/", 1, true) then
                    fail(pindex(pjoin(pindex(pjoin(path, "static_configs"), i), "targets"), j),
                        "%s is not a valid hostname", q(t))
                end
            end
        end
    end

    for _, name in ipairs(UNSUPPORTED_SD) do
        if c[name] ~= nil then
            warn(ctx, pjoin(path, name), "not supported by promscrape, ignored")
        end
    end
end

local SCRAPE_CONFIG = OBJECT("scrape_config", SCRAPE_FIELDS, scrape_post)

------------------------------------------------------------------------------
-- remote_write
------------------------------------------------------------------------------

local QUEUE_CONFIG = OBJECT("queue_config", {
    { "capacity", INT, default = 10000 },
    { "max_shards", INT, default = 50 },
    { "min_shards", INT, default = 1 },
    { "max_samples_per_send", INT, default = 2000 },
    { "batch_send_deadline", DURATION, default = "5s" },
    { "min_backoff", DURATION, default = "30ms" },
    { "max_backoff", DURATION, default = "5s" },
    { "retry_on_http_429", BOOL, default = false },
    { "sample_age_limit", DURATION, default = "0s" },
})

local METADATA_CONFIG = OBJECT("metadata_config", {
    { "send", BOOL, default = true },
    { "send_interval", DURATION, default = "1m" },
    { "max_samples_per_send", INT, default = 2000 },
})

local REMOTE_WRITE_FIELDS = http_fields({
    { "url", STRING },
    { "remote_timeout", DURATION, default = "30s" },
    { "headers", MAP(STRING), default = function() return {} end },
    { "write_relabel_configs", LIST(RELABEL_CONFIG, "empty or null relabeling rule in remote write config"),
        default = function() return {} end },
    { "name", STRING },
    { "send_exemplars", BOOL, default = false },
    { "send_native_histograms", BOOL, default = false },
    { "round_robin_dns", BOOL, default = false },
    { "protobuf_message", ENUM({ "prometheus.WriteRequest", "io.prometheus.write.v2.Request" },
        'unknown remote write protobuf message %s, must be "prometheus.WriteRequest" or "io.prometheus.write.v2.Request"'),
        default = "prometheus.WriteRequest" },
    { "queue_config", QUEUE_CONFIG, always = true },
    { "metadata_config", METADATA_CONFIG, always = true },
    { "sigv4", ANY },
    { "azuread", ANY },
    { "google_iam", ANY },
}, false) -- remote write defaults to HTTP/1.1 (DefaultRemoteWriteHTTPClientConfig)

local REMOTE_WRITE = OBJECT("remote_write", REMOTE_WRITE_FIELDS, function(c, path, ctx)
    if not set(c.url) then fail(pjoin(path, "url"), "url for remote_write is empty") end
    check_http_url(c.url, pjoin(path, "url"))
    local names = {}
    for h in pairs(c.headers) do names[#names + 1] = h end
    table.sort(names)
    for _, h in ipairs(names) do
        if h:lower() == "authorization" then
            fail(pjoin(pjoin(path, "headers"), h),
                "authorization header must be changed via the basic_auth, authorization, oauth2, sigv4, azuread or google_iam parameter")
        end
        if RESERVED_HEADERS[h:lower()] and h:lower() ~= "x-prometheus-scrape-timeout-seconds" then
            fail(pjoin(pjoin(path, "headers"), h), "%s is a reserved header. It must not be changed", h)
        end
    end
    local configured = {}
    for _, a in ipairs { "basic_auth", "authorization", "oauth2", "sigv4", "azuread", "google_iam" } do
        if c[a] ~= nil then configured[#configured + 1] = a end
    end
    if #configured > 1 then
        fail(path, "at most one of basic_auth, authorization, oauth2, sigv4, azuread or google_iam must be configured. Currently configured: [%s]",
            concat(configured, " "))
    end
    check_http(c, path, ctx)
    for _, a in ipairs { "sigv4", "azuread", "google_iam" } do
        if c[a] ~= nil then warn(ctx, pjoin(path, a), "not supported by promscrape, kept but unused") end
    end
    check_relabel(c.write_relabel_configs, pjoin(path, "write_relabel_configs"),
        ctx.global.metric_name_validation_scheme, ctx)
end)

------------------------------------------------------------------------------
-- Relative paths (Prometheus SetDirectory)
------------------------------------------------------------------------------

local function dir_tls(t, dir)
    if not t then return end
    t.ca_file = fs.join_dir(dir, t.ca_file)
    t.cert_file = fs.join_dir(dir, t.cert_file)
    t.key_file = fs.join_dir(dir, t.key_file)
end

local function dir_http(c, dir)
    dir_tls(c.tls_config, dir)
    if c.basic_auth then
        c.basic_auth.username_file = fs.join_dir(dir, c.basic_auth.username_file)
        c.basic_auth.password_file = fs.join_dir(dir, c.basic_auth.password_file)
    end
    if c.authorization then
        c.authorization.credentials_file = fs.join_dir(dir, c.authorization.credentials_file)
    end
    if c.oauth2 then
        c.oauth2.client_secret_file = fs.join_dir(dir, c.oauth2.client_secret_file)
        dir_tls(c.oauth2.tls_config, dir)
    end
    for _, h in pairs(c.http_headers or {}) do
        for i, f in ipairs(h.files or {}) do h.files[i] = fs.join_dir(dir, f) end
    end
end

local function dir_scrape(c, dir)
    dir_http(c, dir)
    c.scrape_failure_log_file = fs.join_dir(dir, c.scrape_failure_log_file)
    for _, sd in ipairs(c.file_sd_configs) do
        for i, f in ipairs(sd.files) do sd.files[i] = fs.join_dir(dir, f) end
    end
    for _, sd in ipairs(c.http_sd_configs) do dir_http(sd, dir) end
end

------------------------------------------------------------------------------
-- Top level
------------------------------------------------------------------------------

local IGNORED_SECTIONS = {
    runtime = true, alerting = true, rule_files = true, storage = true,
    tracing = true, remote_read = true, otlp = true,
}
local TOP_ORDER = {
    "global", "runtime", "alerting", "rule_files", "scrape_config_files", "scrape_configs",
    "storage", "tracing", "remote_write", "remote_read", "otlp",
}
local IS_TOP = {}
for _, k in ipairs(TOP_ORDER) do IS_TOP[k] = true end

local SCRAPE_LIST = LIST(SCRAPE_CONFIG, "empty or null scrape config section")
local REMOTE_WRITE_LIST = LIST(REMOTE_WRITE, "empty or null remote write config section")

local function load_yaml(text, path)
    local ok, root = pcall(yamlload.load, text)
    if not ok then fail(path, "yaml: %s", tostring(root)) end
    if root == nil or root.null then return EMPTY_MAP end
    if root.t ~= "map" then
        fail(path, "expected a map at the top level, got %s", describe(root))
    end
    return root
end

local function read_file(path)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, format("cannot read %s: %s", path, (tostring(err):gsub("^.-: ", "", 1)))
    end
    local text, rerr = f:read("*a")
    f:close()
    if not text then
        return nil, format("cannot read %s: %s", path, tostring(rerr))
    end
    return text
end

-- Runs fn() and turns a ConfigError into "source: path: msg".
local function guarded(source, fn)
    local ok, res = pcall(fn)
    if ok then return res end
    if getmetatable(res) == ConfigError then
        if res.path == "" then return nil, format("%s: %s", source, res.msg) end
        return nil, format("%s: %s: %s", source, res.path, res.msg)
    end
    error(res, 0)
end

local function validate_glob(p)
    -- patRulePath: ^[^*]*(\*[^/]*)?$
    local star = p:find("*", 1, true)
    return not (star and (p:find("*", star + 1, true) or p:find("/", star + 1, true)))
end

local function build(root, ctx)
    for _, key in ipairs(root.keys) do
        if not IS_TOP[key] then
            fail(key, "unknown field (not a field of the top-level config)")
        end
    end
    local cfg = { warnings = ctx.warnings }
    for _, key in ipairs(TOP_ORDER) do
        if IGNORED_SECTIONS[key] and root.map[key] ~= nil then
            warn(ctx, key, "not used by promscrape, ignored")
        end
    end
    cfg.global = convert(GLOBAL, root.map.global or EMPTY_MAP, "global", ctx) or convert(GLOBAL, EMPTY_MAP, "global", ctx)
    ctx.global = cfg.global

    cfg.scrape_config_files = convert(LIST(STRING), root.map.scrape_config_files, "scrape_config_files", ctx) or {}
    for i, p in ipairs(cfg.scrape_config_files) do
        if not validate_glob(p) then
            fail(pindex("scrape_config_files", i), "invalid scrape config file path %s", q(p))
        end
    end

    cfg.scrape_configs = convert(SCRAPE_LIST, root.map.scrape_configs, "scrape_configs", ctx) or {}
    local jobs = {}
    for i, sc in ipairs(cfg.scrape_configs) do
        if jobs[sc.job_name] then
            fail(pjoin(pindex("scrape_configs", i), "job_name"), "found multiple scrape configs with job name %s", q(sc.job_name))
        end
        jobs[sc.job_name] = "main config file"
    end
    ctx.jobs = jobs

    cfg.remote_write = convert(REMOTE_WRITE_LIST, root.map.remote_write, "remote_write", ctx) or {}
    local rw_names = {}
    for i, rw in ipairs(cfg.remote_write) do
        if set(rw.name) then
            if rw_names[rw.name] then
                fail(pjoin(pindex("remote_write", i), "name"), "found multiple remote write configs with job name %s", q(rw.name))
            end
            rw_names[rw.name] = true
        end
    end

    local dir = ctx.dir
    if dir then
        cfg.global.query_log_file = fs.join_dir(dir, cfg.global.query_log_file)
        cfg.global.scrape_failure_log_file = fs.join_dir(dir, cfg.global.scrape_failure_log_file)
        for i, p in ipairs(cfg.scrape_config_files) do cfg.scrape_config_files[i] = fs.join_dir(dir, p) end
        for _, sc in ipairs(cfg.scrape_configs) do dir_scrape(sc, dir) end
        for _, rw in ipairs(cfg.remote_write) do dir_http(rw, dir) end
    end
    return cfg
end

local SCRAPE_FILE_KEYS = { scrape_configs = true }

-- Config.GetScrapeConfigs: the jobs of every file matched by scrape_config_files.
local function load_scrape_config_files(cfg, ctx, source)
    if #cfg.scrape_config_files == 0 then return cfg end
    local ok_lfs, lfs = pcall(require, "lfs")
    if not ok_lfs then
        return nil, format("%s: scrape_config_files: needs LuaFileSystem (lfs), which is not installed", source)
    end
    for i, pat in ipairs(cfg.scrape_config_files) do
        local files, gerr = fs.glob(pat)
        if not files then
            return nil, format("%s: %s: error retrieving scrape config files for %s: %s",
                source, pindex("scrape_config_files", i), q(pat), gerr)
        end
        for _, file in ipairs(files) do
            -- A pattern may match a device (/dev/zero, /dev/stdin): reading
            -- one would never end. Directories keep read_file's error.
            local mode = lfs.attributes(file, "mode")
            if mode and mode ~= "file" and mode ~= "directory" then
                return nil, format("%s: %s: %s is not a regular file",
                    source, pindex("scrape_config_files", i), q(file))
            end
            local text, rerr = read_file(file)
            if not text then return nil, rerr end
            local fctx = {
                warnings = ctx.warnings, prefix = file, explicit = ctx.explicit, global = ctx.global,
                compile_relabel = ctx.compile_relabel,
            }
            local list, err = guarded(file, function()
                local root = load_yaml(text, "")
                for _, key in ipairs(root.keys) do
                    if not SCRAPE_FILE_KEYS[key] then
                        fail(key, "unknown field (a scrape config file holds scrape_configs only)")
                    end
                end
                local scs = convert(SCRAPE_LIST, root.map.scrape_configs, "scrape_configs", fctx) or {}
                for j, sc in ipairs(scs) do
                    local first = ctx.jobs[sc.job_name]
                    if first then
                        fail(pjoin(pindex("scrape_configs", j), "job_name"),
                            "found multiple scrape configs with job name %s, first found in %s", q(sc.job_name), first)
                    end
                    ctx.jobs[sc.job_name] = q(fs.abs(file))
                    dir_scrape(sc, fs.dirname(file))
                end
                return scs
            end)
            if not list then return nil, err end
            for _, sc in ipairs(list) do
                cfg.scrape_configs[#cfg.scrape_configs + 1] = sc
            end
        end
    end
    return cfg
end

local function relabel_compiler(opts)
    if opts.relabel_compiler ~= nil then
        return opts.relabel_compiler or nil
    end
    for _, name in ipairs { "promscrape", "promscrape.relabel" } do
        local ok, mod = pcall(require, name)
        if ok and type(mod) == "table" and type(mod.relabel_rules) == "function" then
            return mod.relabel_rules
        end
    end
    return nil
end

--- Parses configuration text.
-- source: the name used in error messages (default "config").
-- opts.dir: directory relative paths are joined with (default: none).
-- opts.relabel_compiler: function(rules) -> obj | nil, err, used to check each
--   relabel rule; false for the built-in structural check only; default:
--   require("promscrape").relabel_rules when it exists.
-- Returns cfg or nil, err.
function M.parse(text, source, opts)
    source = source or "config"
    opts = opts or {}
    if type(text) ~= "string" then
        return nil, format("%s: expected YAML text (a string), got %s", source, type(text))
    end
    local ctx = {
        warnings = {}, explicit = {}, dir = opts.dir,
        compile_relabel = relabel_compiler(opts),
    }
    local cfg, err = guarded(source, function()
        return build(load_yaml(text, ""), ctx)
    end)
    if not cfg then return nil, err end
    return load_scrape_config_files(cfg, ctx, source)
end

--- Reads and parses a configuration file; relative paths in it (and the
-- scrape_config_files globs) are taken relative to its directory.
function M.load(path, opts)
    if type(path) ~= "string" then
        return nil, "cannot read config: expected a file name, got " .. type(path)
    end
    local text, err = read_file(path)
    if not text then return nil, err end
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    if o.dir == nil then o.dir = fs.dirname(path) end
    return M.parse(text, path, o)
end

return M
