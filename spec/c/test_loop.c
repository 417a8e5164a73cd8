/*
 * spec/c/test_loop.c: the scrape engine end to end: manager -> pool ->
 * loop on a real ps_engine, against an HTTP fixture on 127.0.0.1, with an
 * in-test appender that records every begin/append/commit/rollback.
 *
 * The fixture is a forked child (forked first, before anything is
 * allocated, so leak checkers in it see nothing) with one thread per
 * connection; it serves canned bodies by path, some of which change with
 * the number of requests seen on that path. It exits when the test closes
 * its control pipe, or after 30 s on its own (alarm), and is reaped.
 *
 * Intervals are 200 ms so the whole file runs in a few seconds. TAP.
 */
#include "ps_appender.h"
#include "ps_core.h"
#include "ps_engine.h"
#include "ps_http.h"
#include "ps_labels.h"
#include "ps_loop.h"
#include "ps_manager.h"
#include "ps_pool.h"
#include "testlib.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ====================================================================== */
/* The fixture server (runs in the forked child).                          */
/* ====================================================================== */

#define TEXT_CT "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"

static pthread_mutex_t count_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char path[256];
    int n;
} counts[64];

/* Requests seen on this exact path (query included), this one counted. */
static int count_path(const char *path)
{
    int i, n = 0;

    pthread_mutex_lock(&count_mu);
    for (i = 0; i < 64; i++) {
        if (counts[i].path[0] == '\0') {
            snprintf(counts[i].path, sizeof(counts[i].path), "%s", path);
        }
        if (strcmp(counts[i].path, path) == 0) {
            n = ++counts[i].n;
            break;
        }
    }
    pthread_mutex_unlock(&count_mu);
    return n;
}

static void respond(int fd, const char *status, const char *extra,
                    const char *body)
{
    char head[512];
    size_t len = strlen(body);
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                     len, extra);

    write_all(fd, head, (size_t)n);
    write_all(fd, body, len);
}

/* One request on fd; the connection stays open. */
static int serve_one(int fd, const char *req, int nreq)
{
    static char many[16384];
    char path[256] = "", base[256];
    char *q;
    int n;

    sscanf(req, "GET %255s ", path);
    n = count_path(path);
    snprintf(base, sizeof(base), "%s", path);
    q = strchr(base, '?');
    if (q != NULL)
        *q = '\0';
    if (strcmp(base, "/m1") == 0) {
        respond(fd, "200 OK", TEXT_CT,
                "# HELP a An a.\n# TYPE a gauge\na 1\nb{x=\"y\"} 2\n");
    } else if (strcmp(base, "/flip") == 0) {
        respond(fd, "200 OK", TEXT_CT, n == 1 ? "a 1\nb 2\n" : "a 1\n");
    } else if (strcmp(base, "/failsecond") == 0) {
        if (n == 1)
            respond(fd, "200 OK", TEXT_CT, "a 1\n");
        else
            respond(fd, "500 Internal Server Error", "", "oops");
    } else if (strcmp(base, "/two") == 0) {
        respond(fd, "200 OK", TEXT_CT, "a 1\nb 2\n");
    } else if (strcmp(base, "/longlabel") == 0) {
        respond(fd, "200 OK", TEXT_CT,
                "a{abcdefghijkl=\"v\"} 1\nb{x=\"0123456789abcdefghijk\"} 1\n");
    } else if (strcmp(base, "/labels") == 0) {
        respond(fd, "200 OK", TEXT_CT,
                "m{job=\"x\",foo=\"bar\",instance=\"\"} 1\n");
    } else if (strcmp(base, "/ts") == 0) {
        respond(fd, "200 OK", TEXT_CT, "m 5 1000\n");
    } else if (strcmp(base, "/dup") == 0) {
        respond(fd, "200 OK", TEXT_CT, "a 1\na 2\nb 3\n");
    } else if (strcmp(base, "/om") == 0) {
        respond(fd, "200 OK",
                "Content-Type: application/openmetrics-text; "
                "version=1.0.0\r\n",
                "# TYPE a gauge\na 1\n# EOF\n");
    } else if (strcmp(base, "/slow") == 0) {
        struct timespec ts = {0, 500000000L};
        nanosleep(&ts, NULL); /* longer than the scrape timeout */
        respond(fd, "200 OK", TEXT_CT, "a 1\n");
    } else if (strcmp(base, "/json") == 0) {
        respond(fd, "200 OK", "Content-Type: application/json\r\n", "a 1\n");
    } else if (strcmp(base, "/blank") == 0) {
        respond(fd, "200 OK", "", "a 1\n");
    } else if (strcmp(base, "/garbage") == 0) {
        respond(fd, "200 OK", TEXT_CT, "a 1\n{{{ nope\n");
    } else if (strcmp(base, "/many") == 0) {
        size_t off = 0;
        int i;
        for (i = 0; i < 200; i++)
            off += (size_t)snprintf(many + off, sizeof(many) - off,
                                    "s{i=\"%d\"} %d\n", i, i);
        respond(fd, "200 OK", TEXT_CT, many);
    } else {
        respond(fd, "404 Not Found", "", "nope");
    }
    (void)nreq;
    return 1;
}

static void serve_conn(int fd)
{
    serve_heads(fd, serve_one);
}

static int srv_port;

/* ====================================================================== */
/* The recording appender.                                                 */
/* ====================================================================== */

enum ev_kind { EV_BEGIN, EV_APPEND, EV_COMMIT, EV_ROLLBACK };

struct ev {
    enum ev_kind kind;
    char lbl[256]; /* "name{k=v,...}" with job and instance dropped */
    char full[320]; /* every label */
    uint64_t ref_in, ref_out;
    int64_t t;
    double v;
};

struct rec {
    struct ps_appender base;
    struct ev *ev;
    size_t n, cap;
    char known[64][320]; /* full label strings; ref = index + 1 */
    size_t nknown;
    int fail_append; /* return PS_EIO from append */
};

/* Formats a sorted label set; skip_target drops job and instance. */
static void fmt_labels(const struct ps_labels *ls, char *buf, size_t size,
                       int skip_target)
{
    const struct ps_label *nm = ps_labels_get(ls, "__name__", 8);
    size_t off = 0, i;
    int first = 1;

    off += (size_t)snprintf(buf, size, "%.*s{", nm ? (int)nm->value_len : 0,
                            nm ? nm->value : "");
    for (i = 0; i < ls->n && off < size; i++) {
        const struct ps_label *l = &ls->v[i];
        if (l == nm)
            continue;
        if (skip_target &&
            ((l->name_len == 3 && memcmp(l->name, "job", 3) == 0) ||
             (l->name_len == 8 && memcmp(l->name, "instance", 8) == 0)))
            continue;
        off += (size_t)snprintf(buf + off, size - off, "%s%.*s=%.*s",
                                first ? "" : ",", (int)l->name_len, l->name,
                                (int)l->value_len, l->value);
        first = 0;
    }
    if (off < size)
        snprintf(buf + off, size - off, "}");
}

