/*
 * spec/c/rw_pbdec.h: a tiny, independent protobuf decoder for the tests of
 * ps_pb and ps_remote_write. It renders a prometheus.WriteRequest as text,
 * one line per TimeSeries or MetricMetadata, so tests compare strings:
 *
 *   S {__name__="up",job="a"} 1000=1 2000=stale ex{trace_id="x"}:0.5@1500
 *   M type=1 family=http_requests_total help=Total. unit=
 *
 * Values print as %.17g, the staleness NaN as "stale". Unknown fields are
 * skipped; a malformed message makes rw_decode() return -1. Written from
 * the wire format spec, sharing no code with src/ps_pb.c on purpose.
 */
#ifndef RW_PBDEC_H
#define RW_PBDEC_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct pbd {
    const unsigned char *p, *end;
    int err;
};

struct rw_text {
    char *s;
    size_t len, cap;
};

static inline void rwt_add(struct rw_text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (t->len >= t->cap)
        return;
    va_start(ap, fmt);
    n = vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->len += (size_t)n < t->cap - t->len ? (size_t)n : t->cap - t->len - 1;
}

static inline uint64_t pbd_varint(struct pbd *d)
{
    uint64_t v = 0;
    int shift = 0;

    while (d->p < d->end && shift < 64) {
        unsigned char c = *d->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return v;
        shift += 7;
    }
    d->err = 1;
    return 0;
}

/* Reads one field: for WT 2, *sub is the payload; for WT 0/1, *val. */
static inline int pbd_next(struct pbd *d, unsigned *field, unsigned *wt,
                           struct pbd *sub, uint64_t *val)
{
    uint64_t tag, n;

    if (d->p >= d->end || d->err)
        return 0;
    tag = pbd_varint(d);
    *field = (unsigned)(tag >> 3);
    *wt = (unsigned)(tag & 7);
    switch (*wt) {
    case 0:
        *val = pbd_varint(d);
        break;
    case 1:
        if (d->end - d->p < 8) {
            d->err = 1;
            return 0;
        }
        memcpy(val, d->p, 8); /* little-endian host assumed by the tests */
        d->p += 8;
        break;
    case 2:
        n = pbd_varint(d);
        if (d->err || n > (uint64_t)(d->end - d->p)) {
            d->err = 1;
            return 0;
        }
        sub->p = d->p;
        sub->end = d->p + n;
        sub->err = 0;
        d->p += n;
        break;
    default:
        d->err = 1;
        return 0;
    }
    return !d->err;
}

static inline void rw_value(struct rw_text *t, uint64_t bits)
{
    double v;

    memcpy(&v, &bits, 8);
    if (bits == 0x7ff0000000000002ULL)
        rwt_add(t, "stale");
    else
        rwt_add(t, "%.17g", v);
}

static inline int rw_labels(struct pbd *lab, struct rw_text *t, int first)
{
    struct pbd sub;
    unsigned f, wt;
    uint64_t v;

    rwt_add(t, "%s", first ? "{" : ",");
    while (pbd_next(lab, &f, &wt, &sub, &v)) {
        if (wt == 2 && f == 1)
            rwt_add(t, "%.*s=", (int)(sub.end - sub.p), (const char *)sub.p);
        else if (wt == 2 && f == 2)
            rwt_add(t, "\"%.*s\"", (int)(sub.end - sub.p), (const char *)sub.p);
    }
    return lab->err ? -1 : 0;
}

static inline int rw_point(struct pbd *d, struct rw_text *t, unsigned vf,
                           unsigned tf, int ts_first)
{
    struct pbd sub;
    unsigned f, wt;
    uint64_t v, val = 0, ts = 0;

    while (pbd_next(d, &f, &wt, &sub, &v)) {
        if (f == vf && wt == 1)
            val = v;
        else if (f == tf && wt == 0)
            ts = v;
    }
    if (ts_first) {
        rwt_add(t, " %lld=", (long long)(int64_t)ts);
        rw_value(t, val);
    } else {
        rwt_add(t, ":");
        rw_value(t, val);
        rwt_add(t, "@%lld", (long long)(int64_t)ts);
    }
    return d->err ? -1 : 0;
}

/* The labels of a TimeSeries (fields 1), as {a="b",...}. */
static inline int rw_series(struct pbd *d, struct rw_text *t)
{
    struct pbd sub;
    unsigned f, wt;
    uint64_t v;
    int nl = 0;

    rwt_add(t, "S ");
    while (pbd_next(d, &f, &wt, &sub, &v)) { /* labels first, in order */
        if (f == 1 && wt == 2) {
            if (rw_labels(&sub, t, nl++ == 0) < 0)
                return -1;
        }
    }
    rwt_add(t, "%s", nl ? "}" : "{}");
    return d->err ? -1 : 0;
}

/* Renders one WriteRequest; 0 or -1 (malformed). */
static inline int rw_decode(const void *buf, size_t n, struct rw_text *t)
{
    struct pbd d = {buf, (const unsigned char *)buf + n, 0}, sub, s2, s3;
    unsigned f, wt, f2, wt2;
    uint64_t v, v2;

    while (pbd_next(&d, &f, &wt, &sub, &v)) {
        if (f == 1 && wt == 2) {
            struct pbd all = sub;
            if (rw_series(&sub, t) < 0)
                return -1;
            while (pbd_next(&all, &f2, &wt2, &s2, &v2)) {
                if (f2 == 2 && wt2 == 2) {
                    if (rw_point(&s2, t, 1, 2, 1) < 0)
                        return -1;
                } else if (f2 == 3 && wt2 == 2) {
                    struct pbd ex = s2;
                    unsigned f3, wt3;
                    uint64_t v3;
                    int nl = 0;
                    rwt_add(t, " ex");
                    while (pbd_next(&ex, &f3, &wt3, &s3, &v3))
                        if (f3 == 1 && wt3 == 2 &&
                            rw_labels(&s3, t, nl++ == 0) < 0)
                            return -1;
                    rwt_add(t, "%s", nl ? "}" : "{}");
                    if (rw_point(&s2, t, 2, 3, 0) < 0)
                        return -1;
                }
            }
            if (all.err)
                return -1;
            rwt_add(t, "\n");
        } else if (f == 3 && wt == 2) {
            uint64_t type = 0;
            struct pbd fam = {0, 0, 0}, help = {0, 0, 0}, unit = {0, 0, 0};
            while (pbd_next(&sub, &f2, &wt2, &s2, &v2)) {
                if (f2 == 1 && wt2 == 0)
                    type = v2;
                else if (f2 == 2 && wt2 == 2)
                    fam = s2;
                else if (f2 == 4 && wt2 == 2)
                    help = s2;
                else if (f2 == 5 && wt2 == 2)
                    unit = s2;
            }
            if (sub.err)
                return -1;
            rwt_add(t, "M type=%u family=%.*s help=%.*s unit=%.*s\n",
                    (unsigned)type, (int)(fam.end - fam.p), (const char *)fam.p,
                    (int)(help.end - help.p), (const char *)help.p,
                    (int)(unit.end - unit.p), (const char *)unit.p);
        }
    }
    return d.err ? -1 : 0;
}

#endif
