/*
 * ps_loop.c: one target's scrape loop (Prometheus scrapeLoop). See
 * ps_loop.h and docs/scrape.md.
 *
 * States: IDLE (created) -> RUNNING (timer armed; a transfer may be in
 * flight) -> STOPPED (nothing pending), or after ps_loop_stop(l, 1):
 * EOR (waiting to write end-of-run staleness) -> DONE.
 *
 * Everything happens in two callbacks on the engine thread: the tick
 * timer (start a transfer, or fail at once with a forced error) and the
 * transfer's completion (parse, append, report, commit). A transaction is
 * begun and finished inside one callback, so transactions of different
 * loops never interleave.
 */
#include "ps_loop.h"

#include "ps_parse.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#define L(s) s, sizeof(s) - 1

enum loop_state { ST_IDLE, ST_RUNNING, ST_STOPPED, ST_EOR, ST_DONE };

/* The report series, keyed in the cache by name + "\xff" so they never
 * collide with exposed series bytes (as Prometheus does). */
enum {
    R_UP,
    R_DURATION,
    R_SAMPLES,
    R_POST_RELABEL,
    R_SERIES_ADDED,
    R_TIMEOUT,
    R_SAMPLE_LIMIT,
    R_BODY_SIZE,
    R_COUNT
};

static const char *const report_names[R_COUNT] = {
    "up\xff",
    "scrape_duration_seconds\xff",
    "scrape_samples_scraped\xff",
    "scrape_samples_post_metric_relabeling\xff",
    "scrape_series_added\xff",
    "scrape_timeout_seconds\xff",
    "scrape_sample_limit\xff",
    "scrape_body_size_bytes\xff",
};

/* What one scrape produced, for the report series. */
struct scrape_result {
    uint64_t total, added, series_added;
    int64_t bytes; /* -1: body size limit hit */
    uint64_t dup, ooo, oob; /* soft per-sample rejections */
    uint64_t fast; /* samples taken by the fast line path */
};

struct ps_loop {
    struct ps_engine *eng;
    struct ps_appender *app;
    const struct ps_loop_config *cfg;
    struct ps_target target;
    uint64_t seed;
    struct ps_cache *cache;
    struct ps_http_req *req;
    struct ps_parser *parser;
    enum ps_format parser_format;
    struct ps_timer timer;
    enum loop_state state;
    int eor_enabled; /* end-of-run staleness still wanted */
    int eor_phase;   /* 0: wait tick, 1: wait tick, 2: wait 10% */
    int in_flight;
    ps_loop_done_fn done_fn;
    void *done_ud;

    uint64_t interval_ns, timeout_ns;
    uint64_t next_tick_ns;    /* monotonic deadline of the next tick */
    int64_t aligned_wall_ns;  /* Prometheus alignedScrapeTime */
    int aligned_set;
    int64_t append_ms;        /* sample time of the current scrape */
    uint64_t start_mono_ns;   /* start of the current scrape */
    int64_t stale_ms;         /* end-of-run staleness timestamp */
    char *forced_error;

    /* status */
    enum ps_health health;
    char last_error[PS_ERR_MAX * 2];
    int64_t last_scrape_ms;
    uint64_t last_duration_ns;
    uint64_t last_samples, last_series_added, scrapes, skipped;
    uint64_t last_dup, last_ooo, last_oob;
    uint64_t last_fast;

    /* per-scrape scratch, reused so steady state allocates nothing */
    struct ps_labels exposed;  /* __name__ + exposed labels (views) */
    struct ps_labels built;    /* after honor_labels (owned copies) */
    struct ps_labels final;    /* after metric relabeling (owned) */
    struct ps_labels chain_tmp; /* working set of a metric rule chain */
    struct ps_labels exlabels; /* exemplar labels (views) */
    struct ps_labels_builder b;
    struct ps_labels conflicts; /* exposed labels that collide */
    uint64_t nlimit;           /* samples counted toward sample_limit */
    int limit_hit;

    /* deferred metric function rules (see ps_loop.h) */
    struct ps_hmap pending;    /* raw-bytes hash -> struct pending * */
    size_t nheld;              /* samples held, all pending series */
    size_t defer_at;           /* set by mutate: PS_CHAIN_DONE or a seg */
    struct ps_timer install_timer;
    uint64_t def_resolved, def_lost, def_failed;
};

/* A series parked by a deferred function rule. */
enum { PEND_QUEUED, PEND_KEPT, PEND_DROPPED, PEND_FAILED };

struct held_sample {
    int64_t t;
    double v;
    uint64_t iter;  /* cache iteration (scrape) it was held in */
    int track;      /* counts for staleness (not an explicit timestamp) */
};

struct pending {
    char *key;               /* raw series bytes (owned) */
    size_t key_len;
    struct ps_labels lset;   /* the set before the deferred segment */
    size_t seg;              /* the deferred segment */
    int state;
    struct ps_labels result; /* PEND_KEPT: the final set */
    uint64_t last_iter;      /* the last scrape it was seen in, + 1 */
    size_t nheld;
    struct held_sample held[PS_LOOP_HELD_PER_SERIES];
};

/* Wall-clock time: sample timestamps and offsets are pinned to it, the
 * timers run on the monotonic clock. */
static int64_t wall_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Prometheus's TargetHealth strings. */
const char *ps_health_name(enum ps_health h)
{
    switch (h) {
    case PS_HEALTH_UP:
        return "up";
    case PS_HEALTH_DOWN:
        return "down";
    default:
        return "unknown";
    }
}

/* ---- Accept header ----------------------------------------------------- */

static const struct {
    const char *name, *header;
    int escaping; /* takes the escaping parameter */
} protocols[] = {
    {"PrometheusProto", "application/vnd.google.protobuf;"
                        "proto=io.prometheus.client.MetricFamily;"
                        "encoding=delimited", 0},
    {"PrometheusText0.0.4", "text/plain;version=0.0.4", 0},
    {"PrometheusText1.0.0", "text/plain;version=1.0.0", 1},
    {"OpenMetricsText0.0.1", "application/openmetrics-text;version=0.0.1", 0},
    {"OpenMetricsText1.0.0", "application/openmetrics-text;version=1.0.0", 1},
};
#define NPROTO (sizeof(protocols) / sizeof(protocols[0]))

/* See ps_loop.h. The result fits a fixed buffer: at most five entries of
 * known length. */
int ps_accept_header(const char *const *list, size_t n, int legacy,
                     char **out, struct ps_err *e)
{
    static const char *const defaults[] = {
        "OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText1.0.0",
        "PrometheusText0.0.4"};
    char buf[1024];
    size_t off = 0, i, k;
    unsigned weight = NPROTO + 1;
    char *s;

    if (list == NULL || n == 0) {
        list = defaults;
        n = sizeof(defaults) / sizeof(defaults[0]);
    }
    if (n > NPROTO)
        return ps_err_set(e, PS_EINVAL, "scrape_protocols: too many entries");
    for (i = 0; i < n; i++) {
        for (k = 0; k < NPROTO; k++)
            if (list[i] != NULL && strcmp(list[i], protocols[k].name) == 0)
                break;
        if (k == NPROTO)
            return ps_err_set(e, PS_EINVAL,
                              "scrape_protocols: unknown protocol \"%s\"",
                              list[i] ? list[i] : "(null)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(list[j], list[i]) == 0)
                return ps_err_set(e, PS_EINVAL,
                                  "scrape_protocols: duplicated protocol "
                                  "\"%s\"",
                                  list[i]);
        /* q-values count down from 0.(N+1), as acceptHeader() does */
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s%s%s;q=0.%u,",
                                protocols[k].header,
                                protocols[k].escaping ? ";escaping=" : "",
                                protocols[k].escaping
                                    ? (legacy ? "underscores" : "allow-utf-8")
                                    : "",
                                weight);
        weight--;
    }
    snprintf(buf + off, sizeof(buf) - off, "*/*;q=0.%u", weight);
    s = ps_strndup(buf, strlen(buf));
    if (s == NULL)
        return ps_err_set(e, PS_ENOMEM, "accept header");
    *out = s;
    return PS_OK;
}

/* ---- lifecycle --------------------------------------------------------- */

static void on_tick(struct ps_timer *t, void *ud);
static void on_install(struct ps_timer *t, void *ud);
static void pending_free_all(struct ps_loop *l);
static int app_begin(struct ps_loop *l, struct ps_err *e);
static void install_resolved(struct ps_loop *l);