static struct ev *push(struct rec *r, enum ev_kind k)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 256;
        struct ev *n = realloc(r->ev, cap * sizeof(*n));
        if (n == NULL)
            abort();
        r->ev = n;
        r->cap = cap;
    }
    memset(&r->ev[r->n], 0, sizeof(r->ev[0]));
    r->ev[r->n].kind = k;
    return &r->ev[r->n++];
}

static int rec_begin(struct ps_appender *a, const struct ps_labels *t,
                     struct ps_err *e)
{
    (void)t;
    (void)e;
    push((struct rec *)a, EV_BEGIN);
    return PS_OK;
}

static int rec_append(struct ps_appender *a, uint64_t ref,
                      const struct ps_labels *ls, int64_t t, double v,
                      uint64_t *ref_out, struct ps_err *e)
{
    struct rec *r = (struct rec *)a;
    struct ev *x;
    size_t i;

    if (r->fail_append)
        return ps_err_set(e, PS_EIO, "appender broken");
    x = push(r, EV_APPEND);
    fmt_labels(ls, x->lbl, sizeof(x->lbl), 1);
    fmt_labels(ls, x->full, sizeof(x->full), 0);
    x->ref_in = ref;
    x->t = t;
    x->v = v;
    for (i = 0; i < r->nknown; i++)
        if (strcmp(r->known[i], x->full) == 0)
            break;
    if (i == r->nknown && r->nknown < 64)
        snprintf(r->known[r->nknown++], sizeof(r->known[0]), "%s", x->full);
    x->ref_out = i + 1;
    *ref_out = i + 1;
    return PS_OK;
}

static int rec_commit(struct ps_appender *a, struct ps_err *e)
{
    (void)e;
    push((struct rec *)a, EV_COMMIT);
    return PS_OK;
}

static void rec_rollback(struct ps_appender *a)
{
    push((struct rec *)a, EV_ROLLBACK);
}

static void rec_free(struct ps_appender *a)
{
    (void)a;
}

static const struct ps_appender_vt rec_vt = {
    rec_begin, rec_append, NULL, NULL, rec_commit, rec_rollback, rec_free};

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof(*r));
    r->base.vt = &rec_vt;
}

static void rec_cleanup(struct rec *r)
{
    free(r->ev);
    memset(r, 0, sizeof(*r));
}

static size_t count_kind(const struct rec *r, enum ev_kind k)
{
    size_t i, n = 0;

    for (i = 0; i < r->n; i++)
        n += r->ev[i].kind == k;
    return n;
}

/* The last append of lbl (job/instance-free form) at or after event
 * `from`, or NULL. */
static const struct ev *last_append(const struct rec *r, const char *lbl,
                                    size_t from)
{
    size_t i;
    const struct ev *x = NULL;

    for (i = from; i < r->n; i++)
        if (r->ev[i].kind == EV_APPEND && strcmp(r->ev[i].lbl, lbl) == 0)
            x = &r->ev[i];
    return x;
}

static int count_appends(const struct rec *r, const char *lbl, size_t from)
{
    size_t i;
    int n = 0;

    for (i = from; i < r->n; i++)
        n += r->ev[i].kind == EV_APPEND && strcmp(r->ev[i].lbl, lbl) == 0;
    return n;
}

/* ====================================================================== */
/* Helpers.                                                                */
/* ====================================================================== */

static struct ps_engine *eng;

static void step_for(long ms)
{
    uint64_t end = ps_engine_now_ns() + (uint64_t)ms * 1000000u;

    while (ps_engine_now_ns() < end)
        ps_engine_step(eng, 20, NULL);
}

/* Steps until the pool's target i has done n scrapes (or timeout). */
static int wait_scrapes(struct ps_pool *p, size_t i, uint64_t n, long ms)
{
    uint64_t end = ps_engine_now_ns() + (uint64_t)ms * 1000000u;
    struct ps_target_status st;

    while (ps_engine_now_ns() < end) {
        if (ps_pool_target(p, i, &st) == PS_OK && st.scrapes >= n)
            return 1;
        ps_engine_step(eng, 20, NULL);
    }
    return 0;
}

static int stale(double v)
{
    return ps_is_stale_nan(v);
}

/* One group with one target per address-path pair given. */
struct fixture {
    struct ps_manager *m;
    struct rec app;
    struct ps_scrape_config cfg;
    struct ps_labels targets[8];
    struct ps_target_group grp;
    char addr[64];
};

static void fx_init(struct fixture *f, const char *job, const char *path)
{
    struct ps_manager_opts o;
    struct ps_err e;

    memset(f, 0, sizeof(*f));
    rec_init(&f->app);
    ps_scrape_config_init(&f->cfg);
    f->cfg.job_name = job;
    f->cfg.metrics_path = path;
    f->cfg.scrape_interval_ms = 200;
    /* timeout == interval (allowed): valgrind on a loaded host can make a
     * loopback scrape slow */
    f->cfg.scrape_timeout_ms = 200;
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", srv_port);
    memset(&o, 0, sizeof(o));
    o.engine = eng;
    o.appender = &f->app.base;
    o.offset_seed = 1;
    ps_err_init(&e);
    if (ps_manager_new(&f->m, &o, &e) != PS_OK)
        printf("# manager: %s\n", e.msg);
}

/* Applies f->cfg and syncs n targets (each "tN" label distinguishes). */
static int fx_start(struct fixture *f, int n)
{
    struct ps_err e;
    int i, rc;

    ps_err_init(&e);
    if (f->m == NULL)
        return PS_ENOMEM; /* fx_init failed */
    rc = ps_manager_apply_config(f->m, NULL, &f->cfg, 1, &e);
    if (rc != PS_OK) {
        printf("# apply: %s\n", e.msg);
        return rc;
    }
    for (i = 0; i < n; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        ps_labels_init(&f->targets[i]);
        rc = ps_labels_add(&f->targets[i], "__address__", 11, f->addr,
                           strlen(f->addr), PS_LABELS_COPY);
        if (rc == PS_OK && n > 1)
            rc = ps_labels_add(&f->targets[i], "t", 1, v, strlen(v),
                               PS_LABELS_COPY);
        if (rc != PS_OK)
            return rc;
    }
    f->grp.source = "test";
    f->grp.targets = f->targets;
    f->grp.n_targets = (size_t)n;
    rc = ps_manager_sync(f->m, f->cfg.job_name, &f->grp, 1, &e);
    if (rc != PS_OK)
        printf("# sync: %s\n", e.msg);
    return rc;
}

