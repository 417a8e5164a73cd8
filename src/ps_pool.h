/*
 * ps_pool: the scrape pool of one job (Prometheus scrapePool).
 *
 * It owns the job's resolved configuration (compiled relabel rules, Accept
 * header, HTTP options), its active targets with one ps_loop each, its
 * dropped targets (up to keep_dropped_targets), and the loops that are
 * still writing end-of-run staleness markers after their target went away.
 *
 * Configuration structs are plain C data that a binding fills from a
 * prometheus.yml-shaped table: Prometheus's field names, durations in
 * milliseconds, strings as borrowed const char * (copied by the pool),
 * relabel rules as arrays of struct ps_relabel_config that the pool
 * compiles (errors name the job and the rule). Call
 * ps_scrape_config_init() / ps_global_config_init() first: they set the
 * defaults that are not zero (honor_timestamps, enable_compression,
 * follow_redirects, enable_http2); zero elsewhere means "unset", and unset
 * job fields take the global value, then Prometheus's default.
 *
 * Everything runs on the engine thread. Never call sync, reload or free
 * from inside an appender method or another engine callback: a loop could
 * be freed while it runs.
 */
#ifndef PS_POOL_H
#define PS_POOL_H

#include "ps_appender.h"
#include "ps_core.h"
#include "ps_engine.h"
#include "ps_labels.h"
#include "ps_loop.h"
#include "ps_relabel.h"
#include "ps_target.h"

#include <stddef.h>
#include <stdint.h>

/* ---- configuration ---------------------------------------------------- */

struct ps_basic_auth {
    const char *username;
    const char *password;
    const char *password_file; /* read when the pool is (re)built */
};

struct ps_authorization {
    const char *type;             /* NULL: "Bearer" */
    const char *credentials;
    const char *credentials_file; /* read when the pool is (re)built */
};

struct ps_tls_config {
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    const char *server_name;
    int insecure_skip_verify;
    const char *min_version; /* "TLS10" .. "TLS13" or NULL */
};

/* Prometheus's HTTPClientConfig. At most one of basic_auth, authorization
 * and bearer_token(_file) may be set (PS_EINVAL otherwise). */
struct ps_http_client_config {
    struct ps_basic_auth basic_auth; /* used when any field is set */
    struct ps_authorization authorization; /* used when credentials set */
    const char *bearer_token;       /* deprecated Prometheus spelling */
    const char *bearer_token_file;
    struct ps_tls_config tls_config;
    const char *proxy_url;
    int follow_redirects; /* init: 1 */
    int enable_http2;     /* init: 1 */
};

/* A target group (discovery's targetgroup.Group). Every target label set
 * must hold __address__ (a target without it is dropped with reason "no
 * address"). All borrowed for the call; the pool copies. */
struct ps_target_group {
    const char *source;               /* may be NULL */
    const struct ps_labels *targets;  /* targets[0..n_targets) */
    size_t n_targets;
    const struct ps_labels *labels;   /* group labels; may be NULL */
};

/* The `global` section's scrape defaults. */
struct ps_global_config {
    int64_t scrape_interval_ms;       /* 0: 60000 */
    int64_t scrape_timeout_ms;        /* 0: 10000, capped at the interval */
    const char *const *scrape_protocols; /* NULL: Prometheus's default */
    size_t n_scrape_protocols;
    uint64_t body_size_limit;
    uint64_t sample_limit;
    uint64_t target_limit;
    uint64_t label_limit;
    uint64_t label_name_length_limit;
    uint64_t label_value_length_limit;
    uint64_t keep_dropped_targets;
    const char *metric_name_validation_scheme; /* "utf8" | "legacy" */
};

/* One entry of scrape_configs. Zero (NULL) fields inherit the global
 * section; see each comment for the final default. */
