/*
 * ps_labels: label sets, the vocabulary shared by relabeling, the series
 * cache and the scrape loop.
 *
 * - struct ps_label is a view: name and value are (pointer, length) pairs,
 *   not NUL-terminated C strings, so labels can borrow from a parse buffer.
 * - struct ps_labels is a growable array of such views plus an optional
 *   string store that owns copies. Stored strings never move (the store is a
 *   list of chunks), so views into it stay valid until clear/cleanup.
 * - struct ps_labels_builder mirrors Prometheus's labels.Builder: a working
 *   set that borrows a base set, records sets/deletes, and remembers the
 *   order in which labels were added, because Prometheus's Range() visits
 *   untouched base labels (by name) before added ones (in insertion order)
 *   and labelmap results depend on that order.
 *
 * Names compare as bytes (Go's strings.Compare). Every function that can
 * fail returns PS_OK or PS_ENOMEM/PS_EINVAL and leaves the set usable.
 */
#ifndef PS_LABELS_H
#define PS_LABELS_H

#include "ps_core.h"

#include <stddef.h>
#include <stdint.h>

struct ps_label {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

struct ps_strblk; /* private: one chunk of owned string storage */

/* Owned string storage; chunks never move, so copies stay put. */
struct ps_strstore {
    struct ps_strblk *head;
};

struct ps_labels {
    struct ps_label *v; /* v[0..n) */
    size_t n, cap;
    struct ps_strstore store; /* owns the strings added with PS_LABELS_COPY */
};

#define PS_LABELS_COPY 1u /* copy name and value into the set's store */

void ps_strstore_init(struct ps_strstore *s);
/* Forgets all strings but keeps the newest chunk for reuse. */
void ps_strstore_clear(struct ps_strstore *s);
void ps_strstore_cleanup(struct ps_strstore *s);
/* Copies s[0..n) plus a NUL; returns NULL on ENOMEM. */
char *ps_strstore_dup(struct ps_strstore *st, const char *s, size_t n);

/* _init cannot fail and allocates nothing; _cleanup is idempotent. */
void ps_labels_init(struct ps_labels *ls);
void ps_labels_cleanup(struct ps_labels *ls);
/* Empties the set, keeping its capacity for reuse (no views survive). */
void ps_labels_clear(struct ps_labels *ls);
/* Appends (unsorted). With PS_LABELS_COPY both strings are copied,
 * otherwise they are borrowed and must outlive the set. */
int ps_labels_add(struct ps_labels *ls, const char *name, size_t name_len,
                  const char *value, size_t value_len, unsigned flags);
/* Sorts by name; returns PS_EINVAL if two labels share a name (the set is
 * sorted either way). */
int ps_labels_sort(struct ps_labels *ls);
/* Binary search in a sorted set: the label, or NULL. */
const struct ps_label *ps_labels_get(const struct ps_labels *ls,
                                     const char *name, size_t name_len);
/* Deep copy into dst (cleared first). On failure dst is left empty. */
int ps_labels_copy(struct ps_labels *dst, const struct ps_labels *src);
/* Byte-wise name order, as Go's strings.Compare. */
int ps_label_cmp(const struct ps_label *a, const struct ps_label *b);

/* ---- builder ----------------------------------------------------------- */

struct ps_labels_builder_ent {
    struct ps_label l;
    uint32_t seq; /* 0: untouched base label; else order of its last add */
};

struct ps_labels_builder {
    struct ps_labels_builder_ent *v; /* sorted by name, v[0..n) */
    size_t n, cap;
    uint32_t seq;
    struct ps_label *snap; /* range snapshot, see ps_labels_builder_range */
    size_t snap_cap;
    struct ps_labels_builder_ent *added; /* scratch for the range order */
    size_t added_cap;
    struct ps_strstore store; /* strings set with PS_LABELS_COPY */
};

void ps_labels_builder_init(struct ps_labels_builder *b);
void ps_labels_builder_cleanup(struct ps_labels_builder *b);
/* Starts over from base (borrowed: it must outlive the builder's use).
 * Labels with empty values are dropped, as Prometheus treats them as
 * absent. PS_EINVAL on duplicate names, PS_ENOMEM. */
int ps_labels_builder_reset(struct ps_labels_builder *b,
                            const struct ps_labels *base);
const struct ps_label *ps_labels_builder_get(const struct ps_labels_builder *b,
                                             const char *name, size_t name_len);
/* Sets name=value; an empty value deletes (Prometheus semantics). With
 * PS_LABELS_COPY the strings are copied into the builder's store. */
int ps_labels_builder_set(struct ps_labels_builder *b, const char *name,
                          size_t name_len, const char *value, size_t value_len,
                          unsigned flags);
void ps_labels_builder_del(struct ps_labels_builder *b, const char *name,
                           size_t name_len);
void ps_labels_builder_del_at(struct ps_labels_builder *b, size_t i);
/* Snapshot in Prometheus Range() order: untouched labels by name, then
 * added ones in the order they were added. Valid until the next call. */
int ps_labels_builder_range(struct ps_labels_builder *b,
                            const struct ps_label **out, size_t *n);
/* Copies the current set, sorted, into out (cleared first; owns copies). */
int ps_labels_builder_labels(const struct ps_labels_builder *b,
                             struct ps_labels *out);

#endif
