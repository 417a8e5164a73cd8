/* ps_pb.c: see ps_pb.h. */
#include "ps_pb.h"

#include <string.h>

/* Wire types and the tags (field << 3 | wire type) of the schema. */
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2 };
#define TAG(field, wt) ((unsigned char)((field) << 3 | (wt)))

#define T_REQ_SERIES TAG(1, WT_LEN)
#define T_REQ_META TAG(3, WT_LEN)
#define T_TS_LABEL TAG(1, WT_LEN)
#define T_TS_SAMPLE TAG(2, WT_LEN)
#define T_TS_EXEMPLAR TAG(3, WT_LEN)
#define T_LABEL_NAME TAG(1, WT_LEN)
#define T_LABEL_VALUE TAG(2, WT_LEN)
#define T_SAMPLE_VALUE TAG(1, WT_I64)
#define T_SAMPLE_TS TAG(2, WT_VARINT)
#define T_EX_LABEL TAG(1, WT_LEN)
#define T_EX_VALUE TAG(2, WT_I64)
#define T_EX_TS TAG(3, WT_VARINT)
#define T_MD_TYPE TAG(1, WT_VARINT)
#define T_MD_FAMILY TAG(2, WT_LEN)
#define T_MD_HELP TAG(4, WT_LEN)
#define T_MD_UNIT TAG(5, WT_LEN)

unsigned ps_pb_mtype(enum ps_mtype t)
{
    switch (t) {
    case PS_MTYPE_COUNTER:
        return 1;
    case PS_MTYPE_GAUGE:
        return 2;
    case PS_MTYPE_HISTOGRAM:
        return 3;
    case PS_MTYPE_GAUGEHISTOGRAM:
        return 4;
    case PS_MTYPE_SUMMARY:
        return 5;
    case PS_MTYPE_INFO:
        return 6;
    case PS_MTYPE_STATESET:
        return 7;
    default: /* unknown and untyped */
        return 0;
    }
}

/* ---- sizes --------------------------------------------------------------- */

/* Sizes are computed before writing because a length-delimited field's
 * length precedes its payload; each helper mirrors one put_* below. */
