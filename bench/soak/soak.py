#!/usr/bin/env python3
"""bench/soak/soak.py: the generator, driver and judge behind `make soak`.

bench/soak/run.sh starts and stops the processes; this file does the rest, in
three steps (standard library only, so it runs on a plain clone):

    soak.py setup   DIR WWW   nginx.conf, the SSI exposition template, the
                              first prometheus.yml and file_sd targets.json
    soak.py drive   DIR CMD.. starts CMD (bin/promscrape run ...), churns
                              targets, reloads it, samples RSS/CPU, stops it
                              (SIGTERM) after SOAK_SECONDS
    soak.py analyze DIR       reads what the run left in DIR, prints the
                              report, exits 1 (with the reasons) on failure

`analyze` can be run again on a kept DIR (build/soak by default).

The set-up
----------
One nginx (Debian's, as a plain process) listens on 127.0.0.1 on every target
port. Each answers GET with a ~100-series exposition (counters, a histogram, a
summary, gauges, with the label sets services really have) whose values
change on every request: nginx's SSI fills them from $msec,
$connection_requests and $connection, so nothing in the pipeline can cache a
body. Its access log records, per request, the start time ($msec minus
$request_time), the port and the URI: that is the ground truth of who was
scraped when.

`bin/promscrape run --listen 127.0.0.1:0` scrapes three jobs every
SOAK_INTERVAL (1 s):

  soak   SOAK_TARGETS targets from file_sd (targets.json). Every
         SOAK_CHURN_EVERY (30 s) the driver removes SOAK_CHURN of them
         (default 5 %) and adds as many new ones, the way pods come and go:
         a new target gets a new `pod` label (so new series, as a new pod
         brings) and a new generation parameter (?g=N, so each target
         instance has its own URI in the access log). A port that loses its
         target stays unused for two churn periods. This job's config text
         never changes, so reloads must leave its loops alone.
  side   2 static targets whose `phase` label and ?r= parameter change on
         every reload (a real change: its targets are replaced).
  extra  2 static targets in a job that is added on one reload and removed
         on the next.

Every SOAK_RELOAD_EVERY (10 s) the driver rewrites prometheus.yml and sends
SIGHUP.

Pass rules (exit 1 with the reason when one fails)
----------------------------------------------------
A target instance is one URI on one port. Its lifetime in the scraper is
[A, R]: A from promscrape's own "target added" log line (url=...), R from the
matching "target removed" line (which names job and instance only: it closes
the oldest open instance of that job/instance), or the moment the driver
stopped promscrape. promscrape logs both in the loop step (0.1 s) of the
discovery sync that adds or removes the target, so they are its own edges,
not the driver's guess (file_sd adds up to 1 s of polling and 5 s of
throttle). Its scrapes are the access-log requests for that URI.
With I the scrape interval:

  missed    between two consecutive scrapes of an instance, a gap > 1.5 I
            (counted as round(gap / I) - 1 missed scrapes). The join edge:
            the first scrape may come at any time within its first interval
            (Prometheus spreads first scrapes over it) so only first - A >
            1.5 I is a miss. The leave edge: R - last > 1.5 I is a miss
            (the loop stopped scraping before the target was removed).
            Nothing before A or after R is expected, so the edges need no
            other exclusion.
  doubled   a gap < 0.5 I between two consecutive scrapes of an instance.
  stray     a scrape later than R + 1.5 I (a removed target still being
            scraped; a scrape in flight at R may finish up to one timeout
            later), or of a URI promscrape never logged as added.
  discovery the driver's own record cross-checks A and R: every target it
            wrote into targets.json must be added within SOAK_SD_LAG_MAX
            (20 s: 1 s file check + 5 s throttle + slack) and removed within
            the same bound after it left the file.
  reloads   every SIGHUP must give one "configuration reloaded" line, none
            "reload failed".
  RSS       VmRSS is sampled every SOAK_RSS_EVERY (10 s). After SOAK_WARMUP,
            take the median of the first SOAK_RSS_WINDOW (60 s) of samples
            (baseline) and the median of the last SOAK_RSS_WINDOW (final):
            fail when final > baseline * (1 + SOAK_RSS_LIMIT/100), 2 %.
            Medians, not single samples, so one malloc or Lua GC step does
            not decide; the largest window median in between is printed too.
            The warm-up (default 600 s) must outlast the store's own: the
            series of departed targets are forgotten --forget-after (300 s)
            after their last sample, checked every half window, so they
            pile up for ~450 s before the first are freed; malloc then
            needs a few minutes more to settle into reusing the freed space.
            A short run needs a short window, e.g.
            SOAK_PROMSCRAPE_ARGS="--forget-after 30".

Also reported: scrapes (server side and promscrape's own counter), samples/s
(scrapes x series per body), promscrape CPU seconds (utime + stime from
/proc/PID/stat) and CPU seconds per 1M samples, after warm-up and overall,
and the jitter of the scrape gaps.
"""
import calendar
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request


def env_num(name, default, cast=float):
    v = os.environ.get(name, "")
    return cast(v) if v.strip() else cast(default)


