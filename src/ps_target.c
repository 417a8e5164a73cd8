/*
 * ps_target.c: target label population, URL, hash and offset, following
 * Prometheus's scrape/target.go (PopulateDiscoveredLabels, PopulateLabels,
 * Target.URL, Target.hash, Target.offset). See ps_target.h.
 */
#include "ps_target.h"

#include "ps_hmap.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define L(s) s, sizeof(s) - 1

/* ---- durations --------------------------------------------------------- */

static const struct {
    const char *unit;
    int64_t ms;
} units[] = {
    {"y", 365LL * 24 * 3600 * 1000}, {"w", 7LL * 24 * 3600 * 1000},
    {"d", 24LL * 3600 * 1000},       {"h", 3600LL * 1000},
    {"m", 60LL * 1000},              {"s", 1000},
    {"ms", 1},
};
#define NUNITS (sizeof(units) / sizeof(units[0]))

/* model.ParseDuration without a regex: digits then a unit, units in
 * decreasing order, each once. Overflow is PS_EINVAL. *ms on success. */
int ps_duration_parse(const char *s, size_t n, int64_t *ms)
{
    size_t i = 0, next_unit = 0;
    int64_t total = 0;

    if (n == 1 && s[0] == '0') { /* Prometheus allows a bare "0" */
        *ms = 0;
        return PS_OK;
    }
    if (n == 0)
        return PS_EINVAL;
    while (i < n) {
        int64_t v = 0;
        size_t start = i, u, ulen;

        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return PS_EINVAL;
            v = v * 10 + (s[i] - '0');
            i++;
        }
        if (i == start)
            return PS_EINVAL;
        /* Units must come largest first, each once: the regex of
         * model.ParseDuration. "ms" is tried before "m". */
        ulen = 0;
        for (u = next_unit; u < NUNITS; u++) {
            size_t l = strlen(units[u].unit);
            if (n - i >= l && memcmp(s + i, units[u].unit, l) == 0 &&
                !(l == 1 && units[u].unit[0] == 'm' && n - i >= 2 &&
                  s[i + 1] == 's')) {
                ulen = l;
                break;
            }
        }
        if (ulen == 0)
            return PS_EINVAL;
        if (v > 0 && units[u].ms > INT64_MAX / v)
            return PS_EINVAL;
        if (total > INT64_MAX - v * units[u].ms)
            return PS_EINVAL;
        total += v * units[u].ms;
        next_unit = u + 1;
        i += ulen;
    }
    *ms = total;
    return PS_OK;
}

/* model.Duration.String: used for __scrape_interval__/__scrape_timeout__
 * defaults, so a relabel rule sees the same text as in Prometheus. */
void ps_duration_format(int64_t ms, char *buf, size_t size)
{
    size_t u, off = 0;

    if (size == 0)
        return;
    buf[0] = '\0';
    if (ms <= 0) {
        snprintf(buf, size, "0s");
        return;
    }
    for (u = 0; u < NUNITS; u++) {
        int64_t v;
        /* Years and weeks only when exact, as model.Duration.String. */
        if (u < 2 && ms % units[u].ms != 0)
            continue;
        v = ms / units[u].ms;
        if (v > 0 && off < size) {
            int w = snprintf(buf + off, size - off, "%lld%s", (long long)v,
                             units[u].unit);
            if (w < 0)
                return;
            off += (size_t)w;
            ms -= v * units[u].ms;
        }
    }
}

/* ---- target ------------------------------------------------------------ */

/* Empty target; allocates nothing. */
void ps_target_init(struct ps_target *t)
{
    memset(t, 0, sizeof(*t));
    ps_labels_init(&t->discovered);
    ps_labels_init(&t->labels);
    ps_labels_init(&t->pub);
}

/* Frees everything the target owns and re-inits it (idempotent). */
void ps_target_cleanup(struct ps_target *t)
{
    ps_free(t->reason);
    ps_free(t->url);
    ps_labels_cleanup(&t->discovered);
    ps_labels_cleanup(&t->labels);
    ps_labels_cleanup(&t->pub);
    ps_target_init(t);
}

/* 1 if s[0..n) starts with p[0..pn). */
static int has_prefix(const char *s, size_t n, const char *p, size_t pn)
{
    return n >= pn && memcmp(s, p, pn) == 0;
}

/* Fills t->pub with views of the labels that samples carry (no "__").
 * PS_OK or PS_ENOMEM. */