/* See ps_loop.h. Every member is made freeable first, so the one fail
 * path is ps_loop_free(). */
int ps_loop_new(struct ps_loop **out, struct ps_engine *eng,
                struct ps_appender *app, const struct ps_loop_config *cfg,
                const struct ps_target *target, uint64_t offset_seed,
                struct ps_cache *cache, struct ps_err *e)
{
    struct ps_loop *l = ps_calloc(1, sizeof(*l));
    struct ps_http_req_opts ho;
    int rc;

    if (l == NULL) {
        if (cache != NULL) {
            ps_cache_cleanup(cache);
            ps_free(cache);
        }
        return ps_err_set(e, PS_ENOMEM, "scrape loop");
    }
    l->eng = eng;
    l->app = app;
    l->cfg = cfg;
    l->seed = offset_seed;
    l->cache = cache;
    l->parser_format = PS_FORMAT_TEXT;
    ps_target_init(&l->target);
    ps_labels_init(&l->exposed);
    ps_labels_init(&l->built);
    ps_labels_init(&l->final);
    ps_labels_init(&l->chain_tmp);
    ps_labels_init(&l->exlabels);
    ps_labels_init(&l->conflicts);
    ps_labels_builder_init(&l->b);
    ps_timer_init(&l->timer, on_tick, l);
    ps_timer_init(&l->install_timer, on_install, l);
    ps_hmap_init(&l->pending);
    l->eor_enabled = 1;
    rc = ps_target_copy(&l->target, target);
    if (rc != PS_OK) {
        ps_err_set(e, rc, "scrape loop");
        goto fail;
    }
    if (l->cache == NULL) {
        l->cache = ps_malloc(sizeof(*l->cache));
        if (l->cache == NULL) {
            rc = ps_err_set(e, PS_ENOMEM, "scrape loop");
            goto fail;
        }
        ps_cache_init(l->cache);
    }
    l->interval_ns = (uint64_t)target->interval_ms * 1000000u;
    l->timeout_ns = (uint64_t)target->timeout_ms * 1000000u;
    ho = cfg->http;
    ho.url = l->target.url;
    ho.accept = cfg->accept;
    ho.timeout_ms = target->timeout_ms;
    ho.body_size_limit = (size_t)cfg->body_size_limit;
    rc = ps_http_request_new(ps_engine_http(eng), &l->req, &ho, e);
    if (rc != PS_OK)
        goto fail;
    *out = l;
    return PS_OK;
fail:
    ps_loop_free(l);
    return rc;
}

/* Cancels the timer and the transfer (no callbacks), frees what the loop
 * owns. No staleness markers: this is what shutdown does. */
void ps_loop_free(struct ps_loop *l)
{
    if (l == NULL)
        return;
    ps_engine_timer_cancel(l->eng, &l->timer);
    ps_engine_timer_cancel(l->eng, &l->install_timer);
    pending_free_all(l);
    ps_hmap_cleanup(&l->pending);
    ps_http_request_free(l->req);
    ps_parse_free(l->parser);
    if (l->cache != NULL) {
        ps_cache_cleanup(l->cache);
        ps_free(l->cache);
    }
    ps_target_cleanup(&l->target);
    ps_labels_cleanup(&l->exposed);
    ps_labels_cleanup(&l->built);
    ps_labels_cleanup(&l->final);
    ps_labels_cleanup(&l->chain_tmp);
    ps_labels_cleanup(&l->exlabels);
    ps_labels_cleanup(&l->conflicts);
    ps_labels_builder_cleanup(&l->b);
    ps_free(l->forced_error);
    ps_free(l);
}

/* Delay of the first tick: vmagent's aligned/fixed offset, or
 * Prometheus's hashed offset. */
static uint64_t first_delay_ns(const struct ps_loop *l)
{
    uint64_t now = (uint64_t)wall_ns();
    uint64_t period = 0, phase = 0;

    if (l->cfg->scrape_align_interval_ms > 0) {
        period = (uint64_t)l->cfg->scrape_align_interval_ms * 1000000u;
        phase = (uint64_t)l->cfg->scrape_offset_ms * 1000000u;
    } else if (l->cfg->scrape_offset_ms > 0) {
        period = l->interval_ns;
        phase = (uint64_t)l->cfg->scrape_offset_ms * 1000000u;
    }
    if (period > 0) {
        phase %= period;
        return (phase + period - now % period) % period;
    }
    return ps_target_offset_ns(l->target.hash, l->seed, l->interval_ns, now);
}

/* Arms the first tick; a second call is a no-op. */
int ps_loop_start(struct ps_loop *l)
{
    if (l->state != ST_IDLE)
        return PS_OK;
    l->next_tick_ns = ps_engine_now_ns() + first_delay_ns(l);
    if (ps_timer_add(ps_engine_timers(l->eng), &l->timer, l->next_tick_ns) !=
        PS_OK)
        return PS_ENOMEM;
    l->state = ST_RUNNING;
    return PS_OK;
}

/* Registers the pool's retire callback. */
void ps_loop_on_done(struct ps_loop *l, ps_loop_done_fn fn, void *ud)
{
    l->done_fn = fn;
    l->done_ud = ud;
}

/* See ps_loop.h. If the timer cannot be re-armed (ENOMEM), the markers
 * are given up and the loop is simply stopped. */
void ps_loop_stop(struct ps_loop *l, int end_of_run_staleness)
{
    if (l->state != ST_RUNNING && l->state != ST_IDLE)
        return;
    ps_http_cancel(l->req);
    l->in_flight = 0;
    ps_engine_timer_cancel(l->eng, &l->timer);
    /* Deferred series are given up (their held samples counted as lost):
     * a stopped loop installs nothing more. */
    ps_engine_timer_cancel(l->eng, &l->install_timer);
    pending_free_all(l);
    /* Prometheus writes nothing if there never was a scrape. */
    if (end_of_run_staleness && l->eor_enabled && l->scrapes > 0 &&
        l->state == ST_RUNNING) {
        l->state = ST_EOR;
        l->eor_phase = 0;
        if (ps_timer_add(ps_engine_timers(l->eng), &l->timer,
                         l->next_tick_ns) == PS_OK)
            return;
    }
    l->state = ST_STOPPED;
}

int ps_loop_done(const struct ps_loop *l)
{
    return l->state == ST_STOPPED || l->state == ST_DONE ||
           l->state == ST_IDLE;
}

/* Reload: the caller adopts the cache and the loop never writes its
 * end-of-run markers (Prometheus disableEndOfRunStalenessMarkers). */
struct ps_cache *ps_loop_take_cache(struct ps_loop *l)
{
    struct ps_cache *c;

    if (l->state == ST_RUNNING || l->state == ST_EOR)
        ps_loop_stop(l, 0);
    if (l->state == ST_EOR) {
        ps_engine_timer_cancel(l->eng, &l->timer);
        l->state = ST_STOPPED;
    }
    l->eor_enabled = 0;
    ps_engine_timer_cancel(l->eng, &l->install_timer);
    pending_free_all(l);
    c = l->cache;
    l->cache = NULL;
    return c;
}

/* The message is copied; the old one is freed only on success. */
int ps_loop_set_forced_error(struct ps_loop *l, const char *msg)
{
    char *m = NULL;

    if (msg != NULL) {
        m = ps_strndup(msg, strlen(msg));
        if (m == NULL)
            return PS_ENOMEM;
    }
    ps_free(l->forced_error);
    l->forced_error = m;
    return PS_OK;
}

/* Fills st with views into the loop; cannot fail. */
void ps_loop_status(const struct ps_loop *l, struct ps_target_status *st)
{
    memset(st, 0, sizeof(*st));
    st->job = l->cfg->job;
    st->labels = &l->target.pub;
    st->all_labels = &l->target.labels;
    st->discovered = &l->target.discovered;
    st->url = l->target.url;
    st->hash = l->target.hash;
    st->health = l->health;
    st->last_error = l->last_error;
    st->last_scrape_ms = l->last_scrape_ms;
    st->deferred_pending = ps_hmap_count(&l->pending);
    st->deferred_held = l->nheld;
    st->deferred_resolved = l->def_resolved;
    st->deferred_lost = l->def_lost;
    st->deferred_failed = l->def_failed;
    st->last_duration_ns = l->last_duration_ns;
    st->interval_ms = l->target.interval_ms;
    st->timeout_ms = l->target.timeout_ms;
    st->last_samples = l->last_samples;
    st->last_series_added = l->last_series_added;
    st->scrapes = l->scrapes;
    st->skipped_ticks = l->skipped;
    st->last_duplicates = l->last_dup;
    st->last_out_of_order = l->last_ooo;
    st->last_out_of_bounds = l->last_oob;
    st->last_fast_samples = l->last_fast;
}

