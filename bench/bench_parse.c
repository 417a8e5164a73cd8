/*
 * bench_parse: parse-only throughput of ps_parse against a memchr floor.
 *
 * Usage: bench_parse FILE...
 *
 * For each file, read once into memory, it times three modes:
 *   text       PS_FORMAT_TEXT, default mode
 *   om         PS_FORMAT_OPENMETRICS, default mode
 *   om-strict  PS_FORMAT_OPENMETRICS, strict
 * The OpenMetrics runs use a copy with "# EOF\n" appended when the file has
 * no "# EOF" line, so text-format captures can be fed to both parsers.
 *
 * One pass is a full parse: ps_parse_reset() then ps_parse_next() until
 * PS_ENTRY_EOF, touching every series view so nothing is optimised away.
 * The parser is made once per file x mode and reset between passes, as the
 * scrape loop does (its storage stays grown). A run is enough passes for at
 * least MIN_RUN_NS; the figure is the MEDIAN of NRUNS runs (override with
 * the environment variable BENCH_RUNS, never fewer than 7). The same is done
 * for a bare memchr() newline scan of the same bytes: the floor of touching
 * every byte once (bench/ANCHORS.md section 4).
 *
 * A parse error is not fatal: the row shows the error and the next mode or
 * file is benched. Output is a whitespace-separated, aligned table, one row
 * per file x mode (bench/run_parse.sh reads the "text" rows).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime, strdup */
#endif

#include "ps_parse.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchlib.h"

#define MIN_RUN_NS 50000000.0 /* 50 ms per timed run */
#define NRUNS 7               /* the minimum; BENCH_RUNS may raise it */
#define MAX_RUNS 101

/* Sinks the checksums land in: volatile, so the compiler must compute them. */
static volatile uint64_t sink_u;
static volatile double sink_d;

/* Median of v[0..n); sorts v in place. */

/*
 * Reads a whole file into a malloc'd buffer (one spare byte, so appending
 * "# EOF\n" later is a separate copy, not a realloc of this one). Returns
 * NULL with errno set on failure; *len is written on success only.
 */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL, *nb;
    size_t n = 0, cap = 0, got;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (cap - n < 65536) {
            cap = cap ? cap * 2 : 1 << 20;
            nb = realloc(buf, cap);
            if (nb == NULL)
                goto fail;
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f))
        goto fail;
    fclose(f);
    *len = n;
    return buf;
fail:
    free(buf);
    fclose(f);
    errno = errno ? errno : EIO;
    return NULL;
}

/* 1 if buf holds a line that is exactly "# EOF" (OpenMetrics terminator). */
static int has_eof_line(const char *buf, size_t len)
{
    size_t i = 0;

    while (i < len) {
        const char *eol = memchr(buf + i, '\n', len - i);
        size_t end = eol ? (size_t)(eol - buf) : len;

        if (end - i == 5 && memcmp(buf + i, "# EOF", 5) == 0)
            return 1;
        i = end + 1;
    }
    return 0;
}

/* ---- the two kinds of pass --------------------------------------------- */

/* One memchr newline scan; returns the line count (the checksum). */
static uint64_t pass_memchr(const char *buf, size_t len)
{
    const char *p = buf, *end = buf + len;
    uint64_t lines = 0;

    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p++;
    }
    return lines;
}

struct parse_result {
    int rc;           /* PS_OK or the parser's error */
    uint64_t samples; /* PS_ENTRY_SERIES entries seen */
    uint64_t sum;     /* checksum over the views */
    double vsum;      /* checksum over the sample values */
};

/*
 * One full parse of buf. Touches what a consumer touches (lengths, label
 * counts and every label's lengths, the value and timestamp) but does not
 * read the bytes again: that would bench this loop, not the parser.
 */
static void pass_parse(struct ps_parser *p, const char *buf, size_t len,
                       struct parse_result *r, struct ps_err *e)
{
    enum ps_entry ent;
    uint64_t samples = 0, sum = 0;
    double vsum = 0;
    int rc;

