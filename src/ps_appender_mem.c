/*
 * ps_appender_mem.c: the in-memory latest-sample store. See the header for
 * the semantics; this file is about how.
 *
 * Series live in one array of slots indexed by ref; freed slots (pruning)
 * form a list threaded through the slots and get a new generation when
 * reused. A ps_hmap maps ps_labels_hash() to slot indexes for ref-0
 * appends. Each slot carries its own pending sample/metadata, tagged with
 * the transaction id, plus a list of touched slots: commit copies pending
 * to committed for the touched slots only, so neither commit nor rollback
 * walks the whole store.
 */
#include "ps_appender_mem.h"
#include "ps_hmap.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PEND_SAMPLE 1u
#define PEND_META 2u
#define NO_NAME UINT32_MAX
#define NO_FREE UINT32_MAX

struct mseries {
    struct ps_label *lv; /* owned block (ps_label_block_dup); NULL: free */
    uint32_t nl;
    uint32_t name_ix; /* index of __name__ in lv, or NO_NAME */
    uint32_t gen;     /* bumped when the slot is freed */
    uint32_t next_free;
    uint64_t hash;
    /* committed */
    int64_t ts;
    double v;
    uint32_t meta; /* 0: none, else index + 1 into the metadata table */
    uint8_t has;
    /* pending, valid when ptxn == the store's current txn */
    uint8_t pflags;
    uint32_t ptxn;
    uint32_t pmeta;
    int64_t pts;
    double pv;
};

/* Interned metadata; strings owned (NUL-terminated). */
struct mmeta {
    struct ps_metadata md;
    uint64_t hash;
};

struct ps_appender_mem {
    struct ps_appender base; /* first: the appender view is the store */
    pthread_mutex_t mu;
    struct ps_appender_mem_opts opts;

    struct mseries *s;
    size_t n, cap; /* slots used (high-water mark), allocated */
    uint32_t free_head;
    size_t live;
    struct ps_hmap idx; /* labels hash -> slot index */

    struct mmeta *md;
    size_t nmd, capmd;
    struct ps_hmap mdidx; /* metadata hash -> md index */

    uint32_t *touched;
    size_t ntouched, captouched;
    int in_txn;
    uint32_t txn;
    uint64_t pend_ex;

    int64_t max_ts;
    int has_max_ts;
    int64_t last_prune;
    struct ps_mem_stats st;
};

static uint64_t make_ref(const struct ps_appender_mem *s, uint32_t i)
{
    return ((uint64_t)s->s[i].gen << 32) | ((uint64_t)i + 1);
}

/* ---- series lookup and creation ------------------------------------- */

struct lkey {
    const struct ps_label *v;
    size_t n;
};

static int eq_labels(const void *key, uint64_t val, void *ud)
{
    const struct lkey *k = key;
    const struct ps_appender_mem *s = ud;
    const struct mseries *m = &s->s[val];

    return ps_labels_equal_v(k->v, k->n, m->lv, m->nl);
}

static int eq_index(const void *key, uint64_t val, void *ud)
{
    (void)ud;
    return *(const uint64_t *)key == val;
}

/* Makes room for one more slot. PS_ENOMEM leaves the store unchanged. */
static int reserve_slot(struct ps_appender_mem *s)
{
    size_t ncap;
    struct mseries *ns;

    if (s->free_head != NO_FREE || s->n < s->cap)
        return PS_OK;
    if (s->cap >= UINT32_MAX / 2)
        return PS_ELIMIT; /* refs hold a 32-bit index */
    ncap = s->cap ? s->cap * 2 : 64;
    ns = ps_realloc(s->s, ncap * sizeof(*ns));
    if (ns == NULL)
        return PS_ENOMEM;
    s->s = ns;
    s->cap = ncap;
    return PS_OK;
}

/* Finds the series with labels ls, creating it if new. Takes the lock when
 * it changes the table. PS_ENOMEM/PS_ELIMIT leave the store unchanged. */
