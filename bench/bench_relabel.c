/*
 * bench_relabel: ns per ps_relabel_apply for
 *   (a) a Kubernetes-style target relabel set, 10 rules over 30 labels;
 *   (b) a metric relabel set of 3 drop/keep rules over a 10-label series.
 * Each figure is the median of RUNS runs of ITERS applies, with one compiled
 * rule set and one scratch reused, as the scrape loop will use them.
 * Usage: bench_relabel [runs]   (default 7)
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif

#include "ps_core.h"
#include "ps_labels.h"
#include "ps_relabel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchlib.h"

#define S(lit)                                                                 \
    {                                                                          \
        lit, sizeof(lit) - 1                                                   \
    }
#define NONE                                                                   \
    {                                                                          \
        NULL, 0                                                                \
    }
#define MAX_RUNS 31

static const struct ps_str k_scrape[] = {
    S("__meta_kubernetes_pod_annotation_prometheus_io_scrape")};
static const struct ps_str k_path[] = {
    S("__meta_kubernetes_pod_annotation_prometheus_io_path")};
static const struct ps_str k_addr_port[] = {
    S("__address__"), S("__meta_kubernetes_pod_annotation_prometheus_io_port")};
static const struct ps_str k_ns[] = {S("__meta_kubernetes_namespace")};
static const struct ps_str k_pod[] = {S("__meta_kubernetes_pod_name")};
static const struct ps_str k_cont[] = {
    S("__meta_kubernetes_pod_container_name")};
static const struct ps_str k_node[] = {S("__meta_kubernetes_pod_node_name")};
static const struct ps_str k_addr[] = {S("__address__")};
static const struct ps_str k_phase[] = {S("__meta_kubernetes_pod_phase")};

static const struct ps_relabel_config k8s[] = {
    {k_scrape, 1, NONE, S("true"), 0, NONE, NONE, S("keep"), 0},
    {k_path, 1, NONE, S("(.+)"), 0, S("__metrics_path__"), NONE, NONE, 0},
    {k_addr_port, 2, NONE, S("([^:]+)(?::\\d+)?;(\\d+)"), 0, S("__address__"),
     S("$1:$2"), NONE, 0},
    {NULL, 0, NONE, S("__meta_kubernetes_pod_label_(.+)"), 0, NONE, NONE,
     S("labelmap"), 0},
    {k_ns, 1, NONE, NONE, 0, S("namespace"), NONE, NONE, 0},
    {k_pod, 1, NONE, NONE, 0, S("pod"), NONE, NONE, 0},
    {k_cont, 1, NONE, NONE, 0, S("container"), NONE, NONE, 0},
    {k_node, 1, NONE, NONE, 0, S("node"), NONE, NONE, 0},
    {k_addr, 1, NONE, NONE, 4, S("__tmp_hash"), NONE, S("hashmod"), 0},
    {k_phase, 1, NONE, S("Succeeded|Failed"), 0, NONE, NONE, S("drop"), 0},
};

static const char *const k8s_labels[][2] = {
    {"__address__", "10.244.3.17:8080"},
    {"__scheme__", "http"},
    {"__metrics_path__", "/metrics"},
    {"__scrape_interval__", "30s"},
    {"__scrape_timeout__", "10s"},
    {"job", "kubernetes-pods"},
    {"__meta_kubernetes_namespace", "payments"},
    {"__meta_kubernetes_pod_name", "checkout-api-7d9f8c6b5-x2kqp"},
    {"__meta_kubernetes_pod_ip", "10.244.3.17"},
    {"__meta_kubernetes_pod_node_name",
     "ip-10-0-12-34.eu-west-1.compute.internal"},
    {"__meta_kubernetes_pod_host_ip", "10.0.12.34"},
    {"__meta_kubernetes_pod_uid", "6f1c2a9e-4b7d-4e0a-9d1f-2b3c4d5e6f70"},
    {"__meta_kubernetes_pod_phase", "Running"},
    {"__meta_kubernetes_pod_ready", "true"},
    {"__meta_kubernetes_pod_container_name", "checkout-api"},
    {"__meta_kubernetes_pod_container_image",
     "registry.example.com/checkout-api:1.42.0"},
    {"__meta_kubernetes_pod_container_port_name", "http-metrics"},
    {"__meta_kubernetes_pod_container_port_number", "8080"},
    {"__meta_kubernetes_pod_container_port_protocol", "TCP"},
    {"__meta_kubernetes_pod_container_init", "false"},
    {"__meta_kubernetes_pod_controller_kind", "ReplicaSet"},
    {"__meta_kubernetes_pod_controller_name", "checkout-api-7d9f8c6b5"},
    {"__meta_kubernetes_pod_label_app", "checkout-api"},
    {"__meta_kubernetes_pod_label_pod_template_hash", "7d9f8c6b5"},
    {"__meta_kubernetes_pod_label_team", "payments"},
    {"__meta_kubernetes_pod_labelpresent_app", "true"},
    {"__meta_kubernetes_pod_annotation_prometheus_io_scrape", "true"},
    {"__meta_kubernetes_pod_annotation_prometheus_io_port", "9102"},
    {"__meta_kubernetes_pod_annotation_prometheus_io_path",
     "/stats/prometheus"},
    {"__meta_kubernetes_pod_annotationpresent_prometheus_io_scrape", "true"},
};

static const struct ps_str m_name[] = {S("__name__")};

static const struct ps_relabel_config metric[] = {
    {m_name, 1, NONE, S("go_gc_.*|process_.*|etcd_debugging_.*"), 0, NONE, NONE,
     S("drop"), 0},
    {m_name, 1, NONE, S("http_.*|node_.*|container_.*|checkout_.*"), 0, NONE,
     NONE, S("keep"), 0},
    {NULL, 0, NONE, S("pod_template_hash|uid|id"), 0, NONE, NONE,
     S("labeldrop"), 0},
};

static const char *const metric_labels[][2] = {
    {"__name__", "http_server_requests_seconds_bucket"},
    {"namespace", "payments"},
    {"pod", "checkout-api-7d9f8c6b5-x2kqp"},
    {"container", "checkout-api"},
    {"method", "POST"},
    {"uri", "/api/v1/orders/{id}"},
    {"status", "200"},
    {"outcome", "SUCCESS"},
    {"le", "0.25"},
    {"pod_template_hash", "7d9f8c6b5"},
};

/* Median ns per apply, or -1 on error. */
static double bench(const char *name, const struct ps_relabel_config *cfg,
                    size_t ncfg, const char *const (*lbl)[2], size_t nl,
                    long iters, int runs)
{
    struct ps_relabel *r;
    struct ps_relabel_scratch *s;
    struct ps_labels in, out;
    struct ps_err e;
    double t[MAX_RUNS];
    size_t i, drop_at = 0;
    int k;

    ps_err_init(&e);
    if (ps_relabel_compile(&r, cfg, ncfg, 0, &e) != PS_OK) {
        fprintf(stderr, "%s: %s\n", name, e.msg);
        return -1;
    }
    if (ps_relabel_scratch_new(&s) != PS_OK)
        return -1;
    ps_labels_init(&in);
    ps_labels_init(&out);
    for (i = 0; i < nl; i++)
        ps_labels_add(&in, lbl[i][0], strlen(lbl[i][0]), lbl[i][1],
                      strlen(lbl[i][1]), 0);
    ps_labels_sort(&in); /* as the parser and the cache will hand them */
    for (k = -1; k < runs; k++) { /* run -1 warms caches and the JIT */
        double t0 = now_ns();
        long it;

        for (it = 0; it < iters; it++)
            if (ps_relabel_apply(r, s, &in, &out, &drop_at, &e) != PS_OK) {
                fprintf(stderr, "%s: %s\n", name, e.msg);
                return -1;
            }
        if (k >= 0)
            t[k] = (now_ns() - t0) / (double)iters;
    }
    qsort(t, (size_t)runs, sizeof(*t), bench_cmp);
    printf("%-44s %4zu rules %4zu labels -> %3zu labels%s %8.0f ns/apply\n",
           name, ncfg, nl, out.n,
           drop_at == PS_RELABEL_KEPT ? "" : " (dropped)", t[runs / 2]);
    ps_labels_cleanup(&in);
    ps_labels_cleanup(&out);
    ps_relabel_scratch_free(s);
    ps_relabel_free(r);
    return t[runs / 2];
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 7;

    if (runs < 1 || runs > MAX_RUNS)
        runs = 7;
    printf("== bench_relabel (median of %d runs)\n", runs);
    if (bench("(a) kubernetes target relabel", k8s, 10, k8s_labels, 30, 100000,
              runs) < 0 ||
        bench("(b) metric relabel, drop/keep/labeldrop", metric, 3,
              metric_labels, 10, 500000, runs) < 0)
        return 1;
    return 0;
}
