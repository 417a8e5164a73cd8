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
    struct ps_relabel_scratch *scratch; /* required with metric_relabel;
                                         * shared by the pool's loops (one
                                         * thread) */
    int64_t scrape_offset_ms;   /* vmagent scrape_offset; 0: hashed */
    int64_t scrape_align_interval_ms; /* vmagent; 0: off */
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
