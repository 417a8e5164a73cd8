/* spec/c/test_appender_batch.c: the batch shim behind Lua appenders. TAP. */
#include "ps_appender_batch.h"

#include <limits.h>
#include <pthread.h>
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

static int lab_is(const struct ps_label *l, const char *n, const char *v)
{
    return l->name_len == strlen(n) && memcmp(l->name, n, l->name_len) == 0 &&
           l->value_len == strlen(v) && memcmp(l->value, v, l->value_len) == 0;
}

/* The next queued batch, or NULL. Under spec/torture.sh a commit can fail
 * and queue nothing: the tests then see NULL, never a stale batch. */
static struct ps_batch *pop(struct ps_appender_batch *q)
{
    struct ps_batch *b = NULL;

    ps_appender_batch_pop(q, &b);
    return b;
}

static int notified;

static void on_notify(void *ud)
{
    (void)ud;
    notified++;
}

static void test_basic(void)
{
    struct ps_appender_batch *q = NULL;
    struct ps_appender_batch_opts o;
    struct ps_appender *a;
    struct ps_labels ls, target;
    struct ps_batch *b = NULL;
    struct ps_batch_stats st;
    struct ps_err e;
    uint64_t r1 = 0, r2 = 0, r3 = 0, r;

    ps_err_init(&e);
    ps_labels_init(&ls);
    ps_labels_init(&target);
    memset(&o, 0, sizeof(o));
    o.notify = on_notify;
    ok(ps_appender_batch_new(&q, &o, &e) == PS_OK, "new");
    if (q == NULL) /* out of memory: only under spec/torture.sh */
        return;
    a = ps_appender_batch_appender(q);
    ok(pop(q) == NULL, "empty queue");
    mkls(&target, "job", "node", "instance", "h:1", NULL);
    mkls(&ls, "__name__", "up", "job", "node", "instance", "h:1", NULL);
    ok(a->vt->append(a, 0, &ls, 1, 1, &r, &e) == PS_ESTATE,
       "append outside a transaction: PS_ESTATE");
    ok(a->vt->commit(a, &e) == PS_ESTATE, "commit outside: PS_ESTATE");

    a->vt->begin(a, &target, &e);
    ok(a->vt->begin(a, &target, &e) == PS_ESTATE, "nested begin: PS_ESTATE");
    ok(a->vt->append(a, 0, &ls, 1000, 1, &r1, &e) == PS_OK && r1 == 1,
       "first series gets ref 1");
    mkls(&ls, "__name__", "a", NULL);
    a->vt->append(a, 0, &ls, 1000, 2.5, &r2, &e);
    mkls(&ls, "__name__", "b", "x", "y", NULL);
    a->vt->append(a, 0, &ls, 1001, -3, &r3, &e);
    ok(r2 == 2 && r3 == 3, "refs are sequential");
    ok(a->vt->append(a, r2, NULL, 1002, 2.75, &r, &e) == PS_OK && r == r2,
       "a second sample of a series in the same transaction");
    ok(a->vt->append(a, 99, NULL, 1, 1, &r, &e) == PS_EINVAL,
       "unknown ref without labels: PS_EINVAL");
    ok(pop(q) == NULL, "nothing queued before commit");
    ok(a->vt->commit(a, &e) == PS_OK && notified == 1,
       "commit queues and notifies");
    b = pop(q);
    ok(b != NULL, "pop a batch");
    ok(b && b->kind == PS_BATCH_COMMIT && b->seq == 1 && b->n == 4 &&
           b->refs[0] == 1 && b->refs[1] == 2 && b->refs[2] == 3 &&
           b->refs[3] == 2 && b->values[1] == 2.5 && b->values[3] == 2.75 &&
           b->ts_ms[2] == 1001,
       "refs, values and timestamps in append order");
    ok(b && b->n_target == 2 && lab_is(&b->lab[0], "instance", "h:1") &&
           lab_is(&b->lab[1], "job", "node"),
       "target labels carried");
    ok(b && b->n_series == 3 && b->series[0].ref == 1 &&
           b->series[2].ref == 3 &&
           b->series[2].n == 2 &&
           lab_is(&b->lab[b->series[2].off], "__name__", "b") &&
           lab_is(&b->lab[b->series[2].off + 1], "x", "y") &&
           lab_is(&b->lab[b->series[1].off], "__name__", "a"),
       "labels of the three first-seen series, once each");
    ps_batch_free(b);

    /* steady state: refs only, plus one new series */
    a->vt->begin(a, &target, &e);
    a->vt->append(a, r1, NULL, 2000, 0, &r, &e);
    mkls(&ls, "__name__", "a", NULL);
    ok(a->vt->append(a, 0, &ls, 2000, 7, &r, &e) == PS_OK && r == r2,
       "ref 0 with known labels finds its ref");
    mkls(&ls, "__name__", "c", NULL);
    a->vt->append(a, 0, &ls, 2000, 8, &r, &e);
    a->vt->commit(a, &e);
    b = pop(q);
    ok(b && b->seq == 2 && b->n == 3 && b->n_series == 1 &&
           b->series[0].ref == 4 &&
           lab_is(&b->lab[b->series[0].off], "__name__", "c"),
       "only the new series carries labels");
    ps_batch_free(b);

    /* rollback */
    a->vt->begin(a, &target, &e);
    a->vt->rollback(a);
    ok(pop(q) == NULL, "rollback of an empty transaction queues nothing");
    a->vt->begin(a, &target, &e);
    a->vt->append(a, r1, NULL, 3000, 1, &r, &e);
    mkls(&ls, "__name__", "d", NULL);
    a->vt->append(a, 0, &ls, 3000, 1, &r, &e);
    a->vt->rollback(a);
    b = pop(q);
    ok(b && b->kind == PS_BATCH_ROLLBACK &&
           b->n == 0 && b->n_series == 0 && b->n_target == 2,
       "rollback after appends queues a rollback event");
    ps_batch_free(b);
    a->vt->begin(a, &target, &e);
    ok(a->vt->append(a, 5, NULL, 4000, 1, &r, &e) == PS_OK,
       "the ref of a series first seen in a rollback stays valid");
    a->vt->commit(a, &e);
    b = pop(q);
    ok(b && b->n_series == 1 && b->series[0].ref == 5 &&
           lab_is(&b->lab[b->series[0].off], "__name__", "d"),
       "its labels go out with the next committed batch");
    ps_batch_free(b);

    /* exemplars and metadata */
    {
        struct ps_metadata md;
        struct ps_exemplar ex;
        struct ps_labels exl;

        ps_labels_init(&exl);
        mkls(&exl, "trace_id", "abc", NULL);
        memset(&ex, 0, sizeof(ex));
        ex.labels = &exl;
        ex.value = 0.5;
        ex.has_ts = 1;
        ex.ts_ms = 5;
        memset(&md, 0, sizeof(md));
        md.type = PS_MTYPE_HISTOGRAM;
        md.help.p = "Latency.";
        md.help.n = 8;
        md.unit.p = "seconds";
        md.unit.n = 7;
        a->vt->begin(a, &target, &e);
        ok(a->vt->append_exemplar(a, r2, NULL, &ex, &e) == PS_OK,
           "append_exemplar");
        ok(a->vt->update_metadata(a, r2, NULL, &md, &e) == PS_OK,
           "update_metadata");
        a->vt->commit(a, &e);
        b = pop(q);
        ok(b && b->n_ex == 1 && b->ex[0].ref == r2 && b->ex[0].value == 0.5 &&
               b->ex[0].has_ts && b->ex[0].ts_ms == 5 && b->ex[0].n == 1 &&
               lab_is(&b->lab[b->ex[0].off], "trace_id", "abc"),
           "exemplar in the batch, labels copied");
        ok(b && b->n_meta == 1 && b->meta[0].type == PS_MTYPE_HISTOGRAM &&
               strcmp(b->meta[0].help.p, "Latency.") == 0 &&
               strcmp(b->meta[0].unit.p, "seconds") == 0 && b->n == 0,
           "metadata in the batch");
        ps_batch_free(b);
        ps_labels_cleanup(&exl);
    }
    ps_appender_batch_stats(q, &st);
    ok(st.batches == 4 && st.rollbacks == 1 && st.samples == 8 &&
           st.pending_batches == 0 && st.series == 5 && st.dropped_samples == 0,
       "counters");
    ps_appender_free(a);
    ps_appender_batch_free(NULL);
    ps_labels_cleanup(&ls);
    ps_labels_cleanup(&target);
}