struct ps_scrape_config {
    const char *job_name;           /* required, unique per manager */
    int64_t scrape_interval_ms;     /* global */
    int64_t scrape_timeout_ms;      /* global, capped at the interval;
                                     * > interval is PS_EINVAL */
    const char *metrics_path;       /* "/metrics" */
    const char *scheme;             /* "http" ("http" or "https") */
    const struct ps_param *params;  /* URL query; repeated names allowed */
    size_t n_params;
    int honor_labels;               /* 0 */
    int honor_timestamps;           /* init: 1 */
    int track_timestamps_staleness; /* 0 */
    int enable_compression;         /* init: 1 */
    const char *const *scrape_protocols; /* global, then the default */
    size_t n_scrape_protocols;
    const char *fallback_scrape_protocol; /* NULL: none */
    uint64_t body_size_limit;       /* bytes; global; 0: none */
    uint64_t sample_limit;          /* global; 0: none (all limits) */
    uint64_t target_limit;
    uint64_t label_limit;
    uint64_t label_name_length_limit;
    uint64_t label_value_length_limit;
    uint64_t keep_dropped_targets;  /* global; 0: keep all */
    const char *metric_name_validation_scheme; /* global, then "utf8" */
    int extra_scrape_metrics;       /* Prometheus's feature flag, per job */
    const struct ps_relabel_config *relabel_configs;
    size_t n_relabel_configs;
    const struct ps_relabel_config *metric_relabel_configs;
    size_t n_metric_relabel_configs;
    /* External rules (Lua functions) spliced into the lists above by
     * position (see struct ps_relabel_hook in ps_loop.h): the table rules
     * fill the other positions in order. Target hooks run at sync time;
     * metric hooks on scrape-cache misses only. A hook's id enters the
     * fingerprint, so a reload with the same ids keeps the job running
     * with its old hooks. */
    const struct ps_relabel_hook *relabel_hooks;
    size_t n_relabel_hooks;
    const struct ps_relabel_hook *metric_relabel_hooks;
    size_t n_metric_relabel_hooks;
    struct ps_http_client_config http_client; /* inline in YAML */
    /* static_configs: groups synced on creation and kept alongside the
     * groups given to ps_pool_sync() (source "static/<i>" if NULL). */
    const struct ps_target_group *static_configs;
    size_t n_static_configs;
    /* vmagent extensions (Prometheus lacks them): */
    int64_t scrape_offset_ms;         /* fixed offset instead of hashed */
    int64_t scrape_align_interval_ms; /* align scrapes to this grid */
};

/* Set the non-zero defaults; cannot fail. */
void ps_global_config_init(struct ps_global_config *g);
void ps_scrape_config_init(struct ps_scrape_config *c);

/* ---- prepared configs -------------------------------------------------- */

/*
 * A resolved, validated and compiled scrape config (rules compiled,
 * credential files read, Accept header built, static groups copied).
 * ps_manager_apply_config prepares every job first so that a bad config
 * changes nothing; the pool functions below take ownership of one.
 * Errors as ps_pool_new. *out only on success.
 */
struct ps_pool_config;
int ps_pool_config_new(struct ps_pool_config **out,
                       const struct ps_global_config *g,
                       const struct ps_scrape_config *c, struct ps_err *e);
void ps_pool_config_free(struct ps_pool_config *pc); /* NULL-safe */
const char *ps_pool_config_job(const struct ps_pool_config *pc);
const char *ps_pool_config_fingerprint(const struct ps_pool_config *pc);

/* ---- pool ------------------------------------------------------------- */

struct ps_pool;

/*
 * Creates the pool for c (g may be NULL: defaults), validating and
 * resolving the config, compiling its rules and reading credential files.
 * Its loops run on eng and append to app (both borrowed, must outlive the
 * pool). static_configs are synced at once. Errors: PS_EINVAL with
 * "job 'x': ..." (for rules: "job 'x': relabel_configs: rule N: ..."),
 * PS_ENOMEM, PS_EIO (unreadable credential file). *out only on success.
 */
int ps_pool_new(struct ps_pool **out, struct ps_engine *eng,
                struct ps_appender *app, const struct ps_global_config *g,
                const struct ps_scrape_config *c, uint64_t offset_seed,
                struct ps_err *e);

