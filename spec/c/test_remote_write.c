/*
 * spec/c/test_remote_write.c: ps_remote_write and ps_appender_fanout
 * against a remote-write receiver started inside the test. TAP output.
 *
 * The receiver is a forked child on 127.0.0.1 (ephemeral port), forked
 * first thing, before anything is allocated or any thread exists, as in
 * test_http.c: one thread per connection; it snappy-decompresses and
 * decodes every WriteRequest (rw_pbdec.h) and reports what it got over a
 * pipe, one "R" line per request and one "D" line per decoded series or
 * metadata entry, written before it answers:
 *
 *   R <path> <status> <monotonic ms> ce=.. ct=.. ver=.. ua=.. auth=.. org=..
 *   D <path> <status> S {__name__="up",job="t"} 1000=1 2000=stale
 *
 * The path picks the answer: /ok/<tag>, /fail400/<tag>,
 * /flaky500/N/<tag>, /flaky429/N/<tag> (N failures first, then 200),
 * /retryafter/<tag> (one 429 with Retry-After: 1), /slow/MS/<tag> (200
 * after MS milliseconds: a slow receiver, for resharding). The child stops when
 * the test closes its control pipe, or after 60 s by its own alarm; the test
 * always reaps it.
 */
#include "ps_appender.h"
#include "ps_appender_fanout.h"
#include "ps_core.h"
#include "ps_engine.h"
#include "ps_http.h"
#include "ps_remote_write.h"
#include "rw_pbdec.h"
#include "testlib.h"

#include <snappy-c.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ====================================================================== */
/* The receiver (runs in the forked child).                                */
/* ====================================================================== */

static int rep_fd = -1; /* the report pipe's write end */
static pthread_mutex_t rep_mu = PTHREAD_MUTEX_INITIALIZER;

static struct {
    char path[128];
    int n;
} hits[128];
static int n_hits;

/* How many requests this path has had, this one included. */
static int hit(const char *path)
{
    int i, n = 0;

    pthread_mutex_lock(&rep_mu);
    for (i = 0; i < n_hits && strcmp(hits[i].path, path) != 0; i++)
        ;
    if (i == n_hits && n_hits < 128)
        snprintf(hits[n_hits++].path, sizeof(hits[0].path), "%s", path);
    if (i < 128)
        n = ++hits[i].n;
    pthread_mutex_unlock(&rep_mu);
    return n;
}

/* A header's value, spaces turned into '_' so the report stays one token. */
static void header(const char *req, const char *name, char *out, size_t cap)
{
    const char *p = req;
    size_t nl = strlen(name), k = 0;

    out[0] = '-';
    out[1] = '\0';
    while ((p = strstr(p, "\r\n")) != NULL) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            p += nl + 1;
            while (*p == ' ')
                p++;
            while (*p && *p != '\r' && k + 1 < cap) {
                out[k++] = *p == ' ' ? '_' : *p;
                p++;
            }
            out[k] = '\0';
            return;
        }
    }
}

/* One write for head and body: two small writes would meet Nagle and a
 * delayed ACK (40 ms), which would blur the backoff timings. */
static void answer(int fd, int status, const char *extra, const char *body)
{
    char head[1024];
    const char *txt = status == 200   ? "OK"
                      : status == 204 ? "No Content"
                      : status == 400 ? "Bad Request"
                      : status == 429 ? "Too Many Requests"
                                      : "Internal Server Error";
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s\r\n%s",
                     status, txt, strlen(body), extra, body);

    write_all(fd, head, (size_t)n);
}

