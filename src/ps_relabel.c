/* ps_relabel: Prometheus relabeling over PCRE2. See ps_relabel.h. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* newlocale, towlower_l: Unicode case maps */
#endif
#define PCRE2_CODE_UNIT_WIDTH 8

#include "ps_relabel.h"

#include "ps_md5.h"

#include <locale.h>
#include <pcre2.h>
#include <stdio.h>
#include <string.h>
#include <wctype.h>

#ifndef PCRE2_MATCH_INVALID_UTF
#define PCRE2_MATCH_INVALID_UTF 0 /* PCRE2 < 10.34: subjects are checked */
#endif

#define MAX_REPEAT 1000 /* RE2's limit on {n,m} counts */

/* A template piece: literal bytes of the template, or a capture group. */
struct tseg {
    int group; /* -1: literal */
    size_t off, len;
    int nalt; /* a duplicated group name: the next nalt segments are the
               * other groups of that name; Go takes the first that took
               * part in the match */
};

struct tmpl {
    const char *s; /* owned by the rule set's store */
    size_t n;
    struct tseg *seg;
    size_t nseg;
    int has_var; /* contains '$': expand per match */
};

struct rule {
    enum ps_relabel_action action;
    size_t index;
    struct ps_str *src;
    size_t nsrc;
    struct ps_str sep;
    pcre2_code *re;
    int jit; /* JIT-compiled: match with pcre2_jit_match, skipping checks */
    uint64_t modulus;
    struct ps_str target;
    struct tmpl target_t, repl_t;
};

struct ps_relabel {
    struct rule *rules;
    size_t n;
    unsigned flags;
    uint32_t max_pairs; /* ovector pairs the largest regex needs */
    pcre2_general_context *gctx;
    pcre2_compile_context *cctx;
    locale_t loc; /* C.UTF-8 for Unicode case maps; (locale_t)0 if absent */
    struct ps_strstore store;
};

struct ps_relabel_scratch {
    struct ps_labels_builder b;
    pcre2_general_context *gctx;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    pcre2_match_data *md;
    uint32_t md_pairs;
    char *buf; /* joined source values, then expansions */
    size_t cap;
};

static const char *const action_names[] = {
    "replace",  "keep",      "drop",      "keepequal", "dropequal", "hashmod",
    "labelmap", "labeldrop", "labelkeep", "lowercase", "uppercase"};

/* PCRE2 allocates through our hook so torture tests reach it too. */
static void *pcre_malloc(size_t n, void *ud)
{
    (void)ud;
    return ps_malloc(n);
}

static void pcre_free(void *p, void *ud)
{
    (void)ud;
    ps_free(p);
}

const char *ps_relabel_action_name(enum ps_relabel_action a)
{
    return (unsigned)a < sizeof(action_names) / sizeof(*action_names)
               ? action_names[a]
               : "?";
}

size_t ps_relabel_count(const struct ps_relabel *r)
{
    return r->n;
}

enum ps_relabel_action ps_relabel_action_of(const struct ps_relabel *r,
                                            size_t i)
{
    return r->rules[i].action;
}

/* ---- names ------------------------------------------------------------- */

static int is_word(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
}

static int name_valid(const struct ps_relabel *r, const char *s, size_t n)
{
    return (r->flags & PS_RELABEL_LEGACY_NAMES) ? ps_name_legacy_label(s, n)
                                                : ps_name_utf8(s, n);
}

/* Prometheus's relabelTargetLegacy, ^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$,
 * as a scanner: a letter, `_` or variable first, then word chars and
 * variables. */
static int legacy_target_valid(const char *s, size_t n)
{
    size_t i = 0;

    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    while (i < n) {
        if (s[i] == '$') {
            size_t j;

            i++;
            if (i < n && s[i] == '{') {
                for (j = ++i; j < n && is_word((unsigned char)s[j]); j++)
                    ;
                if (j == i || j >= n || s[j] != '}')
                    return 0;
                i = j + 1;
            } else {
                for (j = i; j < n && is_word((unsigned char)s[j]); j++)
                    ;
                if (j == i)
                    return 0;
                i = j;
            }
        } else if (is_word((unsigned char)s[i])) {
            i++;
        } else {
            return 0;
        }
    }
    return 1;
}

/* Target/replacement that may hold $vars: Prometheus's
 * isValidLabelNameWithRegexVarFn. */
static int var_name_valid(const struct ps_relabel *r, const char *s, size_t n)
{
    return (r->flags & PS_RELABEL_LEGACY_NAMES) ? legacy_target_valid(s, n)
                                                : ps_name_utf8(s, n);
}

/* ---- UTF-8 helpers ----------------------------------------------------- */

/* Decodes one rune at s[0..n); returns its length, or 0 if invalid (then
 * *cp = U+FFFD and the caller skips one byte, as Go does). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len = s[0] < 0x80 ? 1 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : 4;

    *cp = 0xFFFD;
    if (len > n || !ps_utf8_valid((const char *)s, len))
        return 0;
    if (len == 1)
        *cp = s[0];
    else if (len == 2)
        *cp = (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    else if (len == 3)
        *cp = (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 |
              (s[2] & 0x3F);
    else
        *cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
              (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    return len;
}

static size_t utf8_encode(uint32_t c, char *o)
{
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xC0 | c >> 6);
        o[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | c >> 12);
        o[1] = (char)(0x80 | (c >> 6 & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | c >> 18);
    o[1] = (char)(0x80 | (c >> 12 & 0x3F));
    o[2] = (char)(0x80 | (c >> 6 & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* The Unicode tables come from the C library's C.UTF-8 locale (glibc,
 * musl and the BSDs have it); without it, non-ASCII runes keep their case.
 * A per-object locale_t keeps the process locale untouched. */