static struct ps_pool *fx_pool(struct fixture *f)
{
    return ps_manager_pool(f->m, f->cfg.job_name);
}

static void fx_free(struct fixture *f)
{
    size_t i;

    ps_manager_free(f->m);
    for (i = 0; i < 8; i++)
        ps_labels_cleanup(&f->targets[i]);
    rec_cleanup(&f->app);
}

static void status(struct fixture *f, struct ps_target_status *st)
{
    memset(st, 0, sizeof(*st));
    st->last_error = ""; /* if the target is gone (spec/torture.sh) */
    ps_pool_target(fx_pool(f), 0, st);
}

/* fx_start(), plus ok(desc) when desc is given. When the start fails (out
 * of memory: only under spec/torture.sh) it records a failure and frees f,
 * and returns 0: the test stops there, as it would dereference NULLs. */
static int fx_ready(struct fixture *f, int n, const char *desc)
{
    int rc = fx_start(f, n);

    if (desc != NULL || rc != PS_OK)
        ok(rc == PS_OK, desc != NULL ? desc : "fixture started");
    if (rc != PS_OK)
        fx_free(f);
    return rc == PS_OK;
}

/* ====================================================================== */
/* Tests.                                                                  */
/* ====================================================================== */

/* One untimed scrape first: curl's first transfer in a process (lazy
 * init, first connection) can be slow under valgrind. */
static void test_warmup(void)
{
    struct fixture f;

    fx_init(&f, "warmup", "/m1");
    f.cfg.scrape_interval_ms = 2000;
    f.cfg.scrape_timeout_ms = 2000;
    if (!fx_ready(&f, 1, NULL))
        return;
    ok(wait_scrapes(fx_pool(&f), 0, 1, 4000), "warm-up scrape done");
    fx_free(&f);
}

static void test_basic(void)
{
    struct fixture f;
    struct ps_target_status st;
    const struct ev *a, *b, *up, *dur, *ss, *pr, *sa;

    fx_init(&f, "basic", "/m1");
    if (!fx_ready(&f, 1, "basic: config applied, target synced"))
        return;
    ok(ps_pool_ntargets(fx_pool(&f)) == 1, "basic: one active target");
    status(&f, &st);
    ok(st.health == PS_HEALTH_UNKNOWN && st.scrapes == 0,
       "basic: health unknown before the first scrape");
    ok(wait_scrapes(fx_pool(&f), 0, 1, 2000), "basic: scraped once");
    status(&f, &st);
    if (st.last_error[0])
        printf("# first scrape failed: %s\n", st.last_error);
    a = last_append(&f.app, "a{}", 0);
    b = last_append(&f.app, "b{x=y}", 0);
    ok(a && a->v == 1 && b && b->v == 2, "basic: samples appended");
    ok(a && strstr(a->full, "instance=127.0.0.1:") &&
           strstr(a->full, "job=basic"),
       "basic: samples carry job and instance");
    up = last_append(&f.app, "up{}", 0);
    dur = last_append(&f.app, "scrape_duration_seconds{}", 0);
    ss = last_append(&f.app, "scrape_samples_scraped{}", 0);
    pr = last_append(&f.app, "scrape_samples_post_metric_relabeling{}", 0);
    sa = last_append(&f.app, "scrape_series_added{}", 0);
    ok(up && up->v == 1, "basic: up = 1");
    ok(dur && dur->v > 0 && dur->v < 1, "basic: scrape_duration_seconds");
    ok(ss && ss->v == 2 && pr && pr->v == 2 && sa && sa->v == 2,
       "basic: samples scraped / post relabel / series added = 2");
    ok(last_append(&f.app, "scrape_timeout_seconds{}", 0) == NULL,
       "basic: no extra metrics by default");
    ok(a && up && a->t == up->t, "basic: report shares the scrape timestamp");
    ok(count_kind(&f.app, EV_COMMIT) == 1 &&
           count_kind(&f.app, EV_ROLLBACK) == 0,
       "basic: one commit (samples and report in one transaction)");
    status(&f, &st);
    ok(st.health == PS_HEALTH_UP && st.last_error[0] == '\0' &&
           st.last_samples == 2 && st.interval_ms == 200 &&
           st.timeout_ms == 200 && st.last_scrape_ms > 0 &&
           strstr(st.url, "/m1") != NULL,
       "basic: status up, samples, interval, timeout, url");
    /* second scrape: every append carries the cached ref */
    {
        size_t from = f.app.n;
        const struct ev *a2;
        ok(wait_scrapes(fx_pool(&f), 0, 2, 2000), "basic: scraped twice");
        a2 = last_append(&f.app, "a{}", from);
        sa = last_append(&f.app, "scrape_series_added{}", from);
        ok(a2 && a && a2->ref_in == a->ref_out && a2->ref_in != 0,
           "basic: cache hit passes the cached ref");
        ok(sa && sa->v == 0, "basic: no series added on the second scrape");
        ok(a2 && a && a2->t - a->t >= 150 && a2->t - a->t <= 260,
           "basic: scrapes one interval apart");
        if (a2 && a)
            printf("# timestamps %lld -> %lld (delta %lld)\n",
                   (long long)a->t, (long long)a2->t,
                   (long long)(a2->t - a->t));
    }
    fx_free(&f);
}

static void test_extra_metrics(void)
{
    struct fixture f;
    const struct ev *x;

    fx_init(&f, "extra", "/m1");
    f.cfg.extra_scrape_metrics = 1;
    f.cfg.sample_limit = 50;
    if (!fx_ready(&f, 1, NULL))
        return;
    ok(wait_scrapes(fx_pool(&f), 0, 1, 2000), "extra: scraped");
    x = last_append(&f.app, "scrape_timeout_seconds{}", 0);
    ok(x && fabs(x->v - 0.2) < 1e-9, "extra: scrape_timeout_seconds");
    x = last_append(&f.app, "scrape_sample_limit{}", 0);
    ok(x && x->v == 50, "extra: scrape_sample_limit");
    x = last_append(&f.app, "scrape_body_size_bytes{}", 0);
    ok(x && x->v > 20, "extra: scrape_body_size_bytes");
    fx_free(&f);
}

