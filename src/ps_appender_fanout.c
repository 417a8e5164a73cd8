/*
 * ps_appender_fanout.c: see ps_appender_fanout.h.
 *
 * Layout: slots[] is indexed by a fan-out ref's slot; the children's refs
 * of slot s are refs[s * n .. s * n + n), one flat array so a scrape's
 * lookups stay in a few cache lines. Freed slots form a list through
 * next_free and bump their generation, so a stale ref never aliases the
 * slot's next series.
 */
#include "ps_appender_fanout.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define MAX_CHILDREN 64
#define DEF_FORGET_MS 3600000

/* One fan-out ref. Its children's refs are refs[slot * n ..]. */
struct fo_slot {
    int64_t last_ts; /* newest sample appended through it */
    uint32_t gen;
    uint32_t next_free; /* slot + 1 of the next free slot, 0: none */
    int live;
};

struct ps_appender_fanout {
    struct ps_appender base; /* first: the appender view */
    struct ps_appender **child;
    size_t n;
    int *active; /* per child: still in the open transaction */
    int in_txn;

    struct fo_slot *slots;
    uint64_t *refs;
    size_t n_slots, cap_slots;
    uint32_t free_head;
    int64_t forget_ms, max_ts, last_gc_ts;
    int64_t txn_max; /* newest timestamp of the open transaction */

    pthread_mutex_t mu; /* guards st */
    int mu_ok;
    struct ps_fanout_child_stats *st;
};

static void lock(struct ps_appender_fanout *f)
{
    if (f->mu_ok)
        pthread_mutex_lock(&f->mu);
}

static void unlock(struct ps_appender_fanout *f)
{
    if (f->mu_ok)
        pthread_mutex_unlock(&f->mu);
}

/* Counts an error of child i and keeps its message. Cannot fail. */
static void record(struct ps_appender_fanout *f, size_t i, const char *what,
                   const struct ps_err *ce, int rc)
{
    lock(f);
    f->st[i].errors++;
    snprintf(f->st[i].last_error, sizeof(f->st[i].last_error),
             "child %zu: %s: %.200s", i, what,
             ce->msg[0] ? ce->msg : ps_strerror(rc));
    unlock(f);
}

/* Takes child i out of the transaction after a hard error. */
static void drop_child(struct ps_appender_fanout *f, size_t i, const char *what,
                       const struct ps_err *ce, int rc)
{
    record(f, i, what, ce, rc);
    f->child[i]->vt->rollback(f->child[i]);
    f->active[i] = 0;
}

/* Children still in the open transaction. */
static size_t n_active(const struct ps_appender_fanout *f)
{
    size_t i, k = 0;

    for (i = 0; i < f->n; i++)
        k += f->active[i] != 0;
    return k;
}

/* The error returned when every child is out: the last child's. */
static int all_failed(int rc, const struct ps_err *ce, struct ps_err *e)
{
    return ps_err_set(e, rc < 0 ? rc : PS_EIO,
                      "fanout: every appender "
                      "failed; last: %.200s",
                      ce->msg[0] ? ce->msg : ps_strerror(rc));
}

/*
 * The slot of ref if current, else a new one with every child ref 0.
 * PS_ENOMEM leaves the tables usable (a grown slots array whose cap was
 * not raised is simply reallocated again next time).
 */
static int slot_for(struct ps_appender_fanout *f, uint64_t ref, size_t *out)
{
    size_t k = (size_t)(ref & 0xffffffffu), s;

    if (ref != 0 && k >= 1 && k <= f->n_slots && f->slots[k - 1].live &&
        f->slots[k - 1].gen == (uint32_t)(ref >> 32)) {
        *out = k - 1;
        return PS_OK;
    }
    if (f->free_head != 0) {
        s = f->free_head - 1;
        f->free_head = f->slots[s].next_free;
    } else {
        if (f->n_slots == f->cap_slots) {
            size_t nc = f->cap_slots ? f->cap_slots * 2 : 64;
            struct fo_slot *ns;
            uint64_t *nr;
            if (nc > (size_t)0xffffffffu || nc > SIZE_MAX / 8 / f->n)
                return PS_ENOMEM;
            ns = ps_realloc(f->slots, nc * sizeof(*ns));
            if (ns == NULL)
                return PS_ENOMEM;
            f->slots = ns;
            nr = ps_realloc(f->refs, nc * f->n * sizeof(*nr));
            if (nr == NULL)
                return PS_ENOMEM; /* slots grew, cap did not: harmless */
            f->refs = nr;
            f->cap_slots = nc;
        }
        s = f->n_slots++;
        f->slots[s].gen = 0;
    }
    f->slots[s].live = 1;
    f->slots[s].last_ts = INT64_MIN;
    f->slots[s].next_free = 0;
    memset(&f->refs[s * f->n], 0, f->n * sizeof(*f->refs));
    *out = s;
    return PS_OK;
}

/* The fan-out ref of slot s: its generation, and the slot + 1 (never 0). */
static uint64_t ref_of(const struct ps_appender_fanout *f, size_t s)
{
    return (uint64_t)f->slots[s].gen << 32 | (uint64_t)(s + 1);
}

