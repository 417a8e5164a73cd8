/*
 * ps_remote_write: an appender that sends what it is given to one
 * Prometheus remote write 1.0 endpoint, the way Prometheus's QueueManager
 * does (storage/remote/queue_manager.go). See docs/remote_write.md.
 *
 *   commit ──> shard queues (by series hash) ──> batches ──> ps_pb + snappy
 *          ──> POST on the engine's curl multi handle ──> retry | done
 *
 * - Transactions: appended samples are staged and reach the queues only on
 *   commit; rollback discards them. Staleness markers are ordinary samples.
 * - Sharding: a series always goes to the same shard (its label hash modulo
 *   the shard count), a shard has at most one request in flight, and a
 *   failed batch is retried before anything behind it, so the samples of a
 *   series arrive in the order they were committed.
 * - Resharding (when min_shards < max_shards): every reshard interval
 *   (10 s; sooner when the queue drops) the shard count the load needs is
 *   computed from EWMA rates of items committed, items settled and send
 *   time, as Prometheus's calculateDesiredShards does. The count grows as
 *   soon as it is too small or the queue drops, and shrinks below 70 % of
 *   it (Prometheus's 30 % band, adapted to a queue that drops instead of
 *   blocking: see docs/remote_write.md), never while sends fail. A reshard
 *   stops the shards cutting batches, lets the requests in flight finish,
 *   moves every queued item to its shard under the new count (in queue
 *   order) and resumes: nothing is lost or sent twice, and per-series
 *   order holds across it.
 * - Batches: a shard sends as soon as it holds max_samples_per_send
 *   samples, or batch_send_deadline after its oldest queued sample.
 * - Retries: 5xx, network errors and timeouts, and 429 when
 *   retry_on_http_429, are retried forever with exponential backoff from
 *   min_backoff doubling to max_backoff (a 429's Retry-After wins when
 *   given). Other statuses are not retried: the batch counts as failed and
 *   the server's reason becomes last_error.
 * - The queue of a shard holds `capacity` samples. When a commit finds it
 *   full, the oldest queued samples are dropped and counted (dropped); a
 *   batch already in flight is never dropped.
 * - Everything runs on the engine thread, inside commit and the engine's
 *   callbacks and timers, and never blocks: a commit only queues (and may
 *   start a transfer). ps_remote_write_stats() may be called from any
 *   thread.
 *
 * Series refs are the appender's own: ref = (generation << 32) | (slot + 1).
 * write_relabel_configs run once per series, when it is first seen; the
 * resulting labels (or the decision to drop it) are kept with the ref.
 * Forgetting: a series whose newest committed sample is older than the
 * newest committed timestamp minus series_ttl_ms, and that has nothing
 * queued, is forgotten (checked at most every series_ttl_ms / 2 of sample
 * time, on commit). A stale ref then fails its generation check and the
 * append falls back to the labels, which are always passed.
 */
#ifndef PS_REMOTE_WRITE_H
#define PS_REMOTE_WRITE_H

#include "ps_appender.h"
#include "ps_engine.h"
#include "ps_http.h"
#include "ps_relabel.h"

#include <stddef.h>
#include <stdint.h>

/* queue_config; zero fields take Prometheus's defaults (in brackets). */
struct ps_remote_write_queue {
    size_t capacity;             /* samples queued per shard [10000] */
    unsigned max_shards;         /* [50, or min_shards if larger] */
    unsigned min_shards;         /* [1]; the shard count starts here and
                                  * moves within [min, max] with the load;
                                  * min == max: a fixed count */
    size_t max_samples_per_send; /* [2000] */
    long batch_send_deadline_ms; /* [5000] */
    long min_backoff_ms;         /* [30] */
    long max_backoff_ms;         /* [5000] */
    int retry_on_http_429;       /* [0, as Prometheus 2.x/3.x default] */
};

/* metadata_config */
struct ps_remote_write_metadata {
    int disable;                 /* send: true unless disabled */
    long send_interval_ms;       /* [60000] */
    size_t max_samples_per_send; /* entries per request [2000] */
};

/*
 * One remote_write entry of prometheus.yml. Strings are copied (by us or by
 * libcurl) during ps_remote_write_new(); nothing is borrowed after it.
 */