static void test_stale_disappearing(void)
{
    struct fixture f;
    size_t from;
    const struct ev *b, *a;

    fx_init(&f, "flip", "/flip");
    if (!fx_ready(&f, 1, NULL))
        return;
    ok(wait_scrapes(fx_pool(&f), 0, 1, 2000), "flip: first scrape");
    from = f.app.n;
    ok(wait_scrapes(fx_pool(&f), 0, 2, 2000), "flip: second scrape");
    b = last_append(&f.app, "b{}", from);
    a = last_append(&f.app, "a{}", from);
    ok(b && stale(b->v), "flip: vanished series gets a staleness marker");
    ok(a && b && a->t == b->t, "flip: marker at the scrape's timestamp");
    from = f.app.n;
    ok(wait_scrapes(fx_pool(&f), 0, 3, 2000), "flip: third scrape");
    ok(count_appends(&f.app, "b{}", from) == 0, "flip: marked stale once");
    fx_free(&f);
}

static void test_stale_failed(void)
{
    struct fixture f;
    struct ps_target_status st;
    size_t from;
    const struct ev *a, *up;

    fx_init(&f, "failsecond", "/failsecond");
    if (!fx_ready(&f, 1, NULL))
        return;
    ok(wait_scrapes(fx_pool(&f), 0, 1, 2000), "fail: first scrape ok");
    from = f.app.n;
    ok(wait_scrapes(fx_pool(&f), 0, 2, 2000), "fail: second scrape");
    a = last_append(&f.app, "a{}", from);
    up = last_append(&f.app, "up{}", from);
    ok(a && stale(a->v), "fail: failed scrape marks every series stale");
    ok(up && up->v == 0, "fail: up = 0");
    status(&f, &st);
    ok(st.health == PS_HEALTH_DOWN && strstr(st.last_error, "500") != NULL,
       "fail: health down, last_error names the status");
    printf("# last_error: %s\n", st.last_error);
    from = f.app.n;
    ok(wait_scrapes(fx_pool(&f), 0, 3, 2000) &&
           count_appends(&f.app, "a{}", from) == 0,
       "fail: the loop goes on, no second marker");
    fx_free(&f);
}

static void test_stale_removed(void)
{
    struct fixture f;
    struct ps_err e;
    size_t from;
    const struct ev *a, *up;
    uint64_t t0;

    fx_init(&f, "removed", "/m1");
    if (!fx_ready(&f, 1, NULL))
        return;
    ok(wait_scrapes(fx_pool(&f), 0, 1, 2000), "removed: scraped");
    from = f.app.n;
    ps_err_init(&e);
    ok(ps_manager_sync(f.m, "removed", NULL, 0, &e) == PS_OK &&
           ps_pool_ntargets(fx_pool(&f)) == 0 &&
           ps_pool_nretiring(fx_pool(&f)) == 1,
       "removed: target gone, loop retiring");
    t0 = ps_engine_now_ns();
    while (ps_pool_nretiring(fx_pool(&f)) > 0 &&
           ps_engine_now_ns() - t0 < 2000000000u)
        ps_engine_step(eng, 20, NULL);
    ok(ps_pool_nretiring(fx_pool(&f)) == 0, "removed: retired loop freed");
    ok((ps_engine_now_ns() - t0) / 1000000u >= 250,
       "removed: markers wait about two intervals");
    a = last_append(&f.app, "a{}", from);
    up = last_append(&f.app, "up{}", from);
    ok(a && stale(a->v), "removed: end-of-run staleness for the series");
    ok(up && stale(up->v), "removed: and for the report series");
    ok(count_kind(&f.app, EV_COMMIT) >= 2, "removed: committed");
    fx_free(&f);
}

static void test_no_stale_on_close(void)
{
    struct fixture f;
    size_t n, i;
    int stales = 0;

    fx_init(&f, "close", "/m1");
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    n = f.app.n;
    ps_manager_free(f.m);
    f.m = NULL;
    step_for(50);
    for (i = 0; i < f.app.n; i++)
        stales += f.app.ev[i].kind == EV_APPEND && stale(f.app.ev[i].v);
    ok(f.app.n == n && stales == 0, "close: no staleness markers on shutdown");
    fx_free(&f);
}

static void test_limit(const char *job, const char *path, int which,
                       const char *want)
{
    struct fixture f;
    struct ps_target_status st;
    char d[160];
    const struct ev *up;

    fx_init(&f, job, path);
    switch (which) {
    case 0:
        f.cfg.sample_limit = 1;
        break;
    case 1:
        f.cfg.label_limit = 1;
        break;
    case 2:
        f.cfg.label_name_length_limit = 10;
        break;
    default:
        f.cfg.label_value_length_limit = 20; /* instance is shorter */
        break;
    }
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    status(&f, &st);
    snprintf(d, sizeof(d), "%s: scrape fails with \"%s...\"", job, want);
    ok(st.health == PS_HEALTH_DOWN &&
           strncmp(st.last_error, want, strlen(want)) == 0,
       d);
    printf("# last_error: %s\n", st.last_error);
    up = last_append(&f.app, "up{}", 0);
    snprintf(d, sizeof(d), "%s: rolled back, up = 0 committed", job);
    ok(count_kind(&f.app, EV_ROLLBACK) == 1 && up && up->v == 0 &&
           count_kind(&f.app, EV_COMMIT) == 1,
       d);
    if (which == 0) {
        /* Prometheus 3.x caches only appended series: "b", past the
         * limit, is not, so a target exposing millions of series over
         * the limit cannot grow the cache (spec/80: /tiny). */
        size_t n = ps_cache_nseries(ps_loop_cache(ps_pool_loop(fx_pool(&f),
                                                               0)));
        ok(n == 1 + 5, "sample_limit: only the appended series and the 5 "
                       "report series are cached");
        printf("# cached: %zu\n", n);
    }
    fx_free(&f);
}