/* Decides the answer, reports the request, then answers it. */
static void handle(int fd, const char *req, const char *body, size_t blen)
{
    char path[128] = "", ce[64], ct[64], ver[64], ua[64], auth[128], org[64];
    const char *extra = "", *rbody = "";
    int status = 200, n, nf = 0, slow_ms = 0;
    size_t ulen = 0, i;
    char *raw = NULL;
    struct rw_text t = {NULL, 0, 0};

    sscanf(req, "POST %127s ", path);
    n = hit(path);
    if (strncmp(path, "/ok204/", 7) == 0) {
        status = 204;
    } else if (strncmp(path, "/fail400/", 9) == 0) {
        status = 400;
        rbody = "bad sample: out of order\nsecond line";
    } else if (sscanf(path, "/flaky500/%d/", &nf) == 1 && n <= nf) {
        status = 500;
        rbody = "busy";
    } else if (sscanf(path, "/flaky429/%d/", &nf) == 1 && n <= nf) {
        status = 429;
        rbody = "slow down";
    } else if (strncmp(path, "/retryafter/", 12) == 0 && n == 1) {
        status = 429;
        extra = "Retry-After: 1\r\n";
    } else if (sscanf(path, "/slow/%d/", &slow_ms) == 1) {
        status = 200;
    }
    header(req, "Content-Encoding", ce, sizeof(ce));
    header(req, "Content-Type", ct, sizeof(ct));
    header(req, "X-Prometheus-Remote-Write-Version", ver, sizeof(ver));
    header(req, "User-Agent", ua, sizeof(ua));
    header(req, "Authorization", auth, sizeof(auth));
    header(req, "X-Scope-OrgID", org, sizeof(org));

    t.cap = 1 << 20;
    t.s = malloc(t.cap);
    if (t.s != NULL &&
        snappy_uncompressed_length(body, blen, &ulen) == SNAPPY_OK &&
        (raw = malloc(ulen + 1)) != NULL &&
        snappy_uncompress(body, blen, raw, &ulen) == SNAPPY_OK) {
        if (rw_decode(raw, ulen, &t) != 0)
            t.len = 0;
    }
    {
        /* the report: R line, then each decoded line as a D line */
        size_t cap = t.len * 2 + 4096, k = 0;
        char *rep = malloc(cap);
        if (rep != NULL) {
            k += (size_t)snprintf(rep + k, cap - k,
                                  "R %s %d %lld ce=%s ct=%s ver=%s ua=%s "
                                  "auth=%s org=%s ok=%d\n",
                                  path, status, (long long)mono_ms(), ce, ct,
                                  ver, ua, auth, org, raw != NULL);
            for (i = 0; i < t.len;) {
                size_t e = i;
                while (e < t.len && t.s[e] != '\n')
                    e++;
                k += (size_t)snprintf(rep + k, cap - k, "D %s %d %.*s\n", path,
                                      status, (int)(e - i), t.s + i);
                i = e + 1;
            }
            pthread_mutex_lock(&rep_mu);
            write_all(rep_fd, rep, k);
            pthread_mutex_unlock(&rep_mu);
            free(rep);
        }
    }
    free(raw);
    free(t.s);
    if (slow_ms > 0) { /* reported already: the wait is the answer's */
        struct timespec ts = {slow_ms / 1000, (slow_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    answer(fd, status, extra, rbody);
}

/* A connection: requests (headers + Content-Length body) until EOF. */
static void serve_conn(int fd)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);

    while (buf != NULL) {
        char *end = NULL;
        size_t hl, cl = 0, need;
        const char *p;
        ssize_t n;

        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            hl = (size_t)(end + 4 - buf);
            for (p = buf; (p = strstr(p, "\r\n")) != NULL;) {
                p += 2;
                if (strncasecmp(p, "Content-Length:", 15) == 0)
                    cl = (size_t)strtoul(p + 15, NULL, 10);
            }
            need = hl + cl;
            if (need > cap) {
                char *nb = realloc(buf, need + 1);
                if (nb == NULL)
                    break;
                buf = nb;
                cap = need;
            }
            if (len >= need) {
                char save = buf[hl];
                buf[hl] = '\0';
                {
                    char *hdr = strdup(buf);
                    buf[hl] = save;
                    if (hdr == NULL)
                        break;
                    handle(fd, hdr, buf + hl, cl);
                    free(hdr);
                }
                memmove(buf, buf + need, len - need);
                len -= need;
                continue;
            }
        }
        if (len == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (nb == NULL)
                break;
            buf = nb;
            cap *= 2;
        }
        n = read(fd, buf + len, cap - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    free(buf);
}

static int srv_rep = -1, srv_port; /* the report pipe's read end */

/* The fixture, plus the report pipe: the child inherits rep_fd. */
static int start_server(void)
{
    int rep[2];

    if (pipe(rep) < 0)
        return -1;
    rep_fd = rep[1];
    srv_port = fixture_start(serve_conn, 60);
    close(rep[1]);
    rep_fd = -1;
    srv_rep = rep[0];
    fcntl(srv_rep, F_SETFL, fcntl(srv_rep, F_GETFL) | O_NONBLOCK);
    return srv_port < 0 ? -1 : 0;
}

static void stop_server(void)
{
    fixture_stop();
    if (srv_rep >= 0)
        close(srv_rep);
    srv_rep = -1;
}

/* ====================================================================== */
/* The test side: the report, the engine pump, helpers.                    */
/* ====================================================================== */

static char rx[1 << 21];
static size_t rx_len;

static void drain(void)
{
    for (;;) {
        ssize_t n;
        if (rx_len + 1 >= sizeof(rx))
            return;
        n = read(srv_rep, rx + rx_len, sizeof(rx) - 1 - rx_len);
        if (n <= 0)
            break;
        rx_len += (size_t)n;
    }
    rx[rx_len] = '\0';
}

static void pump(struct ps_engine *eng, long ms)
{
    int64_t end = mono_ms() + ms;

    do {
        ps_engine_step(eng, 5, NULL);
        drain();
    } while (mono_ms() < end);
}

/* Calls fn(line, ud) for each report line of kind 'R' or 'D' for path. */
static void each_line(char kind, const char *path,
                      void (*fn)(const char *line, size_t n, void *ud),
                      void *ud)
{
    const char *p = rx;
    size_t pl = strlen(path);

    drain();
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (p[0] == kind && p[1] == ' ' && strncmp(p + 2, path, pl) == 0 &&
            p[2 + pl] == ' ')
            fn(p, n, ud);
        p += n + (e != NULL);
    }
}

static void count_fn(const char *line, size_t n, void *ud)
{
    (void)line;
    (void)n;
    (*(int *)ud)++;
}

static int n_requests(const char *path)
{
    int n = 0;

    each_line('R', path, count_fn, &n);
    return n;
}

/* The monotonic times of the requests on path. */
struct times {
    int64_t t[16];
    int status[16];
    int n;
};

static void times_fn(const char *line, size_t n, void *ud)
{
    struct times *t = ud;
    char path[128];
    int st;
    long long ms;

    (void)n;
    if (t->n < 16 && sscanf(line, "R %127s %d %lld", path, &st, &ms) == 3) {
        t->status[t->n] = st;
        t->t[t->n++] = ms;
    }
}

/* Concatenates every D line's payload for path (status 2xx only). */
struct text {
    char s[65536];
    size_t len;
    int samples;
};

static void text_fn(const char *line, size_t n, void *ud)
{
    struct text *t = ud;
    char path[128];
    int st, off = 0;
    size_t i;

    if (sscanf(line, "D %127s %d %n", path, &st, &off) < 2 || st >= 300)
        return;
    for (i = (size_t)off; i < n; i++)
        if (line[i] == '=' && line[i - 1] >= '0' && line[i - 1] <= '9')
            t->samples++;
    t->len += (size_t)snprintf(t->s + t->len, sizeof(t->s) - t->len, "%.*s\n",
                               (int)(n - (size_t)off), line + off);
}

static void text_of(const char *path, struct text *t)
{
    t->len = 0;
    t->samples = 0;
    t->s[0] = '\0';
    each_line('D', path, text_fn, t);
}

static int wait_requests(struct ps_engine *eng, const char *path, int n,
                         long timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;

    while (n_requests(path) < n && mono_ms() < end)
        pump(eng, 10);
    return n_requests(path) >= n;
}

static char url_buf[256];

static const char *url(const char *path)
{
    snprintf(url_buf, sizeof(url_buf), "http://127.0.0.1:%d%s", srv_port, path);
    return url_buf;
}

/* Test defaults: small, fast queues and no metadata. */
static void opts_for(struct ps_remote_write_opts *o, const char *path)
{
    memset(o, 0, sizeof(*o));
    o->name = path;
    o->url = url(path);
    o->remote_timeout_ms = 2000;
    o->queue.capacity = 1000;
    o->queue.max_samples_per_send = 100;
    o->queue.batch_send_deadline_ms = 20;
    o->queue.min_backoff_ms = 20;
    o->queue.max_backoff_ms = 200;
    o->metadata.disable = 1;
}

/* {__name__=name, instance=inst, job="t"} */
static void mk_labels(struct ps_labels *ls, const char *name, const char *inst)
{
    ps_labels_clear(ls);
    ps_labels_add(ls, "__name__", 8, name, strlen(name), PS_LABELS_COPY);
    ps_labels_add(ls, "instance", 8, inst, strlen(inst), PS_LABELS_COPY);
    ps_labels_add(ls, "job", 3, "t", 1, PS_LABELS_COPY);
    ps_labels_sort(ls);
}

/* One transaction: sample t=ts v=v for each name (instance "i1"). */
static int scrape(struct ps_appender *a, const char *const *names, size_t n,
                  int64_t ts, double v)
{
    struct ps_labels ls;
    size_t i;
    int rc = a->vt->begin(a, NULL, NULL);

    ps_labels_init(&ls);
    for (i = 0; i < n && rc == PS_OK; i++) {
        uint64_t ref = 0;
        mk_labels(&ls, names[i], "i1");
        rc = a->vt->append(a, 0, &ls, ts, v, &ref, NULL);
    }
    if (rc == PS_OK)
        rc = a->vt->commit(a, NULL);
    else
        a->vt->rollback(a);
    ps_labels_cleanup(&ls);
    return rc;
}

static struct ps_remote_write *mk(struct ps_engine *eng,
                                  const struct ps_remote_write_opts *o)
{
    struct ps_remote_write *rw = NULL;
    struct ps_err e;

    ps_err_init(&e);
    if (ps_remote_write_new(&rw, eng, o, &e) != PS_OK)
        printf("# new: %s\n", e.msg);
    return rw;
}

static void get_stats(struct ps_remote_write *rw,
                      struct ps_remote_write_stats *st)
{
    ps_remote_write_stats(rw, st);
}

/* ====================================================================== */
/* Tests.                                                                   */
/* ====================================================================== */

static void test_config(struct ps_engine *eng)
{
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw = NULL;
    struct ps_err e;
    const char *hdr[] = {"X-Ok: 1", "content-type: text/plain", NULL};
    struct ps_str src = {"__name__", 8};
    struct ps_relabel_config rc[2];
    int r;

    ps_err_init(&e);
    opts_for(&o, "/ok/cfg");
    o.url = NULL;
    ok(ps_remote_write_new(&rw, eng, &o, &e) == PS_EINVAL && rw == NULL &&
           strstr(e.msg, "url is required") != NULL,
       "config: url is required");
    opts_for(&o, "/ok/cfg");
    o.headers = hdr;
    r = ps_remote_write_new(&rw, eng, &o, &e);
    ok(r == PS_EINVAL && strstr(e.msg, "headers[1]") != NULL &&
           strstr(e.msg, "reserved") != NULL,
       "config: a reserved header is refused, naming it");
    opts_for(&o, "/ok/cfg");
    memset(rc, 0, sizeof(rc));
    rc[0].source_labels = &src;
    rc[0].n_source_labels = 1;
    rc[0].action = (struct ps_str){"keep", 4};
    rc[1].action = (struct ps_str){"hashmod", 7}; /* needs a modulus */
    rc[1].source_labels = &src;
    rc[1].n_source_labels = 1;
    rc[1].target_label = (struct ps_str){"h", 1};
    o.write_relabel_configs = rc;
    o.n_write_relabel_configs = 2;
    r = ps_remote_write_new(&rw, eng, &o, &e);
    ok(r == PS_EINVAL && strstr(e.msg, "write_relabel_configs[1]") != NULL,
       "config: relabel errors name write_relabel_configs[i]");
    printf("# %s\n", e.msg);
    opts_for(&o, "/ok/cfg");
    o.queue.min_shards = 5;
    o.queue.max_shards = 2;
    ok(ps_remote_write_new(&rw, eng, &o, &e) == PS_EINVAL,
       "config: min_shards > max_shards refused");
}

static void test_headers(struct ps_engine *eng)
{
    const char *path = "/ok/hdr";
    const char *hdr[] = {"X-Scope-OrgID: tenant1", NULL};
    const char *names[] = {"up"};
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;
    struct text t;
    char want[256];
    int found = 0;

    opts_for(&o, path);
    o.headers = hdr;
    o.auth_credentials = "tok123";
    rw = mk(eng, &o);
    ok(rw != NULL, "headers: created");
    if (rw == NULL)
        return;
    ok(scrape(ps_remote_write_appender(rw), names, 1, 1000, 1) == PS_OK,
       "headers: committed");
    ok(ps_remote_write_flush(rw, 2000, NULL) == PS_OK, "headers: flushed");
    drain();
    {
        const char *p = strstr(rx, "R /ok/hdr ");
        snprintf(want, sizeof(want),
                 "ce=snappy ct=application/x-protobuf ver=0.1.0 "
                 "ua=promscrape/%s auth=Bearer_tok123 org=tenant1 ok=1",
                 PS_VERSION);
        found = p != NULL && strstr(p, want) != NULL;
        if (!found && p)
            printf("# %.200s\n", p);
    }
    ok(found, "headers: snappy, protobuf, version 0.1.0, user agent, "
              "authorization and custom header");
    text_of(path, &t);
    ok(strcmp(t.s, "S {__name__=\"up\",instance=\"i1\",job=\"t\"} "
                   "1000=1\n") == 0,
       "headers: the sample arrives, labels sorted");
    get_stats(rw, &st);
    ok(st.samples_sent == 1 && st.pending == 0 && st.inflight == 0 &&
           st.last_send_ms > 0 && st.requests == 1,
       "headers: counters");
    ps_remote_write_free(rw);
}

static void test_batch_size(struct ps_engine *eng)
{
    const char *path = "/ok/batch";
    const char *names[12] = {"m0", "m1", "m2", "m3", "m4",  "m5",
                             "m6", "m7", "m8", "m9", "m10", "m11"};
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;
    struct text t;

    opts_for(&o, path);
    o.queue.max_samples_per_send = 5;
    o.queue.batch_send_deadline_ms = 10000;
    rw = mk(eng, &o);
    if (rw == NULL) {
        ok(0, "batch size: created");
        return;
    }
    scrape(ps_remote_write_appender(rw), names, 12, 1000, 2);
    wait_requests(eng, path, 2, 2000);
    pump(eng, 200);
    text_of(path, &t);
    get_stats(rw, &st);
    ok(n_requests(path) == 2 && t.samples == 10 && st.pending == 2,
       "batch size: two full batches of 5 sent at once, 2 wait");
    ps_remote_write_flush(rw, 2000, NULL);
    text_of(path, &t);
    ok(n_requests(path) == 3 && t.samples == 12,
       "batch size: flush sends the rest");
    ps_remote_write_free(rw);
}

static void test_deadline(struct ps_engine *eng)
{
    const char *path = "/ok/deadline";
    const char *names[] = {"a", "b", "c"};
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct times tm;
    int64_t t0;
    int none_early;

    opts_for(&o, path);
    o.queue.batch_send_deadline_ms = 200;
    rw = mk(eng, &o);
    if (rw == NULL) {
        ok(0, "deadline: created");
        return;
    }
    t0 = mono_ms();
    scrape(ps_remote_write_appender(rw), names, 3, 1000, 1);
    pump(eng, 100);
    none_early = n_requests(path) == 0;
    wait_requests(eng, path, 1, 2000);
    memset(&tm, 0, sizeof(tm));
    each_line('R', path, times_fn, &tm);
    ok(none_early && tm.n == 1 && tm.t[0] - t0 >= 190 && tm.t[0] - t0 < 1500,
       "deadline: a partial batch goes after batch_send_deadline");
    printf("# sent after %lld ms\n", (long long)(tm.n ? tm.t[0] - t0 : -1));
    ps_remote_write_free(rw);
}

/* Every series' timestamps, in arrival order, must be 1..20. */
static void test_order(struct ps_engine *eng)
{
    const char *path = "/ok/order";
    const char *names[10] = {"s0", "s1", "s2", "s3", "s4",
                             "s5", "s6", "s7", "s8", "s9"};
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;
    static struct text t;
    int64_t ts, last[10];
    int i, good = 1, count[10] = {0};
    const char *p;

    opts_for(&o, path);
    o.queue.min_shards = 4;
    o.queue.max_shards = 4;
    o.queue.max_samples_per_send = 7;
    o.queue.batch_send_deadline_ms = 5;
    rw = mk(eng, &o);
    if (rw == NULL) {
        ok(0, "order: created");
        return;
    }
    for (ts = 1; ts <= 20; ts++) {
        scrape(ps_remote_write_appender(rw), names, 10, ts, (double)ts);
        pump(eng, 3);
    }
    ok(ps_remote_write_flush(rw, 5000, NULL) == PS_OK, "order: flushed");
    text_of(path, &t);
    for (i = 0; i < 10; i++)
        last[i] = 0;
    for (p = t.s; *p; p = strchr(p, '\n') + 1) {
        char name[16];
        const char *q;
        if (sscanf(p, "S {__name__=\"s%15[0-9]", name) != 1) {
            good = 0;
            break;
        }
        i = atoi(name);
        for (q = strchr(p, '}') + 1; *q == ' ';) {
            long long tt;
            double vv;
            int used = 0;
            if (sscanf(q, " %lld=%lf%n", &tt, &vv, &used) != 2)
                break;
            if (tt != last[i] + 1 || vv != (double)tt)
                good = 0;
            last[i] = tt;
            count[i]++;
            q += used;
        }
    }
    for (i = 0; i < 10; i++)
        if (count[i] != 20)
            good = 0;
    get_stats(rw, &st);
    ok(good && st.samples_sent == 200 && st.shards == 4,
       "order: 4 shards, every series complete and in order");
    ps_remote_write_free(rw);
}

static void test_retry_500(struct ps_engine *eng)
{
    const char *path = "/flaky500/2/a";
    const char *names[] = {"x", "y"};
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;
    struct times tm;

    opts_for(&o, path);
    o.queue.min_backoff_ms = 50;
    o.queue.max_backoff_ms = 1000;
    rw = mk(eng, &o);
    if (rw == NULL) {
        ok(0, "retry 500: created");
        return;
    }
    scrape(ps_remote_write_appender(rw), names, 2, 1000, 1);
    wait_requests(eng, path, 3, 3000);
    pump(eng, 100);
    memset(&tm, 0, sizeof(tm));
    each_line('R', path, times_fn, &tm);
    get_stats(rw, &st);
    ok(tm.n == 3 && tm.status[0] == 500 && tm.status[1] == 500 &&
           tm.status[2] == 200,
       "retry 500: two failures, then delivered");
    ok(tm.n == 3 && tm.t[1] - tm.t[0] >= 45 && tm.t[2] - tm.t[1] >= 95 &&
           tm.t[2] - tm.t[0] < 1000,
       "retry 500: backoff 50 ms then 100 ms");
    printf("# gaps %lld %lld ms\n", (long long)(tm.t[1] - tm.t[0]),
           (long long)(tm.t[2] - tm.t[1]));
    ok(st.samples_sent == 2 && st.samples_retried == 4 &&
           st.samples_failed == 0 && st.inflight == 0 &&
           st.last_status == 500 && strstr(st.last_error, "500") != NULL,
       "retry 500: counters (retried counts samples per retry)");
    ps_remote_write_free(rw);
}

static void test_429(struct ps_engine *eng)
{
    const char *names[] = {"x", "y"};
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;
    struct times tm;

    opts_for(&o, "/flaky429/1/on");
    o.queue.retry_on_http_429 = 1;
    rw = mk(eng, &o);
    if (rw != NULL) {
        scrape(ps_remote_write_appender(rw), names, 2, 1000, 1);
        wait_requests(eng, "/flaky429/1/on", 2, 2000);
        pump(eng, 50);
        get_stats(rw, &st);
        ok(n_requests("/flaky429/1/on") == 2 && st.samples_sent == 2 &&
               st.samples_retried == 2,
           "429 with retry_on_http_429: retried, delivered");
        ps_remote_write_free(rw);
    }
    opts_for(&o, "/flaky429/1/off");
    rw = mk(eng, &o);
    if (rw != NULL) {
        scrape(ps_remote_write_appender(rw), names, 2, 1000, 1);
        wait_requests(eng, "/flaky429/1/off", 1, 2000);
        pump(eng, 300);
        get_stats(rw, &st);
        ok(n_requests("/flaky429/1/off") == 1 && st.samples_failed == 2 &&
               st.samples_sent == 0 && st.last_status == 429,
           "429 without retry_on_http_429: not retried, failed");
        ps_remote_write_free(rw);
    }
    opts_for(&o, "/retryafter/x");
    o.queue.retry_on_http_429 = 1;
    o.queue.min_backoff_ms = 10;
    rw = mk(eng, &o);
    if (rw != NULL) {
        scrape(ps_remote_write_appender(rw), names, 2, 1000, 1);
        wait_requests(eng, "/retryafter/x", 2, 3000);
        memset(&tm, 0, sizeof(tm));
        each_line('R', "/retryafter/x", times_fn, &tm);
        ok(tm.n == 2 && tm.t[1] - tm.t[0] >= 900,
           "429 honours Retry-After: 1 over a 10 ms backoff");
        printf("# retry after %lld ms\n",
               (long long)(tm.n == 2 ? tm.t[1] - tm.t[0] : -1));
        ps_remote_write_free(rw);
    }
}

static void test_400(struct ps_engine *eng)
{
    const char *path = "/fail400/x";
    const char *names[] = {"x", "y", "z"};
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;

    opts_for(&o, path);
    rw = mk(eng, &o);
    if (rw == NULL) {
        ok(0, "400: created");
        return;
    }
    scrape(ps_remote_write_appender(rw), names, 3, 1000, 1);
    wait_requests(eng, path, 1, 2000);
    pump(eng, 300);
    get_stats(rw, &st);
    ok(n_requests(path) == 1, "400: not retried");
    ok(st.samples_failed == 3 && st.samples_sent == 0 &&
           st.samples_retried == 0 && st.inflight == 0 && st.pending == 0,
       "400: the batch counts as failed");
    ok(st.last_status == 400 &&
           strstr(st.last_error, "400 Bad Request: bad sample: out of order") !=
               NULL &&
           strstr(st.last_error, "second line") == NULL,
       "400: last_error quotes the server's first line");
    printf("# %s\n", st.last_error);
    ps_remote_write_free(rw);
}

static void test_queue_full(struct ps_engine *eng)
{
    const char *path = "/ok/full";
    const char *names[] = {"q"};
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;
    struct text t;
    char want[512];
    size_t k = 0;
    int64_t ts;

    opts_for(&o, path);
    o.queue.capacity = 10;
    o.queue.batch_send_deadline_ms = 10000;
    rw = mk(eng, &o);
    if (rw == NULL) {
        ok(0, "queue full: created");
        return;
    }
    for (ts = 1; ts <= 25; ts++)
        scrape(ps_remote_write_appender(rw), names, 1, ts, (double)ts);
    get_stats(rw, &st);
    ok(st.samples_dropped == 15 && st.pending == 10,
       "queue full: 15 oldest dropped, 10 pending");
    ps_remote_write_flush(rw, 2000, NULL);
    text_of(path, &t);
    k += (size_t)snprintf(want + k, sizeof(want) - k,
                          "S {__name__=\"q\",instance=\"i1\",job=\"t\"}");
    for (ts = 16; ts <= 25; ts++)
        k += (size_t)snprintf(want + k, sizeof(want) - k, " %lld=%lld",
                              (long long)ts, (long long)ts);
    snprintf(want + k, sizeof(want) - k, "\n");
    ok(strcmp(t.s, want) == 0, "queue full: exactly the newest 10 arrive");
    get_stats(rw, &st);
    ok(st.samples_sent == 10 && st.samples_dropped == 15,
       "queue full: sent + dropped = appended");
    ps_remote_write_free(rw);
}

static void test_relabel(struct ps_engine *eng)
{
    const char *path = "/ok/relabel";
    const char *names[] = {"old_metric", "drop_me", "keep_me"};
    struct ps_str src = {"__name__", 8};
    struct ps_relabel_config rc[2];
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;
    struct text t;

    memset(rc, 0, sizeof(rc));
    rc[0].source_labels = &src;
    rc[0].n_source_labels = 1;
    rc[0].regex = (struct ps_str){"drop_.*", 7};
    rc[0].action = (struct ps_str){"drop", 4};
    rc[1].source_labels = &src;
    rc[1].n_source_labels = 1;
    rc[1].regex = (struct ps_str){"old_(.*)", 8};
    rc[1].target_label = (struct ps_str){"__name__", 8};
    rc[1].replacement = (struct ps_str){"new_$1", 6};
    opts_for(&o, path);
    o.write_relabel_configs = rc;
    o.n_write_relabel_configs = 2;
    rw = mk(eng, &o);
    if (rw == NULL) {
        ok(0, "relabel: created");
        return;
    }
    scrape(ps_remote_write_appender(rw), names, 3, 1000, 1);
    scrape(ps_remote_write_appender(rw), names, 3, 2000, 2);
    ps_remote_write_flush(rw, 2000, NULL);
    text_of(path, &t);
    ok(strstr(t.s, "S {__name__=\"new_metric\",instance=\"i1\",job=\"t\"}") !=
               NULL &&
           strstr(t.s, "keep_me") != NULL && strstr(t.s, "drop_me") == NULL &&
           strstr(t.s, "old_metric") == NULL,
       "relabel: renamed, dropped, kept");
    get_stats(rw, &st);
    ok(st.samples_relabel_dropped == 2 && st.samples_sent == 4,
       "relabel: dropped samples counted apart");
    ps_remote_write_free(rw);
}

static void test_rollback(struct ps_engine *eng)
{
    const char *path = "/ok/rollback";
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;
    struct ps_appender *a;
    struct ps_labels ls;
    uint64_t ref = 0;
    int i;
    const char *one[] = {"committed"};
    struct text t;

    opts_for(&o, path);
    rw = mk(eng, &o);
    if (rw == NULL) {
        ok(0, "rollback: created");
        return;
    }
    a = ps_remote_write_appender(rw);
    ps_labels_init(&ls);
    a->vt->begin(a, NULL, NULL);
    for (i = 0; i < 5; i++) {
        mk_labels(&ls, "rolled", i % 2 ? "i1" : "i2");
        a->vt->append(a, 0, &ls, 1000 + i, 1, &ref, NULL);
    }
    a->vt->rollback(a);
    ps_labels_cleanup(&ls);
    ok(ps_remote_write_flush(rw, 1000, NULL) == PS_OK && n_requests(path) == 0,
       "rollback: nothing sent");
    scrape(a, one, 1, 5000, 7);
    ps_remote_write_flush(rw, 2000, NULL);
    text_of(path, &t);
    get_stats(rw, &st);
    ok(n_requests(path) == 1 && t.samples == 1 &&
           strstr(t.s, "rolled") == NULL && st.samples_sent == 1,
       "rollback: the next commit sends only its own sample");
    ps_remote_write_free(rw);
}

static void test_metadata_stale_exemplar(struct ps_engine *eng)
{
    const char *path = "/ok/meta";
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;
    struct ps_appender *a;
    struct ps_labels ls, xl;
    struct ps_metadata md;
    struct ps_exemplar ex;
    uint64_t ref = 0;
    struct text t;
    int64_t end;

    opts_for(&o, path);
    o.metadata.disable = 0;
    o.metadata.send_interval_ms = 100;
    o.send_exemplars = 1;
    rw = mk(eng, &o);
    if (rw == NULL) {
        ok(0, "metadata: created");
        return;
    }
    a = ps_remote_write_appender(rw);
    ps_labels_init(&ls);
    ps_labels_init(&xl);
    a->vt->begin(a, NULL, NULL);
    mk_labels(&ls, "http_requests_total", "i1");
    a->vt->append(a, 0, &ls, 1000, 5, &ref, NULL);
    md = (struct ps_metadata){PS_MTYPE_COUNTER, {"Total.", 6}, {"", 0}};
    a->vt->update_metadata(a, ref, &ls, &md, NULL);
    mk_labels(&ls, "lat_seconds_bucket", "i1");
    a->vt->append(a, 0, &ls, 1000, ps_stale_nan(), &ref, NULL);
    md = (struct ps_metadata){
        PS_MTYPE_HISTOGRAM, {"Latency.", 8}, {"seconds", 7}};
    a->vt->update_metadata(a, ref, &ls, &md, NULL);
    ps_labels_add(&xl, "trace_id", 8, "abc", 3, 0);
    ex = (struct ps_exemplar){&xl, 0.5, 1, 1500};
    a->vt->append_exemplar(a, ref, &ls, &ex, NULL);
    ok(a->vt->commit(a, NULL) == PS_OK, "metadata: committed");
    ps_labels_cleanup(&ls);
    ps_labels_cleanup(&xl);
    end = mono_ms() + 3000;
    do {
        pump(eng, 20);
        get_stats(rw, &st);
    } while ((st.metadata_sent < 2 || st.samples_sent < 2) && mono_ms() < end);
    text_of(path, &t);
    ok(strstr(t.s, "M type=1 family=http_requests_total help=Total. unit=\n") !=
               NULL &&
           strstr(t.s, "M type=3 family=lat_seconds help=Latency. "
                       "unit=seconds\n") != NULL &&
           st.metadata_sent == 2,
       "metadata: sent with its type, family, help and unit");
    ok(strstr(t.s, "lat_seconds_bucket\",instance=\"i1\",job=\"t\"} "
                   "1000=stale ex{trace_id=\"abc\"}:0.5@1500") != NULL,
       "staleness marker sent as-is; exemplar attached");
    if (strstr(t.s, "stale") == NULL)
        printf("# %s", t.s);
    get_stats(rw, &st);
    ok(st.exemplars_sent == 1, "exemplar counted");
    ps_remote_write_free(rw);
}

/* An appender that fails every append: a child with a hard error. */
static int br_begin(struct ps_appender *a, const struct ps_labels *t,
                    struct ps_err *e)
{
    (void)a;
    (void)t;
    (void)e;
    return PS_OK;
}
static int br_append(struct ps_appender *a, uint64_t ref,
                     const struct ps_labels *ls, int64_t t, double v,
                     uint64_t *out, struct ps_err *e)
{
    (void)a;
    (void)ref;
    (void)ls;
    (void)t;
    (void)v;
    (void)out;
    return ps_err_set(e, PS_EIO, "disk on fire");
}
static int br_commit(struct ps_appender *a, struct ps_err *e)
{
    (void)a;
    (void)e;
    return PS_OK;
}
static int br_rollbacks;
static void br_rollback(struct ps_appender *a)
{
    (void)a;
    br_rollbacks++;
}
static void br_free(struct ps_appender *a)
{
    (void)a;
}
static const struct ps_appender_vt br_vt = {
    br_begin, br_append, NULL, NULL, br_commit, br_rollback, br_free};

static void test_fanout(struct ps_engine *eng)
{
    const char *names[] = {"f1", "f2", "f3"};
    struct ps_remote_write_opts o;
    struct ps_remote_write *ra, *rb;
    struct ps_remote_write_stats sa, sb;
    struct ps_appender broken = {&br_vt};
    struct ps_appender *kids[3];
    struct ps_appender_fanout *f = NULL;
    struct ps_appender_fanout_opts fo;
    struct ps_fanout_child_stats cs;
    struct ps_appender *a;
    struct ps_labels ls;
    uint64_t refs[3] = {0, 0, 0};
    char dead[128];
    struct ps_err e;
    int i, rc = PS_OK;
    struct text t;

    opts_for(&o, "/ok/fanA");
    ra = mk(eng, &o);
    opts_for(&o, "/ok/fanB");
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d/dead", closed_port());
    o.url = dead;
    rb = mk(eng, &o);
    if (ra == NULL || rb == NULL) {
        ok(0, "fanout: created");
        ps_remote_write_free(ra);
        ps_remote_write_free(rb);
        return;
    }
    kids[0] = ps_remote_write_appender(ra);
    kids[1] = &broken;
    kids[2] = ps_remote_write_appender(rb);
    fo.children = kids;
    fo.n_children = 3;
    fo.forget_after_ms = 0;
    ps_err_init(&e);
    ok(ps_appender_fanout_new(&f, &fo, &e) == PS_OK, "fanout: created");
    if (f == NULL)
        goto out;
    a = ps_appender_fanout_appender(f);
    ps_labels_init(&ls);
    /* two scrapes; the second passes the refs the first handed out */
    for (int s = 0; s < 2 && rc == PS_OK; s++) {
        rc = a->vt->begin(a, NULL, &e);
        for (i = 0; i < 3 && rc == PS_OK; i++) {
            mk_labels(&ls, names[i], "i1");
            rc =
                a->vt->append(a, refs[i], &ls, 1000 * (s + 1), s, &refs[i], &e);
        }
        if (rc == PS_OK)
            rc = a->vt->commit(a, &e);
    }
    ps_labels_cleanup(&ls);
    ok(rc == PS_OK, "fanout: a failing child does not fail the scrape");
    ok(ps_remote_write_flush(ra, 2000, NULL) == PS_OK,
       "fanout: healthy endpoint drained");
    text_of("/ok/fanA", &t);
    get_stats(ra, &sa);
    ok(t.samples == 6 && sa.samples_sent == 6 && sa.series == 3,
       "fanout: healthy endpoint got every sample, one series per ref");
    ok(ps_remote_write_flush(rb, 300, NULL) == PS_ELIMIT,
       "fanout: unreachable endpoint cannot drain");
    get_stats(rb, &sb);
    ok(sb.samples_sent == 0 && sb.samples_retried > 0 && sb.inflight > 0 &&
           strstr(sb.last_error, "connection refused") != NULL,
       "fanout: unreachable endpoint retries, counted");
    ps_appender_fanout_child_stats(f, 1, &cs);
    ok(cs.errors == 2 && strstr(cs.last_error, "disk on fire") != NULL &&
           br_rollbacks == 2,
       "fanout: the broken child's errors are recorded, it is rolled back");
    ps_appender_fanout_child_stats(f, 0, &cs);
    ok(cs.errors == 0 && cs.commits == 2, "fanout: healthy child committed");
    ps_appender_fanout_free(f);

    /* every child failing fails the scrape */
    kids[0] = &broken;
    fo.n_children = 1;
    f = NULL;
    if (ps_appender_fanout_new(&f, &fo, &e) == PS_OK) {
        const char *one[] = {"x"};
        ok(scrape(ps_appender_fanout_appender(f), one, 1, 1000, 1) == PS_EIO,
           "fanout: when every child fails, the error is returned");
        ps_appender_fanout_free(f);
    }
out:
    ps_remote_write_free(ra);
    ps_remote_write_free(rb);
}

/* Idle series are forgotten; their old refs fall back to the labels. */
static void test_forget(struct ps_engine *eng)
{
    const char *path = "/ok/forget";
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;
    struct ps_appender *a;
    struct ps_labels ls;
    uint64_t ra = 0, rb = 0, ra2 = 0;
    struct text t;

    opts_for(&o, path);
    o.series_ttl_ms = 1000;
    rw = mk(eng, &o);
    if (rw == NULL) {
        ok(0, "forget: created");
        return;
    }
    a = ps_remote_write_appender(rw);
    ps_labels_init(&ls);
    a->vt->begin(a, NULL, NULL);
    mk_labels(&ls, "old", "i1");
    a->vt->append(a, 0, &ls, 1000, 1, &ra, NULL);
    a->vt->commit(a, NULL);
    ps_remote_write_flush(rw, 2000, NULL);
    a->vt->begin(a, NULL, NULL);
    mk_labels(&ls, "new", "i1");
    a->vt->append(a, 0, &ls, 3000, 1, &rb, NULL);
    a->vt->commit(a, NULL);
    get_stats(rw, &st);
    ok(st.series == 1, "forget: a series idle for longer than the ttl goes");
    a->vt->begin(a, NULL, NULL);
    mk_labels(&ls, "old", "i1");
    a->vt->append(a, ra, &ls, 3500, 2, &ra2, NULL);
    a->vt->commit(a, NULL);
    ps_remote_write_flush(rw, 2000, NULL);
    text_of(path, &t);
    ok(ra2 != 0 && ra2 != ra &&
           strstr(t.s, "S {__name__=\"old\",instance=\"i1\",job=\"t\"} "
                       "3500=2\n") != NULL,
       "forget: a stale ref falls back to the labels, with a new ref");
    ps_labels_cleanup(&ls);
    ps_remote_write_free(rw);
}

/* ---- resharding ---------------------------------------------------------- */

#define RS_SERIES 20

static const char *const rs_names[RS_SERIES] = {
    "s0",  "s1",  "s2",  "s3",  "s4",  "s5",  "s6",  "s7",  "s8",  "s9",
    "s10", "s11", "s12", "s13", "s14", "s15", "s16", "s17", "s18", "s19"};

/* What arrived per series, in arrival order: a request carrying later
 * samples of a series can only start once the earlier one was answered,
 * and the receiver reports before it answers. */
struct seen {
    int64_t last[RS_SERIES];
    long count[RS_SERIES], total;
    int bad;  /* a timestamp not above the previous one: reordered or twice */
    int gaps; /* timestamps skipped */
};

static void seen_fn(const char *line, size_t n, void *ud)
{
    struct seen *sn = ud;
    const char *p, *end = line + n;
    char path[128];
    int st, off = 0, idx;

    if (sscanf(line, "D %127s %d %n", path, &st, &off) < 2 || st >= 300)
        return;
    p = line + off;
    if (sscanf(p, "S {__name__=\"s%d\"", &idx) != 1 || idx < 0 ||
        idx >= RS_SERIES || (p = memchr(p, '}', (size_t)(end - p))) == NULL) {
        sn->bad++;
        return;
    }
    for (p++; p < end && *p == ' ';) {
        long long tt;
        double vv;
        int used = 0;
        if (sscanf(p, " %lld=%lf%n", &tt, &vv, &used) != 2)
            break;
        if (tt <= sn->last[idx] || vv != (double)tt)
            sn->bad++;
        else if (tt > sn->last[idx] + 1)
            sn->gaps++;
        sn->last[idx] = tt;
        sn->count[idx]++;
        sn->total++;
        p += used;
    }
}

/* The test owns the report from here: earlier tests are done with it. */
static void rx_reset(void)
{
    drain();
    rx_len = 0;
    rx[0] = '\0';
}

/* Fast resharding (every interval_ms) on 20-sample requests; the queue is
 * large enough never to drop. The 150 ms batch deadline makes the "remote
 * fails" window (2 x deadline) longer than the light load's period. */
static struct ps_remote_write *mk_resharding(struct ps_engine *eng,
                                             const char *path, long interval_ms)
{
    struct ps_remote_write_opts o;

    opts_for(&o, path);
    o.queue.min_shards = 1;
    o.queue.max_shards = 8;
    o.queue.max_samples_per_send = 20;
    o.queue.capacity = 20000;
    o.queue.batch_send_deadline_ms = 150;
    o.reshard_interval_ms = interval_ms;
    return mk(eng, &o);
}

/* Commits one sample per series every period_ms for ms (or until
 * stop(st) says so); returns the last timestamp used. */
static int64_t rs_load(struct ps_engine *eng, struct ps_remote_write *rw,
                       int64_t ts, long period_ms, long ms, unsigned *peak,
                       int (*stop)(const struct ps_remote_write_stats *))
{
    int64_t end = mono_ms() + ms;
    struct ps_remote_write_stats st;

    while (mono_ms() < end) {
        ts++;
        scrape(ps_remote_write_appender(rw), rs_names, RS_SERIES, ts,
               (double)ts);
        pump(eng, period_ms);
        get_stats(rw, &st);
        if (peak != NULL && st.shards > *peak)
            *peak = st.shards;
        if (stop != NULL && stop(&st))
            break;
    }
    return ts;
}

static int at_one_shard(const struct ps_remote_write_stats *st)
{
    return st->shards == 1;
}

/*
 * A receiver answering after 20 ms: one shard sends at most ~1000 samples/s
 * in 20-sample requests. 4000 samples/s must grow the shards; one commit
 * every 200 ms (each shard then busy ~10-25 % of the time, even on a slow
 * machine or under ASan) must shrink them again. Every sample of every
 * series arrives exactly once and in order across the reshards.
 */
static void test_reshard(struct ps_engine *eng)
{
    const char *path = "/slow/20/rs";
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;
    static struct seen sn;
    unsigned peak = 0, grown;
    uint64_t grow_reshards;
    int64_t ts = 0, t0;
    int i, complete = 1;

    rx_reset();
    rw = mk_resharding(eng, path, 100);
    if (rw == NULL) {
        ok(0, "reshard: created");
        return;
    }
    get_stats(rw, &st);
    ok(st.shards == 1 && st.desired_shards == 1 && st.reshards == 0,
       "reshard: starts at min_shards");
    ts = rs_load(eng, rw, ts, 5, 1500, &peak, NULL);
    get_stats(rw, &st);
    grown = st.shards;
    grow_reshards = st.reshards;
    printf("# heavy: %lld samples, peak %u shards, now %u (desired %u), "
           "%llu reshards, pending %zu\n",
           (long long)ts * RS_SERIES, peak, st.shards, st.desired_shards,
           (unsigned long long)st.reshards, st.pending);
    ok(peak > 1 && grown > 1 && st.reshards >= 1 && st.samples_dropped == 0,
       "reshard: a slow receiver and a high input rate grow the shards");
    t0 = mono_ms();
    ts = rs_load(eng, rw, ts, 200, 6000, NULL, at_one_shard);
    get_stats(rw, &st);
    printf("# light: after %lld ms %u shards (desired %u), %llu reshards\n",
           (long long)(mono_ms() - t0), st.shards, st.desired_shards,
           (unsigned long long)st.reshards);
    ok(st.shards < grown && st.reshards > grow_reshards,
       "reshard: the shards shrink when the load falls");
    ok(ps_remote_write_flush(rw, 5000, NULL) == PS_OK, "reshard: flushed");
    memset(&sn, 0, sizeof(sn));
    each_line('D', path, seen_fn, &sn);
    for (i = 0; i < RS_SERIES; i++)
        if (sn.count[i] != ts || sn.last[i] != ts)
            complete = 0;
    ok(complete && sn.bad == 0 && sn.gaps == 0,
       "reshard: every sample of every series arrives once, in order");
    if (!complete || sn.bad || sn.gaps)
        printf("# s0: %ld of %lld, last %lld; bad %d gaps %d\n", sn.count[0],
               (long long)ts, (long long)sn.last[0], sn.bad, sn.gaps);
    get_stats(rw, &st);
    ok(st.samples_sent == (uint64_t)(ts * RS_SERIES) &&
           st.samples_dropped == 0 && st.samples_failed == 0 &&
           st.pending == 0 && st.inflight == 0,
       "reshard: sent == committed, nothing dropped or failed");
    ps_remote_write_free(rw);
}

/* Prometheus does not reshard while sends fail: neither do we. */
static void test_reshard_failing(struct ps_engine *eng)
{
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;

    rx_reset();
    rw = mk_resharding(eng, "/flaky500/100000/rs", 50);
    if (rw == NULL) {
        ok(0, "reshard while failing: created");
        return;
    }
    rs_load(eng, rw, 0, 5, 600, NULL, NULL);
    get_stats(rw, &st);
    ok(st.shards == 1 && st.reshards == 0 && st.samples_retried > 0,
       "reshard: not while the remote fails");
    ps_remote_write_free(rw);
}

/*
 * Reshards meeting allocation failures: under load, windows of 120 ms in
 * which every allocation after the k-th fails (k = 0..7), each long enough
 * for two reshard ticks. A failed reshard keeps the old shards; what the
 * failures cost elsewhere is counted. Nothing arrives twice or out of
 * order, and sent + failed + dropped == committed.
 */
static void test_reshard_alloc(struct ps_engine *eng)
{
    const char *path = "/slow/20/rsalloc";
    struct ps_remote_write *rw;
    struct ps_remote_write_stats st;
    static struct seen sn;
    int64_t ts = 0;
    long k;

    rx_reset();
    rw = mk_resharding(eng, path, 50);
    if (rw == NULL) {
        ok(0, "reshard alloc: created");
        return;
    }
    for (k = 0; k < 8; k++) {
        ts = rs_load(eng, rw, ts, 5, 150, NULL, NULL);
        ps_alloc_fail_after(k);
        pump(eng, 120);
        ps_alloc_fail_after(-1);
    }
    ps_remote_write_flush(rw, 5000, NULL);
    get_stats(rw, &st);
    memset(&sn, 0, sizeof(sn));
    each_line('D', path, seen_fn, &sn);
    printf("# %llu reshards, %u shards; sent %llu failed %llu dropped %llu; "
           "last error: %s\n",
           (unsigned long long)st.reshards, st.shards,
           (unsigned long long)st.samples_sent,
           (unsigned long long)st.samples_failed,
           (unsigned long long)st.samples_dropped, st.last_error);
    ok(sn.bad == 0 && (uint64_t)sn.total == st.samples_sent &&
           st.samples_sent + st.samples_failed + st.samples_dropped ==
               (uint64_t)(ts * RS_SERIES) &&
           st.pending == 0 && st.inflight == 0,
       "reshard: allocation failures: nothing twice or reordered, "
       "every sample accounted for");
    ps_remote_write_free(rw);
}

/* free with a transfer in flight; free after the engine is gone */
static void test_free(struct ps_engine *eng)
{
    const char *names[] = {"a"};
    struct ps_remote_write_opts o;
    struct ps_remote_write *rw;
    struct ps_engine *e2 = NULL;

    opts_for(&o, "/ok/free");
    o.queue.max_samples_per_send = 1;
    rw = mk(eng, &o);
    if (rw != NULL) {
        scrape(ps_remote_write_appender(rw), names, 1, 1000, 1);
        ps_engine_step(eng, 0, NULL);
        ps_appender_free(ps_remote_write_appender(rw));
    }
    ok(rw != NULL, "free: with a request in flight");
    if (ps_engine_new(&e2, NULL, NULL) == PS_OK) {
        opts_for(&o, "/ok/free2");
        o.queue.batch_send_deadline_ms = 10000;
        o.metadata.disable = 0;
        rw = mk(e2, &o);
        if (rw != NULL)
            scrape(ps_remote_write_appender(rw), names, 1, 1000, 1);
        ps_engine_free(e2);
        ps_remote_write_free(rw);
        ok(rw != NULL, "free: after the engine was freed");
    }
}

/*
 * Every allocation failure is an error return or a counted failure; no
 * crash, no leak. Run n fails every allocation after the first n, from
 * engine creation through a first short flush; a second flush without
 * failures then settles what was committed: sent + failed == committed.
 */
static void test_alloc_failures(void)
{
    const char *names[] = {"m1", "m2", "m3"};
    struct ps_remote_write_opts o;
    long n;
    int bad = 0, done = 0, injected = 0;

    opts_for(&o, "/ok/alloc");
    o.metadata.disable = 0;
    o.metadata.send_interval_ms = 10;
    for (n = 0; n < 400 && !done; n++) {
        struct ps_engine *eng = NULL;
        struct ps_remote_write *rw = NULL;
        struct ps_appender *a;
        struct ps_labels ls;
        struct ps_metadata md = {PS_MTYPE_GAUGE, {"h", 1}, {"", 0}};
        int rc, i, committed = 0, inj;
        uint64_t ref;

        ps_labels_init(&ls);
        mk_labels(&ls, "m0", "i1"); /* allocated before the countdown */
        ps_alloc_fail_after(n);
        rc = ps_engine_new(&eng, NULL, NULL);
        if (rc == PS_OK)
            rc = ps_remote_write_new(&rw, eng, &o, NULL);
        if (rc == PS_OK) {
            a = ps_remote_write_appender(rw);
            rc = a->vt->begin(a, NULL, NULL);
            for (i = 0; i < 3 && rc == PS_OK; i++) {
                ps_labels_clear(&ls);
                ps_labels_add(&ls, "__name__", 8, names[i], 2, 0);
                ref = 0;
                rc = a->vt->append(a, 0, &ls, 1000, i, &ref, NULL);
                if (rc == PS_OK)
                    rc = a->vt->update_metadata(a, ref, &ls, &md, NULL);
            }
            if (rc == PS_OK)
                rc = a->vt->commit(a, NULL);
            else
                a->vt->rollback(a);
            committed = rc == PS_OK;
            /* sending under the same countdown */
            ps_remote_write_flush(rw, 60, NULL);
        }
        inj = ps_alloc_fail_after(-1) > n;
        injected += inj;
        if (rc > 0 || (rc < 0 && !inj)) {
            printf("# n=%ld: returned %d\n", n, rc);
            bad++;
        }
        if (rw != NULL) {
            struct ps_remote_write_stats st;
            ps_remote_write_flush(rw, 2000, NULL);
            ps_remote_write_stats(rw, &st);
            if (st.pending != 0 || st.inflight != 0 ||
                (committed && st.samples_sent + st.samples_failed != 3) ||
                (!inj && st.samples_sent != 3)) {
                printf("# n=%ld: sent %llu failed %llu pending %zu "
                       "inflight %zu\n",
                       n, (unsigned long long)st.samples_sent,
                       (unsigned long long)st.samples_failed, st.pending,
                       st.inflight);
                bad++;
            }
            if (!inj)
                done = 1;
        }
        ps_remote_write_free(rw);
        ps_engine_free(eng);
        ps_labels_cleanup(&ls);
    }
    printf("# allocation failures injected in %d runs; clean at n=%ld\n",
           injected, n - 1);
    ok(done && bad == 0 && injected > 5,
       "allocation failures: errors or counted failures, then a clean run");
}

int main(void)
{
    struct ps_engine *eng = NULL;
    struct ps_err e;

    signal(SIGPIPE, SIG_IGN);
    if (start_server() != 0) { /* fork first: nothing allocated yet */
        printf("not ok 1 - could not start the receiver\n1..1\n");
        return 1;
    }
    ps_err_init(&e);
    ok(ps_http_global_init(&e) == PS_OK, "curl global init");
    if (ps_engine_new(&eng, NULL, &e) == PS_OK) {
        test_config(eng);
        test_headers(eng);
        test_batch_size(eng);
        test_deadline(eng);
        test_order(eng);
        test_retry_500(eng);
        test_429(eng);
        test_400(eng);
        test_queue_full(eng);
        test_relabel(eng);
        test_rollback(eng);
        test_metadata_stale_exemplar(eng);
        test_fanout(eng);
        test_forget(eng);
        test_reshard(eng);
        test_reshard_failing(eng);
        test_reshard_alloc(eng);
        test_free(eng);
    } else {
        ok(0, "engine created");
    }
    ps_engine_free(eng);
    test_alloc_failures();
    stop_server();
    ps_http_global_cleanup();
    return done_testing();
}
