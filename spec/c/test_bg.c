/*
 * spec/c/test_bg.c: ps_bg, the engine on a background pthread.
 *
 * Against a forked loopback fixture (forked first, before anything is
 * allocated; one thread per connection; /m answers at once, /slow after
 * 3 s, or at once when the fixture exits), it checks: requests started under
 * the lock complete on the thread; ps_bg_stop() returns within 100 ms with a
 * transfer in flight; a manager scrapes on the thread while two other threads
 * query target status and the store and re-apply the config under the lock;
 * ps_bg_lock() waits for at most one step's callbacks; signals are never
 * handled on the background thread; start/stop/start works; ps_bg_free() stops
 * a running thread. Leak checkers (LSan in the ASan stage, valgrind) see
 * everything. TAP.
 */
#include "ps_appender_mem.h"
#include "ps_bg.h"
#include "ps_core.h"
#include "ps_engine.h"
#include "ps_http.h"
#include "ps_labels.h"
#include "ps_manager.h"
#include "ps_pool.h"
#include "testlib.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Valgrind (which preloads vgpreload_*.so) runs callbacks ~20x slower:
 * bounds that include a step's callbacks grow by this factor. */
static double slow_factor(void)
{
    const char *p = getenv("LD_PRELOAD");

    return p != NULL && strstr(p, "vgpreload") != NULL ? 5.0 : 1.0;
}

static double ms_since(uint64_t t0)
{
    return (double)(ps_engine_now_ns() - t0) / 1e6;
}

/* ---- the fixture server (forked child) ---------------------------------- */

static const char BODY[] = "# TYPE a gauge\na 1\nb{x=\"y\"} 2\n";

static void serve_conn(int fd)
{
    char req[4096];
    size_t n = 0;

    for (;;) {
        ssize_t r;
        char hdr[256];
        int slow;

        /* read one request head */
        while (n < sizeof(req) - 1) {
            req[n] = '\0';
            if (strstr(req, "\r\n\r\n") != NULL)
                break;
            r = read(fd, req + n, sizeof(req) - 1 - n);
            if (r <= 0)
                return;
            n += (size_t)r;
        }
        req[n] = '\0';
        slow = strncmp(req, "GET /slow", 9) == 0;
        n = 0;
        if (slow) { /* 3 s, or until the fixture shuts the socket */
            struct pollfd p = {fd, POLLIN, 0};
            poll(&p, 1, 3000);
        }
        snprintf(hdr, sizeof(hdr),
                 "HTTP/1.1 200 OK\r\nContent-Type: text/plain; "
                 "version=0.0.4\r\nContent-Length: %zu\r\n\r\n",
                 sizeof(BODY) - 1);
        if (write(fd, hdr, strlen(hdr)) < 0 ||
            write(fd, BODY, sizeof(BODY) - 1) < 0)
            return;
    }
}

static int srv_port;

/* ---- one-off requests ---------------------------------------------------- */

struct get {
    struct ps_http_req *req;
    atomic_int done;
    long status;
    int rc;
};

static void on_done(struct ps_http_req *r, const struct ps_http_result *res,
                    void *ud)
{
    struct get *g = ud;

    (void)r;
    g->status = res->status;
    g->rc = res->rc;
    atomic_store(&g->done, 1);
}

/* Creates and starts a GET of path on eng; the caller holds the lock (or
 * no thread runs). */
static int get_start(struct ps_engine *eng, struct get *g, const char *path)
{
    struct ps_http_req_opts o;
    struct ps_err e;
    char url[128];
    int rc;

    memset(g, 0, sizeof(*g));
    memset(&o, 0, sizeof(o));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", srv_port, path);
    o.url = url;
    o.timeout_ms = 10000;
    ps_err_init(&e);
    rc = ps_http_request_new(ps_engine_http(eng), &g->req, &o, &e);
    if (rc == PS_OK)
        rc = ps_http_start(g->req, on_done, g, &e);
    if (rc != PS_OK)
        printf("# get %s: %s\n", path, e.msg);
    return rc;
}

static int wait_done(struct get *g, long ms)
{
    uint64_t t0 = ps_engine_now_ns();

    while (!atomic_load(&g->done) && ms_since(t0) < (double)ms)
        sleep_ms(5);
    return atomic_load(&g->done);
}