/* The header's forgetting rule; on commit, never allocates. A forgotten
 * slot's children refs are simply dropped: the children forget on their
 * own terms, and a later ref 0 finds their series by labels. */
static void maybe_forget(struct ps_appender_fanout *f)
{
    int64_t limit;
    size_t s;

    if (f->forget_ms < 0 || f->max_ts == INT64_MIN)
        return;
    if (f->last_gc_ts != INT64_MIN &&
        f->max_ts - f->last_gc_ts < f->forget_ms / 2)
        return;
    f->last_gc_ts = f->max_ts;
    limit = f->max_ts - f->forget_ms;
    for (s = 0; s < f->n_slots; s++) {
        struct fo_slot *sl = &f->slots[s];
        if (!sl->live || sl->last_ts >= limit)
            continue;
        sl->live = 0;
        sl->gen++;
        sl->next_free = f->free_head;
        f->free_head = (uint32_t)(s + 1);
    }
}

/* ---- vtable ---------------------------------------------------------------
 */

/* Begins every child; those that fail sit this transaction out. Fails
 * only when none could begin. */
static int fo_begin(struct ps_appender *ap, const struct ps_labels *target,
                    struct ps_err *e)
{
    struct ps_appender_fanout *f = (struct ps_appender_fanout *)ap;
    struct ps_err ce;
    size_t i;
    int rc = PS_OK;

    if (f->in_txn)
        return ps_err_set(e, PS_ESTATE, "fanout: transaction already open");
    ps_err_init(&ce);
    for (i = 0; i < f->n; i++) {
        rc = f->child[i]->vt->begin(f->child[i], target, &ce);
        f->active[i] = rc == PS_OK;
        if (rc != PS_OK)
            record(f, i, "begin", &ce, rc);
    }
    if (n_active(f) == 0)
        return all_failed(rc, &ce, e);
    f->in_txn = 1;
    f->txn_max = INT64_MIN;
    return PS_OK;
}

/* Forwards to every child still in, each with its own ref (see the
 * header for the error rules). */
static int fo_append(struct ps_appender *ap, uint64_t ref,
                     const struct ps_labels *ls, int64_t t_ms, double v,
                     uint64_t *ref_out, struct ps_err *e)
{
    struct ps_appender_fanout *f = (struct ps_appender_fanout *)ap;
    struct ps_err ce;
    size_t s, i;
    int rc = PS_OK, soft = 0, took = 0;

    if (slot_for(f, ref, &s) != PS_OK)
        return ps_err_set(e, PS_ENOMEM, "fanout: out of memory");
    ps_err_init(&ce);
    for (i = 0; i < f->n; i++) {
        uint64_t out = 0, *cref = &f->refs[s * f->n + i];
        if (!f->active[i])
            continue;
        rc =
            f->child[i]->vt->append(f->child[i], *cref, ls, t_ms, v, &out, &ce);
        if (rc == PS_OK) {
            took = 1;
            if (out != 0)
                *cref = out;
        } else if (rc > 0) {
            if (soft == 0)
                soft = rc;
            lock(f);
            f->st[i].rejected++;
            unlock(f);
        } else {
            drop_child(f, i, "append", &ce, rc);
        }
    }
    if (n_active(f) == 0)
        return all_failed(rc, &ce, e);
    if (t_ms > f->slots[s].last_ts)
        f->slots[s].last_ts = t_ms;
    if (t_ms > f->txn_max)
        f->txn_max = t_ms;
    *ref_out = ref_of(f, s);
    return took ? PS_OK : soft;
}

/* Best effort, as the loop treats exemplars: errors are recorded only. */
static int fo_append_exemplar(struct ps_appender *ap, uint64_t ref,
                              const struct ps_labels *ls,
                              const struct ps_exemplar *ex, struct ps_err *e)
{
    struct ps_appender_fanout *f = (struct ps_appender_fanout *)ap;
    struct ps_err ce;
    size_t s, i;

    if (slot_for(f, ref, &s) != PS_OK)
        return ps_err_set(e, PS_ENOMEM, "fanout: out of memory");
    ps_err_init(&ce);
    for (i = 0; i < f->n; i++) {
        int rc;
        if (!f->active[i] || f->child[i]->vt->append_exemplar == NULL)
            continue;
        rc = f->child[i]->vt->append_exemplar(
            f->child[i], f->refs[s * f->n + i], ls, ex, &ce);
        if (rc < 0)
            record(f, i, "exemplar", &ce, rc);
    }
    return PS_OK;
}

