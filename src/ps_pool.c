/*
 * ps_pool.c: the scrape pool of one job (Prometheus scrapePool). See
 * ps_pool.h.
 *
 * A prepared config (struct ps_pool_config) is reference counted: the pool
 * holds one reference and every loop built from it holds one, because a
 * loop that is writing end-of-run staleness outlives a reload of its pool
 * and keeps borrowing its old settings.
 */
#include "ps_pool.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* A stored copy of a target group. */
struct sgroup {
    char *source;
    struct ps_labels *targets;
    size_t n;
    struct ps_labels labels;
};

struct ps_pool_config {
    unsigned refs;
    struct ps_strstore strs; /* every copied string */
    char *job;
    char *fingerprint;
    char *cache_fp; /* the settings that change what a scrape stores */
    int64_t interval_ms, timeout_ms;
    struct ps_param *params;
    size_t n_params;
    struct ps_target_defaults defaults;
    struct ps_relabel *relabel, *metric_relabel;
    struct ps_relabel_scratch *scratch;
    /* [0] relabel_configs, [1] metric_relabel_configs, with hooks only */
    struct ps_relabel_hook *hooks[2];
    size_t n_hooks[2];
    struct ps_relabel_seg *segs[2];
    struct ps_relabel_chain chain[2];
    int has_chain[2];
    char *accept;
    uint64_t target_limit, keep_dropped_targets;
    struct ps_loop_config lc;
    struct sgroup *statics;
    size_t n_statics;
};

struct active {
    uint64_t hash;
    struct ps_loop *loop;
    struct ps_pool_config *cfg; /* the loop's reference */
};

struct ps_pool {
    struct ps_engine *eng;
    struct ps_appender *app;
    uint64_t seed;
    struct ps_pool_config *cfg;
    struct sgroup *groups; /* the last ps_pool_sync() input */
    size_t n_groups;
    struct active *active; /* sorted by hash */
    size_t n_active;
    struct ps_target *dropped;
    size_t n_dropped, n_dropped_total;
    struct active *retiring; /* loops writing end-of-run staleness */
    size_t n_retiring, cap_retiring;
};

/* ---- config ------------------------------------------------------------ */

/* Zero means "unset" everywhere in the global section. */
void ps_global_config_init(struct ps_global_config *g)
{
    memset(g, 0, sizeof(*g));
    g->body_size_limit = PS_HTTP_DEFAULT_BODY_LIMIT; /* see ps_http.h */
}

/* The four defaults that are true in Prometheus; the rest is zero. */
void ps_scrape_config_init(struct ps_scrape_config *c)
{
    memset(c, 0, sizeof(*c));
    c->honor_timestamps = 1;
    c->enable_compression = 1;
    c->http_client.follow_redirects = 1;
    c->http_client.enable_http2 = 1;
}

/* A growable string with an out-of-memory latch. */
struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
};

/* Appends n bytes; on ENOMEM latches oom and ignores later calls, so a
 * builder checks once at the end. */
