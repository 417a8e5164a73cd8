/*
 * spec/c/test_http.c: ps_timer, ps_http and ps_engine. TAP output.
 *
 * The HTTP fixture is a forked child listening on 127.0.0.1 (ephemeral
 * port) that runs one thread per connection and serves canned responses by
 * path. It is forked first thing, before anything is allocated or any
 * thread exists; it stops when the test closes its control pipe (then
 * shuts down, joins and closes every connection), or is killed after 30 s
 * by its own alarm; the test reaps it.
 */
#include "ps_core.h"
#include "ps_engine.h"
#include "ps_http.h"
#include "ps_timer.h"
#include "testlib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ====================================================================== */
/* The fixture server (runs in the forked child).                          */
/* ====================================================================== */

#define METRICS "# HELP up ok\n# TYPE up gauge\nup 1\n"
#define BASIC_USER "promuser"
#define BASIC_PASS "s3cr3t-pass"
#define BASIC_B64 "cHJvbXVzZXI6czNjcjN0LXBhc3M=" /* promuser:s3cr3t-pass */
#define BEARER "tok-SECRET-123"
#define LIMIT 1024

/* printf '# HELP up ok\n# TYPE up gauge\nup 1\n' | gzip -n -9 | xxd -i */
static const unsigned char gz_metrics[] = {
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03,
    0x53, 0x56, 0xf0, 0x70, 0xf5, 0x09, 0x50, 0x28, 0x2d, 0x50,
    0xc8, 0xcf, 0xe6, 0x52, 0x56, 0x08, 0x89, 0x0c, 0x70, 0x05,
    0x71, 0xd2, 0x13, 0x4b, 0xd3, 0x53, 0xb9, 0x80, 0x0c, 0x43,
    0x2e, 0x00, 0x0f, 0x20, 0xb4, 0x1b, 0x22, 0x00, 0x00, 0x00};

/* 65536 x 'a' | gzip -n -9 | xxd -i: 97 bytes that inflate to 64 KiB */
static const unsigned char gz_big[] = {
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0xed,
    0xc1, 0x81, 0x00, 0x00, 0x00, 0x00, 0x80, 0x20, 0xd6, 0xfd, 0x25,
    0x16, 0xa9, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x6a, 0xff, 0x91, 0x20, 0xc3, 0x00, 0x00, 0x01, 0x00};

/* Sends a whole response; extra is "" or header lines ending in \r\n. */
static void respond(int fd, const char *status, const char *extra,
                    const void *body, size_t len)
{
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                     len, extra);

    write_all(fd, head, (size_t)n);
    write_all(fd, body, len);
}

/* One request on fd: returns 1 to keep the connection, 0 to close it. */
static char big_body[4 * LIMIT]; /* all 'x', filled before any thread */