/* k samples: series named p0..p(k-1) on the first call, refs after. */
static void commit_k(struct ps_appender *a, struct ps_labels *ls, int k,
                     const char *prefix)
{
    struct ps_err e;
    uint64_t r;
    char name[32];
    int i;

    a->vt->begin(a, NULL, &e);
    for (i = 0; i < k; i++) {
        snprintf(name, sizeof(name), "%s%d", prefix, i);
        mkls(ls, "__name__", name, NULL);
        a->vt->append(a, 0, ls, 1, i, &r, &e);
    }
    a->vt->commit(a, &e);
}

static void test_bound(void)
{
    struct ps_appender_batch *q = NULL;
    struct ps_appender_batch_opts o;
    struct ps_appender *a;
    struct ps_labels ls;
    struct ps_batch *b;
    struct ps_batch_stats st;
    struct ps_err e;

    ps_labels_init(&ls);
    memset(&o, 0, sizeof(o));
    o.max_pending_samples = 10;
    if (ps_appender_batch_new(&q, &o, &e) != PS_OK) {
        ok(0, "new"); /* only under spec/torture.sh */
        return;
    }
    a = ps_appender_batch_appender(q);
    commit_k(a, &ls, 4, "s"); /* seq 1: s0..s3 new */
    commit_k(a, &ls, 4, "s"); /* seq 2: same series, no labels */
    ps_appender_batch_stats(q, &st);
    ok(st.pending_samples == 8 && st.dropped_samples == 0, "8 pending");
    commit_k(a, &ls, 4, "s"); /* 12 > 10: the oldest loses its samples */
    ps_appender_batch_stats(q, &st);
    ok(st.dropped_samples == 4 && st.dropped_batches == 1 &&
           st.pending_samples == 8 && st.pending_batches == 3,
       "over the bound: oldest batch's samples dropped and counted");
    b = pop(q);
    ok(b && b->seq == 1 && b->n == 0 &&
           b->dropped == 4 && b->n_series == 4,
       "a dropped batch that announced series keeps its labels");
    ps_batch_free(b);
    commit_k(a, &ls, 4, "s"); /* 12 again: seq 2 has no labels: removed */
    ps_appender_batch_stats(q, &st);
    ok(st.dropped_samples == 8 && st.pending_batches == 2 &&
           st.pending_samples == 8,
       "a dropped batch with nothing else to say is removed");
    b = pop(q);
    ok(b && b->seq == 3 && b->n == 4, "seq shows the gap");
    ps_batch_free(b);
    ps_batch_free(pop(q));
    commit_k(a, &ls, 25, "big"); /* alone larger than the bound */
    ps_appender_batch_stats(q, &st);
    ok(st.pending_samples == 25 && st.pending_batches == 1,
       "the newest batch is always kept");
    b = pop(q);
    ok(b && b->n == 25 && b->n_series == 25, "and delivered whole");
    ps_batch_free(b);
    commit_k(a, &ls, 4, "s");
    ps_appender_free(a); /* frees what is still queued */
    ps_labels_cleanup(&ls);
}