    ps_parse_reset(p, buf, len);
    for (;;) {
        rc = ps_parse_next(p, &ent, e);
        if (rc != PS_OK || ent == PS_ENTRY_EOF)
            break;
        if (ent == PS_ENTRY_SERIES) {
            const struct ps_series_view *s = ps_parse_series(p);
            size_t i;

            samples++;
            sum += s->name.n + s->raw.n + s->nlabels;
            if (s->name.n > 0) /* "never empty", but a bench must not crash */
                sum += (unsigned char)s->name.p[0];
            for (i = 0; i < s->nlabels; i++)
                sum += s->labels[i].name.n + s->labels[i].value.n;
            if (s->has_ts)
                sum += (uint64_t)s->ts_ms;
            if (s->has_exemplar)
                sum += s->exemplar.nlabels;
            vsum += s->value;
        } else if (ent == PS_ENTRY_HELP || ent == PS_ENTRY_TYPE ||
                   ent == PS_ENTRY_UNIT) {
            sum += ps_parse_meta(p)->family.n;
        }
    }
    r->rc = rc;
    r->samples = samples;
    r->sum = sum;
    r->vsum = vsum;
}

/* What a timed run does: either kind of pass over one buffer. */
struct job {
    struct ps_parser *p; /* NULL: memchr scan */
    const char *buf;
    size_t len;
};

/* Runs `passes` passes of j and returns the elapsed nanoseconds. */
static double time_passes(const struct job *j, long passes)
{
    struct parse_result r;
    struct ps_err e;
    double t0 = now_ns();
    long i;

    ps_err_init(&e);
    for (i = 0; i < passes; i++) {
        if (j->p == NULL) {
            sink_u += pass_memchr(j->buf, j->len);
        } else {
            pass_parse(j->p, j->buf, j->len, &r, &e);
            sink_u += r.sum + r.samples;
            sink_d += r.vsum;
        }
    }
    return now_ns() - t0;
}

/*
 * Median nanoseconds per pass over nruns runs of at least MIN_RUN_NS each.
 * The calibration doubles as warm-up (page faults, caches, grown parser
 * storage), and is not counted.
 */
static double bench_job(const struct job *j, int nruns)
{
    double per_pass[MAX_RUNS], t;
    long passes = 1;
    int i;

    for (;;) {
        t = time_passes(j, passes);
        if (t >= MIN_RUN_NS)
            break;
        /* Aim 20% over the floor so clock jitter does not fall short. */
        if (t < MIN_RUN_NS / 100)
            passes *= 10;
        else
            passes = (long)((double)passes * MIN_RUN_NS * 1.2 / t) + 1;
    }
    for (i = 0; i < nruns; i++)
        per_pass[i] = time_passes(j, passes) / (double)passes;
    return bench_median(per_pass, nruns);
}

/* ---- reporting ----------------------------------------------------------- */

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');

    return s ? s + 1 : path;
}

static void print_header(void)
{
    printf("%-24s %-9s %10s %8s %9s %10s %11s %9s\n", "file", "mode", "bytes",
           "samples", "MB/s", "ns/sample", "memchr_MB/s", "x_memchr");
}

struct mode {
    const char *name;
    enum ps_format format;
    int strict;
};

/*
 * Benches one file x mode and prints its row. Never fails the program: an
 * allocation failure or a parse error is shown in the row instead. Returns
 * 1 if the row is an error row.
 */
