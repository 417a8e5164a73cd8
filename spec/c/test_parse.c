/*
 * spec/c/test_parse.c: ps_parse unit tests, TAP output, exit 1 on failure.
 * Covers the entry stream, views, escapes, numbers, error messages, the
 * sticky end states, buffers without a NUL terminator, and an allocation
 * torture loop (every allocation failed in turn must give PS_ENOMEM).
 */
#include "ps_parse.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TAP bookkeeping: every ok() is one numbered test line. */
static int n_test, n_fail;

static void ok(int cond, const char *desc)
{
    n_test++;
    if (!cond)
        n_fail++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n_test, desc);
}

/* True if the borrowed view holds exactly the C string lit. */
static int str_is(struct ps_str s, const char *lit)
{
    return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

/* Parses body to the end; returns the final code and leaves the message
 * in e. *nseries counts series entries. The body is copied into an exact
 * heap block so ASan catches any read past its end. */
static int run(const char *body, enum ps_format f, int strict,
               struct ps_err *e, int *nseries)
{
    size_t n = strlen(body);
    char *b = malloc(n ? n : 1);
    struct ps_parse_opts o = {f, strict};
    struct ps_parser *p = NULL;
    enum ps_entry k;
    int rc, cnt = 0;

    memcpy(b, body, n);
    ps_err_init(e);
    rc = ps_parse_new(&p, b, n, &o, e);
    while (rc == PS_OK) {
        rc = ps_parse_next(p, &k, e);
        if (rc != PS_OK || k == PS_ENTRY_EOF)
            break;
        cnt += k == PS_ENTRY_SERIES;
    }
    ps_parse_free(p);
    free(b);
    if (nseries != NULL)
        *nseries = cnt;
    return rc;
}

/* True if body parses to the end; prints the error as a TAP comment. */
static int accepts(const char *body, enum ps_format f, int strict)
{
    struct ps_err e;
    int rc = run(body, f, strict, &e, NULL);

    if (rc != PS_OK)
        printf("# unexpected error: %s\n", e.msg);
    return rc == PS_OK;
}

/* True if body is rejected with a message equal to want. */
static int rejects_with(const char *body, enum ps_format f, int strict,
                        const char *want)
{
    struct ps_err e;
    int rc = run(body, f, strict, &e, NULL);

    if (rc != PS_EPARSE || strcmp(e.msg, want) != 0) {
        printf("# got rc=%d msg=\"%s\", want \"%s\"\n", rc, e.msg, want);
        return 0;
    }
    return 1;
}

/* The text format entry stream: metadata, comment, blank line, series with
 * escapes and a timestamp, the quoted UTF-8 name form, sticky EOF, reset. */
static void test_entries(void)
{
    const char *body = "# HELP m Some \\\\ help\\n!\n"
                       "# TYPE m counter\n"
                       "# a comment\n"
                       "\n"
                       "m{a=\"x\\\"y\",b=\"\"} 1.5 1700000000000\n"
                       "{\"my.metric\",\"label.name\"=\"v\"} -Inf\n";
    struct ps_parse_opts o = {PS_FORMAT_TEXT, 0};
    struct ps_parser *p;
    struct ps_err e;
    enum ps_entry k;
    const struct ps_series_view *v;
    const struct ps_meta_view *m;

    if (ps_parse_new(&p, body, strlen(body), &o, &e) != PS_OK) {
        ok(0, "new"); /* only under spec/torture.sh */
        return;
    }
    ok(1, "new");
    ok(ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_HELP, "HELP");
    m = ps_parse_meta(p);
    ok(str_is(m->family, "m") && str_is(m->text, "Some \\ help\n!"),
       "HELP text decoded with the text-format rules");
    ok(ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_TYPE &&
           ps_parse_meta(p)->type == PS_MTYPE_COUNTER,
       "TYPE counter");
    ok(ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_COMMENT &&
           ps_parse_lineno(p) == 3,
       "comment on line 3");
    ok(ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_SERIES,
       "series after a blank line");
    v = ps_parse_series(p);
    ok(ps_parse_lineno(p) == 5, "series on line 5");
    ok(str_is(v->name, "m") && v->nlabels == 2, "name and label count");
    /* nlabels first: after a failed next() (torture) there are none. */
    ok(v->nlabels == 2 && str_is(v->labels[0].name, "a") &&
           str_is(v->labels[0].value, "x\"y"),
       "escaped label value decoded");
    ok(v->nlabels == 2 && str_is(v->labels[1].value, ""),
       "empty label value");
    ok(v->value == 1.5 && v->has_ts && v->ts_ms == 1700000000000LL,
       "value and millisecond timestamp");
    ok(str_is(v->raw, "m{a=\"x\\\"y\",b=\"\"}"), "raw series bytes");
    ok(ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_SERIES,
       "quoted UTF-8 names");
    v = ps_parse_series(p);
    ok(str_is(v->name, "my.metric") && v->nlabels == 1 &&
           str_is(v->labels[0].name, "label.name") &&
           isinf(v->value) && v->value < 0 && !v->has_ts,
       "quoted metric and label name, -Inf");
    ok(ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_EOF, "EOF");
    ok(ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_EOF,
       "EOF is sticky");
    ps_parse_reset(p, "x 2", 3);
    ok(ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_SERIES &&
           ps_parse_series(p)->value == 2,
       "reset reuses the parser");
    ps_parse_free(p);
    ps_parse_free(NULL);
}

/* OpenMetrics: UNIT, HELP escapes, seconds->ms timestamps, exemplars. */
static void test_openmetrics(void)
{
    const char *body = "# TYPE a counter\n"
                       "# UNIT a_seconds seconds\n"
                       "# HELP a h\\\"i\n"
                       "a_total{x=\"1\"} 3 1.5 # {t=\"q\"} 0.5 2.25\n"
                       "# EOF\n";
    struct ps_parse_opts o = {PS_FORMAT_OPENMETRICS, 0};
    struct ps_parser *p;
    struct ps_err e;
    enum ps_entry k;
    const struct ps_series_view *v;

    if (ps_parse_new(&p, body, strlen(body), &o, &e) != PS_OK) {
        ok(0, "OpenMetrics parser"); /* only under spec/torture.sh */
        return;
    }
    ps_parse_next(p, &k, &e);
    ok(ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_UNIT &&
           str_is(ps_parse_meta(p)->text, "seconds"),
       "UNIT");
    ok(ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_HELP &&
           str_is(ps_parse_meta(p)->text, "h\"i"),
       "OpenMetrics HELP also unescapes \\\"");
    ok(ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_SERIES, "series");
    v = ps_parse_series(p);
    ok(v->has_ts && v->ts_ms == 1500, "seconds converted to ms");
    ok(v->has_exemplar && v->exemplar.nlabels == 1 &&
           str_is(v->exemplar.labels[0].name, "t") &&
           v->exemplar.value == 0.5 && v->exemplar.has_ts &&
           v->exemplar.ts_ms == 2250,
       "exemplar");
    ok(ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_EOF, "# EOF");
    ps_parse_free(p);
}

/* Go strconv.ParseFloat spellings accepted by Prometheus, exact results on
 * the fast path and the strtod fallback, canonical NaN bits, and the
 * spellings Prometheus refuses (hex, underscores, overflow, "+nan"). */
static void test_numbers(void)
{
    static const struct {
        const char *in;
        double want; /* NAN: expect NaN */
    } tab[] = {
        {"1", 1},           {"-0.5", -0.5},      {"1e3", 1000},
        {".5", 0.5},        {"1.", 1},           {"+Inf", INFINITY},
        {"inf", INFINITY},  {"-Infinity", -INFINITY},
        {"NaN", NAN},       {"nan", NAN},        {"1.7976931348623157e308", 1.7976931348623157e308},
        {"0.1", 0.1},       {"123456789012345678901234567890", 1.2345678901234568e29},
        {"4.9e-324", 4.9e-324}, {"0000000000000000000000000001.2e-1", 0.12},
    };
    static const char *const bad[] = {"0x1p-3", "1_000", "0x10", "+nan",
                                      "1e",     "e1",    ".",    "1e400",
                                      "infin",  "--1",   "1.2.3"};
    size_t i;
    char body[128], desc[96];

    for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
        struct ps_parse_opts o = {PS_FORMAT_TEXT, 0};
        struct ps_parser *p = NULL;
        struct ps_err e;
        enum ps_entry k;
        double v;
        int good;

        snprintf(body, sizeof(body), "m %s\n", tab[i].in);
        good = ps_parse_new(&p, body, strlen(body), &o, &e) == PS_OK &&
               ps_parse_next(p, &k, &e) == PS_OK && k == PS_ENTRY_SERIES;
        v = good ? ps_parse_series(p)->value : 0;
        if (isnan(tab[i].want)) {
            uint64_t bits;
            memcpy(&bits, &v, sizeof(bits));
            good = good && bits == 0x7ff8000000000001ULL;
        } else {
            good = good && v == tab[i].want;
        }
        snprintf(desc, sizeof(desc), "value %s", tab[i].in);
        ok(good, desc);
        ps_parse_free(p);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ps_err e;
        snprintf(body, sizeof(body), "m %s\n", bad[i]);
        snprintf(desc, sizeof(desc), "value %s rejected", bad[i]);
        ok(run(body, PS_FORMAT_TEXT, 0, &e, NULL) == PS_EPARSE, desc);
    }
}

