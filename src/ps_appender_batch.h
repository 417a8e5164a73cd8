/*
 * ps_appender_batch: the C side of Lua appenders. No Lua here: the binding
 * pops batches and calls the Lua table's methods with them.
 *
 * An appender that turns each committed transaction into one struct
 * ps_batch and queues it for the consumer (the thread that runs Lua):
 *   - refs, values and timestamps (ms) of every appended sample, in order;
 *   - labels only for series this appender has not announced before (the
 *     first batch that carries a sample, exemplar or metadata of a series
 *     carries its labels); refs are assigned here, sequentially from 1;
 *   - the scrape's target labels;
 *   - exemplars and metadata updates, when the loop sends them.
 * The batch appender rejects nothing: ordering rules are the consumer's.
 *
 * Rollback: if the transaction appended anything, a PS_BATCH_ROLLBACK event
 * (target labels only) is queued so the Lua side's `rollback` method runs;
 * if it appended nothing, nothing is queued. The rolled-back samples were
 * never visible to the consumer. Series first seen in a rolled-back
 * transaction keep their refs but stay unannounced: their labels go out with
 * the next batch that uses them.
 *
 * The queue is shared by a producer (the engine, which drives the vtable)
 * and a consumer (ps_appender_batch_pop, ps_appender_batch_stats), which may
 * be different threads: it is guarded by a pthread mutex. It is bounded by
 * max_pending_samples. When a commit pushes the total over the bound, the
 * oldest batches lose their samples (and exemplars and metadata) until it
 * fits; they are counted in dropped_samples/dropped_batches, never silently.
 * A dropped batch that announced new series stays queued with its labels and
 * no samples, so later batches never refer to a ref the consumer was not
 * told about. The newest batch is always kept, even if it alone exceeds the
 * bound.
 */
#ifndef PS_APPENDER_BATCH_H
#define PS_APPENDER_BATCH_H

#include "ps_appender.h"

#include <stdint.h>

enum ps_batch_kind { PS_BATCH_COMMIT = 1, PS_BATCH_ROLLBACK = 2 };

/* A new series: its labels are lab[off .. off + n) of the batch. */
struct ps_batch_series {
    uint64_t ref;
    size_t off, n;
};

struct ps_batch_exemplar {
    uint64_t ref;
    size_t off, n; /* exemplar labels in lab[] */
    double value;
    int has_ts;
    int64_t ts_ms;
};

struct ps_batch_meta {
    uint64_t ref;
    enum ps_mtype type;
    struct ps_str help, unit; /* owned by the batch, NUL-terminated */
};

/* Everything in a batch is owned by it: ps_batch_free releases it all. */
struct ps_batch {
    enum ps_batch_kind kind;
    uint64_t seq; /* 1, 2, ... in queue order; a gap: items dropped */

    size_t n; /* samples */
    uint64_t *refs;
    double *values;
    int64_t *ts_ms;

    struct ps_label *lab; /* all label views of the batch */
    size_t n_target;      /* target labels are lab[0 .. n_target) */

    struct ps_batch_series *series; /* first-seen series, in ref order */
    size_t n_series;
    struct ps_batch_exemplar *ex;
    size_t n_ex;
    struct ps_batch_meta *meta;
    size_t n_meta;

    uint64_t dropped; /* samples stripped from this batch by the bound */

    /* private */
    size_t cap, n_lab, cap_lab, cap_series, cap_ex, cap_meta;
    struct ps_strstore store;
    struct ps_batch *next;
};

void ps_batch_free(struct ps_batch *b); /* NULL-safe */

struct ps_appender_batch_opts {
    size_t max_pending_samples; /* 0: 1,000,000 */
    /* Called (outside the lock, on the producer thread) after a batch or
     * event is queued, e.g. to wake the Lua side. May be NULL. */
    void (*notify)(void *ud);
    void *notify_ud;
};

struct ps_batch_stats {
    uint64_t batches;         /* commit batches queued */
    uint64_t rollbacks;       /* rollback events queued */
    uint64_t samples;         /* samples queued */
    uint64_t dropped_samples; /* samples dropped by the bound */
    uint64_t dropped_batches; /* batches that lost their samples */
    size_t pending_batches;   /* queued now (batches and events) */
    size_t pending_samples;   /* samples queued now */
    size_t series;            /* refs assigned, as of the last queueing */
};

struct ps_appender_batch; /* opaque; first member is a struct ps_appender */

/* o may be NULL. PS_ENOMEM; *out written only on success. The caller owns
 * the appender (ps_appender_batch_free or ps_appender_free on its view);
 * freeing must not race with pop. */
int ps_appender_batch_new(struct ps_appender_batch **out,
                          const struct ps_appender_batch_opts *o,
                          struct ps_err *e);
void ps_appender_batch_free(struct ps_appender_batch *a); /* NULL-safe */
struct ps_appender *ps_appender_batch_appender(struct ps_appender_batch *a);

/* Takes the oldest queued batch: returns 1 and sets *out (the caller owns
 * it: ps_batch_free), or 0 when the queue is empty. Thread-safe. */
int ps_appender_batch_pop(struct ps_appender_batch *a, struct ps_batch **out);

void ps_appender_batch_stats(struct ps_appender_batch *a,
                             struct ps_batch_stats *st); /* thread-safe */

#endif
