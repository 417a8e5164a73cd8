/*
 * fuzz_parse: libFuzzer target for the pull parser (ps_parse).
 *
 * Input layout: byte 0 picks the mode (value % 3: 0 text, 1 OpenMetrics
 * default, 2 OpenMetrics strict); the rest is the exposition. The corpus
 * files in spec/fuzz/corpus/parse/ and those spec/fuzz/seed.sh writes carry
 * that byte first.
 *
 * The body is copied into a heap buffer of exactly its size: the parser
 * must not need a NUL terminator, and ASan then flags a read one past the
 * end. Every entry is walked and every byte of every view is read (summed),
 * so a view pointing at freed or foreign memory is caught too.
 *
 * Beyond "no crash", it checks what ps_parse.h promises and aborts if not:
 *   - ps_parse_next returns PS_OK, PS_EPARSE or PS_ENOMEM, and an error
 *     message on PS_EPARSE that starts with "line ";
 *   - after PS_ENTRY_EOF or an error, further calls give the same result;
 *   - a series name is never empty, and the raw series bytes lie inside
 *     the input buffer (they are "bytes exactly as in the input");
 *   - ps_parse_reset on the same buffer gives the same entries again.
 * Built both by clang -fsanitize=fuzzer and, with replay.c, by gcc.
 */
#include "ps_parse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A corrupt parser could report ever more entries; the loop stops here. */
#define MAX_ENTRIES (1u << 20)

/* Where the checksums go, so the compiler keeps every read. */
static volatile uint64_t sink;

/* Aborts with a message: libFuzzer and replay.c report it as a crash. */
static void fail(const char *what, size_t lineno)
{
    fprintf(stderr, "fuzz_parse: contract violated: %s (line %zu)\n", what,
            lineno);
    abort();
}

/* Reads every byte of a view; an empty view may have any pointer. */
static uint64_t touch(struct ps_str s)
{
    uint64_t h = s.n;
    size_t i;

    for (i = 0; i < s.n; i++)
        h = h * 31 + (unsigned char)s.p[i];
    return h;
}

static uint64_t touch_labels(const struct ps_label_view *l, size_t n)
{
    uint64_t h = n;
    size_t i;

    for (i = 0; i < n; i++)
        h += touch(l[i].name) ^ touch(l[i].value);
    return h;
}

static uint64_t touch_double(double d)
{
    uint64_t u;

    memcpy(&u, &d, sizeof(u));
    return u;
}

/* Checksum of the current entry's views; checks the series invariants. */
static uint64_t touch_entry(struct ps_parser *p, enum ps_entry ent,
                            const char *buf, size_t len)
{
    size_t line = ps_parse_lineno(p);
    uint64_t h = (uint64_t)ent * 1000003u + line;

    switch (ent) {
    case PS_ENTRY_SERIES: {
        const struct ps_series_view *s = ps_parse_series(p);

        if (s->name.n == 0)
            fail("empty series name", line);
        if (s->raw.n == 0 || s->raw.p < buf || s->raw.n > len ||
            s->raw.p > buf + (len - s->raw.n))
            fail("raw series view outside the input", line);
        h += touch(s->name) + touch(s->raw);
        h += touch_labels(s->labels, s->nlabels);
        /* The le/quantile rewrite runs on label views of any shape. */
        for (size_t i = 0; i < s->nlabels; i++) {
            char num[PS_FLOAT_FMT_MAX];
            struct ps_str v;
            if (ps_parse_normalize_label(s->mtype, &s->labels[i], num, &v))
                h += (unsigned char)v.p[v.n - 1];
        }
        h += touch_double(s->value);
        if (s->has_ts)
            h += (uint64_t)s->ts_ms;
        if (s->has_exemplar) {
            h += touch_labels(s->exemplar.labels, s->exemplar.nlabels);
            h += touch_double(s->exemplar.value);
            if (s->exemplar.has_ts)
                h += (uint64_t)s->exemplar.ts_ms;
        }
        break;
    }
    case PS_ENTRY_HELP:
    case PS_ENTRY_TYPE:
    case PS_ENTRY_UNIT: {
        const struct ps_meta_view *m = ps_parse_meta(p);

        h += touch(m->family) + touch(m->text);
        if (ent == PS_ENTRY_TYPE)
            h += strlen(ps_mtype_name(m->type));
        break;
    }
    case PS_ENTRY_COMMENT:
        h += touch(ps_parse_comment(p));
        break;
    case PS_ENTRY_EOF:
        break;
    default:
        fail("unknown entry kind", line);
    }
    return h;
}

