/*
 * ps_buf: a growable byte buffer with a size cap, in the style of curl's
 * dynbuf.
 *
 * - ps_buf_init() cannot fail and allocates nothing; the cap (max bytes of
 *   content, 0 = SIZE_MAX) is fixed at init.
 * - Appends return PS_OK, PS_ENOMEM, or PS_ELIMIT when the content would
 *   exceed the cap. On failure the buffer keeps its previous content.
 * - The content is always NUL-terminated once anything was allocated, so
 *   ps_buf_cstr() is usable as a C string (it returns "" when empty).
 * - ps_buf_reset() empties it and keeps the capacity, for reuse across
 *   scrapes; ps_buf_cleanup() frees and is idempotent.
 */
#ifndef PS_BUF_H
#define PS_BUF_H

#include "ps_core.h"

#include <stddef.h>

struct ps_buf {
    char *p;    /* NULL until the first append */
    size_t len; /* content bytes, excluding the NUL */
    size_t cap; /* allocated bytes, including room for the NUL */
    size_t max; /* the content cap */
};

void ps_buf_init(struct ps_buf *b, size_t max);
void ps_buf_cleanup(struct ps_buf *b);
void ps_buf_reset(struct ps_buf *b);

int ps_buf_add(struct ps_buf *b, const void *p, size_t n);
int ps_buf_adds(struct ps_buf *b, const char *s); /* a C string */
int ps_buf_addc(struct ps_buf *b, char c);
/* printf-style append. PS_EINVAL on a formatting error. */
int ps_buf_printf(struct ps_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Borrowed views, valid until the next call that modifies b. */
static inline const char *ps_buf_cstr(const struct ps_buf *b)
{
    return b->p != NULL ? b->p : "";
}

static inline size_t ps_buf_len(const struct ps_buf *b)
{
    return b->len;
}

#endif
