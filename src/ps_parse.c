/*
 * ps_parse: pull parser for the Prometheus text format 0.0.4 and
 * OpenMetrics 1.0.0. See ps_parse.h for the contract.
 *
 * Design. Each ps_parse_next() call parses exactly one line (a quoted
 * string may span lines in the text format, as Prometheus's lexer allows)
 * with a hand-written recursive descent over byte-class tables. The
 * accepted language is the one of Prometheus's golex lexers (promlex.l,
 * openmetricslex.l) and parsers (promparse.go, openmetricsparse.go), written
 * as code rather than as a state machine so the hot path (name, labels,
 * value) is a few tight loops.
 *
 * Speed. The scanners (names, quoted strings, metadata lines) take 16
 * bytes at a time with SSE2 where the compiler targets it (baseline on
 * x86_64, so no runtime dispatch), else 8 with SWAR or one; vector loads
 * happen only while 16 bytes remain, tails are scalar. The common case of
 * each step is inlined and anything unusual (escapes, non-ASCII, blanks,
 * possible repeated label names, values that are not plain decimals) falls
 * back to the general code, so the fast paths change no result.
 *
 * Memory. Views point into the input; only strings holding escapes are
 * decoded, into a scratch buffer that is reset per entry. Because the
 * scratch buffer may move when it grows mid-line, views already pointing
 * into it are rebased (rebase_scratch). The label array is indexed, never
 * pointed into, until the line is complete.
 *
 * Strict mode (OpenMetrics only) layers the OpenMetrics 1.0 family rules
 * on top, following the reference parser of the OpenMetrics project
 * (family grouping, metadata placement, histogram/summary/counter rules).
 * Its state is allocated lazily and grows per family, never per sample.
 */
#include "ps_parse.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__) && defined(__GNUC__)
#include <emmintrin.h> /* baseline on x86_64: no runtime dispatch needed */
#define PS_SSE2 1
#endif

#if defined(__GNUC__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define HOT_INLINE static inline __attribute__((always_inline))
#define NOINLINE static __attribute__((noinline))
#else
#define LIKELY(x) (x)
#define HOT_INLINE static inline
#define NOINLINE static
#endif

enum { ST_RUN = 0, ST_EOF, ST_ERR };

/* Byte classes. One table so each hot loop is a load and a test. */
enum {
    C_MNAME0 = 1,  /* [a-zA-Z_:]: may start a metric name */
    C_MNAME = 2,   /* [a-zA-Z0-9_:] */
    C_LNAME0 = 4,  /* [a-zA-Z_] */
    C_LNAME = 8,   /* [a-zA-Z0-9_] */
    C_QSTOP = 16,  /* '"', '\\', '\n', NUL: stop a quoted-string scan */
    C_TVSTOP = 32, /* '{', ' ', '\t', '\n': ends a text-format value */
    C_OVSTOP = 64, /* ' ', '\n': ends an OpenMetrics value/timestamp */
    C_DIGIT = 128
};

/* Generated from the class definitions above (a const table: no
 * initialisation race between threads). */
/*
 * Columns: bit 1/2 metric-name start/continue, 4/8 label-name start/
 * continue, 16 quoted-string stop, 32 text value stop, 64 OpenMetrics
 * value stop, 128 digit. Bytes >= 0x80 have no class: names are ASCII
 * unless quoted, and quoted strings handle UTF-8 on their own path.
 */
static const unsigned char cls[256] = {
     16,   0,   0,   0,   0,   0,   0,   0,   0,  32, 112,   0,   0,   0,   0,   0,
      0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
     96,   0,  16,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
    138, 138, 138, 138, 138, 138, 138, 138, 138, 138,   3,   0,   0,   0,   0,   0,
      0,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,
     15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,   0,  16,   0,   0,  15,
      0,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,
     15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  15,  32,   0,   0,   0,   0,
      0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
      0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
      0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
      0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
      0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
      0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
      0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
      0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
};

#define CL(c) (cls[(unsigned char)(c)])

/* ---- strict-mode state ------------------------------------------------- */

/* A set of 64-bit keys with generations, so clearing it per family is O(1)
 * however large one family made it. Used for the labelset groups already
 * closed in the open family: 64-bit hashes stand for labelsets, so a
 * collision (odds ~2^-64 per pair) could only make strict mode reject a
 * valid body, never accept a bad one. */
struct kset {
    uint64_t *key;
    uint32_t *gen;
    size_t cap, n;
    uint32_t cur;
};

/* Family names seen so far (OpenMetrics forbids a name reappearing), plus
 * every sample name a family owns, so a gauge "a_total" after a counter
 * "a" is caught. Names are copied: the input views die with the line. */
struct nset {
    char *chars;
    size_t clen, ccap;
    size_t *off; /* slot -> offset+1 into chars (0 = empty) */
    size_t *len;
    uint64_t *hash;
    size_t cap, n;
};

/* Strict-mode state: the open family and what has been seen in it. */
struct strict {
    int active; /* a family is open */
    char *fam;
    size_t famlen, famcap;
    enum ps_mtype type;
    int typed, has_help, has_unit, unit_nonempty, has_samples;
    /* grouping of MetricPoints (labelsets) within the family */
    int has_group;
    uint64_t group;
    int group_has_ts;
    double group_ts;
    struct kset groups;
    struct nset names;
    /* histogram/gaugehistogram check of the current group: last le and
     * bucket value (cumulative, increasing), _count, and which of
     * _sum/_gsum were seen, with their sign rules */
    int h_open, h_has_bucket, h_has_count, h_sum, h_gsum, h_negb, h_neggsum;
    double h_le, h_val, h_count;
};

/* ---- parser ------------------------------------------------------------ */

/* One parser per body; everything below pos is consumed. */
struct ps_parser {
    const char *buf, *end, *pos;
    struct ps_parse_opts o;
    size_t line;     /* line number at pos (1-based) */
    size_t entline;  /* line where the current entry started */
    int state;
    int rc;          /* sticky result once state != ST_RUN */
    char msg[PS_ERR_MAX];

    struct ps_series_view sv;
    struct ps_meta_view mv;
    struct ps_str comment;

    /* Labels of the current line: series labels, then exemplar labels. */
    struct ps_label_view *lab;
    size_t nlab, labcap;

    char *scr; /* decoded strings of the current entry */
    size_t scrlen, scrcap;
    char *num; /* NUL-terminated copy for strtod on long numbers */
    size_t numcap;
    size_t *sortidx; /* hash table for duplicate checks of big label sets */
    size_t sortcap;

    struct strict *st; /* OpenMetrics strict mode only, lazily built */
    const char *qwhy;  /* why the last scan_quoted() failed */
};

/* ---- errors ------------------------------------------------------------ */

/* Records a parse error "line N: ..." and makes it sticky. Always returns
 * PS_EPARSE so callers can `return perr(...)`. */