static void test_honor_labels(void)
{
    struct fixture f;
    const struct ev *m;

    fx_init(&f, "hl_off", "/labels");
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    m = last_append(&f.app, "m{exported_job=x,foo=bar}", 0);
    ok(m != NULL && strstr(m->full, "job=hl_off") &&
           strstr(m->full, "instance=127.0.0.1"),
       "honor_labels false: conflict becomes exported_job, target wins");
    ok(m && strstr(m->full, "exported_instance") == NULL,
       "honor_labels false: empty exposed value is no conflict");
    if (f.app.n > 0 && m == NULL)
        printf("# got %s\n", f.app.ev[1].full);
    fx_free(&f);

    fx_init(&f, "hl_on", "/labels");
    f.cfg.honor_labels = 1;
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    m = NULL;
    {
        size_t i;
        for (i = 0; i < f.app.n; i++)
            if (f.app.ev[i].kind == EV_APPEND &&
                strncmp(f.app.ev[i].full, "m{", 2) == 0)
                m = &f.app.ev[i];
    }
    ok(m && strcmp(m->full, "m{foo=bar,job=x}") == 0,
       "honor_labels true: exposed job kept; empty exposed instance keeps "
       "the target's out");
    if (m)
        printf("# %s\n", m->full);
    fx_free(&f);
}

static void test_honor_timestamps(void)
{
    struct fixture f;
    const struct ev *m;

    fx_init(&f, "ts_on", "/ts");
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    m = last_append(&f.app, "m{}", 0);
    ok(m && m->t == 1000, "honor_timestamps: exposed timestamp used");
    fx_free(&f);

    fx_init(&f, "ts_off", "/ts");
    f.cfg.honor_timestamps = 0;
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    m = last_append(&f.app, "m{}", 0);
    ok(m && m->t > 1000000000000LL, "honor_timestamps false: scrape time");
    fx_free(&f);
}

static void test_duplicates(void)
{
    struct fixture f;
    const struct ev *pr;

    fx_init(&f, "dup", "/dup");
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    ok(count_appends(&f.app, "a{}", 0) == 1,
       "duplicates: a series twice in one scrape is appended once");
    pr = last_append(&f.app, "scrape_samples_post_metric_relabeling{}", 0);
    ok(pr && pr->v == 3 && last_append(&f.app, "up{}", 0)->v == 1,
       "duplicates: counted, not fatal");
    {
        struct ps_target_status st;
        status(&f, &st);
        ok(st.last_duplicates == 1, "duplicates: reported in the status");
    }
    fx_free(&f);
}

static void test_content_types(void)
{
    struct fixture f;
    struct ps_target_status st;

    fx_init(&f, "om", "/om");
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    ok(last_append(&f.app, "a{}", 0) != NULL, "openmetrics body parsed");
    fx_free(&f);

    fx_init(&f, "json", "/json");
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    status(&f, &st);
    ok(st.health == PS_HEALTH_DOWN &&
           strstr(st.last_error, "unsupported Content-Type") != NULL,
       "unsupported content type fails the scrape");
    fx_free(&f);

    fx_init(&f, "blank", "/blank");
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    status(&f, &st);
    ok(st.health == PS_HEALTH_DOWN &&
           strstr(st.last_error, "blank Content-Type") != NULL,
       "blank content type without fallback fails");
    fx_free(&f);

    fx_init(&f, "fallback", "/json");
    f.cfg.fallback_scrape_protocol = "PrometheusText0.0.4";
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    status(&f, &st);
    ok(st.health == PS_HEALTH_UP && last_append(&f.app, "a{}", 0) != NULL,
       "fallback_scrape_protocol parses an unsupported type");
    fx_free(&f);

    fx_init(&f, "garbage", "/garbage");
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    status(&f, &st);
    ok(st.health == PS_HEALTH_DOWN && count_kind(&f.app, EV_ROLLBACK) == 1,
       "parse error mid-body: rollback, up = 0");
    printf("# last_error: %s\n", st.last_error);
    fx_free(&f);
}

/* Metric relabeling runs on misses only: a steady-state scrape of 200
 * series makes almost no allocations (relabeling would allocate output
 * copies per series) and every append carries a cached ref. */
static void test_cache_no_relabel(void)
{
    struct fixture f;
    struct ps_relabel_config rc[1];
    size_t from, i;
    long allocs;
    int refs_ok = 1, relabeled = 1, n = 0;

    memset(rc, 0, sizeof(rc));
    rc[0].target_label.p = "relabeled";
    rc[0].target_label.n = 9;
    rc[0].replacement.p = "yes";
    rc[0].replacement.n = 3;
    fx_init(&f, "cachehit", "/many");
    f.cfg.metric_relabel_configs = rc;
    f.cfg.n_metric_relabel_configs = 1;
    if (!fx_ready(&f, 1, NULL))
        return;
    ok(wait_scrapes(fx_pool(&f), 0, 2, 3000), "cache: two scrapes");
    /* measure the third scrape only */
    from = f.app.n;
    ps_alloc_fail_after(-1);
    ok(wait_scrapes(fx_pool(&f), 0, 3, 3000), "cache: third scrape");
    allocs = ps_alloc_fail_after(-1);
    for (i = from; i < f.app.n; i++) {
        const struct ev *x = &f.app.ev[i];
        if (x->kind != EV_APPEND || strncmp(x->lbl, "s{", 2) != 0)
            continue;
        n++;
        refs_ok &= x->ref_in != 0 && x->ref_in == x->ref_out;
        relabeled &= strstr(x->full, "relabeled=yes") != NULL;
    }
    printf("# %ld ps_ allocations during a 200-series steady scrape\n",
           allocs);
    ok(n == 200 && refs_ok, "cache: every hit passes its cached ref");
    ok(relabeled, "cache: hits keep the relabeled labels");
    ok(allocs < 20, "cache: no per-sample allocation (no relabeling)");
    fx_free(&f);
}

static void test_target_limit(void)
{
    struct fixture f;
    struct ps_target_status st0, st1;

    fx_init(&f, "tlimit", "/m1");
    f.cfg.target_limit = 1;
    if (!fx_ready(&f, 2, NULL))
        return;
    ok(ps_pool_ntargets(fx_pool(&f)) == 2, "target_limit: both active");
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    wait_scrapes(fx_pool(&f), 1, 1, 2000);
    ps_pool_target(fx_pool(&f), 0, &st0);
    ps_pool_target(fx_pool(&f), 1, &st1);
    ok(st0.health == PS_HEALTH_DOWN && st1.health == PS_HEALTH_DOWN &&
           strcmp(st0.last_error, "target_limit exceeded (number of "
                                  "targets: 2, limit: 1)") == 0,
       "target_limit: every target fails with Prometheus's error");
    ok(last_append(&f.app, "a{}", 0) == NULL, "target_limit: no samples");
    fx_free(&f);
}