const struct ps_target *ps_loop_target(const struct ps_loop *l)
{
    return &l->target;
}

const struct ps_cache *ps_loop_cache(const struct ps_loop *l)
{
    return l->cache;
}

/* ---- appending --------------------------------------------------------- */

/* Appends one sample; returns the appender's code. ref in/out. */
static int app_append(struct ps_loop *l, uint64_t *ref,
                      const struct ps_labels *ls, int64_t t, double v,
                      struct ps_err *e)
{
    uint64_t out = 0;
    int rc = l->app->vt->append(l->app, *ref, ls, t, v, &out, e);

    if (rc == PS_OK && out != 0)
        *ref = out;
    return rc;
}

/* Staleness markers for series gone since the last scrape. */
struct stale_ctx {
    struct ps_loop *l;
    int64_t t;
    int rc;
    struct ps_err *e;
};

static int stale_one(uint64_t ref, const struct ps_labels *ls, void *ud)
{
    struct stale_ctx *s = ud;
    uint64_t r = ref;
    int rc = app_append(s->l, &r, ls, s->t, ps_stale_nan(), s->e);

    /* Out of order or duplicate is expected when a target came back with
     * a new loop; Prometheus ignores those here. */
    if (rc < 0) {
        s->rc = rc;
        return 1;
    }
    return 0;
}

static int update_stale_markers(struct ps_loop *l, int64_t t,
                                struct ps_err *e)
{
    struct stale_ctx s = {l, t, PS_OK, e};

    ps_cache_for_each_stale(l->cache, stale_one, &s);
    return s.rc;
}

/* The family metadata for a metric name: exact, else without a
 * histogram/summary/counter suffix. */
static const struct ps_cache_meta *family_meta(const struct ps_cache *c,
                                               struct ps_str name)
{
    static const char *const sfx[] = {"_bucket", "_count", "_sum",
                                      "_total", "_created", "_info",
                                      "_gcount", "_gsum"};
    const struct ps_cache_meta *m = ps_cache_meta(c, name);
    size_t i;

    for (i = 0; m == NULL && i < sizeof(sfx) / sizeof(sfx[0]); i++) {
        size_t n = strlen(sfx[i]);
        if (name.n > n && memcmp(name.p + name.n - n, sfx[i], n) == 0) {
            struct ps_str f = {name.p, name.n - n};
            m = ps_cache_meta(c, f);
        }
    }
    return m;
}

/* Passes the family's metadata to the appender; its errors are ignored
 * (metadata is best effort, as in Prometheus). */
static void update_metadata(struct ps_loop *l, uint64_t ref,
                            const struct ps_labels *ls)
{
    const struct ps_label *nm = ps_labels_get(ls, L("__name__"));
    const struct ps_cache_meta *m;
    struct ps_metadata md;
    struct ps_err e;

    if (l->app->vt->update_metadata == NULL || nm == NULL)
        return;
    m = family_meta(l->cache, (struct ps_str){nm->value, nm->value_len});
    if (m == NULL)
        return;
    md.type = m->type;
    md.help = (struct ps_str){m->help, strlen(m->help)};
    md.unit = (struct ps_str){m->unit, strlen(m->unit)};
    ps_err_init(&e);
    l->app->vt->update_metadata(l->app, ref, ls, &md, &e);
}

/* Exemplar labels are views into the parser, sorted in a reused set. */
static void append_exemplar(struct ps_loop *l, uint64_t ref,
                            const struct ps_labels *ls,
                            const struct ps_series_view *sv)
{
    struct ps_exemplar ex;
    struct ps_err e;
    size_t i;

    if (l->app->vt->append_exemplar == NULL)
        return;
    ps_labels_clear(&l->exlabels);
    for (i = 0; i < sv->exemplar.nlabels; i++) {
        const struct ps_label_view *v = &sv->exemplar.labels[i];
        if (ps_labels_add(&l->exlabels, v->name.p, v->name.n, v->value.p,
                          v->value.n, 0) != PS_OK)
            return; /* exemplars are best effort, as in Prometheus */
    }
    ps_labels_sort(&l->exlabels);
    ex.labels = &l->exlabels;
    ex.value = sv->exemplar.value;
    ex.has_ts = sv->exemplar.has_ts;
    ex.ts_ms = sv->exemplar.ts_ms;
    ps_err_init(&e);
    l->app->vt->append_exemplar(l->app, ref, ls, &ex, &e);
}

/* Label names as exposed, for "label ... is not unique" messages. */
static int set_err_labels(struct ps_err *e, int code, const char *what,
                          const struct ps_labels *ls)
{
    char buf[PS_ERR_MAX];
    size_t off = 0, i;

    buf[0] = '\0';
    for (i = 0; i < ls->n && off + 8 < sizeof(buf); i++) {
        int w = snprintf(buf + off, sizeof(buf) - off, "%s%.*s=\"%.*s\"",
                         i ? ", " : "", (int)ls->v[i].name_len,
                         ls->v[i].name, (int)ls->v[i].value_len,
                         ls->v[i].value);
        if (w < 0)
            break;
        off += (size_t)w;
        if (off >= sizeof(buf))
            off = sizeof(buf) - 1;
    }
    return ps_err_set(e, code, "%s: {%s}", what, buf);
}

/* Sorts conflicts by name length, stable (insertion sort: few labels). */
static void sort_by_len(struct ps_labels *c)
{
    size_t i, j;

    for (i = 1; i < c->n; i++) {
        struct ps_label x = c->v[i];
        for (j = i; j > 0 && c->v[j - 1].name_len > x.name_len; j--)
            c->v[j] = c->v[j - 1];
        c->v[j] = x;
    }
}

/* Linear lookup in an unsorted set (the exposed labels). */
static const struct ps_label *find_label(const struct ps_labels *ls,
                                         const char *n, size_t nl)
{
    size_t i;

    for (i = 0; i < ls->n; i++)
        if (ls->v[i].name_len == nl && memcmp(ls->v[i].name, n, nl) == 0)
            return &ls->v[i];
    return NULL;
}

/*
 * mutateSampleLabels: the exposed set (l->exposed) plus the target labels,
 * honoring or renaming conflicts, then metric relabeling. On PS_OK *out is
 * the final set (l->final or l->built) or NULL when dropped.
 */
static int mutate(struct ps_loop *l, const struct ps_labels **out,
                  struct ps_err *e)
{
    const struct ps_labels *tl = &l->target.pub;
    size_t i, drop_at = PS_RELABEL_KEPT;
    int rc;

    l->defer_at = PS_CHAIN_DONE;
    rc = ps_labels_builder_reset(&l->b, &l->exposed);
    if (rc == PS_EINVAL)
        return set_err_labels(e, PS_EINVAL, "label names are not unique",
                              &l->exposed);
    if (rc != PS_OK)
        return ps_err_set(e, rc, "building labels");
    ps_labels_clear(&l->conflicts);
    for (i = 0; i < tl->n && rc == PS_OK; i++) {
        const struct ps_label *t = &tl->v[i];
        const struct ps_label *x = find_label(&l->exposed, t->name,
                                              t->name_len);
        if (l->cfg->honor_labels) {
            /* lset.Has(name): even an empty exposed value wins */
            if (x == NULL)
                rc = ps_labels_builder_set(&l->b, t->name, t->name_len,
                                           t->value, t->value_len, 0);
            continue;
        }
        if (x != NULL && x->value_len > 0)
            rc = ps_labels_add(&l->conflicts, x->name, x->name_len,
                               x->value, x->value_len, 0);
        if (rc == PS_OK)
            rc = ps_labels_builder_set(&l->b, t->name, t->name_len, t->value,
                                       t->value_len, 0);
    }
    /* resolveConflictingExposedLabels: shortest names first, prefix
     * "exported_" until the name is free. */
    sort_by_len(&l->conflicts);
    for (i = 0; i < l->conflicts.n && rc == PS_OK; i++) {
        const struct ps_label *c = &l->conflicts.v[i];
        char name[512];
        size_t nl = c->name_len;
        const struct ps_label *have;

        if (nl >= sizeof(name))
            return ps_err_set(e, PS_ELIMIT, "label name too long");
        memcpy(name, c->name, nl);
        do {
            if (nl + 9 >= sizeof(name))
                return ps_err_set(e, PS_ELIMIT, "label name too long");
            memmove(name + 9, name, nl);
            memcpy(name, "exported_", 9);
            nl += 9;
            have = ps_labels_builder_get(&l->b, name, nl);
        } while (have != NULL && have->value_len > 0);
        rc = ps_labels_builder_set(&l->b, name, nl, c->value, c->value_len,
                                   PS_LABELS_COPY);
    }
    if (rc == PS_OK)
        rc = ps_labels_builder_labels(&l->b, &l->built);
    if (rc != PS_OK)
        return ps_err_set(e, rc, "building labels");
    if (l->cfg->metric_chain != NULL) {
        int dropped = 0;
        rc = ps_relabel_chain_apply_from(l->cfg->metric_chain,
                                         l->cfg->scratch, 0, &l->built,
                                         &l->final, &l->chain_tmp, &dropped,
                                         &l->defer_at, e);
        if (rc != PS_OK)
            return rc;
        if (l->defer_at != PS_CHAIN_DONE) { /* l->final: the set so far */
            *out = NULL;
            return PS_OK;
        }
        *out = !dropped && l->final.n > 0 ? &l->final : NULL;
        return PS_OK;
    }
    if (l->cfg->metric_relabel == NULL) {
        *out = l->built.n > 0 ? &l->built : NULL;
        return PS_OK;
    }
    rc = ps_relabel_apply(l->cfg->metric_relabel, l->cfg->scratch, &l->built,
                          &l->final, &drop_at, e);
    if (rc != PS_OK)
        return rc;
    *out = drop_at == PS_RELABEL_KEPT && l->final.n > 0 ? &l->final : NULL;
    return PS_OK;
}

