/*
 * spec/c/test_target.c: target label population, URL, hash, offset and
 * durations (ps_target), plus a torture loop that fails each allocation
 * of a population in turn. Cases follow Prometheus's target_test.go and
 * scrape_test.go (TestPopulateLabels). TAP output.
 */
#include "ps_core.h"
#include "ps_labels.h"
#include "ps_relabel.h"
#include "ps_target.h"

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

/* Builds a label set from "name", "value", ... NULL (borrowed strings). */
static void mk(struct ps_labels *ls, const char *const *kv)
{
    ps_labels_init(ls);
    for (; kv[0] != NULL; kv += 2)
        ps_labels_add(ls, kv[0], strlen(kv[0]), kv[1], strlen(kv[1]), 0);
}

/* 1 if ls has name=value. */
static int has(const struct ps_labels *ls, const char *n, const char *v)
{
    const struct ps_label *l = ps_labels_get(ls, n, strlen(n));

    if (v == NULL)
        return l == NULL;
    return l != NULL && l->value_len == strlen(v) &&
           memcmp(l->value, v, l->value_len) == 0;
}

static struct ps_str S(const char *s)
{
    struct ps_str r = {s, s ? strlen(s) : 0};
    return r;
}

static void test_durations(void)
{
    int64_t ms = -1;
    char buf[64];

    ok(ps_duration_parse("15s", 3, &ms) == PS_OK && ms == 15000, "15s");
    ok(ps_duration_parse("1h30m", 5, &ms) == PS_OK && ms == 5400000,
       "1h30m");
    ok(ps_duration_parse("100ms", 5, &ms) == PS_OK && ms == 100, "100ms");
    ok(ps_duration_parse("1m5s100ms", 9, &ms) == PS_OK && ms == 65100,
       "1m5s100ms");
    ok(ps_duration_parse("0", 1, &ms) == PS_OK && ms == 0, "bare 0");
    ok(ps_duration_parse("", 0, &ms) == PS_EINVAL, "empty is invalid");
    ok(ps_duration_parse("5", 1, &ms) == PS_EINVAL, "no unit is invalid");
    ok(ps_duration_parse("1s1m", 4, &ms) == PS_EINVAL,
       "units out of order are invalid");
    ok(ps_duration_parse("1x", 2, &ms) == PS_EINVAL, "unknown unit");
    ps_duration_format(15000, buf, sizeof(buf));
    ok(strcmp(buf, "15s") == 0, "format 15s");
    ps_duration_format(90000, buf, sizeof(buf));
    ok(strcmp(buf, "1m30s") == 0, "format 1m30s");
    ps_duration_format(0, buf, sizeof(buf));
    ok(strcmp(buf, "0s") == 0, "format 0s");
    ps_duration_format(8 * 24 * 3600 * 1000LL, buf, sizeof(buf));
    ok(strcmp(buf, "8d") == 0, "format 8d (weeks only when exact)");
    ps_duration_format(14 * 24 * 3600 * 1000LL, buf, sizeof(buf));
    ok(strcmp(buf, "2w") == 0, "format 2w");
    ps_duration_format(1500, buf, sizeof(buf));
    ok(strcmp(buf, "1s500ms") == 0, "format 1s500ms");
}

static const struct ps_param params[] = {{"module", "http_2xx"},
                                         {"module", "second"},
                                         {"a b", "c&d"}};

static struct ps_target_defaults defaults(void)
{
    struct ps_target_defaults d;

    memset(&d, 0, sizeof(d));
    d.job = "node";
    d.interval_ms = 15000;
    d.timeout_ms = 10000;
    return d;
}

