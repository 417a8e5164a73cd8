/*
 * spec/c/test_fastline.c: the fast line path (docs/scrape.md) against the
 * full parse.
 *
 * 1. ps_parse_peek_sample()/ps_parse_skip_sample() on their own: which
 *    lines split and how, which are left to the parser, line numbers.
 * 2. The claim of ps_parse.h, on generated bodies: when a peeked raw is
 *    one the parser accepted before (from any body, in either format),
 *    ps_parse_next() on that line gives the same raw, value and
 *    timestamp. Two parsers walk each body, one skipping the lines whose
 *    raw is known, and must see the same entries and the same error.
 * 3. The differential check: two loops scrape the same bodies, one with
 *    full_parse, each into its own memory store through a recorder. Their
 *    logs (every append with labels, value bits, timestamp, the ref given
 *    and the store's answer; metadata; commits and rollbacks; the status
 *    after each scrape) must be identical. Scripted scenarios change
 *    values, timestamps, whitespace and line order between scrapes, mix
 *    hits and misses, quotes and escapes, drops, limits and errors; random
 *    ones mutate generated bodies. Each checks that the fast path ran.
 *
 * Deterministic (fixed seeds), no network, about a second. TAP.
 */
#include "ps_appender_mem.h"
#include "ps_core.h"
#include "ps_engine.h"
#include "ps_loop.h"
#include "ps_parse.h"
#include "ps_relabel.h"
#include "ps_target.h"
#include "testlib.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ------------------------------------------------------ */

/* A growable text buffer (plain malloc: only the core's allocations are
 * counted by the torture runs). */
struct text {
    char *p;
    size_t n, cap;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->cap - t->n < n + 1) {
        size_t cap = t->cap ? t->cap : 1024;
        char *np;
        while (cap - t->n < n + 1)
            cap *= 2;
        np = realloc(t->p, cap);
        if (np == NULL)
            abort();
        t->p = np;
        t->cap = cap;
    }
    memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n] = '\0';
}

static void text_str(struct text *t, const char *s)
{
    text_add(t, s, strlen(s));
}