/* lset.IsValid(scheme) and verifyLabelLimits, on a final set. */
static int check_labels(struct ps_loop *l, const struct ps_labels *ls,
                        struct ps_err *e)
{
    const struct ps_loop_config *c = l->cfg;
    const struct ps_label *nm = ps_labels_get(ls, L("__name__"));
    size_t i;
    int mn;

    if (nm == NULL || nm->value_len == 0)
        return ps_err_set(e, PS_EINVAL, "__name__ label is missing");
    for (i = 0; i < ls->n; i++) {
        const struct ps_label *x = &ls->v[i];
        int ok = c->legacy_names
                     ? ps_name_legacy_label(x->name, x->name_len)
                     : ps_name_utf8(x->name, x->name_len);
        if (ok && x == nm)
            ok = c->legacy_names
                     ? ps_name_legacy_metric(x->value, x->value_len)
                     : ps_name_utf8(x->value, x->value_len);
        /* values too: relabeling may have assembled invalid UTF-8 */
        if (ok)
            ok = ps_utf8_valid(x->value, x->value_len);
        if (!ok)
            return set_err_labels(e, PS_EINVAL,
                                  "invalid metric name or label names", ls);
    }
    /* %.*s with lengths: label views are not NUL-terminated in general */
    mn = nm->value_len < 50 ? (int)nm->value_len : 50;
    if (c->label_limit > 0 && ls->n > c->label_limit)
        return ps_err_set(e, PS_ELIMIT,
                          "label_limit exceeded (metric: %.*s, number of "
                          "labels: %zu, limit: %llu)",
                          mn, nm->value, ls->n,
                          (unsigned long long)c->label_limit);
    for (i = 0; i < ls->n; i++) {
        const struct ps_label *x = &ls->v[i];
        int xn = x->name_len < 50 ? (int)x->name_len : 50;
        int xv = x->value_len < 50 ? (int)x->value_len : 50;
        if (c->label_name_length_limit > 0 &&
            x->name_len > c->label_name_length_limit)
            return ps_err_set(e, PS_ELIMIT,
                              "label_name_length_limit exceeded (metric: "
                              "%.*s, label name: %.*s, length: %zu, "
                              "limit: %llu)",
                              mn, nm->value, xn, x->name, x->name_len,
                              (unsigned long long)c->label_name_length_limit);
        if (c->label_value_length_limit > 0 &&
            x->value_len > c->label_value_length_limit)
            return ps_err_set(e, PS_ELIMIT,
                              "label_value_length_limit exceeded (metric: "
                              "%.*s, label name: %.*s, value: \"%.*s\", "
                              "length: %zu, limit: %llu)",
                              mn, nm->value, xn, x->name, xv, x->value,
                              x->value_len,
                              (unsigned long long)c->label_value_length_limit);
    }
    return PS_OK;
}

/* Picks the parser format as Prometheus's extractMediaType. */
static int pick_format(struct ps_loop *l, const char *ct, enum ps_format *f,
                       struct ps_err *e)
{
    struct ps_err pe;

    if (ct == NULL || ct[0] == '\0') {
        if (l->cfg->fallback_format < 0)
            return ps_err_set(e, PS_ENOTSUP,
                              "non-compliant scrape target sending blank "
                              "Content-Type and no fallback_scrape_protocol "
                              "specified for target");
        *f = (enum ps_format)l->cfg->fallback_format;
        return PS_OK;
    }
    ps_err_init(&pe);
    if (ps_parse_format_of(ct, strlen(ct), f, &pe) == PS_OK)
        return PS_OK;
    if (l->cfg->fallback_format < 0)
        return ps_err_set(e, PS_ENOTSUP,
                          "received unsupported Content-Type \"%.100s\" and "
                          "no fallback_scrape_protocol specified for target",
                          ct);
    *f = (enum ps_format)l->cfg->fallback_format;
    return PS_OK;
}

/* ---- deferred function rules ------------------------------------------- */

static uint64_t raw_hash(struct ps_str k)
{
    return XXH3_64bits(k.p, k.n);
}

static int pending_eq(const void *key, uint64_t val, void *ud)
{
    const struct ps_str *k = key;
    const struct pending *p = (const void *)(uintptr_t)val;

    (void)ud;
    return p->key_len == k->n && memcmp(p->key, k->p, k->n) == 0;
}

static struct pending *pending_get(struct ps_loop *l, struct ps_str raw)
{
    uint64_t *v = ps_hmap_find(&l->pending, raw_hash(raw), pending_eq, &raw,
                               NULL);

    return v ? (struct pending *)(uintptr_t)*v : NULL;
}

static void pending_free(struct ps_loop *l, struct pending *p)
{
    l->nheld -= p->nheld;
    ps_labels_cleanup(&p->lset);
    ps_labels_cleanup(&p->result);
    ps_free(p->key);
    ps_free(p);
}

static int free_pending_cb(uint64_t h, uint64_t v, void *ud)
{
    struct ps_loop *l = ud;
    struct pending *p = (void *)(uintptr_t)v;

    (void)h;
    l->def_lost += p->nheld;
    pending_free(l, p);
    return 1;
}

/* Discards every deferred series, counting its held samples as lost. */
static void pending_free_all(struct ps_loop *l)
{
    ps_hmap_remove_if(&l->pending, free_pending_cb, l);
}

/* Holds one sample of a pending series (counted like an appended one
 * toward sample_limit; a repeat within one scrape is a duplicate). */
static void hold(struct ps_loop *l, struct pending *p, int64_t t, double v,
                 int explicit_ts, struct scrape_result *r)
{
    const struct ps_loop_config *c = l->cfg;
    uint64_t it = l->cache->iter;

    if (p->last_iter == it + 1 && !explicit_ts) {
        r->dup++;
        return;
    }
    if (c->sample_limit > 0 && !ps_is_stale_nan(v) &&
        ++l->nlimit > c->sample_limit) {
        l->limit_hit = 1;
        return;
    }
    p->last_iter = it + 1;
    r->added++;
    if (p->nheld == PS_LOOP_HELD_PER_SERIES) { /* the oldest goes */
        memmove(&p->held[0], &p->held[1],
                (PS_LOOP_HELD_PER_SERIES - 1) * sizeof(p->held[0]));
        p->nheld--;
        l->nheld--;
        l->def_lost++;
    }
    if (l->nheld >= PS_LOOP_MAX_HELD) {
        l->def_lost++;
        return;
    }
    p->held[p->nheld].t = t;
    p->held[p->nheld].v = v;
    p->held[p->nheld].iter = it;
    p->held[p->nheld].track = !explicit_ts || c->track_timestamps_staleness;
    p->nheld++;
    l->nheld++;
}

/* A cache miss that reached a hook that cannot run here: parks the
 * series with l->final (the set before segment l->defer_at) and holds
 * the sample. PS_OK or PS_ENOMEM. */