static size_t varint_size(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* A length-delimited field of n payload bytes, tag included. */
static size_t len_field(size_t n)
{
    return 1 + varint_size(n) + n;
}

/* Proto3 omits defaults; +0.0 is the only double default (-0.0 differs in
 * its bits and is kept, so it survives the round trip). */
static int double_is_default(double v)
{
    uint64_t b;

    memcpy(&b, &v, sizeof(b));
    return b == 0;
}

/* A string field, or nothing when empty (proto3 default). */
static size_t str_field(size_t n)
{
    return n ? len_field(n) : 0;
}

/* A Label message's payload. */
static size_t label_size(const struct ps_label *l)
{
    return str_field(l->name_len) + str_field(l->value_len);
}

static size_t labels_size(const struct ps_label *v, size_t n)
{
    size_t s = 0, i;

    for (i = 0; i < n; i++)
        s += len_field(label_size(&v[i]));
    return s;
}

/* A Sample's payload (an Exemplar's value and timestamp too: same shape,
 * other field numbers). int64 timestamps are varints of their two's
 * complement, so a negative one takes 10 bytes. */
static size_t sample_size(double v, int64_t ts)
{
    return (double_is_default(v) ? 0 : 1 + 8) +
           (ts ? 1 + varint_size((uint64_t)ts) : 0);
}

static size_t exemplar_size(const struct ps_pb_exemplar *x)
{
    return labels_size(x->labels, x->n_labels) +
           sample_size(x->value, x->ts_ms);
}

/* The TimeSeries message payload (without its own tag and length). */
static size_t series_payload(const struct ps_pb_series *s)
{
    size_t n = labels_size(s->labels, s->n_labels), i;

    for (i = 0; i < s->n_samples; i++)
        n += len_field(sample_size(s->samples[i].value, s->samples[i].ts_ms));
    for (i = 0; i < s->n_exemplars; i++)
        n += len_field(exemplar_size(&s->exemplars[i]));
    return n;
}

size_t ps_pb_series_size(const struct ps_pb_series *s)
{
    return len_field(series_payload(s));
}

/* ---- the writer ---------------------------------------------------------- */

/*
 * Every message's size is known before it is written (the *_size functions
 * above), so an add reserves the whole field once and then stores bytes
 * through a plain pointer, with no per-field checks. ps_buf has no reserve
 * call, so reserve() grows it the way ps_buf.c does (doubling, the cap
 * honoured, room for the NUL), through the struct's documented fields.
 */
static int reserve(struct ps_buf *b, size_t n)
{
    size_t need, ncap;
    char *np;

    if (n > b->max - b->len)
        return PS_ELIMIT;
    need = b->len + n + 1;
    if (need <= b->cap)
        return PS_OK;
    ncap = b->cap ? b->cap : 64;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    if (ncap > b->max + 1)
        ncap = b->max + 1 > need ? b->max + 1 : need;
    np = ps_realloc(b->p, ncap);
    if (np == NULL)
        return PS_ENOMEM;
    b->p = np;
    b->cap = ncap;
    return PS_OK;
}

/* The put_* helpers write at w (room was reserved) and return the end. */
static unsigned char *put_varint(unsigned char *w, uint64_t v)
{
    while (v >= 0x80) {
        *w++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *w++ = (unsigned char)v;
    return w;
}

/* fixed64, little-endian on the wire whatever the host order */
static unsigned char *put_double(unsigned char *w, double d)
{
    uint64_t b;
    int i;

    memcpy(&b, &d, sizeof(b));
    for (i = 0; i < 8; i++)
        *w++ = (unsigned char)(b >> (8 * i));
    return w;
}

static unsigned char *put_len(unsigned char *w, unsigned char tag, size_t n)
{
    *w++ = tag;
    return put_varint(w, n);
}

static unsigned char *put_str(unsigned char *w, unsigned char tag,
                              const char *p, size_t n)
{
    if (n == 0)
        return w;
    w = put_len(w, tag, n);
    memcpy(w, p, n);
    return w + n;
}

static unsigned char *put_labels(unsigned char *w, unsigned char tag,
                                 const struct ps_label *v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        w = put_len(w, tag, label_size(&v[i]));
        w = put_str(w, T_LABEL_NAME, v[i].name, v[i].name_len);
        w = put_str(w, T_LABEL_VALUE, v[i].value, v[i].value_len);
    }
    return w;
}

/* value and timestamp fields of a Sample or an Exemplar */
static unsigned char *put_point(unsigned char *w, unsigned char vtag,
                                unsigned char ttag, double v, int64_t ts)
{
    if (!double_is_default(v)) {
        *w++ = vtag;
        w = put_double(w, v);
    }
    if (ts != 0) {
        *w++ = ttag;
        w = put_varint(w, (uint64_t)ts); /* int64: two's complement */
    }
    return w;
}

/* Where the next field goes: just past the content. */
static unsigned char *tail(struct ps_buf *b)
{
    return (unsigned char *)b->p + b->len;
}

/* Commits what was written up to w (never more than was reserved). */
static void done(struct ps_buf *b, unsigned char *w)
{
    b->len = (size_t)(w - (unsigned char *)b->p);
    b->p[b->len] = '\0';
}

int ps_pb_add_series(struct ps_buf *b, const struct ps_pb_series *s)
{
    size_t payload = series_payload(s), i;
    unsigned char *w;
    int rc = reserve(b, len_field(payload));

    if (rc != PS_OK)
        return rc;
    w = put_len(tail(b), T_REQ_SERIES, payload);
    w = put_labels(w, T_TS_LABEL, s->labels, s->n_labels);
    for (i = 0; i < s->n_samples; i++) {
        const struct ps_pb_sample *p = &s->samples[i];
        w = put_len(w, T_TS_SAMPLE, sample_size(p->value, p->ts_ms));
        w = put_point(w, T_SAMPLE_VALUE, T_SAMPLE_TS, p->value, p->ts_ms);
    }
    for (i = 0; i < s->n_exemplars; i++) {
        const struct ps_pb_exemplar *x = &s->exemplars[i];
        w = put_len(w, T_TS_EXEMPLAR, exemplar_size(x));
        w = put_labels(w, T_EX_LABEL, x->labels, x->n_labels);
        w = put_point(w, T_EX_VALUE, T_EX_TS, x->value, x->ts_ms);
    }
    done(b, w);
    return PS_OK;
}

int ps_pb_add_metadata(struct ps_buf *b, const struct ps_pb_metadata *m)
{
    unsigned t = ps_pb_mtype(m->type);
    size_t n = (t ? 2 : 0) + str_field(m->family.n) + str_field(m->help.n) +
               str_field(m->unit.n);
    unsigned char *w;
    int rc = reserve(b, len_field(n));

    if (rc != PS_OK)
        return rc;
    w = put_len(tail(b), T_REQ_META, n);
    if (t != 0) {
        *w++ = T_MD_TYPE;
        w = put_varint(w, t); /* < 128: one byte, as counted above */
    }
    w = put_str(w, T_MD_FAMILY, m->family.p, m->family.n);
    w = put_str(w, T_MD_HELP, m->help.p, m->help.n);
    w = put_str(w, T_MD_UNIT, m->unit.p, m->unit.n);
    done(b, w);
    return PS_OK;
}