/* Error messages name the line and the reason; errors are sticky. */
static void test_errors(void)
{
    struct ps_err e;

    ok(rejects_with("ok 1\nok 2\nm{a=} 1\n", PS_FORMAT_TEXT, 0,
                    "line 3: expected label value, got \"}\""),
       "message names line and token");
    ok(rejects_with("a 1\n\n\n\n\n\nm{a=\"1\",a=\"2\"} 1\n", PS_FORMAT_TEXT, 0,
                    "line 7: duplicate label name \"a\""),
       "duplicate label name");
    ok(rejects_with("a 1\nm{a=\"\xff\"} 1\n", PS_FORMAT_TEXT, 0,
                    "line 2: invalid UTF-8 in label value"),
       "invalid UTF-8 in label value");
    ok(rejects_with("m{l01=\"1\",l02=\"1\",l03=\"1\",l04=\"1\",l05=\"1\","
                    "l06=\"1\",l07=\"1\",l08=\"1\",l09=\"1\",l10=\"1\","
                    "l11=\"1\",l12=\"1\",l13=\"1\",l14=\"1\",l15=\"1\","
                    "l16=\"1\",l17=\"1\",l03=\"2\"} 1\n",
                    PS_FORMAT_TEXT, 0, "line 1: duplicate label name \"l03\""),
       "duplicate in a large label set");
    ok(rejects_with("m{__name__=\"x\"} 1\n", PS_FORMAT_TEXT, 0,
                    "line 1: duplicate label name \"__name__\""),
       "__name__ label repeats the metric name");
    ok(rejects_with("a 1\n", PS_FORMAT_OPENMETRICS, 0,
                    "line 2: data does not end with # EOF"),
       "OpenMetrics needs # EOF");
    ok(rejects_with("# EOF\nx", PS_FORMAT_OPENMETRICS, 0,
                    "line 2: unexpected data after # EOF"),
       "nothing after # EOF");
    ok(rejects_with("# TYPE a counter\na_total -1\n# EOF\n",
                    PS_FORMAT_OPENMETRICS, 1,
                    "line 2: counter-like value cannot be negative"),
       "strict: negative counter");
    ok(accepts("# TYPE a counter\na_total -1\n# EOF\n", PS_FORMAT_OPENMETRICS,
               0),
       "default: negative counter accepted like Prometheus");
    {
        /* A NUL at a line start is an error, not a silent end. */
        const char b[] = "a 1\n\0b 2\n";
        struct ps_parse_opts o = {PS_FORMAT_TEXT, 0};
        struct ps_parser *p = NULL;
        enum ps_entry k;
        int rc = ps_parse_new(&p, b, sizeof(b) - 1, &o, &e);
        if (rc == PS_OK)
            rc = ps_parse_next(p, &k, &e);
        if (rc == PS_OK)
            rc = ps_parse_next(p, &k, &e);
        ok(rc == PS_EPARSE && strcmp(e.msg, "line 2: unexpected NUL byte") == 0,
           "NUL at line start rejected");
        ok(p != NULL && ps_parse_next(p, &k, &e) == PS_EPARSE &&
               strcmp(e.msg, "line 2: unexpected NUL byte") == 0,
           "errors are sticky");
        ps_parse_free(p);
    }
    {
        /* A NUL inside a series label value is allowed, as in Prometheus. */
        const char b[] = "a{b=\"x\0y\"} 1\n";
        struct ps_parse_opts o = {PS_FORMAT_TEXT, 0};
        struct ps_parser *p = NULL;
        enum ps_entry k;
        ok(ps_parse_new(&p, b, sizeof(b) - 1, &o, &e) == PS_OK &&
               ps_parse_next(p, &k, &e) == PS_OK &&
               ps_parse_series(p)->labels[0].value.n == 3,
           "NUL inside a label value kept");
        ps_parse_free(p);
    }
}