static int serve_one(int fd, const char *req, int nreq)
{
    char path[256] = "";
    char buf[512];
    const char *auth = strstr(req, "\r\nAuthorization: ");

    sscanf(req, "GET %255s ", path);
    if (strcmp(path, "/metrics") == 0) {
        respond(fd, "200 OK",
                "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
                METRICS, strlen(METRICS));
    } else if (strcmp(path, "/echo") == 0) {
        respond(fd, "200 OK", "Content-Type: text/plain\r\n", req, strlen(req));
    } else if (strcmp(path, "/conn") == 0) {
        int n = snprintf(buf, sizeof(buf), "req %d", nreq);
        respond(fd, "200 OK", "", buf, (size_t)n);
    } else if (strcmp(path, "/gzip") == 0) {
        respond(fd, "200 OK",
                "Content-Type: text/plain\r\nContent-Encoding: gzip\r\n",
                gz_metrics, sizeof(gz_metrics));
    } else if (strcmp(path, "/gzip-corrupt") == 0) {
        respond(fd, "200 OK", "Content-Encoding: gzip\r\n",
                "this is not gzip at all", 23);
    } else if (strcmp(path, "/big-gzip") == 0) {
        respond(fd, "200 OK", "Content-Encoding: gzip\r\n", gz_big,
                sizeof(gz_big));
    } else if (strcmp(path, "/big") == 0 || strcmp(path, "/exact") == 0) {
        size_t n = path[1] == 'b' ? 4 * LIMIT : LIMIT;
        respond(fd, "200 OK", "", big_body, n);
    } else if (strcmp(path, "/404") == 0) {
        respond(fd, "404 Not Found", "", "nope", 4);
    } else if (strcmp(path, "/500") == 0) {
        respond(fd, "500 Internal Server Error", "", "oops " BEARER, 19);
    } else if (strcmp(path, "/slow") == 0) {
        static const char h[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n"
                                "\r\n0123456789";
        struct pollfd p = {fd, POLLIN, 0};
        write_all(fd, h, sizeof(h) - 1);
        poll(&p, 1, 3000); /* the client times out (and hangs up) first */
        return 0;
    } else if (strcmp(path, "/short") == 0) {
        static const char h[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n"
                                "\r\n0123456789";
        write_all(fd, h, sizeof(h) - 1);
        return 0;
    } else if (strcmp(path, "/reset") == 0) {
        static const char h[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n"
                                "\r\n0123456789";
        struct linger lg = {1, 0};
        write_all(fd, h, sizeof(h) - 1);
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)); /* RST */
        return 0;
    } else if (strcmp(path, "/basic") == 0 || strcmp(path, "/bearer") == 0) {
        const char *want = path[2] == 'a'
                               ? "\r\nAuthorization: Basic " BASIC_B64 "\r\n"
                               : "\r\nAuthorization: Bearer " BEARER "\r\n";
        if (auth != NULL && strncmp(auth, want, strlen(want)) == 0)
            respond(fd, "200 OK", "", "authorized", 10);
        else
            respond(fd, "401 Unauthorized", "", "no", 2);
    } else if (strcmp(path, "/redirect-ct") == 0) {
        respond(fd, "301 Moved Permanently",
                "Content-Type: text/plain; version=0.0.4\r\n"
                "Location: /no-ct\r\n",
                "", 0);
    } else if (strcmp(path, "/no-ct") == 0) {
        respond(fd, "200 OK", "", "a 1\n", 4);
    } else if (strcmp(path, "/redirect") == 0) {
        respond(fd, "301 Moved Permanently", "Location: /metrics\r\n", "", 0);
    } else if (strcmp(path, "/loop") == 0) {
        respond(fd, "302 Found", "Location: /loop\r\n", "", 0);
    } else {
        respond(fd, "404 Not Found", "", "unknown path", 12);
    }
    return 1;
}

static void serve_conn(int fd)
{
    serve_heads(fd, serve_one);
}

static int srv_port;

/* ====================================================================== */
/* Timer heap tests.                                                        */
/* ====================================================================== */

struct fired {
    int order[20000];
    int n;
};

struct tctx {
    struct fired *log;
    int id;
    struct ps_timer_heap *h;
    struct ps_timer *other; /* cancelled by cancel_other() */
};

static void log_fire(struct ps_timer *t, void *ud)
{
    struct tctx *c = ud;
    (void)t;
    c->log->order[c->log->n++] = c->id;
}

static void readd_now(struct ps_timer *t, void *ud)
{
    struct tctx *c = ud;
    c->log->order[c->log->n++] = c->id;
    ps_timer_add(c->h, t, t->deadline_ns); /* due again, right away */
}

static void cancel_other(struct ps_timer *t, void *ud)
{
    struct tctx *c = ud;
    (void)t;
    c->log->order[c->log->n++] = c->id;
    ps_timer_cancel(c->h, c->other);
}

/* Checks the heap property and every stored slot. */
static int heap_valid(const struct ps_timer_heap *h)
{
    size_t i;

    for (i = 0; i < h->n; i++) {
        if (h->v[i]->slot != i + 1)
            return 0;
        if (i > 0) {
            const struct ps_timer *p = h->v[(i - 1) / 2], *c = h->v[i];
            if (p->deadline_ns > c->deadline_ns ||
                (p->deadline_ns == c->deadline_ns && p->seq > c->seq))
                return 0;
        }
    }
    return 1;
}

static unsigned long lcg_state = 12345;

static unsigned long lcg(void)
{
    lcg_state = lcg_state * 6364136223846793005UL + 1442695040888963407UL;
    return lcg_state >> 33;
}

#define NMANY 10000

static void test_timers(void)
{
    static struct ps_timer t[NMANY];
    static struct tctx c[NMANY];
    static struct fired log;
    struct ps_timer_heap h;
    uint64_t next = 0;
    int i, sorted, good;
    size_t ran;

    ps_timer_heap_init(&h);
    ok(!ps_timer_next(&h, &next), "timer: empty heap has no next deadline");
    ok(ps_timer_run(&h, 1000) == 0, "timer: running an empty heap is a no-op");

    /* ordering, with FIFO ties */
    log.n = 0;
    for (i = 0; i < 6; i++) {
        static const uint64_t d[6] = {50, 10, 30, 10, 20, 30};
        c[i] = (struct tctx){&log, i, &h, NULL};
        ps_timer_init(&t[i], log_fire, &c[i]);
        ps_timer_add(&h, &t[i], d[i]);
    }
    ok(ps_timer_next(&h, &next) && next == 10, "timer: next is the earliest");
    ran = ps_timer_run(&h, 25);
    ok(ran == 3 && log.order[0] == 1 && log.order[1] == 3 && log.order[2] == 4,
       "timer: due timers run earliest first, ties in FIFO order");
    ok(ps_timer_count(&h) == 3 && !ps_timer_pending(&t[1]) &&
           ps_timer_pending(&t[0]),
       "timer: fired timers are no longer pending");
    ps_timer_run(&h, 100);
    ok(log.n == 6 && log.order[3] == 2 && log.order[4] == 5 &&
           log.order[5] == 0,
       "timer: the rest run in order");

    /* cancel */
    log.n = 0;
    for (i = 0; i < 10; i++) {
        ps_timer_init(&t[i], log_fire, &c[i]);
        c[i] = (struct tctx){&log, i, &h, NULL};
        ps_timer_add(&h, &t[i], (uint64_t)(100 - i));
    }
    for (i = 1; i < 10; i += 2)
        ps_timer_cancel(&h, &t[i]);
    ps_timer_cancel(&h, &t[1]); /* twice: a no-op */
    good = heap_valid(&h) && ps_timer_count(&h) == 5;
    ps_timer_run(&h, 1000);
    for (i = 0; i < log.n; i++)
        good = good && log.order[i] % 2 == 0;
    ok(good && log.n == 5 && log.order[0] == 8,
       "timer: cancelled timers never run; double cancel is a no-op");

    /* reschedule */
    log.n = 0;
    ps_timer_add(&h, &t[0], 10);
    ps_timer_add(&h, &t[1], 20);
    ps_timer_add(&h, &t[0], 30); /* later */
    ran = ps_timer_run(&h, 25);
    ok(ran == 1 && log.order[0] == 1, "timer: reschedule to later");
    ps_timer_add(&h, &t[2], 100);
    ps_timer_add(&h, &t[2], 5); /* earlier */
    ran = ps_timer_run(&h, 6);
    ok(ran == 1 && log.order[1] == 2 && ps_timer_count(&h) == 1,
       "timer: reschedule to earlier");
    ps_timer_run(&h, 1000);

    /* a callback re-adding itself at a due time does not spin */
    log.n = 0;
    c[0] = (struct tctx){&log, 7, &h, NULL};
    ps_timer_init(&t[0], readd_now, &c[0]);
    ps_timer_add(&h, &t[0], 1);
    ok(ps_timer_run(&h, 10) == 1 && ps_timer_pending(&t[0]),
       "timer: a timer re-added by its callback waits for the next run");
    ok(ps_timer_run(&h, 10) == 1 && log.n == 2,
       "timer: ... and runs on the next one");
    ps_timer_cancel(&h, &t[0]);

    /* a callback cancels another due timer */
    log.n = 0;
    c[0] = (struct tctx){&log, 0, &h, &t[1]};
    c[1] = (struct tctx){&log, 1, &h, NULL};
    ps_timer_init(&t[0], cancel_other, &c[0]);
    ps_timer_init(&t[1], log_fire, &c[1]);
    ps_timer_add(&h, &t[0], 1);
    ps_timer_add(&h, &t[1], 2);
    ok(ps_timer_run(&h, 10) == 1 && log.n == 1 && !ps_timer_pending(&t[1]),
       "timer: a callback can cancel another due timer");

    /* many timers: random adds, cancels, reschedules; pops stay sorted */
    log.n = 0;
    for (i = 0; i < NMANY; i++) {
        c[i] = (struct tctx){&log, i, &h, NULL};
        ps_timer_init(&t[i], log_fire, &c[i]);
        ps_timer_add(&h, &t[i], 1 + lcg() % 1000000);
    }
    good = heap_valid(&h);
    for (i = 0; i < NMANY; i += 3)
        ps_timer_cancel(&h, &t[i]);
    for (i = 1; i < NMANY; i += 3)
        ps_timer_add(&h, &t[i], 1 + lcg() % 1000000);
    good = good && heap_valid(&h);
    ok(good && ps_timer_count(&h) == NMANY - (NMANY + 2) / 3,
       "timer: 10000 timers: heap and slots stay consistent");
    ran = ps_timer_run(&h, 2000000);
    sorted = 1;
    for (i = 1; i < log.n; i++)
        sorted = sorted &&
                 t[log.order[i - 1]].deadline_ns <= t[log.order[i]].deadline_ns;
    for (i = 0; i < log.n; i++)
        sorted = sorted && log.order[i] % 3 != 0;
    ok(sorted && ran == (size_t)(NMANY - (NMANY + 2) / 3) &&
           ps_timer_count(&h) == 0,
       "timer: 10000 timers fire in deadline order, cancelled ones never");

    /* allocation failure: the timer is left untouched */
    ps_timer_heap_cleanup(&h);
    ps_timer_init(&t[0], log_fire, &c[0]);
    ps_alloc_fail_after(0);
    i = ps_timer_add(&h, &t[0], 5);
    ps_alloc_fail_after(-1);
    ok(i == PS_ENOMEM && !ps_timer_pending(&t[0]) && ps_timer_count(&h) == 0,
       "timer: add fails cleanly with ENOMEM when the array cannot grow");
    ok(ps_timer_add(&h, &t[0], 5) == PS_OK &&
           ps_timer_heap_reserve(&h, 100) == PS_OK,
       "timer: add and reserve succeed again");
    ps_timer_heap_cleanup(&h);
    ok(!ps_timer_pending(&t[0]) && ps_timer_count(&h) == 0,
       "timer: cleanup forgets pending timers");
}

/* ====================================================================== */
/* HTTP tests.                                                              */
/* ====================================================================== */

struct got {
    int done, rc, timed_out;
    long status;
    char ctype[128];
    char body[8192];
    size_t len;
    char err[PS_ERR_MAX];
    uint64_t dur_ns;
    struct ps_engine *stop; /* stop this engine when done */
    int free_self;          /* free the request from the callback */
};

static void on_done(struct ps_http_req *r, const struct ps_http_result *res,
                    void *ud)
{
    struct got *g = ud;
    size_t n = res->body_len < sizeof(g->body) - 1 ? res->body_len
                                                   : sizeof(g->body) - 1;

    g->done++;
    g->rc = res->rc;
    g->status = res->status;
    g->timed_out = res->timed_out;
    g->len = res->body_len;
    g->dur_ns = res->duration_ns;
    memcpy(g->body, res->body, n);
    g->body[n] = '\0';
    snprintf(g->ctype, sizeof(g->ctype), "%s", res->content_type);
    snprintf(g->err, sizeof(g->err), "%s", res->error);
    if (g->stop != NULL)
        ps_engine_stop(g->stop);
    if (g->free_self)
        ps_http_request_free(r);
}

/* Steps until *done (or 5 s pass). */
static void run_until(struct ps_engine *eng, const int *done)
{
    uint64_t end = ps_engine_now_ns() + 5000000000u;

    while (!*done && ps_engine_now_ns() < end)
        if (ps_engine_step(eng, 100, NULL) != PS_OK)
            break;
}

static void url_for(char *b, size_t n, const char *path)
{
    snprintf(b, n, "http://127.0.0.1:%d%s", srv_port, path);
}

/* One scrape of url with options o (o->url is set here). */
static void fetch_url(struct ps_engine *eng, struct ps_http_req_opts *o,
                      const char *url, struct got *g)
{
    struct ps_http_req *r = NULL;
    struct ps_err e;

    memset(g, 0, sizeof(*g));
    o->url = url;
    ps_err_init(&e);
    g->rc = ps_http_request_new(ps_engine_http(eng), &r, o, &e);
    if (g->rc == PS_OK)
        g->rc = ps_http_start(r, on_done, g, &e);
    if (g->rc != PS_OK) {
        memcpy(g->err, e.msg, sizeof(g->err)); /* both PS_ERR_MAX */
        g->done = -1;
    } else {
        run_until(eng, &g->done);
    }
    ps_http_request_free(r);
    o->url = NULL;
}

/* One scrape of path on the fixture server. */
static void fetch(struct ps_engine *eng, struct ps_http_req_opts *o,
                  const char *path, struct got *g)
{
    char url[256];

    url_for(url, sizeof(url), path);
    fetch_url(eng, o, url, g);
}

static int no_secret(const char *s)
{
    return strstr(s, BASIC_PASS) == NULL && strstr(s, BEARER) == NULL &&
           strstr(s, "urlpw") == NULL && strstr(s, "proxypw") == NULL;
}

static void test_http_basic(struct ps_engine *eng)
{
    struct ps_http_req_opts o;
    struct got g;
    const char *accept = "application/openmetrics-text;version=1.0.0;q=0.9,"
                         "text/plain;version=0.0.4;q=0.5";
    const char *extra[] = {"X-Test: yes", NULL};

    memset(&o, 0, sizeof(o));
    fetch(eng, &o, "/metrics", &g);
    ok(g.done == 1 && g.rc == PS_OK && g.status == 200 &&
           strcmp(g.body, METRICS) == 0 && g.len == strlen(METRICS) &&
           g.err[0] == '\0',
       "http: 200 text body");
    ok(strcmp(g.ctype, "text/plain; version=0.0.4; charset=utf-8") == 0,
       "http: Content-Type is reported");
    ok(g.dur_ns > 0 && g.dur_ns < 5000000000u, "http: duration is reported");

    o.accept = accept;
    o.timeout_ms = 1500;
    o.headers = extra;
    fetch(eng, &o, "/echo", &g);
    ok(g.rc == PS_OK && strstr(g.body, "\r\nUser-Agent: promscrape/" PS_VERSION
                                       "\r\n") != NULL,
       "http: User-Agent promscrape/<version>");
    ok(strstr(g.body, "\r\nAccept: application/openmetrics-text;version=1.0.0;"
                      "q=0.9,text/plain;version=0.0.4;q=0.5\r\n") != NULL,
       "http: Accept header sent");
    ok(strstr(g.body, "\r\nAccept-Encoding: gzip\r\n") != NULL,
       "http: Accept-Encoding: gzip by default");
    ok(strstr(g.body, "\r\nX-Prometheus-Scrape-Timeout-Seconds: 1.5\r\n") !=
           NULL,
       "http: X-Prometheus-Scrape-Timeout-Seconds from the timeout");
    ok(strstr(g.body, "\r\nX-Test: yes\r\n") != NULL,
       "http: extra headers sent");
    ok(strncmp(g.body, "GET /echo HTTP/1.1\r\n", 20) == 0,
       "http: plain http uses HTTP/1.1 GET");
    if (g.rc != PS_OK || strstr(g.body, "User-Agent") == NULL)
        diag("echo", g.body);

    o.disable_compression = 1;
    o.timeout_ms = 10000;
    o.user_agent = "custom/1";
    fetch(eng, &o, "/echo", &g);
    ok(g.rc == PS_OK &&
           strstr(g.body, "\r\nAccept-Encoding: identity\r\n") != NULL &&
           strstr(g.body, "gzip") == NULL,
       "http: compression disabled sends Accept-Encoding: identity");
    ok(strstr(g.body, "\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n") !=
               NULL &&
           strstr(g.body, "\r\nUser-Agent: custom/1\r\n") != NULL,
       "http: whole-second timeout header and custom User-Agent");

    memset(&o, 0, sizeof(o));
    fetch(eng, &o, "/gzip", &g);
    ok(g.rc == PS_OK && strcmp(g.body, METRICS) == 0,
       "http: gzip body is decoded");

    o.disable_compression = 1;
    fetch(eng, &o, "/gzip", &g);
    ok(g.rc == PS_OK && g.len == sizeof(gz_metrics),
       "http: with compression disabled the body is passed through");
    o.disable_compression = 0;

    fetch(eng, &o, "/gzip-corrupt", &g);
    ok(g.rc == PS_EPARSE && strncmp(g.err, "gzip: ", 6) == 0,
       "http: corrupt gzip is a gzip error");
    diag("corrupt gzip", g.err);

    fetch(eng, &o, "/404", &g);
    ok(g.rc == PS_EIO && g.status == 404 &&
           strcmp(g.err, "server returned HTTP status 404 Not Found") == 0,
       "http: 404 is an error");
    fetch(eng, &o, "/500", &g);
    ok(g.rc == PS_EIO && g.status == 500 &&
           strcmp(g.err,
                  "server returned HTTP status 500 Internal Server Error") == 0,
       "http: 500 is an error");
    o.body_size_limit = 10;
    fetch(eng, &o, "/500", &g);
    ok(g.rc == PS_EIO && g.len == 0 &&
           strcmp(g.err,
                  "server returned HTTP status 500 Internal Server Error") == 0,
       "http: a non-200 body over the limit still reports the status");
    o.body_size_limit = 0;

    o.timeout_ms = 300;
    fetch(eng, &o, "/slow", &g);
    ok(g.rc == PS_EIO && g.timed_out &&
           strcmp(g.err, "timeout after 300ms") == 0,
       "http: slow body times out: 'timeout after 300ms'");
    ok(g.dur_ns >= 250000000u && g.dur_ns < 2000000000u,
       "http: the timeout fires on time");
    diag("timeout", g.err);
    o.timeout_ms = 0;

    o.body_size_limit = LIMIT;
    fetch(eng, &o, "/big", &g);
    ok(g.rc == PS_ELIMIT &&
           strcmp(g.err, "body size limit of 1024 bytes exceeded") == 0 &&
           g.len <= LIMIT,
       "http: plain body over the limit is aborted");
    fetch(eng, &o, "/big-gzip", &g);
    ok(g.rc == PS_ELIMIT && g.len <= LIMIT,
       "http: gzip body small on the wire but over the limit decompressed");
    fetch(eng, &o, "/exact", &g);
    ok(g.rc == PS_ELIMIT,
       "http: a body of exactly the limit fails, as Prometheus's n >= limit");
    fetch(eng, &o, "/metrics", &g);
    ok(g.rc == PS_OK && strcmp(g.body, METRICS) == 0,
       "http: small body under a limit");
    o.body_size_limit = 0;
    fetch(eng, &o, "/big-gzip", &g);
    ok(g.rc == PS_OK && g.len == 65536, "http: no limit: 64 KiB inflated");

    fetch(eng, &o, "/short", &g);
    ok(g.rc == PS_EIO && strncmp(g.err, "unexpected EOF", 14) == 0,
       "http: connection closed mid-body: unexpected EOF");
    diag("short", g.err);
    fetch(eng, &o, "/reset", &g);
    ok(g.rc == PS_EIO && g.err[0] != '\0',
       "http: connection reset mid-body is an error");
    diag("reset", g.err);

    fetch(eng, &o, "/redirect", &g);
    ok(g.rc == PS_OK && g.status == 200 && strcmp(g.body, METRICS) == 0,
       "http: 301 redirect is followed");
    o.disable_follow_redirects = 1;
    fetch(eng, &o, "/redirect", &g);
    ok(g.rc == PS_EIO && g.status == 301 &&
           strcmp(g.err, "server returned HTTP status 301 Moved Permanently") ==
               0,
       "http: redirects not followed when disabled");
    o.disable_follow_redirects = 0;
    fetch(eng, &o, "/loop", &g);
    ok(g.rc == PS_EIO && strcmp(g.err, "stopped after 10 redirects") == 0,
       "http: redirect loop stops after 10");

    {
        char url[64];
        struct ps_http_req *r = NULL;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics",
                 closed_port());
        memset(&g, 0, sizeof(g));
        o.url = url;
        if (ps_http_request_new(ps_engine_http(eng), &r, &o, NULL) == PS_OK &&
            ps_http_start(r, on_done, &g, NULL) == PS_OK)
            run_until(eng, &g.done);
        ps_http_request_free(r);
        o.url = NULL;
        ok(g.done == 1 && g.rc == PS_EIO &&
               strcmp(g.err, "connection refused") == 0,
           "http: closed port: 'connection refused'");
    }
}