static int perr(struct ps_parser *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int perr(struct ps_parser *p, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(p->msg, sizeof(p->msg), "line %zu: ", p->line);

    if (n < 0 || (size_t)n >= sizeof(p->msg))
        n = 0;
    va_start(ap, fmt);
    vsnprintf(p->msg + n, sizeof(p->msg) - (size_t)n, fmt, ap);
    va_end(ap);
    p->state = ST_ERR;
    p->rc = PS_EPARSE;
    return PS_EPARSE;
}

/* Records PS_ENOMEM as the sticky result; returns PS_ENOMEM. */
static int pnomem(struct ps_parser *p)
{
    snprintf(p->msg, sizeof(p->msg), "line %zu: out of memory", p->line);
    p->state = ST_ERR;
    p->rc = PS_ENOMEM;
    return PS_ENOMEM;
}

/* Quotes the token starting at s for "got %s" in messages, escaping
 * anything unprintable. Writes into out (size >= 48); never reads past
 * p->end. */
static const char *got(const struct ps_parser *p, const char *s, char *out,
                       size_t cap)
{
    size_t o = 0, n = 0, max;
    const char *e;

    if (s >= p->end)
        return "end of input";
    /* A name-like run, or a single structural byte. */
    e = s;
    if (CL(*e) & C_MNAME) {
        while (e < p->end && (CL(*e) & C_MNAME) && e - s < 24)
            e++;
    } else {
        e++;
    }
    max = cap - 8;
    out[o++] = '"';
    for (; s < e && o < max; s++, n++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

#define GOT(s) got(p, (s), gbuf, sizeof(gbuf))

/* ---- scratch buffer and label array ------------------------------------ */

/* Moves view v from the old scratch block to nw if it pointed into it.
 * The old block is already freed, so only its address is compared. */
static void rebase(struct ps_str *v, uintptr_t old, size_t len, char *nw)
{
    uintptr_t a = (uintptr_t)v->p;

    if (v->p != NULL && a >= old && a - old <= len)
        v->p = nw + (a - old);
}

/* Makes room for `need` more scratch bytes. Views already pointing into the
 * old block are moved with it. Returns PS_OK or PS_ENOMEM (p unchanged). */
static int scratch_reserve(struct ps_parser *p, size_t need)
{
    size_t cap, i;
    uintptr_t old;
    char *nw;

    if (p->scrcap - p->scrlen >= need)
        return PS_OK;
    cap = p->scrcap ? p->scrcap : 256;
    while (cap - p->scrlen < need) {
        if (cap > SIZE_MAX / 2)
            return PS_ENOMEM;
        cap *= 2;
    }
    old = (uintptr_t)p->scr;
    nw = ps_realloc(p->scr, cap);
    if (nw == NULL)
        return PS_ENOMEM;
    if (old != 0 && (uintptr_t)nw != old) {
        for (i = 0; i < p->nlab; i++) {
            rebase(&p->lab[i].name, old, p->scrlen, nw);
            rebase(&p->lab[i].value, old, p->scrlen, nw);
        }
        rebase(&p->sv.name, old, p->scrlen, nw);
        rebase(&p->mv.family, old, p->scrlen, nw);
        rebase(&p->mv.text, old, p->scrlen, nw);
    }
    p->scr = nw;
    p->scrcap = cap;
    return PS_OK;
}

enum { DEC_LVAL, DEC_HELP };

/* Decodes s[0..n) into the scratch buffer: DEC_LVAL resolves \" \\ \n,
 * DEC_HELP (text-format HELP) only \\ and \n; any other backslash is kept
 * as is, like Go's strings.Replacer in Prometheus. Returns PS_OK with *out
 * pointing into scratch, or PS_ENOMEM. */
static int decode(struct ps_parser *p, const char *s, size_t n, int mode,
                  struct ps_str *out)
{
    const char *e = s + n;
    char *d;

    if (scratch_reserve(p, n) != PS_OK)
        return PS_ENOMEM;
    d = p->scr + p->scrlen;
    out->p = d;
    while (s < e) {
        const char *bs = memchr(s, '\\', (size_t)(e - s));
        size_t run = bs ? (size_t)(bs - s) : (size_t)(e - s);

        memcpy(d, s, run);
        d += run;
        s += run;
        if (s >= e)
            break;
        if (s + 1 < e && (s[1] == '\\' || s[1] == 'n' ||
                          (s[1] == '"' && mode == DEC_LVAL))) {
            *d++ = s[1] == 'n' ? '\n' : s[1];
            s += 2;
        } else {
            *d++ = '\\';
            s++;
        }
    }
    out->n = (size_t)(d - out->p);
    p->scrlen += out->n;
    return PS_OK;
}

/* Returns a free label slot index (grows the array), or -1 on ENOMEM. */
static long label_slot(struct ps_parser *p)
{
    if (p->nlab == p->labcap) {
        size_t cap = p->labcap ? p->labcap * 2 : 16;
        struct ps_label_view *nl;

        if (cap > SIZE_MAX / sizeof(*nl))
            return -1;
        nl = ps_realloc(p->lab, cap * sizeof(*nl));
        if (nl == NULL)
            return -1;
        p->lab = nl;
        p->labcap = cap;
    }
    return (long)p->nlab++;
}

/* ---- numbers ----------------------------------------------------------- */

static const double pow10tab[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* ASCII case-insensitive equality of s[0..n) with lowercase lit. */
static int ci_eq(const char *s, size_t n, const char *lit)
{
    size_t i;

    if (strlen(lit) != n)
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lit[i])
            return 0;
    }
    return 1;
}

enum { NUM_OK = 0, NUM_SYNTAX = -1, NUM_RANGE = -2, NUM_NOMEM = -3 };

/* strtod on a NUL-terminated copy of an already validated decimal, with
 * the locale's radix character (a host may have called setlocale). */
static int slow_float(struct ps_parser *p, const char *s, size_t n,
                      double *out)
{
    char stackbuf[128], *b = stackbuf, *q;
    const char *dp = localeconv()->decimal_point;
    double v;

    if (n + 1 > sizeof(stackbuf)) {
        if (p->numcap < n + 1) {
            char *nb = ps_realloc(p->num, n + 1);
            if (nb == NULL)
                return NUM_NOMEM;
            p->num = nb;
            p->numcap = n + 1;
        }
        b = p->num;
    }
    memcpy(b, s, n);
    b[n] = '\0';
    if (dp != NULL && dp[0] != '.' && dp[0] != '\0' && dp[1] == '\0') {
        q = memchr(b, '.', n);
        if (q != NULL)
            *q = dp[0];
    }
    v = strtod(b, NULL);
    /* Go's ParseFloat fails on overflow (Prometheus then rejects the
     * line) but not on underflow. */
    if (isinf(v))
        return NUM_RANGE;
    *out = v;
    return NUM_OK;
}

/*
 * Parses s[0..n) as Prometheus's parseFloat does: Go's strconv.ParseFloat
 * minus hex floats and underscores. Accepts [+-]digits[.digits][e[+-]d],
 * case-insensitive "inf"/"infinity" with optional sign, and "nan" without.
 * NaN is returned as Prometheus's canonical NormalNaN bits. Clinger's fast
 * path handles <= 15 significant digits and |exp10| <= 22 exactly.
 */
NOINLINE int parse_float(struct ps_parser *p, const char *s, size_t n,
                         double *out)
{
    const char *e = s + n, *q = s;
    uint64_t m = 0;
    int neg = 0, sig = 0, digits = 0, dropped = 0;
    long exp10 = 0, x = 0;
    double v;

    /* Words first: Go's special() takes a sign only before inf/infinity,
     * so "+nan" and "-nan" are syntax errors. */
    if (n == 0)
        return NUM_SYNTAX;
    if (*q == '+' || *q == '-') {
        neg = *q == '-';
        q++;
    }
    if (q < e && !(CL(*q) & C_DIGIT) && *q != '.') {
        size_t r = (size_t)(e - q);
        if (ci_eq(q, r, "inf") || ci_eq(q, r, "infinity")) {
            *out = neg ? -HUGE_VAL : HUGE_VAL;
            return NUM_OK;
        }
        if (q == s && ci_eq(q, r, "nan")) {
            uint64_t bits = 0x7ff8000000000001ULL; /* value.NormalNaN */
            memcpy(out, &bits, sizeof(*out));
            return NUM_OK;
        }
        return NUM_SYNTAX;
    }
    /* Mantissa: up to 19 significant digits in m (leading zeros are not
     * significant and cost nothing, so 000...0001.2e-1 stays fast); further
     * digits are only counted, and send the number to strtod. */
    for (; q < e && (CL(*q) & C_DIGIT); q++) {
        digits++;
        if (m == 0 && *q == '0')
            continue;
        if (sig < 19) {
            m = m * 10 + (uint64_t)(*q - '0');
            sig++;
        } else {
            dropped++;
        }
    }
    exp10 = dropped;
    if (q < e && *q == '.') {
        for (q++; q < e && (CL(*q) & C_DIGIT); q++) {
            digits++;
            if (m == 0 && *q == '0') {
                exp10--;
                continue;
            }
            if (sig < 19) {
                m = m * 10 + (uint64_t)(*q - '0');
                sig++;
                exp10--;
            } else {
                dropped++;
            }
        }
    }
    if (digits == 0)
        return NUM_SYNTAX;
    /* Exponent: saturates at 100000, far beyond any double, so a huge
     * exponent still overflows (rejected) or underflows (zero) in strtod. */
    if (q < e && (*q == 'e' || *q == 'E')) {
        int eneg = 0, ed = 0;
        q++;
        if (q < e && (*q == '+' || *q == '-')) {
            eneg = *q == '-';
            q++;
        }
        for (; q < e && (CL(*q) & C_DIGIT); q++, ed++)
            if (x < 100000)
                x = x * 10 + (*q - '0');
        if (ed == 0)
            return NUM_SYNTAX;
        exp10 += eneg ? -x : x;
    }
    if (q != e)
        return NUM_SYNTAX;
    if (m == 0) {
        *out = neg ? -0.0 : 0.0;
        return NUM_OK;
    }
    /* Clinger: m and 10^|exp10| are both exact doubles, so one IEEE
     * multiply or divide rounds once and gives the correctly rounded
     * result, which is what strtod (and Go) would return. */
    if (dropped == 0 && m <= (1ULL << 53) && exp10 >= -22 && exp10 <= 22) {
        v = (double)m;
        v = exp10 < 0 ? v / pow10tab[-exp10] : v * pow10tab[exp10];
        *out = neg ? -v : v;
        return NUM_OK;
    }
    return slow_float(p, s, n, out);
}

/*
 * The common shapes of a sample value, [-]digits[.digits][e[+-]digits],
 * parsed in the same pass that finds the end of the token (the first byte
 * of class `stop`, or e). Returns that end with *out set when the result is
 * exact by Clinger's rule (<= 19 digits, mantissa <= 2^53, |exp10| <= 22),
 * which is then the value parse_float() gives; NULL when it cannot tell,
 * and parse_float() decides.
 */
HOT_INLINE const char *fast_number(const char *q, const char *e,
                                   unsigned char stop, double *out)
{
    uint64_t m = 0;
    int nd = 0, neg = 0;
    long x10 = 0;
    double v;

    if (q < e && *q == '-') {
        neg = 1;
        q++;
    }
    for (; q < e && (unsigned char)(*q - '0') < 10; q++, nd++) {
        if (nd == 19)
            return NULL;
        m = m * 10 + (uint64_t)(*q - '0');
    }
    if (q < e && *q == '.') {
        for (q++; q < e && (unsigned char)(*q - '0') < 10; q++, nd++) {
            if (nd == 19)
                return NULL;
            m = m * 10 + (uint64_t)(*q - '0');
            x10--;
        }
    }
    if (nd == 0)
        return NULL;
    if (q < e && (*q | 0x20) == 'e') {
        int eneg = 0, ed = 0;
        long x = 0;
        q++;
        if (q < e && (*q == '+' || *q == '-')) {
            eneg = *q == '-';
            q++;
        }
        for (; q < e && (unsigned char)(*q - '0') < 10; q++, ed++) {
            if (ed == 3)
                return NULL;
            x = x * 10 + (*q - '0');
        }
        if (ed == 0)
            return NULL;
        x10 += eneg ? -x : x;
    }
    if (q < e && !(CL(*q) & stop))
        return NULL;
    if (m > (1ULL << 53) || x10 < -22 || x10 > 22)
        return NULL;
    v = (double)m;
    v = x10 < 0 ? v / pow10tab[-x10] : v * pow10tab[x10];
    *out = neg ? -v : v;
    return q;
}

/* Seconds (OpenMetrics) to milliseconds as Prometheus does, int64(ts*1000)
 * truncating toward zero; out-of-range values saturate (Go leaves them
 * implementation-defined, C undefined). */
static int64_t sec_to_ms(double ts)
{
    double ms = ts * 1000.0;

    if (ms >= 9223372036854775807.0)
        return INT64_MAX;
    if (ms <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)ms;
}

/* ---- lexing helpers ---------------------------------------------------- */

enum { Q_NL = 1, Q_NUL = 2 };

/* SWAR helpers: a word of 8 copies of byte b; nonzero iff w has a zero
 * byte (exact as a yes/no answer, which is all the scan needs). */
#define SWAR_REP(b) (0x0101010101010101ULL * (uint64_t)(unsigned char)(b))
#define SWAR_ZERO(w) (((w) - SWAR_REP(1)) & ~(w) & SWAR_REP(0x80))
#if defined(__GNUC__) && defined(__BYTE_ORDER__) &&                          \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SWAR_FIRST(t) ((size_t)__builtin_ctzll(t) >> 3)
#define SWAR_HAVE_FIRST 1
#else
#define SWAR_FIRST(t) ((size_t)0) /* portable: rescan the word bytewise */
#endif

/* Per-byte exact SWAR tests on words whose bytes are all < 0x80: the high
 * bit of each byte answers "byte >= lo", "byte <= hi", "byte == b". */
#define SWAR_GE(w, lo) (((w) + SWAR_REP(0x80 - (lo))) & SWAR_REP(0x80))
#define SWAR_LE(w, hi) (~((w) + SWAR_REP(0x7f - (hi))) & SWAR_REP(0x80))
#define SWAR_EQ0(x)                                                          \
    (~((((x) & SWAR_REP(0x7f)) + SWAR_REP(0x7f)) | (x)) & SWAR_REP(0x80))

/* Returns the end of the run of name bytes [a-zA-Z0-9_] (plus ':' when
 * colon) starting at s, never past e. Names are long in real exposition
 * (k8s label names), so whole words are classified at once. */
HOT_INLINE const char *scan_name(const char *s, const char *e, int colon)
{
    unsigned char want = colon ? C_MNAME : C_LNAME;

#if defined(PS_SSE2)
    /* 16 bytes at a time, loads only while 16 bytes remain. A range test
     * lo <= x <= hi is one add and one signed compare: x + (0x80 - lo)
     * maps lo..hi onto -128..-128+(hi-lo) and every other byte above it.
     * '0'..':' is one range, so the colon costs nothing. */
    const __m128i lo_a = _mm_set1_epi8((char)(0x80 - 'a'));
    const __m128i lim_a = _mm_set1_epi8((char)(-128 + 26));
    const __m128i lo_d = _mm_set1_epi8((char)(0x80 - '0'));
    const __m128i lim_d = _mm_set1_epi8((char)(-128 + (colon ? 11 : 10)));
    const __m128i bit5 = _mm_set1_epi8(0x20), us = _mm_set1_epi8('_');

    while (e - s >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)s);
        __m128i lw = _mm_or_si128(v, bit5);
        __m128i ok = _mm_or_si128(
            _mm_or_si128(
                _mm_cmplt_epi8(_mm_add_epi8(lw, lo_a), lim_a),
                _mm_cmplt_epi8(_mm_add_epi8(v, lo_d), lim_d)),
            _mm_cmpeq_epi8(v, us));
        unsigned bad = ~(unsigned)_mm_movemask_epi8(ok) & 0xffffu;

        if (bad != 0)
            return s + __builtin_ctz(bad);
        s += 16;
    }
#elif defined(SWAR_HAVE_FIRST)
    while (e - s >= 8) {
        uint64_t w, lw, ok;
        memcpy(&w, s, 8);
        lw = w | SWAR_REP(0x20);
        ok = (SWAR_GE(lw, 'a') & SWAR_LE(lw, 'z')) |
             (SWAR_GE(w, '0') & SWAR_LE(w, '9')) | SWAR_EQ0(w ^ SWAR_REP('_'));
        if (colon)
            ok |= SWAR_EQ0(w ^ SWAR_REP(':'));
        ok &= ~w; /* a byte >= 0x80 is never a name byte */
        if (ok != SWAR_REP(0x80))
            return s + SWAR_FIRST(~ok & SWAR_REP(0x80));
        s += 8;
    }
#endif
    while (s < e && (CL(*s) & want))
        s++;
    return s;
}