/* Best effort, like exemplars. */
static int fo_update_metadata(struct ps_appender *ap, uint64_t ref,
                              const struct ps_labels *ls,
                              const struct ps_metadata *m, struct ps_err *e)
{
    struct ps_appender_fanout *f = (struct ps_appender_fanout *)ap;
    struct ps_err ce;
    size_t s, i;

    if (slot_for(f, ref, &s) != PS_OK)
        return ps_err_set(e, PS_ENOMEM, "fanout: out of memory");
    ps_err_init(&ce);
    for (i = 0; i < f->n; i++) {
        int rc;
        if (!f->active[i] || f->child[i]->vt->update_metadata == NULL)
            continue;
        rc = f->child[i]->vt->update_metadata(
            f->child[i], f->refs[s * f->n + i], ls, m, &ce);
        if (rc < 0)
            record(f, i, "metadata", &ce, rc);
    }
    return PS_OK;
}

/* Commits every child still in; PS_OK if at least one committed. The
 * transaction is over either way (a failed child's commit is its own
 * business: the appender contract leaves it closed). */
static int fo_commit(struct ps_appender *ap, struct ps_err *e)
{
    struct ps_appender_fanout *f = (struct ps_appender_fanout *)ap;
    struct ps_err ce;
    size_t i, done = 0;
    int rc = PS_ESTATE;

    if (!f->in_txn)
        return ps_err_set(e, PS_ESTATE, "fanout: commit without begin");
    f->in_txn = 0;
    ps_err_init(&ce);
    for (i = 0; i < f->n; i++) {
        if (!f->active[i])
            continue;
        f->active[i] = 0;
        rc = f->child[i]->vt->commit(f->child[i], &ce);
        if (rc != PS_OK) {
            record(f, i, "commit", &ce, rc);
            continue;
        }
        done++;
        lock(f);
        f->st[i].commits++;
        unlock(f);
    }
    if (f->txn_max > f->max_ts)
        f->max_ts = f->txn_max;
    maybe_forget(f);
    if (done == 0)
        return all_failed(rc, &ce, e);
    return PS_OK;
}

/* Rolls back the children still in (failed ones already were). */
static void fo_rollback(struct ps_appender *ap)
{
    struct ps_appender_fanout *f = (struct ps_appender_fanout *)ap;
    size_t i;

    for (i = 0; i < f->n; i++) {
        if (f->active[i])
            f->child[i]->vt->rollback(f->child[i]);
        f->active[i] = 0;
    }
    f->in_txn = 0;
}

static void fo_free(struct ps_appender *ap)
{
    ps_appender_fanout_free((struct ps_appender_fanout *)ap);
}

static const struct ps_appender_vt fo_vt = {
    fo_begin,    fo_append, fo_append_exemplar, fo_update_metadata, fo_commit,
    fo_rollback, fo_free};

/* ---- construction -------------------------------------------------------- */

int ps_appender_fanout_new(struct ps_appender_fanout **out,
                           const struct ps_appender_fanout_opts *o,
                           struct ps_err *e)
{
    struct ps_appender_fanout *f;
    size_t i;

    if (out == NULL || o == NULL || o->children == NULL || o->n_children == 0 ||
        o->n_children > MAX_CHILDREN)
        return ps_err_set(e, PS_EINVAL, "fanout: 1 to %d appenders needed",
                          MAX_CHILDREN);
    for (i = 0; i < o->n_children; i++)
        if (o->children[i] == NULL)
            return ps_err_set(e, PS_EINVAL, "fanout: appender %zu is NULL", i);
    f = ps_calloc(1, sizeof(*f));
    if (f == NULL)
        return ps_err_set(e, PS_ENOMEM, "fanout: out of memory");
    f->base.vt = &fo_vt;
    f->n = o->n_children;
    f->forget_ms = o->forget_after_ms ? o->forget_after_ms : DEF_FORGET_MS;
    f->max_ts = f->last_gc_ts = INT64_MIN;
    f->child = ps_calloc(f->n, sizeof(*f->child));
    f->active = ps_calloc(f->n, sizeof(*f->active));
    f->st = ps_calloc(f->n, sizeof(*f->st));
    f->mu_ok = pthread_mutex_init(&f->mu, NULL) == 0;
    if (f->child == NULL || f->active == NULL || f->st == NULL || !f->mu_ok) {
        ps_appender_fanout_free(f);
        return ps_err_set(e, PS_ENOMEM, "fanout: out of memory");
    }
    memcpy(f->child, o->children, f->n * sizeof(*f->child));
    *out = f;
    return PS_OK;
}

void ps_appender_fanout_free(struct ps_appender_fanout *f)
{
    if (f == NULL)
        return;
    if (f->in_txn)
        fo_rollback(&f->base); /* children must not stay mid-transaction */
    ps_free(f->child);
    ps_free(f->active);
    ps_free(f->st);
    ps_free(f->slots);
    ps_free(f->refs);
    if (f->mu_ok)
        pthread_mutex_destroy(&f->mu);
    ps_free(f);
}

struct ps_appender *ps_appender_fanout_appender(struct ps_appender_fanout *f)
{
    return &f->base;
}

int ps_appender_fanout_child_stats(struct ps_appender_fanout *f, size_t i,
                                   struct ps_fanout_child_stats *st)
{
    if (i >= f->n)
        return PS_EINVAL;
    lock(f);
    *st = f->st[i];
    unlock(f);
    return PS_OK;
}
