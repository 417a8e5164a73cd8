/*
 * spec/c/test_pb.c: the remote-write protobuf encoder (ps_pb). TAP output.
 *
 * Byte-exact checks against messages computed by hand from the wire format
 * (each one spelled out field by field below), then round trips through
 * the independent decoder in rw_pbdec.h, caps and allocation failures.
 */
#include "ps_appender.h"
#include "ps_buf.h"
#include "ps_core.h"
#include "ps_pb.h"
#include "rw_pbdec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_test, n_fail;

static void ok(int cond, const char *desc)
{
    n_test++;
    if (!cond)
        n_fail++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n_test, desc);
    fflush(stdout);
}

static int bytes_eq(const struct ps_buf *b, const unsigned char *want, size_t n)
{
    size_t i;

    if (b->len != n) {
        printf("# length %zu, want %zu\n", b->len, n);
        return 0;
    }
    for (i = 0; i < n; i++) {
        if ((unsigned char)b->p[i] != want[i]) {
            printf("# byte %zu: %02x, want %02x\n", i, (unsigned char)b->p[i],
                   want[i]);
            return 0;
        }
    }
    return 1;
}

#define LBL(n, v)                                                              \
    {                                                                          \
        n, sizeof(n) - 1, v, sizeof(v) - 1                                     \
    }

/* Renders b through the test decoder into out (cap bytes). */
static int decode(const struct ps_buf *b, char *out, size_t cap)
{
    struct rw_text t = {out, 0, cap};

    out[0] = '\0';
    return rw_decode(b->p, b->len, &t);
}

static void test_mtype(void)
{
    ok(ps_pb_mtype(PS_MTYPE_UNKNOWN) == 0 &&
           ps_pb_mtype(PS_MTYPE_COUNTER) == 1 &&
           ps_pb_mtype(PS_MTYPE_GAUGE) == 2 &&
           ps_pb_mtype(PS_MTYPE_HISTOGRAM) == 3 &&
           ps_pb_mtype(PS_MTYPE_GAUGEHISTOGRAM) == 4 &&
           ps_pb_mtype(PS_MTYPE_SUMMARY) == 5 &&
           ps_pb_mtype(PS_MTYPE_INFO) == 6 &&
           ps_pb_mtype(PS_MTYPE_STATESET) == 7 &&
           ps_pb_mtype(PS_MTYPE_UNTYPED) == 0,
       "MetricType mapping (untyped is UNKNOWN)");
}

static void test_series_bytes(void)
{
    /*
     * TimeSeries{labels: [__name__="up", job="a"],
     *            samples: [{value: 1.0, timestamp: 1000}]}
     *   Label 1: 0a 08 "__name__"  12 02 "up"   -> 14 bytes
     *   Label 2: 0a 03 "job"       12 01 "a"    ->  8 bytes
     *   Sample:  09 <1.0 LE: 00 00 00 00 00 00 f0 3f>  10 e8 07  -> 12
     *   TimeSeries payload: (2+14) + (2+8) + (2+12) = 40 = 0x28
     *   WriteRequest field 1: 0a 28 ...
     */
    static const unsigned char want[] = {
        0x0a, 0x28, /* series */
        0x0a, 0x0e, 0x0a, 0x08, '_',  '_',  'n',  'a',  'm',  'e',
        '_',  '_',  0x12, 0x02, 'u',  'p',                         /* label 1 */
        0x0a, 0x08, 0x0a, 0x03, 'j',  'o',  'b',  0x12, 0x01, 'a', /* label 2 */
        0x12, 0x0c, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0,
        0x3f, 0x10, 0xe8, 0x07}; /* sample */
    struct ps_label l[] = {LBL("__name__", "up"), LBL("job", "a")};
    struct ps_pb_sample s = {1.0, 1000};
    struct ps_pb_series ser = {l, 2, &s, 1, NULL, 0};
    struct ps_buf b;

    ps_buf_init(&b, 0);
    ok(ps_pb_add_series(&b, &ser) == PS_OK && bytes_eq(&b, want, sizeof(want)),
       "series: bytes as computed by hand");
    ok(ps_pb_series_size(&ser) == sizeof(want), "series: size matches");
    ps_buf_cleanup(&b);
}