static int bench_mode(const char *file, const struct mode *m,
                      const char *buf, size_t len, double memchr_ns_per_byte,
                      int nruns)
{
    struct ps_parse_opts o;
    struct ps_parser *p = NULL;
    struct parse_result r;
    struct ps_err e;
    struct job j;
    double ns;
    int rc;

    memset(&o, 0, sizeof(o)); /* zero first: future fields default off */
    o.format = m->format;
    o.strict = m->strict;
    ps_err_init(&e);
    printf("%-24s %-9s %10zu ", file, m->name, len);
    rc = ps_parse_new(&p, buf, len, &o, &e);
    if (rc != PS_OK) {
        printf("error: ps_parse_new: %s: %s\n", ps_errname(rc), e.msg);
        return 1;
    }
    /* An untimed checking pass: is the whole file accepted in this mode? */
    pass_parse(p, buf, len, &r, &e);
    if (r.rc != PS_OK) {
        printf("error: %s: %s (after %llu samples)\n", ps_errname(r.rc),
               e.msg, (unsigned long long)r.samples);
        ps_parse_free(p);
        return 1;
    }
    j.p = p;
    j.buf = buf;
    j.len = len;
    ns = bench_job(&j, nruns);
    printf("%8llu %9.1f ", (unsigned long long)r.samples,
           (double)len / ns * 1e3);
    if (r.samples > 0)
        printf("%10.1f ", ns / (double)r.samples);
    else
        printf("%10s ", "-");
    /* The ratio is per byte, since the OM copy may be 6 bytes longer. */
    printf("%11.1f %9.1f\n", 1e3 / memchr_ns_per_byte,
           ns / (double)len / memchr_ns_per_byte);
    ps_parse_free(p);
    return 0;
}

static int bench_file(const char *path, int nruns)
{
    static const struct mode modes[] = {
        {"text", PS_FORMAT_TEXT, 0},
        {"om", PS_FORMAT_OPENMETRICS, 0},
        {"om-strict", PS_FORMAT_OPENMETRICS, 1},
    };
    static const char eof_line[] = "# EOF\n";
    const char *file = base_name(path);
    char *buf, *om = NULL;
    const char *ombuf;
    size_t len, omlen;
    double memchr_ns;
    struct job j;
    int errors = 0;
    size_t i;

    buf = read_file(path, &len);
    if (buf == NULL) {
        printf("%-24s error: %s: %s\n", file, path, strerror(errno));
        return 1;
    }
    if (len == 0) {
        printf("%-24s error: empty file\n", file);
        free(buf);
        return 1;
    }
    j.p = NULL;
    j.buf = buf;
    j.len = len;
    memchr_ns = bench_job(&j, nruns) / (double)len;

    /* OM needs its terminator; add one (after a newline if the file's last
     * line lacks one) so text captures can be parsed as OM too. */
    ombuf = buf;
    omlen = len;
    if (!has_eof_line(buf, len)) {
        int nl = buf[len - 1] != '\n';

        om = malloc(len + nl + sizeof(eof_line) - 1);
        if (om == NULL) {
            printf("%-24s error: out of memory\n", file);
            free(buf);
            return 1;
        }
        memcpy(om, buf, len);
        if (nl)
            om[len] = '\n';
        memcpy(om + len + nl, eof_line, sizeof(eof_line) - 1);
        ombuf = om;
        omlen = len + (size_t)nl + sizeof(eof_line) - 1;
    }
    for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        int text = modes[i].format == PS_FORMAT_TEXT;

        errors += bench_mode(file, &modes[i], text ? buf : ombuf,
                             text ? len : omlen, memchr_ns, nruns);
        fflush(stdout);
    }
    free(om);
    free(buf);
    return errors;
}

int main(int argc, char **argv)
{
    const char *env = getenv("BENCH_RUNS");
    int nruns = NRUNS, i;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE...\n", argv[0]);
        return 2;
    }
    if (env != NULL && atoi(env) > NRUNS)
        nruns = atoi(env) < MAX_RUNS ? atoi(env) : MAX_RUNS;
    /* An odd run count makes the median one measured run, not a mean. */
    if (nruns % 2 == 0)
        nruns++;
    printf("# bench_parse: median of %d runs, each >= %.0f ms; "
           "MB/s = 1e6 bytes/s\n",
           nruns, MIN_RUN_NS / 1e6);
    print_header();
    for (i = 1; i < argc; i++)
        bench_file(argv[i], nruns);
    /* Parse errors are results, not failures: exit 0 so make bench goes on. */
    return 0;
}
