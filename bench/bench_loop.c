/*
 * bench/bench_loop.c: the cost of one scraped sample in the loop, without
 * HTTP: parse + scrape cache + staleness + memory store, through
 * ps_loop_scrape_body() on bodies read from files.
 *
 * Per file: one loop on a fresh memory store, two warm-up scrapes (the
 * first fills the cache, the second is steady), then ROUNDS measured
 * scrapes of the same body at later timestamps (a static target: every
 * series a cache hit). Prints ns per sample, the median of RUNS runs.
 *
 *   bench_loop [-f] [-r ROUNDS] [-n RUNS] FILE...
 *     -f: full_parse (no fast lines); ROUNDS 20, RUNS 5 by default
 *
 * Instruction counts (what docs/bench.md quotes) come from callgrind with
 * collection limited to the measured scrapes:
 *   valgrind --tool=callgrind --toggle-collect=measured_scrapes \
 *       build/bench/bench_loop -n 1 -r 5 FILE
 * then Ir / (5 x samples per scrape); bench/run_loop.sh does it.
 */
#include "ps_appender_mem.h"
#include "ps_engine.h"
#include "ps_loop.h"
#include "ps_target.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchlib.h"

#define MAX_RUNS 15

/* Reads a whole file; NULL (with a message) on failure. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0 || (buf = malloc((size_t)n + 1)) == NULL ||
        fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "bench_loop: cannot read %s\n", path);
        free(buf);
        if (f != NULL)
            fclose(f);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* The scrapes callgrind counts (--toggle-collect): kept out of line. */
__attribute__((noinline)) void measured_scrapes(struct ps_loop *l,
                                                const char *body, size_t len,
                                                int rounds, int64_t t0);
__attribute__((noinline)) void measured_scrapes(struct ps_loop *l,
                                                const char *body, size_t len,
                                                int rounds, int64_t t0)
{
    int k;

    for (k = 0; k < rounds; k++)
        ps_loop_scrape_body(l, body, len, "text/plain; version=0.0.4",
                            t0 + k * 1000);
}

/* One run over one body: ns per sample of the measured scrapes, or -1. */
static double run_once(struct ps_engine *eng, const struct ps_target *tg,
                       const struct ps_loop_config *cfg, const char *body,
                       size_t len, int rounds, uint64_t *samples,
                       uint64_t *fast)
{
    struct ps_appender_mem *s = NULL;
    struct ps_loop *l = NULL;
    struct ps_target_status st;
    struct ps_err e;
    double t0, dt;

    ps_err_init(&e);
    if (ps_appender_mem_new(&s, NULL, &e) != PS_OK ||
        ps_loop_new(&l, eng, ps_appender_mem_appender(s), cfg, tg, 0, NULL,
                    &e) != PS_OK) {
        fprintf(stderr, "bench_loop: %s\n", e.msg);
        ps_appender_mem_free(s);
        return -1;
    }
    ps_loop_scrape_body(l, body, len, "text/plain", 1000000);
    ps_loop_scrape_body(l, body, len, "text/plain", 1001000);
    t0 = now_ns();
    measured_scrapes(l, body, len, rounds, 1002000);
    dt = now_ns() - t0;
    ps_loop_status(l, &st);
    if (st.last_error[0] != '\0' || st.last_samples == 0) {
        fprintf(stderr, "bench_loop: scrape failed: %s\n", st.last_error);
        dt = -1;
    }
    *samples = st.last_samples;
    *fast = st.last_fast_samples;
    ps_loop_free(l);
    ps_appender_mem_free(s);
    return dt < 0 ? -1 : dt / ((double)st.last_samples * rounds);
}

int main(int argc, char **argv)
{
    struct ps_loop_config cfg;
    struct ps_target tg;
    struct ps_labels tl;
    struct ps_target_defaults d;
    struct ps_engine *eng = NULL;
    struct ps_err e;
    int rounds = 20, runs = 5, i, run, status = 0;

    memset(&cfg, 0, sizeof(cfg));
    cfg.job = "bench";
    cfg.honor_timestamps = 1;
    cfg.fallback_format = -1;
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-f") == 0)
            cfg.full_parse = 1;
        else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else
            break;
    }
    if (i >= argc || rounds <= 0 || runs <= 0 || runs > MAX_RUNS) {
        fprintf(stderr,
                "usage: bench_loop [-f] [-r ROUNDS] [-n RUNS] FILE...\n");
        return 2;
    }
    ps_err_init(&e);
    ps_labels_init(&tl);
    ps_target_init(&tg);
    memset(&d, 0, sizeof(d));
    d.job = "bench";
    d.interval_ms = 1000;
    d.timeout_ms = 1000;
    ps_labels_add(&tl, "__address__", 11, "127.0.0.1:9", 11, 0);
    if (ps_target_populate(&tg, &tl, NULL, &d, NULL, NULL, &e) != PS_OK ||
        ps_engine_new(&eng, NULL, &e) != PS_OK) {
        fprintf(stderr, "bench_loop: %s\n", e.msg);
        return 1;
    }
    for (; i < argc; i++) {
        double ns[MAX_RUNS];
        uint64_t samples = 0, fast = 0;
        size_t len;
        char *body = slurp(argv[i], &len);

        if (body == NULL) {
            status = 1;
            continue;
        }
        for (run = 0; run < runs; run++) {
            ns[run] = run_once(eng, &tg, &cfg, body, len, rounds, &samples,
                               &fast);
            if (ns[run] < 0)
                break;
        }
        if (run < runs) {
            status = 1;
        } else {
            qsort(ns, (size_t)runs, sizeof(ns[0]), bench_cmp);
            printf("%-40s %6llu samples/scrape (%llu fast)  %7.1f "
                   "ns/sample%s\n",
                   argv[i], (unsigned long long)samples,
                   (unsigned long long)fast, ns[runs / 2],
                   cfg.full_parse ? " (full parse)" : "");
        }
        free(body);
    }
    ps_engine_free(eng);
    ps_target_cleanup(&tg);
    ps_labels_cleanup(&tl);
    return status;
}
