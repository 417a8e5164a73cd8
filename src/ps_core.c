/* ps_core: error codes, allocator hook, UTF-8 and name validation. */
#include "ps_core.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ps_err_init(struct ps_err *e)
{
    e->code = PS_OK;
    e->msg[0] = '\0';
}

int ps_err_set(struct ps_err *e, int code, const char *fmt, ...)
{
    va_list ap;

    if (e == NULL)
        return code;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return code;
}

const char *ps_errname(int code)
{
    switch (code) {
    case PS_OK: return "OK";
    case PS_ENOMEM: return "ENOMEM";
    case PS_EINVAL: return "EINVAL";
    case PS_EPARSE: return "EPARSE";
    case PS_ELIMIT: return "ELIMIT";
    case PS_EIO: return "EIO";
    case PS_ENOTSUP: return "ENOTSUP";
    case PS_ESTATE: return "ESTATE";
    default: return "EUNKNOWN";
    }
}

const char *ps_strerror(int code)
{
    switch (code) {
    case PS_OK: return "success";
    case PS_ENOMEM: return "out of memory";
    case PS_EINVAL: return "invalid argument";
    case PS_EPARSE: return "malformed input";
    case PS_ELIMIT: return "limit exceeded";
    case PS_EIO: return "I/O error";
    case PS_ENOTSUP: return "not supported";
    case PS_ESTATE: return "invalid state";
    default: return "unknown error";
    }
}

/* ---- allocator hook ---------------------------------------------------- */

static void *default_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

/* The only process-wide mutable state: see the header for why. */
static ps_alloc_fn g_alloc = default_alloc;
static void *g_alloc_ud;
/* The torture countdown and counter are touched by every allocating thread
 * (the engine thread and the Lua thread in background mode): atomics keep
 * them race-free; relaxed order is enough for counting. */
static _Atomic long g_fail_after = -1; /* countdown; < 0 means never fail */
static _Atomic long g_alloc_count;
/* Whole-process torture (ps_alloc_fail_at): the g_fail_at-th counted
 * allocation fails; 0 means none, -1 that the environment is not read yet. */
static _Atomic long g_fail_at = -1;
static _Atomic long g_counted;

void ps_set_allocator(ps_alloc_fn f, void *ud)
{
    g_alloc = f ? f : default_alloc;
    g_alloc_ud = f ? ud : NULL;
}

long ps_alloc_fail_after(long n)
{
    long made = atomic_exchange(&g_alloc_count, 0);

    atomic_store(&g_fail_after, n);
    return made;
}

long ps_alloc_fail_at(long k)
{
    atomic_store(&g_fail_at, k > 0 ? k : 0);
    return atomic_load(&g_counted);
}

/* At exit, tells spec/torture.sh how many failure points the run has. */
static void torture_report(void)
{
    fprintf(stderr, "# ps_torture: counted=%ld fail_at=%ld\n",
            atomic_load(&g_counted), atomic_load(&g_fail_at));
}

/* g_fail_at, reading PS_TORTURE_FAIL_AT on first use. Threads racing here
 * read the same environment; only the one whose exchange wins registers the
 * report, and an earlier ps_alloc_fail_at() call wins over the environment
 * (no strtol/atexit on the hot path after the first allocation). */
static long torture_fail_at(void)
{
    long at = atomic_load_explicit(&g_fail_at, memory_order_relaxed);
    const char *s, *count;
    long unset = -1;

    if (at >= 0)
        return at;
    s = getenv("PS_TORTURE_FAIL_AT");
    count = getenv("PS_TORTURE_COUNT");
    at = s != NULL ? strtol(s, NULL, 10) : 0;
    if (at < 0)
        at = 0;
    if (!atomic_compare_exchange_strong(&g_fail_at, &unset, at))
        return unset; /* another thread or ps_alloc_fail_at() was first */
    if (s != NULL || count != NULL)
        atexit(torture_report);
    return at;
}

/* Counts the allocation and tells whether it must fail: the countdown of
 * ps_alloc_fail_after() when armed, else the whole-process fail_at. */
