/* spec/c/test_appender_mem.c: the in-memory latest-sample store. TAP. */
#include "ps_appender_mem.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_test, n_fail;

static void ok(int cond, const char *desc)
{
    n_test++;
    if (!cond)
        n_fail++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n_test, desc);
}

/* Shows both strings when they differ, so a failing diff is readable. */
static void is_str(const char *got, const char *want, const char *desc)
{
    int same = strcmp(got, want) == 0;

    ok(same, desc);
    if (!same)
        printf("# got:\n%s# want:\n%s", got, want);
}

/* ls = the NULL-terminated name, value pairs, sorted (views borrowed). */
static void mkls(struct ps_labels *ls, ...)
{
    va_list ap;
    const char *n, *v;

    ps_labels_clear(ls);
    va_start(ap, ls);
    while ((n = va_arg(ap, const char *)) != NULL) {
        v = va_arg(ap, const char *);
        ps_labels_add(ls, n, strlen(n), v, strlen(v), 0);
    }
    va_end(ap);
    ps_labels_sort(ls);
}

/* What foreach saw, for the checks. */
struct seen {
    int n;
    double v[16];
    int64_t ts[16];
    int stale[16];
    const char *help[16];
    int type[16];
    uint64_t ref[16];
};

static int collect(const struct ps_mem_sample *smp, void *ud)
{
    struct seen *s = ud;

    if (s->n < 16) {
        s->v[s->n] = smp->value;
        s->ts[s->n] = smp->ts_ms;
        s->stale[s->n] = smp->stale;
        s->help[s->n] = smp->meta ? smp->meta->help.p : NULL;
        s->type[s->n] = smp->meta ? (int)smp->meta->type : -1;
        s->ref[s->n] = smp->ref;
    }
    s->n++;
    return 0;
}

static struct seen walk(struct ps_appender_mem *s)
{
    struct seen w;

    memset(&w, 0, sizeof(w));
    ps_appender_mem_foreach(s, collect, &w);
    return w;
}

#define APP(a) ((a)->vt)

static void test_float(void)
{
    static const struct {
        double v;
        const char *s;
    } t[] = {
        {1, "1"},
        {0, "0"},
        {-1, "-1"},
        {0.1, "0.1"},
        {-2.5, "-2.5"},
        {100, "100"},
        {123456, "123456"},
        {1e6, "1e+06"},
        {1234567, "1.234567e+06"},
        {123456.7, "123456.7"},
        {0.0001, "0.0001"},
        {0.00001, "1e-05"},
        {1.5e-7, "1.5e-07"},
        {1e21, "1e+21"},
        {3.14159, "3.14159"},
        {1.7976931348623157e308, "1.7976931348623157e+308"},
        {5e-324, "5e-324"},
        {0.30000000000000004, "0.30000000000000004"},
        {1e100, "1e+100"},
    };
    char buf[32], d[96];
    size_t i;
    int good = 1;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        size_t n = ps_fmt_go_float(t[i].v, buf);

        if (strcmp(buf, t[i].s) != 0 || n != strlen(t[i].s)) {
            printf("# %.17g: got %s want %s\n", t[i].v, buf, t[i].s);
            good = 0;
        }
    }
    snprintf(d, sizeof(d), "Go 'g' -1 formatting of %zu values",
             sizeof(t) / sizeof(t[0]));
    ok(good, d);
    ps_fmt_go_float(-0.0, buf);
    ok(strcmp(buf, "0") == 0, "-0 prints 0 (expfmt)");
    ps_fmt_go_float(NAN, buf);
    ok(strcmp(buf, "NaN") == 0, "NaN");
    ps_fmt_go_float(INFINITY, buf);
    ok(strcmp(buf, "+Inf") == 0, "+Inf");
    ps_fmt_go_float(-INFINITY, buf);
    ok(strcmp(buf, "-Inf") == 0, "-Inf");
}