static locale_t need_locale(struct ps_relabel *r)
{
    if (r->loc == (locale_t)0)
        r->loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    return r->loc;
}

/* ---- RE2 syntax gate --------------------------------------------------- */

/* Parses {n}, {n,}, {n,m} at p[i] == '{'; returns the index after '}' or 0
 * if this is not a repeat (RE2 then takes '{' literally). */
static size_t parse_repeat(const char *p, size_t n, size_t i, long *lo,
                           long *hi)
{
    size_t j = i + 1;
    long a = 0, b = -1;

    if (j >= n || p[j] < '0' || p[j] > '9')
        return 0;
    while (j < n && p[j] >= '0' && p[j] <= '9' && a <= 100000)
        a = a * 10 + (p[j++] - '0');
    b = a;
    if (j < n && p[j] == ',') {
        j++;
        b = -1;
        if (j < n && p[j] >= '0' && p[j] <= '9') {
            b = 0;
            while (j < n && p[j] >= '0' && p[j] <= '9' && b <= 100000)
                b = b * 10 + (p[j++] - '0');
        }
    }
    if (j >= n || p[j] != '}')
        return 0;
    *lo = a;
    *hi = b;
    return j + 1;
}

/*
 * Rejects what Go's regexp (RE2) rejects but PCRE2 would accept with another
 * meaning, so a rule valid here is valid in Prometheus. PCRE2 reports the
 * ordinary syntax errors itself. Returns NULL or a message.
 */
static const char *re2_gate(const char *p, size_t n, char *msg, size_t msz)
{
    size_t i = 0;
    int in_class = 0;

    while (i < n) {
        unsigned char c = (unsigned char)p[i];

        if (c == '\\') {
            unsigned char d;

            if (i + 1 >= n)
                return "trailing backslash at end of expression";
            d = (unsigned char)p[i + 1];
            if (d == 'Q') { /* literal text up to \E, or to the end */
                const char *end = NULL;
                size_t j;

                for (j = i + 2; j + 1 < n; j++)
                    if (p[j] == '\\' && p[j + 1] == 'E') {
                        end = p + j;
                        break;
                    }
                i = end ? (size_t)(end - p) + 2 : n;
                continue;
            }
            if (d >= '1' && d <= '9') {
                snprintf(msg, msz,
                         "backreference \\%c is not supported "
                         "(Go RE2 syntax)",
                         d);
                return msg;
            }
            if ((d >= 'a' && d <= 'z') || (d >= 'A' && d <= 'Z')) {
                if (!strchr("aftnrvxAzbBdDsSwWpPE", d) ||
                    (in_class && strchr("AzbB", d))) {
                    snprintf(msg, msz,
                             "invalid escape sequence \\%c "
                             "(Go RE2 syntax)",
                             d);
                    return msg;
                }
            }
            i += 2;
            /* \x{...}, \p{...}: the braces belong to the escape. */
            if ((d == 'x' || d == 'p' || d == 'P') && i < n && p[i] == '{') {
                const char *e = memchr(p + i, '}', n - i);
                i = e ? (size_t)(e - p) + 1 : n;
            }
            continue;
        }
        if (in_class) {
            if (c == '[' && i + 1 < n && p[i + 1] == ':') {
                const char *e = memchr(p + i + 2, ']', n - i - 2);
                /* [:alpha:] inside a class: skip it whole */
                if (e != NULL && e[-1] == ':') {
                    i = (size_t)(e - p) + 1;
                    continue;
                }
            }
            if (c == ']') {
                in_class = 0;
            }
            i++;
            continue;
        }
        if (c == '[') {
            in_class = 1;
            i++;
            /* A leading ']' (after an optional '^') is a literal. */
            if (i < n && p[i] == '^')
                i++;
            if (i < n && p[i] == ']')
                i++;
            continue;
        }
        if (c == '(' && i + 1 < n && p[i + 1] == '*')
            return "PCRE verbs (*...) are not supported (Go RE2 syntax)";
        if (c == '(' && i + 1 < n && p[i + 1] == '?') {
            size_t j = i + 2;

            if (j < n && (p[j] == '=' || p[j] == '!'))
                return "lookahead (?= (?! is not supported (Go RE2 syntax)";
            if (j + 1 < n && p[j] == '<' &&
                (p[j + 1] == '=' || p[j + 1] == '!'))
                return "lookbehind (?<= (?<! is not supported (Go RE2 syntax)";
            if (j < n && p[j] == '<')
                goto next; /* (?<name> */
            if (j + 1 < n && p[j] == 'P' && p[j + 1] == '<')
                goto next; /* (?P<name> */
            /* Flags: only i, m, s, U, an optional '-' followed by at
             * least one flag, then ':' or ')'; "(?)" is valid in Go. */
            while (j < n && strchr("imsU-", p[j]) && p[j] != '\0')
                j++;
            if (j < n && (p[j] == ':' || p[j] == ')') && p[j - 1] != '-')
                goto next;
            return "invalid or unsupported Perl syntax after (? "
                   "(Go RE2 syntax)";
        }
        if (c == '*' || c == '+' || c == '?') {
            if (i + 1 < n && p[i + 1] == '+')
                return "possessive quantifiers are not supported "
                       "(Go RE2 syntax)";
        }
        if (c == '{') {
            long lo, hi;
            size_t j = parse_repeat(p, n, i, &lo, &hi);

            if (j != 0) {
                if (lo > MAX_REPEAT || hi > MAX_REPEAT ||
                    (hi >= 0 && hi < lo)) {
                    snprintf(msg, msz, "invalid repeat count %.*s",
                             (int)(j - i), p + i);
                    return msg;
                }
                if (j < n && p[j] == '+')
                    return "possessive quantifiers are not supported "
                           "(Go RE2 syntax)";
                i = j;
                continue;
            }
        }
    next:
        i++;
    }
    return NULL;
}