static void test_reload(void)
{
    struct fixture f;
    struct ps_loop *l0, *l1;
    struct ps_err e;
    size_t from;
    const struct ev *sa;

    fx_init(&f, "reload", "/m1");
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    l0 = ps_pool_loop(fx_pool(&f), 0);
    ps_err_init(&e);
    ok(ps_manager_apply_config(f.m, NULL, &f.cfg, 1, &e) == PS_OK &&
           ps_pool_loop(fx_pool(&f), 0) == l0,
       "reload: unchanged config keeps the same loop");
    f.cfg.sample_limit = 1000;
    ok(ps_manager_apply_config(f.m, NULL, &f.cfg, 1, &e) == PS_OK,
       "reload: changed config applied");
    l1 = ps_pool_loop(fx_pool(&f), 0);
    {
        /* the address may be reused by malloc: a fresh loop has done no
         * scrape yet, the old one had */
        struct ps_target_status st;
        ps_pool_target(fx_pool(&f), 0, &st);
        ok(l1 != NULL && st.scrapes == 0 && ps_pool_ntargets(fx_pool(&f)) == 1,
           "reload: changed config restarts the loop");
    }
    ok(ps_pool_nretiring(fx_pool(&f)) == 0,
       "reload: no end-of-run staleness for a restarted loop");
    from = f.app.n;
    ok(wait_scrapes(fx_pool(&f), 0, 1, 2000), "reload: new loop scrapes");
    sa = last_append(&f.app, "scrape_series_added{}", from);
    ok(sa && sa->v == 0, "reload: the cache was kept (no series added)");
    {
        struct ps_scrape_config bad = f.cfg;
        struct ps_relabel_config r[1];
        memset(r, 0, sizeof(r));
        r[0].action.p = "bogus";
        r[0].action.n = 5;
        bad.relabel_configs = r;
        bad.n_relabel_configs = 1;
        ok(ps_manager_apply_config(f.m, NULL, &bad, 1, &e) == PS_EINVAL &&
               strstr(e.msg, "job 'reload': relabel_configs") != NULL &&
               ps_pool_loop(fx_pool(&f), 0) == l1,
           "reload: a bad rule is an error naming job and list, nothing "
           "changes");
        printf("# %s\n", e.msg);
    }
    ok(ps_manager_apply_config(f.m, NULL, NULL, 0, &e) == PS_OK &&
           ps_manager_npools(f.m) == 0,
       "reload: removed job stops");
    fx_free(&f);
}

static void test_offsets(void)
{
    struct fixture f;
    int64_t lo = INT64_MAX, hi = 0;
    size_t i;

    fx_init(&f, "offsets", "/m1");
    f.cfg.scrape_interval_ms = 400;
    f.cfg.scrape_timeout_ms = 300;
    if (!fx_ready(&f, 6, NULL))
        return;
    for (i = 0; i < 6; i++) {
        struct ps_target_status st;
        wait_scrapes(fx_pool(&f), i, 1, 2000);
        ps_pool_target(fx_pool(&f), i, &st);
        if (st.last_scrape_ms < lo)
            lo = st.last_scrape_ms;
        if (st.last_scrape_ms > hi)
            hi = st.last_scrape_ms;
    }
    printf("# first scrapes spread over %lld ms\n", (long long)(hi - lo));
    ok(hi - lo >= 60, "offsets: targets spread over the interval");
    fx_free(&f);
}

static void test_skipped_ticks(void)
{
    struct fixture f;
    struct ps_target_status st;
    uint64_t before;

    fx_init(&f, "skip", "/m1");
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    status(&f, &st);
    before = st.scrapes;
    {
        /* 3.5 intervals without stepping the engine */
        struct timespec ts = {0, 700000000L};
        nanosleep(&ts, NULL);
    }
    step_for(100);
    status(&f, &st);
    printf("# scrapes %llu -> %llu, skipped %llu\n",
           (unsigned long long)before, (unsigned long long)st.scrapes,
           (unsigned long long)st.skipped_ticks);
    /* a burst would make up all 3 missed ticks at once */
    ok(st.scrapes >= before + 1 && st.scrapes <= before + 2,
       "skip: a late loop scrapes once, no burst");
    ok(st.skipped_ticks >= 2, "skip: missed ticks are counted as skipped");
    fx_free(&f);
}

static void test_align(void)
{
    struct fixture f;
    struct ps_target_status st;
    int64_t phase;

    fx_init(&f, "align", "/m1");
    f.cfg.scrape_align_interval_ms = 200;
    f.cfg.scrape_offset_ms = 50;
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    status(&f, &st);
    phase = st.last_scrape_ms % 200;
    printf("# aligned first scrape at phase %lld ms (want 50)\n",
           (long long)phase);
    ok(st.scrapes >= 1 && phase >= 50 && phase <= 90,
       "scrape_align_interval + scrape_offset: scrape on the wall grid");
    fx_free(&f);
}

static void test_body_limit_timeout(void)
{
    struct fixture f;
    struct ps_target_status st;
    const struct ev *x;

    fx_init(&f, "bodylimit", "/many");
    f.cfg.body_size_limit = 100;
    f.cfg.extra_scrape_metrics = 1;
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    status(&f, &st);
    x = last_append(&f.app, "scrape_body_size_bytes{}", 0);
    ok(st.health == PS_HEALTH_DOWN && x && x->v == -1,
       "body_size_limit: up = 0, scrape_body_size_bytes = -1");
    printf("# last_error: %s\n", st.last_error);
    fx_free(&f);

    fx_init(&f, "timeout", "/slow");
    f.cfg.scrape_interval_ms = 300;
    f.cfg.scrape_timeout_ms = 100;
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    status(&f, &st);
    x = last_append(&f.app, "scrape_duration_seconds{}", 0);
    ok(st.health == PS_HEALTH_DOWN && st.last_error[0] != '\0' && x &&
           x->v >= 0.09 && x->v < 0.4,
       "timeout: up = 0 after about the scrape timeout");
    printf("# last_error: %s\n", st.last_error);
    fx_free(&f);
}

static void test_appender_error(void)
{
    struct fixture f;
    struct ps_target_status st;

    fx_init(&f, "apperr", "/m1");
    f.app.fail_append = 1;
    if (!fx_ready(&f, 1, NULL))
        return;
    wait_scrapes(fx_pool(&f), 0, 1, 2000);
    status(&f, &st);
    ok(st.health == PS_HEALTH_DOWN &&
           strstr(st.last_error, "appender broken") != NULL &&
           count_kind(&f.app, EV_ROLLBACK) >= 1,
       "appender error fails the scrape and rolls back");
    fx_free(&f);
}