static void test_defaults_bytes(void)
{
    /*
     * Proto3 defaults are omitted: a sample {0.0, 0} is an empty message
     * (12 00); -0.0 keeps its sign bit (09 00..00 80); a negative
     * timestamp is a 10-byte two's complement varint (-1: ff x9, 01).
     */
    struct ps_label l = {"a", 1, "", 0}; /* empty value: omitted */
    struct ps_pb_sample s[3] = {{0.0, 0}, {-0.0, 0}, {0.0, -1}};
    struct ps_pb_series ser = {&l, 1, s, 3, NULL, 0};
    static const unsigned char
        full[] = {0x0a, 0x1f,                  /* 5 + 2 + 11 + 13 = 31 */
                  0x0a, 0x03, 0x0a, 0x01, 'a', /* label */
                  0x12, 0x00,                  /* {0, 0} */
                  0x12, 0x09, 0x09, 0,    0,    0,    0,
                  0,    0,    0,    0x80, /* -0.0 */
                  0x12, 0x0b, 0x10, 0xff, 0xff, 0xff, 0xff,
                  0xff, 0xff, 0xff, 0xff, 0xff, 0x01}; /* ts -1 */
    struct ps_buf b;

    ps_buf_init(&b, 0);
    ok(ps_pb_add_series(&b, &ser) == PS_OK && bytes_eq(&b, full, sizeof(full)),
       "defaults omitted, -0.0 and negative timestamps exact");
    ps_buf_cleanup(&b);
}

static void test_metadata_bytes(void)
{
    /*
     * MetricMetadata{type: COUNTER, metric_family_name:
     * "http_requests_total" (19), help: "Total requests." (15)}:
     *   08 01  12 13 <19>  22 0f <15>  -> 2 + 21 + 17 = 40 = 0x28
     *   WriteRequest field 3: 1a 28 ...; the empty unit is omitted.
     */
    static const unsigned char want[] = {
        0x1a, 0x28, 0x08, 0x01, 0x12, 0x13, 'h', 't', 't', 'p', '_',
        'r',  'e',  'q',  'u',  'e',  's',  't', 's', '_', 't', 'o',
        't',  'a',  'l',  0x22, 0x0f, 'T',  'o', 't', 'a', 'l', ' ',
        'r',  'e',  'q',  'u',  'e',  's',  't', 's', '.'};
    struct ps_pb_metadata m = {PS_MTYPE_COUNTER,
                               {"http_requests_total", 19},
                               {"Total requests.", 15},
                               {"", 0}};
    struct ps_buf b;
    char txt[512];

    ps_buf_init(&b, 0);
    ok(ps_pb_add_metadata(&b, &m) == PS_OK && bytes_eq(&b, want, sizeof(want)),
       "metadata: bytes as computed by hand");
    ok(decode(&b, txt, sizeof(txt)) == 0 &&
           strcmp(txt, "M type=1 family=http_requests_total "
                       "help=Total requests. unit=\n") == 0,
       "metadata: decodes back");
    ps_buf_reset(&b);
    m.type = PS_MTYPE_HISTOGRAM;
    m.family = (struct ps_str){"lat_seconds", 11};
    m.help = (struct ps_str){"", 0};
    m.unit = (struct ps_str){"seconds", 7};
    ok(ps_pb_add_metadata(&b, &m) == PS_OK &&
           decode(&b, txt, sizeof(txt)) == 0 &&
           strcmp(txt, "M type=3 family=lat_seconds help= unit=seconds\n") == 0,
       "metadata: histogram with a unit");
    ps_buf_cleanup(&b);
}

static void test_exemplar_roundtrip(void)
{
    struct ps_label l[] = {LBL("__name__", "lat_bucket"), LBL("le", "0.5")};
    struct ps_label xl[] = {LBL("trace_id", "abc123")};
    struct ps_pb_sample s[2] = {{3, 1000}, {ps_stale_nan(), 2000}};
    struct ps_pb_exemplar x = {xl, 1, 0.25, 1500};
    struct ps_pb_series ser = {l, 2, s, 2, &x, 1};
    struct ps_buf b;
    char txt[512];

    ps_buf_init(&b, 0);
    ok(ps_pb_add_series(&b, &ser) == PS_OK &&
           decode(&b, txt, sizeof(txt)) == 0 &&
           strcmp(txt, "S {__name__=\"lat_bucket\",le=\"0.5\"} 1000=3 "
                       "2000=stale ex{trace_id=\"abc123\"}:0.25@1500\n") == 0,
       "exemplar and staleness marker round trip");
    if (strstr(txt, "stale") == NULL)
        printf("# got: %s", txt);
    ok(b.len == ps_pb_series_size(&ser), "exemplar: size matches");
    ps_buf_cleanup(&b);
}