/* Scans a quoted string starting at s (s[0] == '"'), where a backslash
 * escapes any byte but a newline. Q_NL permits raw newlines (text format;
 * counted into p->line), Q_NUL permits NUL bytes (where Prometheus's lexer
 * skips them: series label values). Returns the byte after the closing
 * quote, or NULL with the reason in p->qwhy. *flags gets 1 if a backslash
 * was seen, 2 if a non-ASCII byte was. */
NOINLINE const char *scan_quoted_slow(struct ps_parser *p, const char *s,
                                      int mode, unsigned *flags)
{
    const char *e = p->end;
    unsigned hi = 0, f = 0;
    size_t line0 = p->line; /* an unclosed string is reported where it began */

    p->qwhy = "unterminated string";
    for (s++; s < e; s++) {
        unsigned char c;
#if defined(PS_SSE2)
        /* 16 bytes at a time up to the first '"', '\\', '\n' or NUL.
         * Non-ASCII bytes before it only set hi (UTF-8 is checked later),
         * so they do not leave the fast path. */
        while (e - s >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)s);
            __m128i t = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                             _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\n')),
                             _mm_cmpeq_epi8(v, _mm_setzero_si128())));
            unsigned stop = (unsigned)_mm_movemask_epi8(t);
            unsigned high = (unsigned)_mm_movemask_epi8(v);

            if (stop != 0) {
                unsigned k = (unsigned)__builtin_ctz(stop);
                if (high & ((1u << k) - 1))
                    hi = 0x80;
                s += k;
                break;
            }
            if (high != 0)
                hi = 0x80;
            s += 16;
        }
#else
        /* Eight bytes at a time while none is '"', '\\', '\n', NUL or
         * non-ASCII: label values are mostly plain ASCII. */
        while (e - s >= 8) {
            uint64_t w, t;
            memcpy(&w, s, 8);
            t = SWAR_ZERO(w ^ SWAR_REP('"')) | SWAR_ZERO(w ^ SWAR_REP('\\')) |
                SWAR_ZERO(w ^ SWAR_REP('\n')) | SWAR_ZERO(w) |
                (w & SWAR_REP(0x80));
            if (t != 0) {
                /* The lowest flagged byte is a true hit: jump to it. */
                s += SWAR_FIRST(t);
                break;
            }
            s += 8;
        }
#endif
        if (s >= e)
            break;
        c = (unsigned char)*s;
        if (!(cls[c] & C_QSTOP)) {
            hi |= c;
            continue;
        }
        if (c == '"') {
            *flags = f | ((hi & 0x80) ? 2u : 0u);
            return s + 1;
        }
        if (c == '\\') {
            f |= 1;
            if (s + 1 >= e || s[1] == '\n')
                break;
            hi |= (unsigned char)s[1];
            if (s[1] == 0 && !(mode & Q_NUL)) {
                p->qwhy = "NUL byte in string";
                break;
            }
            s++;
            continue;
        }
        if (c == 0) {
            if (mode & Q_NUL)
                continue;
            p->qwhy = "NUL byte in string";
            break;
        }
        /* newline */
        if (!(mode & Q_NL))
            break;
        p->line++;
    }
    p->line = line0;
    return NULL;
}

/* The common case of scan_quoted_slow(), inlined: plain ASCII up to the
 * closing quote (no escape, raw newline, NUL or byte >= 0x80), 16 bytes
 * readable at each step. Anything else is handed to the full scan from
 * the opening quote. */
HOT_INLINE const char *scan_quoted(struct ps_parser *p, const char *s,
                                   int mode, unsigned *flags)
{
#if defined(PS_SSE2)
    const char *e = p->end, *q = s + 1;

    while (e - q >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)q);
        __m128i t = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                         _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
            _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\n')),
                         _mm_cmpeq_epi8(v, _mm_setzero_si128())));
        unsigned stop = (unsigned)_mm_movemask_epi8(_mm_or_si128(t, v));

        if (stop != 0) {
            q += __builtin_ctz(stop);
            if (LIKELY(*q == '"')) {
                *flags = 0;
                return q + 1;
            }
            break;
        }
        q += 16;
    }
#endif
    return scan_quoted_slow(p, s, mode, flags);
}

/* Returns the first '\n' at or after s, or e. *flags gets 1 if a backslash
 * may be before it, 2 if a byte >= 0x80 may be (hints: a clear bit is a
 * promise, a set one is checked exactly by the caller). Metadata lines. */
static const char *scan_line(const char *s, const char *e, unsigned *flags)
{
    unsigned f = 0;

#if defined(PS_SSE2)
    while (e - s >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)s);
        unsigned nl = (unsigned)_mm_movemask_epi8(
            _mm_cmpeq_epi8(v, _mm_set1_epi8('\n')));
        /* backslash or >= 0x80: both flags (rare, and then both exact
         * checks run) */
        unsigned sp = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\\')), v));

        if (nl != 0) {
            if (sp & ((nl & -nl) - 1)) /* before the newline */
                f = 3;
            *flags = f;
            return s + __builtin_ctz(nl);
        }
        if (sp != 0)
            f = 3;
        s += 16;
    }
#endif
    for (; s < e && *s != '\n'; s++) {
        if (*s == '\\')
            f |= 1;
        else if ((unsigned char)*s >= 0x80)
            f |= 2;
    }
    *flags = f;
    return s;
}

/* Produces the view of quoted string body [a, b) (quotes excluded),
 * decoding only if it held escapes. Validates UTF-8 when non-ASCII bytes
 * were seen. Returns PS_OK, PS_EPARSE or PS_ENOMEM. */
NOINLINE int quoted_view_slow(struct ps_parser *p, const char *a,
                              const char *b, unsigned flags,
                              const char *what, struct ps_str *out)
{
    if ((flags & 2) && !ps_utf8_valid(a, (size_t)(b - a)))
        return perr(p, "invalid UTF-8 in %s", what);
    if (flags & 1)
        return decode(p, a, (size_t)(b - a), DEC_LVAL, out) == PS_OK
                   ? PS_OK
                   : pnomem(p);
    out->p = a;
    out->n = (size_t)(b - a);
    return PS_OK;
}

/* quoted_view_slow() for the plain case inlined: ASCII, no escapes. */
HOT_INLINE int quoted_view(struct ps_parser *p, const char *a, const char *b,
                           unsigned flags, const char *what,
                           struct ps_str *out)
{
    if (LIKELY(flags == 0)) {
        out->p = a;
        out->n = (size_t)(b - a);
        return PS_OK;
    }
    return quoted_view_slow(p, a, b, flags, what, out);
}

/* Skips text-format blanks (space, tab), never past e. */
static const char *skip_ws(const char *s, const char *e)
{
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    return s;
}

/* ---- duplicate labels -------------------------------------------------- */

/* FNV-1a: short keys, and only in rare paths (big label sets, strict). */
static uint64_t hash_bytes(const char *s, size_t n, uint64_t h)
{
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}


/* Byte equality of two views. */
static int same_str(const struct ps_str *a, const struct ps_str *b)
{
    return a->n == b->n && memcmp(a->p, b->p, a->n) == 0;
}

/* Rejects a repeated label name (or a "__name__" label, which would repeat
 * the metric name) in lab[from..to). Small sets are compared pairwise;
 * large ones sorted through an index array. Returns PS_OK, PS_EPARSE or
 * PS_ENOMEM. */
static int check_dups(struct ps_parser *p, size_t from, size_t to)
{
    const struct ps_label_view *l = p->lab;
    size_t i, j, n = to - from;

    if (n <= 16) {
        /* A 64-slot table of label indices on the stack, keyed by length
         * and three bytes (parse_labels() has usually ruled repeats out
         * already). A real repeat, or "__name__", goes to the pairwise
         * check, which reports exactly as it always has. */
        unsigned char tab[64];
        int bad = 0;

        if (n <= 3) /* at most three pairs: compare them directly */
            goto pairwise;
        memset(tab, 0, sizeof(tab));
        for (i = from; i < to && !bad; i++) {
            const struct ps_str *a = &l[i].name;
            uint32_t key, h;

            if (a->n == 0) {
                bad = 1;
                break;
            }
            key = (uint32_t)a->n ^ (uint32_t)(unsigned char)a->p[0] << 8 ^
                  (uint32_t)(unsigned char)a->p[a->n - 1] << 16 ^
                  (uint32_t)(unsigned char)a->p[a->n / 2] << 24;
            h = (key * 0x9E3779B1u) >> 26;
            if (a->n == 8 && memcmp(a->p, "__name__", 8) == 0)
                bad = 1;
            for (; tab[h] != 0; h = (h + 1) & 63)
                if (same_str(a, &l[from + tab[h] - 1].name))
                    bad = 1;
            tab[h] = (unsigned char)(i - from + 1);
        }
        if (!bad)
            return PS_OK;
    pairwise:
        for (i = from; i < to; i++)
            if (l[i].name.n == 8 && memcmp(l[i].name.p, "__name__", 8) == 0)
                return perr(p, "duplicate label name \"__name__\"");
        for (i = from + 1; i < to; i++)
            for (j = from; j < i; j++)
                if (same_str(&l[i].name, &l[j].name))
                    return perr(p, "duplicate label name \"%.*s\"",
                                (int)(l[i].name.n > 64 ? 64 : l[i].name.n),
                                l[i].name.p);
        return PS_OK;
    }
    /* Large sets: an open-addressing table of label indices, sized to a
     * power of two >= 2n, kept in the parser and reused. */
    for (i = from; i < to; i++)
        if (l[i].name.n == 8 && memcmp(l[i].name.p, "__name__", 8) == 0)
            return perr(p, "duplicate label name \"__name__\"");
    {
        size_t cap = 64, mask, k;
        while (cap < 2 * n)
            cap *= 2;
        if (p->sortcap < cap) {
            size_t *ni = ps_realloc(p->sortidx, cap * sizeof(*ni));
            if (ni == NULL)
                return pnomem(p);
            p->sortidx = ni;
            p->sortcap = cap;
        }
        memset(p->sortidx, 0, cap * sizeof(size_t));
        mask = cap - 1;
        for (i = from; i < to; i++) {
            const struct ps_str *a = &l[i].name;
            k = (size_t)hash_bytes(a->p, a->n, 0xcbf29ce484222325ULL) & mask;
            for (; p->sortidx[k] != 0; k = (k + 1) & mask)
                if (same_str(a, &l[p->sortidx[k] - 1].name))
                    return perr(p, "duplicate label name \"%.*s\"",
                                (int)(a->n > 64 ? 64 : a->n), a->p);
            p->sortidx[k] = i + 1;
        }
    }
    return PS_OK;
}