static void sb_putn(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *np;
        while (cap < b->n + n + 1)
            cap *= 2;
        np = ps_realloc(b->p, cap);
        if (np == NULL) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    sb_putn(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* A field as length-prefixed bytes, so no value can fake a separator. */
static void sb_field(struct sbuf *b, const char *k, const char *s, size_t n)
{
    sb_printf(b, "%s:%zu:", k, s ? n : (size_t)-1);
    if (s != NULL)
        sb_putn(b, s, n);
    sb_putn(b, ";", 1);
}

/* A C string field; NULL (unset) is distinct from "". */
static void sb_cstr(struct sbuf *b, const char *k, const char *s)
{
    sb_field(b, k, s, s ? strlen(s) : 0);
}

/* Secrets enter the fingerprint only as a hash. */
static void sb_secret(struct sbuf *b, const char *k, const char *s)
{
    if (s == NULL)
        sb_printf(b, "%s:-;", k);
    else
        sb_printf(b, "%s:#%016llx;", k,
                  (unsigned long long)XXH3_64bits(s, strlen(s)));
}

/* Every field of every rule as given (defaults are the same for equal
 * input, so the unresolved form is canonical enough). */
static void sb_rules(struct sbuf *b, const char *k,
                     const struct ps_relabel_config *r, size_t n)
{
    size_t i, j;

    sb_printf(b, "%s:[%zu", k, n);
    for (i = 0; i < n; i++) {
        sb_printf(b, "{src:%zu", r[i].source_labels ? r[i].n_source_labels
                                                    : (size_t)-1);
        for (j = 0; r[i].source_labels && j < r[i].n_source_labels; j++)
            sb_field(b, "", r[i].source_labels[j].p,
                     r[i].source_labels[j].n);
        sb_field(b, "sep", r[i].separator.p, r[i].separator.n);
        sb_field(b, "re", r[i].regex.p, r[i].regex.n);
        sb_printf(b, "mod:%llu;", (unsigned long long)r[i].modulus);
        sb_field(b, "tgt", r[i].target_label.p, r[i].target_label.n);
        sb_field(b, "rep", r[i].replacement.p, r[i].replacement.n);
        sb_field(b, "act", r[i].action.p, r[i].action.n);
        sb_putn(b, "}", 1);
    }
    sb_putn(b, "]", 1);
}

/* The resolved durations and limits: job value, else global, else the
 * Prometheus default. PS_EINVAL with a message when inconsistent. */
struct resolved {
    int64_t interval_ms, timeout_ms;
    uint64_t body_size_limit, sample_limit, target_limit, label_limit,
        label_name_length_limit, label_value_length_limit,
        keep_dropped_targets;
    const char *const *protocols;
    size_t n_protocols;
    int legacy;
};

#define PICK(c, g, f) ((c)->f ? (c)->f : (g) ? (g)->f : 0)

static int resolve(const struct ps_global_config *g,
                   const struct ps_scrape_config *c, struct resolved *r,
                   struct ps_err *e)
{
    int64_t gi = g && g->scrape_interval_ms ? g->scrape_interval_ms : 60000;
    int64_t gt = g && g->scrape_timeout_ms ? g->scrape_timeout_ms
                                           : (gi < 10000 ? gi : 10000);
    const char *scheme;

    if (c->job_name == NULL || c->job_name[0] == '\0')
        return ps_err_set(e, PS_EINVAL, "job_name is empty");
    if (gi < 0 || gt < 0 || c->scrape_interval_ms < 0 ||
        c->scrape_timeout_ms < 0)
        return ps_err_set(e, PS_EINVAL, "job '%s': negative duration",
                          c->job_name);
    /* config.go: the global timeout may not exceed the global interval;
     * a job without a timeout takes the global one capped at its own
     * interval; an explicit job timeout above its interval is an error. */
    if (gt > gi)
        return ps_err_set(e, PS_EINVAL,
                          "global scrape timeout greater than scrape "
                          "interval");
    r->interval_ms = c->scrape_interval_ms ? c->scrape_interval_ms : gi;
    if (c->scrape_timeout_ms)
        r->timeout_ms = c->scrape_timeout_ms;
    else
        r->timeout_ms = gt > r->interval_ms ? r->interval_ms : gt;
    if (r->timeout_ms > r->interval_ms)
        return ps_err_set(e, PS_EINVAL,
                          "scrape timeout greater than scrape interval for "
                          "scrape config with job name \"%s\"",
                          c->job_name);
    scheme = c->scheme ? c->scheme : "http";
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
        return ps_err_set(e, PS_EINVAL, "job '%s': invalid scheme \"%s\"",
                          c->job_name, scheme);
    /* Limits: a zero job value inherits the global one (0 = no limit). */
    r->body_size_limit = PICK(c, g, body_size_limit);
    r->sample_limit = PICK(c, g, sample_limit);
    r->target_limit = PICK(c, g, target_limit);
    r->label_limit = PICK(c, g, label_limit);
    r->label_name_length_limit = PICK(c, g, label_name_length_limit);
    r->label_value_length_limit = PICK(c, g, label_value_length_limit);
    r->keep_dropped_targets = PICK(c, g, keep_dropped_targets);
    r->protocols = c->scrape_protocols;
    r->n_protocols = c->n_scrape_protocols;
    if ((r->protocols == NULL || r->n_protocols == 0) && g != NULL) {
        r->protocols = g->scrape_protocols;
        r->n_protocols = g->n_scrape_protocols;
    }
    {
        const char *vs = c->metric_name_validation_scheme;
        if ((vs == NULL || vs[0] == '\0') && g != NULL)
            vs = g->metric_name_validation_scheme;
        if (vs == NULL || vs[0] == '\0' || strcmp(vs, "utf8") == 0)
            r->legacy = 0;
        else if (strcmp(vs, "legacy") == 0)
            r->legacy = 1;
        else
            return ps_err_set(e, PS_EINVAL,
                              "job '%s': unknown metric_name_validation_"
                              "scheme \"%s\"",
                              c->job_name, vs);
    }
    return PS_OK;
}

/*
 * The canonical text of every setting that a reload compares. With
 * for_cache, only what changes the series a scrape stores: Prometheus's
 * reusableCache/zeroConfig leave out the interval, the timeout,
 * sample_limit and the HTTP client config, so a reload that changes only
 * those keeps each target's scrape cache, and any other change (metric
 * relabeling, honor_labels, label limits...) starts a fresh one.
 */
static int fingerprint(const struct ps_scrape_config *c,
                       const struct resolved *r, int for_cache, char **out)
{
    const struct ps_http_client_config *h = &c->http_client;
    struct sbuf b = {NULL, 0, 0, 0};
    size_t i;

    sb_cstr(&b, "job", c->job_name);
    if (!for_cache)
        sb_printf(&b, "iv:%lld;to:%lld;", (long long)r->interval_ms,
                  (long long)r->timeout_ms);
    sb_cstr(&b, "path", c->metrics_path ? c->metrics_path : "/metrics");
    sb_cstr(&b, "scheme", c->scheme ? c->scheme : "http");
    sb_printf(&b, "params:%zu;", c->n_params);
    for (i = 0; i < c->n_params; i++) {
        sb_cstr(&b, "k", c->params[i].name);
        sb_cstr(&b, "v", c->params[i].value);
    }
    sb_printf(&b, "hl:%d;ht:%d;tts:%d;gz:%d;xm:%d;legacy:%d;",
              !!c->honor_labels, !!c->honor_timestamps,
              !!c->track_timestamps_staleness, !!c->enable_compression,
              !!c->extra_scrape_metrics, r->legacy);
    sb_printf(&b, "protos:%zu;", r->protocols ? r->n_protocols : 0);
    for (i = 0; r->protocols && i < r->n_protocols; i++)
        sb_cstr(&b, "p", r->protocols[i]);
    sb_cstr(&b, "fallback", c->fallback_scrape_protocol);
    sb_printf(&b,
              "lim:%llu,%llu,%llu,%llu,%llu,%llu,%llu;",
              (unsigned long long)r->body_size_limit,
              (unsigned long long)(for_cache ? 0 : r->sample_limit),
              (unsigned long long)r->target_limit,
              (unsigned long long)r->label_limit,
              (unsigned long long)r->label_name_length_limit,
              (unsigned long long)r->label_value_length_limit,
              (unsigned long long)r->keep_dropped_targets);
    sb_rules(&b, "relabel", c->relabel_configs, c->n_relabel_configs);
    sb_rules(&b, "mrelabel", c->metric_relabel_configs,
             c->n_metric_relabel_configs);
    sb_printf(&b, "rhooks:%zu;", c->n_relabel_hooks);
    for (i = 0; i < c->n_relabel_hooks; i++) {
        sb_printf(&b, "%zu", c->relabel_hooks[i].position);
        sb_cstr(&b, "=", c->relabel_hooks[i].id);
    }
    sb_printf(&b, "mhooks:%zu;", c->n_metric_relabel_hooks);
    for (i = 0; i < c->n_metric_relabel_hooks; i++) {
        sb_printf(&b, "%zu", c->metric_relabel_hooks[i].position);
        sb_cstr(&b, "=", c->metric_relabel_hooks[i].id);
    }
    sb_printf(&b, "off:%lld;align:%lld;", (long long)c->scrape_offset_ms,
              (long long)c->scrape_align_interval_ms);
    if (for_cache)
        goto done;
    sb_cstr(&b, "bau", h->basic_auth.username);
    sb_secret(&b, "bap", h->basic_auth.password);
    sb_cstr(&b, "bapf", h->basic_auth.password_file);
    sb_cstr(&b, "at", h->authorization.type);
    sb_secret(&b, "ac", h->authorization.credentials);
    sb_cstr(&b, "acf", h->authorization.credentials_file);
    sb_secret(&b, "bt", h->bearer_token);
    sb_cstr(&b, "btf", h->bearer_token_file);
    sb_cstr(&b, "ca", h->tls_config.ca_file);
    sb_cstr(&b, "cert", h->tls_config.cert_file);
    sb_cstr(&b, "key", h->tls_config.key_file);
    sb_cstr(&b, "sn", h->tls_config.server_name);
    sb_cstr(&b, "minv", h->tls_config.min_version);
    sb_printf(&b, "isv:%d;fr:%d;h2:%d;", !!h->tls_config.insecure_skip_verify,
              !!h->follow_redirects, !!h->enable_http2);
    sb_secret(&b, "proxy", h->proxy_url); /* may hold userinfo */
done:
    if (b.oom || b.p == NULL) {
        ps_free(b.p);
        return PS_ENOMEM;
    }
    *out = b.p;
    return PS_OK;
}

int ps_scrape_config_fingerprint(const struct ps_global_config *g,
                                 const struct ps_scrape_config *c,
                                 char **out, struct ps_err *e)
{
    struct resolved r;
    int rc = resolve(g, c, &r, e);

    if (rc != PS_OK)
        return rc;
    rc = fingerprint(c, &r, 0, out);
    return rc == PS_OK ? PS_OK : ps_err_set(e, rc, "fingerprint");
}

/* Copies s into the config's string store (stable, freed with the
 * config); NULL for NULL or on ENOMEM. */
static const char *sdup(struct ps_pool_config *pc, const char *s)
{
    return s ? ps_strstore_dup(&pc->strs, s, strlen(s)) : NULL;
}

/* Frees n stored groups; NULL-safe and tolerates half-built arrays. */
static void sgroups_free(struct sgroup *g, size_t n)
{
    size_t i, j;

    for (i = 0; g != NULL && i < n; i++) {
        ps_free(g[i].source);
        for (j = 0; j < g[i].n; j++)
            ps_labels_cleanup(&g[i].targets[j]);
        ps_free(g[i].targets);
        ps_labels_cleanup(&g[i].labels);
    }
    ps_free(g);
}

/* Deep copy of n groups; NULL sources become "<prefix><i>". */
static int sgroups_copy(struct sgroup **out, const struct ps_target_group *src,
                        size_t n, const char *prefix)
{
    struct sgroup *g;
    size_t i, j;

    *out = NULL;
    if (n == 0)
        return PS_OK;
    g = ps_calloc(n, sizeof(*g));
    if (g == NULL)
        return PS_ENOMEM;
    for (i = 0; i < n; i++) {
        char tmp[64];
        const char *s = src[i].source;
        ps_labels_init(&g[i].labels);
        if (s == NULL) {
            snprintf(tmp, sizeof(tmp), "%s%zu", prefix, i);
            s = tmp;
        }
        g[i].source = ps_strndup(s, strlen(s));
        if (g[i].source == NULL)
            goto fail;
        if (src[i].labels != NULL &&
            ps_labels_copy(&g[i].labels, src[i].labels) != PS_OK)
            goto fail;
        if (src[i].n_targets > 0) {
            g[i].targets = ps_calloc(src[i].n_targets, sizeof(*g[i].targets));
            if (g[i].targets == NULL)
                goto fail;
        }
        for (j = 0; j < src[i].n_targets; j++) {
            ps_labels_init(&g[i].targets[j]);
            g[i].n = j + 1;
            if (ps_labels_copy(&g[i].targets[j], &src[i].targets[j]) != PS_OK)
                goto fail;
        }
    }
    *out = g;
    return PS_OK;
fail:
    sgroups_free(g, n);
    return PS_ENOMEM;
}

/* Drops one reference; the last frees the rules, the scratch, the
 * strings and the static groups. NULL-safe. */
static void pc_unref(struct ps_pool_config *pc)
{
    int w;
    size_t i;

    if (pc == NULL || --pc->refs > 0)
        return;
    for (w = 0; w < 2; w++) {
        for (i = 0; i < pc->n_hooks[w]; i++)
            if (pc->hooks[w][i].ref != NULL)
                pc->hooks[w][i].ref(pc->hooks[w][i].ud, -1);
        ps_free(pc->hooks[w]);
        ps_free(pc->segs[w]);
    }
    ps_relabel_free(pc->relabel);
    ps_relabel_free(pc->metric_relabel);
    ps_relabel_scratch_free(pc->scratch);
    ps_free(pc->accept);
    ps_free(pc->fingerprint);
    ps_free(pc->cache_fp);
    ps_free(pc->params);
    sgroups_free(pc->statics, pc->n_statics);
    ps_strstore_cleanup(&pc->strs);
    ps_free(pc);
}

void ps_pool_config_free(struct ps_pool_config *pc)
{
    pc_unref(pc);
}

const char *ps_pool_config_job(const struct ps_pool_config *pc)
{
    return pc->job;
}

const char *ps_pool_config_fingerprint(const struct ps_pool_config *pc)
{
    return pc->fingerprint;
}

/* Compiles one rule list, naming the job and the list in errors. */
static int compile_rules(struct ps_relabel **out, const char *job,
                         const char *what, const struct ps_relabel_config *r,
                         size_t n, int legacy, struct ps_err *e)
{
    struct ps_err re;
    int rc;

    *out = NULL;
    if (n == 0)
        return PS_OK;
    ps_err_init(&re);
    rc = ps_relabel_compile(out, r, n, legacy ? PS_RELABEL_LEGACY_NAMES : 0,
                            &re);
    if (rc != PS_OK)
        return ps_err_set(e, rc, "job '%s': %s: %s", job, what, re.msg);
    return PS_OK;
}

/*
 * Copies the hooks of one rule list (taking a reference on each) and
 * builds its chain: table rules (compiled in rel) fill the positions the
 * hooks leave free. PS_EINVAL for positions out of order or range.
 */
static int build_chain(struct ps_pool_config *pc, int w,
                       const struct ps_relabel *rel, size_t n_rules,
                       const struct ps_relabel_hook *hooks, size_t n_hooks,
                       const char *what, struct ps_err *e)
{
    size_t total = n_rules + n_hooks, pos, k = 0, r = 0, ns = 0;

    if (n_hooks == 0)
        return PS_OK;
    pc->hooks[w] = ps_calloc(n_hooks, sizeof(*pc->hooks[w]));
    pc->segs[w] = ps_calloc(total, sizeof(*pc->segs[w]));
    if (pc->hooks[w] == NULL || pc->segs[w] == NULL)
        return ps_err_set(e, PS_ENOMEM, "job '%s': %s", pc->job, what);
    for (k = 0; k < n_hooks; k++) {
        struct ps_relabel_hook *h = &pc->hooks[w][k];
        if (hooks[k].fn == NULL || hooks[k].position >= total ||
            (k > 0 && hooks[k].position <= hooks[k - 1].position))
            return ps_err_set(e, PS_EINVAL, "job '%s': %s: bad function "
                              "rule position", pc->job, what);
        *h = hooks[k];
        h->id = sdup(pc, hooks[k].id ? hooks[k].id : "");
        if (h->id == NULL)
            return ps_err_set(e, PS_ENOMEM, "job '%s': %s", pc->job, what);
        if (h->ref != NULL)
            h->ref(h->ud, +1);
        pc->n_hooks[w] = k + 1; /* released by pc_unref from now on */
    }
    for (pos = 0, k = 0; pos < total; pos++) {
        if (k < n_hooks && pc->hooks[w][k].position == pos) {
            pc->segs[w][ns++].hook = &pc->hooks[w][k++];
        } else if (ns > 0 && pc->segs[w][ns - 1].hook == NULL) {
            pc->segs[w][ns - 1].count++, r++; /* extends the range */
        } else {
            pc->segs[w][ns].first = r++;
            pc->segs[w][ns++].count = 1;
        }
    }
    pc->chain[w].what = what;
    pc->chain[w].rel = rel;
    pc->chain[w].segs = pc->segs[w];
    pc->chain[w].n_segs = ns;
    pc->has_chain[w] = 1;
    return PS_OK;
}

/* Maps a fallback_scrape_protocol name to a parser format. */
static int fallback_of(const char *job, const char *s, int *out,
                       struct ps_err *e)
{
    if (s == NULL || s[0] == '\0')
        *out = -1;
    else if (strcmp(s, "PrometheusText0.0.4") == 0 ||
             strcmp(s, "PrometheusText1.0.0") == 0)
        *out = PS_FORMAT_TEXT;
    else if (strcmp(s, "OpenMetricsText0.0.1") == 0 ||
             strcmp(s, "OpenMetricsText1.0.0") == 0)
        *out = PS_FORMAT_OPENMETRICS;
    else if (strcmp(s, "PrometheusProto") == 0)
        return ps_err_set(e, PS_ENOTSUP,
                          "job '%s': fallback_scrape_protocol "
                          "PrometheusProto is not supported",
                          job);
    else
        return ps_err_set(e, PS_EINVAL,
                          "job '%s': unknown fallback_scrape_protocol "
                          "\"%s\"",
                          job, s);
    return PS_OK;
}

/* The HTTP options of the loop config, with credentials resolved. */
static int http_opts(struct ps_pool_config *pc,
                     const struct ps_scrape_config *c, struct ps_err *e)
{
    const struct ps_http_client_config *h = &c->http_client;
    struct ps_http_req_opts *o = &pc->lc.http;
    const char *job = pc->job;
    int n_auth = 0, rc = PS_OK;

    /* HTTPClientConfig.Validate: one authentication method at most, and
     * never a secret together with its _file twin. */
    n_auth += h->basic_auth.username || h->basic_auth.password ||
              h->basic_auth.password_file;
    n_auth += h->authorization.credentials ||
              h->authorization.credentials_file;
    n_auth += h->bearer_token || h->bearer_token_file;
    if (n_auth > 1)
        return ps_err_set(e, PS_EINVAL,
                          "job '%s': at most one of basic_auth, "
                          "authorization and bearer_token may be configured",
                          job);
    if ((h->basic_auth.password && h->basic_auth.password_file) ||
        (h->authorization.credentials && h->authorization.credentials_file) ||
        (h->bearer_token && h->bearer_token_file))
        return ps_err_set(e, PS_EINVAL,
                          "job '%s': a secret and its _file are both set",
                          job);
    memset(o, 0, sizeof(*o));
    if (h->basic_auth.username || h->basic_auth.password ||
        h->basic_auth.password_file) {
        o->basic_auth_user = sdup(pc, h->basic_auth.username
                                          ? h->basic_auth.username
                                          : "");
        /* a _file secret is read by ps_http at each scrape when the
         * file changed, as Prometheus reads it per request */
        if (h->basic_auth.password_file)
            o->basic_auth_password_file =
                sdup(pc, h->basic_auth.password_file);
        else
            o->basic_auth_password = sdup(pc, h->basic_auth.password
                                                  ? h->basic_auth.password
                                                  : "");
    } else if (h->authorization.credentials ||
               h->authorization.credentials_file) {
        o->auth_type = sdup(pc, h->authorization.type);
        o->auth_credentials = sdup(pc, h->authorization.credentials);
        o->auth_credentials_file =
            sdup(pc, h->authorization.credentials_file);
    } else if (h->bearer_token || h->bearer_token_file) {
        /* bearer_token is authorization with type Bearer (ps_http's
         * default type) */
        o->auth_credentials = sdup(pc, h->bearer_token);
        o->auth_credentials_file = sdup(pc, h->bearer_token_file);
    }
    if (rc != PS_OK)
        return rc;
    /* TLS and transport: copied as given; ps_http validates them when a
     * loop creates its request (an error then names the option). */
    o->tls.ca_file = sdup(pc, h->tls_config.ca_file);
    o->tls.cert_file = sdup(pc, h->tls_config.cert_file);
    o->tls.key_file = sdup(pc, h->tls_config.key_file);
    o->tls.server_name = sdup(pc, h->tls_config.server_name);
    o->tls.insecure_skip_verify = h->tls_config.insecure_skip_verify;
    o->tls.min_version = sdup(pc, h->tls_config.min_version);
    o->proxy_url = sdup(pc, h->proxy_url);
    o->disable_follow_redirects = !h->follow_redirects;
    o->disable_http2 = !h->enable_http2;
    o->disable_compression = !c->enable_compression;
    /* sdup failures: any requested string that came back NULL */
    if ((h->tls_config.ca_file && !o->tls.ca_file) ||
        (h->tls_config.cert_file && !o->tls.cert_file) ||
        (h->tls_config.key_file && !o->tls.key_file) ||
        (h->tls_config.server_name && !o->tls.server_name) ||
        (h->tls_config.min_version && !o->tls.min_version) ||
        (h->proxy_url && !o->proxy_url) ||
        (o->basic_auth_user == NULL && o->basic_auth_password != NULL) ||
        (h->basic_auth.password_file && !o->basic_auth_password_file) ||
        (h->authorization.credentials_file && !o->auth_credentials_file) ||
        (h->bearer_token_file && !o->auth_credentials_file) ||
        (h->authorization.type && !o->auth_type))
        return ps_err_set(e, PS_ENOMEM, "job '%s'", job);
    return PS_OK;
}

int ps_pool_config_new(struct ps_pool_config **out,
                       const struct ps_global_config *g,
                       const struct ps_scrape_config *c, struct ps_err *e)
{
    struct ps_pool_config *pc;
    struct resolved r;
    size_t i;
    int rc = resolve(g, c, &r, e);

    if (rc != PS_OK)
        return rc;
    pc = ps_calloc(1, sizeof(*pc));
    if (pc == NULL)
        return ps_err_set(e, PS_ENOMEM, "job '%s'", c->job_name);
    pc->refs = 1;
    ps_strstore_init(&pc->strs);
    pc->job = (char *)sdup(pc, c->job_name);
    if (pc->job == NULL) {
        rc = ps_err_set(e, PS_ENOMEM, "job '%s'", c->job_name);
        goto fail;
    }
    rc = fingerprint(c, &r, 0, &pc->fingerprint);
    if (rc == PS_OK)
        rc = fingerprint(c, &r, 1, &pc->cache_fp);
    if (rc != PS_OK) {
        ps_err_set(e, rc, "job '%s'", pc->job);
        goto fail;
    }
    pc->interval_ms = r.interval_ms;
    pc->timeout_ms = r.timeout_ms;
    if (c->n_params > 0) {
        pc->params = ps_calloc(c->n_params, sizeof(*pc->params));
        if (pc->params == NULL) {
            rc = ps_err_set(e, PS_ENOMEM, "job '%s'", pc->job);
            goto fail;
        }
        for (i = 0; i < c->n_params; i++) {
            pc->params[i].name = sdup(pc, c->params[i].name);
            pc->params[i].value = sdup(pc, c->params[i].value
                                               ? c->params[i].value
                                               : "");
            if (!pc->params[i].name || !pc->params[i].value) {
                rc = ps_err_set(e, c->params[i].name ? PS_ENOMEM : PS_EINVAL,
                                "job '%s': params", pc->job);
                goto fail;
            }
        }
        pc->n_params = c->n_params;
    }
    pc->defaults.job = pc->job;
    pc->defaults.scheme = sdup(pc, c->scheme ? c->scheme : "http");
    pc->defaults.metrics_path = sdup(pc, c->metrics_path ? c->metrics_path
                                                         : "/metrics");
    pc->defaults.params = pc->params;
    pc->defaults.n_params = pc->n_params;
    pc->defaults.interval_ms = r.interval_ms;
    pc->defaults.timeout_ms = r.timeout_ms;
    if (!pc->defaults.scheme || !pc->defaults.metrics_path) {
        rc = ps_err_set(e, PS_ENOMEM, "job '%s'", pc->job);
        goto fail;
    }
    rc = compile_rules(&pc->relabel, pc->job, "relabel_configs",
                       c->relabel_configs, c->n_relabel_configs, r.legacy, e);
    if (rc == PS_OK)
        rc = compile_rules(&pc->metric_relabel, pc->job,
                           "metric_relabel_configs",
                           c->metric_relabel_configs,
                           c->n_metric_relabel_configs, r.legacy, e);
    if (rc == PS_OK)
        rc = build_chain(pc, 0, pc->relabel, c->n_relabel_configs,
                         c->relabel_hooks, c->n_relabel_hooks,
                         "relabel_configs", e);
    if (rc == PS_OK)
        rc = build_chain(pc, 1, pc->metric_relabel,
                         c->n_metric_relabel_configs, c->metric_relabel_hooks,
                         c->n_metric_relabel_hooks, "metric_relabel_configs",
                         e);
    if (rc != PS_OK)
        goto fail;
    rc = ps_relabel_scratch_new(&pc->scratch);
    if (rc != PS_OK) {
        ps_err_set(e, rc, "job '%s'", pc->job);
        goto fail;
    }
    {
        struct ps_err ae;
        ps_err_init(&ae);
        rc = ps_accept_header(r.protocols, r.n_protocols, r.legacy,
                              &pc->accept, &ae);
        if (rc != PS_OK) {
            ps_err_set(e, rc, "job '%s': %s", pc->job, ae.msg);
            goto fail;
        }
    }
    rc = fallback_of(pc->job, c->fallback_scrape_protocol,
                     &pc->lc.fallback_format, e);
    if (rc != PS_OK)
        goto fail;
    rc = http_opts(pc, c, e);
    if (rc != PS_OK)
        goto fail;
    pc->target_limit = r.target_limit;
    pc->keep_dropped_targets = r.keep_dropped_targets;
    pc->lc.job = pc->job;
    pc->lc.honor_labels = !!c->honor_labels;
    pc->lc.honor_timestamps = !!c->honor_timestamps;
    pc->lc.track_timestamps_staleness = !!c->track_timestamps_staleness;
    pc->lc.extra_scrape_metrics = !!c->extra_scrape_metrics;
    pc->lc.legacy_names = r.legacy;
    pc->lc.sample_limit = r.sample_limit;
    pc->lc.label_limit = r.label_limit;
    pc->lc.label_name_length_limit = r.label_name_length_limit;
    pc->lc.label_value_length_limit = r.label_value_length_limit;
    pc->lc.body_size_limit = r.body_size_limit;
    pc->lc.accept = pc->accept;
    pc->lc.metric_relabel = pc->metric_relabel;
    if (pc->has_chain[1]) {
        pc->lc.metric_relabel = NULL;
        pc->lc.metric_chain = &pc->chain[1];
    }
    pc->lc.scratch = pc->scratch;
    pc->lc.scrape_offset_ms = c->scrape_offset_ms;
    pc->lc.scrape_align_interval_ms = c->scrape_align_interval_ms;
    rc = sgroups_copy(&pc->statics, c->static_configs, c->n_static_configs,
                      "static/");
    if (rc != PS_OK) {
        ps_err_set(e, rc, "job '%s': static_configs", pc->job);
        goto fail;
    }
    pc->n_statics = c->n_static_configs;
    *out = pc;
    return PS_OK;
fail:
    pc_unref(pc);
    return rc;
}

/* ---- targets ----------------------------------------------------------- */

/* Cleans up and frees an array of targets; NULL-safe. */
static void targets_free(struct ps_target *t, size_t n)
{
    size_t i;

    for (i = 0; t != NULL && i < n; i++)
        ps_target_cleanup(&t[i]);
    ps_free(t);
}

static int cmp_target_hash(const void *a, const void *b)
{
    const struct ps_target *x = a, *y = b;

    return x->hash < y->hash ? -1 : x->hash > y->hash;
}

/* Finds the active entry with hash h in p->active (sorted): index or -1. */
static long find_active(const struct ps_pool *p, uint64_t h)
{
    size_t lo = 0, hi = p->n_active;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->active[mid].hash < h)
            lo = mid + 1;
        else if (p->active[mid].hash > h)
            hi = mid;
        else
            return (long)mid;
    }
    return -1;
}