/* The Content-Type is the final response's: none after a redirect whose
 * 301 had one (libcurl 7.88's CURLINFO_CONTENT_TYPE keeps the 301's). */
static void test_http_final_content_type(struct ps_engine *eng)
{
    struct ps_http_req_opts o;
    struct got g;

    memset(&o, 0, sizeof(o));
    fetch(eng, &o, "/redirect-ct", &g);
    ok(g.rc == PS_OK && strcmp(g.body, "a 1\n") == 0 && g.ctype[0] == '\0',
       "redirect: a final response without Content-Type has none");
    fetch(eng, &o, "/redirect", &g);
    ok(g.rc == PS_OK && strncmp(g.ctype, "text/plain", 10) == 0,
       "redirect: the final response's Content-Type");
}

static void test_http_auth(struct ps_engine *eng)
{
    struct ps_http_req_opts o;
    struct got g;
    char url[256];
    struct ps_http_req *r = NULL;
    struct ps_err e;
    int rc;

    memset(&o, 0, sizeof(o));
    o.basic_auth_user = BASIC_USER;
    o.basic_auth_password = BASIC_PASS;
    fetch(eng, &o, "/basic", &g);
    ok(g.rc == PS_OK && strcmp(g.body, "authorized") == 0,
       "auth: basic auth header accepted by the server");
    o.basic_auth_password = "wrong";
    fetch(eng, &o, "/basic", &g);
    ok(g.rc == PS_EIO && g.status == 401, "auth: wrong password is a 401");

    memset(&o, 0, sizeof(o));
    o.auth_credentials = BEARER;
    fetch(eng, &o, "/bearer", &g);
    ok(g.rc == PS_OK && strcmp(g.body, "authorized") == 0,
       "auth: bearer credentials accepted by the server");
    fetch(eng, &o, "/500", &g);
    ok(g.rc == PS_EIO && no_secret(g.err),
       "auth: error for a body echoing the token holds no secret");

    /* errors with every kind of secret configured never show them */
    memset(&o, 0, sizeof(o));
    o.basic_auth_user = BASIC_USER;
    o.basic_auth_password = BASIC_PASS;
    o.timeout_ms = 200;
    {
        static const char *paths[] = {"/slow", "/404", "/gzip-corrupt",
                                      "/short", "/loop"};
        int i, clean = 1;
        for (i = 0; i < 5; i++) {
            fetch(eng, &o, paths[i], &g);
            clean = clean && g.rc != PS_OK && no_secret(g.err);
        }
        ok(clean, "auth: transport errors never contain the password");
    }

    /* URL userinfo and proxy passwords */
    memset(&o, 0, sizeof(o));
    snprintf(url, sizeof(url), "http://u:urlpw@127.0.0.1:%d/x", closed_port());
    o.url = url;
    o.proxy_url = "http://p:proxypw@127.0.0.1:1";
    memset(&g, 0, sizeof(g));
    ps_err_init(&e);
    rc = ps_http_request_new(ps_engine_http(eng), &r, &o, &e);
    if (rc == PS_OK && ps_http_start(r, on_done, &g, NULL) == PS_OK)
        run_until(eng, &g.done);
    ps_http_request_free(r);
    r = NULL;
    ok(g.done == 1 && g.rc == PS_EIO && no_secret(g.err),
       "auth: proxy failure message holds no URL or proxy password");
    diag("proxy", g.err);

    /* redaction itself: a secret that happens to appear in a message */
    memset(&o, 0, sizeof(o));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", closed_port());
    o.url = url;
    o.auth_credentials = "refused";
    memset(&g, 0, sizeof(g));
    if (ps_http_request_new(ps_engine_http(eng), &r, &o, NULL) == PS_OK &&
        ps_http_start(r, on_done, &g, NULL) == PS_OK)
        run_until(eng, &g.done);
    ps_http_request_free(r);
    r = NULL;
    ok(strcmp(g.err, "connection <secret>") == 0,
       "auth: secrets are redacted from error messages");

    /* bad options */
    memset(&o, 0, sizeof(o));
    ps_err_init(&e);
    ok(ps_http_request_new(ps_engine_http(eng), &r, &o, &e) == PS_EINVAL &&
           r == NULL,
       "opts: a URL is required");
    o.url = "http://u:hunter2@[bad";
    ps_err_init(&e);
    ok(ps_http_request_new(ps_engine_http(eng), &r, &o, &e) == PS_EINVAL &&
           strstr(e.msg, "hunter2") == NULL && strstr(e.msg, "invalid url"),
       "opts: an invalid URL is rejected without quoting it");
    diag("bad url", e.msg);
    url_for(url, sizeof(url), "/metrics");
    o.url = url;
    o.basic_auth_user = "a";
    o.auth_credentials = BEARER;
    ps_err_init(&e);
    ok(ps_http_request_new(ps_engine_http(eng), &r, &o, &e) == PS_EINVAL &&
           no_secret(e.msg),
       "opts: basic auth and authorization are exclusive");
    o.basic_auth_user = NULL;
    o.auth_credentials = "tok\r\nX-Evil: 1";
    ok(ps_http_request_new(ps_engine_http(eng), &r, &o, NULL) == PS_EINVAL,
       "opts: header injection is rejected");
    o.auth_credentials = NULL;
    o.tls.min_version = "SSL3";
    ok(ps_http_request_new(ps_engine_http(eng), &r, &o, NULL) == PS_EINVAL,
       "opts: unknown tls min_version is rejected");
    o.tls.min_version = "TLS12";
    o.tls.server_name = "other.example";
    ok(ps_http_request_new(ps_engine_http(eng), &r, &o, NULL) == PS_OK,
       "opts: tls options on a plain http URL are accepted (and unused)");
    ps_http_request_free(r);
}

