/*
 * ps_cache: the scrape cache of one scrape loop (Prometheus scrapeCache).
 *
 * - series: raw series bytes as exposed (ps_series_view.raw) -> entry with
 *   the appender's ref, the final label set (sorted, __name__ included,
 *   owned by the entry), its hash, and the last iteration it was seen. A
 *   hit gives ref and labels without relabeling or label building, so a
 *   steady-state scrape allocates nothing per sample.
 * - dropped: raw bytes of series dropped by metric relabeling, so rules run
 *   once per new series.
 * - cur/prev: the final label sets seen in this and the previous scrape,
 *   by labels hash, for staleness markers (seriesCur/seriesPrev). They
 *   point at series entries: an entry in cur was seen this scrape, so it
 *   is never evicted, and prev is cleared by the swap right after an
 *   eviction, so no dangling entry is ever read.
 * - metadata per family name: type, help, unit, last seen/changed iteration.
 *
 * ps_cache_iter_done() ends a scrape: on success (flush) entries not seen
 * in that scrape are evicted and metadata unseen for more than 10 scrapes
 * too; after a failed scrape, a flush is forced only when the cache grew
 * past twice its size at the last success plus 1000. Then cur/prev swap.
 *
 * Owned by its loop; one thread. Keys and labels are copied on insert.
 */
#ifndef PS_CACHE_H
#define PS_CACHE_H

#include "ps_core.h"
#include "ps_hmap.h"
#include "ps_labels.h"
#include "ps_parse.h"

#include <stddef.h>
#include <stdint.h>

struct ps_cache_entry {
    /* the fields a hit reads first, together at the start */
    const char *key; /* private: the raw series bytes (owned), right
                      * after this struct in the entry's block */
    size_t key_len;
    uint64_t last_iter;    /* iteration it was last seen */
    uint64_t ref;          /* appender ref; 0 until appended once */
    struct ps_labels lset; /* final labels, sorted; read-only: the array
                            * and strings live in the entry's own block */
    uint64_t hash;         /* ps_labels_hash(&lset) */
    uint64_t cur_iter;     /* private: iteration + 1 it was put in cur */
};

struct ps_cache_meta {
    enum ps_mtype type;
    char *help, *unit; /* owned, "" when absent */
    uint64_t last_iter;
    uint64_t last_iter_change;
};

struct ps_cache {
    struct ps_hmap series;    /* key hash -> struct ps_cache_entry * */
    struct ps_hmap dropped;   /* key hash -> private dropped entry */
    struct ps_hmap cur, prev; /* labels hash -> struct ps_cache_entry * */
    struct ps_hmap meta;      /* family hash -> private meta entry */
    /* private: the entries looked up by the previous scrape, by position
     * (the n-th ps_cache_get call), tried before hashing (Prometheus PR
     * #19468); the current scrape's are recorded in order_next. Entries
     * in order are alive: iter_done clears those it evicts. */
    struct ps_cache_entry **order, **order_next;
    size_t order_n, order_cap, order_next_n, order_next_cap;
    size_t pos;         /* ps_cache_get calls in this scrape */
    size_t miss_pos;    /* position of the last miss, or SIZE_MAX */
    const char *miss_p; /* its raw bytes (compared by address) */
    size_t miss_n;
    uint64_t iter;
    uint64_t meta_change; /* private: iteration + 1 of the last metadata
                           * creation or change, any family */
    size_t successful_count;
    uint64_t forced_flushes; /* for tests and reporting */
};

/* Cannot fail, allocates nothing. _cleanup frees everything, idempotent. */
void ps_cache_init(struct ps_cache *c);
void ps_cache_cleanup(struct ps_cache *c);

/*
 * Looks up the raw series bytes. Returns the entry or NULL. On a hit the
 * entry's last_iter becomes the current iteration and *already is set to 1
 * if it had already been seen in this scrape (a duplicate series within
 * one scrape). Never allocates.
 */
struct ps_cache_entry *ps_cache_get(struct ps_cache *c, struct ps_str raw,
                                    int *already);

/* 1 if raw was dropped by metric relabeling (and marks it seen). */
int ps_cache_get_dropped(struct ps_cache *c, struct ps_str raw);

/* Caches raw as dropped. PS_OK or PS_ENOMEM (nothing cached). */
int ps_cache_add_dropped(struct ps_cache *c, struct ps_str raw);

/*
 * Caches raw -> (ref, labels). lset is copied (it must be sorted and hold
 * __name__). The entry is marked seen in the current iteration and
 * returned in *out (owned by the cache, valid until iter_done evicts it or
 * cleanup). PS_OK or PS_ENOMEM (nothing cached).
 */
int ps_cache_add(struct ps_cache *c, struct ps_str raw, uint64_t ref,
                 const struct ps_labels *lset, struct ps_cache_entry **out);

/* Records that the entry's series was appended in this scrape, for
 * staleness (Prometheus trackStaleness). PS_OK or PS_ENOMEM. Calling it
 * twice for one entry in one scrape is a no-op. */
int ps_cache_track(struct ps_cache *c, struct ps_cache_entry *ent);

/* Records that the entry's series was appended in the previous scrape
 * (a series whose samples were held by a deferred function rule and
 * installed between two scrapes), so the next scrape puts a stale marker
 * if it is gone. PS_OK or PS_ENOMEM. */
int ps_cache_track_prev(struct ps_cache *c, struct ps_cache_entry *ent);

/* Calls fn for every series seen in the previous scrape and not in this
 * one, with its ref and final labels (borrowed). Stops early, returning
 * fn's value, when fn returns non-zero; else returns 0. */
typedef int (*ps_cache_stale_fn)(uint64_t ref, const struct ps_labels *lset,
                                 void *ud);
int ps_cache_for_each_stale(struct ps_cache *c, ps_cache_stale_fn fn, void *ud);

/* Forgets the series tracked in the current scrape, so that
 * ps_cache_for_each_stale() reports every series of the previous one: what
 * a failed scrape does after its rollback. Cannot fail. */
void ps_cache_drop_current(struct ps_cache *c);

/* Family metadata from TYPE / HELP / UNIT lines. PS_OK or PS_ENOMEM. */
int ps_cache_set_type(struct ps_cache *c, struct ps_str family,
                      enum ps_mtype t);
int ps_cache_set_help(struct ps_cache *c, struct ps_str family,
                      struct ps_str help);
int ps_cache_set_unit(struct ps_cache *c, struct ps_str family,
                      struct ps_str unit);
/* 1 if some family's metadata was created or changed in the current
 * iteration (so no family has last_iter_change == iter otherwise): lets
 * the loop skip per-sample metadata lookups in a steady scrape. */
static inline int ps_cache_meta_changed(const struct ps_cache *c)
{
    return c->meta_change == c->iter + 1;
}

/* The metadata of a family, or NULL. */
const struct ps_cache_meta *ps_cache_meta(const struct ps_cache *c,
                                          struct ps_str family);

/* Ends a scrape (see the top of this file). flush = 1 after a successful,
 * non-empty scrape. Never allocates, cannot fail. */
void ps_cache_iter_done(struct ps_cache *c, int flush);

/* Counts, for tests and reporting. */
size_t ps_cache_nseries(const struct ps_cache *c);
size_t ps_cache_ndropped(const struct ps_cache *c);
size_t ps_cache_nmeta(const struct ps_cache *c);

#endif
