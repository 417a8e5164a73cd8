/* ps_engine: one ps_http plus one ps_timer heap, stepped by one thread. */
#include "ps_engine.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <time.h>

struct ps_engine {
    struct ps_http *http;        /* owned */
    struct ps_timer_heap timers; /* owned array; timers are the callers' */
    struct ps_engine_io **io;    /* watched fds (callers' structs) */
    struct pollfd *pfd;          /* scratch for poll, same capacity */
    size_t n_io, cap_io;
    atomic_int stop; /* set by any thread, read by the loop */
    int in_step;     /* guards against reentry from callbacks */
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
    while (eng->n_io > 0) /* the callers' structs: just forget them */
        eng->io[--eng->n_io]->slot = 0;
    ps_free(eng->io);
    ps_free(eng->pfd);
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

/* ---- extra file descriptors --------------------------------------------- */

void ps_engine_io_init(struct ps_engine_io *io, int fd, ps_engine_io_fn fn,
                       void *ud)
{
    io->fd = fd;
    io->events = io->revents = 0;
    io->slot = 0;
    io->fn = fn;
    io->ud = ud;
}

int ps_engine_io_add(struct ps_engine *eng, struct ps_engine_io *io,
                     unsigned events)
{
    if (io->slot == 0) {
        if (eng->n_io == eng->cap_io) { /* grow both arrays together */
            size_t cap = eng->cap_io ? eng->cap_io * 2 : 8;
            struct ps_engine_io **v = ps_realloc(eng->io, cap * sizeof(*v));
            struct pollfd *p;
            if (v == NULL)
                return PS_ENOMEM;
            eng->io = v;
            p = ps_realloc(eng->pfd, cap * sizeof(*p));
            if (p == NULL)
                return PS_ENOMEM;
            eng->pfd = p;
            eng->cap_io = cap;
        }
        eng->io[eng->n_io++] = io;
        io->slot = eng->n_io;
    }
    io->events = events;
    io->revents = 0;
    return PS_OK;
}

void ps_engine_io_set(struct ps_engine_io *io, unsigned events)
{
    io->events = events;
}

void ps_engine_io_remove(struct ps_engine *eng, struct ps_engine_io *io)
{
    size_t i;

    if (io == NULL || io->slot == 0)
        return;
    i = io->slot - 1;
    eng->io[i] = eng->io[--eng->n_io]; /* swap-remove */
    eng->io[i]->slot = i + 1;
    io->slot = 0;
    io->revents = 0;
}

size_t ps_engine_io_count(const struct ps_engine *eng)
{
    return eng->n_io;
}

/* poll(2) over the watched fds without waiting; sets each io->revents.
 * Returns how many are ready. */
static int poll_io(struct ps_engine *eng)
{
    size_t i;
    int n, ready = 0;

    for (i = 0; i < eng->n_io; i++) {
        const struct ps_engine_io *io = eng->io[i];
        eng->pfd[i].fd = io->events ? io->fd : -1; /* -1: ignored */
        eng->pfd[i].events = (short)((io->events & PS_IO_READ ? POLLIN : 0) |
                                     (io->events & PS_IO_WRITE ? POLLOUT : 0));
        eng->pfd[i].revents = 0;
    }
    do
        n = poll(eng->pfd, (nfds_t)eng->n_io, 0);
    while (n < 0 && errno == EINTR);
    for (i = 0; i < eng->n_io; i++) {
        short r = n > 0 ? eng->pfd[i].revents : 0;
        unsigned v = (r & POLLIN ? PS_IO_READ : 0) |
                     (r & POLLOUT ? PS_IO_WRITE : 0) |
                     (r & (POLLERR | POLLHUP | POLLNVAL) ? PS_IO_ERROR : 0);
        eng->io[i]->revents = v;
        ready += v != 0;
    }
    return ready;
}

/* Calls the callbacks of ready fds. A callback may remove watchers: the
 * swap-remove can make this pass skip one, which is still ready next step
 * (level-triggered), so nothing is lost. */
static void dispatch_io(struct ps_engine *eng)
{
    size_t i;

    for (i = 0; i < eng->n_io; i++) {
        struct ps_engine_io *io = eng->io[i];
        unsigned r = io->revents & (io->events | PS_IO_ERROR);
        io->revents = 0;
        if (r != 0 && io->events != 0)
            io->fn(io, r, io->ud);
    }
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
    if (eng->n_io == 0) {
        rc = ps_http_wait(eng->http, wait_ms(eng, timeout_ms), e);
    } else {
        /* An fd already ready: do not wait for curl at all. Otherwise one
         * curl_multi_poll watches curl's sockets and ours together. */
        int ms = poll_io(eng) > 0 ? 0 : wait_ms(eng, timeout_ms);
        if (ms == 0) {
            rc = ps_http_wait(eng->http, 0, e);
        } else {
            rc = ps_http_wait_fds(eng->http, eng->pfd, (unsigned)eng->n_io,
                                  ms, e);
        }
        if (rc == PS_OK)
            poll_io(eng);
    }
    if (rc == PS_OK)
        rc = ps_http_perform(eng->http, e); /* completion callbacks */
    if (rc == PS_OK && eng->n_io > 0)
        dispatch_io(eng);
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
