/*
 * ps_loop: the scrape loop of one target on a ps_engine (Prometheus
 * scrapeLoop). A state machine driven by one timer and one ps_http
 * request; it never blocks and never spawns threads.
 *
 * Schedule: the first scrape waits ps_target_offset_ns() (target hash XOR
 * the manager's seed, pinned to wall-clock time), or, with
 * scrape_align_interval_ms, the next multiple of that interval plus
 * scrape_offset_ms (vmagent). Then every interval on that grid; a tick
 * that falls behind is skipped, never bursted. Sample timestamps snap to
 * the ideal grid when within min(interval / 100, 2 ms) of it.
 *
 * One scrape: fetch -> parse -> per series (cache hit, or: honor_labels,
 * metric relabeling, limits, cache add) -> append -> staleness markers for
 * series gone since the last scrape -> report series -> commit (or
 * rollback, then stale markers for everything + report series, when the
 * scrape failed). See docs/scrape.md.
 *
 * Ownership: the loop owns its target, cache, request and status strings.
 * It borrows the engine, the appender and the config, which must outlive
 * it. Everything runs on the engine thread.
 */
#ifndef PS_LOOP_H
#define PS_LOOP_H

#include "ps_appender.h"
#include "ps_cache.h"
#include "ps_core.h"
#include "ps_engine.h"
#include "ps_http.h"
#include "ps_relabel.h"
#include "ps_target.h"

#include <stddef.h>
#include <stdint.h>

/* ---- external relabel rules (Lua functions in the binding) -------------- */

/*
 * An external rule: an opaque callback that maps a label set to another
 * or drops it. `in` is sorted and borrowed; `out` is empty and owned by
 * the caller: add labels to it with ps_labels_add(..., PS_LABELS_COPY)
 * (any order; empty values are left out by the callback). Set *dropped to
 * 1 to drop the set (out is then ignored). Return PS_OK, or an error code
 * with a message in e: the caller names the rule ("rule N: ...").
 * Hooks run on the thread that steps the engine, and only where a
 * relabel result is not cached: metric rules on scrape-cache misses,
 * target rules when targets are synced. A metric hook whose can_run()
 * says 0 there is deferred instead (ps_loop_resolve_deferred) and called
 * later by the thread that resolves the loop's pending series.
 */
typedef int (*ps_relabel_hook_fn)(void *ud, const struct ps_labels *in,
                                  struct ps_labels *out, int *dropped,
                                  struct ps_err *e);

struct ps_relabel_hook {
    ps_relabel_hook_fn fn;
    void *ud;
    /* Reference counting of ud: a config that keeps the hook calls
     * ref(ud, +1) when it copies it and ref(ud, -1) when it is freed
     * (possibly from an engine callback). May be NULL. */
    void (*ref)(void *ud, int delta);
    const char *id;  /* identity in the config fingerprint: the same id
                      * means the same rule (copied) */
    size_t position; /* 0-based place in the rule list, counting table
                      * rules and hooks together; increasing */
    /* May be NULL (always runnable). Called on the engine thread before a
     * metric hook would run on a scrape-cache miss: 0 means the hook
     * cannot run on this thread now (a Lua function rule in background
     * mode), and the series is deferred (see ps_loop_resolve_deferred).
     * Must be cheap and thread-safe for that thread. */
    int (*can_run)(void *ud);
};

/* One piece of a rule chain: a range of the compiled table rules, or one
 * hook. */
struct ps_relabel_seg {
    size_t first, count;                /* range in rel (hook: unused) */
    const struct ps_relabel_hook *hook; /* NULL for a range */
};

/* A rule list with hooks: the table rules compiled into one ps_relabel
 * (applied by ranges) and the segments in list order. */
struct ps_relabel_chain {
    const char *what;              /* "metric_relabel_configs" ... */
    const struct ps_relabel *rel;  /* may be NULL (only hooks) */
    const struct ps_relabel_seg *segs;
    size_t n_segs;
};

/*
 * Applies a chain to `in`. On PS_OK, *dropped says whether the set was
 * dropped, else `out` (cleared first, owned) holds the sorted result.
 * tmp is a caller-owned working set. Errors: PS_ENOMEM, PS_ELIMIT (regex
 * limit), or a hook's error, with "<what>: rule N: <msg>" in e; a hook
 * output with a repeated label name is PS_EINVAL.
 */
int ps_relabel_chain_apply(const struct ps_relabel_chain *c,
                           struct ps_relabel_scratch *s,
                           const struct ps_labels *in, struct ps_labels *out,
                           struct ps_labels *tmp, int *dropped,
                           struct ps_err *e);

/*
 * The same, starting at segment `from` (0: the whole chain). With
 * defer_at non-NULL, a hook whose can_run() says 0 is not called: the
 * chain stops before it, *defer_at is that segment's index and `out`
 * holds the set as it stands before it (sorted, owned; *dropped 0). When
 * the chain ran to its end (or dropped), *defer_at is PS_CHAIN_DONE. With
 * defer_at NULL every hook is called.
 */