/* Long values (multi-byte length varints), many samples, several series
 * concatenated into one request. */
static void test_big_roundtrip(void)
{
    char val[300], want[32768], got[32768];
    struct ps_label l[3];
    struct ps_pb_sample s[200];
    struct ps_pb_series ser;
    struct ps_buf b;
    size_t i, k, wl = 0, expect_len = 0;
    int good = 1;

    memset(val, 'v', sizeof(val));
    l[0] = (struct ps_label){"__name__", 8, "big", 3};
    l[1] = (struct ps_label){"long", 4, val, sizeof(val)};
    l[2] = (struct ps_label){"z", 1, "1", 1};
    ps_buf_init(&b, 0);
    for (k = 0; k < 3; k++) {
        for (i = 0; i < 200; i++) {
            s[i].ts_ms = 1700000000000LL + (int64_t)(i * 15000);
            s[i].value = (double)i * 0.5 - 7 + (double)k;
        }
        ser = (struct ps_pb_series){l, 3, s, 200, NULL, 0};
        expect_len += ps_pb_series_size(&ser);
        if (ps_pb_add_series(&b, &ser) != PS_OK)
            good = 0;
        wl += (size_t)snprintf(want + wl, sizeof(want) - wl,
                               "S {__name__=\"big\",long=\"%.300s\",z=\"1\"}",
                               val);
        for (i = 0; i < 200; i++)
            wl += (size_t)snprintf(want + wl, sizeof(want) - wl, " %lld=%.17g",
                                   (long long)s[i].ts_ms, s[i].value);
        wl += (size_t)snprintf(want + wl, sizeof(want) - wl, "\n");
    }
    ok(good && b.len == expect_len, "three big series: sizes add up");
    ok(decode(&b, got, sizeof(got)) == 0 && strcmp(got, want) == 0,
       "three big series: decode back exactly");
    ps_buf_cleanup(&b);
}

static void test_cap_and_alloc(void)
{
    struct ps_label l[] = {LBL("__name__", "up"), LBL("job", "a")};
    struct ps_pb_sample s[64];
    struct ps_pb_series ser = {l, 2, s, 64, NULL, 0};
    struct ps_buf b;
    long n;
    int all_enomem = 1, done = 0, untouched = 1;
    size_t i;

    for (i = 0; i < 64; i++)
        s[i] = (struct ps_pb_sample){(double)i, (int64_t)i * 1000};
    ps_buf_init(&b, 100);
    ps_buf_adds(&b, "xy");
    ok(ps_pb_add_series(&b, &ser) == PS_ELIMIT && b.len == 2 &&
           strcmp(ps_buf_cstr(&b), "xy") == 0,
       "cap: PS_ELIMIT leaves the buffer as it was");
    ps_buf_cleanup(&b);

    for (n = 0; n < 50 && !done; n++) {
        int rc;
        ps_buf_init(&b, 0);
        ps_alloc_fail_after(n);
        rc = ps_pb_add_series(&b, &ser);
        ps_alloc_fail_after(-1);
        if (rc == PS_OK)
            done = 1;
        else if (rc != PS_ENOMEM)
            all_enomem = 0;
        else if (b.len != 0)
            untouched = 0;
        ps_buf_cleanup(&b);
    }
    ok(done && all_enomem && untouched,
       "allocation failures: PS_ENOMEM, buffer untouched, then success");
}

int main(void)
{
    test_mtype();
    test_series_bytes();
    test_defaults_bytes();
    test_metadata_bytes();
    test_exemplar_roundtrip();
    test_big_roundtrip();
    test_cap_and_alloc();
    printf("1..%d\n", n_test);
    return n_fail != 0;
}
