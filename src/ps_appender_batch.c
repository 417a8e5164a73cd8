/*
 * ps_appender_batch.c: transactions -> batches -> a bounded, locked queue.
 * See the header for the semantics.
 *
 * The producer owns the series table (labels -> ref) and the batch under
 * construction; only the queue and its counters are shared, under `mu`.
 * Bound enforcement runs inside the producer's commit, so the series
 * table is never touched by the consumer.
 */
#include "ps_appender_batch.h"
#include "ps_hmap.h"

#include <inttypes.h>
#include <pthread.h>
#include <string.h>

#define DEFAULT_MAX_PENDING 1000000u
#define MIN_SAMPLES 64u

struct bseries {
    struct ps_label *lv; /* owned block */
    uint32_t nl;
    uint8_t announced; /* labels sent in a committed batch */
    uint32_t new_txn;  /* txn whose batch already carries the labels */
    uint64_t hash;
};

struct ps_appender_batch {
    struct ps_appender base; /* first: the appender view is this object */
    struct ps_appender_batch_opts opts;

    /* producer side */
    struct bseries *s;
    size_t n, cap;
    struct ps_hmap idx; /* labels hash -> index */
    struct ps_batch *cur;
    int in_txn;
    uint32_t txn;
    size_t last_n; /* samples of the last batch: pre-size the next */
    uint64_t seq;

    /* shared, under mu */
    pthread_mutex_t mu;
    struct ps_batch *head, *tail;
    struct ps_batch_stats st;
};

/* ---- batches ------------------------------------------------------------ */

void ps_batch_free(struct ps_batch *b)
{
    if (b == NULL)
        return;
    ps_free(b->refs);
    ps_free(b->values);
    ps_free(b->ts_ms);
    ps_free(b->lab);
    ps_free(b->series);
    ps_free(b->ex);
    ps_free(b->meta);
    ps_strstore_cleanup(&b->store);
    ps_free(b);
}

/* Grows *p (elements of `size`) to hold `need`; PS_ENOMEM leaves it. */
static int grow(void **p, size_t *cap, size_t need, size_t size, size_t min)
{
    size_t ncap = *cap ? *cap : min;
    void *np;

    if (need <= *cap)
        return PS_OK;
    while (ncap < need)
        ncap *= 2;
    if (ncap > ((size_t)-1 / 2) / size)
        return PS_ENOMEM;
    np = ps_realloc(*p, ncap * size);
    if (np == NULL)
        return PS_ENOMEM;
    *p = np;
    *cap = ncap;
    return PS_OK;
}

/* Sample arrays: the three grow together, so `cap` is valid for all. */
static int grow_samples(struct ps_batch *b, size_t need)
{
    size_t ncap = b->cap ? b->cap : MIN_SAMPLES, c;
    void *p;

    if (need <= b->cap)
        return PS_OK;
    while (ncap < need)
        ncap *= 2;
    if (ncap > ((size_t)-1 / 2) / sizeof(double))
        return PS_ENOMEM;
    /* Each realloc that succeeds is kept even if a later one fails: the
     * arrays are only ever larger than cap, never smaller. */
    c = b->cap;
    p = ps_realloc(b->refs, ncap * sizeof(*b->refs));
    if (p == NULL)
        return PS_ENOMEM;
    b->refs = p;
    p = ps_realloc(b->values, ncap * sizeof(*b->values));
    if (p == NULL)
        return PS_ENOMEM;
    b->values = p;
    p = ps_realloc(b->ts_ms, ncap * sizeof(*b->ts_ms));
    if (p == NULL)
        return PS_ENOMEM;
    b->ts_ms = p;
    b->cap = ncap > c ? ncap : c;
    return PS_OK;
}

/* Copies v[0..n) into the batch's label array and store; *off is where
 * they start. PS_ENOMEM leaves n_lab unchanged (stray strings may stay in
 * the store until the batch is freed). */
static int add_labels(struct ps_batch *b, const struct ps_label *v, size_t n,
                      size_t *off)
{
    size_t j;
    int rc =
        grow((void **)&b->lab, &b->cap_lab, b->n_lab + n, sizeof(*b->lab), 16);

    if (rc != PS_OK)
        return rc;
    for (j = 0; j < n; j++) {
        struct ps_label *d = &b->lab[b->n_lab + j];

        d->name = ps_strstore_dup(&b->store, v[j].name, v[j].name_len);
        d->value = d->name
                       ? ps_strstore_dup(&b->store, v[j].value, v[j].value_len)
                       : NULL;
        if (d->value == NULL)
            return PS_ENOMEM;
        d->name_len = v[j].name_len;
        d->value_len = v[j].value_len;
    }
    *off = b->n_lab;
    b->n_lab += n;
    return PS_OK;
}

/* A new batch for a transaction: target labels copied, sample arrays sized
 * for `hint` samples. NULL on ENOMEM. */