/* ---- templates --------------------------------------------------------- */

/* Is the rune at s a name character for Go's Expand (letter, digit, _)? */
static size_t name_char(struct ps_relabel *r, const char *s, size_t n)
{
    uint32_t cp;
    size_t len;
    locale_t loc;

    if ((unsigned char)s[0] < 0x80)
        return is_word((unsigned char)s[0]) ? 1 : 0;
    len = utf8_decode((const unsigned char *)s, n, &cp);
    if (len == 0)
        return 0;
    loc = need_locale(r);
    if (loc == (locale_t)0)
        return len; /* no tables: treat non-ASCII as letters */
    return iswalnum_l((wint_t)cp, loc) ? len : 0;
}

static int tmpl_push(struct tmpl *t, size_t *cap, int group, size_t off,
                     size_t len)
{
    if (group < 0 && len == 0)
        return PS_OK;
    if (t->nseg == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        struct tseg *ns = ps_realloc(t->seg, ncap * sizeof(*ns));

        if (ns == NULL)
            return PS_ENOMEM;
        t->seg = ns;
        *cap = ncap;
    }
    t->seg[t->nseg].group = group;
    t->seg[t->nseg].off = off;
    t->seg[t->nseg].len = len;
    t->seg[t->nseg].nalt = 0;
    t->nseg++;
    return PS_OK;
}

/*
 * Parses a Go regexp.Expand template against re: "$$" is "$", "$name" takes
 * the longest run of letters, digits and '_' (so "$1x" is group "1x"),
 * "${name}" is braced, numbers with leading zeros are names, unknown groups
 * expand to "", and a malformed '$' is literal. Groups resolve now.
 */
static int tmpl_compile(struct ps_relabel *r, struct tmpl *t, const char *s,
                        size_t n, const pcre2_code *re, uint32_t ncap)
{
    size_t cap = 0, i = 0, lit = 0;
    int rc;

    t->s = s;
    t->n = n;
    t->seg = NULL;
    t->nseg = 0;
    t->has_var = memchr(s, '$', n) != NULL;
    while (i < n) {
        size_t j, k, nl;
        int brace, group = -1;
        long num = 0;

        if (s[i] != '$') {
            i++;
            continue;
        }
        if ((rc = tmpl_push(t, &cap, -1, lit, i - lit)) != PS_OK)
            return rc;
        if (i + 1 < n && s[i + 1] == '$') { /* "$$" -> "$" */
            if ((rc = tmpl_push(t, &cap, -1, i, 1)) != PS_OK)
                return rc;
            i += 2;
            lit = i;
            continue;
        }
        brace = i + 1 < n && s[i + 1] == '{';
        j = k = i + 1 + (size_t)brace;
        while (k < n && (nl = name_char(r, s + k, n - k)) > 0)
            k += nl;
        if (k == j || (brace && (k >= n || s[k] != '}'))) {
            lit = i; /* malformed: the '$' stays literal text */
            i++;
            continue;
        }
        /* Numeric names are group numbers, unless they have a leading 0. */
        for (nl = j; nl < k; nl++) {
            if (s[nl] < '0' || s[nl] > '9' || num >= 100000000) {
                num = -1;
                break;
            }
            num = num * 10 + (s[nl] - '0');
        }
        if (s[j] == '0' && k - j > 1)
            num = -1;
        if (num >= 0) {
            group = num <= (long)ncap ? (int)num : -1;
        } else if (k - j < 64) {
            char name[64];
            PCRE2_SPTR first, last, ent;
            int esz;

            memcpy(name, s + j, k - j);
            name[k - j] = '\0';
            /* With pointers it returns the entry size; entries start with
             * the group number (2 bytes, big-endian), in group order. A
             * name used twice (Go allows it) gives several entries. */
            esz = pcre2_substring_nametable_scan(re, (PCRE2_SPTR)name, &first,
                                                 &last);
            if (esz > 0) {
                size_t at = t->nseg;

                for (ent = first; ent <= last; ent += esz)
                    if ((rc = tmpl_push(t, &cap, ent[0] << 8 | ent[1], 0, 0)) !=
                        PS_OK)
                        return rc;
                t->seg[at].nalt = (int)(t->nseg - at - 1);
            }
        }
        if (group >= 0 && (rc = tmpl_push(t, &cap, group, 0, 0)) != PS_OK)
            return rc;
        i = k + (size_t)brace;
        lit = i;
    }
    return tmpl_push(t, &cap, -1, lit, n - lit);
}

/* ---- compile ----------------------------------------------------------- */