/* ---- tests --------------------------------------------------------------- */

static void test_request_on_thread(void)
{
    struct ps_engine *eng = NULL;
    struct ps_bg *bg = NULL;
    struct ps_bg_status st;
    struct get g;
    struct ps_err e;
    int rc;

    ps_err_init(&e);
    ok(ps_engine_new(&eng, NULL, &e) == PS_OK &&
           ps_bg_new(&bg, eng, &e) == PS_OK,
       "engine and controller created");
    if (bg == NULL) { /* out of memory: only under spec/torture.sh */
        ps_engine_free(eng);
        return;
    }
    ok(!ps_bg_running(bg), "not running before start");
    ok(ps_bg_start(bg, &e) == PS_OK && ps_bg_running(bg), "started");
    ok(ps_bg_start(bg, &e) == PS_ESTATE, "a second start is PS_ESTATE");
    ps_bg_lock(bg);
    rc = get_start(eng, &g, "/m");
    ps_bg_unlock(bg);
    ok(rc == PS_OK && wait_done(&g, 5000) && g.rc == PS_OK &&
           g.status == 200,
       "a request started under the lock completes on the thread");
    ps_bg_status(bg, &st, NULL);
    ok(st.running && st.alive && st.steps > 0 && st.rc == PS_OK,
       "status: running, alive, stepping");
    ps_bg_lock(bg);
    ps_http_request_free(g.req);
    ps_bg_unlock(bg);
    ps_bg_stop(bg);
    ok(!ps_bg_running(bg), "stopped");
    ps_bg_stop(bg); /* a no-op */
    ok(ps_bg_start(bg, &e) == PS_OK, "restarted after a stop");
    ps_bg_free(bg); /* stops the running thread */
    ok(1, "ps_bg_free stops a running thread");
    ps_engine_free(eng);
}

static void test_stop_in_flight(void)
{
    struct ps_engine *eng = NULL;
    struct ps_bg *bg = NULL;
    struct get g;
    struct ps_err e;
    uint64_t t0;
    double wait_ms, stop_ms;

    ps_err_init(&e);
    if (ps_engine_new(&eng, NULL, &e) != PS_OK ||
        ps_bg_new(&bg, eng, &e) != PS_OK) {
        ok(0, "engine and controller"); /* only under spec/torture.sh */
        ps_engine_free(eng);
        return;
    }
    ps_bg_start(bg, &e);
    ps_bg_lock(bg);
    get_start(eng, &g, "/slow");
    ps_bg_unlock(bg);
    sleep_ms(200); /* the request is connected and waiting */
    t0 = ps_engine_now_ns();
    ps_bg_lock(bg); /* the thread sits in curl_multi_poll */
    wait_ms = ms_since(t0);
    ps_bg_unlock(bg);
    printf("# lock taken in %.2f ms during a slow transfer\n", wait_ms);
    ok(wait_ms < 50, "the lock is handed over at once during a wait");
    t0 = ps_engine_now_ns();
    ps_bg_stop(bg);
    stop_ms = ms_since(t0);
    printf("# stop returned in %.2f ms with a transfer in flight\n", stop_ms);
    ok(stop_ms < 100, "stop returns within 100 ms with a transfer in flight");
    ok(!atomic_load(&g.done), "the transfer was left in flight, untouched");
    ps_http_request_free(g.req); /* cancels it: no callback */
    ok(!atomic_load(&g.done), "freeing it after the stop calls nothing");
    ps_bg_free(bg);
    ps_engine_free(eng);
}

/* ---- a manager scraping on the thread, queried from two others ---------- */

struct shared {
    struct ps_bg *bg;
    struct ps_manager *m;
    struct ps_appender_mem *mem;
    atomic_int quit;
    atomic_int queries, bad;
};

static void *query_thread(void *arg)
{
    struct shared *s = arg;

    while (!atomic_load(&s->quit)) {
        struct ps_target_status st;
        struct ps_mem_stats ms;
        struct ps_pool *p;

        ps_bg_lock(s->bg);
        p = ps_manager_pool(s->m, "bg");
        if (p == NULL || ps_pool_ntargets(p) != 2 ||
            ps_pool_target(p, 0, &st) != PS_OK || st.job == NULL ||
            strcmp(st.job, "bg") != 0)
            atomic_fetch_add(&s->bad, 1);
        ps_bg_unlock(s->bg);
        ps_appender_mem_stats(s->mem, &ms); /* the store's own lock */
        atomic_fetch_add(&s->queries, 1);
        sleep_ms(1);
    }
    return NULL;
}

