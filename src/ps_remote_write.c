/*
 * ps_remote_write.c: see ps_remote_write.h and docs/remote_write.md.
 *
 * Data layout:
 *   series[]   one slot per known series (input labels, relabeled labels,
 *              shard, newest committed timestamp, items queued), found by
 *              ref (slot + generation) or by labels through `index`;
 *   txn[]      the items staged by the open transaction;
 *   shards[]   pointers to shards, each a ring of at least `capacity`
 *              items, one POST request, a batch deadline timer and a retry
 *              timer; the batch being sent lives only as its compressed
 *              body (the items are encoded when the batch is cut, so their
 *              series may be forgotten afterwards; the cutting scratch is
 *              shared, as cuts never overlap). Pointers, so that a reshard
 *              keeps the shards it reuses (and their timers, which the
 *              timer heap points to) where they are;
 *   rates      EWMA rates of items committed, items sent and send time,
 *              ticked by the reshard timer (see "resharding" below);
 *   meta[]     the newest metadata per metric family, sent periodically on
 *              its own request.
 */
#include "ps_remote_write.h"

#include "ps_buf.h"
#include "ps_hmap.h"
#include "ps_pb.h"

#include <snappy-c.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DEF_CAPACITY 10000
#define DEF_MAX_SHARDS 50
#define DEF_MIN_SHARDS 1
#define DEF_MAX_PER_SEND 2000
#define DEF_DEADLINE_MS 5000
#define DEF_MIN_BACKOFF_MS 30
#define DEF_MAX_BACKOFF_MS 5000
#define DEF_TIMEOUT_MS 30000
#define DEF_META_INTERVAL_MS 60000
#define DEF_TTL_MS 3600000
#define DEF_RESHARD_MS 10000  /* Prometheus's shardUpdateDuration */
#define EWMA_WEIGHT 0.2       /* Prometheus's ewmaWeight */
#define SHARD_TOLERANCE 0.3   /* no reshard within 30 % of the count */
#define CATCHUP_FRACTION 0.05 /* of the backlog, sent per second extra */
#define MAX_BEHIND_S 10.0     /* no downsharding further behind than this */
#define EARLY_TICK_DIV 10     /* a dropping queue ticks after 1/10 interval */
#define SHRINK_ROOM_S 1.0     /* a shrink leaves room for this much input */
#define RESPONSE_LIMIT (1u << 20) /* a 2xx body is not ours to read */

/* One queued (or staged) sample or exemplar. */
struct rw_item {
    int64_t t;
    double v;
    struct ps_label *exl; /* exemplar labels, owned (NULL if none) */
    uint32_t idx;         /* series slot */
    uint32_t exn;         /* number of exemplar labels */
    int is_ex;
};

struct rw_series {
    struct ps_label *in;  /* owned block: the labels as appended */
    struct ps_label *out; /* after write relabeling: == in when unchanged,
                           * else its own block; NULL when dropped */
    size_t n_in, n_out;
    uint64_t hash;   /* of the input labels: index key and shard */
    int64_t last_ts; /* newest committed (or staged, if dropped) sample */
    int64_t txn_ts;  /* latest sample staged in this transaction */
    size_t queued;   /* items in shard queues that point here */
    uint64_t mark;   /* batch grouping: the batch that last saw it */
    size_t group;    /* its group in that batch */
    uint32_t gen;    /* bumped when the slot is freed */
    uint32_t next_free;
    int live, dropped;
};

/* An exponentially weighted moving average of events per second, ticked at
 * each reshard interval (Prometheus's ewmaRate). */
struct rw_ewma {
    uint64_t events; /* since the last tick */
    double rate;
    int init; /* the first tick with events sets the rate outright */
};

struct rw_meta {
    char *family, *help, *unit; /* owned, NUL-terminated */
    size_t family_n;
    enum ps_mtype type;
};

struct rw_shard {
    struct ps_remote_write *rw;
    struct rw_item *q; /* ring of qcap items; qcap >= rw->capacity, more
                        * only after a reshard moved more in (see
                        * reshard_apply) */
    size_t qcap, head, len;
    struct ps_http_req *req;
    struct ps_timer deadline, retry;
    long backoff_ms;
    int busy;                       /* a batch is in flight or awaits retry */
    size_t batch_samples, batch_ex; /* what the batch in flight carries */
    uint64_t batch_start_ns;        /* when it was cut: its send time,
                                     * retries included, feeds the rates */
    struct ps_buf pb;               /* the encoded WriteRequest */
    char *body;                     /* its snappy block: the POST body */
    size_t body_len, body_cap;
};

struct ps_remote_write {
    struct ps_appender base; /* first: the appender view */
    struct ps_engine *eng;   /* borrowed */
    char *name;
    struct ps_relabel *relabel; /* NULL without write_relabel_configs */
    struct ps_relabel_scratch *scratch;
    struct ps_labels relabeled; /* relabel output, reused */

    /* configuration */
    size_t capacity, max_per_send;
    long deadline_ms, min_backoff_ms, max_backoff_ms;
    int retry_429, send_exemplars;
    int64_t ttl_ms;

    /* series */
    struct rw_series *series;
    size_t n_series, cap_series, live_series;
    uint32_t free_head; /* slot + 1 of the first free slot, 0: none */
    struct ps_hmap index;
    int64_t max_ts, last_gc_ts;
    uint64_t batch_seq;

    /* the open transaction */
    int in_txn;
    struct rw_item *txn;
    size_t n_txn, cap_txn;
    uint64_t txn_rdrop;
    struct rw_meta *txn_meta;
    size_t n_txn_meta, cap_txn_meta;

    /* encoding scratch shared by the shards (batches are cut one at a
     * time, on the engine thread), sized max_samples_per_send up front */
    struct rw_item *cut;
    size_t *order, *start;
    struct ps_pb_sample *smp;
    struct ps_pb_exemplar *exs;

    /* shards; the request options are kept (strings copied into
     * ro_block, owned) to create the requests of shards a reshard adds */
    struct rw_shard **shards; /* owned array of owned shards */
    unsigned n_shards;
    int flushing;
    struct ps_http_req_opts ro;
    void *ro_block;

    /* resharding: rates, timer, state (see "resharding" below) */
    unsigned min_shards, max_shards;
    long reshard_ms;
    struct ps_timer reshard_timer; /* armed only when min < max */
    int draining;                  /* waiting for in-flight requests */
    int overflowed;                /* this commit dropped queued items */
    unsigned reshard_to;           /* the count being moved to */
    uint64_t last_tick_ns, last_done_ns;
    uint64_t drain_start_ns, last_drain_ns; /* how long the last drain took */
    uint64_t dropped_at_tick;               /* items dropped until then */
    struct rw_ewma rate_in, rate_out, rate_out_ns;

    /* metadata */
    int meta_enabled;
    long meta_interval_ms;
    size_t meta_per_send;
    struct rw_meta *meta;
    size_t n_meta, cap_meta;
    struct ps_hmap meta_index;
    struct ps_http_req *meta_req;
    struct ps_timer meta_timer;
    int meta_busy;
    size_t meta_cursor, meta_batch;
    struct ps_buf meta_pb;
    char *meta_body;
    size_t meta_body_len, meta_body_cap;

    /* counters: read by other threads through ps_remote_write_stats */
    pthread_mutex_t mu;
    int mu_ok;
    struct ps_remote_write_stats st;
};

static const struct ps_appender_vt rw_vt;

/* ---- small helpers ------------------------------------------------------- */

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void lock(struct ps_remote_write *rw)
{
    if (rw->mu_ok)
        pthread_mutex_lock(&rw->mu);
}

static void unlock(struct ps_remote_write *rw)
{
    if (rw->mu_ok)
        pthread_mutex_unlock(&rw->mu);
}

/* Records a failure message (under the lock). */
static void set_error(struct ps_remote_write *rw, int status, const char *msg)
{
    rw->st.last_status = status;
    snprintf(rw->st.last_error, sizeof(rw->st.last_error), "%s", msg);
}

/* Grows *p (elements of size sz) to hold need; PS_ENOMEM leaves it. */
static int grow(void **p, size_t *cap, size_t need, size_t sz)
{
    size_t n = *cap ? *cap : 16;
    void *np;

    if (need <= *cap)
        return PS_OK;
    while (n < need)
        n *= 2;
    if (n > SIZE_MAX / sz)
        return PS_ENOMEM;
    np = ps_realloc(*p, n * sz);
    if (np == NULL)
        return PS_ENOMEM;
    *p = np;
    *cap = n;
    return PS_OK;
}

static uint64_t ref_of(const struct ps_remote_write *rw, size_t slot)
{
    return (uint64_t)rw->series[slot].gen << 32 | (uint64_t)(slot + 1);
}

/* ---- series -------------------------------------------------------------- */

/* ps_hmap equality: the lookup labels against a slot's input labels. */
static int eq_series(const void *key, uint64_t val, void *ud)
{
    const struct ps_labels *ls = key;
    const struct ps_remote_write *rw = ud;
    const struct rw_series *s = &rw->series[val];

    return ps_labels_equal_v(ls->v, ls->n, s->in, s->n_in);
}