/* Requests from one client share the connection cache. */
/* Writes s into path (replacing it); 0 on success. */
static int write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "wb");
    int rc;

    if (f == NULL)
        return -1;
    rc = fputs(s, f) < 0;
    return fclose(f) != 0 || rc ? -1 : 0;
}

/* Starts an existing request and runs the engine until it completes. */
static int restart(struct ps_engine *eng, struct ps_http_req *r,
                   struct got *g)
{
    struct ps_err e;
    int rc;

    memset(g, 0, sizeof(*g));
    ps_err_init(&e);
    rc = ps_http_start(r, on_done, g, &e);
    if (rc != PS_OK) {
        memcpy(g->err, e.msg, sizeof(g->err));
        return rc;
    }
    run_until(eng, &g->done);
    return g->rc;
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;

    for (; (hay = strstr(hay, needle)) != NULL; hay++)
        n++;
    return n;
}

/* password_file / credentials_file: re-read when the file changes, as
 * Prometheus reads them per request, on one request reused across
 * transfers (as a scrape loop does). */
static void test_http_secret_files(struct ps_engine *eng)
{
    char dir[] = "/tmp/ps_secret_XXXXXX", path[64], url[256];
    const char *extra[] = {"X-Test: yes", NULL};
    struct ps_http_req_opts o;
    struct ps_http_req *r = NULL;
    struct ps_err e;
    struct got g;
    int rc;

    if (mkdtemp(dir) == NULL) {
        ok(0, "secret files: temporary directory");
        return;
    }
    snprintf(path, sizeof(path), "%s/token", dir);
    ps_err_init(&e);

    /* bearer token file, rotated twice */
    write_file(path, "  " BEARER "\n");
    memset(&o, 0, sizeof(o));
    o.auth_credentials_file = path;
    url_for(url, sizeof(url), "/bearer");
    o.url = url;
    rc = ps_http_request_new(ps_engine_http(eng), &r, &o, &e);
    ok(rc == PS_OK, "secret files: request with credentials_file");
    if (rc == PS_OK) {
        ok(restart(eng, r, &g) == PS_OK && strcmp(g.body, "authorized") == 0,
           "secret files: token read from the file (whitespace trimmed)");
        write_file(path, "rotated-away-token\n");
        ok(restart(eng, r, &g) == PS_EIO && g.status == 401,
           "secret files: a changed file is read again at the next start");
        write_file(path, BEARER);
        ok(restart(eng, r, &g) == PS_OK && g.status == 200,
           "secret files: and again when it changes back");
        unlink(path);
        rc = restart(eng, r, &g);
        ok(rc == PS_EIO && strstr(g.err, path) != NULL &&
               strstr(g.err, "credentials_file") != NULL && no_secret(g.err),
           "secret files: a missing file fails the start, naming the file");
        diag("missing file", g.err);
        write_file(path, BEARER);
        ok(restart(eng, r, &g) == PS_OK,
           "secret files: a file that comes back is used again");
    }
    ps_http_request_free(r);
    r = NULL;

    /* the Authorization line is replaced, the other headers stay */
    write_file(path, "first");
    o.headers = extra;
    url_for(url, sizeof(url), "/echo");
    o.url = url;
    o.auth_type = "Token";
    if (ps_http_request_new(ps_engine_http(eng), &r, &o, &e) == PS_OK) {
        restart(eng, r, &g);
        write_file(path, "second-value");
        restart(eng, r, &g);
        ok(count_of(g.body, "Authorization: ") == 1 &&
               strstr(g.body, "Authorization: Token second-value\r\n") &&
               strstr(g.body, "X-Test: yes\r\n"),
           "secret files: one Authorization line, the new one, extras kept");
        write_file(path, "a\nb");
        ok(restart(eng, r, &g) == PS_EINVAL && strstr(g.err, "line break"),
           "secret files: a line break inside the credentials is refused");
    } else {
        ok(0, "secret files: request for /echo");
    }
    ps_http_request_free(r);
    r = NULL;

    /* basic auth password_file */
    write_file(path, BASIC_PASS "\n");
    memset(&o, 0, sizeof(o));
    o.basic_auth_user = BASIC_USER;
    o.basic_auth_password_file = path;
    url_for(url, sizeof(url), "/basic");
    o.url = url;
    if (ps_http_request_new(ps_engine_http(eng), &r, &o, &e) == PS_OK) {
        ok(restart(eng, r, &g) == PS_OK, "secret files: basic password_file");
        write_file(path, "wrong");
        ok(restart(eng, r, &g) == PS_EIO && g.status == 401,
           "secret files: a rotated password file is used");
    } else {
        ok(0, "secret files: request with password_file");
    }
    ps_http_request_free(r);
    r = NULL;
    o.basic_auth_password = "inline";
    ok(ps_http_request_new(ps_engine_http(eng), &r, &o, &e) == PS_EINVAL,
       "secret files: password and password_file are exclusive");
    ps_http_request_free(r);
    unlink(path);
    rmdir(dir);
}