static struct ps_batch *batch_new(const struct ps_labels *target, size_t hint)
{
    struct ps_batch *b = ps_calloc(1, sizeof(*b));
    size_t off;

    if (b == NULL)
        return NULL;
    ps_strstore_init(&b->store);
    b->kind = PS_BATCH_COMMIT;
    if ((hint > 0 && grow_samples(b, hint) != PS_OK) ||
        (target != NULL && target->n > 0 &&
         add_labels(b, target->v, target->n, &off) != PS_OK)) {
        ps_batch_free(b);
        return NULL;
    }
    b->n_target = b->n_lab;
    return b;
}

/* ---- series table ------------------------------------------------------ */

struct lkey {
    const struct ps_label *v;
    size_t n;
};

static int eq_labels(const void *key, uint64_t val, void *ud)
{
    const struct lkey *k = key;
    const struct ps_appender_batch *a = ud;

    return ps_labels_equal_v(k->v, k->n, a->s[val].lv, a->s[val].nl);
}

/* ref (1-based, sequential) or labels -> index, creating the series when
 * new. PS_EINVAL without usable ref or labels; PS_ENOMEM leaves the table
 * unchanged. */
static int resolve(struct ps_appender_batch *a, uint64_t ref,
                   const struct ps_labels *ls, size_t *out, struct ps_err *e)
{
    struct lkey k;
    uint64_t h, *vp;
    struct ps_label *lv;
    int rc;

    if (ref != 0 && ref <= a->n) {
        *out = (size_t)(ref - 1);
        return PS_OK;
    }
    if (ls == NULL || ls->n == 0 || ls->n >= UINT32_MAX)
        return ps_err_set(
            e, PS_EINVAL,
            "batch appender: unknown ref %" PRIu64 " and no labels", ref);
    h = ps_labels_hash(ls);
    k.v = ls->v;
    k.n = ls->n;
    vp = ps_hmap_find(&a->idx, h, eq_labels, &k, a);
    if (vp != NULL) {
        *out = (size_t)*vp;
        return PS_OK;
    }
    rc = grow((void **)&a->s, &a->cap, a->n + 1, sizeof(*a->s), 64);
    if (rc == PS_OK)
        rc = ps_hmap_reserve(&a->idx, ps_hmap_count(&a->idx) + 1);
    lv = rc == PS_OK ? ps_label_block_dup(ls->v, ls->n) : NULL;
    if (lv == NULL)
        return ps_err_set(e, PS_ENOMEM, "batch appender: new series");
    ps_hmap_insert(&a->idx, h, a->n); /* cannot fail: reserved */
    memset(&a->s[a->n], 0, sizeof(a->s[a->n]));
    a->s[a->n].lv = lv;
    a->s[a->n].nl = (uint32_t)ls->n;
    a->s[a->n].hash = h;
    *out = a->n++;
    return PS_OK;
}

/* Puts series i's labels in the current batch unless already announced or
 * already in this batch. */
static int announce(struct ps_appender_batch *a, size_t i, struct ps_err *e)
{
    struct bseries *s = &a->s[i];
    struct ps_batch *b = a->cur;
    struct ps_batch_series *d;
    size_t off;
    int rc;

    if (s->announced || s->new_txn == a->txn)
        return PS_OK;
    rc = grow((void **)&b->series, &b->cap_series, b->n_series + 1,
              sizeof(*b->series), 16);
    if (rc == PS_OK)
        rc = add_labels(b, s->lv, s->nl, &off);
    if (rc != PS_OK)
        return ps_err_set(e, rc, "batch appender: new series labels");
    d = &b->series[b->n_series++];
    d->ref = i + 1;
    d->off = off;
    d->n = s->nl;
    s->new_txn = a->txn;
    return PS_OK;
}

/* ---- queue (lock held) ------------------------------------------------ */

static int keeps_something(const struct ps_batch *b)
{
    return b->n_series > 0 || b->n_meta > 0;
}

/* Appends b and enforces the bound on the older entries. */
static void enqueue_locked(struct ps_appender_batch *a, struct ps_batch *b)
{
    struct ps_batch *it, *prev = NULL;

    b->next = NULL;
    if (a->tail != NULL)
        a->tail->next = b;
    else
        a->head = b;
    a->tail = b;
    a->st.pending_batches++;
    a->st.pending_samples += b->n;
    if (b->kind == PS_BATCH_COMMIT) {
        a->st.batches++;
        a->st.samples += b->n;
    } else {
        a->st.rollbacks++;
    }
    it = a->head;
    while (a->st.pending_samples > a->opts.max_pending_samples && it != b) {
        struct ps_batch *next = it->next;

        if (it->n > 0) {
            a->st.dropped_samples += it->n;
            a->st.dropped_batches++;
            a->st.pending_samples -= it->n;
            it->dropped += it->n;
            it->n = 0;
            it->n_ex = 0;
        }
        if (keeps_something(it)) {
            prev = it; /* its series labels must still reach the consumer */
        } else {
            if (prev != NULL)
                prev->next = next;
            else
                a->head = next;
            a->st.pending_batches--;
            ps_batch_free(it);
        }
        it = next;
    }
}