/* Frees a series' label copies (out may alias in). */
static void series_release(struct rw_series *s)
{
    if (s->out != s->in)
        ps_free(s->out);
    ps_free(s->in);
    s->in = s->out = NULL;
}

/*
 * Creates a series for ls: copies it, applies write_relabel_configs, finds
 * it a slot and indexes it. Everything that can fail happens before the
 * tables change, so a failure leaves the appender as it was.
 */
static int series_new(struct ps_remote_write *rw, const struct ps_labels *ls,
                      uint64_t hash, size_t *slot_out, struct ps_err *e)
{
    struct ps_label *in = NULL, *out = NULL;
    size_t n_out = 0, slot, drop_at = PS_RELABEL_KEPT;
    int rc, dropped = 0;
    struct rw_series *s;

    if (ls->n == 0)
        return ps_err_set(e, PS_EINVAL, "remote_write '%s': empty label set",
                          rw->name);
    in = ps_label_block_dup(ls->v, ls->n);
    if (in == NULL)
        goto oom;
    out = in;
    n_out = ls->n;
    if (rw->relabel != NULL) {
        rc = ps_relabel_apply(rw->relabel, rw->scratch, ls, &rw->relabeled,
                              &drop_at, e);
        if (rc != PS_OK) {
            ps_free(in);
            return rc;
        }
        if (drop_at != PS_RELABEL_KEPT || rw->relabeled.n == 0) {
            dropped = 1;
            out = NULL;
            n_out = 0;
        } else if (!ps_labels_equal_v(rw->relabeled.v, rw->relabeled.n, ls->v,
                                      ls->n)) {
            out = ps_label_block_dup(rw->relabeled.v, rw->relabeled.n);
            n_out = rw->relabeled.n;
            if (out == NULL)
                goto oom;
        }
        ps_labels_clear(&rw->relabeled);
    }
    if (rw->free_head == 0 &&
        grow((void **)&rw->series, &rw->cap_series, rw->n_series + 1,
             sizeof(*rw->series)) != PS_OK)
        goto oom;
    slot = rw->free_head ? rw->free_head - 1 : rw->n_series;
    if (ps_hmap_insert(&rw->index, hash, slot) != PS_OK)
        goto oom;
    if (rw->free_head) {
        rw->free_head = rw->series[slot].next_free;
    } else {
        memset(&rw->series[slot], 0, sizeof(rw->series[slot]));
        rw->n_series++;
    }
    s = &rw->series[slot];
    s->in = in;
    s->n_in = ls->n;
    s->out = out;
    s->n_out = n_out;
    s->hash = hash;
    s->last_ts = INT64_MIN;
    s->txn_ts = 0;
    s->queued = 0;
    s->mark = 0;
    s->live = 1;
    s->dropped = dropped;
    s->next_free = 0;
    rw->live_series++;
    *slot_out = slot;
    return PS_OK;
oom:
    ps_labels_clear(&rw->relabeled);
    if (out != in)
        ps_free(out);
    ps_free(in);
    return ps_err_set(e, PS_ENOMEM, "remote_write '%s': out of memory",
                      rw->name);
}

/* The slot of (ref, ls): by ref when it is current, else by labels
 * (creating the series if new). PS_EINVAL without usable labels. */
static int resolve(struct ps_remote_write *rw, uint64_t ref,
                   const struct ps_labels *ls, size_t *slot, struct ps_err *e)
{
    uint64_t h, *v;

    if (ref != 0) {
        size_t k = (size_t)(ref & 0xffffffffu);
        if (k >= 1 && k <= rw->n_series && rw->series[k - 1].live &&
            rw->series[k - 1].gen == (uint32_t)(ref >> 32)) {
            *slot = k - 1;
            return PS_OK;
        }
    }
    if (ls == NULL)
        return ps_err_set(e, PS_EINVAL,
                          "remote_write '%s': unknown ref "
                          "and no labels",
                          rw->name);
    h = ps_labels_hash(ls);
    v = ps_hmap_find(&rw->index, h, eq_series, ls, rw);
    if (v != NULL) {
        *slot = (size_t)*v;
        return PS_OK;
    }
    return series_new(rw, ls, h, slot, e);
}

/* ps_hmap_remove_if callback: frees an idle, unpinned series' slot. A
 * series with items queued stays, since cut_batch needs its labels. */
static int drop_idle(uint64_t hash, uint64_t val, void *ud)
{
    struct ps_remote_write *rw = ud;
    struct rw_series *s = &rw->series[val];
    int64_t limit = rw->max_ts - rw->ttl_ms;

    (void)hash;
    if (s->queued != 0 || s->last_ts >= limit)
        return 0;
    series_release(s);
    s->live = 0;
    s->gen++;
    s->next_free = rw->free_head;
    rw->free_head = (uint32_t)(val + 1);
    rw->live_series--;
    return 1;
}

/* The forgetting rule of the header; runs on commit, never allocates. */
static void maybe_forget(struct ps_remote_write *rw)
{
    if (rw->ttl_ms < 0 || rw->max_ts == INT64_MIN)
        return;
    if (rw->last_gc_ts != INT64_MIN &&
        rw->max_ts - rw->last_gc_ts < rw->ttl_ms / 2)
        return;
    rw->last_gc_ts = rw->max_ts;
    ps_hmap_remove_if(&rw->index, drop_idle, rw);
}

/* ---- sending samples ----------------------------------------------------- */

static void shard_kick(struct rw_shard *sh);
static void send_batch(struct rw_shard *sh);
static void reshard_on_idle(struct ps_remote_write *rw);
static void reshard_cancel(struct ps_remote_write *rw);

/* Releases what a queued item owns and unpins its series. */
static void item_release(struct ps_remote_write *rw, struct rw_item *it)
{
    ps_free(it->exl);
    it->exl = NULL;
    rw->series[it->idx].queued--;
}

/* Compresses sh->pb into sh->body. PS_OK, PS_ENOMEM, PS_EIO. */
static int compress(struct ps_buf *pb, char **body, size_t *cap, size_t *len)
{
    size_t max = snappy_max_compressed_length(pb->len), n = max;

    if (max > *cap) {
        char *nb = ps_realloc(*body, max);
        if (nb == NULL)
            return PS_ENOMEM;
        *body = nb;
        *cap = max;
    }
    if (snappy_compress(ps_buf_cstr(pb), pb->len, *body, &n) != SNAPPY_OK)
        return PS_EIO;
    *len = n;
    return PS_OK;
}

/*
 * Cuts the next batch off the ring: up to max_samples_per_send items,
 * grouped into one TimeSeries per series (each in queue order, so
 * timestamps stay ordered), encoded and compressed into sh->body. The
 * items leave the queue either way; on failure they count as failed.
 * Returns PS_OK with a body to send.
 */
static int cut_batch(struct rw_shard *sh)
{
    struct ps_remote_write *rw = sh->rw;
    size_t n = sh->len < rw->max_per_send ? sh->len : rw->max_per_send;
    size_t i, g, ng = 0;
    uint64_t mark = ++rw->batch_seq;
    int rc = PS_OK;

    for (i = 0; i < n; i++) /* out of the ring, into the scratch */
        rw->cut[i] = sh->q[(sh->head + i) % sh->qcap];
    sh->head = (sh->head + n) % sh->qcap;
    sh->len -= n;
    sh->batch_samples = sh->batch_ex = 0;
    sh->batch_start_ns = ps_engine_now_ns();

    /* counting sort by group, stable: start[g] = first position of g */
    for (i = 0; i < n; i++) {
        struct rw_series *s = &rw->series[rw->cut[i].idx];
        if (s->mark != mark) {
            s->mark = mark;
            s->group = ng;
            rw->start[ng++] = 0;
        }
        rw->start[s->group]++;
        if (rw->cut[i].is_ex)
            sh->batch_ex++;
        else
            sh->batch_samples++;
    }
    {
        size_t sum = 0;
        for (g = 0; g < ng; g++) {
            size_t c = rw->start[g];
            rw->start[g] = sum;
            sum += c;
        }
        rw->start[ng] = sum;
        for (i = 0; i < n; i++) {
            size_t grp = rw->series[rw->cut[i].idx].group;
            rw->order[rw->start[grp]++] = i;
        }
        /* start[g] now holds the end of g: shift back to starts */
        for (g = ng; g > 0; g--)
            rw->start[g] = rw->start[g - 1];
        rw->start[0] = 0;
    }

    ps_buf_reset(&sh->pb);
    for (g = 0; g < ng && rc == PS_OK; g++) {
        struct ps_pb_series ps;
        const struct rw_series *s = NULL;
        size_t k;
        memset(&ps, 0, sizeof(ps));
        ps.samples = rw->smp;
        ps.exemplars = rw->exs;
        for (k = rw->start[g]; k < rw->start[g + 1]; k++) {
            const struct rw_item *it = &rw->cut[rw->order[k]];
            s = &rw->series[it->idx];
            if (it->is_ex) {
                struct ps_pb_exemplar *x = &rw->exs[ps.n_exemplars++];
                x->labels = it->exl;
                x->n_labels = it->exn;
                x->value = it->v;
                x->ts_ms = it->t;
            } else {
                rw->smp[ps.n_samples].value = it->v;
                rw->smp[ps.n_samples++].ts_ms = it->t;
            }
        }
        ps.labels = s->out;
        ps.n_labels = s->n_out;
        rc = ps_pb_add_series(&sh->pb, &ps);
    }
    for (i = 0; i < n; i++)
        item_release(rw, &rw->cut[i]);
    if (rc == PS_OK)
        rc = compress(&sh->pb, &sh->body, &sh->body_cap, &sh->body_len);
    lock(rw);
    rw->st.pending -= n;
    if (rc == PS_OK) {
        rw->st.inflight += sh->batch_samples;
    } else {
        char msg[PS_ERR_MAX];
        snprintf(msg, sizeof(msg), "remote_write '%s': encoding a batch: %s",
                 rw->name, ps_strerror(rc));
        rw->st.samples_failed += sh->batch_samples;
        set_error(rw, 0, msg);
    }
    unlock(rw);
    return rc;
}

