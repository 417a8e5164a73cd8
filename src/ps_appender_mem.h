/*
 * ps_appender_mem: the embedded default appender (promscrape.memory()).
 *
 * Keeps the latest sample of every series of every job and target, and
 * nothing else: no history, no chunks. A series is keyed by its full,
 * sorted label set (an owned copy: __name__, job, instance, ...).
 *
 * Refs: ref = (generation << 32) | (index + 1) into the series array, so an
 * append with a valid ref is O(1) and looks no labels up. A ref whose slot
 * was since forgotten (see pruning) no longer matches its generation; the
 * append then falls back to the label lookup (labels are always passed).
 * ref 0 means unknown: lookup by ps_labels_hash(), create if new.
 *
 * Transactions: begin .. commit|rollback. Appends and metadata updates are
 * buffered in the series (a pending slot per series plus a list of touched
 * series) and become visible on commit; rollback discards them. Series
 * created during a rolled-back transaction are kept, without a sample (they
 * are invisible to queries until a sample is committed), so the refs handed
 * out stay valid.
 *
 * Per-sample rules, against the latest committed sample and any sample
 * already appended to the series in the same transaction:
 *   t <  latest               PS_APPEND_OUT_OF_ORDER
 *   t == latest, other value  PS_APPEND_DUPLICATE (compared bit-wise)
 *   t == latest, same value   accepted silently (a no-op), as Prometheus
 * A staleness marker (ps_stale_nan()) is an ordinary sample that makes the
 * series stale: queries report it with stale = 1; the text output omits it.
 *
 * Metadata is kept per series (like Prometheus's head, which stores it on
 * memSeries), so two targets exposing the same family keep their own HELP.
 * It is applied on commit. Exemplars are accepted (ref checked) and counted
 * but not stored.
 *
 * Pruning: series are kept forever by default. With opts.forget_after_ms > 0
 * a commit forgets series whose latest sample is older than the newest
 * committed timestamp minus forget_after_ms (checked at most once per
 * forget_after_ms/2 of sample time); ps_appender_mem_forget() does it on
 * demand. Sample time, not wall time, keeps this deterministic.
 *
 * Threads: the appender vtable is driven by one thread (the engine). The
 * query functions may run on another thread: commit, series creation,
 * forget and the queries take the store's mutex; appends through a valid
 * ref touch only pending fields and take no lock.
 */
#ifndef PS_APPENDER_MEM_H
#define PS_APPENDER_MEM_H

#include "ps_appender.h"
#include "ps_buf.h"

#include <stdint.h>

struct ps_appender_mem; /* opaque; its first member is a struct ps_appender */

struct ps_appender_mem_opts {
    int64_t forget_after_ms; /* 0: keep every series forever */
};

/* A committed series as queries see it. Views are valid only during the
 * callback (the store is locked meanwhile). */
struct ps_mem_sample {
    const struct ps_label *labels; /* sorted, includes __name__ */
    size_t n_labels;
    double value; /* the stale NaN when stale */
    int64_t ts_ms;
    int stale;
    const struct ps_metadata *meta; /* NULL when never given */
    uint64_t ref;
};

struct ps_mem_stats {
    size_t series;      /* live series (with or without a sample) */
    uint64_t appended;  /* samples committed */
    uint64_t rejected;  /* PS_APPEND_* returned */
    uint64_t exemplars; /* exemplars accepted */
    uint64_t forgotten; /* series dropped by pruning */
};

/* Creates an empty store; o may be NULL (defaults). PS_ENOMEM, or PS_EINVAL
 * for a negative forget_after_ms; *out is written only on success. The
 * caller owns the store: ps_appender_mem_free() (or ps_appender_free() on
 * the appender view). */
int ps_appender_mem_new(struct ps_appender_mem **out,
                        const struct ps_appender_mem_opts *o, struct ps_err *e);
void ps_appender_mem_free(struct ps_appender_mem *s); /* NULL-safe */

/* The store as an appender (the same object; not a new allocation). */
struct ps_appender *ps_appender_mem_appender(struct ps_appender_mem *s);

/* Calls fn for each series with a committed sample, stale ones included,
 * in creation order; stops early (returning that value) when fn returns
 * non-zero. Returns 0 after a full walk. Never allocates. */
typedef int (*ps_mem_sample_fn)(const struct ps_mem_sample *smp, void *ud);
int ps_appender_mem_foreach(struct ps_appender_mem *s, ps_mem_sample_fn fn,
                            void *ud);

/* Appends the store to buf as text exposition format 0.0.4, the way
 * Prometheus's /federate writes it: families sorted by metric name, one
 * `# TYPE <name> untyped` line each (federate types everything untyped),
 * no HELP, samples sorted by labels, each with its timestamp, labels with
 * empty values skipped, stale and nameless series omitted. Names that are
 * not legacy-valid are quoted (`{"my.metric","a.b"="v"}`), as
 * expfmt does for UTF-8 names. No external labels are added.
 * PS_ENOMEM or PS_ELIMIT (buf's cap); on failure buf holds a partial text
 * (the caller resets it). */
int ps_appender_mem_text(struct ps_appender_mem *s, struct ps_buf *buf);

/* Forgets series whose latest committed sample is older than
 * `older_than_ms` (series with no sample that are not in the current
 * transaction go too). PS_ESTATE inside a transaction. Never allocates.
 * Writes the number forgotten to *n (if non-NULL). Call it from the thread
 * that drives the appender (it edits the index ref-0 lookups read). */
int ps_appender_mem_forget(struct ps_appender_mem *s, int64_t older_than_ms,
                           size_t *n);

void ps_appender_mem_stats(struct ps_appender_mem *s, struct ps_mem_stats *st);

#endif