static void test_populate_basic(void)
{
    static const char *const tl[] = {"__address__", "h:9100",
                                     "__meta_x", "m", "env", "prod", NULL};
    static const char *const gl[] = {"env", "group", "team", "a", NULL};
    struct ps_labels t, g;
    struct ps_target tg;
    struct ps_target_defaults d = defaults();
    int rc;

    mk(&t, tl);
    mk(&g, gl);
    ps_target_init(&tg);
    rc = ps_target_populate(&tg, &t, &g, &d, NULL, NULL, NULL);
    ok(rc == PS_OK && tg.state == PS_TARGET_ACTIVE, "basic target active");
    ok(has(&tg.discovered, "job", "node") &&
           has(&tg.discovered, "__scrape_interval__", "15s") &&
           has(&tg.discovered, "__scrape_timeout__", "10s") &&
           has(&tg.discovered, "__metrics_path__", "/metrics") &&
           has(&tg.discovered, "__scheme__", "http") &&
           has(&tg.discovered, "__meta_x", "m"),
       "discovered labels hold the defaults and meta labels");
    ok(has(&tg.discovered, "env", "prod") && has(&tg.discovered, "team", "a"),
       "target labels win over group labels; group labels fill in");
    ok(has(&tg.labels, "instance", "h:9100"), "instance defaults to address");
    ok(has(&tg.labels, "__meta_x", NULL), "__meta_ labels removed");
    ok(has(&tg.labels, "__address__", "h:9100"),
       "other __ labels kept in the full set");
    ok(has(&tg.pub, "__address__", NULL) && has(&tg.pub, "job", "node") &&
           tg.pub.n == 4,
       "public labels: env, instance, job, team");
    ok(tg.url && strcmp(tg.url, "http://h:9100/metrics") == 0, "URL");
    ok(tg.interval_ms == 15000 && tg.timeout_ms == 10000,
       "interval and timeout from labels");
    ok(tg.hash != 0, "hash set");
    ps_target_cleanup(&tg);
    ps_labels_cleanup(&t);
    ps_labels_cleanup(&g);
}

static void test_populate_params(void)
{
    static const char *const tl[] = {"__address__", "h:1",
                                     "__param_target", "x.example", NULL};
    struct ps_labels t;
    struct ps_target tg;
    struct ps_target_defaults d = defaults();

    d.params = params;
    d.n_params = 3;
    d.metrics_path = "/probe";
    d.scheme = "https";
    mk(&t, tl);
    ps_target_init(&tg);
    ok(ps_target_populate(&tg, &t, NULL, &d, NULL, NULL, NULL) == PS_OK,
       "params target populated");
    ok(has(&tg.labels, "__param_module", "http_2xx"),
       "__param_ label gets the first value");
    ok(tg.url && strcmp(tg.url, "https://h:1/probe?a+b=c%26d&module=http_2xx&"
                                "module=second&target=x.example") == 0,
       "URL: sorted, encoded, repeated params, __param_ added");
    if (tg.url)
        printf("# url %s\n", tg.url);
    ps_target_cleanup(&tg);
    ps_labels_cleanup(&t);
}

/* Relabel rules from YAML-ish strings. */
static struct ps_relabel *rules(const struct ps_relabel_config *c, size_t n)
{
    struct ps_relabel *r = NULL;
    struct ps_err e;

    ps_err_init(&e);
    if (ps_relabel_compile(&r, c, n, 0, &e) != PS_OK)
        printf("# compile: %s\n", e.msg);
    return r;
}

