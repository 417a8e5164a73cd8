/*
 * ps_hmap.c: linear probing with backward-shift deletion. See ps_hmap.h.
 *
 * Invariant: every entry lies between its home slot (hash & mask) and the
 * first empty slot after it, with no empty slot in between. Backward shift
 * keeps that true on removal without tombstones.
 */
#include "ps_hmap.h"

#include <string.h>
#include <xxhash.h>

#define MIN_CAP 8u

/* 0 marks an empty slot, so a caller hash of 0 is stored as 1. */
static uint64_t fix_hash(uint64_t h)
{
    return h ? h : 1u;
}

void ps_hmap_init(struct ps_hmap *m)
{
    m->v = NULL;
    m->n = 0;
    m->cap = 0;
}

void ps_hmap_cleanup(struct ps_hmap *m)
{
    ps_free(m->v);
    ps_hmap_init(m);
}

void ps_hmap_clear(struct ps_hmap *m)
{
    if (m->v != NULL)
        memset(m->v, 0, m->cap * sizeof(*m->v));
    m->n = 0;
}

/* Places (h, val) in the first empty slot of its probe sequence; the table
 * has room. Returns the slot. */
static struct ps_hmap_slot *place(struct ps_hmap_slot *v, size_t mask,
                                  uint64_t h, uint64_t val)
{
    size_t i = (size_t)h & mask;

    while (v[i].hash != 0)
        i = (i + 1) & mask;
    v[i].hash = h;
    v[i].val = val;
    return &v[i];
}

/* Rehashes into a table of `ncap` slots. PS_ENOMEM leaves m unchanged. */
static int rehash(struct ps_hmap *m, size_t ncap)
{
    struct ps_hmap_slot *nv = ps_calloc(ncap, sizeof(*nv));
    size_t i;

    if (nv == NULL)
        return PS_ENOMEM;
    for (i = 0; i < m->cap; i++)
        if (m->v[i].hash != 0)
            place(nv, ncap - 1, m->v[i].hash, m->v[i].val);
    ps_free(m->v);
    m->v = nv;
    m->cap = ncap;
    return PS_OK;
}

/* Smallest power-of-two capacity that holds n entries at <= 3/4 load. */
static int cap_for(size_t n, size_t *out)
{
    size_t c = MIN_CAP;

    while (c - c / 4 < n) {
        if (c > ((size_t)-1 / 2) / sizeof(struct ps_hmap_slot))
            return PS_ENOMEM; /* would overflow the byte size */
        c *= 2;
    }
    *out = c;
    return PS_OK;
}

int ps_hmap_reserve(struct ps_hmap *m, size_t n)
{
    size_t c;

    if (cap_for(n, &c) != PS_OK)
        return PS_ENOMEM;
    if (c <= m->cap)
        return PS_OK;
    return rehash(m, c);
}

/* Index of the slot matching (hash, key), or m->cap when absent. */
static size_t find_slot(const struct ps_hmap *m, uint64_t hash,
                        ps_hmap_eq_fn eq, const void *key, void *ud)
{
    size_t mask, i;

    if (m->n == 0)
        return m->cap;
    hash = fix_hash(hash);
    mask = m->cap - 1;
    for (i = (size_t)hash & mask; m->v[i].hash != 0; i = (i + 1) & mask)
        if (m->v[i].hash == hash && eq(key, m->v[i].val, ud))
            return i;
    return m->cap;
}

uint64_t *ps_hmap_find(const struct ps_hmap *m, uint64_t hash, ps_hmap_eq_fn eq,
                       const void *key, void *ud)
{
    size_t i = find_slot(m, hash, eq, key, ud);

    return i < m->cap ? &m->v[i].val : NULL;
}

int ps_hmap_insert(struct ps_hmap *m, uint64_t hash, uint64_t val)
{
    int rc = ps_hmap_reserve(m, m->n + 1);

    if (rc != PS_OK)
        return rc;
    place(m->v, m->cap - 1, fix_hash(hash), val);
    m->n++;
    return PS_OK;
}

