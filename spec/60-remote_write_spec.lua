-- Remote write, fan-out and sharding (issue 6), the Lua API: quick specs
-- with no store, then real stores started on 127.0.0.1 (Debian's
-- prometheus 2.42 with --web.enable-remote-write-receiver, and
-- victoria-metrics single-node). Runs in about 80 s; the outage spec alone
-- takes ~45 s (marked [long]). Every process a spec starts is stopped in
-- a finally/teardown, by pid. Lua 5.4 and LuaJIT.
package.path = "./?.lua;" .. package.path
local promscrape = require "promscrape"
local server = require "spec.support.server"
local stores = require "spec.support.stores"
local cjson = require "cjson"

local function relabel_keep(name, extra)
  local rules = {
    { source_labels = { "__name__" }, regex = name, action = "keep" },
  }
  for k, v in pairs(extra or {}) do
    rules[#rules + 1] = { target_label = k, replacement = v, action = "replace" }
  end
  return rules
end

local function key_of(labels)
  local names, out = {}, {}
  for k in pairs(labels) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do out[#out + 1] = k .. "=" .. labels[k] end
  return table.concat(out, ",")
end

-- Steps several managers together for s seconds.
local function drive(ms, s)
  local deadline = os.time() + s
  local t0 = os.clock()
  repeat
    for _, m in ipairs(ms) do assert(m:step(0.02)) end
  until os.time() >= deadline
  return os.clock() - t0
end

describe("promscrape.remote_write", function()
  it("normalizes like a prometheus.yml entry and starts unattached", function()
    local rw = assert(promscrape.remote_write{ url = "http://127.0.0.1:1/api/v1/write" })
    local st = rw:stats()
    assert.is_false(st.attached)
    assert.equal("http://127.0.0.1:1/api/v1/write", st.url)
    for _, k in ipairs { "sent", "failed", "retried", "dropped", "pending", "inflight" } do
      assert.equal(0, st[k], k)
    end
    assert.equal("", st.last_error)
    assert.is_true(rw:flush(1)) -- nothing to send
    rw:close()
    rw:close() -- idempotent
    assert.has_error(function() rw:stats() end, "attempt to use a closed remote_write")
  end)

  it("returns nil, msg, code for what a prometheus.yml would refuse", function()
    local function bad(entry, pat)
      local rw, err, code = promscrape.remote_write(entry)
      assert.is_nil(rw)
      assert.equal("EINVAL", code)
      assert.matches(pat, err)
    end
    bad({ url = "ftp://x/" }, "URL scheme must be 'http' or 'https'")
    bad({}, "url for remote_write is empty")
    bad({ url = "http://x/", remote_timeout = "soon" }, "remote_timeout")
    bad({ url = "http://x/", write_relabel_configs = { { regex = "(" } } },
      "write_relabel_configs%[0%]%.regex")
    bad({ url = "http://x/", headers = { ["Content-Type"] = "x" } }, "reserved header")
    bad({ url = "http://x/", queue_config = { capacity = "many" } }, "capacity")
    bad({ url = "http://x/", nonsense = 1 }, "nonsense")
    bad({ url = "http://x/", sigv4 = { region = "eu" } }, "sigv4: not supported")
    assert.has_error(function() promscrape.remote_write("http://x/") end)
  end)

  it("binds to the manager that adopts it, and to that one only", function()
    local rw = assert(promscrape.remote_write{ url = "http://127.0.0.1:1/w" })
    local m = assert(promscrape.manager{ appender = rw })
    assert.is_true(rw:stats().attached)
    assert.equal(1, rw:stats().shards)
    local m2, err, code = promscrape.manager{ appender = rw }
    assert.is_nil(m2)
    assert.equal("ESTATE", code)
    assert.matches("already attached", err)
    rw:close() -- the manager keeps it alive
    m:close()
  end)

  it("reads *_file secrets when it sends: a missing file is a clear error, samples stay queued", function()
    local tok = os.tmpname()
    os.remove(tok)
    local rw = assert(promscrape.remote_write{ url = "http://127.0.0.1:1/w", bearer_token_file = tok,
      queue_config = { batch_send_deadline = "50ms" } })
    local m = assert(promscrape.manager{ appender = promscrape.fanout{ promscrape.memory(), rw } })
    local srv = server.start()
    local ok, err = pcall(function()
      assert(m:apply_config{
        scrape_configs = { { job_name = "tokfile", scrape_interval = "100ms", scrape_timeout = "90ms",
          static_configs = { { targets = { srv:address() } } } } },
      })
      assert(m:run{ duration = 1 })
      local st = rw:stats()
      assert.matches("cannot read \"" .. tok .. "\"", st.last_error, 1, true)
      assert.equal(0, st.sent)
      assert.equal(0, st.dropped)
      assert.is_true(st.pending > 0)
    end)
    m:close()
    srv:stop()
    assert(ok, err)
  end)

  it("fans out to a memory store and a remote write", function()
    local store = promscrape.memory()
    local rw = assert(promscrape.remote_write{ url = "http://127.0.0.1:1/w" })
    local fo = promscrape.fanout{ store, rw }
    local m = assert(promscrape.manager{ appender = fo })
    local srv = server.start()
    local ok, err = pcall(function()
      assert(m:apply_config{
        scrape_configs = { { job_name = "fo", scrape_interval = "100ms", scrape_timeout = "90ms",
          static_configs = { { targets = { srv:address() } } } } },
      })
      assert(m:run{ duration = 1 })
      assert.is_true(#store:series() > 5)
      local st = fo:stats()
      assert.equal(2, #st)
      assert.equal("memory", st[1].kind)
      assert.equal("remote_write", st[2].kind)
      assert.is_true(st[1].commits >= 1)
      assert.equal(st[1].commits, st[2].commits)
      local r = st[2].remote_write
      -- nothing listens: samples are queued or retried, none lost or sent
      assert.equal(0, r.sent)
      assert.equal(0, r.dropped)
      assert.is_true(r.pending + r.inflight > 0)
    end)
    m:close()
    srv:stop()
    assert(ok, err)
    assert.has_error(function() promscrape.fanout{ {} } end)
    assert.has_error(function() promscrape.fanout{} end)
  end)

  it("wires the remote_write entries of an applied config, keeping unchanged queues", function()
    local srv = server.start()
    local m = assert(promscrape.manager())
    local ok, err = pcall(function()
      local function cfg(url)
        return {
          scrape_configs = { { job_name = "w", scrape_interval = "100ms", scrape_timeout = "90ms",
            static_configs = { { targets = { srv:address() } } } } },
          remote_write = url and { { url = url, name = "a" } } or nil,
        }
      end
      local dead = "http://127.0.0.1:" .. server.closed_port() .. "/w"
      assert(m:apply_config(cfg(dead)))
      assert(m:run{ duration = 0.8 })
      assert.is_true(#m.store:series() > 5) -- the memory store still gets everything
      local rws = m:remote_writes()
      assert.equal(1, #rws)
      local before = rws[1]:stats()
      assert.is_true(before.pending + before.inflight > 0)
      assert.equal("a", before.name)
      -- the same entry again: the same queue (counters go on)
      assert(m:apply_config(cfg(dead)))
      local kept = m:remote_writes()[1]:stats()
      assert.is_true(kept.pending + kept.inflight >= before.pending + before.inflight)
      -- a changed entry: a new queue
      assert(m:apply_config(cfg(dead .. "2")))
      assert.equal(0, m:remote_writes()[1]:stats().pending)
      -- removed
      assert(m:apply_config(cfg(nil)))
      assert.equal(0, #m:remote_writes())
      assert(m:run{ duration = 0.3 })
      -- an invalid entry leaves everything as it was
      local ok2, err2 = m:apply_config(cfg("http://127.0.0.1:1/w"))
      assert.truthy(ok2, err2)
      local c = cfg(nil)
      c.remote_write = { { url = "http://x/", write_relabel_configs = { { action = "nope" } } } }
      local n, e = m:apply_config(c)
      assert.is_nil(n)
      assert.matches("remote_write", e)
      assert.equal(1, #m:remote_writes())
    end)
    m:close()
    srv:stop()
    assert(ok, err)
  end)

  it("refuses remote_write entries with a Lua appender", function()
    local m = assert(promscrape.manager{ appender = { commit = function() end } })
    local ok, err = m:apply_config{ remote_write = { { url = "http://127.0.0.1:1/w" } } }
    m:close()
    assert.is_nil(ok)
    assert.matches("C appender", err)
  end)
end)

describe("sharding", function()
  local targets = {}
  for i = 1, 40 do targets[i] = "127.0.0.1:" .. (20000 + i) end

  local function kept(m)
    local out = {}
    for _, t in ipairs(m:pools().s:targets()) do out[t.labels.instance] = true end
    return out
  end

  local function job(rules)
    return { scrape_configs = { { job_name = "s", scrape_interval = "1h", scrape_timeout = "10s",
      relabel_configs = rules, static_configs = { { targets = targets } } } } }
  end

  it("shard = { count, index } is the hashmod + keep recipe, applied first", function()
    local union, counts = {}, {}
    for index = 0, 2 do
      local conv = assert(promscrape.manager{ shard = { count = 3, index = index } })
      assert(conv:apply_config(job()))
      local hand = assert(promscrape.manager())
      assert(hand:apply_config(job {
        { source_labels = { "__address__" }, modulus = 3, target_label = "__tmp_hash", action = "hashmod" },
        { source_labels = { "__tmp_hash" }, regex = tostring(index), action = "keep" },
      }))
      local a, b = kept(conv), kept(hand)
      assert.same(b, a)
      counts[index] = 0
      for inst in pairs(a) do
        assert.is_nil(union[inst], "in two shards: " .. inst)
        union[inst] = true
        counts[index] = counts[index] + 1
      end
      conv:close()
      hand:close()
    end
    local n = 0
    for _ in pairs(union) do n = n + 1 end
    assert.equal(#targets, n)
    for i = 0, 2 do assert.is_true(counts[i] > 3, "shard " .. i .. " nearly empty") end
  end)

  it("hashes the discovered __address__, before the job's own rules", function()
    -- a blackbox-style job rewrites __address__ to one exporter: the shard
    -- still splits the discovered targets
    local m = assert(promscrape.manager{ shard = { count = 2, index = 0 } })
    assert(m:apply_config(job {
      { source_labels = { "__address__" }, target_label = "__param_target" },
      { target_label = "__address__", replacement = "127.0.0.1:9115" },
    }))
    local n = #m:pools().s:targets()
    m:close()
    assert.is_true(n > 5 and n < #targets, "kept " .. n)
  end)

  it("validates the option", function()
    assert.has_error(function() promscrape.manager{ shard = { count = 2, index = 2 } } end)
    assert.has_error(function() promscrape.manager{ shard = { count = 0, index = 0 } } end)
    assert.has_error(function() promscrape.manager{ shard = { count = 2 } } end)
    assert.has_error(function() promscrape.manager{ shard = 3 } end)
  end)
end)

-- ---- real stores ---------------------------------------------------------

local function each_store_kind(fn)
  for _, kind in ipairs { "prometheus", "victoria-metrics" } do fn(kind) end
end

each_store_kind(function(kind)
  describe("remote write into " .. kind, function()
    it("every scraped series arrives with its labels and value", function()
      if not stores.have(kind) then return pending(kind .. " not installed") end
      local srv, store, node = server.start(), nil, nil
      local m
      local ok, err = pcall(function()
        store = stores.start(kind)
        if stores.have("node-exporter") then node = stores.start("node-exporter") end
        m = assert(promscrape.manager())
        local scs = {
          { job_name = "t", scrape_interval = "1s", static_configs = { { targets = { srv:address() } } } },
          { job_name = "om", scrape_interval = "1s", metrics_path = "/om",
            static_configs = { { targets = { srv:address() } } } },
        }
        if node then
          scs[3] = { job_name = "node", scrape_interval = "2s", scrape_timeout = "2s",
            static_configs = { { targets = { "127.0.0.1:" .. node.port } } } }
        end
        assert(m:apply_config{
          scrape_configs = scs,
          remote_write = { { url = store:write_url(), name = kind,
            queue_config = { batch_send_deadline = "200ms" } } },
        })
        assert(m:run{ duration = 4.5 })
        local rw = m:remote_writes()[1]
        m:close() -- no more scrapes: the store's latest values are the memory store's
        assert(rw:flush(20))
        local st = rw:stats()
        assert.equal(0, st.failed, st.last_error)
        assert.equal(0, st.dropped)
        assert.is_true(st.sent > 0)

        local want, nwant = {}, 0
        for _, s in ipairs(m.store:series()) do
          if not s.stale then
            want[key_of(s.labels)] = s.value
            nwant = nwant + 1
          end
        end
        local got = {}
        for _, job in ipairs { "t", "om", node and "node" or nil } do
          if kind == "prometheus" then
            for _, r in ipairs(store:query('{job="' .. job .. '"}')) do
              got[key_of(r.metric)] = r.value[2]
            end
          else -- the newest raw sample (instant queries look back a little)
            for _, r in ipairs(store:export('{job="' .. job .. '"}')) do
              local last = 1 -- export does not promise time order
              for i, ts in ipairs(r.timestamps) do
                if ts > r.timestamps[last] then last = i end
              end
              local v = r.values[last]
              got[key_of(r.metric)] = v == cjson.null and "NaN" or tostring(v)
            end
          end
        end
        local missing, wrong, nan = {}, {}, 0
        for k, v in pairs(want) do
          local g = got[k]
          if v ~= v then
            -- NaN: Prometheus returns "NaN"; VictoriaMetrics drops NaN samples
            nan = nan + 1
            if kind == "prometheus" and g ~= "NaN" then wrong[#wrong + 1] = k end
          elseif g == nil then
            missing[#missing + 1] = k
          else
            local gv = g == "+Inf" and math.huge or g == "-Inf" and -math.huge or tonumber(g)
            -- VictoriaMetrics keeps values as decimal mantissa/exponent: 1e-12 relative
            local tol = kind == "prometheus" and 0 or math.abs(v) * 1e-12
            if not gv or math.abs(gv - v) > tol then
              wrong[#wrong + 1] = k .. " want " .. v .. " got " .. tostring(g)
            end
          end
        end
        assert.same({}, missing)
        assert.same({}, wrong)
        assert.is_true(nwant - nan >= (node and 100 or 10), "only " .. nwant .. " series")
        -- target labels and the report series made it too
        assert.truthy(got[key_of { __name__ = "up", instance = srv:address(), job = "t" }])
        assert.truthy(got[key_of { __name__ = "http_requests_total", code = "400", method = "post",
          instance = srv:address(), job = "t" }])
      end)
      if m then m:close() end
      if node then node:cleanup() end
      if store then store:cleanup() end
      srv:stop()
      assert(ok, err)
    end)
  end)
end)

describe("outage [long: ~45 s] #slow", function()
  it("large queue: every sample exactly once; small queue: dropped = missing", function()
    if not stores.have("victoria-metrics") then return pending("victoria-metrics not installed") end
    -- VictoriaMetrics keeps duplicate samples (no -dedup.minScrapeInterval),
    -- so count_over_time would show a sample sent twice; Prometheus's TSDB
    -- silently ignores an identical duplicate, which would hide one.
    local srv, vm, m = server.start(), nil, nil
    local ok, err = pcall(function()
      vm = stores.start("victoria-metrics")
      local N = 50
      local function rw(q, queue)
        queue.max_backoff = "1s"
        queue.batch_send_deadline = "500ms"
        return assert(promscrape.remote_write{ url = vm:write_url(), name = q,
          write_relabel_configs = relabel_keep("big_series", { q = q }), queue_config = queue })
      end
      local big = rw("big", { capacity = 100000 })
      local small = rw("small", { capacity = 300, max_samples_per_send = 100 })
      m = assert(promscrape.manager{ appender = promscrape.fanout{ promscrape.memory(), big, small } })
      assert(m:apply_config{ scrape_configs = { { job_name = "o", scrape_interval = "1s",
        metrics_path = "/many", params = { n = { tostring(N) } },
        static_configs = { { targets = { srv:address() } } } } } })
      assert(m:run{ duration = 4 })
      vm:stop()
      assert(m:run{ duration = 30 })
      local during = big:stats()
      assert.is_true(during.retried > 0)
      assert.is_true(small:stats().dropped > 0)
      vm:start()
      assert(m:run{ duration = 5 })
      local t = m:pools().o:targets()[1]
      m:close()
      assert(big:flush(30))
      assert(small:flush(30))
      local scrapes = t.scrapes
      local b, s = big:stats(), small:stats()
      assert.equal(0, b.failed, b.last_error)
      assert.equal(0, b.dropped)
      assert.equal(N * scrapes, b.sent)
      assert.equal(0, s.failed, s.last_error)
      assert.equal(N * scrapes, s.sent + s.dropped)
      assert.is_true(s.dropped > N * 20, "dropped only " .. s.dropped)
      -- every raw sample, per series: no timestamp twice
      local function stored(q)
        local n = 0
        for _, r in ipairs(vm:export('big_series{q="' .. q .. '"}')) do
          local seen = {}
          for _, ts in ipairs(r.timestamps) do
            assert.is_nil(seen[ts], "sample sent twice: " .. key_of(r.metric) .. " @" .. ts)
            seen[ts] = true
            n = n + 1
          end
        end
        return n
      end
      assert.equal(N * scrapes, stored("big"))
      assert.equal(s.sent, stored("small"))
      assert.equal(N * scrapes - s.dropped, stored("small"))
      -- and the PromQL view agrees (queried a little in the future: an
      -- instant query at "now" misses the newest second)
      local r = vm:query('sum(count_over_time(big_series{q="big"}[15m]))', os.time() + 10)
      assert.equal(N * scrapes, tonumber(r[1].value[2]))
    end)
    if m then m:close() end
    if vm then vm:cleanup() end
    srv:stop()
    assert(ok, err)
  end)
end)

describe("two sharded managers into one store #slow", function()
  it("100 targets: every target's series exactly once", function()
    if not stores.have("victoria-metrics") then return pending("victoria-metrics not installed") end
    local dir = os.tmpname()
    os.remove(dir)
    local vm, pid, ms = nil, nil, {}
    local ok, err = pcall(function()
      os.execute("env -u LD_PRELOAD /usr/bin/python3 spec/support/multiport.py --count 100 --lifetime 300"
        .. " --ready " .. dir .. " >/dev/null 2>&1 &")
      local line
      for _ = 1, 200 do
        local f = io.open(dir, "r")
        if f then line = f:read("*l"); f:close(); break end
        server.sleep(0.05)
      end
      assert(line, "multiport.py did not start")
      local ports
      ports, pid = line:match("PORTS (%S+) PID (%d+)")
      local addrs = {}
      for p in ports:gmatch("%d+") do addrs[#addrs + 1] = "127.0.0.1:" .. p end
      assert.equal(100, #addrs)
      vm = stores.start("victoria-metrics")
      local cfg = function(extra_rules, shard)
        return {
          scrape_configs = { { job_name = "sh", scrape_interval = "1s", relabel_configs = extra_rules,
            static_configs = { { targets = addrs } } } },
          remote_write = { { url = vm:write_url(), queue_config = { batch_send_deadline = "200ms" },
            write_relabel_configs = { { target_label = "shard", replacement = shard } } } },
        }
      end
      -- shard 0 with the convenience, shard 1 with the rules written by hand
      ms[1] = assert(promscrape.manager{ shard = { count = 2, index = 0 } })
      assert(ms[1]:apply_config(cfg(nil, "0")))
      ms[2] = assert(promscrape.manager())
      assert(ms[2]:apply_config(cfg({
        { source_labels = { "__address__" }, modulus = 2, target_label = "__tmp_hash", action = "hashmod" },
        { source_labels = { "__tmp_hash" }, regex = "1", action = "keep" },
      }, "1")))
      local n0, n1 = #ms[1]:pools().sh:targets(), #ms[2]:pools().sh:targets()
      assert.equal(100, n0 + n1)
      assert.is_true(n0 > 25 and n1 > 25, n0 .. "/" .. n1)
      drive(ms, 4)
      local rws = { ms[1]:remote_writes()[1], ms[2]:remote_writes()[1] }
      for _, m in ipairs(ms) do m:close() end
      for _, rw in ipairs(rws) do
        assert(rw:flush(20))
        assert.equal(0, rw:stats().failed)
      end
      for _, name in ipairs { "shard_target", "up" } do
        local per = {}
        for _, s in ipairs(vm:series(name .. '{job="sh"}')) do
          per[s.instance] = (per[s.instance] or 0) + 1
        end
        for _, a in ipairs(addrs) do
          assert.equal(1, per[a], name .. " of " .. a)
        end
      end
      -- and one shard wrote each
      local r = vm:query('count by (shard) (last_over_time(shard_target{job="sh"}[10m]))')
      local by = {}
      for _, x in ipairs(r) do by[x.metric.shard] = tonumber(x.value[2]) end
      assert.same({ ["0"] = n0, ["1"] = n1 }, by)
    end)
    for _, m in ipairs(ms) do m:close() end
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    os.remove(dir)
    if vm then vm:cleanup() end
    assert(ok, err)
  end)
end)

describe("promscrape run --shard I/N #slow", function()
  it("two processes with a prometheus.yml remote_write: every target once, flushed on exit", function()
    if not stores.have("victoria-metrics") then return pending("victoria-metrics not installed") end
    local H = require "spec.support.scrape"
    local f = io.open("lua/promscrape/cli/run.lua", "r")
    local src = f and f:read("*a") or ""
    if f then f:close() end
    if not src:find("--shard", 1, true) then return pending("promscrape run has no --shard in this tree") end
    local dir = io.popen("mktemp -d /tmp/promscrape-shard.XXXXXX"):read("*l")
    local vm, pid
    local ok, err = pcall(function()
      os.execute("env -u LD_PRELOAD /usr/bin/python3 spec/support/multiport.py --count 100 --lifetime 120"
        .. " --ready " .. dir .. "/ready >/dev/null 2>&1 &")
      local line
      for _ = 1, 200 do
        local r = io.open(dir .. "/ready", "r")
        if r then line = r:read("*l"); r:close(); break end
        server.sleep(0.05)
      end
      assert(line, "multiport.py did not start")
      local ports
      ports, pid = line:match("PORTS (%S+) PID (%d+)")
      local addrs = {}
      for p in ports:gmatch("%d+") do addrs[#addrs + 1] = '"127.0.0.1:' .. p .. '"' end
      vm = stores.start("victoria-metrics")
      local y = assert(io.open(dir .. "/p.yml", "w"))
      y:write("global: {scrape_interval: 1s}\n",
        "scrape_configs:\n  - job_name: cli\n    static_configs:\n      - targets: [", table.concat(addrs, ", "), "]\n",
        "remote_write:\n  - url: ", vm:write_url(), "\n    queue_config: {batch_send_deadline: 30s}\n")
      y:close()
      -- batch_send_deadline 30 s > the run: only the flush on exit sends
      local cmds = {}
      for i = 0, 1 do
        cmds[#cmds + 1] = ("%s spec/support/run_cli.lua '%s' run --no-table --duration 3 --shard %d/2 %s/p.yml >%s/%d.out 2>&1")
          :format(H.interpreter(), H.cpath(), i, dir, dir, i)
      end
      assert(os.execute("( " .. cmds[1] .. " & " .. cmds[2] .. " & wait )"))
      local per = {}
      for _, s in ipairs(vm:series('shard_target{job="cli"}')) do
        per[s.instance] = (per[s.instance] or 0) + 1
      end
      for _, a in ipairs(addrs) do
        a = a:sub(2, -2)
        assert.equal(1, per[a], "shard_target of " .. a)
      end
    end)
    if pid then os.execute("kill " .. pid .. " 2>/dev/null") end
    if vm then vm:cleanup() end
    os.execute("rm -rf '" .. dir .. "'")
    assert(ok, err)
  end)
end)
