/*
 * ps_timer: a binary min-heap of intrusive timers.
 *
 * The caller owns each struct ps_timer (usually embedded in a target's state
 * machine) and the heap only stores pointers to them, so scheduling a timer
 * never allocates: only the pointer array grows (amortized doubling, or
 * up front with ps_timer_heap_reserve()). Every timer remembers its slot in
 * the heap, so add, cancel and reschedule are O(log n) and the earliest
 * deadline is O(1).
 *
 * Deadlines are absolute monotonic nanoseconds (see ps_engine_now_ns()).
 * Timers with equal deadlines fire in the order they were scheduled.
 *
 * Not thread-safe: one heap belongs to one loop thread.
 */
#ifndef PS_TIMER_H
#define PS_TIMER_H

#include <stddef.h>
#include <stdint.h>

struct ps_timer;

/* Called when the timer is due. The timer is no longer pending when this
 * runs, so the callback may re-add it (periodic timers), cancel or re-add
 * others, or free the memory holding it. */
typedef void (*ps_timer_fn)(struct ps_timer *t, void *ud);

/* Caller storage: ps_timer_init() it; the fields are private. */
struct ps_timer {
    uint64_t deadline_ns;
    uint64_t seq; /* scheduling order: ties fire first-in first-out */
    size_t slot;  /* index in the heap + 1; 0 when not pending */
    ps_timer_fn fn;
    void *ud;
};

/* Caller storage: ps_timer_heap_init() it; the fields are private. */
struct ps_timer_heap {
    struct ps_timer **v; /* owned; v[0] is the earliest */
    size_t n, cap;
    uint64_t seq;
};

/* Cannot fail; the heap holds no memory until the first add. */
void ps_timer_heap_init(struct ps_timer_heap *h);
/* Frees the array. Pending timers are simply forgotten (marked not pending);
 * their callbacks never run. */
void ps_timer_heap_cleanup(struct ps_timer_heap *h);
/* Grows the array to hold at least n timers: PS_OK or PS_ENOMEM. */
int ps_timer_heap_reserve(struct ps_timer_heap *h, size_t n);

/* Cannot fail. A timer must not be re-initialised while pending. */
void ps_timer_init(struct ps_timer *t, ps_timer_fn fn, void *ud);

/* Schedules t at deadline_ns, or moves it there if already pending
 * (reschedule). PS_OK, or PS_ENOMEM if the array could not grow, in which
 * case t is left exactly as it was. A rescheduled timer goes behind timers
 * with the same deadline. */
int ps_timer_add(struct ps_timer_heap *h, struct ps_timer *t,
                 uint64_t deadline_ns);
/* Unschedules t; a no-op if it is not pending. Cannot fail. */
void ps_timer_cancel(struct ps_timer_heap *h, struct ps_timer *t);
/* 1 if t is scheduled on some heap. */
int ps_timer_pending(const struct ps_timer *t);
size_t ps_timer_count(const struct ps_timer_heap *h);

/* The earliest deadline: 1 and *deadline_ns set, or 0 if the heap is empty. */
int ps_timer_next(const struct ps_timer_heap *h, uint64_t *deadline_ns);

/* Runs every timer due at now_ns (deadline <= now_ns), earliest first, and
 * returns how many ran. Timers (re)scheduled by a callback during this call
 * do not run in it, even if already due, so a callback re-adding itself at
 * `now` cannot spin: the run stops when such a timer reaches the top, and
 * it (and whatever is due behind it) runs on the next call, which the
 * caller makes without waiting since ps_timer_next() is then <= now. */
size_t ps_timer_run(struct ps_timer_heap *h, uint64_t now_ns);

#endif