def params():
    targets = env_num("SOAK_TARGETS", 200, int)
    p = {
        "seconds": env_num("SOAK_SECONDS", 1800),
        "targets": targets,
        "warmup": env_num("SOAK_WARMUP", 600),
        "interval": env_num("SOAK_INTERVAL", 1),
        "reload_every": env_num("SOAK_RELOAD_EVERY", 10),
        "churn_every": env_num("SOAK_CHURN_EVERY", 30),
        "churn": env_num("SOAK_CHURN", max(1, targets // 20), int),
        "rss_every": env_num("SOAK_RSS_EVERY", 10),
        "rss_window": env_num("SOAK_RSS_WINDOW", 60),
        "rss_limit": env_num("SOAK_RSS_LIMIT", 2),
        "sd_lag_max": env_num("SOAK_SD_LAG_MAX", 20),
        "base_port": env_num("SOAK_BASE_PORT", 23000, int),
        "seed": env_num("SOAK_SEED", 1, int),
    }
    if p["targets"] < 1 or p["interval"] <= 0 or p["churn"] >= p["targets"]:
        sys.exit("soak: need SOAK_TARGETS >= 1, SOAK_INTERVAL > 0, SOAK_CHURN < SOAK_TARGETS")
    return p


def load_state(d):
    with open(os.path.join(d, "state.json")) as f:
        return json.load(f)


def save_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1)
    os.rename(path + ".tmp", path)  # readers never see half a file


# ---- setup ------------------------------------------------------------------

def free_range(base, count):
    """First port >= base with base..base+count-1 all free on 127.0.0.1."""
    start = base
    while start + count < 65000:
        for p in range(start, start + count):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                start = p + 1
                break
            finally:
                s.close()
        else:
            return start
    sys.exit("soak: no %d free consecutive ports from %d" % (count, base))


def exposition():
    """The SSI template: ~100 series, values filled by nginx per request."""
    MS = '<!--# echo var="msec" -->'
    CR = '<!--# echo var="connection_requests" -->'
    CN = '<!--# echo var="connection" -->'
    out = []

    def fam(name, typ, help_):
        out.append("# HELP %s %s" % (name, help_))
        out.append("# TYPE %s %s" % (name, typ))

    def s(name, labels, value):
        lab = ",".join('%s="%s"' % kv for kv in labels)
        out.append("%s{%s} %s" % (name, lab, value) if lab else "%s %s" % (name, value))

    fam("http_requests_total", "counter", "Requests handled, by handler, method and code.")
    for h in ("/api/v1/orders", "/api/v1/users", "/api/v1/items", "/healthz", "/metrics"):
        for m in ("GET", "POST"):
            for c in ("200", "500"):
                s("http_requests_total", [("code", c), ("handler", h), ("method", m)], MS)
    fam("http_request_duration_seconds", "histogram", "Request latency.")
    for h in ("/api/v1/orders", "/api/v1/users", "/api/v1/items"):
        for le in ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"):
            s("http_request_duration_seconds_bucket", [("handler", h), ("le", le)], CR)
        s("http_request_duration_seconds_sum", [("handler", h)], MS)
        s("http_request_duration_seconds_count", [("handler", h)], CR)
    fam("go_gc_duration_seconds", "summary", "GC pause durations.")
    for q in ("0", "0.25", "0.5", "0.75", "1"):
        s("go_gc_duration_seconds", [("quantile", q)], '<!--# echo var="request_time" -->')
    s("go_gc_duration_seconds_sum", [], MS)
    s("go_gc_duration_seconds_count", [], CR)
    for name in ("go_goroutines", "go_threads", "go_memstats_alloc_bytes",
                 "go_memstats_heap_objects", "go_memstats_heap_inuse_bytes",
                 "go_memstats_heap_idle_bytes", "go_memstats_stack_inuse_bytes",
                 "go_memstats_mspan_inuse_bytes", "go_memstats_next_gc_bytes",
                 "go_memstats_sys_bytes", "go_memstats_last_gc_time_seconds"):
        fam(name, "gauge", "Go runtime state.")
        s(name, [], CN if "bytes" in name or "objects" in name else MS)
    fam("go_memstats_mallocs_total", "counter", "Mallocs.")
    s("go_memstats_mallocs_total", [], MS)
    fam("go_info", "gauge", "Go version.")
    s("go_info", [("version", "go1.22.4")], "1")
    for name, typ, v in (("process_cpu_seconds_total", "counter", MS),
                         ("process_resident_memory_bytes", "gauge", CN),
                         ("process_virtual_memory_bytes", "gauge", CN),
                         ("process_open_fds", "gauge", CR),
                         ("process_max_fds", "gauge", "1048576"),
                         ("process_start_time_seconds", "gauge", "1.7e+09")):
        fam(name, typ, "Process state.")
        s(name, [], v)
    fam("app_queue_depth", "gauge", "Jobs waiting, by queue.")
    for q in ("emails", "exports", "invoices", "webhooks"):
        s("app_queue_depth", [("queue", q)], CR)
    fam("app_cache_requests_total", "counter", "Cache lookups, by cache and result.")
    for c in ("sessions", "catalog"):
        for r in ("hit", "miss"):
            s("app_cache_requests_total", [("cache", c), ("result", r)], MS)
    fam("app_db_connections", "gauge", "Pool connections, by pool and state.")
    for pool in ("primary", "replica"):
        for st in ("idle", "in_use", "waiting"):
            s("app_db_connections", [("pool", pool), ("state", st)], CN)
    fam("app_build_info", "gauge", "Build.")
    s("app_build_info", [("goversion", "go1.22.4"), ("revision", "4f2a9c1"),
                         ("version", "2.14.0")], "1")
    body = "\n".join(out) + "\n"
    series = sum(1 for line in out if not line.startswith("#"))
    return body, series


def nginx_conf(d, www, ports):
    lines = [
        "# generated by bench/soak/soak.py setup: the soak targets",
        "daemon off;",  # run.sh keeps the master as its child, stops it by pid
        "worker_processes 1;",  # leave the other core to promscrape
        "pid %s/nginx.pid;" % d,
        "error_log %s/nginx-error.log warn;" % d,
        "events { worker_connections 2048; }",
        "http {",
        "  access_log off;",
        # start time = $msec (end) - $request_time: when promscrape asked
        "  log_format soak '$msec $request_time $server_port $request_uri $status';",
        "  types { }",
        '  default_type "text/plain; version=0.0.4; charset=utf-8";',
        "  ssi on; ssi_types *;",
        "  keepalive_requests 1000000; keepalive_timeout 300s;",
    ]
    for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        lines.append("  %s_temp_path %s/tmp/%s;" % (t, www, t))
    lines.append("  server {")
    lines += ["    listen 127.0.0.1:%d;" % p for p in ports]
    lines += [
        "    access_log %s/access.log soak buffer=64k flush=1s;" % d,
        "    root %s;" % www,
        "    location / { try_files /metrics.prom =404; }",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def write_config(d, st, reload_n):
    """prometheus.yml for reload number reload_n (0: the first one)."""
    iv = "%gs" % st["p"]["interval"]
    side = ", ".join("'127.0.0.1:%d'" % p for p in st["side_ports"])
    extra = ", ".join("'127.0.0.1:%d'" % p for p in st["extra_ports"])
    text = [
        "# generated by bench/soak/soak.py (reload %d)" % reload_n,
        "global:",
        "  scrape_interval: %s" % iv,
        "  scrape_timeout: %s" % iv,
        "scrape_configs:",
        # the churning job: the same text on every reload
        "  - job_name: soak",
        "    file_sd_configs:",
        "      - files: [targets.json]",
        # a real change on every reload: new labels, so new targets
        "  - job_name: side",
        "    static_configs:",
        "      - targets: [%s]" % side,
        "        labels: {phase: '%s', __param_r: '%d'}" % ("ab"[reload_n % 2], reload_n),
    ]
    if reload_n % 2 == 1:  # a job that comes and goes
        text += [
            "  - job_name: extra",
            "    static_configs:",
            "      - targets: [%s]" % extra,
            "        labels: {__param_r: '%d'}" % reload_n,
        ]
    path = os.path.join(d, "prometheus.yml")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(text) + "\n")
    os.rename(path + ".tmp", path)


ZONES = ("eu-west-1a", "eu-west-1b", "eu-west-1c")


def write_targets(d, st):
    groups = []
    for port, gen in sorted((int(p), g) for p, g in st["live"].items()):
        groups.append({
            "targets": ["127.0.0.1:%d" % port],
            "labels": {
                "namespace": "shop", "app": "api", "zone": ZONES[port % 3],
                "pod": "api-%d-g%d" % (port, gen),  # a new pod, new series
                "__param_g": str(gen),  # one URI per target instance
            },
        })
    save_json(os.path.join(d, "targets.json"), groups)


def setup(d, www):
    p = params()
    pool = p["targets"] + 3 * p["churn"]  # 2 periods of cool-down + room
    base = free_range(p["base_port"], pool + 4)
    ports = list(range(base, base + pool + 4))
    body, series = exposition()
    os.makedirs(os.path.join(www, "tmp"), exist_ok=True)
    with open(os.path.join(www, "metrics.prom"), "w") as f:
        f.write(body)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(nginx_conf(d, www, ports))
    st = {
        "p": p, "series": series, "pool": ports[:pool],
        "side_ports": ports[pool:pool + 2], "extra_ports": ports[pool + 2:pool + 4],
        "live": {str(port): 0 for port in ports[:p["targets"]]},
        "idle_since": {str(port): 0 for port in ports[p["targets"]:pool]},
        "next_gen": 1,
    }
    write_targets(d, st)
    write_config(d, st, 0)
    save_json(os.path.join(d, "state.json"), st)
    print("soak: %d targets (+%d ports for churn), %d series each, ports %d-%d, every %gs"
          % (p["targets"], pool - p["targets"], series, ports[0], ports[-1], p["interval"]))


# ---- drive ------------------------------------------------------------------

def proc_rss_kb(pid):
    """VmRSS and RssAnon in kB: a slow rise in RSS that is not anonymous
    memory is library pages being touched for the first time, not a leak."""
    v = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k = line.split(":")[0]
            if k in ("VmRSS", "RssAnon"):
                v[k] = int(line.split()[1])
    return v.get("VmRSS", -1), v.get("RssAnon", -1)


def proc_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def schedstat(pids):
    """CPU time and run-queue wait (seconds) summed over pids: whether a late
    scrape was a process waiting for a CPU on a busy machine."""
    run = wait = 0.0
    for pid in pids:
        try:
            with open("/proc/%d/schedstat" % pid) as f:
                x = f.read().split()
            run, wait = run + int(x[0]) / 1e9, wait + int(x[1]) / 1e9
        except (OSError, IndexError, ValueError):
            pass
    return run, wait


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def alive(pid):
    """False once pid has exited (a zombie counts as exited)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def http_get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode("utf-8", "replace")
    except Exception:  # the caller records "unknown"; a scrape check never hangs on it
        return None


def listen_address(d, pid, wait=15):
    deadline = time.time() + wait
    while time.time() < deadline:
        try:
            with open(os.path.join(d, "promscrape.log")) as f:
                m = re.search(r"msg=listening address=(\S+)", f.read())
                if m:
                    return m.group(1)
        except OSError:
            pass
        if not alive(pid):
            return None
        time.sleep(0.1)
    return None


class LineCounter:
    """Counts lines appended to a file since the last call."""

    def __init__(self, path):
        self.path, self.off, self.n = path, 0, 0

    def count(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except OSError:
            return self.n
        self.off += len(data)
        self.n += data.count(b"\n")
        return self.n


def drive(d, cmd):
    """Starts cmd (promscrape) itself, so that nothing of ours (python
    starting up) competes with promscrape's first seconds; stops it on the
    way out, whatever happens."""
    t0 = time.time()
    out = open(os.path.join(d, "promscrape.log"), "w")
    err = open(os.path.join(d, "promscrape.err"), "w")
    child = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    with open(os.path.join(d, "promscrape.pid"), "w") as f:
        f.write("%d\n" % child.pid)  # for run.sh's trap, should we die first
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("soak: stopped by SIGTERM"))
    forget_after = 300.0  # promscrape run's default; the RSS note needs it
    for i, a in enumerate(cmd):
        if a == "--forget-after" and i + 1 < len(cmd):
            forget_after = float(cmd[i + 1])
        elif a.startswith("--forget-after="):
            forget_after = float(a.split("=", 1)[1])
    try:
        drive_run(d, child, t0, forget_after)
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        os.unlink(os.path.join(d, "promscrape.pid"))  # gone: nothing for run.sh to stop


def drive_run(d, child, t0, forget_after):
    pid = child.pid
    st = load_state(d)
    p = st["p"]
    rng = random.Random(p["seed"])
    st["forget_after"] = forget_after
    addr = listen_address(d, pid)
    if not addr:
        sys.exit("soak: promscrape did not start listening (see %s/promscrape.err)" % d)
    st["listen"] = addr
    events = open(os.path.join(d, "events.tsv"), "w")
    rss = open(os.path.join(d, "rss.tsv"), "w")
    rss.write("t\tts\trss_kb\tcpu_s\tscrapes\tactive\tup\treloads\tanon_kb\tdown\n")

    def event(kind, *a, at=None):
        events.write("%.3f\t%s\t%s\n" % (at or time.time(), kind, "\t".join(str(x) for x in a)))
        events.flush()

    event("start", t0, at=t0)
    for port, gen in st["live"].items():
        event("join", port, gen, at=t0)  # the initial file, there before t0
    access = LineCounter(os.path.join(d, "access.log"))
    sched = open(os.path.join(d, "sched.tsv"), "w")
    sched.write("t\tps_cpu\tps_wait\tnginx_cpu\tnginx_wait\n")
    nginx = int(os.environ.get("SOAK_NGINX_PID") or 0)
    workers = children(nginx) if nginx else []
    next_sched = t0 + 1
    reload_n, churns, last = 0, 0, (t0, 0)
    next_reload = t0 + p["reload_every"] / 2  # apart from the RSS samples
    next_churn = t0 + p["churn_every"]
    next_rss = t0 + p["rss_every"]
    end = t0 + p["seconds"]
    print("soak: promscrape pid %d listening on %s; %gs, warm-up %gs; reload every %gs, "
          "%d targets churn every %gs" % (pid, addr, p["seconds"], p["warmup"],
                                          p["reload_every"], p["churn"], p["churn_every"]))
    print("%7s %9s %8s %7s %10s %9s %8s" % ("t", "RSS MB", "targets", "up", "scrapes/s", "CPU", "reloads"))
    sys.stdout.flush()
    while True:
        now = time.time()
        if now >= end:
            break
        if not alive(pid):
            event("died", pid)
            sys.exit("soak: promscrape (pid %d) exited during the run (see %s/promscrape.err)" % (pid, d))
        if now >= next_churn:
            while next_churn <= now:  # a late start skips slots, never bunches them
                next_churn += p["churn_every"]
            churns += 1
            cool = now - 2 * p["churn_every"] + 1
            idle = [q for q, since in st["idle_since"].items() if since <= cool]
            k = min(p["churn"], len(idle))
            leave = rng.sample(sorted(st["live"]), k)
            join = rng.sample(sorted(idle), k)
            for q in leave:
                st["idle_since"][q] = now
                gen = st["live"].pop(q)
                event("leave", q, gen)
            for q in join:
                del st["idle_since"][q]
                st["live"][q] = st["next_gen"]
                st["next_gen"] += 1
            write_targets(d, st)
            for q in join:
                event("join", q, st["live"][q])
        if now >= next_reload:
            while next_reload <= now:  # a late start skips slots, never bunches them
                next_reload += p["reload_every"]
            reload_n += 1
            write_config(d, st, reload_n)
            os.kill(pid, signal.SIGHUP)
            event("reload", reload_n)
        if now >= next_sched:
            while next_sched <= now:
                next_sched += 1
            sched.write("%.2f\t%.3f\t%.3f\t%.3f\t%.3f\n" % ((now - t0,) + schedstat([pid]) + schedstat(workers)))
            sched.flush()
        if now >= next_rss:
            while next_rss <= now:  # a late start skips slots, never bunches them
                next_rss += p["rss_every"]
            (kb, anon), cpu = proc_rss_kb(pid), proc_cpu_s(pid)
            n = access.count()
            active = up = down = -1
            body = http_get("http://%s/api/v1/targets?state=active" % addr)
            if body:
                try:
                    ts = json.loads(body)["data"]["activeTargets"]
                    active, up = len(ts), sum(1 for t in ts if t.get("health") == "up")
                    down = sum(1 for t in ts if t.get("health") == "down")  # not "unknown": new
                except (ValueError, KeyError, TypeError):
                    pass
            rss.write("%.1f\t%.3f\t%d\t%.2f\t%d\t%d\t%d\t%d\t%d\t%d\n"
                      % (now - t0, now, kb, cpu, n, active, up, reload_n, anon, down))
            rss.flush()
            dt = now - last[0]
            print("%6.0fs %9.1f %8d %7d %10.1f %8.2fs %8d"
                  % (now - t0, kb / 1024, active, up, (n - last[1]) / dt if dt > 0 else 0, cpu, reload_n))
            sys.stdout.flush()
            last = (now, n)
        time.sleep(max(0.01, min(next_churn, next_reload, next_rss, next_sched, end) - time.time()))
    # promscrape's own count before it stops, to compare with the access log
    metrics = http_get("http://%s/metrics" % addr) or ""
    own = sum(float(v) for v in re.findall(r'^promscrape_scrapes_total\{[^}]*\} (\S+)$', metrics, re.M))
    cpu = proc_cpu_s(pid)
    event("stop", cpu, own)
    child.terminate()
    try:
        event("stopped", child.wait(15))
    except subprocess.TimeoutExpired:
        event("stop-timeout")
    st["reloads"], st["churns"] = reload_n, churns
    save_json(os.path.join(d, "state.json"), st)


# ---- analyze ----------------------------------------------------------------

LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def logfmt(line):
    out = {}
    for k, v in LOGFMT.findall(line):
        if v.startswith('"'):
            v = re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), v[1:-1])
        out[k] = v
    return out


def rfc3339(s):
    m = re.match(r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)(\.\d+)?Z$", s)
    if not m:
        return None
    y, mo, da, h, mi, se = (int(x) for x in m.groups()[:6])
    return calendar.timegm((y, mo, da, h, mi, se, 0, 0, 0)) + float(m.group(7) or 0)


def percentile(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def analyze(d):
    st = load_state(d)
    p = st["p"]
    I = p["interval"]
    fails, notes = [], []

    # -- the driver's record
    ev = []
    with open(os.path.join(d, "events.tsv")) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            ev.append((float(parts[0]), parts[1], parts[2:]))
    t0 = next(float(a[0]) for _, k, a in ev if k == "start")
    stop = [(t, a) for t, k, a in ev if k == "stop"]
    if not stop:
        fails.append("the run did not finish (no stop event): interrupted or promscrape died")
        t_stop, cpu_end, own = ev[-1][0], None, None
    else:
        t_stop, cpu_end, own = stop[0][0], float(stop[0][1][0]), float(stop[0][1][1])
    sighups = sum(1 for _, k, _ in ev if k == "reload")
    for _, k, a in ev:
        if k == "stop-timeout":
            fails.append("promscrape did not stop within 15 s of SIGTERM")
        elif k == "stopped" and a and a[0] not in ("", "0"):
            fails.append("promscrape exited with status %s after SIGTERM (see promscrape.err)" % a[0])

    # -- promscrape's log: instance lifetimes, reloads
    inst = {}  # (port, uri) -> {"job", "A", "R"}
    open_by = {}  # (job, instance) -> [keys, oldest first]
    reloaded = failed = sd_err = 0
    with open(os.path.join(d, "promscrape.log")) as f:
        for line in f:
            kv = logfmt(line)
            msg, ts = kv.get("msg"), rfc3339(kv.get("ts", ""))
            if msg == "target added":
                u = urllib.parse.urlsplit(kv["url"])
                key = (u.port, u.path + ("?" + u.query if u.query else ""))
                if key in inst:
                    notes.append("instance %s:%s added twice" % key)
                inst[key] = {"job": kv.get("job"), "A": ts, "R": None}
                open_by.setdefault((kv.get("job"), kv.get("instance")), []).append(key)
            elif msg == "target removed":
                keys = open_by.get((kv.get("job"), kv.get("instance")))
                if keys:
                    inst[keys.pop(0)]["R"] = ts
                else:
                    notes.append("removed without added: %s" % line.strip())
            elif msg == "configuration reloaded":
                reloaded += 1
            elif msg and msg.startswith("reload failed"):
                failed += 1
            elif msg == "discovery error":
                sd_err += 1
    for v in inst.values():
        if v["R"] is None:
            v["R"] = t_stop

    # -- the access log: scrapes per instance
    scrapes, statuses, unknown, n_all, n_post = {}, {}, 0, 0, 0
    t_warm = t0 + p["warmup"]
    with open(os.path.join(d, "access.log")) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 5 or parts[3] == "/soak-probe":  # run.sh's readiness probe
                continue
            t = float(parts[0]) - float(parts[1])
            key = (int(parts[2]), parts[3])
            statuses[parts[4]] = statuses.get(parts[4], 0) + 1
            n_all += 1
            if t >= t_warm:
                n_post += 1
            scrapes.setdefault(key, []).append(t)

    missed = doubled = stray = 0
    examples = []
    gaps = []
    reload_ts = [t for t, k, _ in ev if k == "reload"]
    reload_gaps = []  # gaps of the unchanged job that span a reload
    served_live = 0  # scrapes of the instances still there at the end
    displaced = []  # how far (s) each scrape off its tick was
    problems = []  # (t, kind): when things went wrong, to explain them

    def out(g):
        return g > 1.5 * I or g < 0.5 * I
    for key, ts in scrapes.items():
        ts.sort()
        v = inst.get(key)
        if v is None:
            unknown += len(ts)
            stray += len(ts)
            if len(examples) < 10:
                examples.append("stray: %d scrapes of 127.0.0.1:%d%s, never added" % (len(ts), key[0], key[1]))
            continue
        A, R = v["A"], v["R"]
        if R == t_stop:
            served_live += len(ts)
        first = ts[0] - A
        if first > 1.5 * I:
            n = round(first / I) - 1
            missed += n
            problems.append((A, "missed"))
            examples.append("missed %d: %s 127.0.0.1:%d%s first scrape %.2fs after it was added"
                            % (n, v["job"], key[0], key[1], first))
        gl = [b - a for a, b in zip(ts, ts[1:])]
        for i, g in enumerate(gl):
            gaps.append(g / I)
            if v["job"] == "soak" and any(ts[i] < r < ts[i + 1] for r in reload_ts):
                reload_gaps.append(g / I)
        i = 0
        if gl and gl[0] < 0.5 * I and ts[1] - I >= A - 0.05 * I:
            # A late first scrape: the tick before the second scrape comes
            # after the target was added, so the first scrape belongs to
            # it. Were that tick before A, the first scrape would be extra.
            displaced.append(I - gl[0])
            problems.append((ts[0], "late"))
            i = 1
        while i < len(gl):
            g, a = gl[i], ts[i]
            # One scrape off its tick, its neighbours on theirs: the gaps
            # around it are out of range but add up to two intervals (1.7
            # then 0.3). Every tick got its one scrape: it was late (or
            # early), neither missed nor doubled.
            if (i + 1 < len(gl) and (out(g) or out(gl[i + 1]))
                    and abs(g + gl[i + 1] - 2 * I) <= 0.25 * I and min(g, gl[i + 1]) >= 0.05 * I):
                displaced.append(g - I)
                problems.append((ts[i + 1], "late" if g > I else "early"))
                i += 2
                continue
            if g > 1.5 * I:
                n = round(g / I) - 1
                missed += n
                problems.append((a, "missed"))
                examples.append("missed %d: %s 127.0.0.1:%d%s gap %.2fs at t=%.1fs"
                                % (n, v["job"], key[0], key[1], g, a - t0))
            elif g < 0.5 * I:
                doubled += 1
                problems.append((a, "doubled"))
                examples.append("doubled: %s 127.0.0.1:%d%s gap %.3fs at t=%.1fs"
                                % (v["job"], key[0], key[1], g, a - t0))
            i += 1
        late = [t for t in ts if t > R + 1.5 * I]
        if late:
            stray += len(late)
            examples.append("stray: %s 127.0.0.1:%d%s scraped %d time(s), up to %.2fs after removal"
                            % (v["job"], key[0], key[1], len(late), late[-1] - R))
        tail = R - ts[-1]
        if tail > 1.5 * I:
            n = round(tail / I) - 1
            missed += n
            problems.append((ts[-1], "missed"))
            examples.append("missed %d: %s 127.0.0.1:%d%s last scrape %.2fs before removal at t=%.1fs"
                            % (n, v["job"], key[0], key[1], tail, R - t0))
    for key, v in inst.items():
        if key not in scrapes and v["R"] - v["A"] > 1.5 * I:
            n = round((v["R"] - v["A"]) / I) - 1
            missed += n
            examples.append("missed %d: %s 127.0.0.1:%d%s never scraped in %.1fs"
                            % (n, v["job"], key[0], key[1], v["R"] - v["A"]))

    # -- discovery: the driver's file_sd writes against promscrape's A and R
    lag_join, lag_leave, sd_fail = [], [], 0
    for t, k, a in ev:
        if k not in ("join", "leave"):
            continue
        key = (int(a[0]), "/metrics?g=%s" % a[1])
        v = inst.get(key)
        ref = t
        if k == "join":
            if v is None:
                if ref < t_stop - p["sd_lag_max"]:
                    sd_fail += 1
                    examples.append("discovery: 127.0.0.1:%s g=%s joined at t=%.1fs, never added" % (a[0], a[1], ref - t0))
                continue
            lag_join.append(v["A"] - ref)
            if v["A"] - ref > p["sd_lag_max"]:
                sd_fail += 1
                examples.append("discovery: 127.0.0.1:%s g=%s added %.1fs after it joined" % (a[0], a[1], v["A"] - ref))
        else:
            if v is None:
                continue
            lag_leave.append(v["R"] - t)
            if v["R"] - t > p["sd_lag_max"]:
                sd_fail += 1
                examples.append("discovery: 127.0.0.1:%s g=%s removed %.1fs after it left" % (a[0], a[1], v["R"] - t))

    # -- RSS
    rows = []
    with open(os.path.join(d, "rss.tsv")) as f:
        next(f)
        for line in f:
            x = line.split("\t")
            rows.append({"t": float(x[0]), "ts": float(x[1]), "kb": int(x[2]), "cpu": float(x[3]),
                         "n": int(x[4]), "active": int(x[5]), "up": int(x[6]),
                         "anon": int(x[8]) if len(x) > 8 else -1,
                         "down": int(x[9]) if len(x) > 9 else -1})
    post = [r for r in rows if r["t"] >= p["warmup"]]
    w = max(1, int(round(p["rss_window"] / p["rss_every"])))

    # -- the report
    dur = t_stop - t0
    print()
    print("RSS over time (VmRSS of promscrape, MB, and its anonymous part; one row per %s):" %
          ("sample" if len(rows) <= 60 else "%d samples, their median" % -(-len(rows) // 60)))
    step = max(1, -(-len(rows) // 60))
    lo = min((r["kb"] for r in rows), default=0)
    hi = max((r["kb"] for r in rows), default=1)
    for i in range(0, len(rows), step):
        chunk = rows[i:i + step]
        kb = statistics.median(r["kb"] for r in chunk)
        anon = statistics.median(r["anon"] for r in chunk)
        bar = "#" * int(1 + 40 * (kb - lo) / max(1, hi - lo))
        mark = "  warm-up" if chunk[-1]["t"] < p["warmup"] else ""
        print("  %6.0fs %8.1f %8s %s%s" % (chunk[-1]["t"], kb / 1024,
                                          "%.1f" % (anon / 1024) if anon >= 0 else "-", bar, mark))
    print()
    if len(post) < 2 * w:
        fails.append("RSS: %d samples after warm-up, need %d (two windows of %gs): run longer or shorten SOAK_WARMUP"
                     % (len(post), 2 * w, p["rss_window"]))
        base = final = peak = None
    else:
        base = statistics.median(r["kb"] for r in post[:w])
        final = statistics.median(r["kb"] for r in post[-w:])
        peak = max(statistics.median(r["kb"] for r in post[i:i + w]) for i in range(len(post) - w + 1))
        growth = 100.0 * (final - base) / base
        print("RSS after warm-up: baseline %.1f MB (median, t=%.0f-%.0fs), final %.1f MB (median, t=%.0f-%.0fs), "
              "growth %+.2f %% (limit %g %%); largest window median %.1f MB"
              % (base / 1024, post[0]["t"], post[w - 1]["t"], final / 1024, post[-w]["t"], post[-1]["t"],
                 growth, p["rss_limit"], peak / 1024))
        if growth > p["rss_limit"]:
            fails.append("RSS grew %.2f %% after warm-up (%.1f -> %.1f MB), limit %g %%"
                         % (growth, base / 1024, final / 1024, p["rss_limit"]))
            fa = st.get("forget_after", 300)
            if fa == 0:
                notes.append("promscrape ran with --forget-after 0: the series of departed targets are never freed")
            elif p["warmup"] < 1.5 * fa:
                notes.append("promscrape forgets series %gs after their last sample, and the warm-up (%gs) ends "
                             "before the first departed targets' series are freed (1.5 x that window): growth is "
                             "expected. For a short run use SOAK_PROMSCRAPE_ARGS='--forget-after %d'"
                             % (fa, p["warmup"], max(5, int(p["warmup"] / 2))))
    samples = n_all * st["series"]
    print("scrapes: %d served (%s), %.1f/s; %d target instances" % (
        n_all, ", ".join("%s: %d" % kv for kv in sorted(statuses.items())),
        n_all / dur if dur > 0 else 0, len(inst)))
    if own is not None:
        # promscrape_scrapes_total sums the targets present now (see docs/soak.md)
        print("  of the targets present at the end: %d served, promscrape_scrapes_total %d" % (served_live, own))
    print("samples: %d series per scrape, %.0f samples/s over the run" % (st["series"], samples / dur if dur > 0 else 0))
    if cpu_end is not None:
        line = "promscrape CPU: %.1f s in %.0f s (%.2f cores), %.2f CPU-s per 1M samples" % (
            cpu_end, dur, cpu_end / dur, cpu_end / (samples / 1e6) if samples else float("nan"))
        if post:
            cpu_post = cpu_end - post[0]["cpu"]
            s_post = n_post * st["series"]
            line += "; after warm-up: %.1f s, %.2f CPU-s per 1M samples" % (
                cpu_post, cpu_post / (s_post / 1e6) if s_post else float("nan"))
        print(line)
    if gaps:
        print("scrape gaps / interval: min %.3f, p1 %.3f, median %.3f, p99 %.3f, max %.3f (%d gaps)"
              % (min(gaps), percentile(gaps, 0.01), percentile(gaps, 0.5), percentile(gaps, 0.99), max(gaps), len(gaps)))
    if reload_gaps:
        print("job soak (unchanged by reloads), gaps spanning a reload / interval: min %.3f, max %.3f (%d gaps)"
              % (min(reload_gaps), max(reload_gaps), len(reload_gaps)))
    print("missed %d, doubled %d, stray %d; off their tick by more than I/2 but not missed or doubled: %d "
          "(late or early, up to %.2fs)" % (missed, doubled, stray, len(displaced),
                                            max((abs(x) for x in displaced), default=0)))
    sched = []
    try:
        with open(os.path.join(d, "sched.tsv")) as f:
            next(f)
            sched = [tuple(float(x) for x in line.split("\t")) for line in f]
    except (OSError, StopIteration, ValueError):
        pass

    def waited(a, b):
        """Run-queue wait of promscrape and nginx between t=a and t=b."""
        lo = [r for r in sched if r[0] <= a] or sched[:1]
        hi = [r for r in sched if r[0] >= b] or sched[-1:]
        if not lo or not hi:
            return None
        return hi[0][2] - lo[-1][2], hi[0][4] - lo[-1][4]

    if len(sched) > 2:
        ws = [(b[2] - a[2]) / (b[0] - a[0]) for a, b in zip(sched, sched[1:]) if b[0] > a[0]]
        wn = [(b[4] - a[4]) / (b[0] - a[0]) for a, b in zip(sched, sched[1:]) if b[0] > a[0]]
        print("waiting for a CPU, per second of run: promscrape median %.3fs max %.3fs; nginx median %.3fs max %.3fs"
              % (statistics.median(ws), max(ws), statistics.median(wn), max(wn)))
    if problems:
        problems.sort()
        clusters, cur = [], [problems[0]]
        for pr in problems[1:]:
            if pr[0] - cur[-1][0] <= 2:
                cur.append(pr)
            else:
                clusters.append(cur)
                cur = [pr]
        clusters.append(cur)
        print("scrapes off schedule, by moment (%d):" % len(clusters))
        for c in clusters[:15]:
            kinds = {}
            for _, k in c:
                kinds[k] = kinds.get(k, 0) + 1
            w = waited(c[0][0] - t0 - 1.5, c[-1][0] - t0 + 0.5)
            print("  t=%.1f-%.1fs: %s%s" % (
                c[0][0] - t0, c[-1][0] - t0, ", ".join("%d %s" % (n, k) for k, n in sorted(kinds.items())),
                "; meanwhile waiting for a CPU: promscrape %.2fs, nginx %.2fs" % w if w else ""))
    if lag_join:
        print("discovery lag: join median %.1fs max %.1fs; leave median %.1fs max %.1fs; %d sd errors"
              % (statistics.median(lag_join), max(lag_join), statistics.median(lag_leave) if lag_leave else 0,
                 max(lag_leave) if lag_leave else 0, sd_err))
    print("reloads: %d SIGHUP sent, %d reloaded, %d failed; %d churn rounds"
          % (sighups, reloaded, failed, st.get("churns", 0)))
    ups = [(r["up"], r["active"], r["down"]) for r in rows if r["active"] >= 0]
    if ups:
        print("targets (from /api/v1/targets every %gs): %d-%d active, at least %d up, at most %s down "
              "(the others not scraped yet)" % (p["rss_every"], min(u[1] for u in ups), max(u[1] for u in ups),
                                                min(u[0] for u in ups), max(u[2] for u in ups) if min(u[2] for u in ups) >= 0 else "?"))
    if missed:
        fails.append("%d missed scrape(s)" % missed)
    if doubled:
        fails.append("%d doubled scrape(s)" % doubled)
    if stray:
        fails.append("%d stray scrape(s)" % stray)
    if sd_fail:
        fails.append("%d discovery change(s) not applied within %gs" % (sd_fail, p["sd_lag_max"]))
    if failed or reloaded != sighups:
        fails.append("reloads: %d SIGHUP, %d reloaded, %d failed" % (sighups, reloaded, failed))
    if examples:
        print("first problems:")
        for e in examples[:20]:
            print("  " + e)
    for n in notes[:5]:
        print("note: " + n)
    if fails:
        print("SOAK FAILED: " + "; ".join(fails))
        return 1
    print("SOAK PASSED")
    return 0


def main(argv):
    if len(argv) == 4 and argv[1] == "setup":
        setup(os.path.abspath(argv[2]), os.path.abspath(argv[3]))
    elif len(argv) >= 4 and argv[1] == "drive":
        drive(os.path.abspath(argv[2]), argv[3:])
    elif len(argv) == 3 and argv[1] == "analyze":
        return analyze(argv[2])
    else:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
