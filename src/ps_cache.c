/*
 * ps_cache.c: the scrape cache (Prometheus scrapeCache). See ps_cache.h.
 *
 * Memory layout: a series entry is one allocation holding the entry, its
 * label array, the raw key bytes and the label strings, so a new series
 * costs one malloc and a cache hit costs none. The maps store pointers
 * (cast to uint64_t) and compare keys through ps_hmap's callback.
 *
 * Iterations: c->iter identifies the current scrape and is incremented by
 * every ps_cache_iter_done(). Prometheus increments it only when it
 * flushes, which after a failed (rolled back) scrape leaves the touched
 * entries looking "already scraped" to the next scrape; counting every
 * scrape avoids that and changes nothing else (eviction compares with the
 * iteration that just ended either way).
 */
#include "ps_cache.h"

#include <string.h>
#include <xxhash.h>

struct dropped_ent {
    uint64_t last_iter;
    size_t key_len;
    char key[];
};

struct meta_ent {
    struct ps_cache_meta m;
    size_t name_len;
    char name[];
};

/* The hash of raw series bytes, metadata family names and dropped keys. */
static uint64_t key_hash(struct ps_str k)
{
    return XXH3_64bits(k.p, k.n);
}

/* ps_hmap equality callbacks: key is the caller's lookup key, val the
 * stored pointer. */
static int series_eq(const void *key, uint64_t val, void *ud)
{
    const struct ps_str *k = key;
    const struct ps_cache_entry *e = (const void *)(uintptr_t)val;

    (void)ud;
    return e->key_len == k->n && memcmp(e->key, k->p, k->n) == 0;
}

static int dropped_eq(const void *key, uint64_t val, void *ud)
{
    const struct ps_str *k = key;
    const struct dropped_ent *d = (const void *)(uintptr_t)val;

    (void)ud;
    return d->key_len == k->n && memcmp(d->key, k->p, k->n) == 0;
}

static int meta_eq(const void *key, uint64_t val, void *ud)
{
    const struct ps_str *k = key;
    const struct meta_ent *m = (const void *)(uintptr_t)val;

    (void)ud;
    return m->name_len == k->n && memcmp(m->name, k->p, k->n) == 0;
}

/* cur/prev compare final label sets (keys are struct ps_labels *). */
static int lset_eq(const void *key, uint64_t val, void *ud)
{
    const struct ps_labels *a = key;
    const struct ps_cache_entry *e = (const void *)(uintptr_t)val;

    (void)ud;
    return ps_labels_equal_v(a->v, a->n, e->lset.v, e->lset.n);
}

/* Empty cache, no allocation. */
void ps_cache_init(struct ps_cache *c)
{
    memset(c, 0, sizeof(*c));
    c->miss_pos = SIZE_MAX;
    ps_hmap_init(&c->series);
    ps_hmap_init(&c->dropped);
    ps_hmap_init(&c->cur);
    ps_hmap_init(&c->prev);
    ps_hmap_init(&c->meta);
}

/* Frees one metadata entry and its strings; NULL-safe. */
static void meta_free(struct meta_ent *m)
{
    if (m == NULL)
        return;
    ps_free(m->m.help);
    ps_free(m->m.unit);
    ps_free(m);
}

/* remove_if callbacks that free every entry (cleanup). */
static int free_series(uint64_t h, uint64_t v, void *ud)
{
    (void)h;
    (void)ud;
    ps_free((void *)(uintptr_t)v);
    return 1;
}

static int free_meta(uint64_t h, uint64_t v, void *ud)
{
    (void)h;
    (void)ud;
    meta_free((void *)(uintptr_t)v);
    return 1;
}

/* Frees every entry and map; the cache is left as after init. */
void ps_cache_cleanup(struct ps_cache *c)
{
    /* cur/prev only borrow series entries: clear them first */
    ps_hmap_cleanup(&c->cur);
    ps_hmap_cleanup(&c->prev);
    ps_hmap_remove_if(&c->series, free_series, NULL);
    ps_hmap_remove_if(&c->dropped, free_series, NULL);
    ps_hmap_remove_if(&c->meta, free_meta, NULL);
    ps_hmap_cleanup(&c->series);
    ps_hmap_cleanup(&c->dropped);
    ps_hmap_cleanup(&c->meta);
    ps_free(c->order);
    ps_free(c->order_next);
    ps_cache_init(c);
}