static int lookup_or_create(struct ps_appender_mem *s,
                            const struct ps_labels *ls, uint32_t *out)
{
    struct lkey k;
    uint64_t h = ps_labels_hash(ls), *vp;
    struct ps_label *lv;
    uint32_t i, j;
    int rc;

    k.v = ls->v;
    k.n = ls->n;
    vp = ps_hmap_find(&s->idx, h, eq_labels, &k, s);
    if (vp != NULL) {
        *out = (uint32_t)*vp;
        return PS_OK;
    }
    if (ls->n >= UINT32_MAX)
        return PS_ELIMIT;
    lv = ps_label_block_dup(ls->v, ls->n);
    if (lv == NULL)
        return PS_ENOMEM;
    pthread_mutex_lock(&s->mu);
    rc = reserve_slot(s);
    if (rc == PS_OK)
        rc = ps_hmap_reserve(&s->idx, ps_hmap_count(&s->idx) + 1);
    if (rc != PS_OK) {
        pthread_mutex_unlock(&s->mu);
        ps_free(lv);
        return rc;
    }
    if (s->free_head != NO_FREE) {
        i = s->free_head;
        s->free_head = s->s[i].next_free;
    } else {
        i = (uint32_t)s->n++;
        s->s[i].gen = 0;
    }
    {
        struct mseries *m = &s->s[i];
        uint32_t gen = m->gen;

        memset(m, 0, sizeof(*m));
        m->gen = gen;
        m->lv = lv;
        m->nl = (uint32_t)ls->n;
        m->hash = h;
        m->next_free = NO_FREE;
        m->name_ix = NO_NAME;
        for (j = 0; j < m->nl; j++)
            if (lv[j].name_len == 8 && memcmp(lv[j].name, "__name__", 8) == 0)
                m->name_ix = j;
    }
    ps_hmap_insert(&s->idx, h, i); /* cannot fail: reserved above */
    s->live++;
    pthread_mutex_unlock(&s->mu);
    *out = i;
    return PS_OK;
}

/* Resolves (ref, ls) to a slot: a valid ref in O(1), else by labels. */
static int resolve(struct ps_appender_mem *s, uint64_t ref,
                   const struct ps_labels *ls, uint32_t *out, struct ps_err *e)
{
    int rc;

    if (ref != 0) {
        uint64_t i = (ref & 0xffffffffu) - 1;

        if (i < s->n && s->s[i].lv != NULL &&
            s->s[i].gen == (uint32_t)(ref >> 32)) {
            *out = (uint32_t)i;
            return PS_OK;
        }
    }
    if (ls == NULL || ls->n == 0)
        return ps_err_set(e, PS_EINVAL,
                          "memory store: unknown ref %" PRIu64 " and no labels",
                          ref);
    rc = lookup_or_create(s, ls, out);
    if (rc != PS_OK)
        return ps_err_set(e, rc, "memory store: cannot add series");
    return PS_OK;
}

/* Adds slot i to this transaction's touched list if not there yet. */
static int touch(struct ps_appender_mem *s, uint32_t i)
{
    struct mseries *m = &s->s[i];

    if (m->ptxn == s->txn)
        return PS_OK;
    if (s->ntouched == s->captouched) {
        size_t ncap = s->captouched ? s->captouched * 2 : 256;
        uint32_t *nt = ps_realloc(s->touched, ncap * sizeof(*nt));

        if (nt == NULL)
            return PS_ENOMEM;
        s->touched = nt;
        s->captouched = ncap;
    }
    s->touched[s->ntouched++] = i;
    m->ptxn = s->txn;
    m->pflags = 0;
    return PS_OK;
}

/* ---- the vtable ------------------------------------------------------- */

static int mem_begin(struct ps_appender *a, const struct ps_labels *target,
                     struct ps_err *e)
{
    struct ps_appender_mem *s = (struct ps_appender_mem *)a;

    (void)target; /* series labels already carry job and instance */
    if (s->in_txn)
        return ps_err_set(e, PS_ESTATE, "memory store: transaction open");
    s->in_txn = 1;
    s->ntouched = 0;
    s->pend_ex = 0;
    return PS_OK;
}

static int same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