static void test_txn(void)
{
    struct ps_appender_mem *s = NULL;
    struct ps_appender *a;
    struct ps_labels ls, target;
    struct ps_err e;
    struct ps_mem_stats st;
    struct seen w;
    uint64_t r1 = 0, r2 = 0, r3 = 0, r;

    ps_err_init(&e);
    ps_labels_init(&ls);
    ps_labels_init(&target);
    mkls(&target, "job", "j", "instance", "h:1", NULL);
    ok(ps_appender_mem_new(&s, NULL, &e) == PS_OK && s != NULL, "new store");
    if (s == NULL) { /* out of memory: only under spec/torture.sh */
        ps_labels_cleanup(&target);
        return;
    }
    a = ps_appender_mem_appender(s);
    ok((void *)a == (void *)s, "the appender view is the store itself");

    mkls(&ls, "__name__", "up", "job", "j", "instance", "h:1", NULL);
    ok(APP(a)->append(a, 0, &ls, 1000, 1, &r1, &e) == PS_ESTATE,
       "append outside a transaction: PS_ESTATE");
    ok(APP(a)->commit(a, &e) == PS_ESTATE, "commit without begin: PS_ESTATE");
    APP(a)->rollback(a); /* no-op */

    ok(APP(a)->begin(a, &target, &e) == PS_OK, "begin");
    ok(APP(a)->begin(a, &target, &e) == PS_ESTATE, "nested begin: PS_ESTATE");
    ok(APP(a)->append(a, 0, &ls, 1000, 1, &r1, &e) == PS_OK && r1 != 0,
       "append with ref 0 creates the series and returns a ref");
    mkls(&ls, "__name__", "x", "job", "j", NULL);
    ok(APP(a)->append(a, 0, &ls, 1000, 5, &r2, &e) == PS_OK && r2 != r1,
       "a second series gets another ref");
    ok(walk(s).n == 0, "nothing visible before commit");
    ok(APP(a)->commit(a, &e) == PS_OK, "commit");
    w = walk(s);
    ok(w.n == 2 && w.v[0] == 1 && w.ts[0] == 1000 && w.v[1] == 5 &&
           !w.stale[0] && w.ref[0] == r1,
       "committed samples visible in creation order");

    /* steady state: refs only, no labels */
    APP(a)->begin(a, &target, &e);
    ok(APP(a)->append(a, r1, NULL, 2000, 0, &r, &e) == PS_OK && r == r1,
       "append through a ref with no labels");
    ok(APP(a)->append(a, r2, NULL, 2000, 6, &r, &e) == PS_OK, "second ref");
    APP(a)->commit(a, &e);
    w = walk(s);
    ok(w.v[0] == 0 && w.ts[0] == 2000 && w.v[1] == 6, "latest sample wins");

    /* ref 0 for a known series returns its ref */
    APP(a)->begin(a, &target, &e);
    ok(APP(a)->append(a, 0, &ls, 3000, 7, &r, &e) == PS_OK && r == r2,
       "ref 0 with known labels finds the series");
    ok(APP(a)->append(a, 12345, &ls, 4000, 8, &r, &e) == PS_OK && r == r2,
       "an unknown ref falls back to the labels");
    ok(APP(a)->append(a, 12345, NULL, 4000, 8, &r, &e) == PS_EINVAL,
       "an unknown ref without labels: PS_EINVAL");

    /* out of order and duplicates, against pending and committed */
    ok(APP(a)->append(a, r2, NULL, 3500, 9, &r, &e) == PS_APPEND_OUT_OF_ORDER,
       "older than the pending sample: out of order");
    ok(APP(a)->append(a, r2, NULL, 4000, 9, &r, &e) == PS_APPEND_DUPLICATE,
       "same timestamp, other value: duplicate");
    ok(APP(a)->append(a, r2, NULL, 4000, 8, &r, &e) == PS_OK,
       "same timestamp, same value: accepted silently");
    ok(APP(a)->append(a, r1, NULL, 1500, 9, &r, &e) == PS_APPEND_OUT_OF_ORDER,
       "older than the committed sample: out of order");
    ok(APP(a)->append(a, r1, NULL, 2000, 1, &r, &e) == PS_APPEND_DUPLICATE,
       "committed timestamp, other value: duplicate");
    ok(APP(a)->append(a, r1, NULL, 2000, 0, &r, &e) == PS_OK,
       "committed timestamp, same value: accepted");
    APP(a)->commit(a, &e);
    w = walk(s);
    ok(w.v[1] == 8 && w.ts[1] == 4000 && w.v[0] == 0 && w.ts[0] == 2000,
       "rejected samples changed nothing");
    ps_appender_mem_stats(s, &st);
    ok(st.rejected == 4 && st.series == 2, "rejections counted");

    /* rollback */
    APP(a)->begin(a, &target, &e);
    APP(a)->append(a, r1, NULL, 9000, 42, &r, &e);
    mkls(&ls, "__name__", "new_in_rollback", NULL);
    ok(APP(a)->append(a, 0, &ls, 9000, 1, &r3, &e) == PS_OK, "new series");
    APP(a)->rollback(a);
    w = walk(s);
    ps_appender_mem_stats(s, &st);
    ok(w.n == 2 && w.v[0] == 0 && w.ts[0] == 2000,
       "rollback discards the buffered samples");
    ok(st.series == 3, "a series created in a rolled-back txn is kept");
    APP(a)->begin(a, &target, &e);
    ok(APP(a)->append(a, r3, NULL, 9000, 1, &r, &e) == PS_OK && r == r3,
       "its ref stays valid");
    ok(APP(a)->append(a, r1, NULL, 2500, 3, &r, &e) == PS_OK,
       "rolled-back samples do not count for ordering");
    APP(a)->commit(a, &e);
    ok(walk(s).n == 3, "committed later, it becomes visible");

    /* staleness */
    APP(a)->begin(a, &target, &e);
    ok(APP(a)->append(a, r1, NULL, 10000, ps_stale_nan(), &r, &e) == PS_OK,
       "stale marker appended");
    APP(a)->commit(a, &e);
    w = walk(s);
    ok(w.stale[0] == 1 && ps_is_stale_nan(w.v[0]) && w.ts[0] == 10000,
       "the series is stale, its value is the marker");
    APP(a)->begin(a, &target, &e);
    ok(APP(a)->append(a, r1, NULL, 10000, 1, &r, &e) == PS_APPEND_DUPLICATE,
       "a value at the stale marker's timestamp is a duplicate");
    ok(APP(a)->append(a, r1, NULL, 11000, 1, &r, &e) == PS_OK,
       "a later sample");
    APP(a)->commit(a, &e);
    w = walk(s);
    ok(w.stale[0] == 0 && w.v[0] == 1, "a new sample ends staleness");

    /* metadata and exemplars */
    {
        struct ps_metadata md;
        struct ps_exemplar ex;

        memset(&md, 0, sizeof(md));
        md.type = PS_MTYPE_COUNTER;
        md.help.p = "Requests.";
        md.help.n = 9;
        memset(&ex, 0, sizeof(ex));
        ex.value = 1;
        APP(a)->begin(a, &target, &e);
        ok(APP(a)->update_metadata(a, r2, NULL, &md, &e) == PS_OK,
           "update_metadata");
        ok(APP(a)->append_exemplar(a, r2, NULL, &ex, &e) == PS_OK,
           "append_exemplar");
        ok(walk(s).help[1] == NULL, "metadata not visible before commit");
        APP(a)->commit(a, &e);
        w = walk(s);
        ok(w.help[1] != NULL && strcmp(w.help[1], "Requests.") == 0 &&
               w.type[1] == PS_MTYPE_COUNTER && w.help[0] == NULL,
           "metadata per series after commit");
        ps_appender_mem_stats(s, &st);
        ok(st.exemplars == 1, "exemplars counted on commit");
        md.type = PS_MTYPE_GAUGE;
        APP(a)->begin(a, &target, &e);
        APP(a)->update_metadata(a, r2, NULL, &md, &e);
        APP(a)->append_exemplar(a, r2, NULL, &ex, &e);
        APP(a)->rollback(a);
        w = walk(s);
        ps_appender_mem_stats(s, &st);
        ok(w.type[1] == PS_MTYPE_COUNTER && st.exemplars == 1,
           "rollback discards metadata and exemplars");
        ok(APP(a)->update_metadata(a, r2, NULL, &md, &e) == PS_ESTATE,
           "metadata outside a transaction: PS_ESTATE");
    }

    /* forgetting */
    {
        size_t k = 0;

        APP(a)->begin(a, &target, &e);
        ok(ps_appender_mem_forget(s, 5000, &k) == PS_ESTATE,
           "forget inside a transaction: PS_ESTATE");
        APP(a)->rollback(a);
        ok(ps_appender_mem_forget(s, 5000, &k) == PS_OK && k == 1,
           "forget drops series older than the limit");
        w = walk(s);
        ps_appender_mem_stats(s, &st);
        ok(w.n == 2 && st.series == 2 && st.forgotten == 1, "two left");
        APP(a)->begin(a, &target, &e);
        ok(APP(a)->append(a, r2, NULL, 20000, 1, &r, &e) == PS_EINVAL,
           "a forgotten series' ref is no longer valid");
        mkls(&ls, "__name__", "x", "job", "j", NULL);
        ok(APP(a)->append(a, r2, &ls, 20000, 1, &r, &e) == PS_OK && r != r2,
           "with labels it is re-created under a new ref (slot reused)");
        ok((r & 0xffffffffu) == (r2 & 0xffffffffu),
           "same slot, new generation");
        APP(a)->commit(a, &e);
    }
    ps_appender_free(a);
    ps_labels_cleanup(&ls);
    ps_labels_cleanup(&target);
}