static void test_http_reuse(struct ps_engine *eng)
{
    struct ps_http_req_opts o;
    struct ps_http_req *r = NULL;
    struct got g;
    char url[256];
    int i, rc, first = 0, n = 0;

    memset(&o, 0, sizeof(o));
    url_for(url, sizeof(url), "/conn");
    o.url = url;
    /* the server counts requests per connection: "req N" */
    fetch(eng, &o, "/conn", &g);
    ok(g.rc == PS_OK && sscanf(g.body, "req %d", &first) == 1,
       "reuse: first request");
    fetch(eng, &o, "/conn", &g);
    ok(g.rc == PS_OK && sscanf(g.body, "req %d", &n) == 1 && n == first + 1,
       "reuse: a second request object reuses the cached connection");

    o.url = url;
    rc = ps_http_request_new(ps_engine_http(eng), &r, &o, NULL);
    for (i = 0; rc == PS_OK && i < 3; i++) {
        memset(&g, 0, sizeof(g));
        rc = ps_http_start(r, on_done, &g, NULL);
        if (rc == PS_OK)
            rc = ps_http_start(r, on_done, &g, NULL) == PS_ESTATE ? PS_OK
                                                                  : PS_EIO;
        run_until(eng, &g.done);
    }
    ok(rc == PS_OK && g.rc == PS_OK && sscanf(g.body, "req %d", &n) == 1 &&
           n == first + 4,
       "reuse: one request restarted 3 times (start while busy: ESTATE)");
    ps_http_request_free(r);
}

