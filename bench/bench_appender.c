/*
 * bench/bench_appender.c: the cost of appending a sample.
 *
 *   memory store, by ref:  ns per append() through a cached ref, and ns per
 *                          sample for the commit that publishes them;
 *   memory store, ref 0:   ns per append() that hashes and looks labels up;
 *   batch appender:        ns per sample for append + commit + pop + free,
 *                          i.e. everything the C shim costs before Lua.
 * Each figure is the median of RUNS runs of ROUNDS scrapes of NSERIES series.
 * Usage: bench_appender [nseries] [rounds]
 */
#include "ps_appender_batch.h"
#include "ps_appender_mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchlib.h"

#define RUNS 7

/* Label sets like a node exporter's: name, job, instance, two more. */
static struct ps_labels *make_series(size_t n, char **store)
{
    struct ps_labels *ls = calloc(n, sizeof(*ls));
    char *s = malloc(n * 64);
    size_t i;

    for (i = 0; i < n; i++) {
        char *name = s + i * 64, *val = name + 32;

        snprintf(name, 32, "metric_%zu", i / 10);
        snprintf(val, 32, "%zu", i % 10);
        ps_labels_init(&ls[i]);
        ps_labels_add(&ls[i], "__name__", 8, name, strlen(name), 0);
        ps_labels_add(&ls[i], "job", 3, "node", 4, 0);
        ps_labels_add(&ls[i], "instance", 8, "host-1:9100", 11, 0);
        ps_labels_add(&ls[i], "cpu", 3, val, strlen(val), 0);
        ps_labels_add(&ls[i], "mode", 4, "idle", 4, 0);
        ps_labels_sort(&ls[i]);
    }
    *store = s;
    return ls;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : 100000;
    int rounds = argc > 2 ? atoi(argv[2]) : 20, run, k;
    double app[RUNS], com[RUNS], miss[RUNS], bat[RUNS];
    uint64_t *refs = calloc(n, sizeof(*refs));
    char *strs;
    struct ps_labels *ls = make_series(n, &strs);
    struct ps_err e;
    size_t i;

    for (run = 0; run < RUNS; run++) {
        struct ps_appender_mem *s;
        struct ps_appender *a;
        double t0, t_app = 0, t_com = 0;

        ps_appender_mem_new(&s, NULL, &e);
        a = ps_appender_mem_appender(s);
        memset(refs, 0, n * sizeof(*refs));
        /* first scrape: ref 0, every series created */
        a->vt->begin(a, NULL, &e);
        for (i = 0; i < n; i++)
            a->vt->append(a, 0, &ls[i], 0, 1, &refs[i], &e);
        a->vt->commit(a, &e);
        /* ref-0 lookups of known series (a scrape-cache miss) */
        t_app = 0;
        for (k = 1; k <= 5; k++) {
            a->vt->begin(a, NULL, &e);
            t0 = now_ns();
            for (i = 0; i < n; i++)
                a->vt->append(a, 0, &ls[i], k, 1, &refs[i], &e);
            t_app += now_ns() - t0;
            a->vt->commit(a, &e);
        }
        miss[run] = t_app / ((double)n * 5);
        t_app = 0;
        for (k = 6; k < rounds + 6; k++) {
            a->vt->begin(a, NULL, &e);
            t0 = now_ns();
            for (i = 0; i < n; i++)
                a->vt->append(a, refs[i], NULL, k * 15000, (double)i, &refs[i],
                              &e);
            t_app += now_ns() - t0;
            t0 = now_ns();
            a->vt->commit(a, &e);
            t_com += now_ns() - t0;
        }
        app[run] = t_app / ((double)n * rounds);
        com[run] = t_com / ((double)n * rounds);
        ps_appender_mem_free(s);
    }
    for (run = 0; run < RUNS; run++) {
        struct ps_appender_batch *q;
        struct ps_appender *a;
        struct ps_batch *b;
        double t0, t = 0;

        ps_appender_batch_new(&q, NULL, &e);
        a = ps_appender_batch_appender(q);
        memset(refs, 0, n * sizeof(*refs));
        a->vt->begin(a, NULL, &e);
        for (i = 0; i < n; i++)
            a->vt->append(a, 0, &ls[i], 0, 1, &refs[i], &e);
        a->vt->commit(a, &e);
        while (ps_appender_batch_pop(q, &b))
            ps_batch_free(b);
        for (k = 1; k <= rounds; k++) {
            t0 = now_ns();
            a->vt->begin(a, ls, &e);
            for (i = 0; i < n; i++)
                a->vt->append(a, refs[i], NULL, k * 15000, (double)i, &refs[i],
                              &e);
            a->vt->commit(a, &e);
            while (ps_appender_batch_pop(q, &b))
                ps_batch_free(b);
            t += now_ns() - t0;
        }
        bat[run] = t / ((double)n * rounds);
        ps_appender_batch_free(q);
    }
    printf("appender bench: %zu series x %d scrapes, median of %d runs\n", n,
           rounds, RUNS);
    printf("  memory store  append by ref      %7.2f ns/sample\n",
           bench_median(app, RUNS));
    printf("  memory store  commit             %7.2f ns/sample\n",
           bench_median(com, RUNS));
    printf("  memory store  append ref 0 (hit) %7.2f ns/sample\n",
           bench_median(miss, RUNS));
    printf("  batch shim    append+commit+pop  %7.2f ns/sample\n",
           bench_median(bat, RUNS));
    for (i = 0; i < n; i++)
        ps_labels_cleanup(&ls[i]);
    free(ls);
    free(strs);
    free(refs);
    return 0;
}
