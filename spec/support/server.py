#!/usr/bin/env python3
"""spec/support/server.py: scrape targets for the busted specs.

Python 3 standard library only. Listens on 127.0.0.1 only, and exits by
itself after --lifetime seconds (default 600), so a crashed test run leaves
nothing behind for long.

    server.py [--port N] [--tls-port N --cert F --key F]
              [--untrusted-cert F --untrusted-key F] [--lifetime S]
              [--ready FILE]

Port 0 (the default) lets the kernel choose. Once listening, the server
writes "PORT <n> TLSPORT <m> PID <p> UNTRUSTEDPORT <u>" (m, u = 0 without
that listener) as one line to --ready (or stdout), then serves until killed
or until its lifetime ends. --untrusted-cert/--untrusted-key add one more
TLS listener, for a certificate no scrape trusts (a self-signed one).

Paths (query strings select variants; every response is HTTP/1.1):
  /metrics            text 0.0.4, a few families with HELP/TYPE
  /om                 OpenMetrics 1.0.0 with exemplars and # EOF
  /gzip               /metrics gzip-encoded (always, whatever Accept-Encoding)
  /badgzip            Content-Encoding: gzip, but the body is not gzip
  /slow?delay=S       headers and half a body, then S seconds (default 5)
  /reset              Content-Length 100000, some bytes, then a TCP RST
  /big?bytes=N        N bytes (default 200000) of valid text exposition
  /many?n=N           N series big_series{i="0".."N-1"}
  /labels             series whose labels clash with target labels
  /timestamps         samples with explicit (old) timestamps
  /changing           series set alternates per request: odd requests
                      expose a and b, even requests only a (staleness)
  /status/CODE        that status code with a text body
  /redirect           301 to /metrics
  /basic              basic auth user "alice" password "s3cret", else 401
  /bearer             Authorization: Bearer tok3n, else 401
  /garbage            binary garbage as text/plain
  /wrongtype          a JSON body as application/json
  /headers            the request headers as series
                      request_header{name="<lowercase>",value="<value>"} 1
  /hits?path=P        how many times P (path with query) was requested;
                      not counted itself

Hostile targets (issue 8: spec/80-hostile_targets_spec.lua):
  /trickle?bytes=N    Content-Length N (default: /metrics' length), then
                      /metrics' bytes one per second
  /bomb               gzip bomb: ~1 MB of gzip that inflates to 1 GiB of
                      comment lines (built on first use, then kept);
                      ?layers=2 gzips it once more (~2.5 KB on the wire,
                      Content-Encoding: gzip, gzip); ?prepare=1 only builds
                      it and answers "ok"
  /corruptgzip        a gzip body whose deflate data is damaged mid-stream
  /loop               301 to itself, forever
  /longline?bytes=N&kind=K
                      one line of N bytes (default 1 MiB): K = value (a
                      label value, default), name (a metric name) or comment
                      (a comment line, then the series after_long_line 1)
  /manylabels?n=N     one series with N labels (default 100000), l0 .. lN-1
                      in numeric (not sorted) order
  /tiny?n=N           N series t0 .. tN-1 (default 10 million, ~110 MB),
                      generated while sent (chunked), never held in memory
  /badutf8?where=W    invalid UTF-8 in a label value (W = value, default) or
                      in HELP text (W = help)
  /nul?where=W        NUL bytes: at the start of a line between two series
                      (W = line, default), inside a label value (value), or
                      after the last line (trailing)
  /ctype?type=T       /metrics with Content-Type T; type=none sends no
                      Content-Type header at all
  /empty?type=T       status 200, an empty body (Content-Type as /ctype)
"""

import argparse
import gzip
import os
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TEXT_CT = "text/plain; version=0.0.4; charset=utf-8"
OM_CT = "application/openmetrics-text; version=1.0.0; charset=utf-8"

METRICS = b"""# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027
http_requests_total{method="post",code="400"} 3
# HELP temperature_celsius Current temperature.
# TYPE temperature_celsius gauge
temperature_celsius 21.5
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 0.05
rpc_duration_seconds_sum 17.5
rpc_duration_seconds_count 350
"""