int ps_hmap_upsert(struct ps_hmap *m, uint64_t hash, ps_hmap_eq_fn eq,
                   const void *key, void *ud, uint64_t val, uint64_t **valp,
                   int *found)
{
    size_t mask, i;
    int rc;

    /* Grow first, so the probe below ends on the slot we fill. Growing when
     * the key turns out to be present costs nothing but an early rehash. */
    rc = ps_hmap_reserve(m, m->n + 1);
    if (rc != PS_OK)
        return rc;
    hash = fix_hash(hash);
    mask = m->cap - 1;
    for (i = (size_t)hash & mask; m->v[i].hash != 0; i = (i + 1) & mask) {
        if (m->v[i].hash == hash && eq(key, m->v[i].val, ud)) {
            *valp = &m->v[i].val;
            *found = 1;
            return PS_OK;
        }
    }
    m->v[i].hash = hash;
    m->v[i].val = val;
    m->n++;
    *valp = &m->v[i].val;
    *found = 0;
    return PS_OK;
}

/* Empties slot i and shifts the rest of its cluster back so that no entry
 * is separated from its home slot by an empty slot. */
static void delete_at(struct ps_hmap *m, size_t i)
{
    size_t mask = m->cap - 1, j = i, home;

    for (;;) {
        j = (j + 1) & mask;
        if (m->v[j].hash == 0)
            break;
        home = (size_t)m->v[j].hash & mask;
        /* Move j into the hole i unless its home lies cyclically in
         * (i, j]: then it would land before its home. */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->v[i] = m->v[j];
            i = j;
        }
    }
    m->v[i].hash = 0;
    m->v[i].val = 0;
    m->n--;
}

int ps_hmap_remove(struct ps_hmap *m, uint64_t hash, ps_hmap_eq_fn eq,
                   const void *key, void *ud, uint64_t *val_out)
{
    size_t i = find_slot(m, hash, eq, key, ud);

    if (i >= m->cap)
        return 0;
    if (val_out != NULL)
        *val_out = m->v[i].val;
    delete_at(m, i);
    return 1;
}

size_t ps_hmap_remove_if(struct ps_hmap *m, ps_hmap_drop_fn drop, void *ud)
{
    size_t mask, start, i, k, removed = 0;

    if (m->n == 0)
        return 0;
    mask = m->cap - 1;
    /* Walk from just after an empty slot (one exists: load <= 3/4).
     * Backward shift never moves an entry across an empty slot, so a
     * removal at i only pulls not-yet-visited entries into i, which is then
     * examined again: each entry is seen exactly once. */
    for (start = 0; m->v[start].hash != 0; start++)
        ;
    i = (start + 1) & mask;
    for (k = 0; k + 1 < m->cap; k++) {
        while (m->v[i].hash != 0 && drop(m->v[i].hash, m->v[i].val, ud)) {
            delete_at(m, i);
            removed++;
        }
        i = (i + 1) & mask;
    }
    return removed;
}

int ps_hmap_next(const struct ps_hmap *m, size_t *it, uint64_t *hash,
                 uint64_t *val)
{
    size_t i;

    for (i = *it; i < m->cap; i++) {
        if (m->v[i].hash != 0) {
            *hash = m->v[i].hash;
            *val = m->v[i].val;
            *it = i + 1;
            return 1;
        }
    }
    *it = m->cap;
    return 0;
}

/* ---- label-set hashing ------------------------------------------------ */

/* Bytes are gathered into a stack buffer and hashed in one XXH3 call;
 * larger sets are hashed in buffer-sized chunks, each chunk's hash seeding
 * the next. Deterministic for a given label set. */
#define HBUF 1024

struct hstate {
    unsigned char buf[HBUF];
    size_t len;
    uint64_t seed;
};