/* ---- label blocks ------------------------------------------------------ */

enum { LB_SERIES, LB_EXEMPLAR };

/*
 * Parses a label block; s points just after '{'. Text format skips blanks
 * between tokens and needs no comma between pairs; OpenMetrics allows
 * neither. A quoted string followed by ',' or '}' is the metric name (not in
 * exemplars). *name receives it. Returns the byte after '}' or NULL on error
 * (message recorded).
 */
static const char *parse_labels(struct ps_parser *p, const char *s, int kind,
                                struct ps_str *name, int *dups, int *rc)
{
    const char *e = p->end;
    int om = p->o.format == PS_FORMAT_OPENMETRICS;
    int text = !om;
    int trailing_comma = 0;
    uint64_t m1 = 0, m2 = 0; /* Bloom filter over the bare names */
    char gbuf[48];

    *rc = PS_OK;
    *dups = 0;
    /* One iteration per pair: name (bare or quoted), '=', quoted value,
     * separator. Label views are stored by index (the array may grow),
     * and become pointers only when the line is complete. */
    for (;;) {
        const char *ns, *ne, *vs;
        struct ps_str lname;
        unsigned fl = 0;
        int quoted = 0;
        long k;

        /* Blanks are rare: each skip_ws() is guarded by a test that the
         * expected byte is not already there. Names start above ' '. */
        if (text && s < e && (unsigned char)*s <= ' ')
            s = skip_ws(s, e);
        if (s < e && *s == '}') {
            if (trailing_comma && p->o.strict && om) {
                *rc = perr(p, "trailing comma in label set");
                return NULL;
            }
            return s + 1;
        }
        ns = s;
        if (s < e && (CL(*s) & C_LNAME0)) {
            size_t n;
            uint64_t h, b1, b2;

            s = scan_name(s, e, 0);
            ne = s;
            /* Repeated names: a Bloom filter (two words, one bit in each,
             * keyed by length, first and last byte) proves the common case of
             * distinct names; a possible repeat or a "__name__" leaves the
             * exact check to check_dups(). */
            n = (size_t)(ne - ns);
            h = ((uint64_t)n ^ (uint64_t)(unsigned char)ns[0] << 8 ^
                 (uint64_t)(unsigned char)ne[-1] << 16) *
                0x9E3779B97F4A7C15ULL;
            b1 = 1ULL << (h >> 58);
            b2 = 1ULL << ((h >> 52) & 63);
            if (((m1 & b1) && (m2 & b2)) ||
                (n == 8 && memcmp(ns, "__name__", 8) == 0))
                *dups = 1;
            m1 |= b1;
            m2 |= b2;
        } else if (s < e && *s == '"') {
            *dups = 1; /* decoded names are compared by check_dups() */
            /* Quoted names follow the label-value rule of each lexer. */
            s = scan_quoted(p, s, text ? Q_NL : 0, &fl);
            if (s == NULL) {
                *rc = perr(p, "bad quoted label name: %s", p->qwhy);
                return NULL;
            }
            quoted = 1;
            ne = s;
        } else {
            *rc = perr(p, "expected label name, got %s", GOT(s));
            return NULL;
        }
        if (text && !(s < e && *s == '='))
            s = skip_ws(s, e);
        /* Prometheus 3.x: a quoted string followed by ',' or '}' is the
         * metric name, legal once per block and never in exemplars. */
        if (quoted && s < e && (*s == ',' || *s == '}')) {
            struct ps_str nm;
            if (kind == LB_EXEMPLAR) {
                *rc = perr(p, "expected label name, got %s", GOT(s));
                return NULL;
            }
            if (name->p != NULL) {
                *rc = perr(p, "metric name set twice");
                return NULL;
            }
            if ((*rc = quoted_view(p, ns + 1, ne - 1, fl, "metric name",
                                   &nm)) != PS_OK)
                return NULL;
            if (nm.n == 0) {
                *rc = perr(p, "empty metric name");
                return NULL;
            }
            *name = nm;
            trailing_comma = 0;
            if (*s == ',') {
                s++;
                trailing_comma = 1;
            }
            continue;
        }
        if (quoted) {
            if ((*rc = quoted_view(p, ns + 1, ne - 1, fl, "label name",
                                   &lname)) != PS_OK)
                return NULL;
            if (lname.n == 0) {
                *rc = perr(p, "empty label name");
                return NULL;
            }
        } else {
            lname.p = ns;
            lname.n = (size_t)(ne - ns);
        }
        if (s >= e || *s != '=') {
            *rc = perr(p, "expected equal, got %s", GOT(s));
            return NULL;
        }
        s++;
        if (text && !(s < e && *s == '"'))
            s = skip_ws(s, e);
        if (s >= e || *s != '"') {
            *rc = perr(p, "expected label value, got %s", GOT(s));
            return NULL;
        }
        vs = s;
        s = scan_quoted(p, s,
                        (text ? Q_NL : 0) | (kind == LB_SERIES ? Q_NUL : 0),
                        &fl);
        if (s == NULL) {
            *rc = perr(p, "expected label value, got %s", p->qwhy);
            return NULL;
        }
        /* Values are the hot path: borrowed as is unless they held a
         * backslash, UTF-8-checked only if a byte >= 0x80 was seen. */
        k = label_slot(p);
        if (k < 0) {
            *rc = pnomem(p);
            return NULL;
        }
        p->lab[k].name = lname;
        p->lab[k].value.p = NULL;
        if ((*rc = quoted_view(p, vs + 1, s - 1, fl, "label value",
                               &p->lab[k].value)) != PS_OK)
            return NULL;
        /* Text needs no comma between pairs (promparse.go notes it accepts
         * `{a="1" b="2"}`); both formats allow one trailing comma, which
         * OpenMetrics 1.0 itself (strict) forbids. */
        if (text && !(s < e && (*s == ',' || *s == '}')))
            s = skip_ws(s, e);
        trailing_comma = 0;
        if (s < e && *s == ',') {
            s++;
            trailing_comma = 1;
        } else if (om && (s >= e || *s != '}')) {
            *rc = perr(p, "expected comma or brace close, got %s", GOT(s));
            return NULL;
        }
    }
}

/* ---- strict OpenMetrics rules ------------------------------------------ */

/* Frees strict-mode state; NULL-safe. */
static void strict_free(struct strict *st)
{
    if (st == NULL)
        return;
    ps_free(st->fam);
    ps_free(st->groups.key);
    ps_free(st->groups.gen);
    ps_free(st->names.chars);
    ps_free(st->names.off);
    ps_free(st->names.len);
    ps_free(st->names.hash);
    ps_free(st);
}

/* A 64-bit finaliser (murmur3): spreads FNV output over the table bits and
 * makes the order-independent sum of label hashes robust. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Inserts key; returns 1 if it was already present, 0 if added, <0 on
 * ENOMEM. */
static int kset_add(struct kset *k, uint64_t key)
{
    size_t i, mask;

    if ((k->n + 1) * 2 > k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 64, j;
        uint64_t *nk = ps_calloc(cap, sizeof(*nk));
        uint32_t *ng = ps_calloc(cap, sizeof(*ng));

        if (nk == NULL || ng == NULL) {
            ps_free(nk);
            ps_free(ng);
            return -1;
        }
        for (j = 0; j < k->cap; j++) {
            if (k->gen[j] != k->cur)
                continue;
            i = mix64(k->key[j]) & (cap - 1);
            while (ng[i] == k->cur)
                i = (i + 1) & (cap - 1);
            nk[i] = k->key[j];
            ng[i] = k->cur;
        }
        ps_free(k->key);
        ps_free(k->gen);
        k->key = nk;
        k->gen = ng;
        k->cap = cap;
    }
    mask = k->cap - 1;
    i = mix64(key) & mask;
    while (k->gen[i] == k->cur) {
        if (k->key[i] == key)
            return 1;
        i = (i + 1) & mask;
    }
    k->key[i] = key;
    k->gen[i] = k->cur;
    k->n++;
    return 0;
}

/* Empties the set in O(1) by moving to a new generation. */
static void kset_clear(struct kset *k)
{
    k->cur++;
    k->n = 0;
    if (k->cur == 0) { /* generation wrapped: really clear */
        if (k->gen != NULL)
            memset(k->gen, 0, k->cap * sizeof(*k->gen));
        k->cur = 1;
    }
}

/* Adds name a+b to the set; returns 1 if present, 0 if added, <0 ENOMEM. */
static int nset_add(struct nset *s, const char *a, size_t an, const char *b,
                    size_t bn)
{
    uint64_t h = hash_bytes(b, bn, hash_bytes(a, an, 0xcbf29ce484222325ULL));
    size_t i, mask, n = an + bn;

    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64, j;
        size_t *no = ps_calloc(cap, sizeof(*no));
        size_t *nl = ps_calloc(cap, sizeof(*nl));
        uint64_t *nh = ps_calloc(cap, sizeof(*nh));

        if (no == NULL || nl == NULL || nh == NULL) {
            ps_free(no);
            ps_free(nl);
            ps_free(nh);
            return -1;
        }
        for (j = 0; j < s->cap; j++) {
            if (s->off[j] == 0)
                continue;
            i = s->hash[j] & (cap - 1);
            while (no[i] != 0)
                i = (i + 1) & (cap - 1);
            no[i] = s->off[j];
            nl[i] = s->len[j];
            nh[i] = s->hash[j];
        }
        ps_free(s->off);
        ps_free(s->len);
        ps_free(s->hash);
        s->off = no;
        s->len = nl;
        s->hash = nh;
        s->cap = cap;
    }
    mask = s->cap - 1;
    for (i = h & mask; s->off[i] != 0; i = (i + 1) & mask) {
        const char *c = s->chars + s->off[i] - 1;
        if (s->hash[i] == h && s->len[i] == n && memcmp(c, a, an) == 0 &&
            memcmp(c + an, b, bn) == 0)
            return 1;
    }
    if (s->ccap - s->clen < n + 1) {
        size_t cap = s->ccap ? s->ccap : 1024;
        char *nc;
        while (cap - s->clen < n + 1)
            cap *= 2;
        nc = ps_realloc(s->chars, cap);
        if (nc == NULL)
            return -1;
        s->chars = nc;
        s->ccap = cap;
    }
    memcpy(s->chars + s->clen, a, an);
    memcpy(s->chars + s->clen + an, b, bn);
    s->off[i] = s->clen + 1;
    s->len[i] = n;
    s->hash[i] = h;
    s->clen += n;
    s->n++;
    return 0;
}

/* Histogram-shaped types share the bucket rules. */
static int is_hist(enum ps_mtype t)
{
    return t == PS_MTYPE_HISTOGRAM || t == PS_MTYPE_GAUGEHISTOGRAM;
}

/* Closes the histogram group being checked: +Inf bucket present, _count
 * equal to it, _sum/_count (_gsum/_gcount) in pairs, sign rules. */
static int hist_group_done(struct ps_parser *p)
{
    struct strict *st = p->st;

    if (!st->h_open)
        return PS_OK;
    st->h_open = 0;
    if (!st->h_has_bucket || !isinf(st->h_le) || st->h_le < 0)
        return perr(p, "histogram \"%.*s\" lacks a +Inf bucket",
                    (int)st->famlen, st->fam);
    if (st->h_has_count && st->h_count != st->h_val)
        return perr(p, "histogram count does not match the +Inf bucket");
    if ((st->h_sum || st->h_gsum) != st->h_has_count)
        return perr(p, "histogram needs both count and sum or neither");
    if (st->h_negb && st->h_sum)
        return perr(p, "histogram with negative buckets cannot have _sum");
    if (!st->h_negb && st->h_neggsum)
        return perr(p, "negative _gsum needs negative buckets");
    return PS_OK;
}