struct ps_remote_write_opts {
    const char *name;            /* for messages; NULL: "remote_write" */
    const char *url;             /* required */
    long remote_timeout_ms;      /* per request [30000] */
    const char *const *headers;  /* "Name: value" lines, NULL-ended */
    const char *basic_auth_user; /* basic auth if non-NULL */
    const char *basic_auth_password;
    const char *auth_type;        /* authorization.type; NULL: "Bearer" */
    const char *auth_credentials; /* authorization.credentials / bearer */
    /* secrets in files, re-read when they change (ps_http_req_opts) */
    const char *basic_auth_password_file;
    const char *auth_credentials_file;
    struct ps_http_tls_opts tls;
    const char *proxy_url;
    int disable_http2;
    int disable_follow_redirects; /* http_config.follow_redirects: false */
    const struct ps_relabel_config *write_relabel_configs;
    size_t n_write_relabel_configs;
    unsigned relabel_flags; /* PS_RELABEL_LEGACY_NAMES */
    struct ps_remote_write_queue queue;
    struct ps_remote_write_metadata metadata;
    int send_exemplars;       /* [0] */
    int64_t series_ttl_ms;    /* forget idle series [3600000]; -1: never */
    long reshard_interval_ms; /* for tests only: how often the shard
                               * count is recomputed [10000, Prometheus's
                               * shardUpdateDuration]; not in the YAML */
};

struct ps_remote_write;

/*
 * Creates the endpoint on eng (borrowed: it must outlive the appender, or
 * the appender must be freed first; see ps_remote_write_free). Validates
 * everything: PS_EINVAL with a message naming the field (for example
 * "write_relabel_configs[2]: ..."), PS_ENOTSUP, PS_ENOMEM, PS_EIO. *out is
 * written only on success. Call on the engine thread.
 */
int ps_remote_write_new(struct ps_remote_write **out, struct ps_engine *eng,
                        const struct ps_remote_write_opts *o, struct ps_err *e);

/*
 * Frees everything, cancelling transfers and timers. Queued and in-flight
 * samples are lost, not sent (call ps_remote_write_flush() first for a
 * graceful stop). NULL-safe. On the engine thread, not from the engine's
 * callbacks; valid before or after ps_engine_free().
 */
void ps_remote_write_free(struct ps_remote_write *rw);

/* The endpoint as an appender (the same object; ps_appender_free() on it
 * is ps_remote_write_free()). */
struct ps_appender *ps_remote_write_appender(struct ps_remote_write *rw);

/*
 * Graceful shutdown: sends everything queued at once (ignoring the batch
 * deadline) and drives the engine until every queue is empty and nothing
 * is in flight, or until deadline_ms have passed. PS_OK when drained;
 * PS_ELIMIT when the deadline came first (what is left stays queued);
 * PS_ESTATE inside a transaction or from an engine callback; PS_EIO if the
 * engine failed. On the engine thread, while the engine is not running.
 */
int ps_remote_write_flush(struct ps_remote_write *rw, long deadline_ms,
                          struct ps_err *e);

struct ps_remote_write_stats {
    uint64_t samples_sent;    /* acknowledged with 2xx */
    uint64_t samples_failed;  /* in batches rejected with a status that is
                               * not retried (4xx), or that could not be
                               * encoded: never delivered */
    uint64_t samples_retried; /* counted once per retry of their batch */
    uint64_t samples_dropped; /* pushed out of a full queue: oldest first */
    uint64_t samples_relabel_dropped; /* series dropped by
                                       * write_relabel_configs */
    uint64_t exemplars_sent;
    uint64_t exemplars_dropped; /* pushed out of a full queue */
    uint64_t metadata_sent;
    uint64_t metadata_failed;
    uint64_t requests;           /* POSTs completed, successful or not */
    size_t pending;              /* items (samples, and exemplars when sent)
                                  * queued in shards, not yet in a request */
    size_t inflight;             /* in requests being sent or retried */
    size_t series;               /* series (refs) known */
    unsigned shards;             /* the shard count in use */
    unsigned desired_shards;     /* the count the last tick computed from
                                  * the rates, within [min, max], before
                                  * the reshard rules; == shards until then */
    uint64_t reshards;           /* reshards done */
    int64_t last_send_ms;        /* wall clock of the last 2xx, 0: never */
    int last_status;             /* HTTP status of the last failure, 0 */
    char last_error[PS_ERR_MAX]; /* the latest failure, "" if none yet; a
                                  * later success does not clear it */
};

/* A consistent snapshot of the counters. Thread-safe, never fails. */
void ps_remote_write_stats(struct ps_remote_write *rw,
                           struct ps_remote_write_stats *st);

#endif