/* The per-sample path on a hit. First the entry the previous scrape
 * found at this position (targets expose their series in a stable order):
 * one length check and one memcmp, no hashing. Else one hash, one probe
 * (the slot's full hash is compared before the key), one memcmp. The
 * result is recorded for the next scrape, within the recorded array's
 * capacity (grown by ps_cache_add only): no allocation. */
struct ps_cache_entry *ps_cache_get(struct ps_cache *c, struct ps_str raw,
                                    int *already)
{
    size_t pos = c->pos++;
    struct ps_cache_entry *e = NULL;

    if (pos < c->order_n)
        e = c->order[pos];
    if (e == NULL || e->key_len != raw.n ||
        (raw.n > 0 && memcmp(e->key, raw.p, raw.n) != 0)) {
        uint64_t *v =
            ps_hmap_find(&c->series, key_hash(raw), series_eq, &raw, NULL);
        e = v != NULL ? (void *)(uintptr_t)*v : NULL;
    }
    if (pos < c->order_next_cap) {
        c->order_next[pos] = e;
        c->order_next_n = pos + 1;
    }
    if (e == NULL) {
        c->miss_pos = pos;
        c->miss_p = raw.p;
        c->miss_n = raw.n;
        return NULL;
    }
    *already = e->last_iter == c->iter;
    e->last_iter = c->iter;
    return e;
}

/* Records e at the position of the miss it fills (the ps_cache_add right
 * after a ps_cache_get of the same raw bytes), growing order_next if
 * needed. Best effort: on ENOMEM the position is just not recorded. */
static void order_record(struct ps_cache *c, struct ps_str raw,
                         struct ps_cache_entry *e)
{
    size_t pos = c->miss_pos, i;

    c->miss_pos = SIZE_MAX;
    if (pos == SIZE_MAX || raw.p != c->miss_p || raw.n != c->miss_n)
        return;
    if (pos >= c->order_next_cap) {
        size_t cap = c->order_next_cap ? c->order_next_cap * 2 : 64;
        struct ps_cache_entry **a;
        while (cap <= pos)
            cap *= 2;
        a = ps_realloc(c->order_next, cap * sizeof(*a));
        if (a == NULL)
            return;
        c->order_next = a;
        c->order_next_cap = cap;
        /* The other buffer (recorded into by the next scrape) too, so
         * that a scrape of only hits can record all of them. */
        a = ps_realloc(c->order, cap * sizeof(*a));
        if (a != NULL) {
            c->order = a;
            c->order_cap = cap;
        }
    }
    for (i = c->order_next_n; i < pos; i++)
        c->order_next[i] = NULL; /* gets past the old capacity */
    c->order_next[pos] = e;
    if (c->order_next_n <= pos)
        c->order_next_n = pos + 1;
}

int ps_cache_get_dropped(struct ps_cache *c, struct ps_str raw)
{
    uint64_t *v;

    if (ps_hmap_count(&c->dropped) == 0)
        return 0; /* the common case: no metric relabel drops at all */
    v = ps_hmap_find(&c->dropped, key_hash(raw), dropped_eq, &raw, NULL);
    if (v == NULL)
        return 0;
    ((struct dropped_ent *)(uintptr_t)*v)->last_iter = c->iter;
    return 1;
}

/* One allocation (entry + key). On ENOMEM nothing is cached, so the
 * series is simply relabeled again next time. */
int ps_cache_add_dropped(struct ps_cache *c, struct ps_str raw)
{
    struct dropped_ent *d = ps_malloc(sizeof(*d) + raw.n + 1);
    uint64_t *vp;
    int found;

    if (d == NULL)
        return PS_ENOMEM;
    d->last_iter = c->iter;
    d->key_len = raw.n;
    if (raw.n > 0)
        memcpy(d->key, raw.p, raw.n);
    d->key[raw.n] = '\0';
    if (ps_hmap_upsert(&c->dropped, key_hash(raw), dropped_eq, &raw, NULL,
                       (uint64_t)(uintptr_t)d, &vp, &found) != PS_OK) {
        ps_free(d);
        return PS_ENOMEM;
    }
    if (found) { /* already there: keep the old one, refresh it */
        ((struct dropped_ent *)(uintptr_t)*vp)->last_iter = c->iter;
        ps_free(d);
    }
    return PS_OK;
}