static int mem_append(struct ps_appender *a, uint64_t ref,
                      const struct ps_labels *ls, int64_t t_ms, double v,
                      uint64_t *ref_out, struct ps_err *e)
{
    struct ps_appender_mem *s = (struct ps_appender_mem *)a;
    struct mseries *m;
    uint32_t i;
    int rc;

    if (!s->in_txn)
        return ps_err_set(e, PS_ESTATE,
                          "memory store: append outside a "
                          "transaction");
    rc = resolve(s, ref, ls, &i, e);
    if (rc != PS_OK)
        return rc;
    m = &s->s[i];
    /* Compare with the newest sample: pending in this txn, else committed. */
    if ((m->ptxn == s->txn && (m->pflags & PEND_SAMPLE)) || m->has) {
        int pend = m->ptxn == s->txn && (m->pflags & PEND_SAMPLE);
        int64_t lt = pend ? m->pts : m->ts;
        double lv = pend ? m->pv : m->v;

        if (t_ms < lt || (t_ms == lt && !same_bits(v, lv))) {
            /* st is read by ps_appender_mem_stats from other threads:
             * count under the store mutex (a rare path). */
            pthread_mutex_lock(&s->mu);
            s->st.rejected++;
            pthread_mutex_unlock(&s->mu);
            *ref_out = make_ref(s, i); /* the ref is good even so */
            return t_ms < lt ? PS_APPEND_OUT_OF_ORDER : PS_APPEND_DUPLICATE;
        }
        if (t_ms == lt) {
            *ref_out = make_ref(s, i);
            return PS_OK; /* the same sample again: nothing to do */
        }
    }
    rc = touch(s, i);
    if (rc != PS_OK)
        return ps_err_set(e, rc, "memory store: transaction too large");
    m->pts = t_ms;
    m->pv = v;
    m->pflags |= PEND_SAMPLE;
    *ref_out = make_ref(s, i);
    return PS_OK;
}

static int mem_append_exemplar(struct ps_appender *a, uint64_t ref,
                               const struct ps_labels *ls,
                               const struct ps_exemplar *ex, struct ps_err *e)
{
    struct ps_appender_mem *s = (struct ps_appender_mem *)a;
    uint32_t i;
    int rc;

    (void)ex; /* counted, not stored: the store keeps latest samples only */
    if (!s->in_txn)
        return ps_err_set(e, PS_ESTATE,
                          "memory store: exemplar outside a "
                          "transaction");
    rc = resolve(s, ref, ls, &i, e);
    if (rc == PS_OK)
        s->pend_ex++;
    return rc;
}

static uint64_t meta_hash(const struct ps_metadata *md)
{
    struct ps_label l[2];
    uint64_t t = (uint64_t)md->type;

    /* Reuse the label hash: (help, unit) as one pair, type as the name. */
    l[0].name = (const char *)&t;
    l[0].name_len = sizeof(t);
    l[0].value = md->help.p;
    l[0].value_len = md->help.n;
    l[1].name = "";
    l[1].name_len = 0;
    l[1].value = md->unit.p;
    l[1].value_len = md->unit.n;
    return ps_labels_hash_v(l, 2);
}