static int build_pub(struct ps_target *t)
{
    size_t i;

    ps_labels_clear(&t->pub);
    for (i = 0; i < t->labels.n; i++) {
        const struct ps_label *l = &t->labels.v[i];
        if (has_prefix(l->name, l->name_len, L("__")))
            continue;
        if (ps_labels_add(&t->pub, l->name, l->name_len, l->value,
                          l->value_len, 0) != PS_OK)
            return PS_ENOMEM;
    }
    return PS_OK;
}

/* Sets name=value in the working set `ls` unless present with a non-empty
 * value (lb.Get(name) == "" in Prometheus). Value copied. */
static int set_default(struct ps_labels *ls, const char *name, size_t nl,
                       const char *value, size_t vl)
{
    size_t i;

    for (i = 0; i < ls->n; i++)
        if (ls->v[i].name_len == nl && memcmp(ls->v[i].name, name, nl) == 0)
            break;
    if (i < ls->n && ls->v[i].value_len > 0)
        return PS_OK;
    if (vl == 0)
        return PS_OK; /* setting "" deletes, and it is already absent */
    if (i < ls->n) {
        /* present with an empty value: replace in place */
        char *v = ps_strstore_dup(&ls->store, value, vl);
        if (v == NULL)
            return PS_ENOMEM;
        ls->v[i].value = v;
        ls->v[i].value_len = vl;
        return PS_OK;
    }
    return ps_labels_add(ls, name, nl, value, vl, PS_LABELS_COPY);
}

/* 1 if ls (may be NULL, any order) has a label called name, whatever
 * its value. */
static int find_in(const struct ps_labels *ls, const char *name, size_t nl)
{
    size_t i;

    if (ls == NULL)
        return 0;
    for (i = 0; i < ls->n; i++)
        if (ls->v[i].name_len == nl && memcmp(ls->v[i].name, name, nl) == 0)
            return 1;
    return 0;
}

/* Drops labels with empty values (Prometheus treats them as absent) and
 * sorts. The set keeps owning its strings. */
static int finish_set(struct ps_labels *ls)
{
    size_t i, j = 0;

    for (i = 0; i < ls->n; i++)
        if (ls->v[i].value_len > 0)
            ls->v[j++] = ls->v[i];
    ls->n = j;
    return ps_labels_sort(ls);
}

/* PopulateDiscoveredLabels: target labels, group labels the target lacks,
 * then the scrape defaults and __param_*. Result sorted in *out. */
static int discovered_labels(struct ps_labels *out,
                             const struct ps_labels *tl,
                             const struct ps_labels *gl,
                             const struct ps_target_defaults *d)
{
    char ibuf[64], tbuf[64];
    size_t i;
    int rc = PS_OK;
    const char *scheme = d->scheme ? d->scheme : "http";
    const char *path = d->metrics_path ? d->metrics_path : "/metrics";

    /* Target labels, then group labels the target does not have (even an
     * empty target value blocks the group's: Prometheus checks presence
     * in the map), then the scrape defaults where unset or empty. */
    ps_labels_clear(out);
    for (i = 0; tl != NULL && i < tl->n && rc == PS_OK; i++) {
        const struct ps_label *l = &tl->v[i];
        /* A repeated name in the input: the last one wins, like a map. */
        if (find_in(out, l->name, l->name_len)) {
            size_t k;
            for (k = 0; k < out->n; k++)
                if (out->v[k].name_len == l->name_len &&
                    memcmp(out->v[k].name, l->name, l->name_len) == 0) {
                    char *v = ps_strstore_dup(&out->store, l->value,
                                              l->value_len);
                    if (v == NULL)
                        return PS_ENOMEM;
                    out->v[k].value = v;
                    out->v[k].value_len = l->value_len;
                }
            continue;
        }
        rc = ps_labels_add(out, l->name, l->name_len, l->value, l->value_len,
                           PS_LABELS_COPY);
    }
    for (i = 0; gl != NULL && i < gl->n && rc == PS_OK; i++) {
        const struct ps_label *l = &gl->v[i];
        if (!find_in(tl, l->name, l->name_len) &&
            !find_in(out, l->name, l->name_len))
            rc = ps_labels_add(out, l->name, l->name_len, l->value,
                               l->value_len, PS_LABELS_COPY);
    }
    if (rc != PS_OK)
        return rc;
    ps_duration_format(d->interval_ms, ibuf, sizeof(ibuf));
    ps_duration_format(d->timeout_ms, tbuf, sizeof(tbuf));
    rc = set_default(out, L("job"), d->job ? d->job : "",
                     d->job ? strlen(d->job) : 0);
    if (rc == PS_OK)
        rc = set_default(out, L("__scrape_interval__"), ibuf, strlen(ibuf));
    if (rc == PS_OK)
        rc = set_default(out, L("__scrape_timeout__"), tbuf, strlen(tbuf));
    if (rc == PS_OK)
        rc = set_default(out, L("__metrics_path__"), path, strlen(path));
    if (rc == PS_OK)
        rc = set_default(out, L("__scheme__"), scheme, strlen(scheme));
    /* __param_<name>: only when not already set by discovery. */
    for (i = 0; i < d->n_params && rc == PS_OK; i++) {
        char name[256];
        size_t k, nl = strlen(d->params[i].name);
        /* only the first value of a repeated param becomes a label */
        for (k = 0; k < i; k++)
            if (strcmp(d->params[k].name, d->params[i].name) == 0)
                break;
        if (k < i || nl + 8 >= sizeof(name))
            continue;
        memcpy(name, "__param_", 8);
        memcpy(name + 8, d->params[i].name, nl);
        rc = set_default(out, name, nl + 8, d->params[i].value,
                         strlen(d->params[i].value));
    }
    if (rc != PS_OK)
        return rc;
    return finish_set(out);
}