/* A retiring loop finished its end-of-run staleness: forget and free it
 * (called from the loop's own timer, as its last action). */
static void on_retired(struct ps_loop *l, void *ud)
{
    struct ps_pool *p = ud;
    size_t i;

    for (i = 0; i < p->n_retiring; i++) {
        if (p->retiring[i].loop == l) {
            struct ps_pool_config *pc = p->retiring[i].cfg;
            p->retiring[i] = p->retiring[--p->n_retiring];
            ps_loop_free(l);
            pc_unref(pc);
            return;
        }
    }
}

/* Stops a loop whose target went away: end-of-run staleness, then freed
 * by on_retired; at once if it has nothing to write (or no memory to
 * remember it). */
static void retire(struct ps_pool *p, struct active *a)
{
    ps_loop_stop(a->loop, 1);
    if (!ps_loop_done(a->loop) && p->n_retiring == p->cap_retiring) {
        size_t cap = p->cap_retiring ? p->cap_retiring * 2 : 8;
        struct active *nr = ps_realloc(p->retiring, cap * sizeof(*nr));
        if (nr != NULL) {
            p->retiring = nr;
            p->cap_retiring = cap;
        }
    }
    if (ps_loop_done(a->loop) || p->n_retiring == p->cap_retiring) {
        ps_loop_free(a->loop);
        pc_unref(a->cfg);
        return;
    }
    ps_loop_on_done(a->loop, on_retired, p);
    p->retiring[p->n_retiring++] = *a;
}