static void test_populate_relabel(void)
{
    static const char *const tl[] = {"__address__", "h:9100",
                                     "__meta_port", "9100", NULL};
    struct ps_str src[] = {{"__meta_port", 11}};
    struct ps_relabel_config c[3];
    struct ps_relabel *r;
    struct ps_relabel_scratch *s = NULL;
    struct ps_labels t;
    struct ps_target tg;
    struct ps_target_defaults d = defaults();

    memset(c, 0, sizeof(c));
    c[0].source_labels = src;
    c[0].n_source_labels = 1;
    c[0].target_label = S("port");
    c[1].target_label = S("__scrape_interval__");
    c[1].replacement = S("1m");
    c[2].target_label = S("__tmp_x");
    c[2].replacement = S("y");
    r = rules(c, 3);
    if (ps_relabel_scratch_new(&s) != PS_OK) {
        ok(0, "relabel scratch"); /* only under spec/torture.sh */
        ps_relabel_free(r);
        return;
    }
    mk(&t, tl);
    ps_target_init(&tg);
    ok(ps_target_populate(&tg, &t, NULL, &d, r, s, NULL) == PS_OK &&
           tg.state == PS_TARGET_ACTIVE,
       "relabeled target active");
    ok(has(&tg.pub, "port", "9100"), "relabel copies a meta label");
    ok(tg.interval_ms == 60000, "interval overridden by relabeling");
    ok(has(&tg.pub, "__tmp_x", NULL) && has(&tg.labels, "__tmp_x", "y"),
       "__tmp label not public");
    ok(has(&tg.discovered, "port", NULL),
       "discovered labels are pre-relabeling");
    ps_target_cleanup(&tg);
    ps_relabel_free(r);

    /* drop by relabeling: dropped, reason "" */
    memset(c, 0, sizeof(c));
    c[0].source_labels = src;
    c[0].n_source_labels = 1;
    c[0].regex = S("9100");
    c[0].action = S("drop");
    r = rules(c, 1);
    ok(ps_target_populate(&tg, &t, NULL, &d, r, s, NULL) == PS_OK &&
           tg.state == PS_TARGET_DROPPED && tg.reason &&
           tg.reason[0] == '\0' && tg.discovered.n > 0 && tg.labels.n == 0,
       "dropped by relabeling: empty reason, discovered kept");
    ps_target_cleanup(&tg);
    ps_relabel_free(r);

    /* timeout > interval via relabeling */
    memset(c, 0, sizeof(c));
    c[0].target_label = S("__scrape_timeout__");
    c[0].replacement = S("20s");
    r = rules(c, 1);
    ok(ps_target_populate(&tg, &t, NULL, &d, r, s, NULL) == PS_OK &&
           tg.state == PS_TARGET_DROPPED && tg.reason &&
           strcmp(tg.reason, "scrape timeout cannot be greater than scrape "
                             "interval (\"20s\" > \"15s\")") == 0,
       "timeout > interval: dropped with Prometheus's reason");
    ps_target_cleanup(&tg);
    ps_relabel_free(r);

    memset(c, 0, sizeof(c));
    c[0].target_label = S("__scrape_interval__");
    c[0].replacement = S("soon");
    r = rules(c, 1);
    ok(ps_target_populate(&tg, &t, NULL, &d, r, s, NULL) == PS_OK &&
           tg.state == PS_TARGET_DROPPED && tg.reason &&
           strstr(tg.reason, "error parsing scrape interval") != NULL,
       "bad interval: dropped");
    ps_target_cleanup(&tg);
    ps_relabel_free(r);

    memset(c, 0, sizeof(c));
    c[0].target_label = S("__scrape_interval__");
    c[0].replacement = S("0s");
    r = rules(c, 1);
    ok(ps_target_populate(&tg, &t, NULL, &d, r, s, NULL) == PS_OK &&
           tg.reason && strcmp(tg.reason, "scrape interval cannot be 0") == 0,
       "zero interval: dropped");
    ps_target_cleanup(&tg);
    ps_relabel_free(r);

    ps_relabel_scratch_free(s);
    ps_labels_cleanup(&t);
}

static void test_populate_invalid(void)
{
    static const char *const noaddr[] = {"foo", "bar", NULL};
    static const char *const slash[] = {"__address__", "h:1/x", NULL};
    static const char *const inst[] = {"__address__", "h:1", "instance",
                                       "custom", NULL};
    static const char *const badutf[] = {"__address__", "h:1", "x",
                                         "\xff\xfe", NULL};
    struct ps_labels t;
    struct ps_target tg;
    struct ps_target_defaults d = defaults();

    ps_target_init(&tg);
    mk(&t, noaddr);
    ok(ps_target_populate(&tg, &t, NULL, &d, NULL, NULL, NULL) == PS_OK &&
           tg.state == PS_TARGET_DROPPED && strcmp(tg.reason, "no address") == 0,
       "no address: dropped");
    ps_labels_cleanup(&t);
    mk(&t, slash);
    ok(ps_target_populate(&tg, &t, NULL, &d, NULL, NULL, NULL) == PS_OK &&
           tg.state == PS_TARGET_DROPPED &&
           strcmp(tg.reason, "\"h:1/x\" is not a valid hostname") == 0,
       "address with '/': dropped");
    ps_labels_cleanup(&t);
    mk(&t, inst);
    ok(ps_target_populate(&tg, &t, NULL, &d, NULL, NULL, NULL) == PS_OK &&
           has(&tg.labels, "instance", "custom"),
       "explicit instance kept");
    ps_labels_cleanup(&t);
    mk(&t, badutf);
    ok(ps_target_populate(&tg, &t, NULL, &d, NULL, NULL, NULL) == PS_OK &&
           tg.state == PS_TARGET_DROPPED &&
           strstr(tg.reason, "invalid label value") != NULL,
       "invalid UTF-8 value: dropped");
    ps_labels_cleanup(&t);
    ps_target_cleanup(&tg);
}