static void feed(struct hstate *s, const void *p, size_t n)
{
    const unsigned char *b = p;

    while (n > 0) {
        size_t take = HBUF - s->len;

        if (take > n)
            take = n;
        memcpy(s->buf + s->len, b, take);
        s->len += take;
        b += take;
        n -= take;
        if (s->len == HBUF) {
            s->seed = XXH3_64bits_withSeed(s->buf, s->len, s->seed);
            s->len = 0;
        }
    }
}

uint64_t ps_labels_hash_v(const struct ps_label *v, size_t n)
{
    static const unsigned char sep = 0xff; /* never valid in UTF-8 */
    struct hstate s;
    size_t i, len = 0;

    /* Fast path, the common case: everything fits the buffer, one pass of
     * plain copies and one XXH3 call (4x faster than going through feed,
     * whose state lives in memory). Same bytes, same hash as the slow path
     * since the slow path only splits at HBUF boundaries. */
    for (i = 0; i < n && len <= HBUF; i++)
        len += v[i].name_len + v[i].value_len + 2;
    if (len <= HBUF) {
        unsigned char *p = s.buf;

        for (i = 0; i < n; i++) {
            if (v[i].name_len > 0) /* empty views may carry NULL */
                memcpy(p, v[i].name, v[i].name_len);
            p += v[i].name_len;
            *p++ = sep;
            if (v[i].value_len > 0)
                memcpy(p, v[i].value, v[i].value_len);
            p += v[i].value_len;
            *p++ = sep;
        }
        return XXH3_64bits_withSeed(s.buf, (size_t)(p - s.buf), 0);
    }
    s.len = 0;
    s.seed = 0;
    for (i = 0; i < n; i++) {
        feed(&s, v[i].name, v[i].name_len);
        feed(&s, &sep, 1);
        feed(&s, v[i].value, v[i].value_len);
        feed(&s, &sep, 1);
    }
    return XXH3_64bits_withSeed(s.buf, s.len, s.seed);
}

uint64_t ps_labels_hash(const struct ps_labels *ls)
{
    return ps_labels_hash_v(ls->v, ls->n);
}

int ps_labels_equal_v(const struct ps_label *a, size_t an,
                      const struct ps_label *b, size_t bn)
{
    size_t i;

    if (an != bn)
        return 0;
    for (i = 0; i < an; i++) {
        if (a[i].name_len != b[i].name_len ||
            a[i].value_len != b[i].value_len ||
            (a[i].name_len > 0 &&
             memcmp(a[i].name, b[i].name, a[i].name_len) != 0) ||
            (a[i].value_len > 0 &&
             memcmp(a[i].value, b[i].value, a[i].value_len) != 0))
            return 0;
    }
    return 1;
}

struct ps_label *ps_label_block_dup(const struct ps_label *v, size_t n)
{
    size_t bytes = n * sizeof(struct ps_label), i;
    struct ps_label *d;
    char *p;

    if (n == 0 || n > ((size_t)-1 / 2) / sizeof(struct ps_label))
        return NULL;
    for (i = 0; i < n; i++) {
        size_t add = v[i].name_len + v[i].value_len + 2;

        if (add < v[i].name_len || bytes > (size_t)-1 - add)
            return NULL; /* size overflow: treat as out of memory */
        bytes += add;
    }
    d = ps_malloc(bytes);
    if (d == NULL)
        return NULL;
    p = (char *)(d + n);
    for (i = 0; i < n; i++) {
        d[i].name = p;
        d[i].name_len = v[i].name_len;
        if (v[i].name_len > 0)
            memcpy(p, v[i].name, v[i].name_len);
        p[v[i].name_len] = '\0';
        p += v[i].name_len + 1;
        d[i].value = p;
        d[i].value_len = v[i].value_len;
        if (v[i].value_len > 0)
            memcpy(p, v[i].value, v[i].value_len);
        p[v[i].value_len] = '\0';
        p += v[i].value_len + 1;
    }
    return d;
}