/* Populates every target of the static and synced groups. */
/*
 * ps_target_populate with a rule chain that has hooks (ps_target takes one
 * compiled rule list): populate without rules to get the discovered set,
 * apply the chain, then populate the result without rules (validation,
 * __meta_* removal, instance) and put the discovered set back. A hook's
 * error drops the target with the error as its reason, so one bad
 * function does not stop the sync. Unlike Prometheus, a default label
 * (job, __scheme__, __metrics_path__, intervals) that the rules delete is
 * filled in again by the second pass.
 */
static int populate_hooked(const struct ps_pool_config *pc,
                           struct ps_target *t, const struct ps_labels *tl,
                           const struct ps_labels *gl, struct ps_err *e)
{
    struct ps_target first;
    struct ps_labels res, tmp, x;
    struct ps_err he;
    int rc, dropped = 0;

    ps_target_init(&first);
    ps_labels_init(&res);
    ps_labels_init(&tmp);
    ps_err_init(&he);
    rc = ps_target_populate(&first, tl, gl, &pc->defaults, NULL, NULL, e);
    if (rc != PS_OK)
        goto done;
    rc = ps_relabel_chain_apply(&pc->chain[0], pc->scratch, &first.discovered,
                                &res, &tmp, &dropped, &he);
    if (rc == PS_ENOMEM || rc == PS_ELIMIT) {
        ps_err_set(e, rc, "job '%s': %s", pc->job, he.msg);
        goto done;
    }
    ps_target_cleanup(t);
    if (rc == PS_OK && !dropped) {
        rc = ps_target_populate(t, &res, NULL, &pc->defaults, NULL, NULL, e);
        if (rc != PS_OK)
            goto done;
    } else { /* dropped by a rule (reason ""), or a hook failed */
        t->state = PS_TARGET_DROPPED;
        t->reason = ps_strndup(rc == PS_OK ? "" : he.msg,
                               rc == PS_OK ? 0 : strlen(he.msg));
        if (t->reason == NULL) {
            rc = ps_err_set(e, PS_ENOMEM, "job '%s'", pc->job);
            goto done;
        }
        rc = PS_OK;
    }
    x = t->discovered; /* the set before relabeling, as Prometheus shows */
    t->discovered = first.discovered;
    first.discovered = x;
done:
    ps_target_cleanup(&first);
    ps_labels_cleanup(&res);
    ps_labels_cleanup(&tmp);
    return rc;
}