static void test_text(void)
{
    struct ps_appender_mem *s = NULL;
    struct ps_appender *a;
    struct ps_labels ls;
    struct ps_buf b;
    struct ps_err e;
    uint64_t r;
    const char *want;

    ps_labels_init(&ls);
    ps_buf_init(&b, 0);
    if (ps_appender_mem_new(&s, NULL, &e) != PS_OK) {
        ok(0, "new store"); /* only under spec/torture.sh */
        return;
    }
    a = ps_appender_mem_appender(s);
    ok(ps_appender_mem_text(s, &b) == PS_OK && ps_buf_len(&b) == 0,
       "empty store: empty text");

    a->vt->begin(a, NULL, &e);
    mkls(&ls, "__name__", "up", "job", "node", "instance", "b:9100", NULL);
    a->vt->append(a, 0, &ls, 1700000000000, 1, &r, &e);
    mkls(&ls, "__name__", "up", "job", "node", "instance", "a:9100", NULL);
    a->vt->append(a, 0, &ls, 1700000000000, 0, &r, &e);
    mkls(&ls, "__name__", "http_requests_total", "job", "api", "path",
         "/a\"b\\c\nd", "code", "200", NULL);
    a->vt->append(a, 0, &ls, 1700000000123, 1234567, &r, &e);
    mkls(&ls, "__name__", "gone", "job", "x", NULL);
    a->vt->append(a, 0, &ls, 1700000000000, ps_stale_nan(), &r, &e);
    mkls(&ls, "job", "nameless", NULL);
    a->vt->append(a, 0, &ls, 1700000000000, 3, &r, &e);
    mkls(&ls, "__name__", "empty_val", "job", "x", "env", "", NULL);
    a->vt->append(a, 0, &ls, 1, 0.5, &r, &e);
    mkls(&ls, "__name__", "temp", NULL);
    a->vt->append(a, 0, &ls, -5, -INFINITY, &r, &e);
    mkls(&ls, "__name__", "my.metric", "a.b", "v", "job", "x", NULL);
    a->vt->append(a, 0, &ls, 7, NAN, &r, &e);
    a->vt->commit(a, &e);

    want = "# TYPE empty_val untyped\n"
           "empty_val{job=\"x\"} 0.5 1\n"
           "# TYPE http_requests_total untyped\n"
           "http_requests_total{code=\"200\",job=\"api\","
           "path=\"/a\\\"b\\\\c\\nd\"} 1.234567e+06 1700000000123\n"
           "# TYPE \"my.metric\" untyped\n"
           "{\"my.metric\",\"a.b\"=\"v\",job=\"x\"} NaN 7\n"
           "# TYPE temp untyped\n"
           "temp -Inf -5\n"
           "# TYPE up untyped\n"
           "up{instance=\"a:9100\",job=\"node\"} 0 1700000000000\n"
           "up{instance=\"b:9100\",job=\"node\"} 1 1700000000000\n";
    ok(ps_appender_mem_text(s, &b) == PS_OK, "text");
    is_str(ps_buf_cstr(&b), want,
           "federate-style text: sorted, escaped, untyped, stale and "
           "nameless omitted, empty labels skipped");
    {
        struct ps_buf small;

        ps_buf_init(&small, 40);
        ok(ps_appender_mem_text(s, &small) == PS_ELIMIT,
           "a capped buffer: PS_ELIMIT");
        ps_buf_cleanup(&small);
    }
    ps_buf_reset(&b);
    ok(ps_appender_mem_text(s, &b) == PS_OK &&
           strcmp(ps_buf_cstr(&b), want) == 0,
       "deterministic: the same text twice");
    ps_appender_mem_free(s);
    ps_appender_mem_free(NULL);
    ps_buf_cleanup(&b);
    ps_labels_cleanup(&ls);
}