static uint64_t scrapes_of(struct shared *s, size_t i)
{
    struct ps_target_status st;
    uint64_t n = 0;

    ps_bg_lock(s->bg);
    if (ps_pool_target(ps_manager_pool(s->m, "bg"), i, &st) == PS_OK)
        n = st.scrapes;
    ps_bg_unlock(s->bg);
    return n;
}

static void test_manager_concurrent(void)
{
    struct shared s;
    struct ps_manager_opts mo;
    struct ps_scrape_config cfg;
    struct ps_labels tl[2];
    struct ps_target_group grp;
    struct ps_bg_status st;
    struct ps_mem_stats ms;
    struct ps_err e;
    pthread_t th[2];
    char addr[64];
    uint64_t t0;
    int i, reloads = 0, rc;

    memset(&s, 0, sizeof(s));
    ps_err_init(&e);
    if (ps_appender_mem_new(&s.mem, NULL, &e) != PS_OK) {
        ok(0, "store"); /* out of memory: only under spec/torture.sh */
        return;
    }
    memset(&mo, 0, sizeof(mo));
    mo.appender = ps_appender_mem_appender(s.mem);
    mo.offset_seed = 1;
    rc = ps_manager_new(&s.m, &mo, &e);
    ok(rc == PS_OK, "manager with its own engine");
    if (rc != PS_OK) {
        ps_appender_mem_free(s.mem);
        return;
    }
    ps_scrape_config_init(&cfg);
    cfg.job_name = "bg";
    cfg.metrics_path = "/m";
    cfg.scrape_interval_ms = 50;
    cfg.scrape_timeout_ms = 50;
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", srv_port);
    for (i = 0; i < 2; i++) {
        char v[2] = {(char)('0' + i), 0};
        ps_labels_init(&tl[i]);
        ps_labels_add(&tl[i], "__address__", 11, addr, strlen(addr),
                      PS_LABELS_COPY);
        ps_labels_add(&tl[i], "t", 1, v, 1, PS_LABELS_COPY);
    }
    memset(&grp, 0, sizeof(grp));
    grp.source = "test";
    grp.targets = tl;
    grp.n_targets = 2;
    rc = ps_manager_apply_config(s.m, NULL, &cfg, 1, &e);
    if (rc == PS_OK)
        rc = ps_manager_sync(s.m, "bg", &grp, 1, &e);
    ok(rc == PS_OK, "config applied and targets synced before start");
    if (ps_bg_new(&s.bg, ps_manager_engine(s.m), &e) != PS_OK) {
        ok(0, "controller"); /* only under spec/torture.sh */
        goto out;
    }
    ok(ps_bg_start(s.bg, &e) == PS_OK, "background thread started");
    atomic_init(&s.quit, 0);
    atomic_init(&s.queries, 0);
    atomic_init(&s.bad, 0);
    pthread_create(&th[0], NULL, query_thread, &s);
    pthread_create(&th[1], NULL, query_thread, &s);
    /* meanwhile this thread reloads (a changed interval restarts the
     * loops, keeping caches) and re-syncs under the lock */
    t0 = ps_engine_now_ns();
    while (ms_since(t0) < 800) {
        ps_bg_lock(s.bg);
        cfg.scrape_interval_ms = (reloads % 2) ? 50 : 60;
        cfg.scrape_timeout_ms = cfg.scrape_interval_ms;
        if (ps_manager_apply_config(s.m, NULL, &cfg, 1, &e) == PS_OK &&
            ps_manager_sync(s.m, "bg", &grp, 1, &e) == PS_OK)
            reloads++;
        ps_bg_unlock(s.bg);
        sleep_ms(100);
    }
    t0 = ps_engine_now_ns();
    while (ms_since(t0) < 3000 &&
           (scrapes_of(&s, 0) < 3 || scrapes_of(&s, 1) < 3))
        sleep_ms(20);
    atomic_store(&s.quit, 1);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    ok(reloads >= 5, "config re-applied under the lock while running");
    printf("# %d status queries from two threads, %d reloads\n",
           atomic_load(&s.queries), reloads);
    ok(atomic_load(&s.queries) > 50 && atomic_load(&s.bad) == 0,
       "concurrent status queries all see a consistent pool");
    ok(scrapes_of(&s, 0) >= 3 && scrapes_of(&s, 1) >= 3,
       "both targets scraped on the background thread");
    ps_appender_mem_stats(s.mem, &ms);
    ok(ms.appended > 0 && ms.series >= 2, "samples reached the C appender");
    ps_bg_status(s.bg, &st, NULL);
    printf("# %llu steps, %llu lock waits, longest %.2f ms\n",
           (unsigned long long)st.steps, (unsigned long long)st.lock_waits,
           (double)st.max_wait_ns / 1e6);
    ok(st.lock_waits > 50 && (double)st.max_wait_ns < 100e6 * slow_factor(),
       "every lock wait was shorter than 100 ms (one step's callbacks)");
    t0 = ps_engine_now_ns();
    ps_bg_stop(s.bg);
    ok(ms_since(t0) < 100 * slow_factor(),
       "stopped within 100 ms while scraping");
    /* the manager keeps working in step mode afterwards */
    {
        uint64_t before = scrapes_of(&s, 0);
        uint64_t t1 = ps_engine_now_ns();
        while (ms_since(t1) < 2000 && scrapes_of(&s, 0) <= before)
            ps_manager_step(s.m, 20, NULL);
        ok(scrapes_of(&s, 0) > before, "step mode works after a stop");
    }
    ps_bg_free(s.bg);
out:
    ps_manager_free(s.m);
    ps_appender_mem_free(s.mem);
    for (i = 0; i < 2; i++)
        ps_labels_cleanup(&tl[i]);
}