OM = b"""# TYPE foo counter
# HELP foo A counter with an exemplar.
foo_total 17.0 # {trace_id="KOO5S4vxi0o"} 0.67 1520879607.789
foo_created 1520872607.123
# TYPE bar_seconds gauge
# UNIT bar_seconds seconds
bar_seconds 3.5
# EOF
"""

LABELS = b"""# TYPE clash gauge
clash{job="exposed_job",instance="exposed_instance",own="x"} 1
noclash{own="y"} 2
"""

TIMESTAMPS = b"""# TYPE with_ts gauge
with_ts 7 1000000000000
without_ts 8
"""

LOCK = threading.Lock()
HITS = {}


def hit(key):
    with LOCK:
        HITS[key] = HITS.get(key, 0) + 1
        return HITS[key]


MIB = 1 << 20
BOMB = {}  # layers -> body, built once per process
BOMB_LOCK = threading.Lock()  # not LOCK: /hits must not wait for a build


def bomb(layers):
    """A gzip member that inflates to 1 GiB of comment lines, 1 MiB each.

    Compressing 1 GiB takes seconds, so one 1 MiB segment is deflated and
    ended with a full flush (which resets the history: the segment depends
    on nothing before it) and repeated; only the CRC-32 reads the whole
    GiB (~0.6 s). gzip.compress of the result nests it once more.
    """
    with BOMB_LOCK:
        if layers in BOMB:
            return BOMB[layers]
        seg = b"#" + b" " * (MIB - 2) + b"\n"
        c = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate
        block = c.compress(seg) + c.flush(zlib.Z_FULL_FLUSH)
        n = 1024
        crc = 0
        for _ in range(n):
            crc = zlib.crc32(seg, crc)
        last = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # final block
        body = (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + block * n + last
                + struct.pack("<II", crc, (n * MIB) & 0xFFFFFFFF))
        for _ in range(1, layers):
            body = gzip.compress(body, 9)
        BOMB[layers] = body
        return body


