/* ps_engine: one ps_http plus one ps_timer heap, stepped by one thread. */
#include "ps_engine.h"

#include <limits.h>
#include <stdatomic.h>
#include <time.h>

struct ps_engine {
    struct ps_http *http;        /* owned */
    struct ps_timer_heap timers; /* owned array; timers are the callers' */
    atomic_int stop;             /* set by any thread, read by the loop */
    int in_step;                 /* guards against reentry from callbacks */
};

uint64_t ps_engine_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int ps_engine_new(struct ps_engine **out, const struct ps_engine_opts *o,
                  struct ps_err *e)
{
    struct ps_engine *eng = ps_calloc(1, sizeof(*eng));
    int rc = eng ? PS_OK : PS_ENOMEM;

    if (rc != PS_OK) {
        ps_err_set(e, rc, "engine: out of memory");
        goto fail;
    }
    ps_timer_heap_init(&eng->timers);
    atomic_init(&eng->stop, 0);
    rc = ps_http_new(&eng->http, o ? &o->http : NULL, e);
    if (rc != PS_OK)
        goto fail; /* e already says why */
    *out = eng;
    return PS_OK;
fail:
    ps_engine_free(eng);
    return rc;
}

void ps_engine_free(struct ps_engine *eng)
{
    if (eng == NULL)
        return;
    ps_http_free(eng->http);
    ps_timer_heap_cleanup(&eng->timers);
    ps_free(eng);
}

struct ps_http *ps_engine_http(struct ps_engine *eng)
{
    return eng->http;
}

struct ps_timer_heap *ps_engine_timers(struct ps_engine *eng)
{
    return &eng->timers;
}

int ps_engine_timer_in(struct ps_engine *eng, struct ps_timer *t,
                       uint64_t delay_ms)
{
    return ps_timer_add(&eng->timers, t,
                        ps_engine_now_ns() + delay_ms * 1000000u);
}

void ps_engine_timer_cancel(struct ps_engine *eng, struct ps_timer *t)
{
    ps_timer_cancel(&eng->timers, t);
}

/* How long to wait: timeout_ms, shortened to the next timer (rounded up to
 * a whole millisecond, so we never wake just before it is due). */
static int wait_ms(struct ps_engine *eng, int timeout_ms)
{
    uint64_t next, now;

    if (timeout_ms < 0)
        timeout_ms = 0;
    if (!ps_timer_next(&eng->timers, &next))
        return timeout_ms;
    now = ps_engine_now_ns();
    if (next <= now)
        return 0;
    next = (next - now + 999999u) / 1000000u;
    return next < (uint64_t)timeout_ms ? (int)next : timeout_ms;
}

int ps_engine_step(struct ps_engine *eng, int timeout_ms, struct ps_err *e)
{
    int rc;

    if (eng->in_step)
        return ps_err_set(e, PS_ESTATE, "engine: step called from a callback");
    eng->in_step = 1;
    rc = ps_http_wait(eng->http, wait_ms(eng, timeout_ms), e);
    if (rc == PS_OK)
        rc = ps_http_perform(eng->http, e); /* completion callbacks */
    if (rc == PS_OK)
        ps_timer_run(&eng->timers, ps_engine_now_ns());
    eng->in_step = 0;
    return rc;
}

int ps_engine_run(struct ps_engine *eng, long duration_ms, struct ps_err *e)
{
    uint64_t end = duration_ms < 0
                       ? UINT64_MAX
                       : ps_engine_now_ns() + (uint64_t)duration_ms * 1000000u;
    int rc = PS_OK;

    while (rc == PS_OK && !atomic_exchange(&eng->stop, 0)) {
        uint64_t now = ps_engine_now_ns();
        uint64_t left_ms;
        if (now >= end)
            break;
        left_ms = end == UINT64_MAX ? 1000 : (end - now + 999999u) / 1000000u;
        rc = ps_engine_step(eng, left_ms > 1000 ? 1000 : (int)left_ms, e);
    }
    return rc;
}

void ps_engine_stop(struct ps_engine *eng)
{
    atomic_store(&eng->stop, 1);
    ps_http_wakeup(eng->http);
}

void ps_engine_wakeup(struct ps_engine *eng)
{
    ps_http_wakeup(eng->http);
}