static int populate_all(struct ps_pool *p, struct ps_target **out,
                        size_t *nout, struct ps_err *e)
{
    const struct ps_pool_config *pc = p->cfg;
    size_t total = 0, i, j, k = 0;
    struct ps_target *t;
    int pass;

    for (i = 0; i < pc->n_statics; i++)
        total += pc->statics[i].n;
    for (i = 0; i < p->n_groups; i++)
        total += p->groups[i].n;
    *out = NULL;
    *nout = 0;
    if (total == 0)
        return PS_OK;
    t = ps_calloc(total, sizeof(*t));
    if (t == NULL)
        return ps_err_set(e, PS_ENOMEM, "job '%s': sync", pc->job);
    /* Static groups first, then discovered ones, as if one provider list.
     * A population error (ENOMEM, regex limit) abandons the whole sync. */
    for (pass = 0; pass < 2; pass++) {
        const struct sgroup *g = pass == 0 ? pc->statics : p->groups;
        size_t ng = pass == 0 ? pc->n_statics : p->n_groups;
        for (i = 0; i < ng; i++) {
            for (j = 0; j < g[i].n; j++) {
                int rc;
                ps_target_init(&t[k]);
                if (pc->has_chain[0])
                    rc = populate_hooked(pc, &t[k], &g[i].targets[j],
                                         &g[i].labels, e);
                else
                    rc = ps_target_populate(&t[k], &g[i].targets[j],
                                            &g[i].labels, &pc->defaults,
                                            pc->relabel, pc->scratch, e);
                k++;
                if (rc != PS_OK) {
                    targets_free(t, k);
                    return rc;
                }
            }
        }
    }
    *out = t;
    *nout = k;
    return PS_OK;
}