/*
 * One full walk. Returns the parser's final code and writes the checksum
 * and entry count, so a second walk after ps_parse_reset can be compared.
 */
static int walk(struct ps_parser *p, const char *buf, size_t len,
                uint64_t *sum, size_t *count)
{
    struct ps_err e;
    enum ps_entry ent = PS_ENTRY_EOF;
    uint64_t h = 0;
    size_t n = 0;
    int rc;

    for (;;) {
        ps_err_init(&e);
        rc = ps_parse_next(p, &ent, &e);
        if (rc != PS_OK)
            break;
        h += touch_entry(p, ent, buf, len);
        if (ent == PS_ENTRY_EOF)
            break;
        if (++n > MAX_ENTRIES)
            fail("more entries than input allows", ps_parse_lineno(p));
    }
    if (rc != PS_OK && rc != PS_EPARSE && rc != PS_ENOMEM)
        fail("unexpected return code", ps_parse_lineno(p));
    if (rc == PS_EPARSE && strncmp(e.msg, "line ", 5) != 0)
        fail("parse error message lacks \"line N:\"", ps_parse_lineno(p));
    h += touch((struct ps_str){e.msg, strlen(e.msg)});

    /* Sticky end: the same result again, twice. */
    {
        struct ps_err e2;
        enum ps_entry ent2 = PS_ENTRY_SERIES;
        int i, rc2;

        for (i = 0; i < 2; i++) {
            ps_err_init(&e2);
            rc2 = ps_parse_next(p, &ent2, &e2);
            if (rc2 != rc || (rc == PS_OK && ent2 != PS_ENTRY_EOF))
                fail("result after EOF/error is not sticky",
                     ps_parse_lineno(p));
        }
    }
    *sum = h;
    *count = n;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ps_parse_opts o;
    struct ps_parser *p = NULL;
    struct ps_err e;
    enum ps_format fmt;
    char *buf, *ct;
    size_t len, ctlen, n1, n2;
    uint64_t h1, h2;
    int rc1, rc2;

    if (size < 1)
        return 0;
    memset(&o, 0, sizeof(o)); /* zero-initialised: new fields default off */
    switch (data[0] % 3) {
    case 0:
        o.format = PS_FORMAT_TEXT;
        break;
    case 1:
        o.format = PS_FORMAT_OPENMETRICS;
        break;
    default:
        o.format = PS_FORMAT_OPENMETRICS;
        o.strict = 1;
        break;
    }
    len = size - 1;

    /* The Content-Type sniffer on a prefix, in its own exact buffer. */
    ctlen = len < 96 ? len : 96;
    ct = malloc(ctlen ? ctlen : 1);
    if (ct == NULL)
        return 0;
    memcpy(ct, data + 1, ctlen);
    ps_err_init(&e);
    if (ps_parse_format_of(ct, ctlen, &fmt, &e) == PS_OK)
        sink += (uint64_t)fmt;
    else
        sink += strlen(e.msg);
    free(ct);

    /* Exactly len bytes (malloc(0) may return NULL: then pass a 1-byte
     * buffer with len 0, which the parser must not read). */
    buf = malloc(len ? len : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data + 1, len);

    ps_err_init(&e);
    if (ps_parse_new(&p, buf, len, &o, &e) != PS_OK) {
        free(buf); /* only ENOMEM is expected here; nothing to walk */
        return 0;
    }
    rc1 = walk(p, buf, len, &h1, &n1);
    ps_parse_reset(p, buf, len);
    rc2 = walk(p, buf, len, &h2, &n2);
    /* ENOMEM depends on the allocator, not the input: compare only when
     * neither walk ran out of memory. */
    if (rc1 != PS_ENOMEM && rc2 != PS_ENOMEM &&
        (rc1 != rc2 || n1 != n2 || h1 != h2))
        fail("ps_parse_reset did not replay the same entries",
             ps_parse_lineno(p));
    sink += h1;
    ps_parse_free(p);
    free(buf);
    return 0;
}
