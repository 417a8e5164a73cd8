/*
 * ps_target: one scrape target, from discovered labels to the final label
 * set, URL and hash (Prometheus scrape/target.go: PopulateLabels, URL,
 * hash, offset).
 *
 * Population, in Prometheus 3.x order:
 *   1. discovered = target labels, plus group labels the target lacks, plus
 *      defaults for what neither set: job, __scrape_interval__,
 *      __scrape_timeout__, __metrics_path__, __scheme__, and
 *      __param_<name> (first value) for every configured param.
 *   2. target relabeling (ps_relabel). A drop makes the target dropped with
 *      reason "" (Prometheus shows no error for those).
 *   3. validation: __address__ present and without '/', interval and timeout
 *      parse as Prometheus durations, are non-zero, timeout <= interval.
 *      A failure makes the target dropped with the Prometheus message as
 *      reason.
 *   4. __meta_* labels removed; instance defaults to __address__; every
 *      label value must be valid UTF-8.
 * The final set keeps the other "__" labels (__address__, __scheme__,
 * __param_*, ...): they build the URL. ps_target_public() is the subset
 * without "__" labels: what samples carry.
 *
 * A struct ps_target owns all of its strings. Not thread-safe (plain data).
 */
#ifndef PS_TARGET_H
#define PS_TARGET_H

#include "ps_core.h"
#include "ps_labels.h"
#include "ps_relabel.h"

#include <stddef.h>
#include <stdint.h>

/* One URL parameter (scrape config `params`); repeated names give several
 * values, in order. Borrowed C strings. */
struct ps_param {
    const char *name;
    const char *value;
};

/* What PopulateLabels takes from the scrape config. All borrowed. */
struct ps_target_defaults {
    const char *job;          /* job_name */
    const char *scheme;       /* NULL: "http" */
    const char *metrics_path; /* NULL: "/metrics" */
    const struct ps_param *params;
    size_t n_params;
    int64_t interval_ms; /* written as __scrape_interval__ ("15s") */
    int64_t timeout_ms;  /* written as __scrape_timeout__ */
};

enum ps_target_state {
    PS_TARGET_ACTIVE = 0,
    PS_TARGET_DROPPED = 1 /* by relabeling (reason "") or validation */
};

struct ps_target {
    enum ps_target_state state;
    char *reason;              /* dropped: "" or the validation error */
    struct ps_labels discovered; /* before relabeling, sorted, owned */
    struct ps_labels labels;   /* final incl. "__" labels, sorted, owned;
                                * empty when dropped */
    struct ps_labels pub;      /* labels without "__" ones: views into
                                * `labels`, sorted */
    char *url;                 /* scheme://address/path?params; NULL if
                                * dropped */
    uint64_t hash;             /* labels hash + URL; 0 if dropped */
    int64_t interval_ms;       /* from __scrape_interval__ */
    int64_t timeout_ms;        /* from __scrape_timeout__ */
};

/* Cannot fail; _cleanup is idempotent and leaves the target as _init. */
void ps_target_init(struct ps_target *t);
void ps_target_cleanup(struct ps_target *t);

/*
 * Populates t (cleaned up first) from one discovered target. tlabels and
 * glabels (may be NULL) are borrowed, any order. rules may be NULL (no
 * target relabeling); scratch is required when rules is non-NULL.
 * Returns PS_OK with t->state ACTIVE or DROPPED (with t->reason), or
 * PS_ENOMEM / PS_ELIMIT (relabel regex resource limit), in which case t is
 * left as after ps_target_init().
 */
int ps_target_populate(struct ps_target *t, const struct ps_labels *tlabels,
                       const struct ps_labels *glabels,
                       const struct ps_target_defaults *d,
                       const struct ps_relabel *rules,
                       struct ps_relabel_scratch *scratch, struct ps_err *e);

/* Deep copy (for keeping a target beyond the input). PS_OK or PS_ENOMEM
 * (dst left as after init). */
int ps_target_copy(struct ps_target *dst, const struct ps_target *src);

/*
 * Builds scheme://address/path?query into a new NUL-terminated string from
 * a final label set and the configured params (__param_<name> labels
 * replace the first value of <name> or add it). Query keys are sorted and
 * form-encoded as Go's url.Values.Encode(). *out owned by the caller
 * (ps_free). PS_OK, PS_ENOMEM, PS_EINVAL (no __address__).
 */
int ps_target_url(const struct ps_labels *labels, const struct ps_param *params,
                  size_t n_params, char **out);

/*
 * Prometheus duration syntax ("1h30m", "15s", "100ms", "0"); units y w d h
 * m s ms, largest first, each at most once. PS_OK or PS_EINVAL.
 * ps_duration_format writes the canonical form ("1m30s", "100ms", "0s")
 * into buf (always NUL-terminated) as Prometheus's model.Duration.String.
 */
int ps_duration_parse(const char *s, size_t n, int64_t *ms);
void ps_duration_format(int64_t ms, char *buf, size_t size);

/*
 * The delay before a target's first scrape, as Prometheus's Target.offset:
 * pinned to absolute (wall-clock) time so it is stable across restarts:
 *   base = interval - now % interval; off = (hash ^ seed) % interval;
 *   next = base + off, minus interval if above it.
 * All in nanoseconds; interval_ns > 0.
 */
uint64_t ps_target_offset_ns(uint64_t hash, uint64_t seed,
                             uint64_t interval_ns, uint64_t now_wall_ns);

#endif