/* Schedules the next attempt of the shard's batch (kept as its body). */
static void arm_retry(struct rw_shard *sh, long delay_ms)
{
    struct ps_remote_write *rw = sh->rw;

    if (ps_engine_timer_in(rw->eng, &sh->retry, (uint64_t)delay_ms) != PS_OK) {
        /* no memory for the timer heap: give the batch up, counted. Not
         * kicked (that could recurse here through post): the next commit
         * or deadline restarts the shard. */
        lock(rw);
        rw->st.inflight -= sh->batch_samples;
        rw->st.samples_failed += sh->batch_samples;
        set_error(rw, 0, "out of memory scheduling a retry");
        unlock(rw);
        sh->busy = 0;
        reshard_on_idle(rw);
    }
}

/* The delay to use now; doubles the next one, up to max_backoff. */
static long next_backoff(struct rw_shard *sh)
{
    long d = sh->backoff_ms;

    sh->backoff_ms =
        d > sh->rw->max_backoff_ms / 2 ? sh->rw->max_backoff_ms : d * 2;
    return d;
}

/*
 * A POST finished. The status decides (see the header): 2xx is sent even
 * if reading the answer failed (the server has the data); 5xx, 429 when
 * allowed, and transport errors (status 0) are retried; anything else is
 * final. Runs on the engine thread, in ps_http_perform().
 */
static void on_sent(struct ps_http_req *r, const struct ps_http_result *res,
                    void *ud)
{
    struct rw_shard *sh = ud;
    struct ps_remote_write *rw = sh->rw;
    long st = res->status;
    int ok2xx = st >= 200 && st < 300;
    int retry =
        !ok2xx && (st == 0 || st >= 500 || (st == 429 && rw->retry_429));

    (void)r;
    lock(rw);
    rw->st.requests++;
    if (ok2xx) { /* a 2xx whose body we failed to read is still a success */
        rw->st.samples_sent += sh->batch_samples;
        rw->st.exemplars_sent += sh->batch_ex;
        rw->st.inflight -= sh->batch_samples;
        rw->st.last_send_ms = wall_ms();
    } else if (retry) {
        rw->st.samples_retried += sh->batch_samples;
    } else {
        rw->st.samples_failed += sh->batch_samples;
        rw->st.inflight -= sh->batch_samples;
    }
    if (!ok2xx) {
        char msg[PS_ERR_MAX];
        snprintf(msg, sizeof(msg), "remote_write '%s': %s", rw->name,
                 res->error);
        set_error(rw, (int)st, msg);
    }
    unlock(rw);
    if (retry) {
        long d = next_backoff(sh);
        if (st == 429 && res->retry_after_s > 0)
            d = (long)res->retry_after_s * 1000;
        reshard_cancel(rw); /* the remote is failing: not now */
        arm_retry(sh, d);
        return;
    }
    /* the batch is settled (sent or failed): as Prometheus, both count
     * for the rates, with the time since the cut, retries included */
    rw->rate_out.events += sh->batch_samples + sh->batch_ex;
    rw->last_done_ns = ps_engine_now_ns();
    rw->rate_out_ns.events += rw->last_done_ns - sh->batch_start_ns;
    sh->backoff_ms = rw->min_backoff_ms;
    sh->busy = 0;
    if (rw->draining)
        reshard_on_idle(rw); /* last statement: it may free sh */
    else
        shard_kick(sh);
}

/* Starts (or restarts) the POST of the shard's body; on failure schedules
 * a retry, as for a network error. */
static void post(struct rw_shard *sh)
{
    struct ps_err e;

    ps_err_init(&e);
    if (ps_http_start_post(sh->req, sh->body, sh->body_len, on_sent, sh, &e) !=
        PS_OK) {
        lock(sh->rw);
        set_error(sh->rw, 0, e.msg);
        unlock(sh->rw);
        arm_retry(sh, next_backoff(sh));
    }
}

static void on_retry(struct ps_timer *t, void *ud)
{
    (void)t;
    post(ud);
}

/* Cuts and sends one batch; the shard must be idle with items queued. */
static void send_batch(struct rw_shard *sh)
{
    if (ps_timer_pending(&sh->deadline))
        ps_engine_timer_cancel(sh->rw->eng, &sh->deadline);
    if (cut_batch(sh) != PS_OK) {
        shard_kick(sh); /* the failed items are gone: go on with the rest */
        return;
    }
    sh->busy = 1;
    post(sh);
}

/* Decides what an idle shard does next: send a full batch now (or
 * anything, when flushing), or wait for the deadline. Nothing while a
 * reshard drains the requests in flight. */
static void shard_kick(struct rw_shard *sh)
{
    struct ps_remote_write *rw = sh->rw;

    if (sh->busy || sh->len == 0 || rw->draining)
        return;
    if (sh->len >= rw->max_per_send || rw->flushing) {
        send_batch(sh);
        return;
    }
    if (!ps_timer_pending(&sh->deadline) &&
        ps_engine_timer_in(rw->eng, &sh->deadline, (uint64_t)rw->deadline_ms) !=
            PS_OK)
        send_batch(sh); /* no memory for a timer: send early */
}

static void on_deadline(struct ps_timer *t, void *ud)
{
    struct rw_shard *sh = ud;

    (void)t;
    if (!sh->busy && sh->len > 0 && !sh->rw->draining)
        send_batch(sh);
}

/* Pushes one committed item into its shard, dropping the oldest queued
 * item when the shard holds `capacity` items (or more, after a reshard). */
static void enqueue(struct ps_remote_write *rw, struct rw_shard *sh,
                    const struct rw_item *it)
{
    if (sh->len >= rw->capacity) {
        struct rw_item *old = &sh->q[sh->head];
        if (old->is_ex)
            rw->st.exemplars_dropped++;
        else
            rw->st.samples_dropped++;
        item_release(rw, old);
        sh->head = (sh->head + 1) % sh->qcap;
        sh->len--;
        rw->st.pending--;
        rw->overflowed = 1;
    }
    sh->q[(sh->head + sh->len) % sh->qcap] = *it;
    sh->len++;
    rw->st.pending++;
    rw->series[it->idx].queued++;
}

/* ---- metadata ------------------------------------------------------------ */

static void meta_free_strings(struct rw_meta *m)
{
    ps_free(m->family);
    ps_free(m->help);
    ps_free(m->unit);
    m->family = m->help = m->unit = NULL;
}

static int eq_meta(const void *key, uint64_t val, void *ud)
{
    const struct ps_str *k = key;
    const struct ps_remote_write *rw = ud;
    const struct rw_meta *m = &rw->meta[val];

    return m->family_n == k->n && memcmp(m->family, k->p, k->n) == 0;
}

static uint64_t meta_hash(struct ps_str f)
{
    struct ps_label l = {f.p, f.n, "", 0};

    return ps_labels_hash_v(&l, 1);
}

/*
 * The metric family of a series name, given its type. The loop passes the
 * series' labels, not the family name, so suffixes are stripped the way
 * the exposition formats add them. Text-format counters are named with
 * their _total (their TYPE line carries it), so counters keep it.
 */
static struct ps_str family_of(struct ps_str name, enum ps_mtype t)
{
    static const char *const hist[] = {"_bucket", "_count", "_sum", "_created",
                                       "_gcount", "_gsum",  NULL};
    static const char *const summ[] = {"_count", "_sum", "_created", NULL};
    static const char *const ctr[] = {"_created", NULL};
    const char *const *sfx = NULL;
    size_t i;

    if (t == PS_MTYPE_HISTOGRAM || t == PS_MTYPE_GAUGEHISTOGRAM)
        sfx = hist;
    else if (t == PS_MTYPE_SUMMARY)
        sfx = summ;
    else if (t == PS_MTYPE_COUNTER)
        sfx = ctr;
    for (i = 0; sfx != NULL && sfx[i] != NULL; i++) {
        size_t k = strlen(sfx[i]);
        if (name.n > k && memcmp(name.p + name.n - k, sfx[i], k) == 0)
            return (struct ps_str){name.p, name.n - k};
    }
    return name;
}