static int str_eq(struct ps_str a, struct ps_str b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

static int eq_meta(const void *key, uint64_t val, void *ud)
{
    const struct ps_metadata *k = key;
    const struct ps_appender_mem *s = ud;
    const struct ps_metadata *m = &s->md[val].md;

    return k->type == m->type && str_eq(k->help, m->help) &&
           str_eq(k->unit, m->unit);
}

/* Interns md; *out is its index + 1. PS_ENOMEM leaves the table as was. */
static int intern_meta(struct ps_appender_mem *s, const struct ps_metadata *md,
                       uint32_t *out)
{
    uint64_t h = meta_hash(md), *vp;
    struct mmeta *nm;
    char *help, *unit;
    int rc = PS_OK;

    vp = ps_hmap_find(&s->mdidx, h, eq_meta, md, s);
    if (vp != NULL) {
        *out = (uint32_t)*vp + 1;
        return PS_OK;
    }
    help = ps_strndup(md->help.n ? md->help.p : "", md->help.n);
    unit = ps_strndup(md->unit.n ? md->unit.p : "", md->unit.n);
    pthread_mutex_lock(&s->mu);
    if (help == NULL || unit == NULL || s->nmd >= UINT32_MAX - 1)
        rc = PS_ENOMEM;
    if (rc == PS_OK && s->nmd == s->capmd) {
        size_t ncap = s->capmd ? s->capmd * 2 : 16;

        nm = ps_realloc(s->md, ncap * sizeof(*nm));
        if (nm == NULL) {
            rc = PS_ENOMEM;
        } else {
            s->md = nm;
            s->capmd = ncap;
        }
    }
    if (rc == PS_OK)
        rc = ps_hmap_insert(&s->mdidx, h, s->nmd);
    if (rc != PS_OK) {
        pthread_mutex_unlock(&s->mu);
        ps_free(help);
        ps_free(unit);
        return rc;
    }
    nm = &s->md[s->nmd];
    nm->hash = h;
    nm->md.type = md->type;
    nm->md.help.p = help;
    nm->md.help.n = md->help.n;
    nm->md.unit.p = unit;
    nm->md.unit.n = md->unit.n;
    *out = (uint32_t)++s->nmd;
    pthread_mutex_unlock(&s->mu);
    return PS_OK;
}

static int mem_update_metadata(struct ps_appender *a, uint64_t ref,
                               const struct ps_labels *ls,
                               const struct ps_metadata *md, struct ps_err *e)
{
    struct ps_appender_mem *s = (struct ps_appender_mem *)a;
    uint32_t i, mi;
    int rc;

    if (!s->in_txn)
        return ps_err_set(e, PS_ESTATE,
                          "memory store: metadata outside a "
                          "transaction");
    rc = resolve(s, ref, ls, &i, e);
    if (rc != PS_OK)
        return rc;
    rc = intern_meta(s, md, &mi);
    if (rc == PS_OK)
        rc = touch(s, i);
    if (rc != PS_OK)
        return ps_err_set(e, rc, "memory store: cannot record metadata");
    s->s[i].pmeta = mi;
    s->s[i].pflags |= PEND_META;
    return PS_OK;
}

/* Frees slot i (lock held): out of the index, labels freed, new gen. */
static void forget_slot(struct ps_appender_mem *s, uint32_t i)
{
    struct mseries *m = &s->s[i];
    uint64_t key = i;

    ps_hmap_remove(&s->idx, m->hash, eq_index, &key, NULL, NULL);
    ps_free(m->lv);
    m->lv = NULL;
    m->has = 0;
    m->gen++;
    m->next_free = s->free_head;
    s->free_head = i;
    s->live--;
    s->st.forgotten++;
}

/* Lock held, no transaction open. */
static size_t forget_locked(struct ps_appender_mem *s, int64_t older_than)
{
    size_t i, k = 0;

    for (i = 0; i < s->n; i++) {
        struct mseries *m = &s->s[i];

        if (m->lv != NULL && (!m->has || m->ts < older_than)) {
            forget_slot(s, (uint32_t)i);
            k++;
        }
    }
    return k;
}

/* Starts a new transaction id; on wrap-around, clears every tag so that no
 * slot looks touched by the new id. */
static void next_txn(struct ps_appender_mem *s)
{
    size_t i;

    if (++s->txn == 0) {
        for (i = 0; i < s->n; i++)
            s->s[i].ptxn = 0;
        s->txn = 1;
    }
}

static int mem_commit(struct ps_appender *a, struct ps_err *e)
{
    struct ps_appender_mem *s = (struct ps_appender_mem *)a;
    size_t k;

    if (!s->in_txn)
        return ps_err_set(e, PS_ESTATE, "memory store: no transaction");
    pthread_mutex_lock(&s->mu);
    for (k = 0; k < s->ntouched; k++) {
        struct mseries *m = &s->s[s->touched[k]];

        if (m->pflags & PEND_SAMPLE) {
            m->ts = m->pts;
            m->v = m->pv;
            m->has = 1;
            s->st.appended++;
            if (!s->has_max_ts || m->ts > s->max_ts) {
                s->max_ts = m->ts;
                s->has_max_ts = 1;
            }
        }
        if (m->pflags & PEND_META)
            m->meta = m->pmeta;
        m->pflags = 0;
    }
    s->st.exemplars += s->pend_ex;
    s->ntouched = 0;
    s->in_txn = 0;
    next_txn(s);
    /* Optional pruning, by sample time, at most twice per window. */
    if (s->opts.forget_after_ms > 0 && s->has_max_ts &&
        s->max_ts - s->last_prune >= s->opts.forget_after_ms / 2) {
        forget_locked(s, s->max_ts - s->opts.forget_after_ms);
        s->last_prune = s->max_ts;
    }
    pthread_mutex_unlock(&s->mu);
    return PS_OK;
}

static void mem_rollback(struct ps_appender *a)
{
    struct ps_appender_mem *s = (struct ps_appender_mem *)a;
    size_t k;

    if (!s->in_txn)
        return;
    for (k = 0; k < s->ntouched; k++)
        s->s[s->touched[k]].pflags = 0;
    s->ntouched = 0;
    s->pend_ex = 0;
    s->in_txn = 0;
    next_txn(s);
}

static void mem_free(struct ps_appender *a)
{
    ps_appender_mem_free((struct ps_appender_mem *)a);
}

static const struct ps_appender_vt mem_vt = {
    mem_begin,
    mem_append,
    mem_append_exemplar,
    mem_update_metadata,
    mem_commit,
    mem_rollback,
    mem_free,
};

/* ---- public API ------------------------------------------------------- */

int ps_appender_mem_new(struct ps_appender_mem **out,
                        const struct ps_appender_mem_opts *o, struct ps_err *e)
{
    struct ps_appender_mem *s;

    if (o != NULL && o->forget_after_ms < 0)
        return ps_err_set(e, PS_EINVAL,
                          "memory store: negative "
                          "forget_after_ms");
    s = ps_calloc(1, sizeof(*s));
    if (s == NULL)
        return ps_err_set(e, PS_ENOMEM, "memory store");
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        ps_free(s);
        return ps_err_set(e, PS_ENOMEM, "memory store: mutex");
    }
    s->base.vt = &mem_vt;
    if (o != NULL)
        s->opts = *o;
    s->free_head = NO_FREE;
    s->txn = 1;
    ps_hmap_init(&s->idx);
    ps_hmap_init(&s->mdidx);
    *out = s;
    return PS_OK;
}