void ps_relabel_free(struct ps_relabel *r)
{
    size_t i;

    if (r == NULL)
        return;
    for (i = 0; i < r->n; i++) {
        pcre2_code_free(r->rules[i].re);
        ps_free(r->rules[i].src);
        ps_free(r->rules[i].target_t.seg);
        ps_free(r->rules[i].repl_t.seg);
    }
    ps_free(r->rules);
    pcre2_compile_context_free(r->cctx);
    pcre2_general_context_free(r->gctx);
    if (r->loc != (locale_t)0)
        freelocale(r->loc);
    ps_strstore_cleanup(&r->store);
    ps_free(r);
}

static int parse_action(const struct ps_str *a, enum ps_relabel_action *out)
{
    size_t i, k;

    if (a->p == NULL) {
        *out = PS_RELABEL_REPLACE;
        return 1;
    }
    for (k = 0; k < sizeof(action_names) / sizeof(*action_names); k++) {
        const char *name = action_names[k];

        if (strlen(name) != a->n)
            continue;
        for (i = 0; i < a->n; i++) {
            char c = a->p[i];
            if (c >= 'A' && c <= 'Z')
                c = (char)(c - 'A' + 'a');
            if (c != name[i])
                break;
        }
        if (i == a->n) {
            *out = (enum ps_relabel_action)k;
            return 1;
        }
    }
    return 0;
}

static int str_is(const struct ps_str *s, const char *lit)
{
    return s->n == strlen(lit) && memcmp(s->p, lit, s->n) == 0;
}

/* Copies s into the rule set's store (NULL p stays NULL). */
static int keep_str(struct ps_relabel *r, struct ps_str *dst,
                    const struct ps_str *s, const char *dflt)
{
    const char *p = s->p ? s->p : dflt;
    size_t n = s->p ? s->n : strlen(dflt);
    char *d = ps_strstore_dup(&r->store, p, n);

    if (d == NULL)
        return PS_ENOMEM;
    dst->p = d;
    dst->n = n;
    return PS_OK;
}

/* Prometheus's Config.Validate(), in its order. Message into msg. */
static const char *validate(const struct ps_relabel *r,
                            const struct ps_relabel_config *c,
                            enum ps_relabel_action a, const char **field,
                            char *msg, size_t msz)
{
    const char *an = action_names[a];
    struct ps_str tl =
        c->target_label.p ? c->target_label : (struct ps_str){"", 0};
    int has_var = memchr(tl.p, '$', tl.n) != NULL;
    int repl_default =
        c->replacement.p == NULL || str_is(&c->replacement, "$1");
    int sep_default = c->separator.p == NULL || str_is(&c->separator, ";");
    size_t i;

    for (i = 0; i < c->n_source_labels; i++) {
        const struct ps_str *s = &c->source_labels[i];

        if (!name_valid(r, s->p, s->n)) {
            *field = "source_labels";
            snprintf(msg, msz, "\"%.*s\" is not a valid label name",
                     (int)(s->n > 64 ? 64 : s->n), s->p);
            return msg;
        }
    }
    *field = "modulus";
    if (a == PS_RELABEL_HASHMOD && c->modulus == 0)
        return "action hashmod requires a non-zero modulus";
    *field = "target_label";
    if ((a == PS_RELABEL_REPLACE || a == PS_RELABEL_HASHMOD ||
         a == PS_RELABEL_LOWERCASE || a == PS_RELABEL_UPPERCASE ||
         a == PS_RELABEL_KEEPEQUAL || a == PS_RELABEL_DROPEQUAL) &&
        tl.n == 0) {
        snprintf(msg, msz, "action %s requires target_label", an);
        return msg;
    }
    if ((a == PS_RELABEL_REPLACE && !(has_var ? var_name_valid(r, tl.p, tl.n)
                                              : name_valid(r, tl.p, tl.n))) ||
        ((a == PS_RELABEL_LOWERCASE || a == PS_RELABEL_UPPERCASE ||
          a == PS_RELABEL_KEEPEQUAL || a == PS_RELABEL_DROPEQUAL ||
          a == PS_RELABEL_HASHMOD) &&
         !name_valid(r, tl.p, tl.n))) {
        snprintf(msg, msz, "\"%.*s\" is invalid for action %s",
                 (int)(tl.n > 64 ? 64 : tl.n), tl.p, an);
        return msg;
    }
    *field = "replacement";
    if ((a == PS_RELABEL_LOWERCASE || a == PS_RELABEL_UPPERCASE ||
         a == PS_RELABEL_KEEPEQUAL || a == PS_RELABEL_DROPEQUAL) &&
        !repl_default) {
        snprintf(msg, msz, "cannot be set for action %s", an);
        return msg;
    }
    if (a == PS_RELABEL_LABELMAP && c->replacement.p != NULL &&
        !var_name_valid(r, c->replacement.p, c->replacement.n)) {
        snprintf(msg, msz, "\"%.*s\" is invalid for action %s",
                 (int)(c->replacement.n > 64 ? 64 : c->replacement.n),
                 c->replacement.p, an);
        return msg;
    }
    if (a == PS_RELABEL_KEEPEQUAL || a == PS_RELABEL_DROPEQUAL) {
        *field = c->regex.p      ? "regex"
                 : c->modulus    ? "modulus"
                 : !sep_default  ? "separator"
                 : !repl_default ? "replacement"
                                 : NULL;
        if (*field != NULL) {
            snprintf(msg, msz,
                     "action %s requires only source_labels and "
                     "target_label, and no other fields",
                     an);
            return msg;
        }
    }
    if (a == PS_RELABEL_LABELDROP || a == PS_RELABEL_LABELKEEP) {
        *field = c->source_labels ? "source_labels"
                 : tl.n           ? "target_label"
                 : c->modulus     ? "modulus"
                 : !sep_default   ? "separator"
                 : !repl_default  ? "replacement"
                                  : NULL;
        if (*field != NULL) {
            snprintf(msg, msz,
                     "action %s requires only regex, and no "
                     "other fields",
                     an);
            return msg;
        }
    }
    return NULL;
}