static int defer_series(struct ps_loop *l, struct ps_str raw, int64_t t,
                        double v, int explicit_ts, struct scrape_result *r)
{
    struct pending *p;

    if (ps_hmap_count(&l->pending) >= PS_LOOP_MAX_PENDING) {
        l->def_lost++; /* not parked: queued again when next scraped */
        return PS_OK;
    }
    p = ps_calloc(1, sizeof(*p));
    if (p == NULL)
        return PS_ENOMEM;
    ps_labels_init(&p->lset);
    ps_labels_init(&p->result);
    p->key = ps_malloc(raw.n + 1);
    if (p->key == NULL || ps_labels_copy(&p->lset, &l->final) != PS_OK) {
        pending_free(l, p);
        return PS_ENOMEM;
    }
    if (raw.n > 0)
        memcpy(p->key, raw.p, raw.n);
    p->key[raw.n] = '\0';
    p->key_len = raw.n;
    p->seg = l->defer_at;
    p->state = PEND_QUEUED;
    if (ps_hmap_insert(&l->pending, raw_hash(raw),
                       (uint64_t)(uintptr_t)p) != PS_OK) {
        pending_free(l, p);
        return PS_ENOMEM;
    }
    hold(l, p, t, v, explicit_ts, r);
    return PS_OK;
}

/* A failed scrape: the samples held in it go (never counted as lost:
 * the scrape failed, as its appended samples were rolled back). */
static void unhold_iter(struct ps_loop *l, uint64_t it)
{
    size_t i = 0, k, w;
    uint64_t h, v;

    while (ps_hmap_next(&l->pending, &i, &h, &v)) {
        struct pending *p = (void *)(uintptr_t)v;
        for (k = 0, w = 0; k < p->nheld; k++)
            if (p->held[k].iter != it)
                p->held[w++] = p->held[k];
        l->nheld -= p->nheld - w;
        p->nheld = w;
        if (p->last_iter == it + 1)
            p->last_iter = 0;
    }
}

/* See ps_loop.h. */
size_t ps_loop_resolve_deferred(struct ps_loop *l, size_t max, size_t *left)
{
    size_t i = 0, done = 0, queued = 0;
    uint64_t h, v;

    while (ps_hmap_next(&l->pending, &i, &h, &v)) {
        struct pending *p = (void *)(uintptr_t)v;
        struct ps_err e;
        int rc, dropped = 0;

        if (p->state != PEND_QUEUED)
            continue;
        if (done >= max || l->cfg->metric_chain == NULL) {
            queued++;
            continue;
        }
        ps_err_init(&e);
        rc = ps_relabel_chain_apply_from(l->cfg->metric_chain,
                                         l->cfg->scratch, p->seg, &p->lset,
                                         &p->result, &l->chain_tmp,
                                         &dropped, NULL, &e);
        if (rc != PS_OK) {
            p->state = PEND_FAILED; /* the hook recorded its error */
        } else if (dropped || p->result.n == 0) {
            p->state = PEND_DROPPED;
        } else {
            p->state = PEND_KEPT;
        }
        done++;
    }
    if (left != NULL)
        *left = queued;
    if (done > 0 && l->cache != NULL &&
        ps_engine_timer_in(l->eng, &l->install_timer, 0) != PS_OK) {
        /* no timer: the next tick installs them */
    }
    return done;
}

/* Installs one kept series: cache entry, held samples, staleness. The
 * transaction is open. PS_OK; 1 when the series could not be installed
 * (invalid labels, no memory): discarded; or a negative appender error. */
static int install_kept(struct ps_loop *l, struct pending *p,
                        struct ps_err *e)
{
    struct ps_cache *c = l->cache;
    struct ps_cache_entry *ce;
    uint64_t last_ok = 0;
    int any_ok = 0;
    size_t k;

    if (check_labels(l, &p->result, e) != PS_OK)
        return 1; /* invalid labels: as a failed rule */
    if (ps_cache_add(c, (struct ps_str){p->key, p->key_len}, 0, &p->result,
                     &ce) != PS_OK)
        return 1; /* not cached: discarded, parked again next time */
    /* Seen in the last scrape, not in the coming one (which would make
     * its first sample there a duplicate). */
    ce->last_iter = c->iter > 0 ? c->iter - 1 : 0;
    for (k = 0; k < p->nheld; k++) {
        const struct held_sample *hs = &p->held[k];
        uint64_t ref = ce->ref;
        int arc = app_append(l, &ref, &ce->lset, hs->t, hs->v, e);
        if (arc < 0)
            return arc;
        if (arc == PS_OK) {
            ce->ref = ref;
            any_ok = 1;
            if (hs->track)
                last_ok = hs->iter + 1;
        }
    }
    if (any_ok)
        update_metadata(l, ce->ref, &ce->lset);
    if (last_ok != 0 && last_ok == c->iter) {
        /* appended in the last scrape: the next one stales it if gone */
        if (ps_cache_track_prev(c, ce) != PS_OK) {
            /* no memory: no stale marker if it goes away next scrape */
        }
    } else if (last_ok != 0 && l->last_scrape_ms > 0) {
        /* gone since: the marker it missed, at the last scrape's time */
        uint64_t ref = ce->ref;
        (void)app_append(l, &ref, &ce->lset, l->last_scrape_ms,
                         ps_stale_nan(), e);
    }
    return PS_OK;
}

struct install_ctx {
    struct ps_loop *l;
    struct ps_err *e;
    int rc;
};

static int install_one(uint64_t h, uint64_t v, void *ud)
{
    struct install_ctx *x = ud;
    struct ps_loop *l = x->l;
    struct pending *p = (void *)(uintptr_t)v;
    int rc;

    (void)h;
    if (p->state == PEND_QUEUED || x->rc < 0)
        return 0;
    l->def_resolved++;
    if (p->state == PEND_KEPT) {
        struct ps_err e2;
        ps_err_init(&e2);
        rc = install_kept(l, p, &e2);
        if (rc < 0) {
            x->rc = rc; /* an appender error: everything else waits */
            snprintf(x->e->msg, sizeof(x->e->msg), "%s", e2.msg);
            l->def_lost += p->nheld;
        } else if (rc != PS_OK) { /* not installed: as a failed rule */
            l->def_failed++;
            l->def_lost += p->nheld;
        }
    } else if (p->state == PEND_DROPPED) {
        if (ps_cache_add_dropped(l->cache,
                                 (struct ps_str){p->key, p->key_len}) !=
            PS_OK) {
            /* not cached: the series is deferred again next time */
        }
    } else {
        l->def_failed++;
        l->def_lost += p->nheld;
    }
    pending_free(l, p);
    return 1;
}

/* Installs the resolved series in a transaction of their own. */
static void install_resolved(struct ps_loop *l)
{
    struct install_ctx x;
    struct ps_err e;
    size_t i = 0;
    uint64_t h, v;
    int any = 0;

    if (l->cache == NULL || ps_hmap_count(&l->pending) == 0)
        return;
    while (!any && ps_hmap_next(&l->pending, &i, &h, &v))
        any = ((struct pending *)(uintptr_t)v)->state != PEND_QUEUED;
    if (!any)
        return;
    ps_err_init(&e);
    if (app_begin(l, &e) != PS_OK)
        return; /* tried again on the next tick */
    x.l = l;
    x.e = &e;
    x.rc = PS_OK;
    ps_hmap_remove_if(&l->pending, install_one, &x);
    if (x.rc < 0) {
        l->app->vt->rollback(l->app);
    } else {
        l->app->vt->commit(l->app, &e);
    }
}

static void on_install(struct ps_timer *t, void *ud)
{
    (void)t;
    install_resolved(ud);
}

/* ---- series lookup and the fast line path ------------------------------ */

/* Where a sample's raw series bytes were found (lookup_series). */
enum { LK_NONE = 0, LK_MISS, LK_HIT, LK_DROPPED, LK_PENDING };

/* The per-sample lookup, in Prometheus's order: dropped by relabeling,
 * parked by a deferred rule, cached. Sets *pend (LK_PENDING) or *ce
 * (LK_HIT, with *already as ps_cache_get; NULL on LK_MISS). */
static int lookup_series(struct ps_loop *l, struct ps_str raw,
                         struct pending **pend, struct ps_cache_entry **ce,
                         int *already)
{
    if (ps_cache_get_dropped(l->cache, raw))
        return LK_DROPPED;
    if (ps_hmap_count(&l->pending) > 0) {
        *pend = pending_get(l, raw);
        if (*pend != NULL)
            return LK_PENDING;
    }
    *ce = ps_cache_get(l->cache, raw, already);
    return *ce != NULL ? LK_HIT : LK_MISS;
}