static void meta_send(struct ps_remote_write *rw);

/* A metadata POST finished: next chunk of the round, or the next round. */
static void on_meta_sent(struct ps_http_req *r,
                         const struct ps_http_result *res, void *ud)
{
    struct ps_remote_write *rw = ud;
    int ok = res->status >= 200 && res->status < 300;

    (void)r;
    rw->meta_busy = 0;
    lock(rw);
    rw->st.requests++;
    if (ok) {
        rw->st.metadata_sent += rw->meta_batch;
    } else {
        char msg[PS_ERR_MAX];
        rw->st.metadata_failed += rw->meta_batch;
        snprintf(msg, sizeof(msg), "remote_write '%s': metadata: %s", rw->name,
                 res->error);
        set_error(rw, (int)res->status, msg);
    }
    unlock(rw);
    rw->meta_cursor += rw->meta_batch;
    if (ok && rw->meta_cursor < rw->n_meta) {
        meta_send(rw); /* the next chunk of this round */
        return;
    }
    rw->meta_cursor = 0; /* a failed round is not retried: the next
                          * interval sends everything again anyway */
    ps_engine_timer_in(rw->eng, &rw->meta_timer,
                       (uint64_t)rw->meta_interval_ms);
}

/* Sends metadata entries [cursor, cursor + per_send) on the metadata
 * request. Failures count as metadata_failed and wait for the next round. */
static void meta_send(struct ps_remote_write *rw)
{
    size_t i, n = rw->n_meta - rw->meta_cursor;
    int rc = PS_OK;
    struct ps_err e;

    if (n > rw->meta_per_send)
        n = rw->meta_per_send;
    rw->meta_batch = n;
    ps_buf_reset(&rw->meta_pb);
    for (i = 0; i < n && rc == PS_OK; i++) {
        const struct rw_meta *m = &rw->meta[rw->meta_cursor + i];
        struct ps_pb_metadata pm;
        pm.type = m->type;
        pm.family = (struct ps_str){m->family, m->family_n};
        pm.help = (struct ps_str){m->help, strlen(m->help)};
        pm.unit = (struct ps_str){m->unit, strlen(m->unit)};
        rc = ps_pb_add_metadata(&rw->meta_pb, &pm);
    }
    if (rc == PS_OK)
        rc = compress(&rw->meta_pb, &rw->meta_body, &rw->meta_body_cap,
                      &rw->meta_body_len);
    ps_err_init(&e);
    if (rc == PS_OK)
        rc = ps_http_start_post(rw->meta_req, rw->meta_body, rw->meta_body_len,
                                on_meta_sent, rw, &e);
    if (rc == PS_OK) {
        rw->meta_busy = 1;
        return;
    }
    lock(rw);
    rw->st.metadata_failed += n;
    set_error(rw, 0, e.msg[0] ? e.msg : "metadata: out of memory");
    unlock(rw);
    rw->meta_cursor = 0;
    ps_engine_timer_in(rw->eng, &rw->meta_timer,
                       (uint64_t)rw->meta_interval_ms);
}

static void on_meta_timer(struct ps_timer *t, void *ud)
{
    struct ps_remote_write *rw = ud;

    (void)t;
    if (!rw->meta_busy && rw->n_meta > 0)
        meta_send(rw);
}

/* Moves one staged entry into the table (taking its strings). PS_ENOMEM
 * leaves the staged entry with the caller. */
static int meta_apply(struct ps_remote_write *rw, struct rw_meta *m)
{
    struct ps_str k = {m->family, m->family_n};
    uint64_t h = meta_hash(k), *v;

    v = ps_hmap_find(&rw->meta_index, h, eq_meta, &k, rw);
    if (v != NULL) {
        meta_free_strings(&rw->meta[*v]);
        rw->meta[*v] = *m;
        return PS_OK;
    }
    if (grow((void **)&rw->meta, &rw->cap_meta, rw->n_meta + 1,
             sizeof(*rw->meta)) != PS_OK ||
        ps_hmap_insert(&rw->meta_index, h, rw->n_meta) != PS_OK)
        return PS_ENOMEM;
    rw->meta[rw->n_meta++] = *m;
    return PS_OK;
}

/* ---- the appender vtable --------------------------------------------------
 */

/* Ends the transaction, freeing whatever staged items still own. */
static void txn_clear(struct ps_remote_write *rw)
{
    size_t i;

    for (i = 0; i < rw->n_txn; i++)
        ps_free(rw->txn[i].exl);
    for (i = 0; i < rw->n_txn_meta; i++)
        meta_free_strings(&rw->txn_meta[i]);
    rw->n_txn = rw->n_txn_meta = 0;
    rw->txn_rdrop = 0;
    rw->in_txn = 0;
}

/* PS_ESTATE if a transaction is already open; nothing to allocate. */
static int rw_begin(struct ps_appender *ap, const struct ps_labels *target,
                    struct ps_err *e)
{
    struct ps_remote_write *rw = (struct ps_remote_write *)ap;

    (void)target; /* the series' labels already carry the target's */
    if (rw->in_txn)
        return ps_err_set(e, PS_ESTATE,
                          "remote_write '%s': transaction "
                          "already open",
                          rw->name);
    rw->in_txn = 1;
    return PS_OK;
}

/* Stages one sample. PS_ENOMEM/PS_EINVAL (from resolve or staging) leave
 * the transaction as it was; samples of relabel-dropped series are only
 * counted. Never rejects a sample (PS_APPEND_*). */
static int rw_append(struct ps_appender *ap, uint64_t ref,
                     const struct ps_labels *ls, int64_t t_ms, double v,
                     uint64_t *ref_out, struct ps_err *e)
{
    struct ps_remote_write *rw = (struct ps_remote_write *)ap;
    struct rw_series *s;
    struct rw_item *it;
    size_t slot;
    int rc = resolve(rw, ref, ls, &slot, e);

    if (rc != PS_OK)
        return rc;
    s = &rw->series[slot];
    if (s->dropped) {
        rw->txn_rdrop++;
        if (t_ms > s->last_ts)
            s->last_ts = t_ms; /* keeps the decision cached while used */
    } else {
        if (grow((void **)&rw->txn, &rw->cap_txn, rw->n_txn + 1,
                 sizeof(*rw->txn)) != PS_OK)
            return ps_err_set(e, PS_ENOMEM,
                              "remote_write '%s': out of "
                              "memory",
                              rw->name);
        it = &rw->txn[rw->n_txn++];
        memset(it, 0, sizeof(*it));
        it->t = t_ms;
        it->v = v;
        it->idx = (uint32_t)slot;
        s->txn_ts = t_ms;
    }
    *ref_out = ref_of(rw, slot);
    return PS_OK;
}

/* Stages an exemplar (its labels copied) when send_exemplars is on; an
 * exemplar without a timestamp takes its series' latest staged sample's. */
static int rw_append_exemplar(struct ps_appender *ap, uint64_t ref,
                              const struct ps_labels *ls,
                              const struct ps_exemplar *ex, struct ps_err *e)
{
    struct ps_remote_write *rw = (struct ps_remote_write *)ap;
    struct ps_label *exl = NULL;
    struct rw_item *it;
    size_t slot;
    int rc;

    if (!rw->send_exemplars)
        return PS_OK;
    rc = resolve(rw, ref, ls, &slot, e);
    if (rc != PS_OK)
        return rc;
    if (rw->series[slot].dropped)
        return PS_OK;
    if (ex->labels != NULL && ex->labels->n > 0 &&
        (exl = ps_label_block_dup(ex->labels->v, ex->labels->n)) == NULL)
        return ps_err_set(e, PS_ENOMEM, "remote_write '%s': out of memory",
                          rw->name);
    if (grow((void **)&rw->txn, &rw->cap_txn, rw->n_txn + 1,
             sizeof(*rw->txn)) != PS_OK) {
        ps_free(exl);
        return ps_err_set(e, PS_ENOMEM, "remote_write '%s': out of memory",
                          rw->name);
    }
    it = &rw->txn[rw->n_txn++];
    it->t = ex->has_ts ? ex->ts_ms : rw->series[slot].txn_ts;
    it->v = ex->value;
    it->exl = exl;
    it->exn = exl ? (uint32_t)ex->labels->n : 0;
    it->idx = (uint32_t)slot;
    it->is_ex = 1;
    return PS_OK;
}

