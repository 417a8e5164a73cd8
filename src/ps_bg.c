/* ps_bg: one engine stepped on a background pthread, with a lock handoff.
 * See ps_bg.h for the protocol. */
#include "ps_bg.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

struct ps_bg {
    struct ps_engine *eng; /* borrowed */
    pthread_mutex_t mu;    /* the engine lock */
    pthread_cond_t cv;     /* signalled when a caller releases the lock */
    pthread_t th;
    int running;      /* the controlling thread's view: started */
    atomic_int stop;  /* asks the thread to end */
    atomic_int want;  /* callers waiting in ps_bg_lock */
    atomic_int alive; /* the thread has not ended yet */
    atomic_ullong steps, lock_waits, max_wait_ns;
    /* written by the thread before it clears alive; final once alive is 0
     * (the atomic store publishes them) */
    int rc; /* why the thread ended */
    struct ps_err err;
};

int ps_bg_new(struct ps_bg **out, struct ps_engine *eng, struct ps_err *e)
{
    struct ps_bg *bg = ps_calloc(1, sizeof(*bg));

    if (bg == NULL)
        return ps_err_set(e, PS_ENOMEM, "background: out of memory");
    bg->eng = eng;
    /* Default attributes: these cannot fail on Linux or the BSDs. */
    pthread_mutex_init(&bg->mu, NULL);
    pthread_cond_init(&bg->cv, NULL);
    atomic_init(&bg->stop, 0);
    atomic_init(&bg->want, 0);
    atomic_init(&bg->alive, 0);
    atomic_init(&bg->steps, 0);
    atomic_init(&bg->lock_waits, 0);
    atomic_init(&bg->max_wait_ns, 0);
    ps_err_init(&bg->err);
    *out = bg;
    return PS_OK;
}

void ps_bg_free(struct ps_bg *bg)
{
    if (bg == NULL)
        return;
    ps_bg_stop(bg);
    pthread_cond_destroy(&bg->cv);
    pthread_mutex_destroy(&bg->mu);
    ps_free(bg);
}

/* The thread: steps the engine holding the lock, and after each step lets
 * waiting callers in (sleeping on cv until none wants the lock). */
static void *bg_main(void *arg)
{
    struct ps_bg *bg = arg;
    struct ps_err e;
    sigset_t all;
    int rc = PS_OK;

    sigfillset(&all); /* already blocked by ps_bg_start; made certain here */
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    ps_err_init(&e);
    pthread_mutex_lock(&bg->mu);
    while (!atomic_load(&bg->stop)) {
        rc = ps_engine_step(bg->eng, PS_BG_STEP_MS, &e);
        atomic_fetch_add(&bg->steps, 1);
        if (rc != PS_OK)
            break;
        while (atomic_load(&bg->want) > 0 && !atomic_load(&bg->stop))
            pthread_cond_wait(&bg->cv, &bg->mu);
    }
    bg->rc = rc;
    bg->err = e;
    atomic_store(&bg->alive, 0);
    pthread_mutex_unlock(&bg->mu);
    return NULL;
}

int ps_bg_start(struct ps_bg *bg, struct ps_err *e)
{
    sigset_t all, old;
    int rc;

    if (bg->running)
        return ps_err_set(e, PS_ESTATE, "background: already running");
    atomic_store(&bg->stop, 0);
    atomic_store(&bg->steps, 0);
    bg->rc = PS_OK;
    ps_err_init(&bg->err);
    atomic_store(&bg->alive, 1);
    /* The new thread inherits this mask: no signal is ever delivered to
     * it, not even between its creation and its first instruction. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&bg->th, NULL, bg_main, bg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        atomic_store(&bg->alive, 0);
        return ps_err_set(e, PS_EIO, "background: pthread_create: %s",
                          strerror(rc));
    }
    bg->running = 1;
    return PS_OK;
}

void ps_bg_stop(struct ps_bg *bg)
{
    if (bg == NULL || !bg->running)
        return;
    atomic_store(&bg->stop, 1);
    ps_engine_wakeup(bg->eng); /* ends the wait in curl_multi_poll */
    /* The thread holds mu except while it sleeps on cv (or once it ended):
     * taking mu here means it is asleep or gone, so the broadcast cannot
     * be lost. */
    pthread_mutex_lock(&bg->mu);
    pthread_cond_broadcast(&bg->cv);
    pthread_mutex_unlock(&bg->mu);
    pthread_join(bg->th, NULL);
    bg->running = 0;
}

int ps_bg_running(const struct ps_bg *bg)
{
    return bg != NULL && bg->running;
}

void ps_bg_lock(struct ps_bg *bg)
{
    uint64_t t0, dt;

    if (!atomic_load(&bg->alive)) {
        pthread_mutex_lock(&bg->mu);
        return;
    }
    t0 = ps_engine_now_ns();
    atomic_fetch_add(&bg->want, 1);
    ps_engine_wakeup(bg->eng);
    pthread_mutex_lock(&bg->mu);
    atomic_fetch_sub(&bg->want, 1);
    dt = ps_engine_now_ns() - t0;
    atomic_fetch_add(&bg->lock_waits, 1);
    if (dt > atomic_load(&bg->max_wait_ns)) /* only lock holders write it */
        atomic_store(&bg->max_wait_ns, dt);
}

void ps_bg_unlock(struct ps_bg *bg)
{
    pthread_cond_broadcast(&bg->cv); /* the thread may step again */
    pthread_mutex_unlock(&bg->mu);
}

void ps_bg_status(struct ps_bg *bg, struct ps_bg_status *st, struct ps_err *e)
{
    memset(st, 0, sizeof(*st));
    st->running = bg->running;
    st->alive = atomic_load(&bg->alive);
    st->steps = atomic_load(&bg->steps);
    st->lock_waits = atomic_load(&bg->lock_waits);
    st->max_wait_ns = atomic_load(&bg->max_wait_ns);
    /* Lock-free, so callers holding the lock may ask too: rc and err are
     * final once alive reads 0, and only start (the caller) resets them. */
    if (st->running && !st->alive) {
        st->rc = bg->rc;
        if (e != NULL && bg->rc != PS_OK)
            *e = bg->err;
    }
}
