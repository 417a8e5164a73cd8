/*
 * ps_hmap: a small open-addressing hash map keyed by a caller-computed
 * 64-bit hash, with caller-supplied equality.
 *
 * The map stores only (hash, value) pairs, 16 bytes a slot; it never sees
 * the keys. The value is a uint64_t: typically an index or a ref into the
 * caller's own array of entries (or a pointer cast through uintptr_t).
 * Lookups hand the equality callback the wanted key and the value of each
 * candidate slot whose hash matches, so the caller compares its key with the
 * entry the value designates. Full hash equality is checked before the
 * callback, so the callback runs almost only on true matches.
 *
 * Linear probing, deletion by backward shift (no tombstones, so lookups
 * never slow down after churn), growth by doubling when the load would
 * exceed 3/4. Capacity is a power of two; the map never shrinks except by
 * _cleanup. A hash value of 0 is allowed (stored internally as 1, which
 * only costs an extra equality call when both occur).
 *
 * Pointers to values (uint64_t *) returned by find/upsert stay valid until
 * the next insert, upsert, reserve, remove or clear on the same map.
 *
 * Not thread-safe: one map, one thread at a time (the caller locks).
 *
 * Also here: ps_labels_hash(), the one hash of a label set shared by the
 * memory appender and the scrape cache.
 */
#ifndef PS_HMAP_H
#define PS_HMAP_H

#include "ps_core.h"
#include "ps_labels.h"

#include <stddef.h>
#include <stdint.h>

/* Returns non-zero when `key` (the caller's lookup key, passed through
 * untouched) designates the entry whose stored value is `val`. */
typedef int (*ps_hmap_eq_fn)(const void *key, uint64_t val, void *ud);

struct ps_hmap_slot {
    uint64_t hash; /* 0: empty slot */
    uint64_t val;
};

struct ps_hmap {
    struct ps_hmap_slot *v; /* cap slots, NULL until the first insert */
    size_t n;               /* live entries */
    size_t cap;             /* 0 or a power of two >= 8 */
};

/* _init cannot fail and allocates nothing; _cleanup frees the table and is
 * idempotent (the map is left as after _init). */
void ps_hmap_init(struct ps_hmap *m);
void ps_hmap_cleanup(struct ps_hmap *m);

/* Removes every entry, keeping the capacity. Cannot fail. */
void ps_hmap_clear(struct ps_hmap *m);

/* Makes room for `n` entries in total without growing again.
 * PS_ENOMEM leaves the map unchanged and usable. */
int ps_hmap_reserve(struct ps_hmap *m, size_t n);

static inline size_t ps_hmap_count(const struct ps_hmap *m)
{
    return m->n;
}

/* The value of the entry matching (hash, key), or NULL. Never allocates. */
uint64_t *ps_hmap_find(const struct ps_hmap *m, uint64_t hash, ps_hmap_eq_fn eq,
                       const void *key, void *ud);

/* Adds (hash, val) without looking for an existing equal key: the caller
 * knows it is absent (e.g. after a failed find). PS_ENOMEM (growth failed)
 * leaves the map unchanged. */
int ps_hmap_insert(struct ps_hmap *m, uint64_t hash, uint64_t val);

/* Find-or-insert in one probe. If an equal entry exists, *valp points at its
 * value and *found = 1. Otherwise a new entry with value `val` is added,
 * *valp points at it (the caller may overwrite it) and *found = 0.
 * PS_ENOMEM leaves the map unchanged and writes no out-param. */
int ps_hmap_upsert(struct ps_hmap *m, uint64_t hash, ps_hmap_eq_fn eq,
                   const void *key, void *ud, uint64_t val, uint64_t **valp,
                   int *found);

/* Removes the entry matching (hash, key). Returns 1 and writes *val_out (if
 * non-NULL) when one was removed, 0 when absent. Never allocates. */
int ps_hmap_remove(struct ps_hmap *m, uint64_t hash, ps_hmap_eq_fn eq,
                   const void *key, void *ud, uint64_t *val_out);

/* Removes every entry for which drop(hash, val, ud) returns non-zero, and
 * calls drop exactly once per entry (safe for freeing the caller's side of
 * the entry inside drop). Returns the number removed. Never allocates. This
 * is the way to delete while walking: ps_hmap_next must not be mixed with
 * removals. */
typedef int (*ps_hmap_drop_fn)(uint64_t hash, uint64_t val, void *ud);
size_t ps_hmap_remove_if(struct ps_hmap *m, ps_hmap_drop_fn drop, void *ud);

/* Iteration in slot order (unspecified, not stable across inserts):
 *     size_t it = 0; uint64_t h, v;
 *     while (ps_hmap_next(m, &it, &h, &v)) ...
 * Returns 1 with an entry, 0 at the end. The map must not be modified
 * during the walk (values may be changed through ps_hmap_find). */
int ps_hmap_next(const struct ps_hmap *m, size_t *it, uint64_t *hash,
                 uint64_t *val);

/* ---- label-set hashing ------------------------------------------------ */

/* XXH3 over name 0xff value 0xff ... for labels v[0..n) in the given order
 * (pass a sorted set for a canonical hash). The separators keep
 * ("a","bc") and ("ab","c") apart. Never allocates, cannot fail. */
uint64_t ps_labels_hash_v(const struct ps_label *v, size_t n);

/* ps_labels_hash_v over the whole set, which should be sorted. */
uint64_t ps_labels_hash(const struct ps_labels *ls);

/* 1 if both sets hold the same (name, value) pairs in the same order. */
int ps_labels_equal_v(const struct ps_label *a, size_t an,
                      const struct ps_label *b, size_t bn);

/* A compact owned copy of labels v[0..n): one allocation holding the array
 * and NUL-terminated copies of every string, released with one ps_free().
 * NULL on ENOMEM (or when n == 0: there is nothing to own). */
struct ps_label *ps_label_block_dup(const struct ps_label *v, size_t n);

#endif
