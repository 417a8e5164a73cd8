/*
 * spec/c/test_cache.c: the scrape cache (ps_cache): hits and misses by raw
 * series bytes, dropped series, duplicates within a scrape, staleness
 * (cur/prev), metadata, Prometheus's eviction rule including the forced
 * flush, a no-allocation check for steady-state hits, and a torture loop
 * that fails each allocation in turn. TAP output.
 */
#include "ps_cache.h"
#include "ps_core.h"
#include "ps_labels.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

static int n_test, n_fail;

static void ok(int cond, const char *desc)
{
    n_test++;
    if (!cond)
        n_fail++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n_test, desc);
}

static struct ps_str S(const char *s)
{
    struct ps_str r = {s, strlen(s)};
    return r;
}

/* A final label set {__name__=name, k=v}. */
static void lset(struct ps_labels *ls, const char *name, const char *v)
{
    ps_labels_init(ls);
    ps_labels_add(ls, "__name__", 8, name, strlen(name), PS_LABELS_COPY);
    ps_labels_add(ls, "k", 1, v, strlen(v), PS_LABELS_COPY);
    ps_labels_sort(ls);
}

/* Adds raw -> labels and tracks it, as a miss in the loop does. */
static struct ps_cache_entry *add(struct ps_cache *c, const char *raw,
                                  const char *name, const char *v,
                                  uint64_t ref)
{
    struct ps_labels ls;
    struct ps_cache_entry *e = NULL;

    lset(&ls, name, v);
    if (ps_cache_add(c, S(raw), ref, &ls, &e) == PS_OK)
        ps_cache_track(c, e);
    ps_labels_cleanup(&ls);
    return e;
}

/* Records the stale callbacks. */
struct stale_rec {
    int n;
    uint64_t refs[16];
};

static int on_stale(uint64_t ref, const struct ps_labels *ls, void *ud)
{
    struct stale_rec *r = ud;

    (void)ls;
    if (r->n < 16)
        r->refs[r->n] = ref;
    r->n++;
    return 0;
}

static int stale_count(struct ps_cache *c, struct stale_rec *r)
{
    memset(r, 0, sizeof(*r));
    ps_cache_for_each_stale(c, on_stale, r);
    return r->n;
}

/* Touches raw as a hit and tracks it. */
static struct ps_cache_entry *hit(struct ps_cache *c, const char *raw,
                                  int *already)
{
    struct ps_cache_entry *e = ps_cache_get(c, S(raw), already);

    if (e != NULL)
        ps_cache_track(c, e);
    return e;
}

static void test_basic(void)
{
    struct ps_cache c;
    struct ps_cache_entry *a, *b, *x;
    struct stale_rec r;
    int already = -1;

    ps_cache_init(&c);
    ok(ps_cache_get(&c, S("a{k=\"1\"}"), &already) == NULL, "miss");
    a = add(&c, "a{k=\"1\"}", "a", "1", 11);
    b = add(&c, "a{k=\"2\"}", "a", "2", 12);
    ok(a && b && ps_cache_nseries(&c) == 2, "two series added");
    ok(a && a->lset.n == 2 && memcmp(a->lset.v[0].name, "__name__", 8) == 0,
       "entry owns sorted labels with __name__");
    x = ps_cache_get(&c, S("a{k=\"1\"}"), &already);
    ok(x != NULL && x == a && x->ref == 11 && already == 1,
       "same scrape: hit reports already seen (duplicate)");
    ok(stale_count(&c, &r) == 0, "nothing stale on the first scrape");
    ps_cache_iter_done(&c, 1);

    /* scrape 2: only a */
    x = hit(&c, "a{k=\"1\"}", &already);
    ok(x == a && already == 0, "next scrape: hit, not a duplicate");
    ok(stale_count(&c, &r) == 1 && r.refs[0] == 12,
       "the vanished series is stale");
    ps_cache_iter_done(&c, 1);
    ok(ps_cache_nseries(&c) == 1,
       "flush evicts entries not seen in the last scrape");

    /* scrape 3: a again, b comes back as a new entry */
    hit(&c, "a{k=\"1\"}", &already);
    ok(ps_cache_get(&c, S("a{k=\"2\"}"), &already) == NULL,
       "evicted series is a miss again");
    b = add(&c, "a{k=\"2\"}", "a", "2", 13);
    ok(stale_count(&c, &r) == 0, "nothing stale");
    ps_cache_iter_done(&c, 1);

    /* a failed scrape: drop current, everything of the last scrape stale */
    hit(&c, "a{k=\"1\"}", &already);
    ps_cache_drop_current(&c);
    ok(stale_count(&c, &r) == 2, "failed scrape: all previous series stale");
    ps_cache_iter_done(&c, 0);
    ok(ps_cache_nseries(&c) == 2, "no flush after a failed scrape");
    ok(stale_count(&c, &r) == 0, "nothing stale twice");
    hit(&c, "a{k=\"1\"}", &already);
    ok(already == 0, "after a failed scrape, a hit is not a duplicate");
    ps_cache_cleanup(&c);
    ps_cache_cleanup(&c); /* idempotent */
}

