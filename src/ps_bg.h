/*
 * ps_bg: runs one ps_engine on a background pthread, and lets another
 * thread (the Lua thread, in nginx the worker's) use the objects the engine
 * drives (manager, pools, loops) safely in between.
 *
 * The engine lock. The background thread holds bg->mu while it steps the
 * engine: the wait in curl_multi_poll, the completion callbacks (parse,
 * relabel, C appenders), the fd callbacks and the due timers. Another
 * thread takes the engine with ps_bg_lock(): it registers its wish, wakes
 * the engine (ps_engine_wakeup, i.e. curl_multi_wakeup), so the wait ends
 * at once, and gets the mutex as soon as the current step's callbacks are
 * done. The background thread then sleeps on a condition variable until no
 * thread wants the engine, so it never takes the lock back in between.
 * While a caller holds the lock the engine does nothing: every engine,
 * manager and pool function may be called (apply_config, sync, status).
 * The wait for the lock is bounded by one step's callbacks, never by a
 * transfer or a timer.
 *
 * Signals: the thread is created with every signal blocked (the creating
 * thread's mask is set to full around pthread_create, then restored), so
 * signals are delivered to the process's other threads. ps_http sets
 * CURLOPT_NOSIGNAL on every transfer.
 *
 * Stopping: ps_bg_stop() asks the thread to end (an atomic flag plus a
 * wakeup), then joins it. Transfers in flight stay in the engine, untouched:
 * the engine may be stepped again by the caller or freed.
 *
 * Not fork-safe by itself: after fork() the child has no background
 * thread; the Lua binding refuses every use from another process.
 */
#ifndef PS_BG_H
#define PS_BG_H

#include "ps_core.h"
#include "ps_engine.h"

#include <stdint.h>

struct ps_bg;

/* Steps the engine is given per wait, in ms: a bound on how long a stop
 * request could go unseen if a wakeup were lost (none is). */
#define PS_BG_STEP_MS 1000

/* A new controller for eng (borrowed; it must outlive the controller).
 * The thread is not started. PS_OK or PS_ENOMEM; *out only on success. */
int ps_bg_new(struct ps_bg **out, struct ps_engine *eng, struct ps_err *e);
/* Stops (joins) the thread if it runs, then frees. NULL-safe. Must not be
 * called while the calling thread holds the lock. */
void ps_bg_free(struct ps_bg *bg);

/* Starts the thread. PS_OK; PS_ESTATE if it already runs; PS_EIO if
 * pthread_create failed. The last thread error is cleared. */
int ps_bg_start(struct ps_bg *bg, struct ps_err *e);
/* Stops and joins the thread; returns at once if it does not run. Returns
 * within one step's callbacks even with transfers in flight. Must not be
 * called while the calling thread holds the lock (it would deadlock):
 * callers defer it until they released the lock. */
void ps_bg_stop(struct ps_bg *bg);
/* 1 while the thread runs (between start and stop, even if the thread
 * ended on an engine error: see ps_bg_status). */
int ps_bg_running(const struct ps_bg *bg);

/* Takes the engine: wakes the thread and waits for it to finish the
 * callbacks of its current step. Not recursive. When the thread does not
 * run, this only takes the mutex. */
void ps_bg_lock(struct ps_bg *bg);
void ps_bg_unlock(struct ps_bg *bg);

struct ps_bg_status {
    int running;          /* started and not stopped */
    int alive;            /* the thread still steps the engine */
    uint64_t steps;       /* engine steps since start */
    uint64_t lock_waits;  /* ps_bg_lock calls that had to wake the thread */
    uint64_t max_wait_ns; /* longest of those waits */
    int rc;               /* PS_OK, or the engine error that ended it */
};
/* Thread-safe snapshot. If the thread ended on an error, its message is
 * copied into e (may be NULL). */
void ps_bg_status(struct ps_bg *bg, struct ps_bg_status *st, struct ps_err *e);

#endif