#define PS_CHAIN_DONE ((size_t)-1)
int ps_relabel_chain_apply_from(const struct ps_relabel_chain *c,
                                struct ps_relabel_scratch *s, size_t from,
                                const struct ps_labels *in,
                                struct ps_labels *out, struct ps_labels *tmp,
                                int *dropped, size_t *defer_at,
                                struct ps_err *e);

/* The resolved scrape settings a loop runs with. The pool builds one per
 * config and shares it among its loops (borrowed by them). Every string is
 * owned by whoever built the struct. */
struct ps_loop_config {
    const char *job;
    int honor_labels;
    int honor_timestamps;
    int track_timestamps_staleness;
    int extra_scrape_metrics;
    int legacy_names;           /* metric_name_validation_scheme: legacy */
    uint64_t sample_limit;      /* 0: none, for all four limits */
    uint64_t label_limit;
    uint64_t label_name_length_limit;
    uint64_t label_value_length_limit;
    uint64_t body_size_limit;   /* bytes, decompressed; 0: none */
    const char *accept;         /* Accept header (from scrape_protocols) */
    int fallback_format;        /* -1: none, else an enum ps_format */
    const struct ps_relabel *metric_relabel; /* NULL: none */
    /* With hooks in metric_relabel_configs: the chain replaces
     * metric_relabel (which is then NULL). Hooks run on cache misses
     * only (or are deferred, see ps_loop_resolve_deferred); their
     * results are cached like any relabel result. */
    const struct ps_relabel_chain *metric_chain;
    struct ps_relabel_scratch *scratch; /* required with metric_relabel;
                                         * shared by the pool's loops (one
                                         * thread) */
    int64_t scrape_offset_ms;   /* vmagent scrape_offset; 0: hashed */
    int64_t scrape_align_interval_ms; /* vmagent; 0: off */
    /* 1: give every line of a text body to the full parser, even when the
     * scrape cache knows its series (the "fast line" path of
     * docs/scrape.md, which gives the same appends). For the tests that
     * compare the two, and benchmarks. */
    int full_parse;
    /* HTTP: url, timeout_ms, body_size_limit are filled per target. */
    struct ps_http_req_opts http;
};

enum ps_health {
    PS_HEALTH_UNKNOWN = 0,
    PS_HEALTH_UP = 1,
    PS_HEALTH_DOWN = 2
};

const char *ps_health_name(enum ps_health h); /* "unknown", "up", "down" */

/* A target's status for reporting; everything borrowed from the loop,
 * valid until the engine runs again or the loop is freed. */
struct ps_target_status {
    const char *job;
    const struct ps_labels *labels;     /* public: no "__" labels */
    const struct ps_labels *all_labels; /* final, with "__" labels */
    const struct ps_labels *discovered; /* before relabeling */
    const char *url;
    uint64_t hash;
    enum ps_health health;
    const char *last_error;       /* "" when the last scrape succeeded */
    int64_t last_scrape_ms;       /* wall clock (Unix ms), 0: never */
    uint64_t last_duration_ns;    /* of the last scrape */
    int64_t interval_ms;
    int64_t timeout_ms;
    uint64_t last_samples;        /* scrape_samples_scraped of last scrape */
    uint64_t last_series_added;
    uint64_t scrapes;             /* scrapes done */
    uint64_t skipped_ticks;       /* ticks skipped because late */
    /* samples skipped in the last scrape (counted, not fatal): */
    uint64_t last_duplicates;     /* same series twice, or same timestamp
                                   * with another value */
    uint64_t last_out_of_order;
    uint64_t last_out_of_bounds;
    /* samples of the last scrape whose lines skipped label tokenization
     * (scrape-cache hits on the fast line path, docs/scrape.md): for
     * tests and benchmarks */
    uint64_t last_fast_samples;
    /* deferred metric function rules (background mode), see
     * ps_loop_resolve_deferred: */
    uint64_t deferred_pending;   /* series waiting for their rules now */
    uint64_t deferred_held;      /* samples held for them now */
    uint64_t deferred_resolved;  /* series resolved so far (total) */
    uint64_t deferred_lost;      /* held samples discarded (caps, reload,
                                  * rule errors, appender errors): total */
    uint64_t deferred_failed;    /* series whose rules failed: total */
};

struct ps_loop;

/*
 * Creates a loop for target (deep-copied). cache may be NULL (a new one)
 * or a cache taken from a stopped loop with ps_loop_take_cache() (reload
 * keeps it, as Prometheus does). The loop does nothing until started.
 * PS_OK; PS_ENOMEM; PS_EINVAL/PS_ENOTSUP from the HTTP options. On failure
 * an adopted cache is freed. *out written only on success.
 */
int ps_loop_new(struct ps_loop **out, struct ps_engine *eng,
                struct ps_appender *app, const struct ps_loop_config *cfg,
                const struct ps_target *target, uint64_t offset_seed,
                struct ps_cache *cache, struct ps_err *e);

/* Schedules the first scrape. PS_OK or PS_ENOMEM (timer heap growth). */
int ps_loop_start(struct ps_loop *l);

