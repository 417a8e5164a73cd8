/*
 * ps_manager.c: pools by job name (Prometheus scrape.Manager). See
 * ps_manager.h. Pools are kept in an array sorted by job name: a manager
 * has tens of jobs, and apply/sync are rare.
 */
#include "ps_manager.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct ps_manager {
    struct ps_engine *eng;
    int own_engine;
    struct ps_appender *app;
    uint64_t seed;
    struct ps_pool **pools; /* sorted by job name */
    size_t n_pools;
};

/* Any stable hash will do: the seed only has to differ between
 * instances scraping the same targets (Prometheus hashes external labels
 * and the hostname). */
uint64_t ps_manager_seed_of(const char *s, size_t n)
{
    return XXH3_64bits(s, n);
}

/* The appender is borrowed; the engine is borrowed or owned (made here
 * when o->engine is NULL). *out only on success. */
int ps_manager_new(struct ps_manager **out, const struct ps_manager_opts *o,
                   struct ps_err *e)
{
    struct ps_manager *m;
    int rc;

    if (o == NULL || o->appender == NULL)
        return ps_err_set(e, PS_EINVAL, "manager: an appender is required");
    m = ps_calloc(1, sizeof(*m));
    if (m == NULL)
        return ps_err_set(e, PS_ENOMEM, "manager");
    m->app = o->appender;
    m->seed = o->offset_seed;
    m->eng = o->engine;
    if (m->eng == NULL) {
        rc = ps_engine_new(&m->eng, NULL, e);
        if (rc != PS_OK) {
            ps_free(m);
            return rc;
        }
        m->own_engine = 1;
    }
    *out = m;
    return PS_OK;
}

/* Pools first (they cancel transfers and timers on the engine), then
 * the engine if ours. */
void ps_manager_free(struct ps_manager *m)
{
    size_t i;

    if (m == NULL)
        return;
    for (i = 0; i < m->n_pools; i++)
        ps_pool_free(m->pools[i]);
    ps_free(m->pools);
    if (m->own_engine)
        ps_engine_free(m->eng);
    ps_free(m);
}

struct ps_engine *ps_manager_engine(struct ps_manager *m)
{
    return m->eng;
}

/* Binary search by job name: index or -1. */
static long find_pool(const struct ps_manager *m, const char *job)
{
    size_t lo = 0, hi = m->n_pools;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ps_pool_job(m->pools[mid]), job);
        if (c < 0)
            lo = mid + 1;
        else if (c > 0)
            hi = mid;
        else
            return (long)mid;
    }
    return -1;
}

/* qsort order of prepared configs: by job name. */
static int cmp_prepared(const void *a, const void *b)
{
    const struct ps_pool_config *const *x = a, *const *y = b;

    return strcmp(ps_pool_config_job(*x), ps_pool_config_job(*y));
}

int ps_manager_apply_config(struct ps_manager *m,
                            const struct ps_global_config *g,
                            const struct ps_scrape_config *cfgs, size_t n,
                            struct ps_err *e)
{
    struct ps_pool_config **pc = NULL;
    struct ps_pool **np = NULL;
    size_t i, k = 0;
    int rc = PS_OK, first_err = PS_OK;

    if (n > 0) {
        pc = ps_calloc(n, sizeof(*pc));
        np = ps_calloc(n, sizeof(*np));
        if (pc == NULL || np == NULL) {
            ps_free(pc);
            ps_free(np);
            return ps_err_set(e, PS_ENOMEM, "apply_config");
        }
    }
    /* Phase 1: validate and build everything; nothing changes on error. */
    for (i = 0; i < n && rc == PS_OK; i++)
        rc = ps_pool_config_new(&pc[i], g, &cfgs[i], e);
    if (rc == PS_OK && n > 1) {
        qsort(pc, n, sizeof(*pc), cmp_prepared);
        for (i = 1; i < n && rc == PS_OK; i++)
            if (strcmp(ps_pool_config_job(pc[i - 1]),
                       ps_pool_config_job(pc[i])) == 0)
                rc = ps_err_set(e, PS_EINVAL,
                                "found multiple scrape configs with job name "
                                "\"%s\"",
                                ps_pool_config_job(pc[i]));
    }
    if (rc != PS_OK) {
        for (i = 0; i < n; i++)
            ps_pool_config_free(pc[i]);
        ps_free(pc);
        ps_free(np);
        return rc;
    }
    /* Phase 2: removed jobs stop (no staleness, as Prometheus cancels the
     * pool), kept jobs reload (a no-op when unchanged), new jobs start. */
    for (i = 0; i < m->n_pools; i++) {
        const char *job = ps_pool_job(m->pools[i]);
        size_t lo = 0, hi = n;
        int found = 0;
        while (lo < hi && !found) {
            size_t mid = lo + (hi - lo) / 2;
            int c = strcmp(ps_pool_config_job(pc[mid]), job);
            if (c == 0)
                found = 1;
            else if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (!found) {
            ps_pool_free(m->pools[i]);
            m->pools[i] = NULL;
        }
    }
    for (i = 0; i < n; i++) {
        long j = -1;
        size_t q;
        /* linear: entries are NULLed as they are taken */
        for (q = 0; q < m->n_pools && j < 0; q++)
            if (m->pools[q] != NULL &&
                strcmp(ps_pool_job(m->pools[q]),
                       ps_pool_config_job(pc[i])) == 0)
                j = (long)q;
        if (j >= 0) {
            np[k++] = m->pools[j];
            m->pools[j] = NULL;
            rc = ps_pool_reload_prepared(np[k - 1], pc[i], NULL, e);
        } else {
            struct ps_pool *p = NULL;
            rc = ps_pool_new_prepared(&p, m->eng, m->app, pc[i], m->seed, e);
            if (rc == PS_OK)
                np[k++] = p;
        }
        if (rc != PS_OK && first_err == PS_OK)
            first_err = rc;
    }
    /* np was filled in pc order, i.e. sorted by job: binary search holds */
    ps_free(pc);
    ps_free(m->pools);
    m->pools = np;
    m->n_pools = k;
    return first_err;
}

/* Unknown jobs are an error the caller may ignore (Prometheus drops
 * target sets of jobs it has no config for). */
int ps_manager_sync(struct ps_manager *m, const char *job,
                    const struct ps_target_group *groups, size_t n,
                    struct ps_err *e)
{
    long i = find_pool(m, job);

    if (i < 0)
        return ps_err_set(e, PS_EINVAL, "no scrape config for job \"%s\"",
                          job);
    return ps_pool_sync(m->pools[i], groups, n, e);
}

/* Lookups: borrowed pools, valid until the next apply_config/free. */
struct ps_pool *ps_manager_pool(const struct ps_manager *m, const char *job)
{
    long i = find_pool(m, job);

    return i < 0 ? NULL : m->pools[i];
}

size_t ps_manager_npools(const struct ps_manager *m)
{
    return m->n_pools;
}

struct ps_pool *ps_manager_pool_at(const struct ps_manager *m, size_t i)
{
    return i < m->n_pools ? m->pools[i] : NULL;
}

/* Engine passthroughs, so a binding needs only the manager. */
int ps_manager_step(struct ps_manager *m, int timeout_ms, struct ps_err *e)
{
    return ps_engine_step(m->eng, timeout_ms, e);
}

int ps_manager_run(struct ps_manager *m, long duration_ms, struct ps_err *e)
{
    return ps_engine_run(m->eng, duration_ms, e);
}

void ps_manager_stop(struct ps_manager *m)
{
    ps_engine_stop(m->eng);
}