/* Records a dropped target with a formatted reason. PS_OK or PS_ENOMEM. */
static int drop_with(struct ps_target *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int drop_with(struct ps_target *t, const char *fmt, ...)
{
    char buf[PS_ERR_MAX * 2];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    ps_free(t->reason);
    t->reason = ps_strndup(buf, strlen(buf));
    t->state = PS_TARGET_DROPPED;
    ps_labels_clear(&t->labels);
    ps_labels_clear(&t->pub);
    return t->reason ? PS_OK : PS_ENOMEM;
}

/* A label value as a C string for messages, truncated to fit. */
static void cval(char *buf, size_t size, const struct ps_label *l)
{
    size_t n = l ? l->value_len : 0;

    if (n >= size)
        n = size - 1;
    if (n > 0)
        memcpy(buf, l->value, n);
    buf[n] = '\0';
}

/* See ps_target.h. Validation failures are not errors: they return PS_OK
 * with a dropped target, so a sync can list them with their reason. */
int ps_target_populate(struct ps_target *t, const struct ps_labels *tlabels,
                       const struct ps_labels *glabels,
                       const struct ps_target_defaults *d,
                       const struct ps_relabel *rules,
                       struct ps_relabel_scratch *scratch, struct ps_err *e)
{
    const struct ps_label *addr, *iv, *to;
    char a[256], b[64], c[64];
    size_t drop_at = PS_RELABEL_KEPT, i, j;
    int rc;

    ps_target_cleanup(t);
    rc = discovered_labels(&t->discovered, tlabels, glabels, d);
    if (rc != PS_OK) {
        ps_target_cleanup(t);
        return ps_err_set(e, rc, "populating target labels");
    }
    if (rules != NULL) {
        rc = ps_relabel_apply(rules, scratch, &t->discovered, &t->labels,
                              &drop_at, e);
        if (rc != PS_OK) {
            ps_target_cleanup(t);
            return rc;
        }
    } else {
        rc = ps_labels_copy(&t->labels, &t->discovered);
        if (rc != PS_OK) {
            ps_target_cleanup(t);
            return ps_err_set(e, rc, "populating target labels");
        }
    }
    if (drop_at != PS_RELABEL_KEPT) {
        rc = drop_with(t, "%s", "");
        goto out;
    }
    /* Validation, in PopulateLabels' order. Every failure drops the target
     * with the message Prometheus would log, instead of an error. */
    addr = ps_labels_get(&t->labels, L("__address__"));
    if (addr == NULL || addr->value_len == 0) {
        rc = drop_with(t, "no address");
        goto out;
    }
    cval(a, sizeof(a), addr);
    if (memchr(addr->value, '/', addr->value_len) != NULL) {
        rc = drop_with(t, "\"%s\" is not a valid hostname", a);
        goto out;
    }
    iv = ps_labels_get(&t->labels, L("__scrape_interval__"));
    to = ps_labels_get(&t->labels, L("__scrape_timeout__"));
    cval(b, sizeof(b), iv);
    cval(c, sizeof(c), to);
    if (ps_duration_parse(b, strlen(b), &t->interval_ms) != PS_OK) {
        rc = drop_with(t,
                       "error parsing scrape interval: not a valid duration "
                       "string: \"%s\"",
                       b);
        goto out;
    }
    if (t->interval_ms == 0) {
        rc = drop_with(t, "scrape interval cannot be 0");
        goto out;
    }
    if (ps_duration_parse(c, strlen(c), &t->timeout_ms) != PS_OK) {
        rc = drop_with(t,
                       "error parsing scrape timeout: not a valid duration "
                       "string: \"%s\"",
                       c);
        goto out;
    }
    if (t->timeout_ms == 0) {
        rc = drop_with(t, "scrape timeout cannot be 0");
        goto out;
    }
    if (t->timeout_ms > t->interval_ms) {
        rc = drop_with(t,
                       "scrape timeout cannot be greater than scrape "
                       "interval (\"%s\" > \"%s\")",
                       c, b);
        goto out;
    }
    /* Meta labels go after relabeling; other "__" labels stay. */
    for (i = 0, j = 0; i < t->labels.n; i++)
        if (!has_prefix(t->labels.v[i].name, t->labels.v[i].name_len,
                        L("__meta_")))
            t->labels.v[j++] = t->labels.v[i];
    t->labels.n = j;
    if (ps_labels_get(&t->labels, L("instance")) == NULL) {
        /* The value lives in the set's own store, whose strings never
         * move: borrow it rather than copy (the array may move). */
        const char *av = addr->value;
        size_t an = addr->value_len;
        rc = ps_labels_add(&t->labels, L("instance"), av, an, 0);
        if (rc != PS_OK) {
            ps_target_cleanup(t);
            return ps_err_set(e, PS_ENOMEM, "populating target labels");
        }
        ps_labels_sort(&t->labels);
    }
    for (i = 0; i < t->labels.n; i++) {
        const struct ps_label *l = &t->labels.v[i];
        if (!ps_utf8_valid(l->value, l->value_len)) {
            char nm[128];
            size_t nl = l->name_len < sizeof(nm) - 1 ? l->name_len
                                                    : sizeof(nm) - 1;
            memcpy(nm, l->name, nl);
            nm[nl] = '\0';
            rc = drop_with(t, "invalid label value for \"%s\"", nm);
            goto out;
        }
    }
    rc = ps_target_url(&t->labels, d->params, d->n_params, &t->url);
    if (rc == PS_OK)
        rc = build_pub(t);
    if (rc == PS_OK) {
        uint64_t lh = ps_labels_hash(&t->labels);
        /* Target.hash: the labels hash, then the URL (Prometheus uses
         * FNV-64a over both; XXH3 seeded with the labels hash is ours). */
        t->hash = XXH3_64bits_withSeed(t->url, strlen(t->url), lh);
        t->state = PS_TARGET_ACTIVE;
    }
out:
    if (rc != PS_OK) {
        ps_target_cleanup(t);
        return ps_err_set(e, rc, "populating target labels");
    }
    return PS_OK;
}

/* Deep copy; pub is rebuilt as views into dst's own labels. */
int ps_target_copy(struct ps_target *dst, const struct ps_target *src)
{
    int rc;

    ps_target_cleanup(dst);
    dst->state = src->state;
    dst->hash = src->hash;
    dst->interval_ms = src->interval_ms;
    dst->timeout_ms = src->timeout_ms;
    rc = ps_labels_copy(&dst->discovered, &src->discovered);
    if (rc == PS_OK)
        rc = ps_labels_copy(&dst->labels, &src->labels);
    if (rc == PS_OK && src->reason != NULL) {
        dst->reason = ps_strndup(src->reason, strlen(src->reason));
        rc = dst->reason ? PS_OK : PS_ENOMEM;
    }
    if (rc == PS_OK && src->url != NULL) {
        dst->url = ps_strndup(src->url, strlen(src->url));
        rc = dst->url ? PS_OK : PS_ENOMEM;
    }
    if (rc == PS_OK)
        rc = build_pub(dst);
    if (rc != PS_OK)
        ps_target_cleanup(dst);
    return rc;
}

/* ---- URL --------------------------------------------------------------- */

/* A growable string for URL building. */
struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
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
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

/* RFC 3986 unreserved characters, never escaped. */
static int unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
           c == '~';
}

