/*
 * ps_relabel: Prometheus 3.x relabeling, (rules, labels) -> labels | drop.
 *
 * Rules are compiled once: all validation happens in ps_relabel_compile(),
 * regexes are compiled with PCRE2 (+JIT) exactly as Prometheus wraps them,
 * `^(?s:<regex>)$`, after rejecting what Go's RE2 syntax rejects
 * (backreferences, lookarounds, possessive and atomic groups, PCRE verbs).
 * Replacement templates ($1, ${1}x, $name, $$) are parsed at compile time.
 *
 * A compiled struct ps_relabel is immutable, so it may be shared by threads.
 * Each thread applies it with its own struct ps_relabel_scratch, which holds
 * the working label builder and PCRE2 match data and is reused across calls
 * so a steady-state apply allocates nothing but the output copies.
 *
 * Semantics follow model/relabel/relabel.go: a missing source label is "",
 * an empty value deletes a label, replace with no regex match is a no-op,
 * an expanded target that is not a valid name is a no-op, hashmod is the
 * MD5 of the joined values (last 8 bytes big-endian) mod modulus.
 */
#ifndef PS_RELABEL_H
#define PS_RELABEL_H

#include "ps_core.h"
#include "ps_labels.h"

#include <stddef.h>
#include <stdint.h>

/*
 * One rule as written in YAML. A string with p == NULL is "not given" and
 * takes Prometheus's default: separator ";", regex "(.*)", replacement
 * "$1", action "replace" (case-insensitive), target_label "".
 * source_labels == NULL means the key was absent (labeldrop/labelkeep
 * reject even an empty list, as Prometheus rejects a non-nil one).
 */
struct ps_relabel_config {
    const struct ps_str *source_labels;
    size_t n_source_labels;
    struct ps_str separator;
    struct ps_str regex;
    uint64_t modulus; /* 0: not given */
    struct ps_str target_label;
    struct ps_str replacement;
    struct ps_str action;
    size_t index; /* names the rule in errors ("rule N"); 0: position + 1 */
};

enum ps_relabel_action {
    PS_RELABEL_REPLACE,
    PS_RELABEL_KEEP,
    PS_RELABEL_DROP,
    PS_RELABEL_KEEPEQUAL,
    PS_RELABEL_DROPEQUAL,
    PS_RELABEL_HASHMOD,
    PS_RELABEL_LABELMAP,
    PS_RELABEL_LABELDROP,
    PS_RELABEL_LABELKEEP,
    PS_RELABEL_LOWERCASE,
    PS_RELABEL_UPPERCASE
};

/* Compile flags. */
#define PS_RELABEL_LEGACY_NAMES 1u /* metric_name_validation_scheme: legacy */

/* ps_relabel_apply's *drop_at when the label set was kept. */
#define PS_RELABEL_KEPT SIZE_MAX

struct ps_relabel;
struct ps_relabel_scratch;

/* Validates and compiles n rules. On error returns PS_EINVAL (or
 * PS_ENOMEM) with "rule N: field: why" in e, and *out is untouched. */
int ps_relabel_compile(struct ps_relabel **out,
                       const struct ps_relabel_config *cfgs, size_t n,
                       unsigned flags, struct ps_err *e);
void ps_relabel_free(struct ps_relabel *r); /* NULL-safe */
size_t ps_relabel_count(const struct ps_relabel *r);
enum ps_relabel_action ps_relabel_action_of(const struct ps_relabel *r,
                                            size_t i);
const char *ps_relabel_action_name(enum ps_relabel_action a);

int ps_relabel_scratch_new(struct ps_relabel_scratch **out);
void ps_relabel_scratch_free(struct ps_relabel_scratch *s); /* NULL-safe */

/*
 * Applies rules [first, first + count) of r to `in` (borrowed, any order,
 * no duplicate names: PS_EINVAL). On PS_OK, *drop_at is PS_RELABEL_KEPT and
 * `out` (cleared first) holds the result sorted by name, owning its
 * strings; or *drop_at is the position of the rule that dropped the set and
 * `out` is empty. Errors: PS_ENOMEM, PS_EINVAL, PS_ELIMIT (a regex hit a
 * PCRE2 resource limit). ps_relabel_apply applies all rules.
 */
int ps_relabel_apply_range(const struct ps_relabel *r,
                           struct ps_relabel_scratch *s,
                           const struct ps_labels *in, size_t first,
                           size_t count, struct ps_labels *out, size_t *drop_at,
                           struct ps_err *e);
int ps_relabel_apply(const struct ps_relabel *r, struct ps_relabel_scratch *s,
                     const struct ps_labels *in, struct ps_labels *out,
                     size_t *drop_at, struct ps_err *e);

#endif