/* Stages a copy of the family's metadata; PS_ENOMEM leaves nothing. */
static int rw_update_metadata(struct ps_appender *ap, uint64_t ref,
                              const struct ps_labels *ls,
                              const struct ps_metadata *m, struct ps_err *e)
{
    struct ps_remote_write *rw = (struct ps_remote_write *)ap;
    const struct ps_label *nm;
    struct rw_meta *sm;
    struct ps_str fam;

    (void)ref;
    if (!rw->meta_enabled || ls == NULL)
        return PS_OK;
    nm = ps_labels_get(ls, "__name__", 8);
    if (nm == NULL)
        return PS_OK;
    fam = family_of((struct ps_str){nm->value, nm->value_len}, m->type);
    if (grow((void **)&rw->txn_meta, &rw->cap_txn_meta, rw->n_txn_meta + 1,
             sizeof(*rw->txn_meta)) != PS_OK)
        return ps_err_set(e, PS_ENOMEM, "remote_write '%s': out of memory",
                          rw->name);
    sm = &rw->txn_meta[rw->n_txn_meta];
    sm->family = ps_strndup(fam.p, fam.n);
    sm->help = ps_strndup(m->help.p ? m->help.p : "", m->help.n);
    sm->unit = ps_strndup(m->unit.p ? m->unit.p : "", m->unit.n);
    sm->family_n = fam.n;
    sm->type = m->type;
    if (sm->family == NULL || sm->help == NULL || sm->unit == NULL) {
        meta_free_strings(sm);
        return ps_err_set(e, PS_ENOMEM, "remote_write '%s': out of memory",
                          rw->name);
    }
    rw->n_txn_meta++;
    return PS_OK;
}

/*
 * Commit cannot fail once it starts moving items: queues are preallocated
 * rings, so everything staged is either queued or (when a ring is full)
 * pushes the oldest item out, counted. Metadata is best effort: an entry
 * that finds no memory is skipped.
 */
static int rw_commit(struct ps_appender *ap, struct ps_err *e)
{
    struct ps_remote_write *rw = (struct ps_remote_write *)ap;
    size_t i;
    unsigned k;

    if (!rw->in_txn)
        return ps_err_set(e, PS_ESTATE,
                          "remote_write '%s': commit without "
                          "begin",
                          rw->name);
    lock(rw);
    for (i = 0; i < rw->n_txn; i++) {
        struct rw_item *it = &rw->txn[i];
        struct rw_series *s = &rw->series[it->idx];
        enqueue(rw, rw->shards[s->hash % rw->n_shards], it);
        it->exl = NULL; /* the queue owns it now */
        if (!it->is_ex) {
            if (it->t > s->last_ts)
                s->last_ts = it->t;
            if (rw->max_ts == INT64_MIN || it->t > rw->max_ts)
                rw->max_ts = it->t;
        }
    }
    rw->st.samples_relabel_dropped += rw->txn_rdrop;
    unlock(rw);
    rw->rate_in.events += rw->n_txn;
    for (i = 0; i < rw->n_txn_meta; i++) {
        if (meta_apply(rw, &rw->txn_meta[i]) != PS_OK)
            meta_free_strings(&rw->txn_meta[i]);
        else
            memset(&rw->txn_meta[i], 0, sizeof(rw->txn_meta[i]));
    }
    if (rw->n_txn_meta > 0 && rw->n_meta > 0 && !rw->meta_busy &&
        !ps_timer_pending(&rw->meta_timer))
        ps_engine_timer_in(rw->eng, &rw->meta_timer,
                           (uint64_t)rw->meta_interval_ms);
    txn_clear(rw); /* what is left owns nothing: it only resets */
    for (k = 0; k < rw->n_shards; k++)
        shard_kick(rw->shards[k]);
    if (rw->max_shards > rw->min_shards) {
        /* A queue that drops cannot wait for the next tick (Prometheus's
         * WAL-backed queue never drops): the tick comes now, if the last
         * was at least a tenth of the interval ago (rates need some time
         * to measure). Otherwise a timer lost to ENOMEM is re-armed. */
        uint64_t gap = (uint64_t)rw->reshard_ms * 1000000u / EARLY_TICK_DIV;
        if (rw->overflowed && !rw->draining &&
            ps_engine_now_ns() - rw->last_tick_ns >= gap)
            ps_engine_timer_in(rw->eng, &rw->reshard_timer, 0);
        else if (!ps_timer_pending(&rw->reshard_timer))
            ps_engine_timer_in(rw->eng, &rw->reshard_timer,
                               (uint64_t)rw->reshard_ms);
    }
    rw->overflowed = 0;
    maybe_forget(rw);
    lock(rw);
    rw->st.series = rw->live_series;
    unlock(rw);
    return PS_OK;
}

static void rw_rollback(struct ps_appender *ap)
{
    txn_clear((struct ps_remote_write *)ap);
}

static void rw_free(struct ps_appender *ap)
{
    ps_remote_write_free((struct ps_remote_write *)ap);
}

static const struct ps_appender_vt rw_vt = {
    rw_begin,    rw_append, rw_append_exemplar, rw_update_metadata, rw_commit,
    rw_rollback, rw_free};

/* ---- construction -------------------------------------------------------- */

/* Prometheus refuses these in `headers`: we set them. */
static int reserved_header(const char *h)
{
    static const char *const names[] = {"Authorization",
                                        "Content-Encoding",
                                        "Content-Type",
                                        "User-Agent",
                                        "X-Prometheus-Remote-Write-Version",
                                        "Expect",
                                        "Host",
                                        NULL};
    size_t i, n = strcspn(h, ":");

    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    for (i = 0; names[i] != NULL; i++)
        if (strlen(names[i]) == n && strncasecmp(h, names[i], n) == 0)
            return 1;
    return 0;
}

/* The request options shared by the shards and metadata. hdrs receives
 * our headers then the caller's (hdrs has room for them). Every string set
 * here must be listed in ro_fields(), which copies them for later
 * reshards. */
static int request_opts(const struct ps_remote_write_opts *o,
                        struct ps_http_req_opts *ro, const char **hdrs,
                        size_t n_user)
{
    size_t i, k = 0;

    hdrs[k++] = "Content-Encoding: snappy";
    hdrs[k++] = "Content-Type: application/x-protobuf";
    hdrs[k++] = "X-Prometheus-Remote-Write-Version: 0.1.0";
    for (i = 0; i < n_user; i++)
        hdrs[k++] = o->headers[i];
    hdrs[k] = NULL;
    memset(ro, 0, sizeof(*ro));
    ro->url = o->url;
    ro->headers = hdrs;
    ro->user_agent = "promscrape/" PS_VERSION;
    ro->timeout_ms =
        o->remote_timeout_ms ? o->remote_timeout_ms : DEF_TIMEOUT_MS;
    ro->body_size_limit = RESPONSE_LIMIT;
    ro->basic_auth_user = o->basic_auth_user;
    ro->basic_auth_password = o->basic_auth_password;
    ro->auth_type = o->auth_type;
    ro->auth_credentials = o->auth_credentials;
    ro->basic_auth_password_file = o->basic_auth_password_file;
    ro->auth_credentials_file = o->auth_credentials_file;
    ro->tls = o->tls;
    ro->proxy_url = o->proxy_url;
    ro->disable_follow_redirects = o->disable_follow_redirects;
    ro->disable_http2 = o->disable_http2;
    ro->post = 1;
    return PS_OK;
}

/* Rewrites ps_relabel's "rule N: ..." as "write_relabel_configs[N-1]: ...",
 * the way the YAML names the entry. */
static int relabel_error(struct ps_remote_write *rw, int rc, struct ps_err *e)
{
    char tail[PS_ERR_MAX];
    size_t n = 0;
    int used = 0;

    if (e == NULL)
        return rc;
    if (sscanf(e->msg, "rule %zu: %n", &n, &used) == 1 && used > 0 && n > 0) {
        snprintf(tail, sizeof(tail), "%s", e->msg + used);
        return ps_err_set(e, rc,
                          "remote_write '%s': "
                          "write_relabel_configs[%zu]: %s",
                          rw->name, n - 1, tail);
    }
    snprintf(tail, sizeof(tail), "%s", e->msg);
    return ps_err_set(e, rc, "remote_write '%s': write_relabel_configs: %s",
                      rw->name, tail);
}

/* Everything that can be checked without allocating; PS_EINVAL with the
 * field named. */
static int check_opts(const struct ps_remote_write_opts *o, const char *name,
                      struct ps_err *e)
{
    const struct ps_remote_write_queue *q = &o->queue;
    size_t i;

    if (o->url == NULL || o->url[0] == '\0')
        return ps_err_set(e, PS_EINVAL, "remote_write '%s': url is required",
                          name);
    if (o->remote_timeout_ms < 0 || q->batch_send_deadline_ms < 0 ||
        q->min_backoff_ms < 0 || q->max_backoff_ms < 0 ||
        o->metadata.send_interval_ms < 0)
        return ps_err_set(e, PS_EINVAL,
                          "remote_write '%s': negative "
                          "duration",
                          name);
    if (q->max_shards != 0 && q->min_shards > q->max_shards)
        return ps_err_set(e, PS_EINVAL,
                          "remote_write '%s': queue_config: "
                          "min_shards > max_shards",
                          name);
    if (q->min_backoff_ms != 0 && q->max_backoff_ms != 0 &&
        q->min_backoff_ms > q->max_backoff_ms)
        return ps_err_set(e, PS_EINVAL,
                          "remote_write '%s': queue_config: "
                          "min_backoff > max_backoff",
                          name);
    if (q->capacity > ((size_t)1 << 28) || q->max_shards > 4096 ||
        q->max_samples_per_send > ((size_t)1 << 24))
        return ps_err_set(e, PS_EINVAL,
                          "remote_write '%s': queue_config: "
                          "value out of range",
                          name);
    for (i = 0; o->headers != NULL && o->headers[i] != NULL; i++)
        if (reserved_header(o->headers[i]))
            return ps_err_set(e, PS_EINVAL,
                              "remote_write '%s': headers[%zu]:"
                              " %.*s is a reserved header",
                              name, i, (int)strcspn(o->headers[i], ":"),
                              o->headers[i]);
    return PS_OK;
}