/* The name suffixes a family of type t owns (beyond its own name). */
static const char *const *type_suffixes(enum ps_mtype t)
{
    static const char *const counter[] = {"_total", "_created", NULL};
    static const char *const summary[] = {"", "_sum", "_count", "_created",
                                          NULL};
    static const char *const hist[] = {"_count", "_sum", "_bucket",
                                       "_created", NULL};
    static const char *const ghist[] = {"_gcount", "_gsum", "_bucket", NULL};
    static const char *const info[] = {"_info", NULL};
    static const char *const plain[] = {"", NULL};

    switch (t) {
    case PS_MTYPE_COUNTER: return counter;
    case PS_MTYPE_SUMMARY: return summary;
    case PS_MTYPE_HISTOGRAM: return hist;
    case PS_MTYPE_GAUGEHISTOGRAM: return ghist;
    case PS_MTYPE_INFO: return info;
    default: return plain;
    }
}

/* Reserves the name family+sfx; a name owned by two families (say a
 * gauge "a_total" and a counter "a") is a clash. */
static int own_name(struct ps_parser *p, const char *sfx)
{
    struct strict *st = p->st;
    int r = nset_add(&st->names, st->fam, st->famlen, sfx, strlen(sfx));

    if (r < 0)
        return pnomem(p);
    if (r > 0)
        return perr(p, "clashing metric family name \"%.*s%s\"",
                    (int)st->famlen, st->fam, sfx);
    return PS_OK;
}

/* Ends the open family: the final histogram check. */
static int family_end(struct ps_parser *p)
{
    struct strict *st = p->st;

    if (!st->active)
        return PS_OK;
    st->active = 0;
    if (is_hist(st->type))
        return hist_group_done(p);
    return PS_OK;
}

/* Opens a new family named n. Returns PS_OK or an error code. */
/* The previous family is closed first (its histogram check may fail);
 * the new family's own name is reserved at once so a clash is reported on
 * the line that causes it. */
static int family_begin(struct ps_parser *p, const char *n, size_t len,
                        enum ps_mtype t)
{
    struct strict *st = p->st;
    int r = family_end(p);

    if (r != PS_OK)
        return r;
    if (st->famcap < len + 1) {
        char *nf = ps_realloc(st->fam, len + 1);
        if (nf == NULL)
            return pnomem(p);
        st->fam = nf;
        st->famcap = len + 1;
    }
    memcpy(st->fam, n, len);
    st->famlen = len;
    st->active = 1;
    st->type = t;
    st->typed = st->has_help = st->has_unit = st->unit_nonempty = 0;
    st->has_samples = st->has_group = 0;
    st->h_open = 0;
    kset_clear(&st->groups);
    return own_name(p, "");
}

/* OpenMetrics rules for a HELP/TYPE/UNIT line: metadata opens or extends
 * the family it names, comes before its samples, at most once per kind,
 * and info/stateset take no unit. Returns PS_OK or PS_EPARSE/PS_ENOMEM. */
static int strict_meta(struct ps_parser *p, enum ps_entry kind)
{
    struct strict *st = p->st;
    const struct ps_str *f = &p->mv.family;
    int r;

    if (!st->active || st->famlen != f->n || memcmp(st->fam, f->p, f->n)) {
        if ((r = family_begin(p, f->p, f->n, PS_MTYPE_UNKNOWN)) != PS_OK)
            return r;
    } else if (st->has_samples) {
        return perr(p, "metadata after samples of family \"%.*s\"",
                    (int)f->n, f->p);
    }
    switch (kind) {
    case PS_ENTRY_HELP:
        if (st->has_help)
            return perr(p, "second HELP for \"%.*s\"", (int)f->n, f->p);
        st->has_help = 1;
        break;
    case PS_ENTRY_TYPE:
        if (st->typed)
            return perr(p, "second TYPE for \"%.*s\"", (int)f->n, f->p);
        st->typed = 1;
        st->type = p->mv.type;
        {
            const char *const *sfx;
            for (sfx = type_suffixes(st->type); *sfx; sfx++)
                if (**sfx && (r = own_name(p, *sfx)) != PS_OK)
                    return r;
        }
        break;
    default:
        if (st->has_unit)
            return perr(p, "second UNIT for \"%.*s\"", (int)f->n, f->p);
        st->has_unit = 1;
        st->unit_nonempty = p->mv.text.n > 0;
        break;
    }
    if (st->unit_nonempty &&
        (st->type == PS_MTYPE_INFO || st->type == PS_MTYPE_STATESET))
        return perr(p, "%s metrics cannot have a unit",
                    ps_mtype_name(st->type));
    return PS_OK;
}

/* Linear lookup: strict mode only, and label sets are small. */
static const struct ps_label_view *find_label(const struct ps_series_view *v,
                                              const char *n, size_t len)
{
    size_t i;

    for (i = 0; i < v->nlabels; i++)
        if (v->labels[i].name.n == len &&
            memcmp(v->labels[i].name.p, n, len) == 0)
            return &v->labels[i];
    return NULL;
}

/* le/quantile: a number, not NaN, and infinities spelled +Inf/-Inf. */
static int canonical_number(struct ps_parser *p, const struct ps_str *s,
                            double *out)
{
    if (parse_float(p, s->p, s->n, out) != NUM_OK || isnan(*out))
        return 0;
    if (isinf(*out))
        return (s->n == 4 && (memcmp(s->p, "+Inf", 4) == 0 ||
                              memcmp(s->p, "-Inf", 4) == 0));
    return 1;
}

/* True if the name suffix (after the family name) is exactly lit. */
static int suffix_is(const struct ps_str *sfx, const char *lit)
{
    size_t n = strlen(lit);

    return sfx->n == n && memcmp(sfx->p, lit, n) == 0;
}

/*
 * OpenMetrics 1.0 rules for one sample, applied in strict mode after the
 * line parsed. The rules and their order follow the reference parser of
 * the OpenMetrics project (prometheus_client's openmetrics/parser.py):
 * family membership, le/quantile labels, per-group grouping and
 * timestamps, histogram shape, value rules by type and suffix, exemplars.
 * Returns PS_OK, or PS_EPARSE naming the entry's line, or PS_ENOMEM.
 */
static int strict_sample(struct ps_parser *p)
{
    struct strict *st = p->st;
    const struct ps_series_view *v = &p->sv;
    const char *const *sfx;
    struct ps_str suf = {NULL, 0};
    const struct ps_label_view *lx = NULL;
    double val = v->value, ts = 0;
    uint64_t g = 0;
    size_t i;
    int owned = 0, r, same;

    /* Does the sample belong to the open family? Only through the name
     * suffixes its type owns (counter: _total/_created, ...); otherwise it
     * opens a new family of unknown type named after the sample, which is
     * how a stray "a" after "# TYPE a counter" becomes a name clash. */
    if (st->active && v->name.n >= st->famlen &&
        memcmp(v->name.p, st->fam, st->famlen) == 0) {
        suf.p = v->name.p + st->famlen;
        suf.n = v->name.n - st->famlen;
        for (sfx = type_suffixes(st->type); *sfx; sfx++)
            if (suffix_is(&suf, *sfx))
                owned = 1;
    }
    if (!owned) {
        r = family_begin(p, v->name.p, v->name.n, PS_MTYPE_UNKNOWN);
        if (r != PS_OK)
            return r;
        suf.p = v->name.p + v->name.n;
        suf.n = 0;
    }
    st->has_samples = 1;

    if (st->type == PS_MTYPE_STATESET &&
        (lx = find_label(v, st->fam, st->famlen)) == NULL)
        return perr(p, "stateset sample lacks label \"%.*s\"",
                    (int)st->famlen, st->fam);
    if (is_hist(st->type) && suffix_is(&suf, "_bucket")) {
        const struct ps_label_view *le = find_label(v, "le", 2);
        double b;
        if (le == NULL || !canonical_number(p, &le->value, &b))
            return perr(p, "invalid or missing le label");
        if (isnan(val) || isinf(val) || floor(val) != val)
            return perr(p, "bucket value must be an integer");
        lx = le;
    }
    if ((suffix_is(&suf, "_count") || suffix_is(&suf, "_gcount")) &&
        (isnan(val) || isinf(val) || floor(val) != val))
        return perr(p, "count value must be an integer");
    if (st->type == PS_MTYPE_SUMMARY && suf.n == 0) {
        const struct ps_label_view *q = find_label(v, "quantile", 8);
        double qv;
        if (q == NULL || !canonical_number(p, &q->value, &qv) || qv < 0 ||
            qv > 1)
            return perr(p, "invalid or missing quantile label");
        lx = q;
    }

    /* Group = labelset minus le/quantile/state label (all one for info),
     * hashed order-independently. */
    if (st->type != PS_MTYPE_INFO) {
        for (i = 0; i < v->nlabels; i++) {
            const struct ps_label_view *l = &v->labels[i];
            uint64_t h;
            if (l == lx)
                continue;
            h = hash_bytes(l->name.p, l->name.n, 0xcbf29ce484222325ULL);
            h = hash_bytes("\xff", 1, h);
            h = hash_bytes(l->value.p, l->value.n, h);
            g += mix64(h);
        }
    }
    /* Within a group, timestamps are all present or all absent and never
     * go backwards (info families excepted, as in the reference parser). */
    if (v->has_ts)
        ts = (double)v->ts_ms;
    same = st->has_group && g == st->group;
    if (st->has_group && !same) {
        r = kset_add(&st->groups, g);
        if (r < 0)
            return pnomem(p);
        if (r > 0)
            return perr(p, "samples of one labelset are not grouped");
    } else if (!st->has_group && kset_add(&st->groups, g) < 0) {
        return pnomem(p);
    }
    if (same) {
        if (v->has_ts != st->group_has_ts)
            return perr(p, "mix of samples with and without timestamp");
        if (v->has_ts && st->group_ts > ts && st->type != PS_MTYPE_INFO)
            return perr(p, "timestamps went backwards");
    }
    /* Histogram checks run per group, a group also ending when the
     * timestamp changes (one MetricPoint per timestamp). */
    if (is_hist(st->type)) {
        if (!same || v->has_ts != st->group_has_ts || ts != st->group_ts) {
            if ((r = hist_group_done(p)) != PS_OK)
                return r;
            st->h_open = 1;
            st->h_has_bucket = st->h_has_count = 0;
            st->h_sum = st->h_gsum = st->h_negb = st->h_neggsum = 0;
            st->h_val = 0;
        }
        if (suffix_is(&suf, "_bucket")) {
            double b;
            canonical_number(p, &lx->value, &b);
            if (b < 0)
                st->h_negb = 1;
            if (st->h_has_bucket && b <= st->h_le)
                return perr(p, "histogram buckets out of order");
            if (val < st->h_val)
                return perr(p, "histogram bucket values decrease");
            st->h_has_bucket = 1;
            st->h_le = b;
            st->h_val = val;
        } else if (suffix_is(&suf, "_count") || suffix_is(&suf, "_gcount")) {
            st->h_has_count = 1;
            st->h_count = val;
        } else if (suffix_is(&suf, "_sum")) {
            st->h_sum = 1;
        } else if (suffix_is(&suf, "_gsum")) {
            st->h_gsum = 1;
            if (val < 0)
                st->h_neggsum = 1;
        }
    }
    st->has_group = 1;
    st->group = g;
    st->group_has_ts = v->has_ts;
    st->group_ts = ts;

    if (st->type == PS_MTYPE_STATESET && val != 0 && val != 1)
        return perr(p, "stateset value must be 0 or 1");
    if (st->type == PS_MTYPE_INFO && val != 1)
        return perr(p, "info value must be 1");
    if (st->type == PS_MTYPE_SUMMARY && suf.n == 0 && val < 0)
        return perr(p, "quantile value cannot be negative");
    if ((suffix_is(&suf, "_total") || suffix_is(&suf, "_sum") ||
         suffix_is(&suf, "_count") || suffix_is(&suf, "_bucket") ||
         suffix_is(&suf, "_gcount") || suffix_is(&suf, "_gsum")) &&
        isnan(val))
        return perr(p, "counter-like value cannot be NaN");
    if ((suffix_is(&suf, "_total") || suffix_is(&suf, "_sum") ||
         suffix_is(&suf, "_count") || suffix_is(&suf, "_bucket") ||
         suffix_is(&suf, "_gcount")) &&
        val < 0)
        return perr(p, "counter-like value cannot be negative");
    /* Exemplars: only on histogram buckets and counter _total samples, and
     * at most 128 code points of label names plus values. */
    if (v->has_exemplar) {
        size_t chars = 0;
        const struct ps_exemplar_view *x = &v->exemplar;
        if (!((is_hist(st->type) && suffix_is(&suf, "_bucket")) ||
              (st->type == PS_MTYPE_COUNTER && suffix_is(&suf, "_total"))))
            return perr(p, "exemplar not allowed on this sample");
        for (i = 0; i < x->nlabels; i++) {
            const struct ps_str *s2[2] = {&x->labels[i].name,
                                          &x->labels[i].value};
            int k;
            size_t j;
            for (k = 0; k < 2; k++)
                for (j = 0; j < s2[k]->n; j++)
                    chars += ((unsigned char)s2[k]->p[j] & 0xC0) != 0x80;
        }
        if (chars > 128)
            return perr(p, "exemplar labels longer than 128 characters");
    }
    return PS_OK;
}