/* ps_pool_new and ps_pool_reload with a prepared config, which they take
 * over in every case (freed on failure). */
int ps_pool_new_prepared(struct ps_pool **out, struct ps_engine *eng,
                         struct ps_appender *app, struct ps_pool_config *pc,
                         uint64_t offset_seed, struct ps_err *e);
int ps_pool_reload_prepared(struct ps_pool *p, struct ps_pool_config *pc,
                            int *restarted, struct ps_err *e);

/* Stops every loop without staleness markers (shutdown, or a job removed
 * from the config, as Prometheus cancels the pool's context) and frees
 * the pool. NULL-safe. */
void ps_pool_free(struct ps_pool *p);

/*
 * Replaces the pool's discovered targets with groups[0..n) (plus the
 * static_configs): targets are populated, deduplicated by hash, new ones
 * get a started loop, gone ones are stopped with end-of-run staleness,
 * kept ones keep their loop untouched (their discovered labels are
 * refreshed). target_limit: when more targets are active than the limit,
 * every loop fails its scrapes with Prometheus's error until it is not.
 * PS_OK, or PS_ENOMEM / PS_ELIMIT with the pool left in a consistent state
 * (some targets may not be updated).
 */
int ps_pool_sync(struct ps_pool *p, const struct ps_target_group *groups,
                 size_t n, struct ps_err *e);

/*
 * Applies a new config for the same job. Same fingerprint: nothing
 * happens (*restarted = 0). Otherwise the config is rebuilt, targets are
 * repopulated from the last groups, and every loop is restarted with the
 * new settings, keeping its cache and writing no end-of-run staleness (as
 * Prometheus's reload). See below for errors.
 * A config error (PS_EINVAL, PS_EIO) changes nothing; PS_ENOMEM during the
 * re-sync may leave some targets not updated. restarted may be NULL.
 */
int ps_pool_reload(struct ps_pool *p, const struct ps_global_config *g,
                   const struct ps_scrape_config *c, int *restarted,
                   struct ps_err *e);

/* The job name and the config fingerprint (a canonical string of every
 * resolved setting; secrets appear only as their hash). Borrowed. */
const char *ps_pool_job(const struct ps_pool *p);
const char *ps_pool_fingerprint(const struct ps_pool *p);

/*
 * Computes the fingerprint that ps_pool_new would give (g may be NULL),
 * without building anything: equal strings mean a reload is a no-op.
 * *out owned by the caller (ps_free). PS_OK, PS_ENOMEM, PS_EIO.
 */
int ps_scrape_config_fingerprint(const struct ps_global_config *g,
                                 const struct ps_scrape_config *c,
                                 char **out, struct ps_err *e);

/* Active targets, in a stable order (by target hash). The status is
 * borrowed (see struct ps_target_status). i < ps_pool_ntargets() else
 * PS_EINVAL. */
size_t ps_pool_ntargets(const struct ps_pool *p);
int ps_pool_target(const struct ps_pool *p, size_t i,
                   struct ps_target_status *st);
/* The loop of active target i (NULL if out of range), e.g. for tests that
 * check a reload kept it. */
struct ps_loop *ps_pool_loop(const struct ps_pool *p, size_t i);

/* Dropped targets (by relabeling: reason ""; by validation: the error),
 * at most keep_dropped_targets of them when that is non-zero. */
struct ps_dropped_target {
    const struct ps_labels *discovered; /* borrowed */
    const char *reason;                 /* borrowed, "" when relabeled */
};
size_t ps_pool_ndropped(const struct ps_pool *p);
size_t ps_pool_ndropped_total(const struct ps_pool *p); /* before the cap */
int ps_pool_dropped(const struct ps_pool *p, size_t i,
                    struct ps_dropped_target *d);

/* Loops still writing end-of-run staleness (for tests and shutdown). */
size_t ps_pool_nretiring(const struct ps_pool *p);

#endif