static int compile_regex(struct ps_relabel *r, struct rule *ru,
                         const struct ps_str *rx, char *msg, size_t msz)
{
    static const char pre[] = "^(?s:", post[] = ")$";
    const char *src = rx->p ? rx->p : "(.*)";
    size_t n = rx->p ? rx->n : 4, wn;
    char *w;
    int errcode, rc;
    PCRE2_SIZE erroff;
    uint32_t ncap;
    const char *gate;

    if ((gate = re2_gate(src, n, msg, msz)) != NULL) {
        if (gate != msg)
            snprintf(msg, msz, "%s", gate);
        return PS_EINVAL;
    }
    /* Wrapped exactly as Prometheus's NewRegexp, so odd inputs such as
     * "a)(b" compile or fail the same way. */
    wn = sizeof(pre) - 1 + n + sizeof(post) - 1;
    w = ps_malloc(wn + 1);
    if (w == NULL)
        return PS_ENOMEM;
    memcpy(w, pre, sizeof(pre) - 1);
    memcpy(w + sizeof(pre) - 1, src, n);
    memcpy(w + sizeof(pre) - 1 + n, post, sizeof(post));
    ru->re = pcre2_compile((PCRE2_SPTR)w, wn,
                           PCRE2_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_DUPNAMES |
                               PCRE2_MATCH_INVALID_UTF,
                           &errcode, &erroff, r->cctx);
    ps_free(w);
    if (ru->re == NULL) {
        char pmsg[160];

        if (errcode == PCRE2_ERROR_HEAPLIMIT || errcode == PCRE2_ERROR_NOMEMORY)
            return PS_ENOMEM;
        pcre2_get_error_message(errcode, (PCRE2_UCHAR *)pmsg, sizeof(pmsg));
        /* Offsets count in the wrapped pattern; an error found in the
         * wrapper's tail (a group left open) is at the end of the user's. */
        rc = (int)erroff - (int)(sizeof(pre) - 1);
        if (rc < 0)
            rc = 0;
        if ((size_t)rc > n)
            rc = (int)n;
        if (snprintf(msg, msz, "error parsing regexp: %s at offset %d: `%.*s`",
                     pmsg, rc, n > 64 ? 64 : (int)n, src) >= (int)msz)
            msg[msz - 1] = '\0'; /* truncated: still a message */
        /* PCRE2 fails allocation with its own code under torture. */
        return strstr(pmsg, "memory") ? PS_ENOMEM : PS_EINVAL;
    }
    /* JIT is an optimisation: if it fails (no executable memory, torture
     * tests) the interpreter gives the same answers. */
    ru->jit = pcre2_jit_compile(ru->re, PCRE2_JIT_COMPLETE) == 0 &&
              PCRE2_MATCH_INVALID_UTF != 0; /* else subjects need checks */
    pcre2_pattern_info(ru->re, PCRE2_INFO_CAPTURECOUNT, &ncap);
    if (ncap + 1 > r->max_pairs)
        r->max_pairs = ncap + 1;
    return PS_OK;
}

static int compile_rule(struct ps_relabel *r, struct rule *ru,
                        const struct ps_relabel_config *c, struct ps_err *e)
{
    char msg[200];
    const char *field = "action", *why;
    enum ps_relabel_action a;
    uint32_t ncap = 0;
    size_t i;
    int rc;

    if (!parse_action(&c->action, &a))
        return ps_err_set(e, PS_EINVAL,
                          "rule %zu: action: unknown relabel "
                          "action \"%.*s\"",
                          ru->index, (int)(c->action.n > 32 ? 32 : c->action.n),
                          c->action.p);
    ru->action = a;
    ru->modulus = c->modulus;
    /* Prometheus compiles the regex while decoding, before Validate(). */
    rc = compile_regex(r, ru, &c->regex, msg, sizeof(msg));
    if (rc == PS_ENOMEM)
        return ps_err_set(e, rc, "rule %zu: regex: out of memory", ru->index);
    if (rc != PS_OK)
        return ps_err_set(e, rc, "rule %zu: regex: %s", ru->index, msg);
    if ((why = validate(r, c, a, &field, msg, sizeof(msg))) != NULL)
        return ps_err_set(e, PS_EINVAL, "rule %zu: %s: %s", ru->index, field,
                          why);
    pcre2_pattern_info(ru->re, PCRE2_INFO_CAPTURECOUNT, &ncap);
    if (c->n_source_labels > 0) {
        ru->src = ps_calloc(c->n_source_labels, sizeof(*ru->src));
        if (ru->src == NULL)
            goto nomem;
        for (i = 0; i < c->n_source_labels; i++)
            if (keep_str(r, &ru->src[i], &c->source_labels[i], "") != PS_OK)
                goto nomem;
        ru->nsrc = c->n_source_labels;
    }
    if (keep_str(r, &ru->sep, &c->separator, ";") != PS_OK ||
        keep_str(r, &ru->target, &c->target_label, "") != PS_OK)
        goto nomem;
    {
        struct ps_str repl;

        if (keep_str(r, &repl, &c->replacement, "$1") != PS_OK)
            goto nomem;
        if (tmpl_compile(r, &ru->target_t, ru->target.p, ru->target.n, ru->re,
                         ncap) != PS_OK ||
            tmpl_compile(r, &ru->repl_t, repl.p, repl.n, ru->re, ncap) != PS_OK)
            goto nomem;
    }
    if ((a == PS_RELABEL_LOWERCASE || a == PS_RELABEL_UPPERCASE))
        (void)need_locale(r); /* load once here, not on the apply path */
    return PS_OK;
nomem:
    return ps_err_set(e, PS_ENOMEM, "rule %zu: out of memory", ru->index);
}