static void test_hash_offset(void)
{
    static const char *const a[] = {"__address__", "a:1", NULL};
    static const char *const b[] = {"__address__", "b:1", NULL};
    struct ps_labels la, lb;
    struct ps_target ta, tb, tc;
    struct ps_target_defaults d = defaults();
    uint64_t iv = 15000000000ULL, now = 1700000000123456789ULL;
    uint64_t oa, ob, oa2;

    mk(&la, a);
    mk(&lb, b);
    ps_target_init(&ta);
    ps_target_init(&tb);
    ps_target_init(&tc);
    ps_target_populate(&ta, &la, NULL, &d, NULL, NULL, NULL);
    ps_target_populate(&tb, &lb, NULL, &d, NULL, NULL, NULL);
    ps_target_populate(&tc, &la, NULL, &d, NULL, NULL, NULL);
    ok(ta.hash == tc.hash, "same labels, same hash");
    ok(ta.hash != tb.hash, "different labels, different hash");
    oa = ps_target_offset_ns(ta.hash, 0, iv, now);
    ob = ps_target_offset_ns(tb.hash, 0, iv, now);
    ok(oa <= iv && ob <= iv, "offsets within the interval");
    ok(oa != ob, "offsets differ between targets");
    /* pinned to absolute time: 1 s later the offset is 1 s shorter
     * (modulo the interval) */
    oa2 = ps_target_offset_ns(ta.hash, 0, iv, now + 1000000000ULL);
    ok((oa + iv - oa2) % iv == 1000000000ULL % iv, "offset pinned to time");
    ok(ps_target_offset_ns(ta.hash, 42, iv, now) != oa,
       "the seed changes the offset");
    ok(ps_target_copy(&tc, &ta) == PS_OK && tc.hash == ta.hash &&
           ta.url != NULL && strcmp(tc.url, ta.url) == 0 &&
           tc.pub.n == ta.pub.n,
       "copy");
    ps_target_cleanup(&ta);
    ps_target_cleanup(&tb);
    ps_target_cleanup(&tc);
    ps_labels_cleanup(&la);
    ps_labels_cleanup(&lb);
}

/* Fails every allocation of a full population in turn: each run must
 * return PS_OK or PS_ENOMEM and leak nothing (LSan/valgrind check). */
static void test_torture(void)
{
    static const char *const tl[] = {"__address__", "h:9100", "__meta_a",
                                     "1", "env", "prod", NULL};
    static const char *const gl[] = {"team", "x", NULL};
    struct ps_str src[] = {{"__meta_a", 8}};
    struct ps_relabel_config c[1];
    struct ps_relabel *r;
    struct ps_relabel_scratch *s = NULL;
    struct ps_labels t, g;
    struct ps_target tg, cp;
    struct ps_target_defaults d = defaults();
    long n, i;
    int bad = 0, oks = 0;

    memset(c, 0, sizeof(c));
    c[0].source_labels = src;
    c[0].n_source_labels = 1;
    c[0].target_label = S("a");
    r = rules(c, 1);
    if (r == NULL || ps_relabel_scratch_new(&s) != PS_OK) {
        ok(0, "torture setup"); /* only under spec/torture.sh */
        ps_relabel_free(r);
        return;
    }
    d.params = params;
    d.n_params = 3;
    mk(&t, tl);
    mk(&g, gl);
    ps_target_init(&tg);
    ps_target_init(&cp);
    ps_alloc_fail_after(-1);
    ps_alloc_fail_after(-1); /* reset the counter */
    ps_target_populate(&tg, &t, &g, &d, r, s, NULL);
    ps_target_copy(&cp, &tg);
    n = ps_alloc_fail_after(-1);
    ps_target_cleanup(&tg);
    ps_target_cleanup(&cp);
    for (i = 0; i <= n; i++) {
        int rc;
        ps_alloc_fail_after(i);
        rc = ps_target_populate(&tg, &t, &g, &d, r, s, NULL);
        if (rc == PS_OK)
            rc = ps_target_copy(&cp, &tg);
        ps_alloc_fail_after(-1);
        if (rc != PS_OK && rc != PS_ENOMEM)
            bad++;
        if (rc == PS_OK && (cp.url == NULL || tg.state != PS_TARGET_ACTIVE))
            bad++;
        oks += rc == PS_OK;
        ps_target_cleanup(&tg);
        ps_target_cleanup(&cp);
    }
    printf("# %ld allocations per population+copy\n", n);
    ok(n > 0 && bad == 0 && oks >= 1,
       "allocation failures: PS_ENOMEM, never a crash or leak");
    ps_relabel_free(r);
    ps_relabel_scratch_free(s);
    ps_labels_cleanup(&t);
    ps_labels_cleanup(&g);
}

int main(void)
{
    test_durations();
    test_populate_basic();
    test_populate_params();
    test_populate_relabel();
    test_populate_invalid();
    test_hash_offset();
    test_torture();
    printf("1..%d\n", n_test);
    return n_fail != 0;
}