/* Go's url.QueryEscape (query = 1) or the path escaping of
 * URL.EscapedPath (query = 0). */
static void sb_escape(struct sbuf *b, const char *s, size_t n, int query)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[3];
        if (unreserved(c) ||
            (!query && c != '?' && c != '%' && strchr("$&+,/:;=@", c) &&
             c != '\0')) {
            sb_put(b, (const char *)&c, 1);
        } else if (query && c == ' ') {
            sb_put(b, "+", 1);
        } else {
            esc[0] = '%';
            esc[1] = hex[c >> 4];
            esc[2] = hex[c & 15];
            sb_put(b, esc, 3);
        }
    }
}

/* One query pair for sorting: key, value, original order. */
struct qpair {
    const char *k, *v;
    size_t kn, vn, ord;
};

/* url.Values.Encode sorts keys; values of one key keep their order. */
static int qpair_cmp(const void *a, const void *b)
{
    const struct qpair *x = a, *y = b;
    size_t n = x->kn < y->kn ? x->kn : y->kn;
    int c = memcmp(x->k, y->k, n);

    if (c != 0)
        return c;
    if (x->kn != y->kn)
        return x->kn < y->kn ? -1 : 1;
    return x->ord < y->ord ? -1 : x->ord > y->ord; /* values keep order */
}