/* ---- lines ------------------------------------------------------------- */

/* Ends the line at s: returns PS_OK and moves pos past the newline. */
/* Ends the line at s (a newline or the end of the input): moves pos
 * past it and counts the line. */
static void end_line(struct ps_parser *p, const char *s)
{
    p->pos = s < p->end ? s + 1 : s;
    p->line++;
}

/*
 * Parses the series line starting at s (a name byte or '{'). Fills p->sv.
 * Returns PS_OK, PS_EPARSE or PS_ENOMEM.
 */
static int parse_series(struct ps_parser *p, const char *s)
{
    const char *e = p->end, *raw0 = s, *raw1 = s, *vs;
    int om = p->o.format == PS_FORMAT_OPENMETRICS;
    struct ps_series_view *v = &p->sv;
    struct ps_str name = {NULL, 0};
    size_t nser;
    char gbuf[48];
    int rc, dups = 0;
    double d;

    v->has_ts = 0;
    v->has_exemplar = 0;
    /* Either name[{labels}] or {labels} holding a quoted name (the UTF-8
     * form of Prometheus 3.x). A leading quoted name ("a.b"{...}) is not in
     * either Prometheus lexer, so it falls through to "expected a valid
     * start token" in the callers. */
    if (*s != '{') {
        const char *n0 = s;
        s = scan_name(s, e, 1);
        name.p = n0;
        name.n = (size_t)(s - n0);
        raw1 = s;
        /* promlex skips blanks between any two tokens; the OpenMetrics
         * lexer has no blank token at all. */
        if (!om)
            s = skip_ws(s, e);
    }
    v->name = name;
    if (name.p == NULL)
        raw1 = s;
    if (s < e && *s == '{') {
        s = parse_labels(p, s + 1, LB_SERIES, &v->name, &dups, &rc);
        if (s == NULL)
            return rc;
        if (v->name.p == NULL)
            return perr(p, "metric name not set");
        raw1 = s;
    }
    v->raw.p = raw0;
    v->raw.n = (size_t)(raw1 - raw0);
    nser = p->nlab;
    /* Prometheus finds repeated names only when building the label set
     * (scrape fails the sample); doing it here keeps the rule in one place
     * and the views trustworthy for every consumer. */
    if (dups && (rc = check_dups(p, 0, nser)) != PS_OK)
        return rc;

    /* Value. OpenMetrics: exactly one space, then bytes up to a space or
     * newline. Text: blanks, then bytes up to '{', blank or newline, so
     * "a+1" is name "a" and value "+1" just as in promlex. The token is
     * then checked as a number, never the other way around. */
    if (om) {
        if (s >= e || *s != ' ' || s + 1 >= e || (CL(s[1]) & C_OVSTOP))
            return perr(p, "expected value after metric, got %s", GOT(s));
        vs = ++s;
    } else {
        s = skip_ws(s, e);
        vs = s;
    }
    {
        unsigned char stop = om ? C_OVSTOP : C_TVSTOP;
        const char *ve = fast_number(vs, e, stop, &d);

        if (ve != NULL) {
            s = ve;
        } else {
            while (s < e && !(CL(*s) & stop))
                s++;
            if (s == vs) /* text only: OpenMetrics checked s[1] above */
                return perr(p, "expected value after metric, got %s",
                            GOT(s));
            rc = parse_float(p, vs, (size_t)(s - vs), &d);
            if (rc == NUM_NOMEM)
                return pnomem(p);
            if (rc != NUM_OK)
                return perr(p, "%s value \"%.*s\"",
                            rc == NUM_RANGE ? "out of range" : "invalid",
                            (int)(s - vs > 64 ? 64 : s - vs), vs);
        }
    }
    v->value = d;

    if (!om) {
        /* Text: optional millisecond timestamp, digits only (promlex
         * {D}+, so no sign), within int64 as strconv.ParseInt demands. */
        if (LIKELY(s < e && *s == '\n')) { /* the common case: no ts */
            end_line(p, s);
            goto done;
        }
        s = skip_ws(s, e);
        if (s < e && (CL(*s) & C_DIGIT)) {
            uint64_t t = 0;
            for (; s < e && (CL(*s) & C_DIGIT); s++) {
                unsigned dg = (unsigned)(*s - '0');
                if (t > (9223372036854775807ULL - dg) / 10)
                    return perr(p, "timestamp out of range");
                t = t * 10 + dg;
            }
            v->has_ts = 1;
            v->ts_ms = (int64_t)t;
            s = skip_ws(s, e);
            if (s < e && *s != '\n')
                return perr(p, "expected next entry after timestamp, got %s",
                            GOT(s));
        } else if (s < e && *s != '\n') {
            return perr(p, "expected timestamp or new record, got %s",
                        GOT(s));
        }
        end_line(p, s);
        goto done;
    }

    /* OpenMetrics: [" " timestamp] [" # {" exemplar] "\n". The lexer
     * prefers the longer " # {" over a timestamp token " #", so the exemplar
     * test comes first. Timestamps are float seconds, finite, and become
     * int64(ts*1000) milliseconds. A missing final newline means the body
     * was cut before "# EOF". */
    for (int phase = 0;; phase++) {
        if (s >= e)
            return perr(p, "data does not end with # EOF");
        if (*s == '\n')
            break;
        if (e - s >= 4 && memcmp(s, " # {", 4) == 0) {
            const char *xs;
            size_t nx;
            struct ps_str xn = {NULL, 0};

            s = parse_labels(p, s + 4, LB_EXEMPLAR, &xn, &dups, &rc);
            if (s == NULL)
                return rc;
            nx = p->nlab - nser;
            if (dups && (rc = check_dups(p, nser, p->nlab)) != PS_OK)
                return rc;
            v->has_exemplar = 1;
            v->exemplar.nlabels = nx;
            v->exemplar.has_ts = 0;
            if (s >= e || *s != ' ' || s + 1 >= e || (CL(s[1]) & C_OVSTOP))
                return perr(p, "expected value after exemplar labels, got %s",
                            GOT(s));
            xs = ++s;
            while (s < e && !(CL(*s) & C_OVSTOP))
                s++;
            rc = parse_float(p, xs, (size_t)(s - xs), &d);
            if (rc == NUM_NOMEM)
                return pnomem(p);
            if (rc != NUM_OK)
                return perr(p, "invalid exemplar value \"%.*s\"",
                            (int)(s - xs > 64 ? 64 : s - xs), xs);
            v->exemplar.value = d;
            if (s < e && *s == ' ') {
                if (s + 1 >= e || (CL(s[1]) & C_OVSTOP))
                    return perr(p, "expected exemplar timestamp, got %s",
                                GOT(s + 1));
                xs = ++s;
                while (s < e && !(CL(*s) & C_OVSTOP))
                    s++;
                rc = parse_float(p, xs, (size_t)(s - xs), &d);
                if (rc == NUM_NOMEM)
                    return pnomem(p);
                if (rc != NUM_OK || isnan(d) || isinf(d))
                    return perr(p, "invalid exemplar timestamp \"%.*s\"",
                                (int)(s - xs > 64 ? 64 : s - xs), xs);
                v->exemplar.has_ts = 1;
                v->exemplar.ts_ms = sec_to_ms(d);
            }
            if (s >= e)
                return perr(p, "data does not end with # EOF");
            if (*s != '\n')
                return perr(p, "expected next entry after exemplar, got %s",
                            GOT(s));
            break;
        }
        if (phase == 0 && *s == ' ' && s + 1 < e && !(CL(s[1]) & C_OVSTOP)) {
            const char *ts0 = ++s;
            while (s < e && !(CL(*s) & C_OVSTOP))
                s++;
            rc = parse_float(p, ts0, (size_t)(s - ts0), &d);
            if (rc == NUM_NOMEM)
                return pnomem(p);
            if (rc != NUM_OK || isnan(d) || isinf(d))
                return perr(p, "invalid timestamp \"%.*s\"",
                            (int)(s - ts0 > 64 ? 64 : s - ts0), ts0);
            v->has_ts = 1;
            v->ts_ms = sec_to_ms(d);
            continue;
        }
        return perr(p, "expected %s, got %s",
                    phase == 0 ? "timestamp or exemplar" : "next entry",
                    GOT(s));
    }
    end_line(p, s);

done:
    v->labels = p->lab;
    v->nlabels = nser;
    v->exemplar.labels = p->lab != NULL ? p->lab + nser : NULL;
    if (!v->has_exemplar)
        v->exemplar.nlabels = 0;
    return PS_OK;
}

/* Maps a TYPE word; each format has its own list ("untyped" is text only,
 * "unknown", "info", "stateset", "gaugehistogram" OpenMetrics only).
 * Returns 1 and sets *t, or 0 for an unknown word. */
