#!/usr/bin/env lua5.4
-- fuzz_config.lua [SECONDS] [corpus dirs...] -- a coverage-guided fuzzer for
-- the YAML config loader (promscrape.config).
--
-- The loader is Lua, so libFuzzer would only see the interpreter's own
-- coverage. Instead, a debug.sethook line hook records edges (previous line
-- -> line) in the lua/promscrape/** sources while one input runs; an input
-- that reaches a new edge joins the working corpus build/fuzz/corpus/config.
-- The corpus dirs given (default spec/fuzz/corpus/config, the checked-in
-- seeds and regression cases) are read only.
--
-- Per input: config.parse(text) and, when it returns a config, apply it to
-- a fresh manager (never run) and close that. The property: success, or
-- `nil, err` with err a non-empty string. A finding is a raised Lua error, a
-- non-string error, a config that parses but that apply_config then rejects
-- as a config error (the manager promises to take config.parse's result as
-- is), an input over the instruction, CPU or Lua heap budget (a hang:
-- alias bombs, deep nesting), or a crash of the process (C code). One input
-- in four is parsed without the relabel engine, which is the loader's
-- fallback when the C core is not built. Findings go to
-- build/fuzz/artifacts/config-<hash>.yml, their error next to them in
-- config-<hash>.yml.err.
--
-- A supervisor process runs the fuzzing in a worker (the same script with
-- --worker) under a memory ulimit, so that a C crash or an out-of-memory
-- kill is recorded as a finding (the worker writes each input to
-- build/fuzz/config-current.yml before running it) and the worker is
-- restarted for the time left. A worker stuck in C (where the instruction
-- budget cannot reach) is killed a minute past its time and recorded too. Prints execs, execs/s, corpus size and
-- coverage at the end; exits 1 if anything was found.
--
-- `fuzz_config.lua --minimize FILE [OUT]` shrinks a finding (by lines, then
-- by chunks) while it still fails the same way, and writes it to OUT
-- (default FILE.min): what goes into spec/fuzz/corpus/config, under a name
-- that says what it was.
--
-- Environment: FUZZ_CONFIG_SEED (random seed), FUZZ_CONFIG_BUDGET
-- (instructions per input, default 2e7), FUZZ_CONFIG_MEM_MB (the worker's
-- address space limit, default 3072), FUZZ_CONFIG_MAX_LEN (default 16384).
--
-- spec/81-config_corpus_spec.lua loads this file with "--lib" to replay the
-- checked-in corpus with the same property (so the file keeps to Lua 5.1
-- syntax: that spec runs under LuaJIT too).

local ARGS = { ... }

local format, concat = string.format, table.concat

local CORPUS_OUT = "build/fuzz/corpus/config"
local ARTIFACTS = "build/fuzz/artifacts"
local CURRENT = "build/fuzz/config-current.yml"
local INCLUDE_DIR = "build/fuzz/config-include"
local DEFAULT_SEEDS = "spec/fuzz/corpus/config"

------------------------------------------------------------------------------
-- Shared: the property (also used by spec/81-config_corpus_spec.lua)
------------------------------------------------------------------------------

local lib = {}

local function hash32(s, seed)
    local h = seed or 2166136261
    for i = 1, #s do
        h = (h * 16777619 + s:byte(i)) % 4294967296
    end
    return h
end

local function hash_hex(s)
    return format("%08x%08x", hash32(s), hash32(s, 5381))
end

local function write_file(path, text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
end

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("*a")
    f:close()
    return s
end

local function mkdir_p(path)
    os.execute("mkdir -p '" .. path .. "'")
end

-- The directory relative paths and scrape_config_files globs are joined
-- with: a few files of its own, so an input that globs "*.yml" reads known
-- YAML rather than whatever the current directory holds.
function lib.include_dir()
    mkdir_p(INCLUDE_DIR .. "/sub")
    local files = {
        ["jobs.yml"] = "scrape_configs:\n  - job_name: included\n    static_configs:\n      - targets: [a:1]\n",
        ["more.yaml"] = "scrape_configs:\n  - job_name: included2\n    scrape_interval: 5s\n"
            .. "    relabel_configs:\n      - {target_label: x, replacement: y}\n",
        ["bad.yml"] = "global: {}\n",
        ["empty.yml"] = "",
        ["sub/deep.yml"] = "scrape_configs:\n  - job_name: sub\n    file_sd_configs:\n      - files: [t/*.json]\n",
        ["secret"] = "s3cret\n",
    }
    for name, text in pairs(files) do
        local path = INCLUDE_DIR .. "/" .. name
        if read_file(path) ~= text then write_file(path, text) end
    end
    return INCLUDE_DIR
end

local config, promscrape

--- Runs one input. Returns nil when the property holds, else kind, message.
-- kind: "error" (raised), "bad-error" (not a non-empty string), "bad-result",
-- "roundtrip" (parsed, then rejected by apply_config as a config error).
-- One input in four (by its hash, so a replay does the same) is parsed
-- without the relabel engine: the loader's own structural relabel check and
-- regex syntax check, used when the C core is not built, get fuzzed too.
function lib.check(text)
    config = config or require "promscrape.config"
    promscrape = promscrape or require "promscrape"
    local engine = hash32(text) % 4 ~= 0
    local opts = { dir = INCLUDE_DIR }
    if not engine then opts.relabel_compiler = false end
    local ok, cfg, err = pcall(config.parse, text, "fuzz.yml", opts)
    if not ok then
        return "error", "config.parse raised: " .. tostring(cfg)
    end
    if cfg == nil then
        if type(err) ~= "string" or err == "" then
            return "bad-error", format("config.parse returned nil and a %s error: %s", type(err), tostring(err))
        end
        return nil
    end
    if type(cfg) ~= "table" then
        return "bad-result", "config.parse returned a " .. type(cfg)
    end
    local m, merr = promscrape.manager {}
    if not m then
        -- Not the input's fault (out of descriptors, say): not a finding.
        return nil, tostring(merr)
    end
    local ok2, res, aerr = pcall(m.apply_config, m, cfg)
    pcall(m.close, m)
    if not ok2 then
        return "error", "apply_config raised: " .. tostring(res)
    end
    if res ~= true then
        if type(aerr) ~= "string" or aerr == "" then
            return "bad-error", format("apply_config returned %s and a %s error: %s",
                tostring(res), type(aerr), tostring(aerr))
        end
        -- "config: ..." is promscrape.config rejecting its own output (or the
        -- manager's flattening of it): the manager promises to accept what
        -- config.parse returns. Other errors (remote_write features the
        -- engine lacks) are legitimate refusals. Without the engine, the
        -- parse checked relabel rules less strictly than apply_config does.
        if engine and aerr:sub(1, 8) == "config: " then
            return "roundtrip", "parsed, but apply_config rejected it: " .. aerr
        end
    end
    return nil
end

if ARGS[1] == "--lib" then
    return lib -- the caller's paths stand (the LuaJIT stage has its own core.so)
end

-- Run from the project root, without LUA_PATH/LUA_CPATH set.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

------------------------------------------------------------------------------
-- Helpers
------------------------------------------------------------------------------

local function list_dir(dir)
    local ok, lfs = pcall(require, "lfs")
    local names = {}
    if ok then
        if lfs.attributes(dir, "mode") ~= "directory" then return names end
        for name in lfs.dir(dir) do
            if name:sub(1, 1) ~= "." and lfs.attributes(dir .. "/" .. name, "mode") == "file" then
                names[#names + 1] = name
            end
        end
    else
        local p = io.popen("ls -A '" .. dir .. "' 2>/dev/null")
        for name in p:lines() do names[#names + 1] = name end
        p:close()
    end
    table.sort(names)
    return names
end

local function getenv_num(name, default)
    return tonumber(os.getenv(name) or "") or default
end

------------------------------------------------------------------------------
-- Supervisor: runs workers, records what kills them
------------------------------------------------------------------------------

local function shell_quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function supervise(seconds, dirs)
    mkdir_p(CORPUS_OUT)
    mkdir_p(ARTIFACTS)
    local lua = arg and arg[-1] or "lua5.4"
    local script = arg and arg[0] or "spec/fuzz/fuzz_config.lua"
    local mem_kb = math.floor(getenv_num("FUZZ_CONFIG_MEM_MB", 3072) * 1024)
    local start = os.time()
    local totals = { execs = 0, findings = 0 }
    local last = {}
    local run = 0
    while true do
        local left = seconds - (os.time() - start)
        if left <= 0 and run > 0 then break end
        if left < 1 then left = 1 end
        run = run + 1
        os.remove(CURRENT)
        local qdirs = {}
        for i, d in ipairs(dirs) do qdirs[i] = shell_quote(d) end
        -- timeout: the instruction budget cannot stop a loop inside C code,
        -- so a worker that outlives its time by a minute is killed, and the
        -- input it was on is recorded.
        local cmd = format("ulimit -v %d 2>/dev/null; exec timeout -s KILL %d %s %s --worker %d %d %s",
            mem_kb, left + 60, shell_quote(lua), shell_quote(script), left, run, concat(qdirs, " "))
        local p = assert(io.popen(cmd, "r"))
        for line in p:lines() do
            print(line)
            io.stdout:flush()
            local e, f = line:match("^#stats execs=(%d+) findings=(%d+)")
            if e then
                last = { execs = tonumber(e), findings = tonumber(f), line = line }
                totals.coverage = line:match("(corpus=%d+ edges=%d+ lines=%d+)")
            end
        end
        local _, how, code = p:close()
        totals.execs = totals.execs + (last.execs or 0)
        totals.findings = totals.findings + (last.findings or 0)
        local final = last
        last = {}
        if how == "exit" and (code == 0 or code == 1) and final.line then
            break -- the worker used up its time
        end
        -- The worker died: the input it was running is the finding.
        local text = read_file(CURRENT)
        local why = format("worker died (%s %s)", tostring(how), tostring(code))
        if how == "exit" and (code == 124 or code == 137) then
            why = "worker killed after overrunning its time by a minute: a hang in C code?"
        end
        if text then
            local name = format("%s/config-%s.yml", ARTIFACTS, hash_hex(text))
            write_file(name, text)
            write_file(name .. ".err", "crash: " .. why .. "\n")
            print(format("FINDING crash: %s, input saved to %s", why, name))
        else
            print(format("FINDING crash: %s, no current input recorded", why))
        end
        totals.findings = totals.findings + 1
        if run > 50 then
            print("fuzz_config: too many worker deaths, giving up")
            break
        end
    end
    local elapsed = math.max(1, os.time() - start)
    print(format("fuzz_config: %d executions in %ds (%.1f execs/s), %s, %d findings (artifacts: %s/config-*.yml)",
        totals.execs, elapsed, totals.execs / elapsed, totals.coverage or "no coverage recorded",
        totals.findings, ARTIFACTS))
    return totals.findings == 0
end

------------------------------------------------------------------------------
-- Worker: the fuzzing loop
------------------------------------------------------------------------------

local function worker(seconds, run, dirs)
    local clock = os.clock
    local seed = getenv_num("FUZZ_CONFIG_SEED", os.time() + run * 7919)
    math.randomseed(seed)
    local BUDGET = getenv_num("FUZZ_CONFIG_BUDGET", 2e7) -- VM instructions per input
    local MAX_LEN = getenv_num("FUZZ_CONFIG_MAX_LEN", 16384)
    local HEAP_KB = 1024 * 1024 -- Lua heap per input before it counts as a hang
    local CPU_LIMIT = 10 -- seconds of CPU per input, for time spent in C
    lib.include_dir()
    require "promscrape.config"
    require "promscrape"

    --------------------------------------------------------------------------
    -- Coverage
    --------------------------------------------------------------------------
    local getinfo = debug.getinfo
    local src_id = setmetatable({}, { __mode = "k" }) -- function -> id | false
    local src_names, nsrc = {}, 0
    local by_source = {}
    local edges, nedges = {}, 0
    local lines_seen, nlines = {}, 0
    local prev, new_edges = 0, 0
    local icount, aborting, abort_why = 0, false, nil
    local cpu_deadline = 0
    local HANG = "\0fuzz_config: input over budget"

    local function id_of(fn)
        local id = src_id[fn]
        if id == nil then
            local src = getinfo(fn, "S").source
            id = false
            if src:match("^@.*lua/promscrape/") or src:match("^@lua/promscrape/") then
                id = by_source[src]
                if not id then
                    nsrc = nsrc + 1
                    id = nsrc
                    by_source[src] = id
                    src_names[id] = src:sub(2)
                end
            end
            src_id[fn] = id
        end
        return id
    end

    local function hook(ev, line)
        if ev == "count" then
            icount = icount + 1000
            if aborting then error(HANG, 0) end
            if icount > BUDGET then
                aborting, abort_why = true, format("over the budget of %d VM instructions", BUDGET)
                error(HANG, 0)
            end
            if icount % 100000 == 0 then
                if clock() > cpu_deadline then
                    aborting, abort_why = true, format("over %d s of CPU", CPU_LIMIT)
                    error(HANG, 0)
                end
                if collectgarbage("count") > HEAP_KB then
                    aborting, abort_why = true, format("over %d MB of Lua heap", HEAP_KB / 1024)
                    error(HANG, 0)
                end
            end
            return
        end
        if aborting then error(HANG, 0) end
        local id = id_of(getinfo(2, "f").func)
        if id then
            local loc = id * 65536 + line
            local e = prev * 16777216 + loc
            if not edges[e] then
                edges[e] = true
                nedges = nedges + 1
                new_edges = new_edges + 1
                if not lines_seen[loc] then
                    lines_seen[loc] = true
                    nlines = nlines + 1
                end
            end
            prev = loc
        end
    end

    --------------------------------------------------------------------------
    -- Running one input
    --------------------------------------------------------------------------
    local execs, findings = 0, 0
    local seen_sig = {}

    local function signature(kind, msg)
        -- One artifact per kind of failure: numbers, quoted text and paths vary.
        local s = msg:gsub("%b\"\"", "S"):gsub("%b``", "S"):gsub("%d+", "N"):gsub("%[N%]", "")
        s = s:gsub("fuzz%.yml: [%w_%.%-]+: ", "fuzz.yml: P: ")
        return kind .. ":" .. s:sub(1, 160)
    end

    local function record(text, kind, msg)
        local sig = signature(kind, msg)
        local n = (seen_sig[sig] or 0) + 1
        seen_sig[sig] = n
        findings = findings + 1
        if n > 1 then return end -- already saved one like it
        local name = format("%s/config-%s.yml", ARTIFACTS, hash_hex(text))
        write_file(name, text)
        write_file(name .. ".err", kind .. ": " .. msg .. "\n")
        print(format("FINDING %s: %s\n  input saved to %s", kind, (msg:gsub("\n.*", " ...")):sub(1, 300), name))
        io.stdout:flush()
    end

    -- Returns the number of new edges.
    local function exec(text)
        write_file(CURRENT, text) -- read by the supervisor if we crash
        prev, new_edges, icount, aborting, abort_why = 0, 0, 0, false, nil
        cpu_deadline = clock() + CPU_LIMIT
        debug.sethook(hook, "l", 1000)
        local ok, kind, msg = pcall(lib.check, text)
        debug.sethook()
        execs = execs + 1
        if aborting then
            record(text, "hang", abort_why)
        elseif not ok then
            -- Raised by the harness itself: the hook's abort is handled above.
            record(text, "error", "harness: " .. tostring(kind))
        elseif kind then
            record(text, kind, msg)
        end
        aborting = false
        if execs % 64 == 0 or collectgarbage("count") > 256 * 1024 then
            collectgarbage()
        end
        return new_edges
    end

    --------------------------------------------------------------------------
    -- Dictionary
    --------------------------------------------------------------------------
    local dict = {
        ": ", "- ", "-", ":", "{", "}", "[", "]", ", ", "&a ", "*a", "&b ", "*b", "<<: ", "<<: *a",
        "!!str ", "!!int ", "!!float ", "!!bool ", "!!null ", "!!binary ", "!!map ", "!!seq ",
        "!!merge ", "!custom ", "? ", "|", "|-", ">", ">+", "~", "null", "Null", "true", "false",
        "yes", "no", "on", "off", "y", "\t", "\n", "\n  ", "\n    ", "\n- ", "---\n", "...\n", "#",
        "'", '"', "''", '""', "\\", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n",
        "1e309", ".inf", "-.inf", ".nan", "-0", "0", "-1", "0x10", "0o17", "017", "0b101", "1_000",
        "9223372036854775807", "9223372036854775808", "-9223372036854775809", "18446744073709551616",
        "4294967296", "2147483648", "1.5", "1e3", "+1", "1.", ".5",
        "1h30m", "0s", "-1s", "1y", "5ms", "99999999999999999999d", "1y2w3d4h5m6s7ms", "10s", "1m",
        "1.5s", "15", "1h1h", "292y", "293y", "106751d", "106752d",
        "1KB", "1.5MB", "7EB", "8EB", "16EiB", "1kB", "-1B", "0B", "1e3KB",
        "(", ")", "\\\\", "(?i)", "(?P<n>x)", "(?=x)", "$1", "${1}", "$2", "${x}", "$$", "[[:alpha:]]",
        "a{1001}", "a{2,1}", "**", "a++", "\\Q", "\\p{L}", "\\pN", ".*", "(.*)", "[^]]", "\\E",
        "${HOME}", "$HOME", "${UNSET_FUZZ_VAR}", "$", "${", "${}", "${A:-b}",
        "/dev/null", "*.yml", "sub/*.yml", "*.yaml", "jobs.yml", "../x.yml", "/", "//", "[a-", "\\",
        "t/*.json", "x.json", "a/*/b.json", "secret", "/nonexistent/x", "?", "[!a]", "[^a]",
        "__name__", "__address__", "__meta_x", "a-b", "\"a\\u0000b\"", "\"\\xff\"", "\"\\t\"",
        "\"\\u00e9\"", "label.with.dots", "\"\"", "0abc", "ÿ", "é", "\255", "\0", "\r\n",
        "http://", "https://h:1/p", "http://[::1]:80/", "http://h:port/", "ftp://x", "http://%zz",
        "a:1", "host:9100", "http://a/b", "TLS10", "TLS13", "TLS14", "PrometheusProto", "Basic", "basic",
        "prometheus.WriteRequest", "io.prometheus.write.v2.Request",
    }
    -- Every field and enum name the loader knows, from its own source.
    local dict_seen = {}
    for _, w in ipairs(dict) do dict_seen[w] = true end
    for _, src in ipairs { "lua/promscrape/config.lua", "lua/promscrape/config/values.lua",
        "lua/promscrape/config/yaml.lua" } do
        local text = read_file(src) or ""
        for w in text:gmatch('"([%w_%.%-]+)"') do
            if #w >= 2 and #w <= 48 and not dict_seen[w] then
                dict_seen[w] = true
                dict[#dict + 1] = w
            end
        end
    end
    local fields = {}
    for _, w in ipairs(dict) do
        if w:match("^[a-z][a-z0-9_]+$") then fields[#fields + 1] = w end
    end
    local scalars = {}
    for _, w in ipairs(dict) do
        if not w:find("[\n{}%[%]]") then scalars[#scalars + 1] = w end
    end

    --------------------------------------------------------------------------
    -- Mutations
    --------------------------------------------------------------------------
    local random = math.random
    local corpus = {} -- { text = s }
    local in_corpus = {}

    local function pick(t) return t[random(#t)] end

    local function rand_pos(s) return random(0, #s) end

    local function lines_of(s)
        local t = {}
        for l in (s .. "\n"):gmatch("([^\n]*)\n") do t[#t + 1] = l end
        if #t > 1 and t[#t] == "" and s:sub(-1) ~= "\n" then t[#t] = nil end
        return t
    end

    local function indent_of(l) return l:match("^[ %-]*") end

    local function nest(n)
        local k = random(3)
        if k == 1 then return ("["):rep(n) .. ("]"):rep(n) end
        if k == 2 then return ("{a: "):rep(n) .. "x" .. ("}"):rep(n) end
        local t = {}
        for i = 1, n do t[i] = ("  "):rep(i - 1) .. "- " end
        return concat(t, "\n")
    end

    -- Anchor chains (billion laughs) of random width and depth.
    local function bomb()
        local w, d = random(2, 10), random(2, 12)
        local t = { "&l0 [lol]" }
        for i = 1, d do
            local refs = {}
            for j = 1, w do refs[j] = "*l" .. (i - 1) end
            t[#t + 1] = format("&l%d [%s]", i, concat(refs, ", "))
        end
        return "[" .. concat(t, ", ") .. "]"
    end

    -- A value for a new field: scalar, quoted, null, flow list or flow map.
    local function value()
        local k = random(6)
        if k == 1 then return '"' .. pick(scalars) .. '"' end
        if k == 2 then return "" end
        if k == 3 then return "[" .. pick(scalars) .. ", " .. pick(scalars) .. "]" end
        if k == 4 then return "{" .. pick(fields) .. ": " .. pick(scalars) .. "}" end
        return pick(scalars)
    end

    -- Keys seen side by side in one block mapping of some input: a random
    -- field name is almost always unknown to the map it lands in, and the
    -- walker stops at the first unknown field, before any cross-field rule.
    local together = {} -- key -> { list of keys, set }
    local function learn(text)
        local blocks = {} -- column -> keys of the open block at that column
        for x in text:gmatch("[^\n]+") do
            local pre, key = x:match("^([ %-]*)([%w_]+):")
            if pre then
                local col = #pre
                for c in pairs(blocks) do
                    if c > col then blocks[c] = nil end
                end
                if pre:find("-", 1, true) then blocks[col] = nil end -- a new list item
                local b = blocks[col] or {}
                blocks[col] = b
                for _, k in ipairs(b) do
                    for _, pair in ipairs { { k, key }, { key, k } } do
                        local t = together[pair[1]]
                        if not t then
                            t = { list = {}, set = {} }
                            together[pair[1]] = t
                        end
                        if not t.set[pair[2]] then
                            t.set[pair[2]] = true
                            t.list[#t.list + 1] = pair[2]
                        end
                    end
                end
                b[#b + 1] = key
            end
        end
    end

    -- A field next to an existing key, at exactly its column, so that
    -- related fields (ca and ca_file, proxy_url and no_proxy) meet in one map.
    local function sibling(s)
        local l = lines_of(s)
        local cands = {}
        for i, x in ipairs(l) do
            local pre, key = x:match("^([ %-]*)([%w_\"']+):")
            if pre then cands[#cands + 1] = { i, (" "):rep(#pre), pre, key } end
        end
        if #cands == 0 then return s end
        local c = pick(cands)
        local known = together[c[4]]
        local name = (known and random(5) > 1) and pick(known.list) or pick(fields)
        local line = c[2] .. name .. ": " .. value()
        if c[3]:find("-", 1, true) and random(2) == 1 then
            -- Before a list item's first key: becomes that item's first key.
            l[c[1]] = l[c[1]]:gsub("^([ %-]*)", c[2], 1)
            line = c[3] .. name .. ": " .. value()
        end
        table.insert(l, c[1], line)
        return concat(l, "\n") .. "\n"
    end

    local mutators = {
        sibling, sibling, sibling,
        function(s) -- flip a bit
            if #s == 0 then return s end
            local i = random(#s)
            local b = s:byte(i)
            local bit = 2 ^ random(0, 7)
            b = (math.floor(b / bit) % 2 == 1) and b - bit or b + bit
            return s:sub(1, i - 1) .. string.char(b) .. s:sub(i + 1)
        end,
        function(s) -- set a byte to an interesting one
            if #s == 0 then return s end
            local i = random(#s)
            local c = pick { "\0", "\127", "\255", "\n", " ", ":", "-", '"', "'", "\t", "#", "&", "*", "!",
                "{", "[", "}", "]", ",", "|", ">", "%", "@", "`", "\\", "$", "0", "9", "a", "Z", "_", "." }
            return s:sub(1, i - 1) .. c .. s:sub(i + 1)
        end,
        function(s) -- insert random bytes
            local n, t = random(1, 4), {}
            for i = 1, n do t[i] = string.char(random(0, 255)) end
            local p = rand_pos(s)
            return s:sub(1, p) .. concat(t) .. s:sub(p + 1)
        end,
        function(s) -- delete a chunk
            if #s == 0 then return s end
            local i = random(#s)
            local n = random(1, math.min(64, #s - i + 1))
            return s:sub(1, i - 1) .. s:sub(i + n)
        end,
        function(s) -- duplicate a chunk elsewhere
            if #s == 0 then return s end
            local i = random(#s)
            local chunk = s:sub(i, i + random(1, 64) - 1)
            local p = rand_pos(s)
            return s:sub(1, p) .. chunk .. s:sub(p + 1)
        end,
        function(s) -- splice: a chunk of another input
            local o = pick(corpus).text
            if #o == 0 then return s end
            local i = random(#o)
            local chunk = o:sub(i, i + random(1, 256) - 1)
            local p = rand_pos(s)
            if random(2) == 1 then
                return s:sub(1, p) .. chunk .. s:sub(p + 1)
            end
            return s:sub(1, p) .. chunk .. s:sub(p + #chunk + 1)
        end,
        function(s) -- cross-over by lines: a head of one, the tail of another
            local a, b = lines_of(s), lines_of(pick(corpus).text)
            local out = {}
            for i = 1, random(0, #a) do out[#out + 1] = a[i] end
            for i = random(1, #b + 1), #b do out[#out + 1] = b[i] end
            return concat(out, "\n") .. "\n"
        end,
        function(s) -- insert a dictionary token
            local p = rand_pos(s)
            return s:sub(1, p) .. pick(dict) .. s:sub(p + 1)
        end,
        function(s) -- replace a word with a dictionary token
            local words = {}
            for a, w in s:gmatch("()([%w_%.%-%$]+)") do words[#words + 1] = { a, #w } end
            if #words == 0 then return s end
            local w = pick(words)
            return s:sub(1, w[1] - 1) .. pick(dict) .. s:sub(w[1] + w[2])
        end,
        function(s) -- line surgery: duplicate, delete or swap lines
            local l = lines_of(s)
            if #l == 0 then return s end
            local i, j = random(#l), random(#l)
            local k = random(3)
            if k == 1 then
                table.insert(l, j, l[i])
            elseif k == 2 then
                table.remove(l, i)
            else
                l[i], l[j] = l[j], l[i]
            end
            return concat(l, "\n") .. "\n"
        end,
        function(s) -- a new "field: value" line at an existing indentation
            local l = lines_of(s)
            local i = random(#l + 1)
            local ind = (l[random(math.max(1, #l))] or ""):match("^ *") or ""
            if random(3) == 1 then ind = indent_of(l[i] or "") end
            local v = random(4) == 1 and pick(fields) .. ":" or pick(scalars)
            table.insert(l, i, ind .. pick(fields) .. ": " .. v)
            return concat(l, "\n") .. "\n"
        end,
        function(s) -- replace the value of a "key: value" line
            local l = lines_of(s)
            local cands = {}
            for i, x in ipairs(l) do
                if x:find(": ", 1, true) then cands[#cands + 1] = i end
            end
            if #cands == 0 then return s end
            local i = pick(cands)
            local head = l[i]:match("^(.-: )")
            local v = pick(scalars)
            if random(4) == 1 then v = '"' .. v .. '"' end
            if random(6) == 1 then v = "[" .. v .. ", " .. pick(scalars) .. "]" end
            l[i] = head .. v
            return concat(l, "\n") .. "\n"
        end,
        function(s) -- anchor a value and alias it elsewhere
            local l = lines_of(s)
            local cands = {}
            for i, x in ipairs(l) do
                if x:find(": ", 1, true) or x:find("^ *%- ") then cands[#cands + 1] = i end
            end
            if #cands == 0 then return s end
            local name = pick { "a", "b", "x" }
            local i, j = pick(cands), pick(cands)
            l[i] = l[i]:gsub("^(.-: )", "%1&" .. name .. " ", 1)
            l[j] = l[j]:gsub(": .*$", ": *" .. name, 1)
            return concat(l, "\n") .. "\n"
        end,
        function(s) -- deep nesting or an alias bomb as some value
            local l = lines_of(s)
            local cands = {}
            for i, x in ipairs(l) do
                if x:find(": ", 1, true) then cands[#cands + 1] = i end
            end
            local v = random(2) == 1 and nest(random(1, 1200)) or bomb()
            if #cands == 0 then return s .. "\nx: " .. v .. "\n" end
            local i = pick(cands)
            l[i] = l[i]:match("^(.-: )") .. v
            return concat(l, "\n") .. "\n"
        end,
    }

    local function mutate(s)
        for _ = 1, random(1, 6) do
            s = pick(mutators)(s)
            if #s > MAX_LEN then s = s:sub(1, MAX_LEN) end
        end
        return s
    end

    --------------------------------------------------------------------------
    -- Corpus
    --------------------------------------------------------------------------
    local function add(text, save)
        if in_corpus[text] then return end
        in_corpus[text] = true
        corpus[#corpus + 1] = { text = text }
        learn(text)
        if save then
            write_file(format("%s/%s", CORPUS_OUT, hash_hex(text)), text)
        end
    end

    local start_wall = os.time()
    local n_seeds = 0
    local seen_dir = {}
    for _, dir in ipairs(dirs) do
        if not seen_dir[dir] then
            seen_dir[dir] = true
            for _, name in ipairs(list_dir(dir)) do
                local text = read_file(dir .. "/" .. name)
                -- An input with an artifact already is a known finding: one
                -- that crashed the last worker would crash this one too.
                if text and #text <= MAX_LEN
                    and not read_file(format("%s/config-%s.yml", ARTIFACTS, hash_hex(text))) then
                    n_seeds = n_seeds + 1
                    exec(text)
                    add(text, false)
                end
            end
        end
    end
    if #corpus == 0 then add("scrape_configs:\n  - job_name: j\n", false) end
    print(format("fuzz_config: worker %d, seed %d, %d inputs loaded, %d edges (%d lines) after them",
        run, seed, n_seeds, nedges, nlines))
    io.stdout:flush()

    local function stats_line()
        local el = math.max(1e-3, os.time() - start_wall)
        return format("#stats execs=%d findings=%d execs/s=%.1f corpus=%d edges=%d lines=%d elapsed=%ds",
            execs, findings, execs / el, #corpus, nedges, nlines, os.time() - start_wall)
    end

    local next_report = os.time() + 30
    while os.time() - start_wall < seconds do
        local parent = pick(corpus).text
        local child = mutate(parent)
        if not in_corpus[child] and exec(child) > 0 then
            add(child, true)
        end
        if os.time() >= next_report then
            next_report = os.time() + 30
            print(stats_line():sub(2))
            io.stdout:flush()
        end
    end

    -- Coverage per file, for the record.
    local per = {}
    for loc in pairs(lines_seen) do
        local id = math.floor(loc / 65536)
        per[id] = (per[id] or 0) + 1
    end
    local parts = {}
    for id, name in ipairs(src_names) do
        parts[#parts + 1] = format("%s %d", name:gsub("^.*lua/promscrape/", ""), per[id] or 0)
    end
    print("fuzz_config: lines covered per file: " .. concat(parts, ", "))
    print(stats_line())
    io.stdout:flush()
    return findings == 0
end

------------------------------------------------------------------------------
-- Minimizer
------------------------------------------------------------------------------

-- The same finding: the same kind, and the message's first 60 characters
-- once numbers are masked (line numbers and sizes shrink with the input).
local function finding_of(text)
    -- The fuzzer's instruction budget, so that hangs shrink too.
    local budget = getenv_num("FUZZ_CONFIG_BUDGET", 2e7) / 1000
    local n, over = 0, false
    debug.sethook(function()
        n = n + 1
        if over or n > budget then
            over = true
            error("over budget", 0) -- again at every count, out of any pcall
        end
    end, "", 1000)
    local ok, kind, msg = pcall(lib.check, text)
    debug.sethook()
    if over then return "hang" end
    if not ok then return "error:harness" end
    if not kind then return nil end
    return kind .. ":" .. tostring(msg):gsub("%d+", "N"):sub(1, 60)
end

local function minimize(path, out)
    lib.include_dir()
    local text = assert(read_file(path), "cannot read " .. path)
    local want = finding_of(text)
    if not want then
        io.stderr:write(path .. ": no finding to keep (the property holds)\n")
        return false
    end
    print("minimizing " .. path .. " (" .. #text .. " bytes): " .. want)
    local function try(candidate)
        if #candidate < #text and finding_of(candidate) == want then
            text = candidate
            return true
        end
        return false
    end
    local changed = true
    while changed do
        changed = false
        -- Whole lines, then ever smaller chunks.
        local lines = {}
        for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
        local i = 1
        while i <= #lines do
            local rest = {}
            for j, l in ipairs(lines) do if j ~= i then rest[#rest + 1] = l end end
            if try(concat(rest, "\n")) then
                lines = rest
                changed = true
            else
                i = i + 1
            end
        end
        local chunk = math.max(1, math.floor(#text / 2))
        while chunk >= 1 do
            local pos = 1
            while pos <= #text do
                if try(text:sub(1, pos - 1) .. text:sub(pos + chunk)) then
                    changed = true
                else
                    pos = pos + chunk
                end
            end
            chunk = math.floor(chunk / 2)
        end
    end
    out = out or path .. ".min"
    write_file(out, text)
    print(format("%s: %d bytes, still %s", out, #text, finding_of(text)))
    return true
end

------------------------------------------------------------------------------
-- Main
------------------------------------------------------------------------------

if ARGS[1] == "--minimize" then
    if not ARGS[2] then
        io.stderr:write("usage: lua5.4 spec/fuzz/fuzz_config.lua --minimize FILE [OUT]\n")
        os.exit(2)
    end
    os.exit(minimize(ARGS[2], ARGS[3]) and 0 or 1)
end

if ARGS[1] == "--worker" then
    local seconds, run = tonumber(ARGS[2]), tonumber(ARGS[3])
    local dirs = { CORPUS_OUT }
    for i = 4, #ARGS do dirs[#dirs + 1] = ARGS[i] end
    local ok = worker(seconds, run, dirs)
    os.exit(ok and 0 or 1)
end

local seconds = tonumber(ARGS[1] or "60")
if not seconds then
    io.stderr:write("usage: lua5.4 spec/fuzz/fuzz_config.lua [SECONDS] [corpus dirs...]\n")
    os.exit(2)
end
local dirs = {}
for i = 2, #ARGS do dirs[#dirs + 1] = ARGS[i] end
if #dirs == 0 then dirs[1] = DEFAULT_SEEDS end
os.exit(supervise(seconds, dirs) and 0 or 1)