/* ---- signals ------------------------------------------------------------- */

static pthread_t main_thread;
static atomic_int sig_seen, sig_elsewhere;

static void on_usr1(int sig)
{
    (void)sig;
    atomic_fetch_add(&sig_seen, 1);
    if (!pthread_equal(pthread_self(), main_thread))
        atomic_fetch_add(&sig_elsewhere, 1);
}

static void test_signals(void)
{
    struct ps_engine *eng = NULL;
    struct ps_bg *bg = NULL;
    struct sigaction sa;
    struct ps_err e;
    sigset_t cur;
    int i;

    main_thread = pthread_self();
    atomic_init(&sig_seen, 0);
    atomic_init(&sig_elsewhere, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    ps_err_init(&e);
    if (ps_engine_new(&eng, NULL, &e) != PS_OK ||
        ps_bg_new(&bg, eng, &e) != PS_OK) {
        ok(0, "engine and controller"); /* only under spec/torture.sh */
        ps_engine_free(eng);
        signal(SIGUSR1, SIG_DFL);
        return;
    }
    ps_bg_start(bg, &e);
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    ok(!sigismember(&cur, SIGUSR1) && !sigismember(&cur, SIGTERM),
       "the caller's signal mask is restored after start");
    for (i = 0; i < 20; i++) {
        kill(getpid(), SIGUSR1); /* process-directed: any unblocked thread */
        sleep_ms(5);
    }
    ps_bg_stop(bg);
    ok(atomic_load(&sig_seen) > 0 && atomic_load(&sig_elsewhere) == 0,
       "process signals are never handled on the background thread");
    signal(SIGUSR1, SIG_DFL);
    ps_bg_free(bg);
    ps_engine_free(eng);
}

int main(void)
{
    struct ps_err e;

    signal(SIGPIPE, SIG_IGN);
    srv_port = fixture_start(serve_conn, 60);
    if (srv_port < 0) {
        printf("not ok 1 - could not start the fixture server\n1..1\n");
        return 1;
    }
    ps_err_init(&e);
    ps_http_global_init(&e);
    ps_bg_free(NULL);
    test_request_on_thread();
    test_stop_in_flight();
    test_manager_concurrent();
    test_signals();
    fixture_stop();
    ps_http_global_cleanup();
    return done_testing();
}
