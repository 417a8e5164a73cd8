/* ps_buf.c: see ps_buf.h. */
#include "ps_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MIN_ALLOC 64u

void ps_buf_init(struct ps_buf *b, size_t max)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max ? max : (size_t)-1 - 1;
}

void ps_buf_cleanup(struct ps_buf *b)
{
    ps_free(b->p);
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
}

void ps_buf_reset(struct ps_buf *b)
{
    b->len = 0;
    if (b->p != NULL)
        b->p[0] = '\0';
}

/* Ensures room for n more bytes plus the NUL. On failure b is unchanged. */
static int grow(struct ps_buf *b, size_t n)
{
    size_t need, ncap;
    char *np;

    if (n > b->max - b->len)
        return PS_ELIMIT;
    need = b->len + n + 1;
    if (need <= b->cap)
        return PS_OK;
    ncap = b->cap ? b->cap : MIN_ALLOC;
    while (ncap < need)
        ncap = ncap > (size_t)-1 / 2 ? need : ncap * 2;
    /* Never allocate far beyond what the cap can ever use. */
    if (ncap > b->max + 1)
        ncap = b->max + 1 > need ? b->max + 1 : need;
    np = ps_realloc(b->p, ncap);
    if (np == NULL)
        return PS_ENOMEM;
    b->p = np;
    b->cap = ncap;
    return PS_OK;
}

int ps_buf_add(struct ps_buf *b, const void *p, size_t n)
{
    int rc = grow(b, n);

    if (rc != PS_OK)
        return rc;
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return PS_OK;
}

int ps_buf_adds(struct ps_buf *b, const char *s)
{
    return ps_buf_add(b, s, strlen(s));
}

int ps_buf_addc(struct ps_buf *b, char c)
{
    return ps_buf_add(b, &c, 1);
}

int ps_buf_printf(struct ps_buf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    int n, rc;

    /* Format once into a stack buffer; only long output formats twice. */
    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return PS_EINVAL;
    if ((size_t)n < sizeof(small))
        return ps_buf_add(b, small, (size_t)n);
    rc = grow(b, (size_t)n);
    if (rc != PS_OK)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return PS_OK;
}
