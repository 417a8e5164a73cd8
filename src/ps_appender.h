/*
 * ps_appender: where scraped samples go, mirroring Prometheus's
 * storage.Appender. The scrape loop drives one transaction per scrape:
 *
 *     begin -> (append | append_exemplar | update_metadata)* -> commit
 *                                                           \-> rollback
 *
 * Transactions never interleave: one engine thread runs one scrape's
 * append..commit without yielding, so an appender needs no locking of its
 * own for the loop's sake.
 *
 * Series references: append() takes the ref the loop cached for the series
 * (0 when unknown) and writes back the appender's ref for it (never 0), so a
 * steady-state scrape passes only refs and the appender need not look up
 * labels. Refs are the appender's own; a fan-out keeps a ref per child.
 *
 * Return codes: PS_OK; PS_APPEND_* (> 0) rejects one sample, which the loop
 * counts and skips, as Prometheus counts out-of-order and duplicate
 * samples; a negative PS_E* fails the whole scrape (the loop rolls back).
 */
#ifndef PS_APPENDER_H
#define PS_APPENDER_H

#include "ps_core.h"
#include "ps_labels.h"
#include "ps_parse.h"

#include <stdint.h>
#include <string.h>

/* Per-sample soft rejections (positive, unlike PS_E* codes). */
enum {
    PS_APPEND_OUT_OF_ORDER = 1, /* older than the series' latest sample */
    PS_APPEND_DUPLICATE = 2,    /* same timestamp, different value */
    PS_APPEND_OUT_OF_BOUNDS = 3 /* too old for the store to take */
};

/* Prometheus's staleness marker: a NaN with this exact bit pattern. */
#define PS_STALE_NAN_BITS 0x7ff0000000000002ULL

static inline double ps_stale_nan(void)
{
    uint64_t b = PS_STALE_NAN_BITS;
    double d;

    memcpy(&d, &b, sizeof(d));
    return d;
}

static inline int ps_is_stale_nan(double d)
{
    uint64_t b;

    memcpy(&b, &d, sizeof(b));
    return b == PS_STALE_NAN_BITS;
}

/* Family metadata as exposed (type, help, unit); views borrowed per call. */
struct ps_metadata {
    enum ps_mtype type;
    struct ps_str help;
    struct ps_str unit;
};

/* An exemplar attached to a sample; labels borrowed per call. */
struct ps_exemplar {
    const struct ps_labels *labels;
    double value;
    int has_ts;
    int64_t ts_ms;
};

struct ps_appender;

/*
 * Label sets passed in are sorted by name, include __name__, and are
 * borrowed for the duration of the call: an appender copies what it keeps.
 * `target` in begin() is the target's final label set (job, instance, ...),
 * borrowed until commit/rollback returns.
 */
struct ps_appender_vt {
    int (*begin)(struct ps_appender *a, const struct ps_labels *target,
                 struct ps_err *e);
    int (*append)(struct ps_appender *a, uint64_t ref,
                  const struct ps_labels *ls, int64_t t_ms, double v,
                  uint64_t *ref_out, struct ps_err *e);
    int (*append_exemplar)(struct ps_appender *a, uint64_t ref,
                           const struct ps_labels *ls,
                           const struct ps_exemplar *ex, struct ps_err *e);
    int (*update_metadata)(struct ps_appender *a, uint64_t ref,
                           const struct ps_labels *ls,
                           const struct ps_metadata *m, struct ps_err *e);
    int (*commit)(struct ps_appender *a, struct ps_err *e);
    void (*rollback)(struct ps_appender *a);
    void (*free)(struct ps_appender *a); /* the appender itself */
};

/* Every appender starts with this; implementations embed it first. */
struct ps_appender {
    const struct ps_appender_vt *vt;
};

/* NULL-safe. */
static inline void ps_appender_free(struct ps_appender *a)
{
    if (a != NULL)
        a->vt->free(a);
}

#endif