static int should_fail(void)
{
    long left, nth;

    atomic_fetch_add_explicit(&g_alloc_count, 1, memory_order_relaxed);
    left = atomic_load_explicit(&g_fail_after, memory_order_relaxed);
    while (left > 0 &&
           !atomic_compare_exchange_weak_explicit(&g_fail_after, &left,
                                                  left - 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    if (left >= 0)
        return left == 0; /* a test's own torture loop: not counted */
    nth = atomic_fetch_add_explicit(&g_counted, 1, memory_order_relaxed) + 1;
    return nth == torture_fail_at();
}

void *ps_malloc(size_t n)
{
    if (n == 0 || should_fail())
        return NULL;
    return g_alloc(g_alloc_ud, NULL, 0, n);
}

void *ps_calloc(size_t nmemb, size_t size)
{
    void *p;

    if (nmemb == 0 || size == 0 || nmemb > SIZE_MAX / size)
        return NULL;
    p = ps_malloc(nmemb * size);
    if (p != NULL)
        memset(p, 0, nmemb * size);
    return p;
}

void *ps_realloc(void *p, size_t n)
{
    if (n == 0 || should_fail())
        return NULL;
    return g_alloc(g_alloc_ud, p, 0, n);
}

void ps_free(void *p)
{
    if (p != NULL)
        g_alloc(g_alloc_ud, p, 0, 0);
}

char *ps_strndup(const char *s, size_t n)
{
    char *d = ps_malloc(n + 1);

    if (d == NULL)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* ---- validation -------------------------------------------------------- */

int ps_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    const unsigned char *e = s + n;

    while (s < e) {
        unsigned c = *s;

        /* Label values are overwhelmingly ASCII: skip 8 bytes at a time. */
        if (c < 0x80) {
            while (e - s >= 8) {
                uint64_t w;
                memcpy(&w, s, 8);
                if (w & 0x8080808080808080ULL)
                    break;
                s += 8;
            }
            if (s < e && *s < 0x80)
                s++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            if (e - s < 2 || (s[1] & 0xC0) != 0x80)
                return 0;
            s += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (e - s < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
                return 0;
            if (c == 0xE0 && s[1] < 0xA0) /* overlong */
                return 0;
            if (c == 0xED && s[1] > 0x9F) /* UTF-16 surrogate */
                return 0;
            s += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (e - s < 4 || (s[1] & 0xC0) != 0x80 ||
                (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
                return 0;
            if (c == 0xF0 && s[1] < 0x90) /* overlong */
                return 0;
            if (c == 0xF4 && s[1] > 0x8F) /* > U+10FFFF */
                return 0;
            s += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

static int is_alpha_(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

int ps_name_legacy_metric(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || !(is_alpha_((unsigned char)s[0]) || s[0] == ':'))
        return 0;
    for (i = 1; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(is_alpha_(c) || is_digit(c) || c == ':'))
            return 0;
    }
    return 1;
}

int ps_name_legacy_label(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || !is_alpha_((unsigned char)s[0]))
        return 0;
    for (i = 1; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(is_alpha_(c) || is_digit(c)))
            return 0;
    }
    return 1;
}

int ps_name_utf8(const char *s, size_t n)
{
    return n > 0 && ps_utf8_valid(s, n);
}

/* ---- number formatting ------------------------------------------------- */

size_t ps_fmt_go_float(double v, char *out)
{
    char tmp[40], dig[24];
    size_t nd = 0, o = 0, k;
    const char *p;
    int prec, x, dp;

    /* expfmt's writeFloat special cases, then strconv 'g' with -1. */
    if (isnan(v))
        return (size_t)sprintf(out, "NaN");
    if (isinf(v))
        return (size_t)sprintf(out, v > 0 ? "+Inf" : "-Inf");
    if (v == 0)
        return (size_t)sprintf(out, "0");
    /* Shortest digit string that reads back as v. */
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    p = tmp;
    if (*p == '-')
        out[o++] = *p++;
    for (; *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            dig[nd++] = *p;
    x = atoi(p + 1);
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    dp = x + 1;
    if (x < -4 || x >= 6) {
        /* %e: d[.ddd]e±XX, at least two exponent digits. */
        out[o++] = dig[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, dig + 1, nd - 1);
            o += nd - 1;
        }
        o += (size_t)sprintf(out + o, "e%c%02d", x < 0 ? '-' : '+',
                             x < 0 ? -x : x);
        return o;
    }
    if (dp <= 0) {
        out[o++] = '0';
        out[o++] = '.';
        for (k = 0; k < (size_t)-dp; k++)
            out[o++] = '0';
        memcpy(out + o, dig, nd);
        o += nd;
    } else if ((size_t)dp >= nd) {
        memcpy(out + o, dig, nd);
        o += nd;
        for (k = nd; k < (size_t)dp; k++)
            out[o++] = '0';
    } else {
        memcpy(out + o, dig, (size_t)dp);
        o += (size_t)dp;
        out[o++] = '.';
        memcpy(out + o, dig + dp, nd - (size_t)dp);
        o += nd - (size_t)dp;
    }
    out[o] = '\0';
    return o;
}

size_t ps_fmt_om_float(double v, char *out)
{
    size_t n;

    /* Prometheus's FormatOpenMetricsFloat: Go's 'g' formatting, plus ".0"
     * when the result has neither '.' nor 'e' ("1" -> "1.0"). */
    if (v == 0)
        return (size_t)sprintf(out, "0.0");
    n = ps_fmt_go_float(v, out);
    if (isfinite(v) && strpbrk(out, ".e") == NULL) {
        memcpy(out + n, ".0", 3);
        n += 2;
    }
    return n;
}