static void enqueue(struct ps_appender_batch *a, struct ps_batch *b)
{
    b->seq = ++a->seq;
    pthread_mutex_lock(&a->mu);
    a->st.series = a->n;
    enqueue_locked(a, b);
    pthread_mutex_unlock(&a->mu);
    if (a->opts.notify != NULL)
        a->opts.notify(a->opts.notify_ud);
}

/* ---- the vtable ------------------------------------------------------- */

static int bat_begin(struct ps_appender *ap, const struct ps_labels *target,
                     struct ps_err *e)
{
    struct ps_appender_batch *a = (struct ps_appender_batch *)ap;

    if (a->in_txn)
        return ps_err_set(e, PS_ESTATE, "batch appender: transaction open");
    a->cur = batch_new(target, a->last_n);
    if (a->cur == NULL)
        return ps_err_set(e, PS_ENOMEM, "batch appender: new batch");
    a->in_txn = 1;
    return PS_OK;
}

static int bat_append(struct ps_appender *ap, uint64_t ref,
                      const struct ps_labels *ls, int64_t t_ms, double v,
                      uint64_t *ref_out, struct ps_err *e)
{
    struct ps_appender_batch *a = (struct ps_appender_batch *)ap;
    struct ps_batch *b = a->cur;
    size_t i;
    int rc;

    if (!a->in_txn)
        return ps_err_set(e, PS_ESTATE,
                          "batch appender: append outside a "
                          "transaction");
    rc = resolve(a, ref, ls, &i, e);
    if (rc == PS_OK)
        rc = announce(a, i, e);
    if (rc != PS_OK)
        return rc;
    if (b->n == b->cap && grow_samples(b, b->n + 1) != PS_OK)
        return ps_err_set(e, PS_ENOMEM, "batch appender: samples");
    b->refs[b->n] = i + 1;
    b->values[b->n] = v;
    b->ts_ms[b->n] = t_ms;
    b->n++;
    *ref_out = i + 1;
    return PS_OK;
}

static int bat_append_exemplar(struct ps_appender *ap, uint64_t ref,
                               const struct ps_labels *ls,
                               const struct ps_exemplar *ex, struct ps_err *e)
{
    struct ps_appender_batch *a = (struct ps_appender_batch *)ap;
    struct ps_batch *b = a->cur;
    struct ps_batch_exemplar *d;
    size_t i, off = 0, n = 0;
    int rc;

    if (!a->in_txn)
        return ps_err_set(e, PS_ESTATE,
                          "batch appender: exemplar outside a "
                          "transaction");
    rc = resolve(a, ref, ls, &i, e);
    if (rc == PS_OK)
        rc = announce(a, i, e);
    if (rc != PS_OK)
        return rc;
    rc = grow((void **)&b->ex, &b->cap_ex, b->n_ex + 1, sizeof(*b->ex), 8);
    if (rc == PS_OK && ex->labels != NULL && ex->labels->n > 0) {
        n = ex->labels->n;
        rc = add_labels(b, ex->labels->v, n, &off);
    }
    if (rc != PS_OK)
        return ps_err_set(e, rc, "batch appender: exemplar");
    d = &b->ex[b->n_ex++];
    d->ref = i + 1;
    d->off = off;
    d->n = n;
    d->value = ex->value;
    d->has_ts = ex->has_ts;
    d->ts_ms = ex->ts_ms;
    return PS_OK;
}

static int bat_update_metadata(struct ps_appender *ap, uint64_t ref,
                               const struct ps_labels *ls,
                               const struct ps_metadata *m, struct ps_err *e)
{
    struct ps_appender_batch *a = (struct ps_appender_batch *)ap;
    struct ps_batch *b = a->cur;
    struct ps_batch_meta *d;
    char *help = NULL, *unit = NULL;
    size_t i;
    int rc;

    if (!a->in_txn)
        return ps_err_set(e, PS_ESTATE,
                          "batch appender: metadata outside a "
                          "transaction");
    rc = resolve(a, ref, ls, &i, e);
    if (rc == PS_OK)
        rc = announce(a, i, e);
    if (rc != PS_OK)
        return rc;
    rc = grow((void **)&b->meta, &b->cap_meta, b->n_meta + 1, sizeof(*b->meta),
              8);
    if (rc == PS_OK) {
        help =
            ps_strstore_dup(&b->store, m->help.n ? m->help.p : "", m->help.n);
        unit = help ? ps_strstore_dup(&b->store, m->unit.n ? m->unit.p : "",
                                      m->unit.n)
                    : NULL;
        if (unit == NULL)
            rc = PS_ENOMEM;
    }
    if (rc != PS_OK)
        return ps_err_set(e, rc, "batch appender: metadata");
    d = &b->meta[b->n_meta++];
    d->ref = i + 1;
    d->type = m->type;
    d->help.p = help;
    d->help.n = m->help.n;
    d->unit.p = unit;
    d->unit.n = m->unit.n;
    return PS_OK;
}

