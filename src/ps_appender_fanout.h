/*
 * ps_appender_fanout: one scrape's transaction forwarded to N child
 * appenders (memory + remote write, two remote write endpoints, ...),
 * as Prometheus's fanout storage does for its primary and secondaries.
 *
 * Refs: the fan-out hands out its own refs,
 * ref = (generation << 32) | (slot + 1), and keeps for each the ref every
 * child returned, so a steady-state scrape passes each child its own ref.
 * An unknown or forgotten ref is treated as 0: a new slot, and ref 0 (with
 * the labels, which are always passed) to every child, which then finds
 * its own series by labels. The fan-out keeps no labels.
 * Forgetting: a slot whose newest appended sample is older than the newest
 * committed timestamp minus forget_after_ms is reused (checked at most every
 * forget_after_ms / 2 of sample time, on commit), so the table follows the
 * live series set rather than every series ever seen.
 *
 * Errors (the choice, documented): children are independent, like
 * Prometheus's remote-write queues behind its fanout.
 *   - A child's hard error (negative PS_E*) in begin or append takes that
 *     child out of the transaction: it is rolled back at once, the error is
 *     recorded (counted, last message kept), and the other children go on.
 *     The sample counts as appended if any child took it.
 *   - Only when every child has failed does the fan-out return the error,
 *     so the loop fails the scrape as it would with a single appender.
 *   - A soft rejection (PS_APPEND_*) is returned only when no child accepted
 *     the sample; rejections are counted per child either way.
 *   - Commit commits every child still in; a child's commit error is
 *     recorded; commit returns PS_OK if at least one child committed.
 *   - append_exemplar and update_metadata are best effort: a child's error
 *     there is recorded and the child stays in.
 * ps_appender_fanout_child_stats() reports the errors per child.
 *
 * Threads: driven by one thread (the engine); the stats may be read from
 * any thread.
 */
#ifndef PS_APPENDER_FANOUT_H
#define PS_APPENDER_FANOUT_H

#include "ps_appender.h"

#include <stddef.h>
#include <stdint.h>

struct ps_appender_fanout;

struct ps_appender_fanout_opts {
    struct ps_appender *const *children; /* borrowed: must outlive the
                                          * fan-out; not freed by it */
    size_t n_children;                   /* 1 .. 64 */
    int64_t forget_after_ms;             /* [3600000]; -1: never */
};

struct ps_fanout_child_stats {
    uint64_t errors;             /* hard errors (begin, append, commit, ...) */
    uint64_t rejected;           /* PS_APPEND_* soft rejections */
    uint64_t commits;            /* transactions this child committed */
    char last_error[PS_ERR_MAX]; /* "" if none yet */
};

/* PS_OK, PS_EINVAL (no children, too many, NULL child), PS_ENOMEM; *out is
 * written only on success. */
int ps_appender_fanout_new(struct ps_appender_fanout **out,
                           const struct ps_appender_fanout_opts *o,
                           struct ps_err *e);
/* NULL-safe. Frees the fan-out only, never the children. */
void ps_appender_fanout_free(struct ps_appender_fanout *f);

/* The fan-out as an appender (same object). */
struct ps_appender *ps_appender_fanout_appender(struct ps_appender_fanout *f);

/* Counters of child i (< n_children). PS_OK or PS_EINVAL. Thread-safe. */
int ps_appender_fanout_child_stats(struct ps_appender_fanout *f, size_t i,
                                   struct ps_fanout_child_stats *st);

#endif