/* Producer and consumer threads: nothing lost without being counted. */
#define ROUNDS 2000
#define PER 50

struct shared {
    struct ps_appender_batch *q;
    volatile int done;
};

static void *producer(void *ud)
{
    struct shared *sh = ud;
    struct ps_appender *a = ps_appender_batch_appender(sh->q);
    struct ps_labels ls;
    uint64_t refs[PER] = {0};
    struct ps_err e;
    char name[32];
    int k, i;

    ps_labels_init(&ls);
    for (k = 0; k < ROUNDS; k++) {
        /* Past the first rounds, spec/torture.sh would fail the same
         * allocations thousands of times over: a countdown that never ends
         * keeps them out of its count (see ps_alloc_fail_at). The consumer
         * only frees. */
        if (k == 10)
            ps_alloc_fail_after(LONG_MAX);
        a->vt->begin(a, NULL, &e);
        for (i = 0; i < PER; i++) {
            snprintf(name, sizeof(name), "t%d", i);
            mkls(&ls, "__name__", name, NULL);
            a->vt->append(a, refs[i], &ls, k, i, &refs[i], &e);
        }
        a->vt->commit(a, &e);
    }
    ps_alloc_fail_after(-1);
    ps_labels_cleanup(&ls);
    __atomic_store_n(&sh->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void test_threads(void)
{
    struct shared sh;
    struct ps_appender_batch_opts o;
    struct ps_batch_stats st;
    struct ps_batch *b;
    struct ps_err e;
    pthread_t th;
    uint64_t got = 0, dropped_seen = 0, last_seq = 0;
    int order = 1, labels_first = 1;
    size_t announced = 0;

    memset(&o, 0, sizeof(o));
    o.max_pending_samples = 500;
    if (ps_appender_batch_new(&sh.q, &o, &e) != PS_OK) {
        ok(0, "new"); /* only under spec/torture.sh */
        return;
    }
    sh.done = 0;
    pthread_create(&th, NULL, producer, &sh);
    for (;;) {
        int done = __atomic_load_n(&sh.done, __ATOMIC_SEQ_CST);

        while (ps_appender_batch_pop(sh.q, &b)) {
            size_t i;

            order &= b->seq > last_seq;
            last_seq = b->seq;
            got += b->n;
            dropped_seen += b->dropped;
            announced += b->n_series;
            for (i = 0; i < b->n; i++)
                labels_first &= b->refs[i] <= announced;
            ps_batch_free(b);
        }
        if (done)
            break;
    }
    pthread_join(th, NULL);
    while (ps_appender_batch_pop(sh.q, &b)) {
        got += b->n;
        ps_batch_free(b);
    }
    ps_appender_batch_stats(sh.q, &st);
    ok(got + st.dropped_samples == (uint64_t)ROUNDS * PER &&
           st.samples == (uint64_t)ROUNDS * PER,
       "two threads: delivered + dropped = produced");
    ok(order, "batches arrive in commit order");
    ok(labels_first && announced == PER,
       "every ref is announced before (or with) its first sample");
    ps_appender_batch_free(sh.q);
}

static int scenario(struct ps_labels *ls, struct ps_labels *target, int *failed)
{
    struct ps_appender_batch *q = NULL;
    struct ps_appender *a;
    struct ps_batch *b;
    struct ps_err e;
    struct ps_metadata md;
    struct ps_exemplar ex;
    uint64_t refs[20] = {0}, r;
    char name[32];
    int rc, round, i, bad = 0;

    *failed = 0;
    rc = ps_appender_batch_new(&q, NULL, &e);
    if (rc != PS_OK) {
        *failed = 1;
        return rc == PS_ENOMEM;
    }
    a = ps_appender_batch_appender(q);
    memset(&md, 0, sizeof(md));
    md.help.p = "h";
    md.help.n = 1;
    memset(&ex, 0, sizeof(ex));
    ex.labels = target;
    for (round = 0; round < 3; round++) {
        rc = a->vt->begin(a, target, &e);
        for (i = 0; i < 20 && rc == PS_OK; i++) {
            snprintf(name, sizeof(name), "m%d", i);
            mkls(ls, "__name__", name, NULL);
            rc = a->vt->append(a, refs[i], ls, round, i, &r, &e);
            if (rc == PS_OK)
                refs[i] = r;
            if (rc == PS_OK && i == 3)
                rc = a->vt->update_metadata(a, r, NULL, &md, &e);
            if (rc == PS_OK && i == 4)
                rc = a->vt->append_exemplar(a, r, NULL, &ex, &e);
        }
        if (rc == PS_OK) {
            rc = a->vt->commit(a, &e);
        } else {
            a->vt->rollback(a); /* a no-op when begin failed */
        }
        if (rc != PS_OK) {
            *failed = 1;
            bad |= rc != PS_ENOMEM;
        }
        if (round == 1) {
            while (ps_appender_batch_pop(q, &b))
                ps_batch_free(b);
        }
    }
    ps_appender_free(a);
    return !bad;
}

static void test_torture(void)
{
    struct ps_labels ls, target;
    long n, need;
    int good = 1, failed = 1, clean;
    char d[96];

    ps_labels_init(&ls);
    ps_labels_init(&target);
    mkls(&ls, "__name__", "x", NULL);
    mkls(&target, "job", "j", "instance", "i", NULL);
    ps_alloc_fail_after(-1);
    clean = scenario(&ls, &target, &failed);
    need = ps_alloc_fail_after(-1);
    ok(clean && !failed, "scenario runs clean without failures");
    for (n = 0; n <= need; n++) {
        ps_alloc_fail_after(n);
        good &= scenario(&ls, &target, &failed);
        ps_alloc_fail_after(-1);
        if (n < need)
            good &= failed;
    }
    snprintf(d, sizeof(d),
             "each of %ld allocations failed in turn: clean errors", need);
    ok(good && need > 0, d);
    ps_labels_cleanup(&ls);
    ps_labels_cleanup(&target);
}

int main(void)
{
    test_basic();
    test_bound();
    test_threads();
    test_torture();
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