/* Builds one block: entry, key (next to the fields a hit reads), label
 * array (aligned), strings. NULL on ENOMEM. */
static struct ps_cache_entry *entry_new(struct ps_str raw,
                                        const struct ps_labels *lset)
{
    size_t i, strs = 0, off;
    struct ps_cache_entry *e;
    char *p;

    for (i = 0; i < lset->n; i++)
        strs += lset->v[i].name_len + lset->v[i].value_len + 2;
    off = sizeof(*e) + raw.n + 1;
    off = (off + _Alignof(struct ps_label) - 1) &
          ~(size_t)(_Alignof(struct ps_label) - 1);
    e = ps_malloc(off + lset->n * sizeof(struct ps_label) + strs);
    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof(*e));
    p = (char *)(e + 1);
    if (raw.n > 0)
        memcpy(p, raw.p, raw.n);
    p[raw.n] = '\0';
    e->key = p;
    e->key_len = raw.n;
    e->lset.v = (struct ps_label *)(void *)((char *)e + off);
    e->lset.n = e->lset.cap = lset->n;
    ps_strstore_init(&e->lset.store);
    p = (char *)(e->lset.v + lset->n);
    for (i = 0; i < lset->n; i++) {
        const struct ps_label *l = &lset->v[i];
        struct ps_label *d = &e->lset.v[i];
        memcpy(p, l->name, l->name_len);
        p[l->name_len] = '\0';
        d->name = p;
        d->name_len = l->name_len;
        p += l->name_len + 1;
        if (l->value_len > 0)
            memcpy(p, l->value, l->value_len);
        p[l->value_len] = '\0';
        d->value = p;
        d->value_len = l->value_len;
        p += l->value_len + 1;
    }
    e->hash = ps_labels_hash(&e->lset);
    return e;
}

/* See ps_cache.h. One allocation per new series. */
int ps_cache_add(struct ps_cache *c, struct ps_str raw, uint64_t ref,
                 const struct ps_labels *lset, struct ps_cache_entry **out)
{
    struct ps_cache_entry *e = entry_new(raw, lset);
    uint64_t *vp;
    int found;

    if (e == NULL)
        return PS_ENOMEM;
    e->ref = ref;
    e->last_iter = c->iter;
    if (ps_hmap_upsert(&c->series, key_hash(raw), series_eq, &raw, NULL,
                       (uint64_t)(uintptr_t)e, &vp, &found) != PS_OK) {
        ps_free(e);
        return PS_ENOMEM;
    }
    if (found) {
        /* Replacing an entry that cur/prev may point at would leave them
         * dangling: keep the old entry and update it instead. The loop
         * only adds after a miss, so this is a defensive path. */
        struct ps_cache_entry *old = (void *)(uintptr_t)*vp;
        ps_free(e);
        old->ref = ref;
        old->last_iter = c->iter;
        e = old;
    }
    order_record(c, raw, e);
    if (out != NULL)
        *out = e;
    return PS_OK;
}

/* Puts the entry in cur. Allocates only when cur grows beyond its
 * largest size so far (the map keeps its capacity across clears). */
int ps_cache_track(struct ps_cache *c, struct ps_cache_entry *ent)
{
    uint64_t *vp;
    int found;

    if (ent->cur_iter == c->iter + 1)
        return PS_OK;
    if (ps_hmap_upsert(&c->cur, ent->hash, lset_eq, &ent->lset, NULL,
                       (uint64_t)(uintptr_t)ent, &vp, &found) != PS_OK)
        return PS_ENOMEM;
    /* Another raw form with the same final labels may already be there;
     * the newest ref wins, as in Prometheus's map assignment. */
    *vp = (uint64_t)(uintptr_t)ent;
    ent->cur_iter = c->iter + 1;
    return PS_OK;
}

/* See ps_cache.h. prev is cleared by the next iter_done's swap before
 * any eviction, so the entry cannot dangle there. */
int ps_cache_track_prev(struct ps_cache *c, struct ps_cache_entry *ent)
{
    uint64_t *vp;
    int found;

    if (ps_hmap_upsert(&c->prev, ent->hash, lset_eq, &ent->lset, NULL,
                       (uint64_t)(uintptr_t)ent, &vp, &found) != PS_OK)
        return PS_ENOMEM;
    *vp = (uint64_t)(uintptr_t)ent;
    return PS_OK;
}