def corrupt_gzip():
    """Valid gzip header, then deflate data with bytes flipped mid-stream."""
    z = bytearray(gzip.compress(METRICS * 20, 6))
    for i in range(len(z) // 2, len(z) // 2 + 8):
        z[i] ^= 0xFF
    return bytes(z)


def long_line(n, kind):
    if kind == "name":
        return b"l" * max(n - 3, 1) + b" 1\n"
    if kind == "comment":
        return b"# " + b"x" * max(n - 3, 0) + b"\nafter_long_line 1\n"
    head = b'long_line{v="'
    return head + b"x" * max(n - len(head) - 5, 0) + b'"} 1\n'


def many_labels(n):
    return (b"many_labels{" + b",".join(b'l%d="v"' % i for i in range(n))
            + b"} 1\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "promscrape-spec/1"

    def log_message(self, fmt, *args):  # quiet: the specs read no logs
        pass

    def send(self, code, body, ctype=TEXT_CT, headers=None):
        self.send_response(code)
        if ctype is not None:  # None: no Content-Type header at all
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: C901 (one dispatch table, kept flat)
        u = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        path = u.path
        if path != "/hits":
            hit(self.path)
        if path == "/hits":
            self.send(200, str(HITS.get(q.get("path", ""), 0)).encode())
        elif path == "/metrics":
            self.send(200, METRICS)
        elif path == "/om":
            self.send(200, OM, OM_CT)
        elif path == "/gzip":
            self.send(200, gzip.compress(METRICS), TEXT_CT,
                      {"Content-Encoding": "gzip"})
        elif path == "/badgzip":
            self.send(200, b"this is certainly not gzip data" * 4, TEXT_CT,
                      {"Content-Encoding": "gzip"})
        elif path == "/slow":
            delay = min(float(q.get("delay", "5")), 30.0)
            self.send_response(200)
            self.send_header("Content-Type", TEXT_CT)
            self.send_header("Content-Length", str(len(METRICS)))
            self.end_headers()
            self.wfile.write(METRICS[: len(METRICS) // 2])
            self.wfile.flush()
            time.sleep(delay)
            try:
                self.wfile.write(METRICS[len(METRICS) // 2:])
            except OSError:
                pass
        elif path == "/reset":
            self.send_response(200)
            self.send_header("Content-Type", TEXT_CT)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(METRICS)
            self.wfile.flush()
            # SO_LINGER with a zero timeout: close() sends RST, not FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif path == "/big":
            n = int(q.get("bytes", "200000"))
            line = b"big_body_series 1\n"
            pad = b"# " + b"x" * 78 + b"\n"
            body = line + pad * (max(n - len(line), 0) // len(pad) + 1)
            self.send(200, body[:n] if n > len(line) else line)
        elif path == "/many":
            n = int(q.get("n", "10"))
            body = b"".join(b'big_series{i="%d"} %d\n' % (i, i)
                            for i in range(n))
            self.send(200, body)
        elif path == "/labels":
            self.send(200, LABELS)
        elif path == "/timestamps":
            self.send(200, TIMESTAMPS)
        elif path == "/changing":
            n = hit("changing:" + self.path)
            body = b"changing_a 1\n"
            if n % 2 == 1:
                body += b"changing_b 2\n"
            self.send(200, body)
        elif path.startswith("/status/"):
            code = int(path[len("/status/"):])
            self.send(code, b"status %d\n" % code)
        elif path == "/redirect":
            self.send(301, b"", TEXT_CT, {"Location": "/metrics"})
        elif path == "/basic":
            import base64
            want = "Basic " + base64.b64encode(b"alice:s3cret").decode()
            if self.headers.get("Authorization") == want:
                self.send(200, b"basic_ok 1\n")
            else:
                self.send(401, b"unauthorized\n", TEXT_CT,
                          {"WWW-Authenticate": 'Basic realm="spec"'})
        elif path == "/bearer":
            if self.headers.get("Authorization") == "Bearer tok3n":
                self.send(200, b"bearer_ok 1\n")
            else:
                self.send(401, b"unauthorized\n")
        elif path == "/garbage":
            self.send(200, bytes((i * 37 + 11) % 256 for i in range(2048)))
        elif path == "/wrongtype":
            self.send(200, b'{"metrics": [1, 2, 3]}', "application/json")
        elif path == "/headers":
            lines = []
            for k, v in self.headers.items():
                v = v.replace("\\", "\\\\").replace('"', '\\"')
                lines.append('request_header{name="%s",value="%s"} 1\n'
                             % (k.lower(), v))
            self.send(200, "".join(lines).encode())
        elif path == "/trickle":
            self.trickle(int(q.get("bytes", str(len(METRICS)))))
        elif path == "/bomb":
            body = bomb(int(q.get("layers", "1")))
            if q.get("prepare"):
                self.send(200, b"ok\n")
            else:
                enc = ", ".join(["gzip"] * int(q.get("layers", "1")))
                self.send(200, body, TEXT_CT, {"Content-Encoding": enc})
        elif path == "/corruptgzip":
            self.send(200, corrupt_gzip(), TEXT_CT,
                      {"Content-Encoding": "gzip"})
        elif path == "/loop":
            self.send(301, b"", TEXT_CT, {"Location": "/loop"})
        elif path == "/longline":
            self.send(200, long_line(int(q.get("bytes", str(MIB))),
                                     q.get("kind", "value")))
        elif path == "/manylabels":
            self.send(200, many_labels(int(q.get("n", "100000"))))
        elif path == "/tiny":
            self.tiny(int(q.get("n", "10000000")))
        elif path == "/badutf8":
            if q.get("where") == "help":
                body = b"# HELP bad_help caf\xe9 \xff\xfe\nbad_help 1\n"
            else:
                body = b'bad_utf8{v="caf\xe9 \xff\xfe"} 1\n'
            self.send(200, b"before_bad 1\n" + body)
        elif path == "/nul":
            where = q.get("where", "line")
            if where == "value":
                body = b'nul_value{v="a\x00b"} 1\n'
            elif where == "trailing":
                body = b"before_nul 1\n\x00\x00\x00\x00"
            else:
                body = b"before_nul 1\n\x00after_nul 2\n"
            self.send(200, body)
        elif path == "/ctype":
            t = q.get("type", TEXT_CT)
            self.send(200, METRICS, None if t == "none" else t)
        elif path == "/empty":
            t = q.get("type", TEXT_CT)
            self.send(200, b"", None if t == "none" else t)
        else:
            self.send(404, b"not found\n")


    def trickle(self, n):
        """Content-Length n, then one byte per second until n bytes are
        sent or the client hangs up (bounded by METRICS' length)."""
        self.send_response(200)
        self.send_header("Content-Type", TEXT_CT)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        try:
            for i in range(min(n, len(METRICS))):
                self.wfile.write(METRICS[i:i + 1])
                self.wfile.flush()
                time.sleep(1.0)
        except OSError:
            pass
        self.close_connection = True

    def tiny(self, n):
        """n series t<i> 1, generated while sent in chunks of 64k lines
        (chunked transfer encoding: the length is never known up front)."""
        self.send_response(200)
        self.send_header("Content-Type", TEXT_CT)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        step = 65536
        try:
            for a in range(0, n, step):
                chunk = b"".join([b"t%d 1\n" % i
                                  for i in range(a, min(n, a + step))])
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client stopped reading: the limit, a timeout
            self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls-port", type=int, default=None)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--untrusted-cert")
    ap.add_argument("--untrusted-key")
    ap.add_argument("--lifetime", type=float, default=600.0)
    ap.add_argument("--ready")
    a = ap.parse_args()

    servers = [Server(("127.0.0.1", a.port), Handler)]

    def tls_listener(port, cert, key):
        tls = Server(("127.0.0.1", port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
        servers.append(tls)
        return tls.server_address[1]

    tls_port = tls_listener(a.tls_port or 0, a.cert, a.key) if a.cert else 0
    untrusted_port = 0
    if a.untrusted_cert:
        untrusted_port = tls_listener(0, a.untrusted_cert, a.untrusted_key)
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()

    line = "PORT %d TLSPORT %d PID %d UNTRUSTEDPORT %d\n" % (
        servers[0].server_address[1], tls_port, os.getpid(), untrusted_port)
    if a.ready:
        tmp = a.ready + ".tmp"
        with open(tmp, "w") as f:
            f.write(line)
        os.rename(tmp, a.ready)  # readers never see half a line
    else:
        sys.stdout.write(line)
        sys.stdout.flush()
    time.sleep(a.lifetime)
    os._exit(0)


# ---- http_sd endpoints (issue 5: spec/50-discovery_spec.lua) ---------------
# Kept apart from the dispatch above: it wraps Handler.do_GET.
#   GET /sd/<name>          the document stored under <name> (404 if none);
#                           ?auth=basic requires alice:s3cret
#   GET /sdset/<name>?body=<urlencoded>&ctype=<type>&status=<code>
#                           stores a document (default ctype application/json)
#   GET /sdhits/<name>      how many times /sd/<name> was fetched
#   GET /sdheader/<name>?h=<header>  that request header of the last fetch
SD_DOCS = {}
SD_HITS = {}
SD_HEADERS = {}
_orig_do_GET = Handler.do_GET


def _sd_do_GET(self):
    u = urlsplit(self.path)
    q = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
    path = u.path
    if path.startswith("/sdset/"):
        name = path[len("/sdset/"):]
        with LOCK:
            SD_DOCS[name] = (int(q.get("status", "200")),
                             q.get("ctype", "application/json"),
                             q.get("body", "").encode())
        self.send(200, b"ok\n")
    elif path.startswith("/sdhits/"):
        with LOCK:
            n = SD_HITS.get(path[len("/sdhits/"):], 0)
        self.send(200, str(n).encode())
    elif path.startswith("/sdheader/"):
        with LOCK:
            h = SD_HEADERS.get(path[len("/sdheader/"):], {})
        self.send(200, h.get(q.get("h", "").lower(), "").encode())
    elif path.startswith("/sd/"):
        name = path[len("/sd/"):]
        with LOCK:
            SD_HITS[name] = SD_HITS.get(name, 0) + 1
            SD_HEADERS[name] = {k.lower(): v for k, v in self.headers.items()}
            doc = SD_DOCS.get(name)
        if q.get("auth") == "basic":
            import base64
            want = "Basic " + base64.b64encode(b"alice:s3cret").decode()
            if self.headers.get("Authorization") != want:
                self.send(401, b"unauthorized\n")
                return
        if doc is None:
            self.send(404, b"no such document\n")
        else:
            self.send(doc[0], doc[2], doc[1])
    else:
        _orig_do_GET(self)


Handler.do_GET = _sd_do_GET
# ---- end of the http_sd endpoints -------------------------------------------


if __name__ == "__main__":
    main()