static void text_printf(struct text *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void text_printf(struct text *t, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        text_add(t, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

static void text_free(struct text *t)
{
    free(t->p);
    memset(t, 0, sizeof(*t));
}

static uint64_t dbits(double d)
{
    uint64_t b;

    memcpy(&b, &d, sizeof(b));
    return b;
}

/* Prints where two logs first differ. */
static void diag_diff(const char *a, const char *b)
{
    size_t i = 0, line = 1, ls = 0;
    char buf[400];

    while (a[i] != '\0' && a[i] == b[i]) {
        if (a[i] == '\n') {
            line++;
            ls = i + 1;
        }
        i++;
    }
    snprintf(buf, sizeof(buf), "log line %zu: fast \"%.150s\"", line, a + ls);
    diag("differs", buf);
    snprintf(buf, sizeof(buf), "log line %zu: full \"%.150s\"", line, b + ls);
    diag("differs", buf);
}

/* ---- 1. the parser API -------------------------------------------------- */

static struct ps_parser *parser_on(const char *body, enum ps_format f)
{
    struct ps_parse_opts o;
    struct ps_parser *p = NULL;

    memset(&o, 0, sizeof(o));
    o.format = f;
    if (ps_parse_new(&p, body, strlen(body), &o, NULL) != PS_OK)
        return NULL;
    return p;
}

/* 1 if the first line of body peeks as raw/value/ts (raw NULL: peeks 0). */
static int peeks(const char *body, const char *raw, double v, int has_ts,
                 int64_t ts)
{
    struct ps_parser *p = parser_on(body, PS_FORMAT_TEXT);
    struct ps_sample_line sl;
    int r, good;

    if (p == NULL)
        return 0;
    r = ps_parse_peek_sample(p, &sl);
    if (raw == NULL)
        good = r == 0;
    else
        good = r == 1 && sl.raw.n == strlen(raw) &&
               memcmp(sl.raw.p, raw, sl.raw.n) == 0 &&
               dbits(sl.value) == dbits(v) && sl.has_ts == has_ts &&
               (!has_ts || sl.ts_ms == ts);
    ps_parse_free(p);
    return good;
}

static void test_peek(void)
{
    ok(peeks("a 1\n", "a", 1, 0, 0), "bare name");
    ok(peeks("a{b=\"c\"} -1.5e3\n", "a{b=\"c\"}", -1500, 0, 0), "labels");
    ok(peeks("a{b=\"c\"}\t 2 \t\n", "a{b=\"c\"}", 2, 0, 0),
       "blanks between and after");
    ok(peeks("a {b=\"c\"} 2", "a {b=\"c\"}", 2, 0, 0),
       "blank inside the raw kept; no final newline");
    ok(peeks("a{b=\"} 1 2\"} 3 4\n", "a{b=\"} 1 2\"}", 3, 1, 4),
       "a quoted '} 1 2' and a timestamp");
    ok(peeks("a{b=\"x y\"} 5\n", "a{b=\"x y\"}", 5, 0, 0),
       "a quoted blank, no timestamp");
    ok(peeks("{\"a.b\",c=\"d\"} 1 1700000000000\n", "{\"a.b\",c=\"d\"}", 1,
             1, 1700000000000LL),
       "quoted metric name");
    {
        struct ps_parser *p = parser_on("a NaN\n", PS_FORMAT_TEXT);
        struct ps_sample_line sl;
        ok(p && ps_parse_peek_sample(p, &sl) == 1 &&
               dbits(sl.value) == 0x7ff8000000000001ULL,
           "NaN as Prometheus's NormalNaN");
        ps_parse_free(p);
    }
    ok(peeks("a +Inf\n", "a", HUGE_VAL, 0, 0), "+Inf");
    ok(peeks("# HELP a x\n", NULL, 0, 0, 0), "comment: not a sample line");
    ok(peeks("\na 1\n", NULL, 0, 0, 0), "blank line");
    ok(peeks(" a 1\n", NULL, 0, 0, 0), "leading blank");
    ok(peeks("a{b=\"x\ny\"} 1\n", NULL, 0, 0, 0), "string over two lines");
    ok(peeks("a{}1\n", NULL, 0, 0, 0), "no blank before the value");
    ok(peeks("a 1x\n", NULL, 0, 0, 0), "bad value");
    ok(peeks("a 1{\n", NULL, 0, 0, 0), "value the parser would split");
    ok(peeks("a 1e400\n", NULL, 0, 0, 0), "value out of range");
    ok(peeks("a 1\r\n", NULL, 0, 0, 0), "carriage return");
    ok(peeks("a 1 -5\n", NULL, 0, 0, 0), "negative timestamp");
    ok(peeks("a 1 99999999999999999999\n", NULL, 0, 0, 0),
       "timestamp out of range");
    ok(peeks("a 1 2 3\n", NULL, 0, 0, 0), "three tokens");
    ok(peeks("a b 1\n", NULL, 0, 0, 0), "not a raw shape");
    ok(peeks("up\xff 1\n", NULL, 0, 0, 0), "a report series key never splits");
    ok(peeks("a\n", NULL, 0, 0, 0), "no value");
    {
        struct ps_parser *p = parser_on("a 1\n", PS_FORMAT_OPENMETRICS);
        struct ps_sample_line sl;
        ok(p && ps_parse_peek_sample(p, &sl) == 0, "OpenMetrics: never");
        ps_parse_free(p);
    }
}

/* Skips count lines, then expects an error naming line `line`. */
static void test_skip_lines(void)
{
    const char *body = "a 1\nb{x=\"y\"} 2 5\n# TYPE c gauge\nc 3\nd 1x\n";
    struct ps_parser *p = parser_on(body, PS_FORMAT_TEXT);
    struct ps_sample_line sl, other;
    const struct ps_series_view *v;
    enum ps_entry ent;
    struct ps_err e;
    int skipped = 0, rc = PS_OK;

    if (p == NULL) {
        ok(0, "parser");
        return;
    }
    ps_err_init(&e);
    ok(ps_parse_peek_sample(p, &other) == 1, "peek the first line");
    for (;;) {
        if (ps_parse_peek_sample(p, &sl)) {
            if (skipped == 1)
                ok(ps_parse_skip_sample(p, &other) == PS_ESTATE,
                   "a stale peek is refused");
            ps_parse_skip_sample(p, &sl);
            v = ps_parse_series(p);
            if (skipped == 1)
                ok(v->has_ts && v->ts_ms == 5 && v->value == 2 &&
                       v->name.n == 0 && v->nlabels == 0 &&
                       ps_parse_lineno(p) == 2,
                   "the series view after a skip: value, timestamp, line");
            skipped++;
            continue;
        }
        rc = ps_parse_next(p, &ent, &e);
        if (rc != PS_OK || ent == PS_ENTRY_EOF)
            break;
    }
    ok(skipped == 3, "three lines skipped");
    ok(rc == PS_EPARSE && strncmp(e.msg, "line 5:", 7) == 0,
       "the error after skips names its line");
    diag("error", e.msg);
    ps_parse_free(p);
}

/* ---- 2. the soundness claim on generated bodies ------------------------- */

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32) % n;
}

#define PICK(a) (a[rnd((uint32_t)(sizeof(a) / sizeof(a[0])))])

static const char *const names[] = {"a", "http_requests_total", "h_bucket",
                                    "up", "x:y", "_z", "s"};
/* Label blocks: valid ones first (NVALID), then broken ones. */
static const char *const blocks[] = {
    "",
    "{}",
    "{a=\"b\"}",
    "{a=\"b\",c=\"d\"}",
    "{ a = \"b\" , c=\"d\" }",
    "{a=\"} 1 2\"}",
    "{a=\"x y\"}",
    "{a=\"\\\" 1\"}",
    "{a=\"\\\\\"}",
    "{a=\"q\\nq\"}",
    "{le=\"1\"}",
    "{le=\"+Inf\"}",
    "{quantile=\"0.5\"}",
    "{a=\"b\",}",
    "{a=\"#\"}",
    "{a=\"{\"}",
    "{a=\"tab\there\"}",
    "{a=\"b\" c=\"d\"}",
    "{a=\"b\"}}",
    "{a=b}",
    "{a=\"b\"",
    "{a=\"b\",a=\"c\"}",
    "{__name__=\"x\"}",
    "{a=\"x\ny\"}",
};
#define NVALID 17
static const char *const gaps[] = {" ", " ", " ", "  ", "\t", " \t"};
static const char *const values[] = {
    "1",    "0",     "-1.5",   "1e3",  "1.5e-3", "NaN",  "+Inf",
    "-Inf", "Inf",   "1e400",  "0x1p3", "1_0",   "1{",   ".5",
    "5.",   "-",     "nan",    "1}",   "12345678901234567890123",
    "7",    "42",    "3.25",   "1e-7", "+5"};
#define NGOODVAL 9
static const char *const stamps[] = {
    "",       "",        "",          " 1000", " 123456789012", "\t7",
    " -5",    " 1.5",    " 1 2",      " 99999999999999999999"};
static const char *const tails[] = {"", "", "", " ", "\t", "\r"};

/* Tails that make a valid series prefix into a line that is not
 * "raw value [timestamp]": the lines most likely to fool a split from the
 * end when the prefix is a known raw. */
static const char *const bad_tails[] = {
    " 1 2 3", "} 1", " {x=\"y\"} 1", " 1{", "x 1", " 1 # c", "  1 2 3 ",
    " 1 2}", " \"1\"", " 1 \"} 2", " 1\r", "1", " 1 +2", " a 1", "{} 1",
    " 1 2 \t3", " 0x10", " 1 2", " NaN 5", " 1e5 00012"};

/* One line. good: only pieces the parser accepts. */
static void gen_line(struct text *t, int good)
{
    const char *blk;

    if (!good && rnd(6) == 0) {
        /* a valid series, then something else */
        text_str(t, PICK(names));
        text_str(t, blocks[rnd(NVALID)]);
        text_str(t, PICK(bad_tails));
        return;
    }
    if (!good && rnd(10) == 0) {
        static const char *const odd[] = {
            "# HELP a help", "# TYPE h_bucket histogram", "", "  a 1",
            "# comment", "# TYPE s summary", "{\"q.name\",a=\"b\"} 3",
            "a{b=\"x\ny\"} 1"};
        text_str(t, PICK(odd));
        return;
    }
    blk = good || rnd(3) != 0 ? blocks[rnd(NVALID)] : PICK(blocks);
    if (blk[0] == '\0' || blk[1] != '\"' || rnd(4) != 0)
        text_str(t, PICK(names));
    if (blk[0] != '\0' && rnd(6) == 0)
        text_str(t, " ");
    text_str(t, blk);
    text_str(t, PICK(gaps));
    text_str(t, good || rnd(3) != 0 ? values[rnd(NGOODVAL)] : PICK(values));
    text_str(t, good || rnd(3) != 0 ? stamps[rnd(6)] : PICK(stamps));
    text_str(t, good || rnd(3) != 0 ? tails[rnd(5)] : PICK(tails));
}

static void gen_body(struct text *t, int lines, int good)
{
    int i;

    for (i = 0; i < lines; i++) {
        gen_line(t, good);
        if (i + 1 < lines || rnd(5) != 0)
            text_str(t, "\n");
    }
}

/* A set of byte strings (raw series seen), open addressing. */
struct rawset {
    char **s;
    size_t *len, cap, n;
};

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    while (n--) {
        h ^= (unsigned char)*s++;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static size_t rawset_slot(const struct rawset *r, const char *s, size_t n)
{
    size_t i = (size_t)fnv(s, n) & (r->cap - 1);

    while (r->s[i] != NULL &&
           !(r->len[i] == n && memcmp(r->s[i], s, n) == 0))
        i = (i + 1) & (r->cap - 1);
    return i;
}

static int rawset_has(const struct rawset *r, struct ps_str k)
{
    return r->cap > 0 && r->s[rawset_slot(r, k.p, k.n)] != NULL;
}

static void rawset_add(struct rawset *r, struct ps_str k)
{
    size_t i;

    if ((r->n + 1) * 2 > r->cap) {
        struct rawset nr;
        nr.cap = r->cap ? r->cap * 2 : 1024;
        nr.n = r->n;
        nr.s = calloc(nr.cap, sizeof(*nr.s));
        nr.len = calloc(nr.cap, sizeof(*nr.len));
        if (nr.s == NULL || nr.len == NULL)
            abort();
        for (i = 0; i < r->cap; i++)
            if (r->s[i] != NULL) {
                size_t j = rawset_slot(&nr, r->s[i], r->len[i]);
                nr.s[j] = r->s[i];
                nr.len[j] = r->len[i];
            }
        free(r->s);
        free(r->len);
        *r = nr;
    }
    i = rawset_slot(r, k.p, k.n);
    if (r->s[i] != NULL)
        return;
    r->s[i] = malloc(k.n + 1);
    if (r->s[i] == NULL)
        abort();
    memcpy(r->s[i], k.p, k.n);
    r->len[i] = k.n;
    r->n++;
}

static void rawset_free(struct rawset *r)
{
    size_t i;

    for (i = 0; i < r->cap; i++)
        free(r->s[i]);
    free(r->s);
    free(r->len);
    memset(r, 0, sizeof(*r));
}

/* Adds the raw bytes of every series the full parser accepts in body. */
static void collect(struct rawset *known, const char *body, size_t len,
                    enum ps_format f)
{
    struct ps_parse_opts o;
    struct ps_parser *p = NULL;
    enum ps_entry ent;

    memset(&o, 0, sizeof(o));
    o.format = f;
    if (ps_parse_new(&p, body, len, &o, NULL) != PS_OK)
        return;
    while (ps_parse_next(p, &ent, NULL) == PS_OK && ent != PS_ENTRY_EOF)
        if (ent == PS_ENTRY_SERIES)
            rawset_add(known, ps_parse_series(p)->raw);
    ps_parse_free(p);
}

/* One entry as a log line: kind, line, and for series raw/value/ts. */
static void log_entry(struct text *t, struct ps_parser *p, enum ps_entry ent)
{
    const struct ps_series_view *v = ps_parse_series(p);

    text_printf(t, "%d@%zu", (int)ent, ps_parse_lineno(p));
    if (ent == PS_ENTRY_SERIES) {
        text_str(t, " ");
        text_add(t, v->raw.p, v->raw.n);
        text_printf(t, " %016llx %d %lld", (unsigned long long)dbits(v->value),
                    v->has_ts, (long long)(v->has_ts ? v->ts_ms : 0));
    }
    text_str(t, "\n");
}

/* Walks body twice, fully and skipping known lines; 1 if the logs agree.
 * Counts: n[0] lines skipped, n[1] peeks of an unknown raw, n[2] lines
 * the peek declined. */
static int walk_both(const struct rawset *known, const char *body,
                     size_t len, size_t *n)
{
    struct ps_parse_opts o;
    struct ps_parser *pf = NULL, *ps = NULL;
    struct text lf = {0}, ls = {0};
    struct ps_err ef, es;
    enum ps_entry ent;
    int rc, same;

    memset(&o, 0, sizeof(o));
    ps_err_init(&ef);
    ps_err_init(&es);
    if (ps_parse_new(&pf, body, len, &o, NULL) != PS_OK ||
        ps_parse_new(&ps, body, len, &o, NULL) != PS_OK) {
        ps_parse_free(pf);
        return 0;
    }
    while ((rc = ps_parse_next(pf, &ent, &ef)) == PS_OK &&
           ent != PS_ENTRY_EOF)
        log_entry(&lf, pf, ent);
    text_printf(&lf, "end %d %s\n", rc, rc == PS_OK ? "" : ef.msg);
    for (;;) {
        struct ps_sample_line sl;
        if (ps_parse_peek_sample(ps, &sl)) {
            if (rawset_has(known, sl.raw)) {
                ps_parse_skip_sample(ps, &sl);
                log_entry(&ls, ps, PS_ENTRY_SERIES);
                n[0]++;
                continue;
            }
            n[1]++;
        } else {
            n[2]++;
        }
        rc = ps_parse_next(ps, &ent, &es);
        if (rc != PS_OK || ent == PS_ENTRY_EOF)
            break;
        log_entry(&ls, ps, ent);
    }
    text_printf(&ls, "end %d %s\n", rc, rc == PS_OK ? "" : es.msg);
    same = strcmp(lf.p, ls.p) == 0;
    if (!same) {
        diag("body", body);
        diag_diff(ls.p, lf.p);
    }
    text_free(&lf);
    text_free(&ls);
    ps_parse_free(pf);
    ps_parse_free(ps);
    return same;
}

static void test_claim(void)
{
    enum { NBODIES = 400 };
    struct text bodies[NBODIES];
    struct rawset known = {0};
    size_t counts[3] = {0, 0, 0}, i;
    int bad = 0;

    memset(bodies, 0, sizeof(bodies));
    for (i = 0; i < NBODIES; i++) {
        /* Past the first bodies, spec/torture.sh would fail the same
         * allocations hundreds of times over: a countdown that never ends
         * keeps them out of its count (see ps_alloc_fail_at). */
        if (i == 20)
            ps_alloc_fail_after(LONG_MAX);
        gen_body(&bodies[i], 3 + (int)rnd(20), i % 4 == 0);
        collect(&known, bodies[i].p, bodies[i].n, PS_FORMAT_TEXT);
    }
    ps_alloc_fail_after(-1);
    /* Raw bytes accepted by the OpenMetrics parser count as known too: a
     * target may switch formats and the cache keeps its keys. */
    for (i = 0; i < 60; i++) {
        struct text om = {0};
        int k;
        for (k = 0; k < 5; k++) {
            const char *blk = blocks[rnd(6)];
            text_printf(&om, "%s%s %s\n", PICK(names), blk, values[rnd(5)]);
        }
        text_str(&om, "# EOF\n");
        collect(&known, om.p, om.n, PS_FORMAT_OPENMETRICS);
        text_free(&om);
    }
    for (i = 0; i < NBODIES; i++) {
        if (i == 20) /* as above */
            ps_alloc_fail_after(LONG_MAX);
        if (!walk_both(&known, bodies[i].p, bodies[i].n, counts))
            bad++;
        text_free(&bodies[i]);
    }
    ps_alloc_fail_after(-1);
    printf("# %zu known raws; %zu lines skipped, %zu peeks of unknown raws, "
           "%zu declined\n",
           known.n, counts[0], counts[1], counts[2]);
    ok(bad == 0, "skipping known lines gives the full parse's entries and "
                 "errors");
    ok(counts[0] > 1000 && counts[1] > 20 && counts[2] > 200,
       "skips, misses and declined lines were all exercised");
    rawset_free(&known);
}

/* ---- 3. the loops ------------------------------------------------------- */

/* An appender that forwards to a memory store and logs everything. */
struct rec {
    struct ps_appender base;
    struct ps_appender_mem *mem;
    struct ps_appender *m;
    struct text log;
};

static void log_labels(struct text *t, const struct ps_labels *ls)
{
    size_t i;

    if (ls == NULL) {
        text_str(t, "{nil}");
        return;
    }
    text_str(t, "{");
    for (i = 0; i < ls->n; i++) {
        text_add(t, ls->v[i].name, ls->v[i].name_len);
        text_str(t, "=");
        text_add(t, ls->v[i].value, ls->v[i].value_len);
        text_str(t, i + 1 < ls->n ? "," : "");
    }
    text_str(t, "}");
}

/* scrape_duration_seconds is wall time: equal only by accident. */
static int is_duration(const struct ps_labels *ls)
{
    const struct ps_label *nm = ls ? ps_labels_get(ls, "__name__", 8) : NULL;

    return nm != NULL && nm->value_len == 23 &&
           memcmp(nm->value, "scrape_duration_seconds", 23) == 0;
}

static int rec_begin(struct ps_appender *a, const struct ps_labels *t,
                     struct ps_err *e)
{
    struct rec *r = (struct rec *)a;
    int rc = r->m->vt->begin(r->m, t, e);

    text_printf(&r->log, "begin %d\n", rc);
    return rc;
}

static int rec_append(struct ps_appender *a, uint64_t ref,
                      const struct ps_labels *ls, int64_t t, double v,
                      uint64_t *ref_out, struct ps_err *e)
{
    struct rec *r = (struct rec *)a;
    int rc = r->m->vt->append(r->m, ref, ls, t, v, ref_out, e);

    text_str(&r->log, "append ");
    log_labels(&r->log, ls);
    if (is_duration(ls))
        text_printf(&r->log, " t=%lld v=duration", (long long)t);
    else
        text_printf(&r->log, " t=%lld v=%016llx", (long long)t,
                    (unsigned long long)dbits(v));
    text_printf(&r->log, " ref=%llu rc=%d out=%llu\n",
                (unsigned long long)ref, rc,
                (unsigned long long)(rc == PS_OK ? *ref_out : 0));
    return rc;
}

static int rec_exemplar(struct ps_appender *a, uint64_t ref,
                        const struct ps_labels *ls,
                        const struct ps_exemplar *ex, struct ps_err *e)
{
    struct rec *r = (struct rec *)a;
    int rc = r->m->vt->append_exemplar(r->m, ref, ls, ex, e);

    text_printf(&r->log, "exemplar ref=%llu v=%016llx rc=%d ",
                (unsigned long long)ref, (unsigned long long)dbits(ex->value),
                rc);
    log_labels(&r->log, ex->labels);
    text_str(&r->log, "\n");
    return rc;
}

static int rec_meta(struct ps_appender *a, uint64_t ref,
                    const struct ps_labels *ls, const struct ps_metadata *m,
                    struct ps_err *e)
{
    struct rec *r = (struct rec *)a;
    int rc = r->m->vt->update_metadata(r->m, ref, ls, m, e);

    text_printf(&r->log, "meta ref=%llu ", (unsigned long long)ref);
    log_labels(&r->log, ls);
    text_printf(&r->log, " %d \"%.*s\" \"%.*s\" rc=%d\n", (int)m->type,
                (int)m->help.n, m->help.p, (int)m->unit.n, m->unit.p, rc);
    return rc;
}

static int rec_commit(struct ps_appender *a, struct ps_err *e)
{
    struct rec *r = (struct rec *)a;
    int rc = r->m->vt->commit(r->m, e);

    text_printf(&r->log, "commit %d\n", rc);
    return rc;
}

static void rec_rollback(struct ps_appender *a)
{
    struct rec *r = (struct rec *)a;

    r->m->vt->rollback(r->m);
    text_str(&r->log, "rollback\n");
}

static void rec_free(struct ps_appender *a)
{
    (void)a; /* the test frees the store itself */
}

static const struct ps_appender_vt rec_vt = {
    rec_begin, rec_append,  rec_exemplar, rec_meta,
    rec_commit, rec_rollback, rec_free};

static struct ps_engine *eng;
static struct ps_target target;
static struct ps_relabel *drop_rule;
static struct ps_relabel_scratch *scratch;

/* One side of the comparison: a loop, its store and its log. */
struct side {
    struct ps_loop_config cfg;
    struct rec rec;
    struct ps_loop *loop;
    uint64_t fast;
};

static int side_init(struct side *s, const struct ps_loop_config *base,
                     int full)
{
    memset(s, 0, sizeof(*s));
    s->cfg = *base;
    s->cfg.full_parse = full;
    s->rec.base.vt = &rec_vt;
    if (ps_appender_mem_new(&s->rec.mem, NULL, NULL) != PS_OK)
        return 0;
    s->rec.m = ps_appender_mem_appender(s->rec.mem);
    return ps_loop_new(&s->loop, eng, &s->rec.base, &s->cfg, &target, 0,
                       NULL, NULL) == PS_OK;
}

static void side_free(struct side *s)
{
    ps_loop_free(s->loop);
    ps_appender_mem_free(s->rec.mem);
    text_free(&s->rec.log);
}

/* One scrape, then the status into the log. */
static void side_scrape(struct side *s, const char *ctype, const char *body,
                        int64_t t)
{
    struct ps_target_status st;

    ps_loop_scrape_body(s->loop, body, strlen(body), ctype, t);
    ps_loop_status(s->loop, &st);
    s->fast += st.last_fast_samples;
    text_printf(&s->rec.log,
                "status health=%d samples=%llu added=%llu dup=%llu "
                "ooo=%llu oob=%llu error=\"%s\"\n",
                (int)st.health, (unsigned long long)st.last_samples,
                (unsigned long long)st.last_series_added,
                (unsigned long long)st.last_duplicates,
                (unsigned long long)st.last_out_of_order,
                (unsigned long long)st.last_out_of_bounds, st.last_error);
}

struct scrape {
    const char *ctype; /* NULL: text */
    const char *body;
};

#define TEXT "text/plain; version=0.0.4"
#define OM "application/openmetrics-text; version=1.0.0"

/* Called on each side before scrape i (may be NULL). */
typedef void (*before_fn)(struct side *s, size_t i);
static before_fn before_scrape;

/* Runs the scrapes on both sides; 1 if the logs agree. *fast: samples the
 * fast side took on the fast path. *log (may be NULL) gets a copy of the
 * fast side's log. */
static int differ(const struct ps_loop_config *base, const struct scrape *sc,
                  size_t n, uint64_t *fast, struct text *log)
{
    struct side a, b;
    size_t i;
    int same = 0;

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    if (side_init(&a, base, 0) && side_init(&b, base, 1)) {
        for (i = 0; i < n; i++) {
            const char *ct = sc[i].ctype ? sc[i].ctype : TEXT;
            if (before_scrape != NULL) {
                before_scrape(&a, i);
                before_scrape(&b, i);
            }
            side_scrape(&a, ct, sc[i].body, 1000 * (int64_t)(i + 1));
            side_scrape(&b, ct, sc[i].body, 1000 * (int64_t)(i + 1));
        }
        same = strcmp(a.rec.log.p, b.rec.log.p) == 0;
        if (!same)
            diag_diff(a.rec.log.p, b.rec.log.p);
        *fast = a.fast;
        if (log != NULL)
            text_str(log, a.rec.log.p);
        if (b.fast != 0)
            same = 0; /* full_parse must never take the fast path */
    }
    side_free(&a);
    side_free(&b);
    return same;
}

static struct ps_loop_config base_cfg(void)
{
    struct ps_loop_config c;

    memset(&c, 0, sizeof(c));
    c.job = "fast";
    c.honor_timestamps = 1;
    c.fallback_format = -1;
    return c;
}

/* A scenario: the same appends on both sides and the fast path used. */
static void scenario(const char *what, const struct ps_loop_config *c,
                     const struct scrape *sc, size_t n)
{
    char desc[160];
    uint64_t fast = 0;
    int same = differ(c, sc, n, &fast, NULL);

    snprintf(desc, sizeof(desc), "%s: same appends (%llu fast)", what,
             (unsigned long long)fast);
    ok(same && fast > 0, desc);
}

#define N(a) (sizeof(a) / sizeof(a[0]))

static void test_scripted(void)
{
    struct ps_loop_config c = base_cfg();

    {
        static const struct scrape s[] = {
            {NULL, "# HELP a An a.\n# TYPE a gauge\na 1\nb{x=\"y\"} 2\n"
                   "c{x=\"y\",z=\"w\"} 3 1000\nd{x=\"y\"} 4\n"},
            /* values, timestamps and blanks outside the raw: hits */
            {NULL, "# HELP a An a.\n# TYPE a gauge\na 5\nb{x=\"y\"}\t6\n"
                   "c{x=\"y\",z=\"w\"}   7   2000  \nd{x=\"y\"} 8 \n"},
            /* blanks inside the raw: other series bytes, misses */
            {NULL, "a  9\nb{x=\"y\"} 10 3000\nc{x=\"y\", z=\"w\"} 11\n"
                   "d {x=\"y\"} 12\n"},
            {NULL, "a 1\nb{x=\"y\"} 2\nc{x=\"y\",z=\"w\"} 3 4000\n"
                   "d{x=\"y\"} 4"},
        };
        scenario("values, timestamps, blanks", &c, s, N(s));
    }
    {
        static const struct scrape s[] = {
            {NULL, "m{x=\"} 1 2\"} 3\nm{x=\"a b\"} 4 5\nm{x=\"\\\" 1\"} 6\n"
                   "m{x=\"\\\\\"} 7\nm{x=\"q\\nq\"} 8\nm{x=\"#\"} 9\n"
                   "m{x=\"{\"} 10\nm{x=\"tab\\there\"} 11\n"
                   "m{x=\"raw\ttab\"} 12\n{\"m.dot\",x=\"y\"} 13\n"
                   "m{x=\"b\",} 14\nm{} 15\n"},
            {NULL, "m{x=\"} 1 2\"} 3 4\nm{x=\"a b\"} 40 50\n"
                   "m{x=\"\\\" 1\"} 60\nm{x=\"\\\\\"} 70\nm{x=\"q\\nq\"} 80\n"
                   "m{x=\"#\"} 90\nm{x=\"{\"} 100\nm{x=\"tab\\there\"} 110\n"
                   "m{x=\"raw\ttab\"} 120\n{\"m.dot\",x=\"y\"} 130\n"
                   "m{x=\"b\",} 140\nm{} 150\n"},
            {NULL, "m{x=\"} 1 2\"} 3 5\nm{x=\"\\\" 1\"} 6\n"
                   "m{x=\"a b\"} 4 5 6\n"},
        };
        scenario("quotes and escapes", &c, s, N(s));
    }
    {
        static const struct scrape s[] = {
            {NULL, "s1 1\ns2 2\ns3{a=\"b\"} 3\ns4 4\ns5{a=\"b\"} 5\ns6 6\n"
                   "s7 7\ns8 8\n"},
            /* reversed, s9 new in the middle, s3 gone (stale) */
            {NULL, "s8 8\ns7 7\ns6 6\ns5{a=\"b\"} 5\ns9 9\ns4 4\ns2 2\n"
                   "s1 1\n"},
            /* s3 back, a repeat, blank lines and comments, a leading
             * blank, no final newline */
            {NULL, "s1 1\n\ns1 2\n# just a comment\ns2 2\n  s3{a=\"b\"} 3\n"
                   "\t\ns4 4\ns9 9"},
            {NULL, "s1 1\ns2 2\ns3{a=\"b\"} 3\ns4 4\ns5{a=\"b\"} 5\ns6 6\n"
                   "s7 7\ns8 8\n"},
        };
        scenario("order, hits and misses, staleness", &c, s, N(s));
    }
    {
        static const struct scrape s[] = {
            {NULL, "a 1 1000\nb{x=\"y\"} 2 1000\nc 3\n"},
            {NULL, "a 1 500\nb{x=\"y\"} 3 1000\nc 3\n"},
            {NULL, "a 2 2000\na 3 2000\nc 4\nc 5\n"},
            {NULL, "a 1 3000\nb{x=\"y\"} 2 99999999999999999999\n"},
            {NULL, "a 1 4000\nb{x=\"y\"} 2\nc 3 4000\n"},
        };
        scenario("timestamps honored", &c, s, N(s));
        c.honor_timestamps = 0;
        scenario("timestamps ignored", &c, s, N(s));
        c.honor_timestamps = 1;
        c.track_timestamps_staleness = 1;
        scenario("timestamps tracked for staleness", &c, s, N(s));
        c.track_timestamps_staleness = 0;
    }
    {
        static const struct scrape s[] = {
            {NULL, "a 1\nb{x=\"y\"} 2\nc 3\nd 4\ne{x=\"y\"} 5\n"},
            {NULL, "a 1\nb{x=\"y\"} 2\nc 3\nd 4\ne{x=\"y\"} 1x\n"},
            {NULL, "a 1\nb{x=\"y\"} 2\nc 3\nd 4 -5\n"},
            {NULL, "a 1\nb{x=\"y\"} 2\nc 3\nd 4\r\n"},
            {NULL, "a 1\nb{x=\"y\"} 2\nc 3\nb{x=\"y\"} 1 2 3\n"},
            {NULL, "a 1\nb{x=\"y\"} 2\nc 3\nb{x=\"y\"}} 1\n"},
            {NULL, "a 1\nb{x=\"y\"} 2\nc 3\nd 4\ne{x=\"y\"} 5\n"},
        };
        struct text log = {0};
        uint64_t fast = 0;
        int same = differ(&c, s, N(s), &fast, &log);
        ok(same && fast > 0, "errors after fast lines: same appends");
        /* log.p stays NULL if a side could not start (torture) */
        ok(log.p != NULL && strstr(log.p, "error=\"line 5:") != NULL,
           "the error names line 5 after four fast lines");
        ok(log.p != NULL && strstr(log.p, "error=\"line 4:") != NULL,
           "errors on line 4 too");
        text_free(&log);
    }
    {
        static const struct scrape s[] = {
            {NULL, "a 1\nb{x=\"y\"} 2\nc 3\n"},
            {NULL, "a 1\nb{x=\"y\"} 2\nc 3\nd 4\n"},
            {NULL, "a 1\nb{x=\"y\"} 2\n"},
        };
        c.sample_limit = 3;
        scenario("sample_limit", &c, s, N(s));
        c.sample_limit = 0;
    }
    {
        /* __name__, instance, job + exposed: 5 labels > 4 for c */
        static const struct scrape s[] = {
            {NULL, "a 1\nb{x=\"1\"} 2\n"},
            {NULL, "a 1\nb{x=\"1\"} 2\nc{x=\"1\",y=\"2\"} 3\n"},
            {NULL, "a 1\nb{x=\"1\"} 2\n"},
            {NULL, "a 1\nb{x=\"1\"} 2\nv{x=\"0123456789abcdef\"} 3\n"},
        };
        c.label_limit = 4;
        c.label_value_length_limit = 12; /* instance is 11 */
        scenario("label limits", &c, s, N(s));
        c.label_limit = 0;
        c.label_value_length_limit = 0;
    }
    if (drop_rule != NULL) {
        static const struct scrape s[] = {
            {NULL, "keep_a 1\ndrop_b 2\nkeep_c{x=\"y\"} 3\n"
                   "drop_d{x=\"y\"} 4\n"},
            {NULL, "keep_a 5\ndrop_b 6\nkeep_c{x=\"y\"} 7\n"
                   "drop_d{x=\"y\"} 8\n"},
            {NULL, "drop_d{x=\"y\"} 8\nkeep_a 5 9000\ndrop_b 6\n"},
        };
        c.metric_relabel = drop_rule;
        c.scratch = scratch;
        scenario("dropped by relabeling", &c, s, N(s));
        c.metric_relabel = NULL;
        c.scratch = NULL;
    }
    {
        static const struct scrape s[] = {
            {NULL, "# HELP h A histogram.\n# TYPE h histogram\n"
                   "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\n"
                   "h_count 2\n# TYPE s summary\ns{quantile=\"0.5\"} 1\n"
                   "s_sum 1\ns_count 1\n"},
            {NULL, "# HELP h Another help.\n# TYPE h histogram\n"
                   "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\n"
                   "h_count 2\n# TYPE s summary\ns{quantile=\"0.5\"} 1\n"
                   "s_sum 1\ns_count 1\n"},
            {NULL, "h_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 2\nh_sum 3\n"
                   "# TYPE s gauge\ns{quantile=\"0.5\"} 1\n"},
            /* a miss after a skipped line: the latest TYPE still decides
             * the le/quantile rewrite ("5" -> "5.0") */
            {NULL, "# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
                   "h_bucket{le=\"5\"} 2\n# TYPE s summary\ns_sum 1\n"
                   "s{quantile=\"1\"} 1\n"},
        };
        scenario("types, le/quantile, metadata", &c, s, N(s));
    }
    {
        /* keys cached from an OpenMetrics parse, then hit from text */
        static const struct scrape s[] = {
            {OM, "# TYPE a gauge\na{b=\"c\"} 1\nd 2 1.5\n# EOF\n"},
            {NULL, "a{b=\"c\"} 3\nd 4 2000\n"},
            {OM, "a{b=\"c\"} 5 # {t=\"x\"} 1\nd 6\n# EOF\n"},
        };
        scenario("OpenMetrics and text alternate", &c, s, N(s));
    }
    {
        static const struct scrape s[] = {
            {NULL, "up 5\nscrape_samples_scraped 3\nx 1\n"},
            {NULL, "up 6\nscrape_samples_scraped 4\nx 2\n"},
        };
        scenario("report series names in the body", &c, s, N(s));
    }
}

/* A metric rule function that may not run yet (background mode): the
 * series are parked and their samples held (the pending table), then
 * resolved and installed. It renames a_* to fn_a_* and drops b_*. */
static int hook_can;

static int hook_can_run(void *ud)
{
    (void)ud;
    return hook_can;
}

static int hook_fn(void *ud, const struct ps_labels *in,
                   struct ps_labels *out, int *dropped, struct ps_err *e)
{
    size_t i;

    (void)ud;
    (void)e;
    for (i = 0; i < in->n; i++) {
        const struct ps_label *x = &in->v[i];
        char nm[64];
        int rc;
        if (x->name_len == 8 && memcmp(x->name, "__name__", 8) == 0) {
            if (x->value_len > 1 && x->value[0] == 'b') {
                *dropped = 1;
                return PS_OK;
            }
            snprintf(nm, sizeof(nm), "fn_%.*s", (int)x->value_len,
                     x->value);
            rc = ps_labels_add(out, x->name, x->name_len, nm, strlen(nm),
                               PS_LABELS_COPY);
        } else {
            rc = ps_labels_add(out, x->name, x->name_len, x->value,
                               x->value_len, PS_LABELS_COPY);
        }
        if (rc != PS_OK)
            return rc;
    }
    return PS_OK;
}

/* Scrapes 0-2 with the function parked; before scrape 3 it resolves
 * (the next scrape installs first). */
static void resolve_before(struct side *s, size_t i)
{
    hook_can = 0;
    if (i == 3) {
        hook_can = 1;
        ps_loop_resolve_deferred(s->loop, 100, NULL);
        hook_can = 0;
    }
}

static void test_deferred(void)
{
    static const struct ps_relabel_hook hook = {
        hook_fn, NULL, NULL, "fn", 0, hook_can_run};
    static const struct ps_relabel_seg seg = {0, 0, &hook};
    static const struct ps_relabel_chain chain = {"metric_relabel_configs",
                                                  NULL, &seg, 1};
    static const struct scrape s[] = {
        {NULL, "a_1 1\nb_1 2\na_2{x=\"y\"} 3\n"},
        {NULL, "a_1 4\nb_1 5\na_2{x=\"y\"} 6\n"},
        {NULL, "a_1 7\nb_1 8\na_2{x=\"y\"} 9 2500\n"},
        {NULL, "a_1 10\nb_1 11\na_2{x=\"y\"} 12\n"},
        {NULL, "a_1 13\nb_1 14\n"},
    };
    struct ps_loop_config c = base_cfg();

    c.metric_chain = &chain;
    c.scratch = scratch;
    before_scrape = resolve_before;
    scenario("a deferred function rule: held, resolved, installed", &c, s,
             N(s));
    before_scrape = NULL;
}

/* Random bodies: a valid base, then mutations of it, on both sides. */
static void mutate(struct text *out, const char *base)
{
    const char *lines[64];
    size_t lens[64], n = 0, i;
    const char *s = base;

    while (*s != '\0' && n < 64) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        lines[n] = s;
        lens[n++] = len;
        s += len + (nl != NULL);
    }
    for (i = 0; n > 1 && i < n; i++) { /* some swaps */
        if (rnd(4) == 0) {
            size_t j = rnd((uint32_t)n);
            const char *tl = lines[i];
            size_t tn = lens[i];
            lines[i] = lines[j];
            lens[i] = lens[j];
            lines[j] = tl;
            lens[j] = tn;
        }
    }
    for (i = 0; i < n; i++) {
        size_t k = lens[i];
        switch (rnd(8)) {
        case 0: /* dropped: goes stale */
            continue;
        case 1: /* a new value (or new blanks) after the raw */
            while (k > 0 && lines[i][k - 1] != ' ' && lines[i][k - 1] != '\t')
                k--;
            text_add(out, lines[i], k);
            text_str(out, values[rnd(NGOODVAL)]);
            break;
        case 2: /* an arbitrary, maybe broken, line first */
            if (rnd(3) == 0) {
                gen_line(out, 0);
                text_str(out, "\n");
            }
            text_add(out, lines[i], k);
            break;
        default:
            text_add(out, lines[i], k);
        }
        text_str(out, "\n");
    }
}

static void test_random(void)
{
    int iter, bad = 0, nofast = 0;
    uint64_t total = 0;

    for (iter = 0; iter < 120; iter++) {
        struct ps_loop_config c = base_cfg();
        struct text b0 = {0}, b1 = {0}, b2 = {0};
        struct scrape s[4];
        uint64_t fast = 0;

        /* The first iterations are enough for spec/torture.sh: the rest
         * repeat the same allocations (see test_claim). */
        if (iter == 8)
            ps_alloc_fail_after(LONG_MAX);
        c.honor_timestamps = rnd(4) != 0;
        c.track_timestamps_staleness = rnd(4) == 0;
        c.sample_limit = rnd(6) == 0 ? 5 + rnd(10) : 0;
        if (drop_rule != NULL && rnd(3) == 0) {
            c.metric_relabel = drop_rule;
            c.scratch = scratch;
        }
        gen_body(&b0, 5 + (int)rnd(25), 1);
        mutate(&b1, b0.p);
        mutate(&b2, b1.p ? b1.p : "");
        s[0] = (struct scrape){NULL, b0.p};
        s[1] = (struct scrape){NULL, b1.p ? b1.p : ""};
        s[2] = (struct scrape){NULL, b2.p ? b2.p : ""};
        s[3] = (struct scrape){NULL, b0.p};
        if (!differ(&c, s, 4, &fast, NULL)) {
            bad++;
            diag("base body", b0.p);
        }
        nofast += fast == 0;
        total += fast;
        text_free(&b0);
        text_free(&b1);
        text_free(&b2);
    }
    ps_alloc_fail_after(-1);
    printf("# random scrapes: %llu samples on the fast path\n",
           (unsigned long long)total);
    ok(bad == 0, "random bodies and mutations: same appends");
    ok(nofast < 10, "the fast path ran in (almost) every random case");
}

int main(void)
{
    struct ps_labels tl;
    struct ps_target_defaults d;
    struct ps_err e;
    struct ps_str name = {"__name__", 8};
    struct ps_relabel_config drop;

    ps_err_init(&e);
    test_peek();
    test_skip_lines();
    test_claim();

    ps_labels_init(&tl);
    ps_target_init(&target);
    memset(&d, 0, sizeof(d));
    d.job = "fast";
    d.interval_ms = 1000;
    d.timeout_ms = 1000;
    ps_labels_add(&tl, "__address__", 11, "127.0.0.1:9", 11, 0);
    memset(&drop, 0, sizeof(drop));
    drop.source_labels = &name;
    drop.n_source_labels = 1;
    drop.regex = (struct ps_str){"drop_.*", 7};
    drop.action = (struct ps_str){"drop", 4};
    if (ps_target_populate(&target, &tl, NULL, &d, NULL, NULL, &e) != PS_OK ||
        ps_engine_new(&eng, NULL, &e) != PS_OK) {
        ok(0, e.msg);
    } else {
        if (ps_relabel_compile(&drop_rule, &drop, 1, 0, &e) != PS_OK ||
            ps_relabel_scratch_new(&scratch) != PS_OK) {
            ok(0, "drop rule");
            /* the tests use the rule only along with its scratch */
            ps_relabel_free(drop_rule);
            drop_rule = NULL;
        }
        test_scripted();
        test_deferred();
        test_random();
    }
    ps_relabel_free(drop_rule);
    ps_relabel_scratch_free(scratch);
    ps_engine_free(eng);
    ps_target_cleanup(&target);
    ps_labels_cleanup(&tl);
    return done_testing();
}