/* Content-Type mapping. */
static void test_formats(void)
{
    enum ps_format f;
    struct ps_err e;

    ps_err_init(&e);
    ok(ps_parse_format_of("", 0, &f, &e) == PS_OK && f == PS_FORMAT_TEXT,
       "empty content type -> text");
    ok(ps_parse_format_of("text/plain; version=0.0.4", 25, &f, &e) == PS_OK &&
           f == PS_FORMAT_TEXT,
       "text/plain");
    ok(ps_parse_format_of("Application/OpenMetrics-Text; version=1.0.0", 43,
                          &f, &e) == PS_OK &&
           f == PS_FORMAT_OPENMETRICS,
       "openmetrics, any case");
    ok(ps_parse_format_of("application/json", 16, &f, &e) == PS_ENOTSUP &&
           strstr(e.msg, "application/json") != NULL,
       "unsupported type named");
    ok(strcmp(ps_mtype_name(PS_MTYPE_GAUGEHISTOGRAM), "gaugehistogram") == 0,
       "ps_mtype_name");
}

/* 140 zeros make a number too long for the parser's stack copy. */
#define Z10 "0000000000"

/* Every allocation failed in turn must give PS_ENOMEM, never a crash or a
 * leak (LeakSanitizer checks the latter). */
static void test_torture(void)
{
    static const char *const bodies[] = {
        "# HELP m h\\\\\n# TYPE m gauge\nm{a=\"x\\ny\",b=\"2\"} 1\n"
        "m{l01=\"1\",l02=\"1\",l03=\"1\",l04=\"1\",l05=\"1\",l06=\"1\","
        "l07=\"1\",l08=\"1\",l09=\"1\",l10=\"1\",l11=\"1\",l12=\"1\","
        "l13=\"1\",l14=\"1\",l15=\"1\",l16=\"1\",l17=\"1\",l18=\"1\"} "
        "1." Z10 Z10 Z10 Z10 Z10 Z10 Z10 Z10 Z10 Z10 Z10 Z10 Z10 Z10 "1\n",
        "# TYPE a histogram\na_bucket{le=\"1\"} 0 # {t=\"1\"} 1\n"
        "a_bucket{le=\"+Inf\"} 1\na_count 1\na_sum 1\n# TYPE b counter\n"
        "b_total 1\n# EOF\n",
    };
    size_t i;

    for (i = 0; i < 2; i++) {
        enum ps_format f = i == 0 ? PS_FORMAT_TEXT : PS_FORMAT_OPENMETRICS;
        struct ps_err e;
        long need, k;
        int bad = 0;

        /* A first run learns how many allocations a full parse makes;
         * then run k fails the (k+1)th. The first body grows the label
         * array, the scratch buffer, the duplicate table and the number
         * copy; the second (strict) every strict-mode table. */
        ps_alloc_fail_after(-1);
        ok(run(bodies[i], f, (int)i, &e, NULL) == PS_OK, "torture body parses");
        ps_alloc_fail_after(-1);
        run(bodies[i], f, (int)i, &e, NULL);
        need = ps_alloc_fail_after(-1);
        for (k = 0; k < need; k++) {
            int rc;
            ps_alloc_fail_after(k);
            rc = run(bodies[i], f, (int)i, &e, NULL);
            if (rc != PS_ENOMEM)
                bad++;
        }
        ps_alloc_fail_after(-1);
        ok(need > 0 && bad == 0, "each failed allocation gives PS_ENOMEM");
    }
}

int main(void)
{
    test_entries();
    test_openmetrics();
    test_numbers();
    test_errors();
    test_formats();
    test_torture();
    printf("1..%d\n", n_test);
    return n_fail != 0;
}