int ps_relabel_compile(struct ps_relabel **out,
                       const struct ps_relabel_config *cfgs, size_t n,
                       unsigned flags, struct ps_err *e)
{
    struct ps_relabel *r = ps_calloc(1, sizeof(*r));
    size_t i;
    int rc = PS_ENOMEM;

    if (r == NULL)
        return ps_err_set(e, PS_ENOMEM, "relabel: out of memory");
    r->flags = flags;
    r->max_pairs = 1;
    r->loc = (locale_t)0;
    ps_strstore_init(&r->store);
    r->gctx = pcre2_general_context_create(pcre_malloc, pcre_free, NULL);
    r->cctx = r->gctx ? pcre2_compile_context_create(r->gctx) : NULL;
    if (r->cctx == NULL) {
        ps_err_set(e, rc, "relabel: out of memory");
        goto fail;
    }
    if (n > 0) {
        r->rules = ps_calloc(n, sizeof(*r->rules));
        if (r->rules == NULL) {
            ps_err_set(e, rc, "relabel: out of memory");
            goto fail;
        }
    }
    for (i = 0; i < n; i++) {
        struct rule *ru = &r->rules[i];

        r->n = i + 1; /* rule i is now freeable, even half-built */
        ru->index = cfgs[i].index ? cfgs[i].index : i + 1;
        if ((rc = compile_rule(r, ru, &cfgs[i], e)) != PS_OK)
            goto fail;
    }
    *out = r;
    return PS_OK;
fail:
    ps_relabel_free(r); /* tolerates the half-built rule set */
    return rc;
}

/* ---- scratch ----------------------------------------------------------- */

void ps_relabel_scratch_free(struct ps_relabel_scratch *s)
{
    if (s == NULL)
        return;
    ps_labels_builder_cleanup(&s->b);
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mctx);
    pcre2_jit_stack_free(s->jstack);
    pcre2_general_context_free(s->gctx);
    ps_free(s->buf);
    ps_free(s);
}

int ps_relabel_scratch_new(struct ps_relabel_scratch **out)
{
    struct ps_relabel_scratch *s = ps_calloc(1, sizeof(*s));

    if (s == NULL)
        return PS_ENOMEM;
    ps_labels_builder_init(&s->b);
    s->gctx = pcre2_general_context_create(pcre_malloc, pcre_free, NULL);
    s->mctx = s->gctx ? pcre2_match_context_create(s->gctx) : NULL;
    if (s->mctx == NULL)
        goto fail;
    /* A bigger JIT stack than the 32K default lets long values match
     * patterns such as (a|b)*; a failure just keeps the default. */
    s->jstack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, s->gctx);
    if (s->jstack != NULL)
        pcre2_jit_stack_assign(s->mctx, NULL, s->jstack);
    *out = s;
    return PS_OK;
fail:
    ps_relabel_scratch_free(s);
    return PS_ENOMEM;
}

/* Makes room for n bytes in s->buf, keeping the first keep bytes. */
static int reserve(struct ps_relabel_scratch *s, size_t n)
{
    char *nb;
    size_t ncap;

    if (n <= s->cap)
        return PS_OK;
    ncap = s->cap ? s->cap : 256;
    while (ncap < n) {
        if (ncap > SIZE_MAX / 2)
            return PS_ENOMEM;
        ncap *= 2;
    }
    nb = ps_realloc(s->buf, ncap);
    if (nb == NULL)
        return PS_ENOMEM;
    s->buf = nb;
    s->cap = ncap;
    return PS_OK;
}

/* ---- apply ------------------------------------------------------------- */

/* Match result: 1 match, 0 no match, or a negative PS_E* code. */
static int match(const struct rule *ru, struct ps_relabel_scratch *s,
                 const char *subj, size_t n, struct ps_err *e)
{
    PCRE2_SPTR p = (PCRE2_SPTR)(n ? subj : "");
    int rc = ru->jit ? pcre2_jit_match(ru->re, p, n, 0, 0, s->md, s->mctx)
                     : pcre2_match(ru->re, p, n, 0, 0, s->md, s->mctx);

    if (rc >= 0)
        return 1;
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc == PCRE2_ERROR_NOMEMORY)
        return ps_err_set(e, PS_ENOMEM, "rule %zu: regex: out of memory",
                          ru->index);
    {
        char pmsg[120];

        pcre2_get_error_message(rc, (PCRE2_UCHAR *)pmsg, sizeof(pmsg));
        return ps_err_set(e, PS_ELIMIT, "rule %zu: regex: %s", ru->index, pmsg);
    }
}