static int type_from(const char *s, size_t n, int om, enum ps_mtype *t)
{
    static const struct {
        const char *w;
        size_t n;
        enum ps_mtype t;
        int fmt; /* 1 text, 2 OM, 3 both */
    } tab[] = {
        {"counter", 7, PS_MTYPE_COUNTER, 3},
        {"gauge", 5, PS_MTYPE_GAUGE, 3},
        {"histogram", 9, PS_MTYPE_HISTOGRAM, 3},
        {"summary", 7, PS_MTYPE_SUMMARY, 3},
        {"untyped", 7, PS_MTYPE_UNTYPED, 1},
        {"gaugehistogram", 14, PS_MTYPE_GAUGEHISTOGRAM, 2},
        {"info", 4, PS_MTYPE_INFO, 2},
        {"stateset", 8, PS_MTYPE_STATESET, 2},
        {"unknown", 7, PS_MTYPE_UNKNOWN, 2},
    };
    size_t i;

    for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
        if (tab[i].n == n && s[0] == tab[i].w[0] &&
            (tab[i].fmt & (om ? 2 : 1)) && memcmp(tab[i].w, s, n) == 0) {
            *t = tab[i].t;
            return 1;
        }
    return 0;
}

/*
 * Parses HELP/TYPE/UNIT after the keyword and its blank(s); s points at the
 * family name. Returns PS_OK, PS_EPARSE or PS_ENOMEM.
 */
static int parse_meta(struct ps_parser *p, const char *s, enum ps_entry kind,
                      const char *kw)
{
    const char *e = p->end, *n0 = s, *t0, *t1;
    int om = p->o.format == PS_FORMAT_OPENMETRICS;
    struct ps_meta_view *m = &p->mv;
    unsigned fl = 0;
    char gbuf[48];
    int rc;

    m->type = PS_MTYPE_UNKNOWN;
    m->text.p = NULL;
    m->text.n = 0;
    m->family.p = NULL;
    if (s < e && (CL(*s) & C_MNAME0)) {
        s = scan_name(s, e, 1);
        m->family.p = n0;
        m->family.n = (size_t)(s - n0);
    } else if (s < e && *s == '"') {
        s = scan_quoted(p, s, Q_NL, &fl);
        if (s == NULL)
            return perr(p, "bad quoted metric name after %s: %s", kw,
                        p->qwhy);
        if ((rc = quoted_view(p, n0 + 1, s - 1, fl, "metric name",
                              &m->family)) != PS_OK)
            return rc;
        /* Prometheus would take an empty quoted name; no series can have
         * one, so it can only be a mistake. */
        if (m->family.n == 0)
            return perr(p, "empty metric name after %s", kw);
    } else {
        return perr(p, "expected metric name after %s, got %s", kw, GOT(s));
    }
    /* The text runs to the end of the line. Metadata names are kept
     * decoded (Prometheus returns quoted ones raw, escapes included; the
     * decoded name is the one series carry, so it is the useful key). */
    t0 = s;
    t1 = scan_line(s, e, &fl);
    if (om) {
        /* OpenMetrics: exactly one space, then text, then a newline. */
        if (t1 == e || t0 == t1 || *t0 != ' ')
            return perr(p, "expected text in %s", kw);
        t0++;
    } else {
        /* Text: like promlex, one leading byte is dropped unless the rest
         * is blank. */
        if (skip_ws(t0, t1) == t1)
            t0 = t1;
        else
            t0++;
    }
    /* TYPE words are matched exactly: "gauge " (trailing blank) is an
     * invalid type in both Prometheus parsers. HELP must be valid UTF-8
     * (checked raw: escapes are ASCII) and is decoded only if it holds a
     * backslash; text-format HELP leaves \" alone (helpReplacer). */
    if (kind == PS_ENTRY_TYPE) {
        if (!type_from(t0, (size_t)(t1 - t0), om, &m->type))
            return perr(p, "invalid metric type \"%.*s\"",
                        (int)(t1 - t0 > 64 ? 64 : t1 - t0), t0);
    } else if (kind == PS_ENTRY_HELP) {
        if ((fl & 2) && !ps_utf8_valid(t0, (size_t)(t1 - t0)))
            return perr(p, "invalid UTF-8 in help text");
        if ((fl & 1) && memchr(t0, '\\', (size_t)(t1 - t0)) != NULL) {
            if (decode(p, t0, (size_t)(t1 - t0), om ? DEC_LVAL : DEC_HELP,
                       &m->text) != PS_OK)
                return pnomem(p);
        } else {
            m->text.p = t0;
            m->text.n = (size_t)(t1 - t0);
        }
    } else {
        /* UNIT: a non-empty unit must be the "_unit" suffix of the name,
         * checked by Prometheus's parser already, so in both modes. */
        size_t un = (size_t)(t1 - t0);
        const struct ps_str *f = &m->family;
        m->text.p = t0;
        m->text.n = un;
        if (un > 0 && (f->n < un + 1 || f->p[f->n - un - 1] != '_' ||
                       memcmp(f->p + f->n - un, t0, un) != 0))
            return perr(p, "unit \"%.*s\" not a suffix of metric \"%.*s\"",
                        (int)(un > 64 ? 64 : un), t0,
                        (int)(f->n > 64 ? 64 : f->n), f->p);
    }
    end_line(p, t1);
    return PS_OK;
}

/* True if the 4-byte keyword kw starts at s (bounded by e). */
static int kw_at(const char *s, const char *e, const char *kw)
{
    return e - s >= 4 && memcmp(s, kw, 4) == 0;
}

/* One line of the text format: sets *entry. Blank lines are skipped. */
static int next_text(struct ps_parser *p, enum ps_entry *entry)
{
    const char *e = p->end;
    char gbuf[48];

    /* Most lines are samples starting in column one. */
    if (LIKELY(p->pos < e && (CL(*p->pos) & C_MNAME0))) {
        p->entline = p->line;
        *entry = PS_ENTRY_SERIES;
        return parse_series(p, p->pos);
    }
    for (;;) {
        const char *s = skip_ws(p->pos, e);

        p->entline = p->line;
        if (s >= e) {
            *entry = PS_ENTRY_EOF;
            return PS_OK;
        }
        if (*s == '\n') {
            end_line(p, s);
            continue;
        }
        /* "#" then blanks then HELP/TYPE and a blank is metadata; any other
         * '#' line, including "# UNIT" and "# EOF", is a comment in 0.0.4. */
        if (*s == '#') {
            const char *c = s + 1, *k, *nl;
            if (c < e && (*c == ' ' || *c == '\t')) {
                c = skip_ws(c, e);
                k = c + 4;
                if (k < e && (*k == ' ' || *k == '\t') &&
                    (kw_at(c, e, "HELP") || kw_at(c, e, "TYPE"))) {
                    enum ps_entry kind =
                        c[0] == 'H' ? PS_ENTRY_HELP : PS_ENTRY_TYPE;
                    *entry = kind;
                    return parse_meta(p, skip_ws(k, e), kind,
                                      kind == PS_ENTRY_HELP ? "HELP"
                                                            : "TYPE");
                }
            }
            nl = memchr(c, '\n', (size_t)(e - c));
            if (nl == NULL)
                nl = e;
            p->comment.p = c;
            p->comment.n = (size_t)(nl - c);
            *entry = PS_ENTRY_COMMENT;
            end_line(p, nl);
            return PS_OK;
        }
        if ((CL(*s) & C_MNAME0) || *s == '{') {
            *entry = PS_ENTRY_SERIES;
            return parse_series(p, s);
        }
        /* promlex ends the input at a NUL here, silently dropping the
         * rest; a truncated scrape should not look complete, so we fail. */
        if (*s == '\0')
            return perr(p, "unexpected NUL byte");
        return perr(p, "expected a valid start token, got %s", GOT(s));
    }
}

/* One line of OpenMetrics: sets *entry. */
static int next_om(struct ps_parser *p, enum ps_entry *entry)
{
    const char *s = p->pos, *e = p->end;
    char gbuf[48];
    int rc;

    p->entline = p->line;
    /* No blank lines, no leading blanks, no comments: only metadata,
     * "# EOF" (optionally newline-terminated, then nothing) and samples. */
    if (s >= e)
        return perr(p, "data does not end with # EOF");
    if (*s == '#') {
        if (e - s >= 2 && s[1] == ' ') {
            const char *k = s + 2;
            if (e - k >= 3 && memcmp(k, "EOF", 3) == 0) {
                k += 3;
                if (k < e && *k == '\n') {
                    k++;
                    p->line++; /* the offending data is on the next line */
                }
                if (k != e)
                    return perr(p, "unexpected data after # EOF");
                *entry = PS_ENTRY_EOF;
                p->pos = e;
                return PS_OK;
            }
            if (e - k >= 5 && k[4] == ' ') {
                enum ps_entry kind = PS_ENTRY_COMMENT; /* = none yet */
                const char *kw = "";
                if (memcmp(k, "HELP", 4) == 0) {
                    kind = PS_ENTRY_HELP;
                    kw = "HELP";
                } else if (memcmp(k, "TYPE", 4) == 0) {
                    kind = PS_ENTRY_TYPE;
                    kw = "TYPE";
                } else if (memcmp(k, "UNIT", 4) == 0) {
                    kind = PS_ENTRY_UNIT;
                    kw = "UNIT";
                }
                if (kind != PS_ENTRY_COMMENT) {
                    *entry = kind;
                    rc = parse_meta(p, k + 5, kind, kw);
                    /* Strict errors name the entry's own line, not the
                     * next one that end_line() already counted. */
                    if (rc == PS_OK && p->st != NULL) {
                        size_t l = p->line;
                        p->line = p->entline;
                        rc = strict_meta(p, kind);
                        p->line = rc == PS_OK ? l : p->line;
                    }
                    return rc;
                }
            }
        }
        return perr(p, "expected a valid start token, got %s", GOT(s));
    }
    if ((CL(*s) & C_MNAME0) || *s == '{') {
        *entry = PS_ENTRY_SERIES;
        rc = parse_series(p, s);
        if (rc == PS_OK && p->st != NULL) {
            size_t l = p->line;
            p->line = p->entline;
            rc = strict_sample(p);
            p->line = rc == PS_OK ? l : p->line;
        }
        return rc;
    }
    return perr(p, "expected a valid start token, got %s", GOT(s));
}

/* ---- sample lines split from their end (scrape-cache hits) ------------- */

/*
 * Why a split from the end is exact when the caller knows the raw bytes
 * (see ps_parse_peek_sample): the raw series of an accepted line is
 * prefix-determined. One that ends in '}' was delimited by reading its
 * own bytes up to that brace and nothing after it, so any line that
 * starts with those bytes yields the same raw again; one without labels
 * is all name bytes, and yields the same raw again whenever a blank and
 * then no '{' follows it (here: a number follows). The rest of the line
 * is then " value", or " value timestamp", read below with the same
 * number rules as parse_series(), so ps_parse_next() would return the
 * same raw, value and timestamp (and no error: the label block is the
 * one it accepted before, byte for byte). Of the two possible splits at
 * most one has a raw of that shape: with a timestamp, the prefix before
 * the last token ends in the value, neither '}' nor a name without a
 * blank.
 */

/* Steps back over blanks ending at e, never before s. */
static const char *back_ws(const char *s, const char *e)
{
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    return e;
}

/* The start of the token (no blanks) ending at e, never before s. Value
 * and timestamp tokens are short: with SSE2 the 16 bytes before e are
 * looked at in one step (the line's own bytes: e - 16 >= s). */
static const char *back_token(const char *s, const char *e)
{
#if defined(PS_SSE2)
    if (e - s >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(e - 16));
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(' ')),
                         _mm_cmpeq_epi8(v, _mm_set1_epi8('\t'))));

        if (m != 0) /* the last blank is byte 31 - clz(m) of the 16 */
            return e - 16 + (32 - __builtin_clz(m));
        e -= 16;
    }
#endif
    while (e > s && e[-1] != ' ' && e[-1] != '\t')
        e--;
    return e;
}