/*
 * The fast line path (docs/scrape.md): a text sample line is split from
 * its end (ps_parse_peek_sample) and its raw bytes looked up; when the
 * cache knows them, the parser would find those same bytes, so the line
 * is consumed without tokenizing its labels (ps_parse_skip_sample) and
 * ps_parse_series() gives its value and timestamp. Returns LK_NONE when
 * the line is not a plain sample line (nothing looked up); LK_MISS, with
 * *raw the bytes looked up, leaving the line to ps_parse_next(); else
 * the lookup's result, the line consumed. Negative: the parser was out
 * of step (a bug, not input).
 */
static int fast_line(struct ps_loop *l, struct ps_str *raw,
                     struct pending **pend, struct ps_cache_entry **ce,
                     int *already)
{
    struct ps_sample_line sl;
    int found;

    if (!ps_parse_peek_sample(l->parser, &sl))
        return LK_NONE;
    *raw = sl.raw;
    found = lookup_series(l, sl.raw, pend, ce, already);
    if (found != LK_MISS && ps_parse_skip_sample(l->parser, &sl) != PS_OK)
        return -1;
    return found;
}

/*
 * Prometheus's scrapeLoop.append for a non-empty body. Returns PS_OK or
 * the error that fails the scrape (message in e). Counts go to *r.
 */
static int append_body(struct ps_loop *l, const char *body, size_t len,
                       const char *ctype, struct scrape_result *r,
                       struct ps_err *e)
{
    const struct ps_loop_config *c = l->cfg;
    const int64_t def_t = l->append_ms;
    enum ps_format fmt;
    int rc, meta_changed = 0, fast;
    uint64_t meta_iter = l->cache->iter;

    rc = pick_format(l, ctype, &fmt, e);
    if (rc != PS_OK)
        return rc;
    if (l->parser == NULL || l->parser_format != fmt) {
        struct ps_parse_opts po;
        memset(&po, 0, sizeof(po));
        po.format = fmt;
        ps_parse_free(l->parser);
        l->parser = NULL;
        rc = ps_parse_new(&l->parser, body, len, &po, e);
        if (rc != PS_OK)
            return rc;
        l->parser_format = fmt;
    } else {
        ps_parse_reset(l->parser, body, len);
    }
    l->nlimit = 0;
    l->limit_hit = 0;
    /* OpenMetrics keeps the full parser: exemplars, and strict rules that
     * look at every sample. */
    fast = fmt == PS_FORMAT_TEXT && !c->full_parse;
    for (;;) {
        enum ps_entry ent;
        const struct ps_series_view *sv;
        const struct ps_meta_view *mv;
        struct ps_cache_entry *ce = NULL;
        struct pending *pend = NULL;
        struct ps_str fast_raw = {NULL, 0};
        const struct ps_labels *lset = NULL;
        uint64_t ref = 0;
        int already = 0, explicit_ts, added_ok = 0, arc = PS_OK;
        int found =
            fast ? fast_line(l, &fast_raw, &pend, &ce, &already) : LK_NONE;
        int64_t t;

        if (found < 0)
            return ps_err_set(e, PS_ESTATE, "parser out of step");
        if (found != LK_NONE && found != LK_MISS) {
            r->fast++;
            goto sample; /* the fast line consumed it */
        }
        rc = ps_parse_next(l->parser, &ent, e);
        if (rc != PS_OK)
            return rc;
        if (ent == PS_ENTRY_EOF)
            break;
        switch (ent) {
        case PS_ENTRY_TYPE:
            mv = ps_parse_meta(l->parser);
            rc = ps_cache_set_type(l->cache, mv->family, mv->type);
            break;
        case PS_ENTRY_HELP:
            mv = ps_parse_meta(l->parser);
            rc = ps_cache_set_help(l->cache, mv->family, mv->text);
            break;
        case PS_ENTRY_UNIT:
            mv = ps_parse_meta(l->parser);
            rc = ps_cache_set_unit(l->cache, mv->family, mv->text);
            break;
        default:
            break;
        }
        if (rc != PS_OK)
            return ps_err_set(e, rc, "caching metadata");
        if (ent != PS_ENTRY_SERIES)
            continue;
    sample:
        meta_changed = 0;
        sv = ps_parse_series(l->parser);
        r->total++;
        explicit_ts = c->honor_timestamps && sv->has_ts;
        t = explicit_ts ? sv->ts_ms : def_t;
        /* One lookup per sample: a fast line's miss already looked up the
         * bytes the full parse found (the same ones, see ps_parse.h). */
        if (found == LK_NONE || sv->raw.p != fast_raw.p ||
            sv->raw.n != fast_raw.n)
            found = lookup_series(l, sv->raw, &pend, &ce, &already);
        if (found == LK_DROPPED)
            continue;
        if (found == LK_PENDING) {
            hold(l, pend, t, sv->value, explicit_ts, r);
            continue;
        }
        if (ce != NULL) {
            ref = ce->ref;
            lset = &ce->lset;
        } else {
            size_t i;
            /* Miss: the exposed set, as views into the parser. */
            ps_labels_clear(&l->exposed);
            rc = ps_labels_add(&l->exposed, L("__name__"), sv->name.p,
                               sv->name.n, 0);
            for (i = 0; i < sv->nlabels && rc == PS_OK; i++) {
                /* le/quantile as Prometheus 3.x ingests them ("1" ->
                 * "1.0"); copied, since num is reused per label. */
                char num[PS_FLOAT_FMT_MAX];
                struct ps_str v = sv->labels[i].value;
                int norm = ps_parse_normalize_label(sv->mtype,
                                                    &sv->labels[i], num, &v);
                rc = ps_labels_add(&l->exposed, sv->labels[i].name.p,
                                   sv->labels[i].name.n, v.p, v.n,
                                   norm ? PS_LABELS_COPY : 0);
            }
            if (rc != PS_OK)
                return ps_err_set(e, rc, "building labels");
            rc = mutate(l, &lset, e);
            if (rc != PS_OK)
                return rc;
            if (l->defer_at != PS_CHAIN_DONE) {
                rc = defer_series(l, sv->raw, t, sv->value, explicit_ts, r);
                if (rc != PS_OK)
                    return ps_err_set(e, rc, "deferring a series");
                continue;
            }
            if (lset == NULL) {
                rc = ps_cache_add_dropped(l->cache, sv->raw);
                if (rc != PS_OK)
                    return ps_err_set(e, rc, "caching a dropped series");
                continue;
            }
            rc = check_labels(l, lset, e);
            if (rc != PS_OK)
                return rc;
        }
        if (already && !explicit_ts) {
            arc = PS_APPEND_DUPLICATE; /* same series twice in one scrape */
        } else if (c->sample_limit > 0 && !ps_is_stale_nan(sv->value) &&
                   ++l->nlimit > c->sample_limit) {
            /* limitAppender: the scrape goes on (counting) but fails */
            l->limit_hit = 1;
            arc = -1;
        } else {
            arc = app_append(l, &ref, lset, t, sv->value, e);
            if (arc < 0)
                return arc;
        }
        added_ok = arc == PS_OK;
        /* checkAddError: soft rejections are counted and skipped */
        r->dup += arc == PS_APPEND_DUPLICATE;
        r->ooo += arc == PS_APPEND_OUT_OF_ORDER;
        r->oob += arc == PS_APPEND_OUT_OF_BOUNDS;
        if (ce == NULL && added_ok) {
            /* Only appended series are cached (Prometheus 3.x: "if
             * !seriesCached && sampleAdded"): past sample_limit a target
             * exposing millions of new series would otherwise grow the
             * cache by all of them on every failing scrape. */
            rc = ps_cache_add(l->cache, sv->raw, ref, lset, &ce);
            if (rc != PS_OK)
                return ps_err_set(e, rc, "caching a series");
            if (!l->limit_hit)
                r->series_added++;
            meta_changed = 1;
        } else if (added_ok) {
            ce->ref = ref;
        }
        if (added_ok && (!explicit_ts || c->track_timestamps_staleness)) {
            rc = ps_cache_track(l->cache, ce);
            if (rc != PS_OK)
                return ps_err_set(e, rc, "tracking staleness");
        }
        /* added counts duplicates too: the series exposed after
         * relabeling, as Prometheus reports them. */
        r->added++;
        if (!added_ok)
            continue;
        if (sv->has_exemplar)
            append_exemplar(l, ce->ref, &ce->lset, sv);
        /* Steady state: no family's metadata changed in this scrape and
         * the series is cached, so there is nothing to pass on. */
        if (l->app->vt->update_metadata != NULL &&
            (meta_changed || ps_cache_meta_changed(l->cache))) {
            const struct ps_label *nm = ps_labels_get(&ce->lset,
                                                      L("__name__"));
            const struct ps_cache_meta *m =
                nm ? family_meta(l->cache,
                                 (struct ps_str){nm->value, nm->value_len})
                   : NULL;
            if (m != NULL && (meta_changed || m->last_iter_change == meta_iter))
                update_metadata(l, ce->ref, &ce->lset);
        }
    }
    if (l->limit_hit)
        return ps_err_set(e, PS_ELIMIT, "sample limit exceeded");
    rc = update_stale_markers(l, def_t, e);
    if (rc != PS_OK)
        return rc;
    ps_cache_iter_done(l->cache, 1);
    return PS_OK;
}