/* Frees a shard (NULL-safe, half-built or not), with what its queue still
 * owns; cancels its timers and transfer. */
static void shard_free(struct rw_shard *sh)
{
    struct ps_remote_write *rw;
    size_t i;

    if (sh == NULL)
        return;
    rw = sh->rw;
    if (ps_timer_pending(&sh->deadline))
        ps_engine_timer_cancel(rw->eng, &sh->deadline);
    if (ps_timer_pending(&sh->retry))
        ps_engine_timer_cancel(rw->eng, &sh->retry);
    ps_http_request_free(sh->req);
    for (i = 0; sh->q != NULL && i < sh->len; i++)
        ps_free(sh->q[(sh->head + i) % sh->qcap].exl);
    ps_free(sh->q);
    ps_free(sh->body);
    ps_buf_cleanup(&sh->pb);
    ps_free(sh);
}

/* A new idle shard with an empty ring of qcap items and its POST request
 * (made from rw->ro). PS_ENOMEM or ps_http_request_new's errors; *out only
 * on success. */
static int shard_new(struct ps_remote_write *rw, size_t qcap,
                     struct rw_shard **out, struct ps_err *e)
{
    struct rw_shard *sh = ps_calloc(1, sizeof(*sh));
    int rc;

    if (sh == NULL)
        return ps_err_set(e, PS_ENOMEM, "remote_write '%s': out of memory",
                          rw->name);
    sh->rw = rw;
    ps_buf_init(&sh->pb, 0);
    ps_timer_init(&sh->deadline, on_deadline, sh);
    ps_timer_init(&sh->retry, on_retry, sh);
    sh->backoff_ms = rw->min_backoff_ms;
    sh->qcap = qcap;
    sh->q = ps_calloc(qcap, sizeof(*sh->q));
    rc =
        sh->q != NULL
            ? ps_http_request_new(ps_engine_http(rw->eng), &sh->req, &rw->ro, e)
            : ps_err_set(e, PS_ENOMEM, "remote_write '%s': out of memory",
                         rw->name);
    if (rc != PS_OK) {
        shard_free(sh);
        return rc;
    }
    *out = sh;
    return PS_OK;
}

/* The string fields of a request's options that request_opts() sets, as
 * pointers to them (a field added there must be added here). */
static size_t ro_fields(struct ps_http_req_opts *ro, const char **f[16])
{
    size_t n = 0;

    f[n++] = &ro->url;
    f[n++] = &ro->accept;
    f[n++] = &ro->user_agent;
    f[n++] = &ro->basic_auth_user;
    f[n++] = &ro->basic_auth_password;
    f[n++] = &ro->auth_type;
    f[n++] = &ro->auth_credentials;
    f[n++] = &ro->basic_auth_password_file;
    f[n++] = &ro->auth_credentials_file;
    f[n++] = &ro->tls.ca_file;
    f[n++] = &ro->tls.cert_file;
    f[n++] = &ro->tls.key_file;
    f[n++] = &ro->tls.server_name;
    f[n++] = &ro->tls.min_version;
    f[n++] = &ro->proxy_url;
    return n;
}

/*
 * *dst = *src with every string (headers included) copied into one block,
 * *block, owned by the caller: a reshard creates requests long after the
 * caller's options are gone. PS_ENOMEM leaves *dst and *block unset.
 */
static int ro_copy(struct ps_http_req_opts *dst, void **block,
                   const struct ps_http_req_opts *src)
{
    struct ps_http_req_opts ro = *src;
    const char **f[16], **hv;
    size_t nf = ro_fields(&ro, f), nh = 0, len = 0, i, k;
    char *p;

    while (src->headers != NULL && src->headers[nh] != NULL)
        len += strlen(src->headers[nh++]) + 1;
    for (i = 0; i < nf; i++)
        if (*f[i] != NULL)
            len += strlen(*f[i]) + 1;
    /* the header pointers first, so they are aligned; then the bytes */
    hv = ps_malloc((nh + 1) * sizeof(*hv) + len);
    if (hv == NULL)
        return PS_ENOMEM;
    p = (char *)(hv + nh + 1);
    for (i = 0; i < nh; i++) {
        k = strlen(src->headers[i]) + 1;
        hv[i] = memcpy(p, src->headers[i], k);
        p += k;
    }
    hv[nh] = NULL;
    ro.headers = hv;
    for (i = 0; i < nf; i++) {
        if (*f[i] == NULL)
            continue;
        k = strlen(*f[i]) + 1;
        *f[i] = memcpy(p, *f[i], k);
        p += k;
    }
    *dst = ro;
    *block = hv;
    return PS_OK;
}

/* ---- resharding ------------------------------------------------------------
 *
 * Prometheus's QueueManager (updateShardsLoop, calculateDesiredShards,
 * reshardLoop in storage/remote/queue_manager.go) without its goroutines:
 * the reshard timer ticks the rates every reshard_ms and computes the shard
 * count the load needs (reshard_tick). A reshard first drains: no shard
 * cuts a new batch and the requests in flight finish (retries included).
 * Once no shard is busy, every queued item moves to its shard under the new
 * count (reshard_apply), and the shards start again.
 */

/* Folds the events since the last tick into the rate (events/s). */
static void ewma_tick(struct rw_ewma *r, double secs)
{
    double instant = (double)r->events / secs;

    if (r->init) {
        r->rate += EWMA_WEIGHT * (instant - r->rate);
    } else if (r->events > 0) {
        r->init = 1;
        r->rate = instant;
    }
    r->events = 0;
}

static int any_busy(const struct ps_remote_write *rw)
{
    unsigned k;

    for (k = 0; k < rw->n_shards; k++)
        if (rw->shards[k]->busy)
            return 1;
    return 0;
}

/*
 * Moves every queued item to shard (series hash % n) of n shards. The
 * first min(n, old) shards are kept (their request, buffers and pending
 * deadline) with new rings; the others are created or freed. Items move
 * shard by shard, in queue order, and all the queued items of a series sit
 * in one shard before and after, so each series keeps its order; nothing
 * is copied twice or left behind. A ring gets max(capacity, what it
 * receives), so growing never drops. All-or-nothing: PS_ENOMEM (or what
 * creating a request returned) leaves the shards as they were, and so does
 * PS_ELIMIT, returned when a shrink would put more than capacity items in
 * one shard (it is retried at a later tick, once the backlog is lower).
 * Only when no shard is busy.
 */
static int reshard_apply(struct ps_remote_write *rw, unsigned n)
{
    unsigned old = rw->n_shards, k;
    struct rw_shard **ns = ps_calloc(n, sizeof(*ns));
    struct rw_item **rings = ps_calloc(n, sizeof(*rings));
    size_t *cnt = ps_calloc(n, sizeof(*cnt)), i;
    int rc = PS_ENOMEM;

    if (ns == NULL || rings == NULL || cnt == NULL)
        goto out;
    for (k = 0; k < old; k++) {
        const struct rw_shard *sh = rw->shards[k];
        for (i = 0; i < sh->len; i++)
            cnt[rw->series[sh->q[(sh->head + i) % sh->qcap].idx].hash % n]++;
    }
    for (k = 0; n < old && k < n; k++) {
        if (cnt[k] > rw->capacity) {
            rc = PS_ELIMIT;
            goto out;
        }
    }
    for (k = 0; k < n; k++) {
        size_t qcap = cnt[k] > rw->capacity ? cnt[k] : rw->capacity;
        if (k < old) {
            rings[k] = ps_calloc(qcap, sizeof(**rings));
        } else {
            rc = shard_new(rw, qcap, &ns[k], NULL);
            if (rc != PS_OK)
                goto out;
            rings[k] = ns[k]->q;
        }
        if (rings[k] == NULL) {
            rc = PS_ENOMEM;
            goto out;
        }
    }

    /* everything is allocated: nothing fails from here on */
    memset(cnt, 0, n * sizeof(*cnt));
    for (k = 0; k < old; k++) {
        struct rw_shard *sh = rw->shards[k];
        for (i = 0; i < sh->len; i++) {
            const struct rw_item *it = &sh->q[(sh->head + i) % sh->qcap];
            size_t d = (size_t)(rw->series[it->idx].hash % n);
            rings[d][cnt[d]++] = *it; /* the exemplar labels move too */
        }
        sh->head = sh->len = 0;
    }
    for (k = 0; k < n; k++) {
        if (k < old) {
            ns[k] = rw->shards[k];
            ps_free(ns[k]->q);
            ns[k]->q = rings[k];
        }
        ns[k]->qcap = cnt[k] > rw->capacity ? cnt[k] : rw->capacity;
        ns[k]->head = 0;
        ns[k]->len = cnt[k];
    }
    for (k = n; k < old; k++)
        shard_free(rw->shards[k]); /* idle and empty by now */
    ps_free(rw->shards);
    rw->shards = ns;
    rw->n_shards = n;
    ns = NULL;
    rc = PS_OK;
out:
    for (k = 0; rc != PS_OK && ns != NULL && rings != NULL && k < n; k++) {
        if (k < old)
            ps_free(rings[k]);
        else
            shard_free(ns[k]);
    }
    ps_free(ns);
    ps_free(rings);
    ps_free(cnt);
    return rc;
}