/*
 * The body of sync and reload: populate, dedup by hash, keep / restart /
 * start / retire loops, refresh the target limit and dropped targets.
 */
static int sync_targets(struct ps_pool *p, int restart, struct ps_err *e)
{
    struct ps_pool_config *pc = p->cfg;
    struct ps_target *t = NULL;
    struct active *na = NULL;
    size_t n = 0, i, nn = 0, nd = 0, ndt = 0;
    struct ps_target *dropped = NULL;
    int rc, first_err = PS_OK, seen = 0;
    uint64_t last_hash = 0;
    char limit_msg[160];

    /* Allocation failures before this point leave the pool untouched. */
    rc = populate_all(p, &t, &n, e);
    if (rc != PS_OK)
        return rc;
    if (n > 0) {
        na = ps_calloc(n, sizeof(*na));
        dropped = ps_calloc(n, sizeof(*dropped));
        if (na == NULL || dropped == NULL) {
            ps_free(na);
            ps_free(dropped);
            targets_free(t, n);
            return ps_err_set(e, PS_ENOMEM, "job '%s': sync", pc->job);
        }
    }
    /* Active ones sorted by hash first, so duplicates are adjacent. */
    for (i = 0; i < n; i++)
        ps_target_init(&dropped[i]);
    if (n > 1)
        qsort(t, n, sizeof(*t), cmp_target_hash);
    for (i = 0; i < n; i++) {
        if (t[i].state == PS_TARGET_DROPPED) {
            ndt++;
            if (pc->keep_dropped_targets == 0 ||
                nd < pc->keep_dropped_targets)
                dropped[nd++] = t[i]; /* moved */
            else
                ps_target_cleanup(&t[i]);
            ps_target_init(&t[i]);
            continue;
        }
        if (seen && last_hash == t[i].hash)
            continue; /* a duplicate target: one loop */
        seen = 1;
        last_hash = t[i].hash;
        {
            long k = find_active(p, t[i].hash);
            struct active a = {t[i].hash, NULL, NULL};
            if (k >= 0 && p->active[k].loop == NULL)
                k = -1; /* cannot happen: hashes are processed once */
            /* Kept: same hash = same labels and URL, so the loop goes on
             * untouched (Prometheus keeps it and only refreshes the
             * discovered labels shown in the UI). */
            if (k >= 0 && !restart) {
                a = p->active[k];
                p->active[k].loop = NULL; /* taken */
                ps_loop_update_discovered(a.loop, &t[i].discovered);
            } else {
                struct ps_cache *cache = NULL;
                if (k >= 0) {
                    /* reload: same target, new settings; the cache is
                     * kept only if its entries still hold (fingerprint) */
                    struct active *old = &p->active[k];
                    ps_loop_stop(old->loop, 0);
                    if (strcmp(old->cfg->cache_fp, pc->cache_fp) == 0)
                        cache = ps_loop_take_cache(old->loop);
                    ps_loop_free(old->loop);
                    pc_unref(old->cfg);
                    old->loop = NULL;
                }
                rc = ps_loop_new(&a.loop, p->eng, p->app, &pc->lc, &t[i],
                                 p->seed, cache, e);
                if (rc == PS_OK && (rc = ps_loop_start(a.loop)) != PS_OK) {
                    ps_loop_free(a.loop);
                    ps_err_set(e, rc, "job '%s': starting a loop", pc->job);
                }
                if (rc != PS_OK) {
                    if (first_err == PS_OK)
                        first_err = rc;
                    continue;
                }
                a.cfg = pc;
                pc->refs++;
            }
            na[nn++] = a;
        }
    }
    /* Targets that went away: end-of-run staleness. */
    for (i = 0; i < p->n_active; i++)
        if (p->active[i].loop != NULL)
            retire(p, &p->active[i]);
    ps_free(p->active);
    p->active = na;
    p->n_active = nn;
    targets_free(t, n);
    targets_free(p->dropped, p->n_dropped);
    p->dropped = dropped;
    p->n_dropped = nd;
    p->n_dropped_total = ndt;
    /* target_limit: every loop fails while the pool is over it. */
    limit_msg[0] = '\0';
    if (pc->target_limit > 0 && nn > pc->target_limit)
        snprintf(limit_msg, sizeof(limit_msg),
                 "target_limit exceeded (number of targets: %zu, limit: "
                 "%llu)",
                 nn, (unsigned long long)pc->target_limit);
    for (i = 0; i < nn; i++)
        if (ps_loop_set_forced_error(na[i].loop,
                                     limit_msg[0] ? limit_msg : NULL) !=
                PS_OK &&
            first_err == PS_OK)
            first_err = ps_err_set(e, PS_ENOMEM, "job '%s'", pc->job);
    return first_err;
}