static void test_same_labels_two_raw(void)
{
    struct ps_cache c;
    struct stale_rec r;
    int already;

    ps_cache_init(&c);
    /* Two raw forms (label order differs) map to one final set. */
    add(&c, "m{k=\"1\",j=\"\"}", "m", "1", 5);
    add(&c, "m{j=\"\",k=\"1\"}", "m", "1", 5);
    ps_cache_iter_done(&c, 1);
    hit(&c, "m{j=\"\",k=\"1\"}", &already);
    ok(stale_count(&c, &r) == 0,
       "staleness is by final labels, not raw bytes");
    ps_cache_cleanup(&c);
}

static void test_dropped(void)
{
    struct ps_cache c;

    ps_cache_init(&c);
    ok(!ps_cache_get_dropped(&c, S("x")), "not dropped");
    ok(ps_cache_add_dropped(&c, S("x")) == PS_OK &&
           ps_cache_get_dropped(&c, S("x")) && ps_cache_ndropped(&c) == 1,
       "dropped cached");
    ok(ps_cache_add_dropped(&c, S("x")) == PS_OK && ps_cache_ndropped(&c) == 1,
       "adding twice keeps one");
    ps_cache_iter_done(&c, 1);
    ps_cache_iter_done(&c, 1);
    ok(ps_cache_ndropped(&c) == 0, "unseen dropped entries are evicted");
    ps_cache_cleanup(&c);
}

static void test_meta(void)
{
    struct ps_cache c;
    const struct ps_cache_meta *m;
    int i;

    ps_cache_init(&c);
    ps_cache_set_type(&c, S("http_requests"), PS_MTYPE_COUNTER);
    ps_cache_set_help(&c, S("http_requests"), S("Requests."));
    ps_cache_set_unit(&c, S("http_requests"), S("requests"));
    m = ps_cache_meta(&c, S("http_requests"));
    ok(m && m->type == PS_MTYPE_COUNTER && strcmp(m->help, "Requests.") == 0 &&
           strcmp(m->unit, "requests") == 0,
       "metadata by family");
    ok(ps_cache_meta(&c, S("other")) == NULL, "unknown family");
    ps_cache_iter_done(&c, 1);
    ps_cache_set_help(&c, S("http_requests"), S("Requests."));
    m = ps_cache_meta(&c, S("http_requests"));
    ok(m && m->last_iter_change == 0 && m->last_iter == 1,
       "same help: seen, not changed");
    ps_cache_set_help(&c, S("http_requests"), S("Changed."));
    ok(m && m->last_iter_change == 1, "new help: changed");
    /* last seen in iteration 1; the check is iter - last_iter > 10 */
    for (i = 0; i < 11; i++)
        ps_cache_iter_done(&c, 1);
    ok(ps_cache_nmeta(&c) == 1, "metadata kept 10 scrapes after last seen");
    ps_cache_iter_done(&c, 1);
    ok(ps_cache_nmeta(&c) == 0, "then evicted");
    ps_cache_cleanup(&c);
}