/* See ps_cache.h. */
void ps_cache_drop_current(struct ps_cache *c)
{
    size_t it = 0;
    uint64_t h, v;

    ps_hmap_clear(&c->cur);
    /* Reset the "tracked in this iteration" marks so a later track in the
     * same iteration is not skipped. Only failed scrapes get here. */
    while (ps_hmap_next(&c->series, &it, &h, &v))
        ((struct ps_cache_entry *)(uintptr_t)v)->cur_iter = 0;
}

/* prev minus cur, by final labels: O(1) per series tracked again (its
 * cur_iter stamp), a cur lookup for the others. Never allocates. */
int ps_cache_for_each_stale(struct ps_cache *c, ps_cache_stale_fn fn, void *ud)
{
    size_t it = 0;
    uint64_t h, v;

    while (ps_hmap_next(&c->prev, &it, &h, &v)) {
        const struct ps_cache_entry *e = (const void *)(uintptr_t)v;
        int rc;
        /* Tracked in this scrape itself (the steady state): its labels
         * are in cur, no lookup nor label comparison needed. Otherwise
         * another raw form may have the same final labels: look. */
        if (e->cur_iter == c->iter + 1)
            continue;
        if (ps_hmap_count(&c->cur) > 0 &&
            ps_hmap_find(&c->cur, e->hash, lset_eq, &e->lset, NULL) != NULL)
            continue;
        rc = fn(e->ref, &e->lset, ud);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- metadata ---------------------------------------------------------- */

/* Finds or creates the family's entry. NULL on ENOMEM. */
static struct meta_ent *meta_get(struct ps_cache *c, struct ps_str family)
{
    uint64_t h = key_hash(family), *vp;
    struct meta_ent *m;

    vp = ps_hmap_find(&c->meta, h, meta_eq, &family, NULL);
    if (vp != NULL) {
        m = (void *)(uintptr_t)*vp;
        m->m.last_iter = c->iter;
        return m;
    }
    m = ps_calloc(1, sizeof(*m) + family.n + 1);
    if (m == NULL)
        return NULL;
    m->m.help = ps_strndup("", 0);
    m->m.unit = ps_strndup("", 0);
    if (m->m.help == NULL || m->m.unit == NULL) {
        meta_free(m);
        return NULL;
    }
    m->m.type = PS_MTYPE_UNKNOWN;
    m->m.last_iter = c->iter;
    m->m.last_iter_change = c->iter;
    c->meta_change = c->iter + 1;
    m->name_len = family.n;
    if (family.n > 0)
        memcpy(m->name, family.p, family.n);
    if (ps_hmap_insert(&c->meta, h, (uint64_t)(uintptr_t)m) != PS_OK) {
        meta_free(m);
        return NULL;
    }
    return m;
}

/* Replaces *dst with s if different; marks the change. */
static int meta_str(struct ps_cache *c, struct meta_ent *m, char **dst,
                    struct ps_str s)
{
    char *n;

    if (strlen(*dst) == s.n && (s.n == 0 || memcmp(*dst, s.p, s.n) == 0))
        return PS_OK;
    n = ps_strndup(s.n ? s.p : "", s.n);
    if (n == NULL)
        return PS_ENOMEM;
    ps_free(*dst);
    *dst = n;
    m->m.last_iter_change = c->iter;
    c->meta_change = c->iter + 1;
    return PS_OK;
}

/* Metadata setters: create the family on first sight (PS_ENOMEM if that
 * fails), mark it seen, and record a change of value. */
int ps_cache_set_type(struct ps_cache *c, struct ps_str family, enum ps_mtype t)
{
    struct meta_ent *m = meta_get(c, family);

    if (m == NULL)
        return PS_ENOMEM;
    if (m->m.type != t) {
        m->m.type = t;
        m->m.last_iter_change = c->iter;
        c->meta_change = c->iter + 1;
    }
    return PS_OK;
}

int ps_cache_set_help(struct ps_cache *c, struct ps_str family,
                      struct ps_str help)
{
    struct meta_ent *m = meta_get(c, family);

    return m ? meta_str(c, m, &m->m.help, help) : PS_ENOMEM;
}

int ps_cache_set_unit(struct ps_cache *c, struct ps_str family,
                      struct ps_str unit)
{
    struct meta_ent *m = meta_get(c, family);

    return m ? meta_str(c, m, &m->m.unit, unit) : PS_ENOMEM;
}

/* Borrowed; valid until the entry is evicted by iter_done. */
const struct ps_cache_meta *ps_cache_meta(const struct ps_cache *c,
                                          struct ps_str family)
{
    uint64_t *vp;

    if (ps_hmap_count(&c->meta) == 0)
        return NULL;
    vp = ps_hmap_find(&c->meta, key_hash(family), meta_eq, &family, NULL);
    return vp ? &((struct meta_ent *)(uintptr_t)*vp)->m : NULL;
}

/* ---- end of a scrape --------------------------------------------------- */

/* remove_if callbacks of the flush: drop and free what the iteration
 * that just ended did not see. */
static int evict_series(uint64_t h, uint64_t v, void *ud)
{
    const struct ps_cache *c = ud;
    struct ps_cache_entry *e = (void *)(uintptr_t)v;

    (void)h;
    if (e->last_iter == c->iter)
        return 0;
    ps_free(e);
    return 1;
}

static int evict_dropped(uint64_t h, uint64_t v, void *ud)
{
    const struct ps_cache *c = ud;
    struct dropped_ent *d = (void *)(uintptr_t)v;

    (void)h;
    if (d->last_iter == c->iter)
        return 0;
    ps_free(d);
    return 1;
}

static int evict_meta(uint64_t h, uint64_t v, void *ud)
{
    const struct ps_cache *c = ud;
    struct meta_ent *m = (void *)(uintptr_t)v;

    (void)h;
    /* Metadata outlives its metric by 10 scrapes, as in Prometheus. */
    if (c->iter - m->m.last_iter <= 10)
        return 0;
    meta_free(m);
    return 1;
}

/* The recorded order becomes the one to try; the old array is reused. */
static void order_swap(struct ps_cache *c)
{
    struct ps_cache_entry **a = c->order;
    size_t cap = c->order_cap;

    c->order = c->order_next;
    c->order_cap = c->order_next_cap;
    c->order_n = c->order_next_n;
    c->order_next = a;
    c->order_next_cap = cap;
    c->order_next_n = 0;
    c->pos = 0;
    c->miss_pos = SIZE_MAX;
}

/* See ps_cache.h; Prometheus's iterDone with the counter fix described
 * at the top of this file. */
void ps_cache_iter_done(struct ps_cache *c, int flush)
{
    size_t count = ps_hmap_count(&c->series) + ps_hmap_count(&c->dropped) +
                   ps_hmap_count(&c->meta);
    struct ps_hmap tmp;

    if (flush) {
        c->successful_count = count;
    } else if (count > c->successful_count * 2 + 1000) {
        /* Failed scrapes with varying series would grow the cache without
         * bound: force a flush past twice the last good size + 1000. */
        flush = 1;
        c->forced_flushes++;
    }
    /* Swap first, so that prev (soon cleared) is the only map that may
     * still point at evicted entries, then clear it before evicting. */
    tmp = c->prev;
    c->prev = c->cur;
    c->cur = tmp;
    ps_hmap_clear(&c->cur);
    if (flush) {
        /* The recorded order must not keep what is about to be evicted
         * (e.g. an entry whose last_iter the loop set back). */
        size_t i;
        for (i = 0; i < c->order_next_n; i++)
            if (c->order_next[i] != NULL &&
                c->order_next[i]->last_iter != c->iter)
                c->order_next[i] = NULL;
    }
    order_swap(c);
    if (flush) {
        ps_hmap_remove_if(&c->series, evict_series, c);
        ps_hmap_remove_if(&c->dropped, evict_dropped, c);
        ps_hmap_remove_if(&c->meta, evict_meta, c);
    }
    c->iter++;
}

/* Sizes, for reporting and tests. */
size_t ps_cache_nseries(const struct ps_cache *c)
{
    return ps_hmap_count(&c->series);
}

size_t ps_cache_ndropped(const struct ps_cache *c)
{
    return ps_hmap_count(&c->dropped);
}

size_t ps_cache_nmeta(const struct ps_cache *c)
{
    return ps_hmap_count(&c->meta);
}