/* The "empty scrape" of Prometheus: stale markers for every series of the
 * previous scrape missing now, and the cache swapped without a flush. */
static int append_empty(struct ps_loop *l, int64_t t, struct ps_err *e)
{
    int rc = update_stale_markers(l, t, e);

    ps_cache_iter_done(l->cache, 0);
    return rc;
}

/* Builds the labels of a report series: __name__ plus the target labels,
 * target labels overriding (exported_ for a clash, as
 * mutateReportSampleLabels). Result in l->built. */
static int report_labels(struct ps_loop *l, const char *name)
{
    const struct ps_labels *tl = &l->target.pub;
    size_t i;
    int rc;

    ps_labels_clear(&l->exposed);
    rc = ps_labels_add(&l->exposed, L("__name__"), name, strlen(name), 0);
    if (rc == PS_OK)
        rc = ps_labels_builder_reset(&l->b, &l->exposed);
    for (i = 0; i < tl->n && rc == PS_OK; i++) {
        const struct ps_label *t = &tl->v[i];
        if (t->name_len == 8 && memcmp(t->name, "__name__", 8) == 0)
            continue;
        rc = ps_labels_builder_set(&l->b, t->name, t->name_len, t->value,
                                   t->value_len, 0);
    }
    if (rc == PS_OK)
        rc = ps_labels_builder_labels(&l->b, &l->built);
    return rc;
}

/* addReportSample: cached by name + "\xff". PS_OK or a negative error. */
static int report_sample(struct ps_loop *l, int which, int64_t t, double v,
                         struct ps_err *e)
{
    const char *key = report_names[which];
    struct ps_str raw = {key, strlen(key)};
    struct ps_cache_entry *ce;
    int already, rc;
    uint64_t ref = 0;

    ce = ps_cache_get(l->cache, raw, &already);
    if (ce != NULL) {
        ref = ce->ref;
        rc = app_append(l, &ref, &ce->lset, t, v, e);
        if (rc == PS_OK)
            ce->ref = ref;
    } else {
        char name[64];
        size_t n = raw.n - 1;
        memcpy(name, key, n);
        name[n] = '\0';
        rc = report_labels(l, name);
        if (rc != PS_OK)
            return ps_err_set(e, rc, "report series");
        rc = app_append(l, &ref, &l->built, t, v, e);
        if (rc == PS_OK && ps_cache_add(l->cache, raw, ref, &l->built,
                                        NULL) != PS_OK)
            return ps_err_set(e, PS_ENOMEM, "report series");
    }
    return rc < 0 ? rc : PS_OK; /* out of order / duplicate: ignored */
}

static int report(struct ps_loop *l, int64_t t, int stale, int up,
                  uint64_t dur_ns, const struct scrape_result *r,
                  struct ps_err *e)
{
    double vals[R_COUNT];
    int i, n = l->cfg->extra_scrape_metrics ? R_COUNT : R_TIMEOUT, rc;

    vals[R_UP] = up ? 1 : 0;
    vals[R_DURATION] = (double)dur_ns / 1e9;
    vals[R_SAMPLES] = (double)r->total;
    vals[R_POST_RELABEL] = (double)r->added;
    vals[R_SERIES_ADDED] = (double)r->series_added;
    vals[R_TIMEOUT] = (double)l->timeout_ns / 1e9;
    vals[R_SAMPLE_LIMIT] = (double)l->cfg->sample_limit;
    vals[R_BODY_SIZE] = (double)r->bytes;
    for (i = 0; i < n; i++) {
        rc = report_sample(l, i, t, stale ? ps_stale_nan() : vals[i], e);
        if (rc != PS_OK)
            return rc;
    }
    return PS_OK;
}

/* Opens a transaction for this target's public labels. */
static int app_begin(struct ps_loop *l, struct ps_err *e)
{
    return l->app->vt->begin(l->app, &l->target.pub, e);
}

/*
 * scrapeAndReport after the fetch: body/ctype valid when fetch_err is
 * NULL. Never fails: errors go to the target's status.
 */
static void finish_scrape(struct ps_loop *l, const char *body, size_t len,
                          const char *ctype, const char *fetch_err,
                          int64_t bytes)
{
    struct scrape_result r = {0, 0, 0, bytes, 0, 0, 0, 0};
    struct ps_err e, e2;
    int rc, up;

    ps_err_init(&e);
    ps_err_init(&e2);
    l->last_error[0] = '\0';
    if (fetch_err != NULL)
        snprintf(l->last_error, sizeof(l->last_error), "%s", fetch_err);
    rc = app_begin(l, &e2);
    if (rc != PS_OK) {
        if (fetch_err == NULL)
            snprintf(l->last_error, sizeof(l->last_error), "%s", e2.msg);
        goto status;
    }
    if (fetch_err == NULL && len > 0) {
        rc = append_body(l, body, len, ctype, &r, &e);
    } else {
        /* A failed scrape is an empty one: stale markers only. An empty
         * successful body does the same but keeps up = 1. */
        rc = append_empty(l, l->append_ms, &e);
    }
    if (rc != PS_OK) {
        if (fetch_err == NULL)
            snprintf(l->last_error, sizeof(l->last_error), "%s", e.msg);
        l->app->vt->rollback(l->app);
        rc = app_begin(l, &e2);
        if (rc != PS_OK)
            goto status;
        /* Samples held in this failed scrape go too (they were never
         * in the rolled back transaction). */
        unhold_iter(l, l->cache->iter);
        /* The failed append may have tracked series: forget them, so
         * every series of the last good scrape goes stale. */
        ps_cache_drop_current(l->cache);
        if (append_empty(l, l->append_ms, &e2) != PS_OK) {
            l->app->vt->rollback(l->app);
            if (app_begin(l, &e2) != PS_OK)
                goto status;
        }
    }
    up = l->last_error[0] == '\0';
    rc = report(l, l->append_ms, 0, up,
                ps_engine_now_ns() - l->start_mono_ns, &r, &e2);
    if (rc != PS_OK)
        l->app->vt->rollback(l->app);
    else
        l->app->vt->commit(l->app, &e2); /* Prometheus only logs this */
status:
    l->health = l->last_error[0] == '\0' ? PS_HEALTH_UP : PS_HEALTH_DOWN;
    l->last_scrape_ms = l->append_ms;
    l->last_duration_ns = ps_engine_now_ns() - l->start_mono_ns;
    l->last_samples = r.total;
    l->last_series_added = r.series_added;
    l->last_dup = r.dup;
    l->last_ooo = r.ooo;
    l->last_oob = r.oob;
    l->last_fast = r.fast;
    l->scrapes++;
}

/* Transfer completion: the body is valid until the next start, i.e. for
 * this whole call, and the parser borrows it. */
static void on_http_done(struct ps_http_req *req,
                         const struct ps_http_result *res, void *ud)
{
    struct ps_loop *l = ud;

    (void)req;
    l->in_flight = 0;
    if (res->rc == PS_OK) {
        finish_scrape(l, res->body, res->body_len, res->content_type, NULL,
                      (int64_t)res->body_len);
    } else {
        const char *msg = res->error && res->error[0] ? res->error
                                                      : ps_strerror(res->rc);
        finish_scrape(l, NULL, 0, NULL, msg, res->rc == PS_ELIMIT ? -1 : 0);
    }
}

/* See ps_loop.h: what on_tick + on_http_done do, minus the clock and the
 * fetch, so tests and benchmarks can replay bodies deterministically. */
