/* ps_core: error codes, allocator hook, UTF-8 and name validation. */
#include "ps_core.h"

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

/* Counts the allocation and tells whether the torture countdown says fail. */
static int should_fail(void)
{
    long left;

    atomic_fetch_add_explicit(&g_alloc_count, 1, memory_order_relaxed);
    left = atomic_load_explicit(&g_fail_after, memory_order_relaxed);
    while (left > 0 &&
           !atomic_compare_exchange_weak_explicit(&g_fail_after, &left,
                                                  left - 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    return left == 0;
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