/* Many concurrent transfers, cancel, free from the callback, free client
 * with transfers in flight. */
static void test_http_concurrency(struct ps_engine *eng)
{
    enum { N = 10 };
    struct ps_http_req_opts o;
    struct ps_http_req *r[N] = {0};
    static struct got g[N];
    char url[256];
    int i, all = 1, rc = PS_OK;
    uint64_t end;

    memset(&o, 0, sizeof(o));
    url_for(url, sizeof(url), "/metrics");
    o.url = url;
    for (i = 0; i < N && rc == PS_OK; i++) {
        memset(&g[i], 0, sizeof(g[i]));
        rc = ps_http_request_new(ps_engine_http(eng), &r[i], &o, NULL);
        if (rc == PS_OK)
            rc = ps_http_start(r[i], on_done, &g[i], NULL);
    }
    ok(rc == PS_OK && ps_http_inflight(ps_engine_http(eng)) == N,
       "concurrency: 10 transfers in flight");
    end = ps_engine_now_ns() + 5000000000u;
    while (ps_http_inflight(ps_engine_http(eng)) > 0 &&
           ps_engine_now_ns() < end)
        ps_engine_step(eng, 100, NULL);
    for (i = 0; i < N; i++) {
        all = all && g[i].done == 1 && g[i].rc == PS_OK &&
              strcmp(g[i].body, METRICS) == 0;
        ps_http_request_free(r[i]);
        r[i] = NULL;
    }
    ok(all, "concurrency: all 10 complete once, with the right body");

    /* cancel: no callback */
    url_for(url, sizeof(url), "/slow");
    memset(&g[0], 0, sizeof(g[0]));
    rc = ps_http_request_new(ps_engine_http(eng), &r[0], &o, NULL);
    if (rc == PS_OK)
        rc = ps_http_start(r[0], on_done, &g[0], NULL);
    for (i = 0; i < 3; i++)
        ps_engine_step(eng, 20, NULL);
    ps_http_cancel(r[0]);
    ps_http_cancel(r[0]);
    for (i = 0; i < 3; i++)
        ps_engine_step(eng, 10, NULL);
    ok(rc == PS_OK && g[0].done == 0 && !ps_http_busy(r[0]) &&
           ps_http_inflight(ps_engine_http(eng)) == 0,
       "cancel: a cancelled transfer never calls back");
    ps_http_request_free(r[0]);
    r[0] = NULL;

    /* the callback frees its own request */
    url_for(url, sizeof(url), "/metrics");
    memset(&g[0], 0, sizeof(g[0]));
    g[0].free_self = 1;
    rc = ps_http_request_new(ps_engine_http(eng), &r[0], &o, NULL);
    if (rc == PS_OK)
        rc = ps_http_start(r[0], on_done, &g[0], NULL);
    if (rc == PS_OK)
        run_until(eng, &g[0].done);
    else
        ps_http_request_free(r[0]); /* no callback will free it */
    ok(rc == PS_OK && g[0].done == 1 && g[0].rc == PS_OK,
       "callback: a request can free itself from its callback");
    r[0] = NULL;
}

/* The client goes away while a transfer is in flight. */
static void test_http_free_inflight(void)
{
    struct ps_http *h = NULL;
    struct ps_http_req *r = NULL;
    struct ps_http_req_opts o;
    struct got g;
    char url[256];
    int rc;

    memset(&o, 0, sizeof(o));
    memset(&g, 0, sizeof(g));
    url_for(url, sizeof(url), "/slow");
    o.url = url;
    rc = ps_http_new(&h, NULL, NULL);
    if (rc == PS_OK)
        rc = ps_http_request_new(h, &r, &o, NULL);
    if (rc == PS_OK)
        rc = ps_http_start(r, on_done, &g, NULL);
    if (rc == PS_OK) {
        ps_http_wait(h, 20, NULL);
        ps_http_perform(h, NULL);
    }
    ps_http_free(h);
    ok(rc == PS_OK && g.done == 0 && !ps_http_busy(r) &&
           ps_http_start(r, on_done, &g, NULL) == PS_ESTATE,
       "free: freeing the client detaches in-flight requests");
    ps_http_request_free(r);
}