/* See ps_target.h. One temporary array of pairs, then one string. */
int ps_target_url(const struct ps_labels *labels, const struct ps_param *params,
                  size_t n_params, char **out)
{
    const struct ps_label *scheme = ps_labels_get(labels, L("__scheme__"));
    const struct ps_label *addr = ps_labels_get(labels, L("__address__"));
    const struct ps_label *path = ps_labels_get(labels, L("__metrics_path__"));
    struct qpair *q;
    struct sbuf b = {NULL, 0, 0, 0};
    size_t nq = 0, i, k;

    if (addr == NULL)
        return PS_EINVAL;
    q = ps_calloc(n_params + labels->n + 1, sizeof(*q));
    if (q == NULL)
        return PS_ENOMEM;
    for (i = 0; i < n_params; i++) {
        q[nq].k = params[i].name;
        q[nq].kn = strlen(params[i].name);
        q[nq].v = params[i].value;
        q[nq].vn = strlen(params[i].value);
        q[nq].ord = nq;
        nq++;
    }
    /* __param_<k> replaces the first value of k, or adds k. */
    for (i = 0; i < labels->n; i++) {
        const struct ps_label *l = &labels->v[i];
        const char *kk = l->name + 8;
        size_t kn = l->name_len - 8;
        if (!has_prefix(l->name, l->name_len, L("__param_")))
            continue;
        for (k = 0; k < nq; k++)
            if (q[k].kn == kn && memcmp(q[k].k, kk, kn) == 0)
                break;
        if (k == nq) {
            q[nq].k = kk;
            q[nq].kn = kn;
            q[nq].ord = nq;
            nq++;
        }
        q[k].v = l->value;
        q[k].vn = l->value_len;
    }
    /* url.URL{Scheme, Host, Path, RawQuery}.String(): a path without a
     * leading '/' gets one since a host is present. */
    qsort(q, nq, sizeof(*q), qpair_cmp);
    if (scheme != NULL)
        sb_put(&b, scheme->value, scheme->value_len);
    sb_put(&b, "://", 3);
    sb_put(&b, addr->value, addr->value_len);
    if (path != NULL && path->value_len > 0) {
        if (path->value[0] != '/')
            sb_put(&b, "/", 1);
        sb_escape(&b, path->value, path->value_len, 0);
    }
    for (i = 0; i < nq; i++) {
        sb_put(&b, i == 0 ? "?" : "&", 1);
        sb_escape(&b, q[i].k, q[i].kn, 1);
        sb_put(&b, "=", 1);
        sb_escape(&b, q[i].v, q[i].vn, 1);
    }
    ps_free(q);
    if (b.oom || b.p == NULL) {
        ps_free(b.p);
        return PS_ENOMEM;
    }
    *out = b.p;
    return PS_OK;
}

/* Target.offset, in integer nanoseconds; cannot fail. */
uint64_t ps_target_offset_ns(uint64_t hash, uint64_t seed,
                             uint64_t interval_ns, uint64_t now_wall_ns)
{
    uint64_t base, off, next;

    if (interval_ns == 0)
        return 0;
    base = interval_ns - now_wall_ns % interval_ns;
    off = (hash ^ seed) % interval_ns;
    next = base + off;
    if (next > interval_ns)
        next -= interval_ns;
    return next;
}
