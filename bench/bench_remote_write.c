/*
 * bench/bench_remote_write.c: the CPU a remote-written sample costs.
 *
 *   encode:          ns per sample for ps_pb_add_series() of a 2,000-sample
 *                    batch of k8s-style series (13 labels, ~330 bytes each,
 *                    one sample per series, as a scrape's batch has);
 *   encode+snappy:   the same plus snappy block compression of the
 *                    WriteRequest: the whole CPU of building a POST body;
 *   append+commit:   ns per sample through the remote write appender by
 *                    cached ref: staging and commit into the shard queue.
 *                    The endpoint is a closed local port, so the first POST
 *                    fails fast and its retry waits out a long backoff;
 *                    the queue is large enough that nothing is dropped, so
 *                    this is the per-sample cost before the batch is cut
 *                    (add the encode + snappy figure for the whole CPU).
 * Each figure is the median of RUNS runs, in thread CPU time (the engine
 * step that lets the first POST fail is excluded). Also prints bytes per
 * sample
 * before and after compression.
 * Usage: bench_remote_write [rounds]
 */
#include "ps_engine.h"
#include "ps_pb.h"
#include "ps_remote_write.h"

#include <snappy-c.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchlib.h"

#define RUNS 7
#define BATCH 2000

/* Thread CPU time, not wall time: the figure is CPU per sample, and it
 * holds up better on a loaded machine. */

/* cAdvisor-like series: 100 pods x 20 metric names, sorted labels. */
static struct ps_labels *make_series(size_t n)
{
    static const char *const metrics[] = {
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_fs_reads_bytes_total",
        "container_fs_writes_bytes_total",
        "container_cpu_cfs_throttled_periods_total",
        "container_memory_cache",
        "container_spec_memory_limit_bytes"};
    struct ps_labels *ls = calloc(n, sizeof(*ls));
    size_t i;

    for (i = 0; i < n; i++) {
        char pod[64], id[128], ip[32], name[96];
        size_t p = i / 20;
        snprintf(pod, sizeof(pod), "api-server-7d9f8c6b5-%05zu", p);
        snprintf(id, sizeof(id), "/kubepods/burstable/pod%08zx-4b1c-4e2a",
                 p * 2654435761u);
        snprintf(ip, sizeof(ip), "10.0.%zu.%zu:10250", p / 250, p % 250);
        snprintf(name, sizeof(name), "k8s_api_%s_prod_0", pod);
        ps_labels_init(&ls[i]);
        ps_labels_add(&ls[i], "__name__", 8, metrics[i % 10],
                      strlen(metrics[i % 10]), PS_LABELS_COPY);
        ps_labels_add(&ls[i], "container", 9, "api", 3, 0);
        ps_labels_add(&ls[i], "cpu", 3, (i / 10) % 2 ? "total" : "cpu00", 5, 0);
        ps_labels_add(&ls[i], "endpoint", 8, "https-metrics", 13, 0);
        ps_labels_add(&ls[i], "id", 2, id, strlen(id), PS_LABELS_COPY);
        ps_labels_add(&ls[i], "image", 5, "registry.local/api:1.42.0", 25, 0);
        ps_labels_add(&ls[i], "instance", 8, ip, strlen(ip), PS_LABELS_COPY);
        ps_labels_add(&ls[i], "job", 3, "kubelet", 7, 0);
        ps_labels_add(&ls[i], "metrics_path", 12, "/metrics/cadvisor", 17, 0);
        ps_labels_add(&ls[i], "name", 4, name, strlen(name), PS_LABELS_COPY);
        ps_labels_add(&ls[i], "namespace", 9, "prod", 4, 0);
        ps_labels_add(&ls[i], "node", 4, "worker-17", 9, 0);
        ps_labels_add(&ls[i], "pod", 3, pod, strlen(pod), PS_LABELS_COPY);
        ps_labels_sort(&ls[i]);
    }
    return ls;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    struct ps_labels *ls = make_series(BATCH);
    struct ps_pb_sample smp[BATCH];
    struct ps_buf pb;
    char *out = NULL;
    size_t out_cap = 0, out_len = 0, i, raw_len = 0;
    double enc[RUNS], encz[RUNS], app[RUNS];
    int r, k;

