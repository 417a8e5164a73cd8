/*
 * bench/benchlib.h: what the C benchmarks share, header-only: a monotonic
 * clock in nanoseconds and the median the figures are quoted as (these
 * machines are noisy, so every bench prints medians of several runs).
 */
#ifndef PS_BENCHLIB_H
#define PS_BENCHLIB_H

#include <stdlib.h>
#include <time.h>

static inline double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static inline int bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Sorts v in place; the middle value (mean of the two for even n). */
static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), bench_cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#endif