/* The drain is over (no shard busy): reshard, and restart every shard. A
 * failed reshard leaves the old count, to be recomputed at the next tick. */
static void reshard_finish(struct ps_remote_write *rw)
{
    unsigned k;
    int rc;

    rw->draining = 0;
    rw->last_drain_ns = ps_engine_now_ns() - rw->drain_start_ns;
    /* the drain's own drops (nothing was sent meanwhile) are not a
     * reason to grow at the next tick */
    rw->dropped_at_tick = rw->st.samples_dropped + rw->st.exemplars_dropped;
    rc = reshard_apply(rw, rw->reshard_to);
    lock(rw);
    if (rc == PS_OK) {
        rw->st.shards = rw->n_shards;
        rw->st.reshards++;
    } else if (rc != PS_ELIMIT) {
        char msg[PS_ERR_MAX];
        snprintf(msg, sizeof(msg), "remote_write '%s': resharding to %u: %s",
                 rw->name, rw->reshard_to, ps_strerror(rc));
        set_error(rw, 0, msg);
    }
    unlock(rw);
    for (k = 0; k < rw->n_shards; k++)
        shard_kick(rw->shards[k]);
}

/* A shard went idle. If a reshard was waiting for that, and no shard is
 * busy any more, the reshard timer finishes it at once: outside this
 * transfer's callback, as the reshard may free the shard it belongs to. */
static void reshard_on_idle(struct ps_remote_write *rw)
{
    if (!rw->draining || any_busy(rw))
        return;
    if (ps_engine_timer_in(rw->eng, &rw->reshard_timer, 0) != PS_OK)
        reshard_finish(rw); /* no timer: now (ps_http allows freeing a
                             * request from its own callback) */
}

/* A batch is to be retried: the remote is failing, so a reshard waiting
 * for the drain is called off (Prometheus does not reshard while sends
 * fail), and the idle shards go on. */
static void reshard_cancel(struct ps_remote_write *rw)
{
    unsigned k;

    if (!rw->draining)
        return;
    rw->draining = 0;
    for (k = 0; k < rw->n_shards; k++)
        shard_kick(rw->shards[k]);
}

/* ceil(x) bounded by [lo, hi]; x may be huge. */
static unsigned bound_shards(double x, unsigned lo, unsigned hi)
{
    x = ceil(x);
    return x >= (double)hi ? hi : x <= (double)lo ? lo : (unsigned)x;
}

/*
 * calculateDesiredShards: the time one item takes to send (send time over
 * items settled, both as rates) times the items to send per second (the
 * input rate plus 5 % of the backlog), rounded up and bounded by
 * [min_shards, max_shards]. Prometheus estimates the backlog from sample
 * timestamps (highest received minus highest sent); we know it exactly:
 * the items queued and in flight. Rates use the real time since the last
 * tick, since a busy engine runs timers late (and drops tick early).
 *
 * Then shouldReshard, adapted to a queue that drops when full. Prometheus
 * reads a WAL: its backlog can grow without bound until the catch-up term
 * crosses the 30 % band, so running at up to 130 % of the shards' capacity
 * only delays samples. Here it would drop them, so:
 * - growing happens as soon as the count is too small, and by at least
 *   30 % (the band, as a minimum step: fewer reshards, as each one pauses
 *   sending while it drains). It also happens when the queue dropped
 *   since the last tick (outside a drain) although the count sends fast
 *   enough: then what is missing is room, as a busy engine commits in
 *   bursts (every scrape that finished during a long step), and the room
 *   is capacity per shard: the count grows by 1 / (1 - the share of the
 *   input dropped), at least 30 %, at most tenfold;
 * - shrinking keeps Prometheus's rules (below 70 % of the count; not with
 *   more than 10 s of input queued), never happens while the queue drops,
 *   and goes no lower than the count whose rings stay half free with the
 *   backlog plus the input of one drain, counted as one request's send
 *   time, the last drain, or a second, whichever is longest: a drain
 *   under load lasts as long as the engine's slowest step, and a busy
 *   engine commits a whole scrape interval's input at once. So a shrink
 *   under load neither fails (reshard_apply's PS_ELIMIT) nor drops;
 * - no reshard while the remote fails: no batch settled within
 *   2 x batch_send_deadline, or within the reshard interval if that is
 *   longer (with a short deadline, a slow but healthy remote would never
 *   be resharded). The creation counts as a settled batch, so that a
 *   queue dropping from the start can grow before its first answer (a
 *   drain then waits for that answer; a retry calls it off).
 */
static void reshard_tick(struct ps_remote_write *rw)
{
    uint64_t now = ps_engine_now_ns(), window_ns, dropped, got;
    double secs = (double)(now - rw->last_tick_ns) / 1e9;
    double in, out, tps, backlog, drain_s, room, lost = 0;
    unsigned n = rw->n_shards, want, to;

    if (secs <= 0)
        return;
    rw->last_tick_ns = now;
    got = rw->rate_in.events;
    dropped = rw->st.samples_dropped + rw->st.exemplars_dropped;
    if (got > 0 && dropped > rw->dropped_at_tick) /* the share dropped */
        lost = (double)(dropped - rw->dropped_at_tick) / (double)got;
    if (lost > 0.9)
        lost = 0.9;
    rw->dropped_at_tick = dropped;
    ewma_tick(&rw->rate_in, secs);
    ewma_tick(&rw->rate_out, secs);
    ewma_tick(&rw->rate_out_ns, secs);
    in = rw->rate_in.rate;
    out = rw->rate_out.rate;
    backlog = (double)(rw->st.pending + rw->st.inflight);
    if (out > 0) {
        tps = rw->rate_out_ns.rate / 1e9 / out;
        want = bound_shards(tps * (in + CATCHUP_FRACTION * backlog),
                            rw->min_shards, rw->max_shards);
        lock(rw);
        rw->st.desired_shards = want;
        unlock(rw);
    } else if (lost > 0) {
        tps = 0; /* nothing settled yet, but dropping: room is needed */
        want = n;
    } else {
        return; /* nothing settled yet: no send time to go by */
    }
    if (want > n || (lost > 0 && n < rw->max_shards)) {
        double step = n / (1.0 - lost); /* room for what was dropped */
        if (step < n * (1.0 + SHARD_TOLERANCE))
            step = n * (1.0 + SHARD_TOLERANCE);
        to = bound_shards(step, want, rw->max_shards);
    } else {
        if (lost > 0 || (in > 0 && backlog / in > MAX_BEHIND_S))
            return; /* dropping at max_shards, or behind: no shrink */
        drain_s = tps * (double)rw->max_per_send;
        if (drain_s < (double)rw->last_drain_ns / 1e9)
            drain_s = (double)rw->last_drain_ns / 1e9;
        if (drain_s < SHRINK_ROOM_S)
            drain_s = SHRINK_ROOM_S;
        room = (backlog + in * drain_s) / ((double)rw->capacity / 2);
        to = bound_shards(room, want, n);
        if (to >= n * (1.0 - SHARD_TOLERANCE))
            return;
    }
    window_ns =
        (uint64_t)(2 * rw->deadline_ms > rw->reshard_ms ? 2 * rw->deadline_ms
                                                        : rw->reshard_ms) *
        1000000u;
    if (now - rw->last_done_ns > window_ns)
        return;
    rw->reshard_to = to;
    rw->draining = 1;
    rw->drain_start_ns = now;
    if (!any_busy(rw))
        reshard_finish(rw);
}

/* Every reshard_ms: a tick; or, when armed at 0 by reshard_on_idle, the
 * end of a drain. */
static void on_reshard_timer(struct ps_timer *t, void *ud)
{
    struct ps_remote_write *rw = ud;

    if (!rw->draining)
        reshard_tick(rw);
    else if (!any_busy(rw))
        reshard_finish(rw);
    if (!ps_timer_pending(t)) /* ENOMEM: rw_commit arms it again */
        ps_engine_timer_in(rw->eng, t, (uint64_t)rw->reshard_ms);
}

