/* ps_timer: binary min-heap of intrusive timers, ordered by (deadline, seq). */
#include "ps_timer.h"

#include "ps_core.h"

#include <stdint.h>

void ps_timer_heap_init(struct ps_timer_heap *h)
{
    h->v = NULL;
    h->n = 0;
    h->cap = 0;
    h->seq = 0;
}

void ps_timer_heap_cleanup(struct ps_timer_heap *h)
{
    size_t i;

    for (i = 0; i < h->n; i++)
        h->v[i]->slot = 0;
    ps_free(h->v);
    ps_timer_heap_init(h);
}

int ps_timer_heap_reserve(struct ps_timer_heap *h, size_t n)
{
    struct ps_timer **v;

    if (n <= h->cap)
        return PS_OK;
    if (n > SIZE_MAX / sizeof(*v))
        return PS_ENOMEM;
    v = ps_realloc(h->v, n * sizeof(*v));
    if (v == NULL)
        return PS_ENOMEM; /* h->v untouched */
    h->v = v;
    h->cap = n;
    return PS_OK;
}

void ps_timer_init(struct ps_timer *t, ps_timer_fn fn, void *ud)
{
    t->deadline_ns = 0;
    t->seq = 0;
    t->slot = 0;
    t->fn = fn;
    t->ud = ud;
}

int ps_timer_pending(const struct ps_timer *t)
{
    return t->slot != 0;
}

size_t ps_timer_count(const struct ps_timer_heap *h)
{
    return h->n;
}

/* a fires before b */
static int before(const struct ps_timer *a, const struct ps_timer *b)
{
    if (a->deadline_ns != b->deadline_ns)
        return a->deadline_ns < b->deadline_ns;
    return a->seq < b->seq;
}

static void place(struct ps_timer_heap *h, size_t i, struct ps_timer *t)
{
    h->v[i] = t;
    t->slot = i + 1;
}

/* Moves the timer at i towards the root while it fires before its parent. */
static void sift_up(struct ps_timer_heap *h, size_t i)
{
    struct ps_timer *t = h->v[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(t, h->v[parent]))
            break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, t);
}

/* Moves the timer at i towards the leaves while a child fires before it. */
static void sift_down(struct ps_timer_heap *h, size_t i)
{
    struct ps_timer *t = h->v[i];

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && before(h->v[c + 1], h->v[c]))
            c++;
        if (!before(h->v[c], t))
            break;
        place(h, i, h->v[c]);
        i = c;
    }
    place(h, i, t);
}

/* Removes the timer at slot i, keeping the heap property. */
static void remove_at(struct ps_timer_heap *h, size_t i)
{
    struct ps_timer *t = h->v[i];
    struct ps_timer *last = h->v[--h->n];

    t->slot = 0;
    if (i == h->n)
        return; /* t was the last element */
    place(h, i, last);
    if (i > 0 && before(last, h->v[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}

int ps_timer_add(struct ps_timer_heap *h, struct ps_timer *t,
                 uint64_t deadline_ns)
{
    if (t->slot != 0) { /* reschedule: never allocates */
        size_t i = t->slot - 1;
        t->deadline_ns = deadline_ns;
        t->seq = h->seq++;
        /* the new seq is the largest, so only the deadline decides */
        if (i > 0 && before(t, h->v[(i - 1) / 2]))
            sift_up(h, i);
        else
            sift_down(h, i);
        return PS_OK;
    }
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        if (cap < h->cap || ps_timer_heap_reserve(h, cap) != PS_OK)
            return PS_ENOMEM; /* t untouched */
    }
    t->deadline_ns = deadline_ns;
    t->seq = h->seq++;
    h->v[h->n++] = t;
    sift_up(h, h->n - 1);
    return PS_OK;
}

void ps_timer_cancel(struct ps_timer_heap *h, struct ps_timer *t)
{
    if (t->slot == 0 || t->slot > h->n || h->v[t->slot - 1] != t)
        return; /* not pending (or pending on another heap: caller bug) */
    remove_at(h, t->slot - 1);
}

int ps_timer_next(const struct ps_timer_heap *h, uint64_t *deadline_ns)
{
    if (h->n == 0)
        return 0;
    *deadline_ns = h->v[0]->deadline_ns;
    return 1;
}

size_t ps_timer_run(struct ps_timer_heap *h, uint64_t now_ns)
{
    uint64_t start_seq = h->seq; /* later seqs were (re)scheduled by us */
    size_t ran = 0;

    while (h->n > 0) {
        struct ps_timer *t = h->v[0];
        if (t->deadline_ns > now_ns || t->seq >= start_seq)
            break;
        remove_at(h, 0);
        ran++;
        if (t->fn != NULL)
            t->fn(t, t->ud); /* may free t: touch it no more */
    }
    return ran;
}