static void test_autoforget(void)
{
    struct ps_appender_mem *s = NULL;
    struct ps_appender_mem_opts o;
    struct ps_appender *a;
    struct ps_labels ls;
    struct ps_err e;
    struct ps_mem_stats st;
    uint64_t r, ra = 0;
    int64_t t;

    ps_labels_init(&ls);
    o.forget_after_ms = -1;
    ok(ps_appender_mem_new(&s, &o, &e) == PS_EINVAL && s == NULL,
       "negative forget_after_ms: PS_EINVAL, *out untouched");
    o.forget_after_ms = 60000;
    if (ps_appender_mem_new(&s, &o, &e) != PS_OK) {
        ok(0, "new store"); /* only under spec/torture.sh */
        return;
    }
    a = ps_appender_mem_appender(s);
    a->vt->begin(a, NULL, &e);
    mkls(&ls, "__name__", "once", NULL);
    a->vt->append(a, 0, &ls, 0, 1, &r, &e);
    a->vt->commit(a, &e);
    mkls(&ls, "__name__", "always", NULL);
    for (t = 15000; t <= 120000; t += 15000) {
        a->vt->begin(a, NULL, &e);
        a->vt->append(a, ra, &ls, t, 1, &ra, &e);
        a->vt->commit(a, &e);
    }
    ps_appender_mem_stats(s, &st);
    ok(st.series == 1 && st.forgotten == 1,
       "forget_after_ms forgets series not updated for that long");
    ps_appender_mem_free(s);
    ps_labels_cleanup(&ls);
}