void ps_appender_mem_free(struct ps_appender_mem *s)
{
    size_t i;

    if (s == NULL)
        return;
    for (i = 0; i < s->n; i++)
        ps_free(s->s[i].lv);
    for (i = 0; i < s->nmd; i++) {
        ps_free((char *)s->md[i].md.help.p);
        ps_free((char *)s->md[i].md.unit.p);
    }
    ps_free(s->s);
    ps_free(s->md);
    ps_free(s->touched);
    ps_hmap_cleanup(&s->idx);
    ps_hmap_cleanup(&s->mdidx);
    pthread_mutex_destroy(&s->mu);
    ps_free(s);
}

struct ps_appender *ps_appender_mem_appender(struct ps_appender_mem *s)
{
    return &s->base;
}

static void fill_sample(const struct ps_appender_mem *s, uint32_t i,
                        struct ps_mem_sample *out)
{
    const struct mseries *m = &s->s[i];

    out->labels = m->lv;
    out->n_labels = m->nl;
    out->value = m->v;
    out->ts_ms = m->ts;
    out->stale = ps_is_stale_nan(m->v);
    out->meta = m->meta ? &s->md[m->meta - 1].md : NULL;
    out->ref = make_ref(s, i);
}

int ps_appender_mem_foreach(struct ps_appender_mem *s, ps_mem_sample_fn fn,
                            void *ud)
{
    struct ps_mem_sample smp;
    size_t i;
    int r = 0;

    pthread_mutex_lock(&s->mu);
    for (i = 0; i < s->n && r == 0; i++) {
        if (s->s[i].lv == NULL || !s->s[i].has)
            continue;
        fill_sample(s, (uint32_t)i, &smp);
        r = fn(&smp, ud);
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

int ps_appender_mem_forget(struct ps_appender_mem *s, int64_t older_than_ms,
                           size_t *n)
{
    size_t k;

    if (s->in_txn)
        return PS_ESTATE;
    pthread_mutex_lock(&s->mu);
    k = forget_locked(s, older_than_ms);
    pthread_mutex_unlock(&s->mu);
    if (n != NULL)
        *n = k;
    return PS_OK;
}

void ps_appender_mem_stats(struct ps_appender_mem *s, struct ps_mem_stats *st)
{
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    st->series = s->live;
    pthread_mutex_unlock(&s->mu);
}

/* ---- text exposition -------------------------------------------------- */

static int bytes_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);

    if (c != 0)
        return c;
    return an < bn ? -1 : an > bn;
}

/* Order of the text output: metric name, then labels as Prometheus's
 * labels.Compare (name, then value, label by label, then length). */
static int cmp_series(const void *pa, const void *pb)
{
    const struct mseries *a = *(const struct mseries *const *)pa;
    const struct mseries *b = *(const struct mseries *const *)pb;
    const struct ps_label *na = &a->lv[a->name_ix], *nb = &b->lv[b->name_ix];
    uint32_t i, n = a->nl < b->nl ? a->nl : b->nl;
    int c = bytes_cmp(na->value, na->value_len, nb->value, nb->value_len);

    if (c != 0)
        return c;
    for (i = 0; i < n; i++) {
        c = bytes_cmp(a->lv[i].name, a->lv[i].name_len, b->lv[i].name,
                      b->lv[i].name_len);
        if (c == 0)
            c = bytes_cmp(a->lv[i].value, a->lv[i].value_len, b->lv[i].value,
                          b->lv[i].value_len);
        if (c != 0)
            return c;
    }
    return a->nl < b->nl ? -1 : a->nl > b->nl;
}

