/*
 * ps_engine: the event loop of one scrape engine thread.
 *
 * It owns one ps_http client (curl multi handle, connection cache) and one
 * ps_timer heap, and multiplexes them: ps_engine_step() waits for sockets or
 * the next timer, whichever comes first, then runs the completed transfers'
 * callbacks and the due timers. Targets (later: scrape loops) are state
 * machines driven by those callbacks.
 *
 * Extra file descriptors (a listening socket, a signal self-pipe) are
 * watched with struct ps_engine_io: the step waits for them too and calls
 * their callback, level-triggered, after the transfers and before the
 * timers. See docs/engine-services.md for how the wait is done.
 *
 * Threading: the engine belongs to the thread that calls step/run; every
 * function except ps_engine_wakeup(), ps_engine_stop() and ps_engine_now_ns()
 * must be called on it. Those three may be called from any thread.
 */
#ifndef PS_ENGINE_H
#define PS_ENGINE_H

#include "ps_core.h"
#include "ps_http.h"
#include "ps_timer.h"

#include <stdint.h>

struct ps_engine;

struct ps_engine_opts {
    struct ps_http_opts http;
};

/* Monotonic clock in nanoseconds (CLOCK_MONOTONIC): the timers' time base. */
uint64_t ps_engine_now_ns(void);

/* o may be NULL. PS_OK, PS_ENOMEM or PS_EIO; *out only on success. */
int ps_engine_new(struct ps_engine **out, const struct ps_engine_opts *o,
                  struct ps_err *e);
/* NULL-safe. Frees the client (in-flight requests are cancelled and
 * detached, see ps_http_free()) and forgets pending timers. Not from a
 * callback. */
void ps_engine_free(struct ps_engine *eng);

/* Borrowed, owned by the engine: create requests on it, add timers to it. */
struct ps_http *ps_engine_http(struct ps_engine *eng);
struct ps_timer_heap *ps_engine_timers(struct ps_engine *eng);

/* Timer conveniences: schedule t delay_ms from now (PS_OK or PS_ENOMEM),
 * and cancel it. */
int ps_engine_timer_in(struct ps_engine *eng, struct ps_timer *t,
                       uint64_t delay_ms);
void ps_engine_timer_cancel(struct ps_engine *eng, struct ps_timer *t);

/* ---- extra file descriptors --------------------------------------------- */

#define PS_IO_READ 1u
#define PS_IO_WRITE 2u
#define PS_IO_ERROR 4u /* reported only: hang-up or error on the fd */

struct ps_engine_io;
/* Runs on the engine thread inside ps_engine_step() with the ready events
 * (PS_IO_*). It may change or remove this watcher or others, and add new
 * ones (seen from the next step on). */
typedef void (*ps_engine_io_fn)(struct ps_engine_io *io, unsigned revents,
                                void *ud);

/* Intrusive, like ps_timer: the caller embeds it and keeps it alive while
 * it is added. Fields are private; use the functions. */
struct ps_engine_io {
    int fd;
    unsigned events;  /* PS_IO_READ | PS_IO_WRITE; 0: watched for nothing */
    unsigned revents; /* filled by the step, then passed to fn */
    size_t slot;      /* index + 1 in the engine's array; 0: not added */
    ps_engine_io_fn fn;
    void *ud;
};

void ps_engine_io_init(struct ps_engine_io *io, int fd, ps_engine_io_fn fn,
                       void *ud);
/* Starts (or updates) watching io->fd for events. PS_OK, or PS_ENOMEM
 * (the array must grow; io is then not added). */
int ps_engine_io_add(struct ps_engine *eng, struct ps_engine_io *io,
                     unsigned events);
/* Changes the events of an added watcher; cannot fail. */
void ps_engine_io_set(struct ps_engine_io *io, unsigned events);
/* Stops watching; a no-op when not added. Safe from any engine callback. */
void ps_engine_io_remove(struct ps_engine *eng, struct ps_engine_io *io);
size_t ps_engine_io_count(const struct ps_engine *eng);

/*
 * One bounded iteration: waits at most timeout_ms (less if a timer is due
 * sooner; 0 polls) for transfers and watched fds, then runs completion
 * callbacks, fd callbacks and due timers. PS_OK,
 * PS_ESTATE if called from a callback, or PS_EIO if libcurl failed.
 */
int ps_engine_step(struct ps_engine *eng, int timeout_ms, struct ps_err *e);
/* Steps until ps_engine_stop() or until duration_ms have passed (a negative
 * duration: until stopped). The run that sees a stop request consumes it;
 * one made while no run is active makes the next run return at once.
 * Returns like ps_engine_step(). */
int ps_engine_run(struct ps_engine *eng, long duration_ms, struct ps_err *e);
/* Thread-safe: makes ps_engine_run() return soon (also when called before
 * it, or from a callback running inside it). */
void ps_engine_stop(struct ps_engine *eng);
/* Thread-safe: interrupts the current (or next) wait of step/run. */
void ps_engine_wakeup(struct ps_engine *eng);

#endif