static void test_forced_flush(void)
{
    struct ps_cache c;
    char raw[32];
    int i;

    ps_cache_init(&c);
    add(&c, "keep", "keep", "1", 1);
    ps_cache_iter_done(&c, 1); /* successful_count = 1 */
    /* failed scrapes with ever-new series: 1 * 2 + 1000 is the bound */
    for (i = 0; i < 1002; i++) {
        /* Past the first few, spec/torture.sh would fail the same
         * allocations a thousand times over: a countdown that never ends
         * keeps them out of its count (see ps_alloc_fail_at). */
        if (i == 10)
            ps_alloc_fail_after(LONG_MAX);
        snprintf(raw, sizeof(raw), "s%d", i);
        add(&c, raw, "s", raw, 0);
    }
    ps_alloc_fail_after(-1);
    ps_cache_iter_done(&c, 0);
    ok(c.forced_flushes == 1 && ps_cache_nseries(&c) == 1002,
       "cache past 2x+1000 after failures: forced flush keeps only the last "
       "scrape's entries");
    ps_cache_iter_done(&c, 0);
    ok(ps_cache_nseries(&c) == 1002 && c.forced_flushes == 1,
       "below the bound: no flush");
    ps_cache_cleanup(&c);
}

/* A hit allocates nothing: the steady-state promise of the cache. */
static void test_no_alloc_on_hit(void)
{
    struct ps_cache c;
    char raw[32];
    int i, already;
    long n;

    ps_cache_init(&c);
    for (i = 0; i < 100; i++) {
        snprintf(raw, sizeof(raw), "m{i=\"%d\"}", i);
        add(&c, raw, "m", raw, (uint64_t)i + 1);
    }
    ps_cache_iter_done(&c, 1);
    for (i = 0; i < 100; i++) { /* warm: cur grows to size once */
        snprintf(raw, sizeof(raw), "m{i=\"%d\"}", i);
        hit(&c, raw, &already);
    }
    ps_cache_iter_done(&c, 1);
    ps_alloc_fail_after(-1);
    for (i = 0; i < 100; i++) {
        snprintf(raw, sizeof(raw), "m{i=\"%d\"}", i);
        hit(&c, raw, &already);
    }
    {
        struct stale_rec r;
        stale_count(&c, &r);
    }
    ps_cache_iter_done(&c, 1);
    n = ps_alloc_fail_after(-1);
    ok(n == 0, "a steady-state scrape of 100 hits allocates nothing");
    ps_cache_cleanup(&c);
}

/* One scripted scenario, run under every allocation failure point. */
static int scenario(void)
{
    struct ps_cache c;
    struct ps_labels ls;
    struct ps_cache_entry *e;
    struct stale_rec r;
    int rc = PS_OK, already;

    ps_cache_init(&c);
    lset(&ls, "a", "1");
    if (ls.n != 2)
        rc = PS_ENOMEM;
    if (rc == PS_OK)
        rc = ps_cache_add(&c, S("a1"), 1, &ls, &e);
    if (rc == PS_OK)
        rc = ps_cache_track(&c, e);
    if (rc == PS_OK)
        rc = ps_cache_add_dropped(&c, S("d"));
    if (rc == PS_OK)
        rc = ps_cache_set_type(&c, S("a"), PS_MTYPE_GAUGE);
    if (rc == PS_OK)
        rc = ps_cache_set_help(&c, S("a"), S("help"));
    if (rc == PS_OK)
        rc = ps_cache_set_unit(&c, S("a"), S("u"));
    ps_cache_iter_done(&c, rc == PS_OK);
    if (rc == PS_OK) {
        e = ps_cache_get(&c, S("a1"), &already);
        if (e == NULL)
            rc = -100; /* a logic error, not an allocation failure */
    }
    stale_count(&c, &r);
    ps_labels_cleanup(&ls);
    ps_cache_cleanup(&c);
    return rc;
}

static void test_torture(void)
{
    long n, i;
    int bad = 0;

    ps_alloc_fail_after(-1);
    ok(scenario() == PS_OK, "torture scenario passes without failures");
    n = ps_alloc_fail_after(-1);
    for (i = 0; i < n; i++) {
        int rc;
        ps_alloc_fail_after(i);
        rc = scenario();
        ps_alloc_fail_after(-1);
        if (rc != PS_ENOMEM && rc != PS_OK)
            bad++;
    }
    printf("# %ld allocations in the scenario\n", n);
    ok(n > 0 && bad == 0, "every allocation failure is PS_ENOMEM, no leak");
}