    if (rounds < 1)
        rounds = 1;
    for (i = 0; i < BATCH; i++)
        smp[i] = (struct ps_pb_sample){(double)i * 1.5 + 0.25,
                                       1700000000000LL + (int64_t)i};
    ps_buf_init(&pb, 0);
    for (r = 0; r < RUNS; r++) {
        double t0, t1, t2 = 0;
        t0 = now_ns();
        for (k = 0; k < rounds; k++) {
            ps_buf_reset(&pb);
            for (i = 0; i < BATCH; i++) {
                struct ps_pb_series s = {ls[i].v, ls[i].n, &smp[i], 1, NULL, 0};
                ps_pb_add_series(&pb, &s);
            }
        }
        t1 = now_ns();
        raw_len = pb.len;
        for (k = 0; k < rounds; k++) {
            size_t max = snappy_max_compressed_length(pb.len);
            double a = now_ns();
            ps_buf_reset(&pb);
            for (i = 0; i < BATCH; i++) {
                struct ps_pb_series s = {ls[i].v, ls[i].n, &smp[i], 1, NULL, 0};
                ps_pb_add_series(&pb, &s);
            }
            if (max > out_cap) {
                out = realloc(out, max);
                out_cap = max;
            }
            out_len = max;
            snappy_compress(pb.p, pb.len, out, &out_len);
            t2 += now_ns() - a;
        }
        enc[r] = (t1 - t0) / rounds / BATCH;
        encz[r] = t2 / rounds / BATCH;
    }

    /* through the appender; a closed port: the POST fails, backs off 60 s */
    {
        struct ps_engine *eng = NULL;
        struct ps_remote_write *rw = NULL;
        struct ps_remote_write_opts o;
        uint64_t *refs = calloc(BATCH, sizeof(*refs));
        memset(&o, 0, sizeof(o));
        o.url = "http://127.0.0.1:9/api/v1/write";
        o.queue.capacity =
            (size_t)(rounds / 4 > 0 ? rounds / 4 : 1) * RUNS * BATCH + BATCH;
        o.queue.max_samples_per_send = BATCH;
        o.queue.min_backoff_ms = 60000;
        o.queue.max_backoff_ms = 60000;
        o.metadata.disable = 1;
        if (ps_engine_new(&eng, NULL, NULL) != PS_OK ||
            ps_remote_write_new(&rw, eng, &o, NULL) != PS_OK) {
            fprintf(stderr, "bench: cannot create the appender\n");
            return 1;
        }
        for (r = 0; r < RUNS; r++) {
            struct ps_appender *a = ps_remote_write_appender(rw);
            double t0 = now_ns(), busy = 0;
            int n = rounds / 4 > 0 ? rounds / 4 : 1;
            for (k = 0; k < n; k++) {
                a->vt->begin(a, NULL, NULL);
                for (i = 0; i < BATCH; i++)
                    a->vt->append(a, refs[i], &ls[i], 1700000000000LL + k,
                                  (double)i, &refs[i], NULL);
                a->vt->commit(a, NULL);
                if (k == 0 && r == 0) { /* let the first POST fail */
                    double b = now_ns();
                    ps_engine_step(eng, 200, NULL);
                    busy += now_ns() - b;
                }
            }
            app[r] = (now_ns() - t0 - busy) / n / BATCH;
        }
        ps_remote_write_free(rw);
        ps_engine_free(eng);
        free(refs);
    }

    printf("remote write bench: %d-sample batches of k8s-style series "
           "(13 labels), CPU time, median of %d runs\n",
           BATCH, RUNS);
    printf("  protobuf encode          %7.1f ns/sample  (%.0f bytes/sample)\n",
           bench_median(enc, RUNS), (double)raw_len / BATCH);
    printf("  encode + snappy          %7.1f ns/sample  (%.0f bytes/sample "
           "on the wire)\n",
           bench_median(encz, RUNS), (double)out_len / BATCH);
    printf("  appender append+commit   %7.1f ns/sample  (staging + queueing)\n",
           bench_median(app, RUNS));
    for (i = 0; i < BATCH; i++)
        ps_labels_cleanup(&ls[i]);
    free(ls);
    free(out);
    ps_buf_cleanup(&pb);
    return 0;
}