int ps_remote_write_new(struct ps_remote_write **out, struct ps_engine *eng,
                        const struct ps_remote_write_opts *o, struct ps_err *e)
{
    const char *name = (o && o->name) ? o->name : "remote_write";
    const struct ps_remote_write_queue *q;
    struct ps_remote_write *rw = NULL;
    struct ps_http_req_opts ro;
    const char **hdrs = NULL;
    size_t n_user = 0;
    unsigned k;
    int rc;

    if (out == NULL || eng == NULL || o == NULL)
        return ps_err_set(e, PS_EINVAL, "remote_write: missing argument");
    if ((rc = check_opts(o, name, e)) != PS_OK)
        return rc;
    q = &o->queue;
    rw = ps_calloc(1, sizeof(*rw));
    if (rw == NULL)
        return ps_err_set(e, PS_ENOMEM, "remote_write '%s': out of memory",
                          name);
    rw->base.vt = &rw_vt;
    rw->eng = eng;
    ps_hmap_init(&rw->index);
    ps_hmap_init(&rw->meta_index);
    ps_labels_init(&rw->relabeled);
    ps_buf_init(&rw->meta_pb, 0);
    ps_timer_init(&rw->meta_timer, on_meta_timer, rw);
    ps_timer_init(&rw->reshard_timer, on_reshard_timer, rw);
    rw->max_ts = rw->last_gc_ts = INT64_MIN;
    rw->name = ps_strndup(name, strlen(name));
    if (rw->name == NULL)
        goto oom;
    rw->mu_ok = pthread_mutex_init(&rw->mu, NULL) == 0;
    if (!rw->mu_ok)
        goto oom;

    rw->capacity = q->capacity ? q->capacity : DEF_CAPACITY;
    rw->max_per_send =
        q->max_samples_per_send ? q->max_samples_per_send : DEF_MAX_PER_SEND;
    rw->deadline_ms =
        q->batch_send_deadline_ms ? q->batch_send_deadline_ms : DEF_DEADLINE_MS;
    rw->min_backoff_ms =
        q->min_backoff_ms ? q->min_backoff_ms : DEF_MIN_BACKOFF_MS;
    rw->max_backoff_ms =
        q->max_backoff_ms ? q->max_backoff_ms : DEF_MAX_BACKOFF_MS;
    if (rw->max_backoff_ms < rw->min_backoff_ms)
        rw->max_backoff_ms = rw->min_backoff_ms;
    rw->retry_429 = q->retry_on_http_429;
    rw->send_exemplars = o->send_exemplars;
    rw->ttl_ms = o->series_ttl_ms ? o->series_ttl_ms : DEF_TTL_MS;
    rw->min_shards = q->min_shards ? q->min_shards : DEF_MIN_SHARDS;
    rw->max_shards = q->max_shards ? q->max_shards : DEF_MAX_SHARDS;
    if (rw->max_shards < rw->min_shards) /* only min given, above 50 */
        rw->max_shards = rw->min_shards;
    rw->reshard_ms =
        o->reshard_interval_ms > 0 ? o->reshard_interval_ms : DEF_RESHARD_MS;
    rw->meta_enabled = !o->metadata.disable;
    rw->meta_interval_ms = o->metadata.send_interval_ms
                               ? o->metadata.send_interval_ms
                               : DEF_META_INTERVAL_MS;
    rw->meta_per_send = o->metadata.max_samples_per_send
                            ? o->metadata.max_samples_per_send
                            : DEF_MAX_PER_SEND;

    if (o->n_write_relabel_configs > 0) {
        rc =
            ps_relabel_compile(&rw->relabel, o->write_relabel_configs,
                               o->n_write_relabel_configs, o->relabel_flags, e);
        if (rc != PS_OK) {
            rc = relabel_error(rw, rc, e);
            goto fail;
        }
        if (ps_relabel_scratch_new(&rw->scratch) != PS_OK)
            goto oom;
    }

    while (o->headers != NULL && o->headers[n_user] != NULL)
        n_user++;
    hdrs = ps_calloc(n_user + 4, sizeof(*hdrs));
    if (hdrs == NULL)
        goto oom;
    request_opts(o, &ro, hdrs, n_user);
    if (ro_copy(&rw->ro, &rw->ro_block, &ro) != PS_OK)
        goto oom;
    {
        size_t m = rw->max_per_send;
        rw->cut = ps_calloc(m, sizeof(*rw->cut));
        rw->order = ps_calloc(m, sizeof(*rw->order));
        rw->start = ps_calloc(m + 1, sizeof(*rw->start));
        rw->smp = ps_calloc(m, sizeof(*rw->smp));
        rw->exs = ps_calloc(m, sizeof(*rw->exs));
        if (!rw->cut || !rw->order || !rw->start || !rw->smp || !rw->exs)
            goto oom;
    }
    rw->shards = ps_calloc(rw->min_shards, sizeof(*rw->shards));
    if (rw->shards == NULL)
        goto oom;
    for (k = 0; k < rw->min_shards; k++, rw->n_shards++) {
        rc = shard_new(rw, rw->capacity, &rw->shards[k], e);
        if (rc != PS_OK)
            goto fail_named;
    }
    if (rw->meta_enabled) {
        rc =
            ps_http_request_new(ps_engine_http(eng), &rw->meta_req, &rw->ro, e);
        if (rc != PS_OK)
            goto fail_named;
    }
    /* the remote counts as healthy at first (see reshard_tick) */
    rw->last_tick_ns = rw->last_done_ns = ps_engine_now_ns();
    if (rw->max_shards > rw->min_shards &&
        ps_engine_timer_in(eng, &rw->reshard_timer, (uint64_t)rw->reshard_ms) !=
            PS_OK)
        goto oom;
    ps_free(hdrs);
    rw->st.shards = rw->st.desired_shards = rw->n_shards;
    *out = rw;
    return PS_OK;
oom:
    rc = ps_err_set(e, PS_ENOMEM, "remote_write '%s': out of memory", name);
    goto fail;
fail_named:
    if (e != NULL && strncmp(e->msg, "remote_write", 12) != 0) {
        char m[PS_ERR_MAX];
        snprintf(m, sizeof(m), "%s", e->msg);
        ps_err_set(e, rc, "remote_write '%s': %s", name, m);
    }
fail:
    ps_free(hdrs);
    ps_remote_write_free(rw);
    return rc;
}

void ps_remote_write_free(struct ps_remote_write *rw)
{
    size_t i;
    unsigned k;

    if (rw == NULL)
        return;
    if (ps_timer_pending(&rw->reshard_timer))
        ps_engine_timer_cancel(rw->eng, &rw->reshard_timer);
    for (k = 0; rw->shards != NULL && k < rw->n_shards; k++)
        shard_free(rw->shards[k]);
    ps_free(rw->shards);
    ps_free(rw->ro_block);
    ps_free(rw->cut);
    ps_free(rw->order);
    ps_free(rw->start);
    ps_free(rw->smp);
    ps_free(rw->exs);
    if (ps_timer_pending(&rw->meta_timer))
        ps_engine_timer_cancel(rw->eng, &rw->meta_timer);
    ps_http_request_free(rw->meta_req);
    txn_clear(rw);
    ps_free(rw->txn);
    ps_free(rw->txn_meta);
    for (i = 0; i < rw->n_meta; i++)
        meta_free_strings(&rw->meta[i]);
    ps_free(rw->meta);
    ps_hmap_cleanup(&rw->meta_index);
    ps_buf_cleanup(&rw->meta_pb);
    ps_free(rw->meta_body);
    for (i = 0; i < rw->n_series; i++)
        if (rw->series[i].live)
            series_release(&rw->series[i]);
    ps_free(rw->series);
    ps_hmap_cleanup(&rw->index);
    ps_labels_cleanup(&rw->relabeled);
    ps_relabel_scratch_free(rw->scratch);
    ps_relabel_free(rw->relabel);
    if (rw->mu_ok)
        pthread_mutex_destroy(&rw->mu);
    ps_free(rw->name);
    ps_free(rw);
}

struct ps_appender *ps_remote_write_appender(struct ps_remote_write *rw)
{
    return &rw->base;
}

void ps_remote_write_stats(struct ps_remote_write *rw,
                           struct ps_remote_write_stats *st)
{
    lock(rw);
    *st = rw->st;
    unlock(rw);
}

/* ---- flush --------------------------------------------------------------- */

/* 1 when no shard has anything queued or in flight. */
static int drained(struct ps_remote_write *rw)
{
    unsigned k;

    for (k = 0; k < rw->n_shards; k++)
        if (rw->shards[k]->busy || rw->shards[k]->len > 0)
            return 0;
    return 1;
}

int ps_remote_write_flush(struct ps_remote_write *rw, long deadline_ms,
                          struct ps_err *e)
{
    uint64_t end = ps_engine_now_ns() + (uint64_t)deadline_ms * 1000000u;
    unsigned k;
    int rc = PS_OK;

    if (rw->in_txn)
        return ps_err_set(e, PS_ESTATE,
                          "remote_write '%s': flush inside a "
                          "transaction",
                          rw->name);
    rw->flushing = 1;
    for (k = 0; k < rw->n_shards; k++)
        shard_kick(rw->shards[k]);
    while (!drained(rw)) {
        uint64_t now = ps_engine_now_ns();
        if (now >= end) {
            rc = ps_err_set(e, PS_ELIMIT,
                            "remote_write '%s': flush deadline"
                            " passed with samples left",
                            rw->name);
            break;
        }
        rc = ps_engine_step(rw->eng, (int)((end - now) / 1000000u) + 1, e);
        if (rc != PS_OK)
            break;
    }
    rw->flushing = 0;
    return rc;
}
