/*
 * ps_manager: the scrape manager (Prometheus scrape.Manager). It holds one
 * ps_pool per job, an engine (borrowed, or its own), one appender
 * (borrowed) and the offset seed that spreads targets over their interval.
 * No global state: several managers may coexist, each driven by the
 * thread that steps its engine. Nothing here touches Lua; the binding
 * drains results on its own thread. apply_config, sync and free must not
 * be called from inside an appender method or engine callback.
 */
#ifndef PS_MANAGER_H
#define PS_MANAGER_H

#include "ps_appender.h"
#include "ps_core.h"
#include "ps_engine.h"
#include "ps_pool.h"

#include <stddef.h>
#include <stdint.h>

struct ps_manager_opts {
    struct ps_engine *engine;   /* NULL: the manager makes and owns one */
    struct ps_appender *appender; /* required, borrowed */
    uint64_t offset_seed;       /* e.g. ps_manager_seed_of(hostname) */
};

struct ps_manager;

/* Hash of a string (external labels, hostname...) for offset_seed. */
uint64_t ps_manager_seed_of(const char *s, size_t n);

/* PS_OK, PS_EINVAL (no appender), PS_ENOMEM, PS_EIO (engine). */
int ps_manager_new(struct ps_manager **out, const struct ps_manager_opts *o,
                   struct ps_err *e);
/* Frees every pool (no staleness markers, as a shutdown), then the engine
 * if the manager owns it. NULL-safe. Not from an engine callback. */
void ps_manager_free(struct ps_manager *m);

struct ps_engine *ps_manager_engine(struct ps_manager *m); /* borrowed */

/*
 * Applies a whole configuration (g may be NULL), as Prometheus's
 * ApplyConfig: every config is validated and built first, and only if all
 * succeed is anything changed (so an error leaves the running state
 * untouched). Then: jobs with an unchanged fingerprint keep running
 * untouched, changed jobs are reloaded (loops restarted, caches kept),
 * removed jobs are freed (no staleness), new jobs start with their
 * static_configs. Duplicate job names are PS_EINVAL.
 */
int ps_manager_apply_config(struct ps_manager *m,
                            const struct ps_global_config *g,
                            const struct ps_scrape_config *cfgs, size_t n,
                            struct ps_err *e);

/* Syncs a job's discovered groups (see ps_pool_sync). PS_EINVAL if the job
 * has no pool (as Prometheus ignores unknown jobs, callers may ignore). */
int ps_manager_sync(struct ps_manager *m, const char *job,
                    const struct ps_target_group *groups, size_t n,
                    struct ps_err *e);

/* Pools: by job name (NULL if none) or by index in job-name order. */
struct ps_pool *ps_manager_pool(const struct ps_manager *m, const char *job);
size_t ps_manager_npools(const struct ps_manager *m);
struct ps_pool *ps_manager_pool_at(const struct ps_manager *m, size_t i);

/* Passthroughs to the engine (see ps_engine.h). */
int ps_manager_step(struct ps_manager *m, int timeout_ms, struct ps_err *e);
int ps_manager_run(struct ps_manager *m, long duration_ms, struct ps_err *e);
void ps_manager_stop(struct ps_manager *m); /* thread-safe */

#endif