/* ====================================================================== */
/* TLS: a throwaway CA and server cert made with the openssl CLI, served by */
/* `openssl s_server -WWW` (skipped when openssl is missing).               */
/* ====================================================================== */

static char tls_dir[64];
static pid_t tls_pid = -1;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(cmd))
        return 0;
    fflush(stdout);
    return system(cmd) == 0;
}

/* Waits (at most 5 s) until something accepts on 127.0.0.1:port. */
static int wait_listening(int port)
{
    int i;

    for (i = 0; i < 250; i++) {
        struct sockaddr_in a;
        struct timespec ts = {0, 20 * 1000000L};
        int fd = socket(AF_INET, SOCK_STREAM, 0), c;
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons((unsigned short)port);
        c = connect(fd, (struct sockaddr *)&a, sizeof(a));
        close(fd);
        if (c == 0)
            return 1;
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* 1 if the server runs, 0 if it could not be set up, -1 if there is no
 * openssl CLI (the tests are then skipped). */
static int start_tls_server(int *port)
{
    char acc[32];

    snprintf(tls_dir, sizeof(tls_dir), "/tmp/ps_tls_XXXXXX");
    if (!sh("openssl version >/dev/null 2>&1"))
        return -1;
    if (mkdtemp(tls_dir) == NULL)
        return 0;
    if (!sh("cd %s && "
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
            " -nodes -days 2 -subj /CN=promscrape-test-ca"
            " -addext basicConstraints=critical,CA:TRUE"
            " -addext keyUsage=critical,keyCertSign,cRLSign"
            " -keyout ca.key -out ca.crt >/dev/null 2>&1 && "
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
            " -nodes -subj /CN=scrape.test -keyout srv.key -out srv.csr"
            " >/dev/null 2>&1 && "
            "printf 'subjectAltName=DNS:scrape.test\\n' > ext.cnf && "
            "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key"
            " -CAcreateserial -days 2 -extfile ext.cnf -out srv.crt"
            " >/dev/null 2>&1 && "
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
            " -nodes -days 2 -subj /CN=other-ca -keyout other.key"
            " -out other.crt >/dev/null 2>&1 && "
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
            " -nodes -subj /CN=promscrape-client -keyout cli.key -out cli.csr"
            " >/dev/null 2>&1 && "
            "openssl x509 -req -in cli.csr -CA ca.crt -CAkey ca.key"
            " -CAcreateserial -days 2 -out cli.crt >/dev/null 2>&1 && "
            "printf '%s' > metrics.txt",
            tls_dir, "# HELP up ok\\n# TYPE up gauge\\nup 1\\n"))
        return 0;
    *port = closed_port();
    snprintf(acc, sizeof(acc), "127.0.0.1:%d", *port);
    fflush(stdout);
    tls_pid = fork();
    if (tls_pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        alarm(30); /* survives exec: bounds the server's life */
        if (chdir(tls_dir) == 0)
            execlp("openssl", "openssl", "s_server", "-quiet", "-WWW",
                   "-accept", acc, "-cert", "srv.crt", "-key", "srv.key",
                   "-Verify", "1", "-CAfile", "ca.crt", /* mutual TLS */
                   (char *)NULL);
        _exit(127);
    }
    return tls_pid > 0 && wait_listening(*port);
}

static void stop_tls_server(void)
{
    if (tls_pid > 0) {
        kill(tls_pid, SIGTERM);
        waitpid(tls_pid, NULL, 0);
        tls_pid = -1;
    }
    if (tls_dir[0] != '\0' && strncmp(tls_dir, "/tmp/ps_tls_", 12) == 0)
        sh("rm -rf %s", tls_dir);
}

static void test_tls(struct ps_engine *eng)
{
    struct ps_http_req_opts o;
    struct got g;
    char url[128], ca[128], other[128], cert[128], key[128];
    int port = 0, i;

    i = start_tls_server(&port);
    if (i != 1) {
        ok(i < 0, i < 0 ? "tls: # SKIP openssl CLI unavailable"
                        : "tls: could not set up the openssl s_server fixture");
        stop_tls_server();
        return;
    }
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/metrics.txt", port);
    snprintf(ca, sizeof(ca), "%s/ca.crt", tls_dir);
    snprintf(other, sizeof(other), "%s/other.crt", tls_dir);
    snprintf(cert, sizeof(cert), "%s/cli.crt", tls_dir);
    snprintf(key, sizeof(key), "%s/cli.key", tls_dir);

    /* the server requires a client certificate from our CA */
    memset(&o, 0, sizeof(o));
    o.tls.ca_file = ca;
    o.tls.server_name = "scrape.test";
    o.timeout_ms = 3000;
    fetch_url(eng, &o, url, &g);
    ok(g.rc == PS_EIO && g.status == 0 && strncmp(g.err, "tls: ", 5) == 0,
       "tls: without a client certificate the server refuses");
    diag("tls no client cert", g.err);

    memset(&o, 0, sizeof(o));
    o.tls.cert_file = cert;
    o.tls.key_file = key;
    o.tls.ca_file = ca;
    o.tls.server_name = "scrape.test";
    o.timeout_ms = 3000;
    fetch_url(eng, &o, url, &g);
    ok(g.rc == PS_OK && strcmp(g.body, METRICS) == 0,
       "tls: client cert + CA file + server_name (cert for another name)");
    if (g.rc != PS_OK)
        diag("tls", g.err);

    o.tls.min_version = "TLS13";
    fetch_url(eng, &o, url, &g);
    ok(g.rc == PS_OK, "tls: min_version TLS13");
    o.tls.min_version = NULL;

    o.tls.server_name = NULL;
    fetch_url(eng, &o, url, &g);
    ok(g.rc == PS_EIO && strncmp(g.err, "tls: ", 5) == 0,
       "tls: without server_name the name check fails");
    diag("tls name", g.err);

    o.tls.ca_file = other; /* not the system store: slow under valgrind */
    o.tls.server_name = "scrape.test";
    fetch_url(eng, &o, url, &g);
    ok(g.rc == PS_EIO && strncmp(g.err, "tls: ", 5) == 0,
       "tls: an unknown CA fails verification");
    diag("tls ca", g.err);

    o.tls.server_name = NULL;
    o.tls.insecure_skip_verify = 1;
    fetch_url(eng, &o, url, &g);
    ok(g.rc == PS_OK && strcmp(g.body, METRICS) == 0,
       "tls: insecure_skip_verify skips verification");

    o.tls.insecure_skip_verify = 0;
    o.tls.ca_file = ca;
    o.tls.server_name = "bad:name";
    ok(ps_http_request_new(ps_engine_http(eng), &(struct ps_http_req *){NULL},
                           &o, NULL) == PS_EINVAL,
       "tls: an invalid server_name is rejected");
    stop_tls_server();
}

/* ====================================================================== */
/* Engine tests.                                                            */
/* ====================================================================== */

struct kick {
    struct ps_engine *eng;
    struct ps_http_req *req;
    struct got *g;
    int fired;
    uint64_t at;
};

static void kick_fire(struct ps_timer *t, void *ud)
{
    struct kick *k = ud;
    (void)t;
    k->fired++;
    k->at = ps_engine_now_ns();
    if (k->req != NULL)
        ps_http_start(k->req, on_done, k->g, NULL);
}

static void *stopper(void *ud)
{
    struct timespec ts = {0, 100 * 1000000L};

    nanosleep(&ts, NULL);
    ps_engine_stop(ud);
    return NULL;
}

static void test_engine(struct ps_engine *eng)
{
    struct ps_timer t;
    struct kick k;
    struct got g;
    struct ps_http_req_opts o;
    char url[256];
    uint64_t t0;
    pthread_t th;
    int rc;

    /* step waits for the next timer, not the full timeout */
    memset(&k, 0, sizeof(k));
    ps_timer_init(&t, kick_fire, &k);
    t0 = ps_engine_now_ns();
    ps_engine_timer_in(eng, &t, 30);
    while (!k.fired && ps_engine_now_ns() - t0 < 3000000000u)
        ps_engine_step(eng, 2000, NULL);
    ok(k.fired == 1 && k.at - t0 >= 30000000u && k.at - t0 < 1000000000u,
       "engine: step wakes for the next timer");

    /* step with nothing to do returns after its timeout */
    t0 = ps_engine_now_ns();
    rc = ps_engine_step(eng, 50, NULL);
    ok(rc == PS_OK && ps_engine_now_ns() - t0 >= 40000000u,
       "engine: idle step waits about its timeout");

    /* a timer starts a scrape; its callback stops run() */
    memset(&o, 0, sizeof(o));
    memset(&g, 0, sizeof(g));
    url_for(url, sizeof(url), "/metrics");
    o.url = url;
    memset(&k, 0, sizeof(k));
    k.g = &g;
    g.stop = eng;
    rc = ps_http_request_new(ps_engine_http(eng), &k.req, &o, NULL);
    ps_timer_init(&t, kick_fire, &k);
    ps_engine_timer_in(eng, &t, 20);
    t0 = ps_engine_now_ns();
    if (rc == PS_OK)
        rc = ps_engine_run(eng, 5000, NULL);
    ok(rc == PS_OK && k.fired == 1 && g.done == 1 && g.rc == PS_OK &&
           ps_engine_now_ns() - t0 < 3000000000u,
       "engine: timer -> scrape -> callback stops run()");
    ps_http_request_free(k.req);

    /* run() for a duration */
    t0 = ps_engine_now_ns();
    rc = ps_engine_run(eng, 120, NULL);
    ok(rc == PS_OK && ps_engine_now_ns() - t0 >= 110000000u &&
           ps_engine_now_ns() - t0 < 2000000000u,
       "engine: run() returns after its duration");

    /* stop from another thread wakes a blocked run */
    t0 = ps_engine_now_ns();
    rc = pthread_create(&th, NULL, stopper, eng);
    if (rc == 0) {
        rc = ps_engine_run(eng, 10000, NULL);
        pthread_join(th, NULL);
    }
    ok(rc == PS_OK && ps_engine_now_ns() - t0 < 3000000000u,
       "engine: ps_engine_stop() from another thread ends run()");

    ps_engine_stop(eng);
    ok(ps_engine_run(eng, 5000, NULL) == PS_OK,
       "engine: stop before run() makes it return at once");
}

/* Allocation failure n = 0, 1, 2...: every failure is an error return. */
static void test_alloc_failures(void)
{
    struct ps_http_req_opts o;
    char url[256];
    long n;
    int errors = 0, bad = 0, succeeded = 0;

    memset(&o, 0, sizeof(o));
    url_for(url, sizeof(url), "/big");
    o.url = url;
    o.accept = "text/plain";
    o.timeout_ms = 2000;
    o.auth_credentials = BEARER;
    for (n = 0; n < 200 && !succeeded; n++) {
        struct ps_engine *eng = NULL;
        struct ps_http_req *r = NULL;
        struct ps_timer t;
        struct got g;
        int rc;

        memset(&g, 0, sizeof(g));
        ps_timer_init(&t, NULL, NULL);
        ps_alloc_fail_after(n);
        rc = ps_engine_new(&eng, NULL, NULL);
        if (rc == PS_OK)
            rc = ps_http_request_new(ps_engine_http(eng), &r, &o, NULL);
        if (rc == PS_OK)
            rc = ps_engine_timer_in(eng, &t, 1000);
        if (rc == PS_OK)
            rc = ps_http_start(r, on_done, &g, NULL);
        if (rc == PS_OK) {
            run_until(eng, &g.done);
            rc = g.rc;
        }
        ps_alloc_fail_after(-1);
        if (rc == PS_OK && g.len == 4 * LIMIT)
            succeeded = 1;
        else if (rc == PS_ENOMEM)
            errors++;
        else
            bad++;
        ps_http_request_free(r);
        ps_engine_free(eng);
    }
    printf("# alloc failures injected: %d, first success at n=%ld\n", errors,
           n - 1);
    ok(succeeded && bad == 0 && errors >= 5,
       "torture: every failed allocation is an ENOMEM return, then success");
}

int main(void)
{
    struct ps_engine *eng = NULL;
    struct ps_err e;
    int rc;

    signal(SIGPIPE, SIG_IGN);
    /* fork the fixture before anything is allocated */
    memset(big_body, 'x', sizeof(big_body));
    srv_port = fixture_start(serve_conn, 30);
    if (srv_port < 0) {
        printf("not ok 1 - could not start the fixture server\n1..1\n");
        return 1;
    }
    ps_err_init(&e);
    ok(ps_http_global_init(&e) == PS_OK, "curl global init");

    test_timers();

    rc = ps_engine_new(&eng, NULL, &e);
    ok(rc == PS_OK, "engine: created");
    if (rc == PS_OK) {
        test_http_basic(eng);
        test_http_auth(eng);
        test_http_final_content_type(eng);
        test_http_secret_files(eng);
        test_http_reuse(eng);
        test_http_concurrency(eng);
        test_tls(eng);
        test_engine(eng);
    }
    ps_engine_free(eng);
    test_http_free_inflight();
    test_alloc_failures();

    fixture_stop();
    ps_http_global_cleanup();
    return done_testing();
}