/*
 * Stops scraping: cancels the timer and any transfer in flight.
 * With end_of_run_staleness (a target that went away), the loop stays
 * alive as Prometheus's endOfRunStaleness: it waits for two more ticks
 * plus 10% of the interval, then commits stale markers for every series
 * of its last scrape and for the report series, then reports done (see
 * ps_loop_done). Without, the loop is idle at once. Idempotent.
 */
void ps_loop_stop(struct ps_loop *l, int end_of_run_staleness);

/* 1 once a stopped loop has nothing left to do and may be freed. */
int ps_loop_done(const struct ps_loop *l);

/* Called (on the engine thread) when a loop stopped with end-of-run
 * staleness has written its markers and is done. The callback may free
 * the loop; the loop touches nothing after calling it. */
typedef void (*ps_loop_done_fn)(struct ps_loop *l, void *ud);
void ps_loop_on_done(struct ps_loop *l, ps_loop_done_fn fn, void *ud);

/* Frees the loop, cancelling everything without staleness markers (what
 * a shutdown does). NULL-safe. Not from the loop's own callbacks. */
void ps_loop_free(struct ps_loop *l);

/* Hands the loop's cache to the caller (for a reloaded loop) and turns
 * off its end-of-run staleness. Only on a stopped loop; NULL if none. */
struct ps_cache *ps_loop_take_cache(struct ps_loop *l);

/* Makes every scrape fail with msg (copied) before fetching, as
 * Prometheus's setForcedError (target_limit); NULL clears it. PS_OK or
 * PS_ENOMEM (then unchanged). */
int ps_loop_set_forced_error(struct ps_loop *l, const char *msg);

/* Replaces the target's discovered labels (a kept target rediscovered
 * with other pre-relabeling labels). PS_OK or PS_ENOMEM (unchanged). */
int ps_loop_update_discovered(struct ps_loop *l, const struct ps_labels *d);

void ps_loop_status(const struct ps_loop *l, struct ps_target_status *st);

/*
 * Runs one scrape on a body the caller already has, as if the transfer
 * had just completed with this Content-Type (may be NULL) at sample time
 * t_ms: parse, append, staleness, report series, commit or rollback, and
 * the status, exactly as a fetched body. For tests and benchmarks: the
 * loop need not be started, and the clock and HTTP are not involved.
 * body is borrowed for the call. PS_OK, or PS_ESTATE while a transfer is
 * in flight or after end-of-run staleness; a failed scrape is reported
 * in the status (last_error), as usual.
 */
int ps_loop_scrape_body(struct ps_loop *l, const char *body, size_t len,
                        const char *content_type, int64_t t_ms);

/*
 * Deferred metric function rules (background mode). On a scrape-cache
 * miss whose metric chain reaches a hook that cannot run on the engine
 * thread (can_run() == 0), the loop parks the series: it keeps the label
 * set as it stands before that hook and the chain position, and HOLDS the
 * series' samples (value, timestamp) instead of appending them: at most
 * PS_LOOP_HELD_PER_SERIES per series (the oldest go first) and
 * PS_LOOP_MAX_HELD per loop, at most PS_LOOP_MAX_PENDING series per loop;
 * whatever is discarded is counted in deferred_lost. Later scrapes add to
 * the held samples without queuing the series again.
 *
 * ps_loop_resolve_deferred() runs the rest of the chain (the hook and
 * every segment after it) for up to max queued series, on the calling
 * thread, which must own the engine (the thread that steps it, or one
 * holding ps_bg_lock) and be the one the hooks may run on. Results stay
 * in the loop; a zero-delay timer installs them on the engine's next
 * step: a kept series becomes a normal cache entry and its held samples
 * are appended in a transaction of their own; a dropped one is cached as
 * dropped and its samples discarded; a failed one (rule error, invalid
 * labels) is forgotten, its samples discarded and counted, and it is
 * queued again when next scraped. Returns the number of series resolved;
 * *left (may be NULL) gets the number still queued.
 */
#define PS_LOOP_HELD_PER_SERIES 8
#define PS_LOOP_MAX_HELD 10000
#define PS_LOOP_MAX_PENDING 10000
size_t ps_loop_resolve_deferred(struct ps_loop *l, size_t max, size_t *left);
const struct ps_target *ps_loop_target(const struct ps_loop *l);
const struct ps_cache *ps_loop_cache(const struct ps_loop *l);

/*
 * Builds the Accept header for scrape_protocols (NULL/0: Prometheus's
 * default list) as Prometheus's acceptHeader(): q-values from 0.6 down,
 * escaping=allow-utf-8 (or underscores when legacy) on the 1.0.0 text
 * formats, then "*" "/" "*". Known names: PrometheusProto,
 * PrometheusText0.0.4, PrometheusText1.0.0, OpenMetricsText0.0.1,
 * OpenMetricsText1.0.0. *out owned by the caller. PS_OK, PS_EINVAL (unknown
 * or repeated name, in e), PS_ENOMEM.
 */
int ps_accept_header(const char *const *protocols, size_t n, int legacy,
                     char **out, struct ps_err *e);

#endif