/* A quoted string with text-format escaping: \\, \" and \n. */
static int put_quoted(struct ps_buf *b, const char *s, size_t n)
{
    size_t i, run = 0;
    int rc = ps_buf_addc(b, '"');

    for (i = 0; i < n && rc == PS_OK; i++) {
        const char *esc = s[i] == '\\'   ? "\\\\"
                          : s[i] == '"'  ? "\\\""
                          : s[i] == '\n' ? "\\n"
                                         : NULL;
        if (esc == NULL)
            continue;
        rc = ps_buf_add(b, s + run, i - run);
        if (rc == PS_OK)
            rc = ps_buf_add(b, esc, 2);
        run = i + 1;
    }
    if (rc == PS_OK)
        rc = ps_buf_add(b, s + run, n - run);
    if (rc == PS_OK)
        rc = ps_buf_addc(b, '"');
    return rc;
}

static int put_series(struct ps_buf *b, const struct mseries *m)
{
    const struct ps_label *nm = &m->lv[m->name_ix];
    int legacy = ps_name_legacy_metric(nm->value, nm->value_len);
    int open = 0, rc;
    char num[32];
    uint32_t i;

    if (legacy) {
        rc = ps_buf_add(b, nm->value, nm->value_len);
    } else {
        rc = ps_buf_addc(b, '{');
        if (rc == PS_OK)
            rc = put_quoted(b, nm->value, nm->value_len);
        open = 1;
    }
    for (i = 0; i < m->nl && rc == PS_OK; i++) {
        const struct ps_label *l = &m->lv[i];

        if (i == m->name_ix || l->value_len == 0)
            continue; /* federate skips empty values: they mean unset */
        rc = ps_buf_addc(b, open ? ',' : '{');
        open = 1;
        if (rc == PS_OK)
            rc = ps_name_legacy_label(l->name, l->name_len)
                     ? ps_buf_add(b, l->name, l->name_len)
                     : put_quoted(b, l->name, l->name_len);
        if (rc == PS_OK)
            rc = ps_buf_addc(b, '=');
        if (rc == PS_OK)
            rc = put_quoted(b, l->value, l->value_len);
    }
    if (rc == PS_OK && open)
        rc = ps_buf_addc(b, '}');
    if (rc == PS_OK) {
        ps_fmt_go_float(m->v, num);
        rc = ps_buf_printf(b, " %s %" PRId64 "\n", num, m->ts);
    }
    return rc;
}

int ps_appender_mem_text(struct ps_appender_mem *s, struct ps_buf *buf)
{
    const struct mseries **v = NULL;
    const struct ps_label *last = NULL;
    size_t i, n = 0;
    int rc = PS_OK;

    pthread_mutex_lock(&s->mu);
    if (s->n > 0) {
        v = ps_malloc(s->n * sizeof(*v));
        if (v == NULL)
            rc = PS_ENOMEM;
    }
    for (i = 0; i < s->n && rc == PS_OK; i++) {
        const struct mseries *m = &s->s[i];

        if (m->lv != NULL && m->has && !ps_is_stale_nan(m->v) &&
            m->name_ix != NO_NAME && m->lv[m->name_ix].value_len > 0)
            v[n++] = m;
    }
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_series);
    for (i = 0; i < n && rc == PS_OK; i++) {
        const struct ps_label *nm = &v[i]->lv[v[i]->name_ix];

        if (last == NULL || bytes_cmp(last->value, last->value_len, nm->value,
                                      nm->value_len) != 0) {
            rc = ps_buf_adds(buf, "# TYPE ");
            if (rc == PS_OK)
                rc = ps_name_legacy_metric(nm->value, nm->value_len)
                         ? ps_buf_add(buf, nm->value, nm->value_len)
                         : put_quoted(buf, nm->value, nm->value_len);
            if (rc == PS_OK)
                rc = ps_buf_adds(buf, " untyped\n");
            last = nm;
        }
        if (rc == PS_OK)
            rc = put_series(buf, v[i]);
    }
    pthread_mutex_unlock(&s->mu);
    ps_free(v);
    return rc;
}