static void end_txn(struct ps_appender_batch *a)
{
    a->cur = NULL;
    a->in_txn = 0;
    if (++a->txn == 0) {
        size_t i;

        for (i = 0; i < a->n; i++) /* wrap-around: no stale markers */
            a->s[i].new_txn = 0;
        a->txn = 1;
    }
}

static int bat_commit(struct ps_appender *ap, struct ps_err *e)
{
    struct ps_appender_batch *a = (struct ps_appender_batch *)ap;
    struct ps_batch *b = a->cur;
    size_t k;

    if (!a->in_txn)
        return ps_err_set(e, PS_ESTATE, "batch appender: no transaction");
    for (k = 0; k < b->n_series; k++)
        a->s[b->series[k].ref - 1].announced = 1;
    a->last_n = b->n;
    end_txn(a);
    enqueue(a, b);
    return PS_OK;
}

static void bat_rollback(struct ps_appender *ap)
{
    struct ps_appender_batch *a = (struct ps_appender_batch *)ap;
    struct ps_batch *b = a->cur;

    if (!a->in_txn)
        return;
    end_txn(a);
    if (b->n == 0 && b->n_series == 0 && b->n_ex == 0 && b->n_meta == 0) {
        ps_batch_free(b); /* nothing was built: nothing to undo */
        return;
    }
    /* Reuse the batch as the event: no allocation, so rollback cannot
     * fail. Its new series stay unannounced (see the header). */
    b->kind = PS_BATCH_ROLLBACK;
    b->n = 0;
    b->n_series = 0;
    b->n_ex = 0;
    b->n_meta = 0;
    b->n_lab = b->n_target;
    enqueue(a, b);
}

static void bat_free(struct ps_appender *ap)
{
    ps_appender_batch_free((struct ps_appender_batch *)ap);
}

static const struct ps_appender_vt batch_vt = {
    bat_begin,
    bat_append,
    bat_append_exemplar,
    bat_update_metadata,
    bat_commit,
    bat_rollback,
    bat_free,
};

/* ---- public API ------------------------------------------------------- */

int ps_appender_batch_new(struct ps_appender_batch **out,
                          const struct ps_appender_batch_opts *o,
                          struct ps_err *e)
{
    struct ps_appender_batch *a = ps_calloc(1, sizeof(*a));

    if (a == NULL)
        return ps_err_set(e, PS_ENOMEM, "batch appender");
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        ps_free(a);
        return ps_err_set(e, PS_ENOMEM, "batch appender: mutex");
    }
    a->base.vt = &batch_vt;
    if (o != NULL)
        a->opts = *o;
    if (a->opts.max_pending_samples == 0)
        a->opts.max_pending_samples = DEFAULT_MAX_PENDING;
    a->txn = 1;
    ps_hmap_init(&a->idx);
    *out = a;
    return PS_OK;
}

void ps_appender_batch_free(struct ps_appender_batch *a)
{
    struct ps_batch *b, *next;
    size_t i;

    if (a == NULL)
        return;
    for (b = a->head; b != NULL; b = next) {
        next = b->next;
        ps_batch_free(b);
    }
    ps_batch_free(a->cur);
    for (i = 0; i < a->n; i++)
        ps_free(a->s[i].lv);
    ps_free(a->s);
    ps_hmap_cleanup(&a->idx);
    pthread_mutex_destroy(&a->mu);
    ps_free(a);
}

struct ps_appender *ps_appender_batch_appender(struct ps_appender_batch *a)
{
    return &a->base;
}

int ps_appender_batch_pop(struct ps_appender_batch *a, struct ps_batch **out)
{
    struct ps_batch *b;

    pthread_mutex_lock(&a->mu);
    b = a->head;
    if (b != NULL) {
        a->head = b->next;
        if (a->head == NULL)
            a->tail = NULL;
        a->st.pending_batches--;
        a->st.pending_samples -= b->n;
        b->next = NULL;
    }
    pthread_mutex_unlock(&a->mu);
    if (b == NULL)
        return 0;
    *out = b;
    return 1;
}

void ps_appender_batch_stats(struct ps_appender_batch *a,
                             struct ps_batch_stats *st)
{
    pthread_mutex_lock(&a->mu);
    *st = a->st;
    pthread_mutex_unlock(&a->mu);
}