int ps_loop_scrape_body(struct ps_loop *l, const char *body, size_t len,
                        const char *content_type, int64_t t_ms)
{
    if (l->in_flight || l->state == ST_EOR || l->state == ST_DONE)
        return PS_ESTATE;
    install_resolved(l);
    l->start_mono_ns = ps_engine_now_ns();
    l->append_ms = t_ms;
    finish_scrape(l, body, len, content_type, NULL, (int64_t)len);
    return PS_OK;
}

/* ---- scheduling -------------------------------------------------------- */

/* Computes the sample time for a scrape starting now, snapped to the
 * ideal grid within min(interval / 100, 2 ms), as Prometheus does. */
static int64_t append_time_ms(struct ps_loop *l)
{
    int64_t now = wall_ns(), iv = (int64_t)l->interval_ns;
    int64_t tol = iv / 100 < 2000000 ? iv / 100 : 2000000;

    if (!l->aligned_set) {
        l->aligned_wall_ns = now;
        l->aligned_set = 1;
    }
    /* A skipped tick moves the grid by more than one interval. */
    while (now - l->aligned_wall_ns >= iv)
        l->aligned_wall_ns += iv;
    if (now - l->aligned_wall_ns <= tol)
        now = l->aligned_wall_ns;
    return now / 1000000;
}

/* Arms the timer for the next tick on the grid strictly after now;
 * missed ticks are counted and skipped, never bursted. */
static void schedule_next(struct ps_loop *l)
{
    uint64_t now = ps_engine_now_ns();

    l->next_tick_ns += l->interval_ns;
    if (l->next_tick_ns <= now) {
        uint64_t k = (now - l->next_tick_ns) / l->interval_ns + 1;
        l->skipped += k;
        l->next_tick_ns += k * l->interval_ns;
    }
    if (ps_timer_add(ps_engine_timers(l->eng), &l->timer, l->next_tick_ns) !=
        PS_OK) {
        /* The heap could not grow: the loop cannot go on. */
        l->state = ST_STOPPED;
        l->health = PS_HEALTH_DOWN;
        snprintf(l->last_error, sizeof(l->last_error),
                 "out of memory scheduling the next scrape");
    }
}

/* End-of-run staleness: two ticks, then 10% of the interval, then stale
 * markers for every series and the report series at the first tick. */
static void eor_step(struct ps_loop *l)
{
    struct ps_err e;
    struct scrape_result r = {0, 0, 0, 0, 0, 0, 0, 0};
    ps_loop_done_fn fn;

    ps_err_init(&e);
    if (l->eor_phase == 0) {
        l->stale_ms = wall_ns() / 1000000;
        l->eor_phase = 1;
        l->next_tick_ns += l->interval_ns;
        if (ps_timer_add(ps_engine_timers(l->eng), &l->timer,
                         l->next_tick_ns) == PS_OK)
            return;
    } else if (l->eor_phase == 1) {
        l->eor_phase = 2;
        if (ps_timer_add(ps_engine_timers(l->eng), &l->timer,
                         ps_engine_now_ns() + l->interval_ns / 10) == PS_OK)
            return;
    } else if (l->eor_enabled && app_begin(l, &e) == PS_OK) {
        int rc;
        ps_cache_drop_current(l->cache);
        rc = append_empty(l, l->stale_ms, &e);
        if (rc != PS_OK) {
            l->app->vt->rollback(l->app);
            rc = app_begin(l, &e);
        }
        if (rc == PS_OK && report(l, l->stale_ms, 1, 0, 0, &r, &e) == PS_OK)
            l->app->vt->commit(l->app, &e);
        else if (rc == PS_OK)
            l->app->vt->rollback(l->app);
    }
    l->state = ST_DONE;
    fn = l->done_fn;
    if (fn != NULL)
        fn(l, l->done_ud); /* may free l: touch nothing after */
}

/* The tick: schedule the next one first, so a slow scrape can never
 * shift the grid, then fetch (or fail at once with a forced error). */
static void on_tick(struct ps_timer *t, void *ud)
{
    struct ps_loop *l = ud;
    struct ps_err e;

    (void)t;
    if (l->state == ST_EOR) {
        eor_step(l);
        return;
    }
    if (l->state != ST_RUNNING)
        return;
    if (l->in_flight) {
        /* The previous scrape is still running: skip this tick. */
        l->skipped++;
        schedule_next(l);
        return;
    }
    install_resolved(l); /* a result the install timer could not take */
    l->start_mono_ns = ps_engine_now_ns();
    l->append_ms = append_time_ms(l);
    schedule_next(l);
    if (l->forced_error != NULL) {
        finish_scrape(l, NULL, 0, NULL, l->forced_error, 0);
        return;
    }
    ps_err_init(&e);
    if (ps_http_start(l->req, on_http_done, l, &e) != PS_OK) {
        finish_scrape(l, NULL, 0, NULL, e.msg[0] ? e.msg : "request failed",
                      0);
        return;
    }
    l->in_flight = 1;
}

/* Copy first, then swap, so ENOMEM leaves the old labels in place. */
int ps_loop_update_discovered(struct ps_loop *l, const struct ps_labels *d)
{
    struct ps_labels tmp;

    ps_labels_init(&tmp);
    if (ps_labels_copy(&tmp, d) != PS_OK) {
        ps_labels_cleanup(&tmp);
        return PS_ENOMEM;
    }
    ps_labels_cleanup(&l->target.discovered);
    l->target.discovered = tmp; /* the store moves with the struct */
    return PS_OK;
}

/* ---- rule chains with hooks ---------------------------------------------- */

int ps_relabel_chain_apply(const struct ps_relabel_chain *c,
                           struct ps_relabel_scratch *s,
                           const struct ps_labels *in, struct ps_labels *out,
                           struct ps_labels *tmp, int *dropped,
                           struct ps_err *e)
{
    return ps_relabel_chain_apply_from(c, s, 0, in, out, tmp, dropped, NULL,
                                       e);
}

int ps_relabel_chain_apply_from(const struct ps_relabel_chain *c,
                                struct ps_relabel_scratch *s, size_t from,
                                const struct ps_labels *in,
                                struct ps_labels *out, struct ps_labels *tmp,
                                int *dropped, size_t *defer_at,
                                struct ps_err *e)
{
    const struct ps_labels *cur = in;
    size_t i;

    *dropped = 0;
    if (defer_at != NULL)
        *defer_at = PS_CHAIN_DONE;
    for (i = from; i < c->n_segs; i++) {
        const struct ps_relabel_seg *sg = &c->segs[i];
        /* write into whichever owned set does not hold the input */
        struct ps_labels *dst = cur == out ? tmp : out;
        struct ps_err he;
        int rc, dr = 0;

        ps_err_init(&he);
        if (sg->hook != NULL && defer_at != NULL &&
            sg->hook->can_run != NULL && !sg->hook->can_run(sg->hook->ud)) {
            *defer_at = i; /* stop here: out gets the set so far */
            break;
        }
        if (sg->hook == NULL) {
            size_t drop_at = PS_RELABEL_KEPT;
            rc = ps_relabel_apply_range(c->rel, s, cur, sg->first, sg->count,
                                        dst, &drop_at, &he);
            if (rc != PS_OK)
                return ps_err_set(e, rc, "%s: %s", c->what, he.msg);
            dr = drop_at != PS_RELABEL_KEPT;
        } else {
            ps_labels_clear(dst);
            rc = sg->hook->fn(sg->hook->ud, cur, dst, &dr, &he);
            if (rc != PS_OK)
                return ps_err_set(e, rc, "%s: rule %zu: %s", c->what,
                                  sg->hook->position + 1,
                                  he.msg[0] ? he.msg : ps_strerror(rc));
            if (!dr && ps_labels_sort(dst) != PS_OK)
                return ps_err_set(e, PS_EINVAL,
                                  "%s: rule %zu: repeated label name in "
                                  "the result",
                                  c->what, sg->hook->position + 1);
        }
        if (dr) {
            *dropped = 1;
            ps_labels_clear(out);
            return PS_OK;
        }
        cur = dst;
    }
    if (cur == in) /* no segments run */
        return ps_labels_copy(out, in) == PS_OK
                   ? PS_OK
                   : ps_err_set(e, PS_ENOMEM, "%s", c->what);
    if (cur == tmp) { /* the result is in tmp: swap the two owned sets */
        struct ps_labels x = *out;
        *out = *tmp;
        *tmp = x;
    }
    return PS_OK;
}