/* Expands t after a successful match of subj into s->buf at *len. */
static int expand(const struct tmpl *t, struct ps_relabel_scratch *s,
                  const char *subj, size_t *len)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
    uint32_t npairs = pcre2_get_ovector_count(s->md);
    size_t i;

    for (i = 0; i < t->nseg; i++) {
        const struct tseg *g = &t->seg[i];
        const char *p = t->s + g->off;
        size_t n = g->len;

        if (g->group >= 0) {
            int k, nalt = g->nalt;

            /* The first group of a duplicated name that took part. */
            for (k = 0; k < nalt && ((uint32_t)g->group >= npairs ||
                                     ov[2 * g->group] == PCRE2_UNSET);
                 k++)
                g++;
            i += (size_t)nalt; /* skip every alternative */
            if ((uint32_t)g->group >= npairs || ov[2 * g->group] == PCRE2_UNSET)
                continue; /* group did not take part: "" */
            p = subj + ov[2 * g->group];
            n = ov[2 * g->group + 1] - ov[2 * g->group];
        }
        if (reserve(s, *len + n + 1) != PS_OK)
            return PS_ENOMEM;
        if (n > 0)
            memcpy(s->buf + *len, p, n);
        *len += n;
    }
    return PS_OK;
}

/* Go's strings.ToLower/ToUpper: per rune simple case mapping, invalid bytes
 * become U+FFFD. Result in s->buf[0..*len). */
static int change_case(const struct ps_relabel *r, struct ps_relabel_scratch *s,
                       const char *v, size_t n, int upper, size_t *len)
{
    size_t i = 0, o = 0;

    if (reserve(s, n * 3 + 4) != PS_OK) /* a rune grows to at most 3x */
        return PS_ENOMEM;
    while (i < n) {
        unsigned char c = (unsigned char)v[i];
        uint32_t cp;
        size_t l;

        if (c < 0x80) {
            if (upper && c >= 'a' && c <= 'z')
                c = (unsigned char)(c - 'a' + 'A');
            else if (!upper && c >= 'A' && c <= 'Z')
                c = (unsigned char)(c - 'A' + 'a');
            s->buf[o++] = (char)c;
            i++;
            continue;
        }
        l = utf8_decode((const unsigned char *)v + i, n - i, &cp);
        i += l ? l : 1;
        if (l && r->loc != (locale_t)0) {
            wint_t m = upper ? towupper_l((wint_t)cp, r->loc)
                             : towlower_l((wint_t)cp, r->loc);
            if (m <= 0x10FFFF && !(m >= 0xD800 && m <= 0xDFFF))
                cp = (uint32_t)m;
        }
        o += utf8_encode(cp, s->buf + o);
    }
    *len = o;
    return PS_OK;
}

/* Joins the source values into s->buf (or points at the one value). */
static int join(const struct rule *ru, struct ps_relabel_scratch *s,
                const char **val, size_t *vlen)
{
    size_t i, len = 0;

    if (ru->nsrc == 1) {
        const struct ps_label *l =
            ps_labels_builder_get(&s->b, ru->src[0].p, ru->src[0].n);

        *val = l ? l->value : "";
        *vlen = l ? l->value_len : 0;
        return PS_OK;
    }
    for (i = 0; i < ru->nsrc; i++) {
        const struct ps_label *l =
            ps_labels_builder_get(&s->b, ru->src[i].p, ru->src[i].n);
        size_t add = (i ? ru->sep.n : 0) + (l ? l->value_len : 0);

        if (reserve(s, len + add + 1) != PS_OK)
            return PS_ENOMEM;
        if (i && ru->sep.n) {
            memcpy(s->buf + len, ru->sep.p, ru->sep.n);
            len += ru->sep.n;
        }
        if (l && l->value_len) {
            memcpy(s->buf + len, l->value, l->value_len);
            len += l->value_len;
        }
    }
    *val = len ? s->buf : "";
    *vlen = len;
    return PS_OK;
}

/* Applies one rule to s->b. Returns 1 keep, 0 drop, or a PS_E* code. */
static int apply_rule(const struct ps_relabel *r, const struct rule *ru,
                      struct ps_relabel_scratch *s, struct ps_err *e)
{
    const char *val;
    size_t vlen, i;
    int m, rc;