/* ---- pool -------------------------------------------------------------- */

/* Takes pc in every case. The initial sync only has static groups. */
int ps_pool_new_prepared(struct ps_pool **out, struct ps_engine *eng,
                         struct ps_appender *app, struct ps_pool_config *pc,
                         uint64_t offset_seed, struct ps_err *e)
{
    struct ps_pool *p = ps_calloc(1, sizeof(*p));
    int rc;

    if (p == NULL) {
        rc = ps_err_set(e, PS_ENOMEM, "job '%s'", pc->job);
        pc_unref(pc);
        return rc;
    }
    p->eng = eng;
    p->app = app;
    p->seed = offset_seed;
    p->cfg = pc;
    rc = sync_targets(p, 0, e);
    if (rc != PS_OK) {
        ps_pool_free(p);
        return rc;
    }
    *out = p;
    return PS_OK;
}

int ps_pool_new(struct ps_pool **out, struct ps_engine *eng,
                struct ps_appender *app, const struct ps_global_config *g,
                const struct ps_scrape_config *c, uint64_t offset_seed,
                struct ps_err *e)
{
    struct ps_pool_config *pc;
    int rc = ps_pool_config_new(&pc, g, c, e);

    if (rc != PS_OK)
        return rc;
    return ps_pool_new_prepared(out, eng, app, pc, offset_seed, e);
}