static void test_config_errors(void)
{
    struct ps_scrape_config c;
    struct ps_global_config g;
    struct ps_pool_config *pc = NULL;
    struct ps_err e;
    char *fp1 = NULL, *fp2 = NULL;
    static const char *const bad_proto[] = {"Bogus"};

    ps_err_init(&e);
    ps_scrape_config_init(&c);
    c.job_name = "x";
    c.scrape_interval_ms = 1000;
    c.scrape_timeout_ms = 2000;
    ok(ps_pool_config_new(&pc, NULL, &c, &e) == PS_EINVAL &&
           strstr(e.msg, "scrape timeout greater than scrape interval"),
       "config: timeout > interval rejected");
    c.scrape_timeout_ms = 0;
    ps_global_config_init(&g);
    g.scrape_timeout_ms = 5000;
    ok(ps_pool_config_new(&pc, &g, &c, &e) == PS_OK, "config: inherits");
    ok(pc && strstr(ps_pool_config_fingerprint(pc), "iv:1000;to:1000;"),
       "config: global timeout capped at the job interval");
    ps_pool_config_free(pc);
    c.scrape_protocols = bad_proto;
    c.n_scrape_protocols = 1;
    ok(ps_pool_config_new(&pc, NULL, &c, &e) == PS_EINVAL &&
           strstr(e.msg, "Bogus"),
       "config: unknown scrape protocol rejected");
    c.scrape_protocols = NULL;
    c.http_client.basic_auth.username = "u";
    c.http_client.bearer_token = "t";
    ok(ps_pool_config_new(&pc, NULL, &c, &e) == PS_EINVAL,
       "config: two auth methods rejected");
    c.http_client.basic_auth.username = NULL;
    c.http_client.bearer_token = "secret-one";
    ps_scrape_config_fingerprint(NULL, &c, &fp1, &e);
    c.http_client.bearer_token = "secret-two";
    ps_scrape_config_fingerprint(NULL, &c, &fp2, &e);
    ok(fp1 && fp2 && strcmp(fp1, fp2) != 0 && !strstr(fp1, "secret"),
       "config: fingerprint sees secrets only as hashes");
    ps_free(fp1);
    ps_free(fp2);
    {
        char *acc = NULL;
        ps_accept_header(NULL, 0, 0, &acc, &e);
        ok(acc && strcmp(acc, "application/openmetrics-text;version=1.0.0;"
                              "escaping=allow-utf-8;q=0.6,"
                              "application/openmetrics-text;version=0.0.1;"
                              "q=0.5,text/plain;version=1.0.0;escaping=allow-"
                              "utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,"
                              "*/*;q=0.2") == 0,
           "config: default Accept header as Prometheus 3");
        ps_free(acc);
    }
}

/* Fails each allocation of apply_config + sync + a reload in turn: every
 * run returns PS_OK or PS_ENOMEM and frees everything (LSan/valgrind). */
static int torture_once(struct rec *app, int *bad)
{
    struct ps_manager *m = NULL;
    struct ps_manager_opts o;
    struct ps_scrape_config c;
    struct ps_relabel_config rc[1];
    struct ps_param params[1] = {{"module", "x"}};
    struct ps_labels t[2];
    struct ps_target_group g;
    char addr[64];
    int r, i;

    memset(&o, 0, sizeof(o));
    o.engine = eng;
    o.appender = &app->base;
    ps_scrape_config_init(&c);
    c.job_name = "torture";
    c.scrape_interval_ms = 60000;
    c.scrape_timeout_ms = 1000;
    c.params = params;
    c.n_params = 1;
    memset(rc, 0, sizeof(rc));
    rc[0].target_label.p = "x";
    rc[0].target_label.n = 1;
    rc[0].replacement.p = "y";
    rc[0].replacement.n = 1;
    c.relabel_configs = rc;
    c.n_relabel_configs = 1;
    c.metric_relabel_configs = rc;
    c.n_metric_relabel_configs = 1;
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", srv_port);
    for (i = 0; i < 2; i++) {
        ps_labels_init(&t[i]);
        ps_labels_add(&t[i], "__address__", 11, addr, strlen(addr), 0);
    }
    ps_labels_add(&t[1], "t", 1, "1", 1, 0);
    g.source = NULL;
    g.targets = t;
    g.n_targets = 2;
    g.labels = NULL;
    c.static_configs = &g;
    c.n_static_configs = 1;
    r = ps_manager_new(&m, &o, NULL);
    if (r == PS_OK)
        r = ps_manager_apply_config(m, NULL, &c, 1, NULL);
    if (r == PS_OK)
        r = ps_manager_sync(m, "torture", &g, 1, NULL);
    if (r == PS_OK) {
        c.sample_limit = 5; /* changed: every loop restarts */
        r = ps_manager_apply_config(m, NULL, &c, 1, NULL);
    }
    if (r != PS_OK && r != PS_ENOMEM)
        (*bad)++;
    ps_manager_free(m);
    for (i = 0; i < 2; i++)
        ps_labels_cleanup(&t[i]);
    return r;
}

static void test_torture(void)
{
    struct rec app;
    long n, i;
    int bad = 0, r;

    rec_init(&app);
    ps_alloc_fail_after(-1);
    r = torture_once(&app, &bad);
    n = ps_alloc_fail_after(-1);
    ok(r == PS_OK && bad == 0, "torture: the scenario passes unhindered");
    for (i = 0; i < n; i++) {
        ps_alloc_fail_after(i);
        torture_once(&app, &bad);
        ps_alloc_fail_after(-1);
    }
    printf("# %ld allocations in apply + sync + reload\n", n);
    ok(n > 10 && bad == 0,
       "torture: every allocation failure is PS_ENOMEM, nothing leaks");
    rec_cleanup(&app);
}

/* Deferred metric function rules (background mode) with a fake hook:
 * while can_run says 0 the series are parked and their samples held; the
 * resolution runs the hook; the next engine step installs the results
 * (held samples appended, the dropped series cached as dropped). */
struct fake_hook {
    int can, calls;
};

static int fake_can_run(void *ud)
{
    return ((struct fake_hook *)ud)->can;
}

static int fake_hook_fn(void *ud, const struct ps_labels *in,
                        struct ps_labels *out, int *dropped, struct ps_err *e)
{
    struct fake_hook *h = ud;
    size_t i;