    if ((rc = join(ru, s, &val, &vlen)) != PS_OK)
        return ps_err_set(e, rc, "rule %zu: out of memory", ru->index);
    switch (ru->action) {
    case PS_RELABEL_DROP:
    case PS_RELABEL_KEEP:
        m = match(ru, s, val, vlen, e);
        if (m < 0)
            return m;
        return ru->action == PS_RELABEL_KEEP ? m : !m;
    case PS_RELABEL_DROPEQUAL:
    case PS_RELABEL_KEEPEQUAL: {
        const struct ps_label *t =
            ps_labels_builder_get(&s->b, ru->target.p, ru->target.n);
        size_t tn = t ? t->value_len : 0;
        int eq = tn == vlen && (vlen == 0 || memcmp(t->value, val, vlen) == 0);

        return ru->action == PS_RELABEL_KEEPEQUAL ? eq : !eq;
    }
    case PS_RELABEL_REPLACE: {
        size_t tlen = 0, rlen, toff;
        const char *tname = ru->target.p;

        m = match(ru, s, val, vlen, e);
        if (m <= 0)
            return m < 0 ? m : 1; /* no match: no-op */
        /* val may live in s->buf: copy it before expanding over it. */
        if (val == s->buf && (ru->target_t.has_var || ru->repl_t.has_var)) {
            char *tmp = ps_strstore_dup(&s->b.store, val, vlen);

            if (tmp == NULL)
                goto nomem;
            val = tmp;
        }
        if (ru->target_t.has_var) {
            if (expand(&ru->target_t, s, val, &tlen) != PS_OK)
                goto nomem;
            if (!name_valid(r, s->buf, tlen))
                return 1; /* expanded target is no valid name: no-op */
        } else {
            tlen = ru->target.n;
        }
        toff = ru->target_t.has_var ? tlen : 0;
        rlen = toff;
        if (expand(&ru->repl_t, s, val, &rlen) != PS_OK)
            goto nomem;
        if (ru->target_t.has_var)
            tname = s->buf; /* after expand: buf may have moved */
        if (ps_labels_builder_set(&s->b, tname, tlen,
                                  rlen > toff ? s->buf + toff : "", rlen - toff,
                                  PS_LABELS_COPY) != PS_OK)
            goto nomem;
        return 1;
    }
    case PS_RELABEL_LOWERCASE:
    case PS_RELABEL_UPPERCASE: {
        size_t len;

        if (val == s->buf) {
            char *tmp = ps_strstore_dup(&s->b.store, val, vlen);

            if (tmp == NULL)
                goto nomem;
            val = tmp;
        }
        if (change_case(r, s, val, vlen, ru->action == PS_RELABEL_UPPERCASE,
                        &len) != PS_OK ||
            ps_labels_builder_set(&s->b, ru->target.p, ru->target.n, s->buf,
                                  len, PS_LABELS_COPY) != PS_OK)
            goto nomem;
        return 1;
    }
    case PS_RELABEL_HASHMOD: {
        unsigned char d[16];
        uint64_t h = 0;
        char num[24];
        int k;

        ps_md5(val, vlen, d);
        for (k = 8; k < 16; k++) /* last 8 bytes, big-endian */
            h = h << 8 | d[k];
        k = snprintf(num, sizeof(num), "%llu",
                     (unsigned long long)(h % ru->modulus));
        if (ps_labels_builder_set(&s->b, ru->target.p, ru->target.n, num,
                                  (size_t)k, PS_LABELS_COPY) != PS_OK)
            goto nomem;
        return 1;
    }
    case PS_RELABEL_LABELMAP: {
        const struct ps_label *snap;
        size_t n;

        if (ps_labels_builder_range(&s->b, &snap, &n) != PS_OK)
            goto nomem;
        for (i = 0; i < n; i++) {
            size_t len = 0;

            m = match(ru, s, snap[i].name, snap[i].name_len, e);
            if (m < 0)
                return m;
            if (m == 0)
                continue;
            /* Anchored regex: ReplaceAllString is one expansion. */
            if (expand(&ru->repl_t, s, snap[i].name, &len) != PS_OK ||
                ps_labels_builder_set(&s->b, len ? s->buf : "", len,
                                      snap[i].value, snap[i].value_len,
                                      PS_LABELS_COPY) != PS_OK)
                goto nomem;
        }
        return 1;
    }
    case PS_RELABEL_LABELDROP:
    case PS_RELABEL_LABELKEEP:
        for (i = 0; i < s->b.n;) {
            const struct ps_label *l = &s->b.v[i].l;

            m = match(ru, s, l->name, l->name_len, e);
            if (m < 0)
                return m;
            if (m == (ru->action == PS_RELABEL_LABELDROP))
                ps_labels_builder_del_at(&s->b, i);
            else
                i++;
        }
        return 1;
    }
    return ps_err_set(e, PS_EINVAL, "rule %zu: bad action", ru->index);
nomem:
    return ps_err_set(e, PS_ENOMEM, "rule %zu: out of memory", ru->index);
}

int ps_relabel_apply_range(const struct ps_relabel *r,
                           struct ps_relabel_scratch *s,
                           const struct ps_labels *in, size_t first,
                           size_t count, struct ps_labels *out, size_t *drop_at,
                           struct ps_err *e)
{
    size_t i, last;
    int rc;

    if (first > r->n || count > r->n - first)
        return ps_err_set(e, PS_EINVAL, "relabel: rule range out of bounds");
    last = first + count;
    if (s->md_pairs < r->max_pairs) {
        pcre2_match_data *md = pcre2_match_data_create(r->max_pairs, s->gctx);

        if (md == NULL)
            return ps_err_set(e, PS_ENOMEM, "relabel: out of memory");
        pcre2_match_data_free(s->md);
        s->md = md;
        s->md_pairs = r->max_pairs;
    }
    rc = ps_labels_builder_reset(&s->b, in);
    if (rc == PS_EINVAL)
        return ps_err_set(e, rc, "relabel: duplicate label name in input");
    if (rc != PS_OK)
        return ps_err_set(e, rc, "relabel: out of memory");
    for (i = first; i < last; i++) {
        rc = apply_rule(r, &r->rules[i], s, e);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            ps_labels_clear(out);
            *drop_at = i;
            return PS_OK;
        }
    }
    if (ps_labels_builder_labels(&s->b, out) != PS_OK)
        return ps_err_set(e, PS_ENOMEM, "relabel: out of memory");
    *drop_at = PS_RELABEL_KEPT;
    return PS_OK;
}

int ps_relabel_apply(const struct ps_relabel *r, struct ps_relabel_scratch *s,
                     const struct ps_labels *in, struct ps_labels *out,
                     size_t *drop_at, struct ps_err *e)
{
    return ps_relabel_apply_range(r, s, in, 0, r->n, out, drop_at, e);
}