/* Whether [s, e) has the shape of a raw series ps_parse_next() accepted:
 * a label block's closing brace last, or a bare metric name. s[0] is
 * known to start a series. Report series keys ("up\xff") have neither. */
static int raw_shape(const char *s, const char *e)
{
    return e > s && (e[-1] == '}' || scan_name(s, e, 1) == e);
}

/* The text value token [s, e), 1 with *out set when parse_series() would
 * read all of it as one number with this result; else 0 (it would stop
 * inside the token or fail: the caller gives the line to the parser). */
static int line_value(struct ps_parser *p, const char *s, const char *e,
                      double *out)
{
    const char *q = fast_number(s, e, C_TVSTOP, out);

    if (q != NULL)
        return q == e;
    return parse_float(p, s, (size_t)(e - s), out) == NUM_OK;
}

/* The text timestamp token [s, e): digits only, within int64, as in
 * parse_series(). 1 with *out set, else 0. */
static int line_ts(const char *s, const char *e, int64_t *out)
{
    uint64_t t = 0;

    if (s == e)
        return 0;
    for (; s < e; s++) {
        unsigned dg = (unsigned)(unsigned char)*s - '0';
        if (dg > 9 || t > (9223372036854775807ULL - dg) / 10)
            return 0;
        t = t * 10 + dg;
    }
    *out = (int64_t)t;
    return 1;
}

/* See ps_parse.h. Reads the line, changes nothing (the number buffer of
 * parse_float may grow: not observable). */
int ps_parse_peek_sample(struct ps_parser *p, struct ps_sample_line *sl)
{
    const char *s = p->pos, *e = p->end, *le, *t0, *t1, *r1;

    if (p->state != ST_RUN || p->o.format != PS_FORMAT_TEXT || s >= e ||
        !((CL(*s) & C_MNAME0) || *s == '{'))
        return 0;
    le = memchr(s, '\n', (size_t)(e - s));
    if (le == NULL)
        le = e;
    t1 = back_ws(s, le);
    t0 = back_token(s, t1);
    r1 = back_ws(s, t0);
    if (t0 == t1 || r1 == t0 || r1 == s)
        return 0; /* no token, or nothing or no blank before it */
    sl->ts_ms = 0;
    if (raw_shape(s, r1)) {
        if (!line_value(p, t0, t1, &sl->value))
            return 0;
        sl->has_ts = 0;
    } else {
        /* "raw value timestamp": the value is the token before t0 */
        const char *v1 = r1, *v0 = back_token(s, v1);

        r1 = back_ws(s, v0);
        if (r1 == v0 || r1 == s || !raw_shape(s, r1) ||
            !line_ts(t0, t1, &sl->ts_ms) || !line_value(p, v0, v1, &sl->value))
            return 0;
        sl->has_ts = 1;
    }
    sl->raw.p = s;
    sl->raw.n = (size_t)(r1 - s);
    sl->next = le < e ? le + 1 : e;
    return 1;
}

/* See ps_parse.h. What parse_series() + end_line() leave behind for this
 * line, minus the name and labels, which the caller did not need. */
int ps_parse_skip_sample(struct ps_parser *p, const struct ps_sample_line *sl)
{
    struct ps_series_view *v = &p->sv;

    if (p->state != ST_RUN || sl->raw.p != p->pos)
        return PS_ESTATE;
    p->nlab = 0;
    p->scrlen = 0;
    p->mv.family.p = p->mv.text.p = NULL;
    v->name.p = NULL;
    v->name.n = 0;
    v->raw = sl->raw;
    v->labels = p->lab;
    v->nlabels = 0;
    v->value = sl->value;
    v->has_ts = sl->has_ts;
    v->ts_ms = sl->ts_ms;
    v->has_exemplar = 0;
    v->exemplar.labels = p->lab;
    v->exemplar.nlabels = 0;
    p->entline = p->line;
    p->pos = sl->next;
    p->line++;
    return PS_OK;
}

/* ---- public API -------------------------------------------------------- */

/* Only the media type matters (parameters such as version= are ignored,
 * as Prometheus does after mime.ParseMediaType); comparison ignores case. */
int ps_parse_format_of(const char *ct, size_t n, enum ps_format *out,
                       struct ps_err *e)
{
    const char *s = ct, *end = ct + n, *semi;
    size_t len;

    while (s < end && (*s == ' ' || *s == '\t'))
        s++;
    semi = s;
    while (semi < end && *semi != ';')
        semi++;
    len = (size_t)(semi - s);
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (s == end) { /* absent or blank: the text format, as the issue asks */
        *out = PS_FORMAT_TEXT;
        return PS_OK;
    }
    if (ci_eq(s, len, "text/plain")) {
        *out = PS_FORMAT_TEXT;
        return PS_OK;
    }
    if (ci_eq(s, len, "application/openmetrics-text")) {
        *out = PS_FORMAT_OPENMETRICS;
        return PS_OK;
    }
    return ps_err_set(e, PS_ENOTSUP, "unsupported content type \"%.*s\"",
                      (int)(n > 128 ? 128 : n), ct);
}

/* Allocates only the parser (and the strict state when asked for); the
 * label array and buffers grow on first use. PS_EINVAL on a bad format
 * or a NULL buffer with a length, PS_ENOMEM; *out written on success. */
int ps_parse_new(struct ps_parser **out, const char *buf, size_t len,
                 const struct ps_parse_opts *o, struct ps_err *e)
{
    struct ps_parser *p;

    if (o == NULL || (o->format != PS_FORMAT_TEXT &&
                      o->format != PS_FORMAT_OPENMETRICS) ||
        (buf == NULL && len > 0))
        return ps_err_set(e, PS_EINVAL, "ps_parse_new: bad arguments");
    p = ps_calloc(1, sizeof(*p));
    if (p == NULL)
        return ps_err_set(e, PS_ENOMEM, "out of memory");
    p->o = *o;
    if (o->strict && o->format == PS_FORMAT_OPENMETRICS) {
        p->st = ps_calloc(1, sizeof(*p->st));
        if (p->st == NULL) {
            ps_free(p);
            return ps_err_set(e, PS_ENOMEM, "out of memory");
        }
        p->st->groups.cur = 1;
    }
    ps_parse_reset(p, buf, len);
    *out = p;
    return PS_OK;
}

/* Keeps every grown buffer and table (the point of reuse across scrapes);
 * forgets the input, the position, the sticky result and strict state. */
void ps_parse_reset(struct ps_parser *p, const char *buf, size_t len)
{
    p->buf = p->pos = buf ? buf : "";
    p->end = p->buf + (buf ? len : 0);
    p->line = p->entline = 1;
    p->state = ST_RUN;
    p->rc = PS_OK;
    p->msg[0] = '\0';
    p->nlab = p->scrlen = 0;
    memset(&p->sv, 0, sizeof(p->sv));
    memset(&p->mv, 0, sizeof(p->mv));
    p->comment.p = NULL;
    p->comment.n = 0;
    if (p->st != NULL) {
        struct strict *st = p->st;
        st->active = 0;
        kset_clear(&st->groups);
        /* Forget the names but keep the storage. */
        if (st->names.off != NULL)
            memset(st->names.off, 0, st->names.cap * sizeof(size_t));
        st->names.n = st->names.clen = 0;
    }
}

/* Frees the parser and everything it grew; never the caller's buffer. */
void ps_parse_free(struct ps_parser *p)
{
    if (p == NULL)
        return;
    ps_free(p->lab);
    ps_free(p->scr);
    ps_free(p->num);
    ps_free(p->sortidx);
    strict_free(p->st);
    ps_free(p);
}

/* The end states are sticky: the message is kept in the parser and copied
 * out again, so a caller that polls after an error sees the same report. */
int ps_parse_next(struct ps_parser *p, enum ps_entry *entry,
                  struct ps_err *e)
{
    int rc;

    if (p->state == ST_RUN) {
        p->nlab = 0;
        p->scrlen = 0;
        p->sv.name.p = p->mv.family.p = p->mv.text.p = NULL;
        rc = p->o.format == PS_FORMAT_OPENMETRICS ? next_om(p, entry)
                                                  : next_text(p, entry);
        if (rc == PS_OK && *entry == PS_ENTRY_TYPE)
            p->sv.mtype = p->mv.type;
        if (rc == PS_OK && *entry == PS_ENTRY_EOF) {
            if (p->st != NULL && (rc = family_end(p)) != PS_OK)
                goto fail;
            p->state = ST_EOF;
        }
        if (rc == PS_OK)
            return PS_OK;
    }
    if (p->state == ST_EOF) {
        *entry = PS_ENTRY_EOF;
        return PS_OK;
    }
fail:
    if (e != NULL) {
        e->code = p->rc;
        memcpy(e->msg, p->msg, sizeof(e->msg));
    }
    return p->rc;
}

/* Whether s[0..n) parses with Go's strconv.ParseFloat, which strtod alone
 * does not decide: strtod also takes leading blanks, "nan(...)" and hex
 * mantissas without a 'p' exponent, which Go rejects. */
static int go_parse_float(const char *s, size_t n, double *out)
{
    char tmp[128];
    char *endp;
    size_t i;
    int hex = 0, pexp = 0;

    if (n == 0 || n >= sizeof(tmp))
        return 0;
    for (i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '(' || ch == ' ' || ch == '\t' || ch == '\n' ||
            ch == '\r' || ch == '\v' || ch == '\f' || ch == '\0')
            return 0;
        if (ch == 'x' || ch == 'X')
            hex = 1;
        if (ch == 'p' || ch == 'P')
            pexp = 1;
    }
    if (hex && !pexp)
        return 0;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    *out = strtod(tmp, &endp);
    return endp == tmp + n;
}

int ps_parse_normalize_label(enum ps_mtype t, const struct ps_label_view *l,
                             char *buf, struct ps_str *out)
{
    double v;
    size_t n;

    if (!((t == PS_MTYPE_HISTOGRAM && l->name.n == 2 &&
           memcmp(l->name.p, "le", 2) == 0) ||
          (t == PS_MTYPE_SUMMARY && l->name.n == 8 &&
           memcmp(l->name.p, "quantile", 8) == 0)))
        return 0;
    if (!go_parse_float(l->value.p, l->value.n, &v))
        return 0;
    n = ps_fmt_om_float(v, buf);
    if (n == l->value.n && memcmp(buf, l->value.p, n) == 0)
        return 0;
    out->p = buf;
    out->n = n;
    return 1;
}

const struct ps_series_view *ps_parse_series(const struct ps_parser *p)
{
    return &p->sv;
}

const struct ps_meta_view *ps_parse_meta(const struct ps_parser *p)
{
    return &p->mv;
}

struct ps_str ps_parse_comment(const struct ps_parser *p)
{
    return p->comment;
}

size_t ps_parse_lineno(const struct ps_parser *p)
{
    return p->entline;
}

const char *ps_mtype_name(enum ps_mtype t)
{
    switch (t) {
    case PS_MTYPE_COUNTER: return "counter";
    case PS_MTYPE_GAUGE: return "gauge";
    case PS_MTYPE_HISTOGRAM: return "histogram";
    case PS_MTYPE_GAUGEHISTOGRAM: return "gaugehistogram";
    case PS_MTYPE_SUMMARY: return "summary";
    case PS_MTYPE_INFO: return "info";
    case PS_MTYPE_STATESET: return "stateset";
    case PS_MTYPE_UNTYPED: return "untyped";
    default: return "unknown";
    }
}