/* One scrape-like run; every step either succeeds or fails cleanly. */
static int scenario(struct ps_labels *ls, int *failed)
{
    struct ps_appender_mem *s = NULL;
    struct ps_appender *a;
    struct ps_buf b;
    struct ps_err e;
    struct ps_metadata md;
    uint64_t refs[20] = {0}, r;
    char name[32], val[32];
    int rc, round, i, bad = 0;

    *failed = 0;
    rc = ps_appender_mem_new(&s, NULL, &e);
    if (rc != PS_OK) {
        *failed = 1;
        return rc == PS_ENOMEM;
    }
    a = ps_appender_mem_appender(s);
    ps_buf_init(&b, 0);
    memset(&md, 0, sizeof(md));
    md.type = PS_MTYPE_GAUGE;
    md.help.p = "h";
    md.help.n = 1;
    for (round = 0; round < 3; round++) {
        rc = a->vt->begin(a, NULL, &e);
        for (i = 0; i < 20 && rc == PS_OK; i++) {
            snprintf(name, sizeof(name), "m%d", i % 5);
            snprintf(val, sizeof(val), "%d", i);
            mkls(ls, "__name__", name, "i", val, NULL);
            rc = a->vt->append(a, refs[i], ls, 1000 * (round + 1), i, &r, &e);
            if (rc == PS_OK)
                refs[i] = r;
            if (rc == PS_OK && round == 0)
                rc = a->vt->update_metadata(a, r, ls, &md, &e);
        }
        if (rc == PS_OK) {
            rc = a->vt->commit(a, &e);
        } else {
            a->vt->rollback(a);
        }
        if (rc != PS_OK) {
            *failed = 1;
            bad |= rc != PS_ENOMEM;
        }
    }
    rc = ps_appender_mem_text(s, &b);
    if (rc != PS_OK) {
        *failed = 1;
        bad |= rc != PS_ENOMEM;
    }
    ps_appender_free(a);
    ps_buf_cleanup(&b);
    return !bad;
}