/* One scrape of raws[0..n) in that order, as the loop does: get, then
 * add on a miss (same raw bytes), track. Returns the misses; ents[i] gets
 * each entry. */
static int scrape_seq(struct ps_cache *c, const char *const *raws, size_t n,
                      struct ps_cache_entry **ents)
{
    int misses = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        struct ps_str raw = S(raws[i]);
        int already = 0;
        struct ps_cache_entry *e = ps_cache_get(c, raw, &already);
        if (e == NULL) {
            struct ps_labels ls;
            misses++;
            lset(&ls, "m", raws[i]);
            if (ps_cache_add(c, raw, 100 + i, &ls, &e) != PS_OK)
                e = NULL;
            ps_labels_cleanup(&ls);
        }
        if (e != NULL)
            ps_cache_track(c, e);
        ents[i] = e;
    }
    return misses;
}

/* The scrape-order fast path: hits by position, reordering, a vanished
 * series evicted under a recorded position, the metadata change flag. */
static void test_scrape_order(void)
{
    static const char *const s1[] = {"m{a=\"0\"}", "m{a=\"1\"}", "m{a=\"2\"}",
                                     "m{a=\"3\"}"};
    static const char *const s3[] = {"m{a=\"3\"}", "m{a=\"1\"}", "m{a=\"4\"}",
                                     "m{a=\"0\"}"};
    struct ps_cache c;
    struct ps_cache_entry *e1[4], *e2[4], *e3[4], *e4[4];
    struct stale_rec r;
    int ok_all = 1;
    size_t i;

    ps_cache_init(&c);
    ok(scrape_seq(&c, s1, 4, e1) == 4, "order: first scrape all misses");
    ps_cache_iter_done(&c, 1);
    ok(scrape_seq(&c, s1, 4, e2) == 0, "order: same order, all hits");
    for (i = 0; i < 4; i++)
        ok_all &= e2[i] == e1[i] && e2[i]->key_len == strlen(s1[i]) &&
                  memcmp(e2[i]->key, s1[i], e2[i]->key_len) == 0;
    ok(ok_all, "order: hits return the right entries");
    ok(stale_count(&c, &r) == 0, "order: nothing stale");
    ps_cache_iter_done(&c, 1);
    ok(scrape_seq(&c, s3, 4, e3) == 1, "order: reordered, one new series");
    ok(e3[0] == e1[3] && e3[1] == e1[1] && e3[3] == e1[0] && e3[2] != NULL,
       "order: reordered hits return the right entries");
    ok(stale_count(&c, &r) == 1 && r.refs[0] == 102,
       "order: the vanished series gets one stale marker");
    ps_cache_iter_done(&c, 1);
    ok(ps_cache_nseries(&c) == 4, "order: the vanished series evicted");
    /* the previous order held the evicted entry at position 2 before */
    ok(scrape_seq(&c, s1, 4, e4) == 1, "order: evicted series is a miss");
    ok(e4[0] == e1[0] && e4[1] == e1[1] && e4[3] == e1[3] && e4[2] != NULL,
       "order: back to the first order");
    ok(stale_count(&c, &r) == 1 && r.refs[0] == 102,
       "order: the series gone in this scrape is stale");
    ps_cache_iter_done(&c, 0);
    ok(!ps_cache_meta_changed(&c), "meta: no change flagged yet");
    ps_cache_set_type(&c, S("m"), PS_MTYPE_GAUGE);
    ok(ps_cache_meta_changed(&c), "meta: a new family is a change");
    ps_cache_iter_done(&c, 1);
    ps_cache_set_type(&c, S("m"), PS_MTYPE_GAUGE);
    ok(!ps_cache_meta_changed(&c), "meta: same type is no change");
    ps_cache_set_help(&c, S("m"), S("h"));
    ok(ps_cache_meta_changed(&c), "meta: new help is a change");
    ps_cache_cleanup(&c);
}

int main(void)
{
    test_basic();
    test_same_labels_two_raw();
    test_dropped();
    test_meta();
    test_forced_flush();
    test_scrape_order();
    test_no_alloc_on_hit();
    test_torture();
    printf("1..%d\n", n_test);
    return n_fail != 0;
}