/* Shutdown semantics: loops (active and retiring) are freed at once, so
 * no staleness marker is written, as when Prometheus cancels a pool. */
void ps_pool_free(struct ps_pool *p)
{
    size_t i;

    if (p == NULL)
        return;
    for (i = 0; i < p->n_active; i++) {
        ps_loop_free(p->active[i].loop);
        pc_unref(p->active[i].cfg);
    }
    for (i = 0; i < p->n_retiring; i++) {
        ps_loop_free(p->retiring[i].loop);
        pc_unref(p->retiring[i].cfg);
    }
    ps_free(p->active);
    ps_free(p->retiring);
    targets_free(p->dropped, p->n_dropped);
    sgroups_free(p->groups, p->n_groups);
    pc_unref(p->cfg);
    ps_free(p);
}

/* Copies the groups first so that a failed copy leaves the pool as it
 * was; then populates and diffs (sync_targets). */
int ps_pool_sync(struct ps_pool *p, const struct ps_target_group *groups,
                 size_t n, struct ps_err *e)
{
    struct sgroup *g;
    int rc = sgroups_copy(&g, groups, n, "");

    if (rc != PS_OK)
        return ps_err_set(e, rc, "job '%s': sync", p->cfg->job);
    sgroups_free(p->groups, p->n_groups);
    p->groups = g;
    p->n_groups = n;
    return sync_targets(p, 0, e);
}

/* Takes pc in every case; the old config lives on in the loops that
 * still reference it until they go. */
int ps_pool_reload_prepared(struct ps_pool *p, struct ps_pool_config *pc,
                            int *restarted, struct ps_err *e)
{
    int same = strcmp(pc->fingerprint, p->cfg->fingerprint) == 0;
    struct ps_pool_config *old = p->cfg;

    if (restarted != NULL)
        *restarted = !same;
    /* Same settings: only the static groups may differ, and kept targets
     * keep their loops untouched (those keep their reference to the old,
     * equal config). Changed: every kept target's loop is restarted. */
    p->cfg = pc;
    pc_unref(old);
    return sync_targets(p, !same, e);
}

int ps_pool_reload(struct ps_pool *p, const struct ps_global_config *g,
                   const struct ps_scrape_config *c, int *restarted,
                   struct ps_err *e)
{
    struct ps_pool_config *pc;
    int rc = ps_pool_config_new(&pc, g, c, e);

    if (rc != PS_OK)
        return rc;
    return ps_pool_reload_prepared(p, pc, restarted, e);
}

const char *ps_pool_job(const struct ps_pool *p)
{
    return p->cfg->job;
}

const char *ps_pool_fingerprint(const struct ps_pool *p)
{
    return p->cfg->fingerprint;
}

/* Accessors: borrowed views, valid until the next sync/reload/free or
 * engine step. */
size_t ps_pool_ntargets(const struct ps_pool *p)
{
    return p->n_active;
}

int ps_pool_target(const struct ps_pool *p, size_t i,
                   struct ps_target_status *st)
{
    if (i >= p->n_active)
        return PS_EINVAL;
    ps_loop_status(p->active[i].loop, st);
    return PS_OK;
}

struct ps_loop *ps_pool_loop(const struct ps_pool *p, size_t i)
{
    return i < p->n_active ? p->active[i].loop : NULL;
}

size_t ps_pool_ndropped(const struct ps_pool *p)
{
    return p->n_dropped;
}

size_t ps_pool_ndropped_total(const struct ps_pool *p)
{
    return p->n_dropped_total;
}

int ps_pool_dropped(const struct ps_pool *p, size_t i,
                    struct ps_dropped_target *d)
{
    if (i >= p->n_dropped)
        return PS_EINVAL;
    d->discovered = &p->dropped[i].discovered;
    d->reason = p->dropped[i].reason ? p->dropped[i].reason : "";
    return PS_OK;
}

size_t ps_pool_nretiring(const struct ps_pool *p)
{
    return p->n_retiring;
}