static void test_torture(void)
{
    long n, need;
    int good = 1, failed = 1, clean;
    struct ps_labels ls;

    /* The label set is the caller's (borrowed views, capacity grown here),
     * so only the store's allocations fail. */
    ps_labels_init(&ls);
    mkls(&ls, "__name__", "x", "i", "0", NULL);
    ps_alloc_fail_after(-1);
    clean = scenario(&ls, &failed);
    need = ps_alloc_fail_after(-1);
    ok(clean && !failed, "scenario runs clean without failures");
    for (n = 0; n <= need; n++) {
        ps_alloc_fail_after(n);
        good &= scenario(&ls, &failed);
        ps_alloc_fail_after(-1);
        if (n < need)
            good &= failed;
    }
    {
        char d[96];

        snprintf(d, sizeof(d),
                 "each of %ld allocations failed in turn: clean errors", need);
        ok(good && need > 0, d);
    }
    ps_labels_cleanup(&ls);
}

/* A reader thread queries while the engine thread appends and commits. */
struct rd {
    struct ps_appender_mem *s;
    int stop;
    long reads;
    int bad;
};

static int count_cb(const struct ps_mem_sample *smp, void *ud)
{
    int *n = ud;

    (*n)++;
    return smp->n_labels == 2 ? 0 : 1;
}

static void *reader(void *ud)
{
    struct rd *r = ud;
    struct ps_buf b;

    ps_buf_init(&b, 0);
    while (!__atomic_load_n(&r->stop, __ATOMIC_SEQ_CST)) {
        int n = 0;

        r->bad |= ps_appender_mem_foreach(r->s, count_cb, &n) != 0;
        ps_buf_reset(&b);
        r->bad |= ps_appender_mem_text(r->s, &b) != PS_OK;
        __atomic_add_fetch(&r->reads, 1, __ATOMIC_SEQ_CST);
    }
    ps_buf_cleanup(&b);
    return NULL;
}

static void test_threads(void)
{
    struct rd r;
    struct ps_appender *a;
    struct ps_labels ls;
    struct ps_err e;
    struct ps_mem_stats st;
    pthread_t th;
    uint64_t refs[300] = {0};
    char name[32];
    int k, i;

    memset(&r, 0, sizeof(r));
    ps_labels_init(&ls);
    if (ps_appender_mem_new(&r.s, NULL, &e) != PS_OK) {
        ok(0, "new store"); /* only under spec/torture.sh */
        return;
    }
    a = ps_appender_mem_appender(r.s);
    pthread_create(&th, NULL, reader, &r);
    for (k = 0; k < 200; k++) {
        a->vt->begin(a, NULL, &e);
        /* the series set grows while the reader walks it */
        for (i = 0; i < (k + 1) * 300 / 200; i++) {
            snprintf(name, sizeof(name), "s%d", i);
            mkls(&ls, "__name__", name, "job", "j", NULL);
            a->vt->append(a, refs[i], &ls, k, k, &refs[i], &e);
        }
        a->vt->commit(a, &e);
    }
    /* let the reader finish a few walks, however the threads were scheduled */
    while (__atomic_load_n(&r.reads, __ATOMIC_SEQ_CST) < 3)
        sched_yield();
    __atomic_store_n(&r.stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(th, NULL);
    ps_appender_mem_stats(r.s, &st);
    if (r.bad || r.reads == 0 || st.series != 300)
        printf("# bad %d reads %ld series %zu\n", r.bad, r.reads, st.series);
    ok(!r.bad && r.reads > 0 && st.series == 300,
       "queries from another thread during commits");
    ps_appender_mem_free(r.s);
    ps_labels_cleanup(&ls);
}

int main(void)
{
    test_float();
    test_txn();
    test_text();
    test_autoforget();
    test_threads();
    test_torture();
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