    (void)e;
    h->calls++;
    for (i = 0; i < in->n; i++) {
        const struct ps_label *x = &in->v[i];
        if (x->name_len == 8 && memcmp(x->name, "__name__", 8) == 0) {
            if (x->value_len == 1 && x->value[0] == 'b') {
                *dropped = 1;
                return PS_OK;
            }
            if (ps_labels_add(out, x->name, x->name_len, "fn_a", 4,
                              PS_LABELS_COPY) != PS_OK)
                return PS_ENOMEM;
            continue;
        }
        if (ps_labels_add(out, x->name, x->name_len, x->value, x->value_len,
                          PS_LABELS_COPY) != PS_OK)
            return PS_ENOMEM;
    }
    return PS_OK;
}

static int count_prefix(const struct rec *r, const char *p, size_t from)
{
    size_t i;
    int n = 0;

    for (i = from; i < r->n; i++)
        n += r->ev[i].kind == EV_APPEND &&
             strncmp(r->ev[i].lbl, p, strlen(p)) == 0;
    return n;
}

static void test_deferred_hooks(void)
{
    struct fixture f;
    struct ps_relabel_config rc[1];
    struct ps_relabel_hook hk;
    struct fake_hook fh = {0, 0};
    struct ps_target_status st;
    struct ps_loop *l;
    size_t left = 99, n, mark, i;
    int pre_ok = 1;

    memset(rc, 0, sizeof(rc));
    rc[0].target_label.p = "pre";
    rc[0].target_label.n = 3;
    rc[0].replacement.p = "yes";
    rc[0].replacement.n = 3;
    memset(&hk, 0, sizeof(hk));
    hk.fn = fake_hook_fn;
    hk.ud = &fh;
    hk.id = "fake";
    hk.position = 1;
    hk.can_run = fake_can_run;
    fx_init(&f, "deferred", "/m1");
    f.cfg.metric_relabel_configs = rc;
    f.cfg.n_metric_relabel_configs = 1;
    f.cfg.metric_relabel_hooks = &hk;
    f.cfg.n_metric_relabel_hooks = 1;
    if (!fx_ready(&f, 1, "deferred: config with a hook"))
        return;
    ok(wait_scrapes(fx_pool(&f), 0, 3, 3000), "deferred: three scrapes");
    status(&f, &st);
    ok(fh.calls == 0, "deferred: the hook is never called while it "
                      "cannot run");
    ok(st.deferred_pending == 2, "deferred: both series pending");
    ok(st.deferred_held >= 2, "deferred: their samples held");
    ok(count_prefix(&f.app, "a", 0) == 0 && count_prefix(&f.app, "b", 0) == 0
       && count_prefix(&f.app, "fn_a", 0) == 0,
       "deferred: nothing appended for them yet");
    ok(count_prefix(&f.app, "up", 0) >= 3, "deferred: report series go on");
    l = ps_pool_loop(fx_pool(&f), 0);
    fh.can = 1; /* "the Lua thread", holding the engine */
    n = ps_loop_resolve_deferred(l, 1, &left);
    ok(n == 1 && left == 1, "deferred: resolution bounded by max");
    n = ps_loop_resolve_deferred(l, 100, &left);
    ok(n == 1 && left == 0 && fh.calls == 2,
       "deferred: the rest resolved, the hook called once per series");
    status(&f, &st);
    mark = f.app.n;
    ps_engine_step(eng, 0, NULL); /* the install timer is due at once */
    ok(count_prefix(&f.app, "fn_a", mark) >= 3 &&
       count_prefix(&f.app, "fn_a", mark) >= (int)st.deferred_held - 3,
       "deferred: held samples appended on the next step");
    ok(mark < f.app.n && f.app.ev[mark].kind == EV_BEGIN &&
       f.app.ev[f.app.n - 1].kind == EV_COMMIT,
       "deferred: in a transaction of their own");
    for (i = mark; i < f.app.n; i++)
        if (f.app.ev[i].kind == EV_APPEND)
            pre_ok &= strstr(f.app.ev[i].full, "pre=yes") != NULL;
    ok(pre_ok, "deferred: the table rule before the hook applied");
    status(&f, &st);
    ok(st.deferred_pending == 0 && st.deferred_held == 0 &&
       st.deferred_resolved == 2 && st.deferred_lost == 0,
       "deferred: installed, nothing lost");
    ok(wait_scrapes(fx_pool(&f), 0, st.scrapes + 2, 3000),
       "deferred: two more scrapes");
    status(&f, &st);
    ok(fh.calls == 2, "deferred: cached afterwards (no more calls)");
    for (i = 0, n = 0; i < f.app.n; i++) /* successful scrapes */
        n += f.app.ev[i].kind == EV_APPEND &&
             strncmp(f.app.ev[i].lbl, "up{", 3) == 0 && f.app.ev[i].v == 1;
    ok(count_prefix(&f.app, "fn_a", 0) == (int)n,
       "deferred: one fn_a sample per good scrape, held ones included");
    ok(count_prefix(&f.app, "b", 0) == 0, "deferred: b dropped");
    ok(ps_cache_ndropped(ps_loop_cache(l)) == 1, "deferred: b cached as "
                                                 "dropped");
    fx_free(&f);
}

int main(void)
{
    struct ps_err e;

    signal(SIGPIPE, SIG_IGN);
    srv_port = fixture_start(serve_conn, 30);
    if (srv_port < 0) {
        printf("not ok 1 - could not start the fixture server\n1..1\n");
        return 1;
    }
    ps_err_init(&e);
    ps_http_global_init(&e);
    if (ps_engine_new(&eng, NULL, &e) != PS_OK) {
        printf("not ok 1 - engine: %s\n1..1\n", e.msg);
        fixture_stop();
        return 1;
    }
    test_config_errors();
    test_warmup();
    test_basic();
    test_extra_metrics();
    test_stale_disappearing();
    test_stale_failed();
    test_stale_removed();
    test_no_stale_on_close();
    test_limit("sample_limit", "/two", 0, "sample limit exceeded");
    test_limit("label_limit", "/m1", 1, "label_limit exceeded (metric: a");
    test_limit("name_length", "/longlabel", 2,
               "label_name_length_limit exceeded (metric: a, label name: "
               "abcdefghijkl, length: 12, limit: 10)");
    test_limit("value_length", "/longlabel", 3,
               "label_value_length_limit exceeded (metric: b, label name: x");
    test_honor_labels();
    test_honor_timestamps();
    test_duplicates();
    test_content_types();
    test_cache_no_relabel();
    test_deferred_hooks();
    test_target_limit();
    test_reload();
    test_offsets();
    test_skipped_ticks();
    test_appender_error();
    test_align();
    test_body_limit_timeout();
    test_torture();
    ps_engine_free(eng);
    fixture_stop();
    ps_http_global_cleanup();
    return done_testing();
}
