/*
 * fuzz_response: libFuzzer target for the response path. Each input runs
 * one real scrape loop (ps_engine + ps_loop + its cache + metric relabeling
 * + a memory appender) through 1 to 3 scrapes whose HTTP responses come
 * from the input, through the real libcurl code: status line, headers,
 * Content-Length or chunked framing, Content-Encoding gzip (decoded by
 * curl), redirects, body_size_limit, Content-Type -> format, parse,
 * honor_labels, metric relabeling, limits, staleness across scrapes and
 * the report series.
 *
 * Fake transport: the ps_http test seam (ps_http_opts.test_unix_socket,
 * see docs/http.md) sends every connection libcurl opens, redirects
 * included, to a listening abstract AF_UNIX socket of the harness. Between
 * engine steps the harness accepts what curl connected, writes the next
 * response into it in one go and shuts it down for writing, so curl reads
 * the response and then EOF. No thread is needed: a response is capped
 * well below the socket buffer. Responses are served in order, one per
 * connection (a redirect or a reconnect takes the next); when none is left
 * a connection gets EOF at once (an empty reply).
 *
 * (The first design handed curl one end of a pre-filled socketpair through
 * CURLOPT_OPENSOCKETFUNCTION + CURL_SOCKOPT_ALREADY_CONNECTED; libcurl
 * 7.88 calls connect() on such a socket anyway, curl issue #10626, fixed
 * in 8.0, so a unix socket path is what works on every version.)
 *
 * Input layout (bit 0 is the least significant):
 *   byte 0  bits 0-1  scrapes: 1, 2, 3, 3
 *           bit 2     honor_labels
 *           bit 3     honor_timestamps
 *           bit 4     track_timestamps_staleness
 *           bit 5     extra_scrape_metrics
 *           bit 6     enable_compression: false (gzip bodies reach the
 *                     parser undecoded)
 *           bit 7     metric_name_validation_scheme: legacy
 *   byte 1  bits 0-2  metric_relabel_configs: rule set 0 (none) .. 7
 *           bits 3-4  body_size_limit: none, 100, 2000, 30000 bytes
 *           bits 5-6  sample_limit: none, 1, 4, 50
 *           bit 7     fallback_scrape_protocol: PrometheusText0.0.4
 *   byte 2  bits 0-1  label_limit: none, 2, 4, 8
 *           bits 2-3  label_name_length_limit: none, 3, 8, 32
 *           bits 4-5  label_value_length_limit: none, 3, 8, 32
 *           bit 6     follow_redirects: false
 *           bit 7     a target with labels the exposed ones clash with
 *   then    responses separated by SEP ("\n--8<--\n"), at most MAX_RESP;
 *           each one is:
 *     byte 0  bit 0: raw: the rest is the whole response as sent.
 *             Else built by the harness: bits 1-3 status (200 x4, 500,
 *             301 relative, 302 absolute to another host, 204), bits 4-6
 *             Content-Type (table ctypes[], 0: none), bit 7 gzip (zlib).
 *     byte 1  (built only) bits 0-1 framing: Content-Length, chunked,
 *             close-delimited, Content-Length one too long; bits 2-7 the
 *             chunk size.
 *     rest    the body (built) or the response (raw).
 *
 * Invariants checked (abort on violation), per scrape:
 *   - exactly one appender transaction is committed, begin/commit/rollback
 *     balanced, and it ends with the report series in order;
 *   - up is 0 or 1 and agrees with the target's health and last_error,
 *     which never is libcurl's generic write error text;
 *     scrape_samples_post_metric_relabeling <= scrape_samples_scraped;
 *   - every appended label set is sorted, unique, named, without empty
 *     values; with honor_labels false and no relabeling it carries the
 *     target labels;
 *   - on success: label limits and sample_limit hold, and the body size
 *     (extra metrics) is below body_size_limit;
 *   - on failure: nothing but staleness markers besides the report;
 *   - staleness: every series tracked by the previous scrape is appended
 *     again or gets a marker, and markers go only to such series (checked
 *     when tracking does not depend on explicit timestamps);
 *   - end to end, when the final response was built: only a complete 200
 *     can be up, and then the loop saw the body that was sent (its length,
 *     and as many series as a fresh parser finds in it);
 * and at the end, the store's text output parses back with our parser,
 * with one series per live sample. FUZZ_RESPONSE_VERBOSE=1 in the
 * environment prints one line per scrape (for triage).
 * Built both by clang -fsanitize=fuzzer and, with replay.c, by gcc.
 */
#include "ps_appender.h"
#include "ps_appender_mem.h"
#include "ps_buf.h"
#include "ps_engine.h"
#include "ps_http.h"
#include "ps_loop.h"
#include "ps_parse.h"
#include "ps_relabel.h"
#include "ps_target.h"
#include "ps_timer.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <xxhash.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SEP "\n--8<--\n"
#define MAX_RESP 16 /* enough for 10 redirects and a response more */
/* Connections one scrape may open: the first, 10 redirects, a spare. */
#define MAX_PEERS 12
/* Inputs above this are skipped: even with gzip and chunk framing a
 * response stays far below SNDBUF, so one non-blocking write takes it all
 * and no writer thread is needed. */
#define MAX_IN 65536
#define SNDBUF (1 << 20)
/* Engine steps of STEP_MS allowed per scrape: well past the target's
 * timeout, so a scrape that never completes is a hang, reported. */
#define STEP_MS 10
#define MAX_STEPS 1000
#define TIMEOUT_MS 2000

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_response: invariant violated: %s\n", what);
    abort();
}

/* ---- configuration tables ------------------------------------------------ */

#define S(s) {s, sizeof(s) - 1}
#define NONE {NULL, 0}

static const struct ps_str src_name[] = {S("__name__")};
static const struct ps_str src_a[] = {S("a")};
static const struct ps_str src_name_a[] = {S("__name__"), S("a")};
static const struct ps_str src_h[] = {S("__tmp_h")};
static const struct ps_str src_x[] = {S("x")};
static const struct ps_str src_y[] = {S("y")};
static const struct ps_str src_inst[] = {S("instance")};

/* Rule sets 1..7 (0 is none): drop, keep, labeldrop, rename (may split a
 * UTF-8 sequence), hashmod sharding, labelmap and case, __name__ removal. */
static const struct ps_relabel_config set1[] = {
    {src_name, 1, NONE, S("go_.*|process_.*"), 0, NONE, NONE, S("drop"), 0},
};
static const struct ps_relabel_config set2[] = {
    {src_name, 1, NONE, S("up|.*_total|.*_bucket|[a-m].*"), 0, NONE, NONE,
     S("keep"), 0},
};
static const struct ps_relabel_config set3[] = {
    {NULL, 0, NONE, S("le|a|exported_.*"), 0, NONE, NONE, S("labeldrop"), 0},
};
static const struct ps_relabel_config set4[] = {
    {src_name, 1, NONE, S("(.*)_seconds(.*)"), 0, S("__name__"),
     S("${1}_ms$2"), NONE, 0},
    {src_a, 1, NONE, S("(.)(.*)"), 0, S("b"), S("$2$1"), NONE, 0},
};
static const struct ps_relabel_config set5[] = {
    {src_name_a, 2, NONE, NONE, 2, S("__tmp_h"), NONE, S("hashmod"), 0},
    {src_h, 1, NONE, S("0"), 0, NONE, NONE, S("keep"), 0},
    {NULL, 0, NONE, S("__tmp_h"), 0, NONE, NONE, S("labeldrop"), 0},
};
static const struct ps_relabel_config set6[] = {
    {NULL, 0, NONE, S("(.+)_l"), 0, NONE, S("m_$1"), S("labelmap"), 0},
    {src_name, 1, NONE, NONE, 0, S("lc"), NONE, S("lowercase"), 0},
    {src_inst, 1, NONE, NONE, 0, S("instance"), NONE, S("uppercase"), 0},
};
static const struct ps_relabel_config set7[] = {
    {src_x, 1, NONE, S(".+"), 0, S("__name__"), S(""), NONE, 0},
    {src_y, 1, NONE, S("(.+)"), 0, S("__name__"), S("9$1"), NONE, 0},
};
static const struct {
    const struct ps_relabel_config *rules;
    size_t n;
} rule_sets[8] = {
    {NULL, 0},
    {set1, 1},
    {set2, 1},
    {set3, 1},
    {set4, 2},
    {set5, 3},
    {set6, 3},
    {set7, 2},
};

static const char *const ctypes[8] = {
    NULL, /* no Content-Type header */
    "text/plain; version=0.0.4; charset=utf-8",
    "application/openmetrics-text; version=1.0.0; charset=utf-8",
    "application/openmetrics-text; version=0.0.1; charset=utf-8",
    "text/plain",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
    "application/json",
    "application/vnd.google.protobuf; "
    "proto=io.prometheus.client.MetricFamily; encoding=delimited",
};

static const int statuses[8] = {200, 200, 200, 200, 500, 301, 302, 204};

static const char *const report_names[] = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "scrape_timeout_seconds",
    "scrape_sample_limit",
    "scrape_body_size_bytes",
};
enum { R_UP, R_DURATION, R_SAMPLES, R_POST, R_ADDED, R_TIMEOUT, R_LIMIT,
       R_BODY, R_ALL };

/* Built once, on the first input, and kept (reachable, so no leak report):
 * compiling PCRE2 rules and populating targets per input would dominate. */
static struct {
    int ready;
    struct ps_relabel *rel[2][8]; /* [legacy][set] */
    struct ps_relabel_scratch *scratch;
    struct ps_target target[2];   /* plain, clashing labels */
    char *accept[2];              /* [legacy] */
    int listener;                 /* the fake server's socket */
    char sockname[32];            /* "@" + its abstract name */
    int verbose; /* FUZZ_RESPONSE_VERBOSE set: one line per scrape */
} g;

static void make_target(struct ps_target *t, const char *const *kv)
{
    struct ps_labels ls;
    struct ps_target_defaults d;
    size_t i;

    memset(&d, 0, sizeof(d));
    d.job = "fuzz";
    d.interval_ms = 60000;
    d.timeout_ms = TIMEOUT_MS;
    ps_labels_init(&ls);
    for (i = 0; kv[i] != NULL; i += 2)
        if (ps_labels_add(&ls, kv[i], strlen(kv[i]), kv[i + 1],
                          strlen(kv[i + 1]), 0) != PS_OK)
            fail("setup: target labels");
    ps_target_init(t);
    if (ps_target_populate(t, &ls, NULL, &d, NULL, NULL, NULL) != PS_OK ||
        t->state != PS_TARGET_ACTIVE)
        fail("setup: target");
    ps_labels_cleanup(&ls);
}

static void make_listener(void);

static void setup(void)
{
    static const char *const plain[] = {"__address__", "127.0.0.1:1", NULL};
    static const char *const clash[] = {"__address__", "127.0.0.1:1", "a",
                                        "t", "env", "fuzz", "exported_a",
                                        "x", NULL};
    struct ps_err e;
    int legacy, i;

    if (g.ready)
        return;
    ps_err_init(&e);
    if (ps_http_global_init(&e) != PS_OK ||
        ps_relabel_scratch_new(&g.scratch) != PS_OK)
        fail("setup: curl or scratch");
    for (legacy = 0; legacy < 2; legacy++) {
        for (i = 1; i < 8; i++)
            if (ps_relabel_compile(&g.rel[legacy][i], rule_sets[i].rules,
                                   rule_sets[i].n,
                                   legacy ? PS_RELABEL_LEGACY_NAMES : 0,
                                   &e) != PS_OK) {
                fprintf(stderr, "rule set %d: %s\n", i, e.msg);
                fail("setup: relabel rules");
            }
        if (ps_accept_header(NULL, 0, legacy, &g.accept[legacy], &e) != PS_OK)
            fail("setup: accept header");
    }
    g.verbose = getenv("FUZZ_RESPONSE_VERBOSE") != NULL;
    make_listener();
    make_target(&g.target[0], plain);
    make_target(&g.target[1], clash);
    g.ready = 1;
}

/* ---- the fake server ----------------------------------------------------- */

struct resp {
    unsigned char *p; /* owned (malloc) */
    size_t n;
    /* A built response, for the end-to-end checks: what it says and the
     * body before gzip (a view into the input). */
    int built, code, gzipped, framing;
    const char *ct;
    const unsigned char *body;
    size_t blen;
};

struct fake {
    struct resp r[MAX_RESP];
    size_t nresp, next;
    int peers[MAX_PEERS]; /* server ends, open until the scrape ends */
    size_t npeers;
};

/* The listening socket every connection of the seam reaches: an abstract
 * AF_UNIX name the kernel picks (autobind), so parallel fuzzers and a
 * replay running meanwhile never collide, and nothing is left on disk. */
static void make_listener(void)
{
    struct sockaddr_un a;
    socklen_t len = sizeof(sa_family_t);

    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    g.listener = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        0);
    if (g.listener < 0 || bind(g.listener, (struct sockaddr *)&a, len) != 0 ||
        listen(g.listener, 64) != 0)
        fail("setup: listener");
    len = sizeof(a);
    if (getsockname(g.listener, (struct sockaddr *)&a, &len) != 0 ||
        len <= offsetof(struct sockaddr_un, sun_path) + 1 ||
        a.sun_path[0] != '\0')
        fail("setup: listener name");
    len -= offsetof(struct sockaddr_un, sun_path) + 1;
    if (len + 2 > sizeof(g.sockname))
        fail("setup: listener name length");
    g.sockname[0] = '@'; /* ps_http_opts: '@' is the abstract namespace */
    memcpy(g.sockname + 1, a.sun_path + 1, len);
    g.sockname[len + 1] = '\0';
}

/* Closing the server end with curl's request unread in it resets the
 * client end, so it is kept open until the scrape is over. */
static void close_peers(struct fake *f)
{
    while (f->npeers > 0)
        close(f->peers[--f->npeers]);
}

/* Accepts every pending connection and answers it with the next response
 * (nothing when none is left), then EOF: shut down for writing, so curl
 * never waits. With f NULL, just closes them (leftovers of an input). */
static void serve(struct fake *f)
{
    int fd, sz = SNDBUF;

    while ((fd = accept(g.listener, NULL, NULL)) >= 0) {
        const struct resp *r;
        size_t off = 0;

        if (f == NULL || f->npeers == MAX_PEERS) {
            close(fd);
            continue;
        }
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        r = f->next < f->nresp ? &f->r[f->next++] : NULL;
        while (r != NULL && off < r->n) {
            ssize_t w = send(fd, r->p + off, r->n - off,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                fail("response larger than the socket buffer");
            off += (size_t)w;
        }
        shutdown(fd, SHUT_WR);
        f->peers[f->npeers++] = fd;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        fail("accept");
}

/* ---- building responses -------------------------------------------------- */

struct out {
    unsigned char *p;
    size_t n, cap;
};

static void out_add(struct out *o, const void *p, size_t n)
{
    if (o->n + n > o->cap) {
        size_t cap = o->cap ? o->cap : 1024;
        unsigned char *q;
        while (cap < o->n + n)
            cap *= 2;
        q = realloc(o->p, cap);
        if (q == NULL)
            fail("out of memory");
        o->p = q;
        o->cap = cap;
    }
    if (n > 0)
        memcpy(o->p + o->n, p, n);
    o->n += n;
}

static void out_str(struct out *o, const char *s)
{
    out_add(o, s, strlen(s));
}

/* gzip (RFC 1952) of in[0..n) into a new buffer (malloc, caller frees). */
static unsigned char *gzip(const unsigned char *in, size_t n, size_t *outn)
{
    z_stream z;
    unsigned char *buf;
    uLong cap;

    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK)
        fail("deflateInit2");
    cap = deflateBound(&z, (uLong)n);
    buf = malloc(cap);
    if (buf == NULL)
        fail("out of memory");
    z.next_in = (Bytef *)(uintptr_t)in; /* zlib's API is not const */
    z.avail_in = (uInt)n;
    z.next_out = buf;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        fail("deflate");
    *outn = cap - z.avail_out;
    deflateEnd(&z);
    return buf;
}

static const char *reason(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    default:
        return "Internal Server Error";
    }
}

/* One response from its segment of the input (see the layout above). */
static void build_response(struct resp *r, const unsigned char *s, size_t n)
{
    struct out o = {NULL, 0, 0};
    const unsigned char *body;
    unsigned char *gz = NULL;
    size_t blen;
    char line[128];
    int code, framing, gzipped;
    const char *ct;

    if (n == 0 || (s[0] & 1)) { /* raw (an empty segment: no bytes at all) */
        out_add(&o, n ? s + 1 : s, n ? n - 1 : 0);
        goto done;
    }
    code = statuses[(s[0] >> 1) & 7];
    ct = ctypes[(s[0] >> 4) & 7];
    gzipped = (s[0] >> 7) & 1;
    framing = n > 1 ? s[1] & 3 : 0;
    body = s + (n > 1 ? 2 : 1);
    blen = n - (n > 1 ? 2 : 1);
    r->built = 1;
    r->code = code;
    r->ct = ct;
    r->gzipped = gzipped;
    r->framing = framing;
    r->body = body;
    r->blen = blen;
    if (gzipped) {
        gz = gzip(body, blen, &blen);
        body = gz;
    }
    snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", code, reason(code));
    out_str(&o, line);
    if (ct != NULL) {
        snprintf(line, sizeof(line), "Content-Type: %s\r\n", ct);
        out_str(&o, line);
    }
    if (gzipped)
        out_str(&o, "Content-Encoding: gzip\r\n");
    if (code == 301)
        out_str(&o, "Location: /metrics?page=2\r\n");
    if (code == 302) /* another host: the seam routes it here too */
        out_str(&o, "Location: http://other.invalid:9100/metrics\r\n");
    switch (framing) {
    case 0:
    case 3: /* one byte too long: the body ends early */
        snprintf(line, sizeof(line), "Content-Length: %zu\r\n",
                 blen + (framing == 3));
        out_str(&o, line);
        out_str(&o, "\r\n");
        out_add(&o, body, blen);
        break;
    case 1: {
        /* at most 64 chunks, so the framing stays small */
        size_t v = (size_t)(s[1] >> 2), cs = 1 + v * v, off = 0;
        if (cs < blen / 64 + 1)
            cs = blen / 64 + 1;
        out_str(&o, "Transfer-Encoding: chunked\r\n\r\n");
        while (off < blen) {
            size_t k = blen - off < cs ? blen - off : cs;
            snprintf(line, sizeof(line), "%zx\r\n", k);
            out_str(&o, line);
            out_add(&o, body + off, k);
            out_str(&o, "\r\n");
            off += k;
        }
        out_str(&o, "0\r\n\r\n");
        break;
    }
    default: /* the body ends with the connection */
        out_str(&o, "Connection: close\r\n\r\n");
        out_add(&o, body, blen);
        break;
    }
done:
    free(gz);
    r->p = o.p;
    r->n = o.n;
}

/* ---- the checking appender ----------------------------------------------- */

/* What the checker keeps of one append. */
struct rec {
    uint64_t h;   /* labels hash */
    int64_t t;
    uint64_t vbits;
    int rc;
    int report;   /* index in report_names of __name__, or -1 */
    size_t nl;    /* labels */
    int over;     /* breaks a label limit or name rule (fine on failure) */
};

struct recs {
    struct rec *v;
    size_t n, cap;
};

struct checker {
    struct ps_appender app; /* first: the loop calls through it */
    struct ps_appender *mem; /* the memory store's appender (not owned) */
    const struct ps_loop_config *cfg;
    const struct ps_target *target;
    int relabeled;
    int in_txn;
    struct recs cur;  /* this transaction */
    struct recs last; /* the last committed one */
    size_t commits;
};

static void recs_push(struct recs *r, const struct rec *x)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        struct rec *v = realloc(r->v, cap * sizeof(*v));
        if (v == NULL)
            fail("out of memory");
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = *x;
}

static uint64_t labels_hash(const struct ps_labels *ls)
{
    XXH3_state_t *st = XXH3_createState();
    uint64_t h;
    size_t i;

    if (st == NULL || XXH3_64bits_reset(st) != XXH_OK)
        fail("xxh3");
    for (i = 0; i < ls->n; i++) {
        /* lengths first, so ("ab","c") and ("a","bc") differ */
        size_t len[2] = {ls->v[i].name_len, ls->v[i].value_len};
        XXH3_64bits_update(st, len, sizeof(len));
        XXH3_64bits_update(st, ls->v[i].name, ls->v[i].name_len);
        XXH3_64bits_update(st, ls->v[i].value, ls->v[i].value_len);
    }
    h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

static int report_index(const struct ps_label *nm)
{
    size_t i;

    for (i = 0; i < R_ALL; i++)
        if (nm->value_len == strlen(report_names[i]) &&
            memcmp(nm->value, report_names[i], nm->value_len) == 0)
            return (int)i;
    return -1;
}

/* 1 when ls breaks a limit or a name rule of the config: only a failed
 * scrape may have appended such a set (check_labels failed it). */
static int over_limits(const struct ps_loop_config *c,
                       const struct ps_labels *ls)
{
    size_t i;

    if (c->label_limit > 0 && ls->n > c->label_limit)
        return 1;
    for (i = 0; i < ls->n; i++) {
        const struct ps_label *x = &ls->v[i];
        int is_name = x->name_len == 8 && memcmp(x->name, "__name__", 8) == 0;
        if ((c->label_name_length_limit > 0 &&
             x->name_len > c->label_name_length_limit) ||
            (c->label_value_length_limit > 0 &&
             x->value_len > c->label_value_length_limit))
            return 1;
        if (!ps_utf8_valid(x->value, x->value_len))
            return 1;
        if (c->legacy_names &&
            (!ps_name_legacy_label(x->name, x->name_len) ||
             (is_name && !ps_name_legacy_metric(x->value, x->value_len))))
            return 1;
    }
    return 0;
}

static int chk_begin(struct ps_appender *a, const struct ps_labels *target,
                     struct ps_err *e)
{
    struct checker *c = (struct checker *)a;

    if (c->in_txn)
        fail("begin inside a transaction");
    c->in_txn = 1;
    c->cur.n = 0;
    return c->mem->vt->begin(c->mem, target, e);
}

/* Checks what holds for every label set the loop appends, records it. */
static int chk_append(struct ps_appender *a, uint64_t ref,
                      const struct ps_labels *ls, int64_t t, double v,
                      uint64_t *ref_out, struct ps_err *e)
{
    struct checker *c = (struct checker *)a;
    const struct ps_label *nm;
    struct rec r;
    size_t i;

    if (!c->in_txn)
        fail("append outside a transaction");
    if (ls->n == 0)
        fail("empty label set");
    for (i = 0; i < ls->n; i++) {
        if (ls->v[i].name_len == 0 || ls->v[i].value_len == 0)
            fail("empty label name or value");
        if (i > 0 && ps_label_cmp(&ls->v[i - 1], &ls->v[i]) >= 0)
            fail("labels not sorted or not unique");
    }
    nm = ps_labels_get(ls, "__name__", 8);
    if (nm == NULL)
        fail("no __name__");
    if (!c->cfg->honor_labels && !c->relabeled) {
        /* the target labels win over exposed ones (exported_ prefix) */
        const struct ps_labels *tl = &c->target->pub;
        for (i = 0; i < tl->n; i++) {
            const struct ps_label *x = ps_labels_get(ls, tl->v[i].name,
                                                     tl->v[i].name_len);
            if (x == NULL || x->value_len != tl->v[i].value_len ||
                memcmp(x->value, tl->v[i].value, x->value_len) != 0)
                fail("a target label is missing or overridden");
        }
    }
    memset(&r, 0, sizeof(r));
    r.h = labels_hash(ls);
    r.t = t;
    memcpy(&r.vbits, &v, sizeof(v));
    r.report = report_index(nm);
    r.nl = ls->n;
    r.over = over_limits(c->cfg, ls);
    r.rc = c->mem->vt->append(c->mem, ref, ls, t, v, ref_out, e);
    recs_push(&c->cur, &r);
    return r.rc;
}

static int chk_exemplar(struct ps_appender *a, uint64_t ref,
                        const struct ps_labels *ls,
                        const struct ps_exemplar *ex, struct ps_err *e)
{
    struct checker *c = (struct checker *)a;

    if (!c->in_txn)
        fail("exemplar outside a transaction");
    return c->mem->vt->append_exemplar(c->mem, ref, ls, ex, e);
}

static int chk_metadata(struct ps_appender *a, uint64_t ref,
                        const struct ps_labels *ls,
                        const struct ps_metadata *m, struct ps_err *e)
{
    struct checker *c = (struct checker *)a;

    if (!c->in_txn)
        fail("metadata outside a transaction");
    return c->mem->vt->update_metadata(c->mem, ref, ls, m, e);
}

static int chk_commit(struct ps_appender *a, struct ps_err *e)
{
    struct checker *c = (struct checker *)a;
    struct recs tmp;

    if (!c->in_txn)
        fail("commit outside a transaction");
    c->in_txn = 0;
    tmp = c->last; /* swap, so both buffers are reused */
    c->last = c->cur;
    c->cur = tmp;
    c->cur.n = 0;
    c->commits++;
    return c->mem->vt->commit(c->mem, e);
}

static void chk_rollback(struct ps_appender *a)
{
    struct checker *c = (struct checker *)a;

    if (!c->in_txn)
        fail("rollback outside a transaction");
    c->in_txn = 0;
    c->cur.n = 0;
    c->mem->vt->rollback(c->mem);
}

static void chk_free(struct ps_appender *a)
{
    (void)a; /* lives on the harness's stack */
}

static const struct ps_appender_vt chk_vt = {
    chk_begin, chk_append, chk_exemplar, chk_metadata,
    chk_commit, chk_rollback, chk_free,
};

/* ---- per-scrape checks --------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static int has(const uint64_t *v, size_t n, uint64_t h)
{
    return n > 0 && bsearch(&h, v, n, sizeof(h), cmp_u64) != NULL;
}

static double rec_value(const struct rec *r)
{
    double d;

    memcpy(&d, &r->vbits, sizeof(d));
    return d;
}

/* Series tracked for staleness by the previous scrape (sorted hashes). */
struct tracked {
    uint64_t *v;
    size_t n, cap;
    int valid; /* 0: unknown, skip the staleness checks */
};

/* Series entries in a built response's body (as sent, before gzip), in
 * the format the loop picks for its Content-Type; -1 if it does not parse
 * (or, without a fallback, has no format). A fresh parser: the loop's is
 * reused across scrapes, and must not behave differently. */
static long count_series(const struct ps_loop_config *cfg,
                         const struct resp *r)
{
    struct ps_parse_opts o;
    struct ps_parser *p = NULL;
    struct ps_err e;
    enum ps_entry ent;
    enum ps_format fmt;
    long n = 0;
    int rc;

    ps_err_init(&e);
    memset(&o, 0, sizeof(o));
    if (r->ct == NULL || ps_parse_format_of(r->ct, strlen(r->ct), &fmt,
                                            &e) != PS_OK) {
        if (cfg->fallback_format < 0)
            return -1;
        fmt = (enum ps_format)cfg->fallback_format;
    }
    o.format = fmt;
    if (ps_parse_new(&p, (const char *)r->body, r->blen, &o, &e) != PS_OK)
        fail("parser");
    while ((rc = ps_parse_next(p, &ent, &e)) == PS_OK && ent != PS_ENTRY_EOF)
        n += ent == PS_ENTRY_SERIES;
    ps_parse_free(p);
    return rc == PS_OK ? n : -1;
}

/* End to end, for a scrape whose final response the harness built: only
 * a 200 with all its bytes can be up, and then the loop saw exactly the
 * body that was sent: its length (extra metrics) and its series. */
static void check_body(const struct ps_loop_config *cfg, const struct rec *rep,
                       const struct resp *last)
{
    double up = rec_value(&rep[R_UP]);

    if (last == NULL || !last->built || up != 1)
        return;
    if (last->code != 200)
        fail("up after a final response other than 200");
    if (last->framing == 3)
        fail("up after a body cut short of its Content-Length");
    if (last->gzipped && cfg->http.disable_compression)
        return; /* the parser got the gzip bytes (and accepted them?) */
    if (cfg->extra_scrape_metrics &&
        rec_value(&rep[R_BODY]) != (double)last->blen)
        fail("the body delivered differs in length from the body sent");
    /* An empty body is an empty scrape, never parsed (Prometheus too):
     * OpenMetrics without "# EOF" is fine then. */
    if ((last->blen == 0 ? 0 : count_series(cfg, last)) !=
        (long)rec_value(&rep[R_SAMPLES]))
        fail("scrape_samples_scraped differs from the series sent");
}

/* Checks the transaction of the scrape that just ended (c->last) against
 * the loop's status, the final response (last: NULL if none was served)
 * and the series the previous scrape tracked, then replaces those with
 * this scrape's. */
static void check_scrape(const struct checker *c, const struct ps_loop *l,
                         const struct resp *last, struct tracked *tr)
{
    const struct ps_loop_config *cfg = c->cfg;
    const struct recs *x = &c->last;
    size_t nrep = cfg->extra_scrape_metrics ? R_ALL : R_TIMEOUT;
    size_t nbody, i, appended = 0, nnew = 0;
    const struct rec *rep;
    struct ps_target_status st;
    uint64_t *seen;
    double up;

    if (x->n < nrep)
        fail("transaction without the report series");
    nbody = x->n - nrep;
    rep = x->v + nbody;
    for (i = 0; i < nrep; i++) {
        if (rep[i].report != (int)i)
            fail("report series out of order");
        if (rep[i].t != rep[0].t)
            fail("report series at different times");
        if (rep[i].nl != c->target->pub.n + 1)
            fail("report series labels are not the target's");
    }
    up = rec_value(&rep[R_UP]);
    if (up != 0 && up != 1)
        fail("up is neither 0 nor 1");
    if (rec_value(&rep[R_POST]) > rec_value(&rep[R_SAMPLES]))
        fail("more samples after relabeling than scraped");
    if (rec_value(&rep[R_ADDED]) > rec_value(&rep[R_POST]))
        fail("more series added than samples kept");
    check_body(cfg, rep, last);
    ps_loop_status(l, &st);
    if ((up == 1) != (st.health == PS_HEALTH_UP) ||
        (up == 1) != (st.last_error[0] == '\0'))
        fail("up disagrees with the target's health or last_error");
    /* libcurl's own CURLE_WRITE_ERROR texts: a write error ps_http did
     * not classify (it blamed the disk for gzip trailing data). A prefix
     * test: our messages that quote the input start with our words. */
    if (strncmp(st.last_error, "Failed writing", 14) == 0 ||
        strncmp(st.last_error, "Failure writing", 15) == 0)
        fail("an unclassified curl write error");
    if (cfg->extra_scrape_metrics) {
        double b = rec_value(&rep[R_BODY]);
        if (b < -1 || (b == -1 && up == 1))
            fail("scrape_body_size_bytes");
        if (up == 1 && cfg->body_size_limit > 0 &&
            b >= (double)cfg->body_size_limit)
            fail("a body at or over body_size_limit was accepted");
    }
    for (i = 0; i < nbody; i++) {
        const struct rec *r = &x->v[i];
        int marker = ps_is_stale_nan(rec_value(r));
        if (up == 0 && !marker)
            fail("a failed scrape appended a sample");
        if (up == 1 && r->over)
            fail("a label limit or name rule was not enforced");
        appended += !marker;
    }
    if (up == 1 && cfg->sample_limit > 0 && appended > cfg->sample_limit)
        fail("sample_limit not enforced");

    /* Staleness against the previous scrape's tracked series. */
    seen = malloc((nbody ? nbody : 1) * sizeof(*seen));
    if (seen == NULL)
        fail("out of memory");
    for (i = 0; i < nbody; i++)
        seen[i] = x->v[i].h;
    qsort(seen, nbody, sizeof(*seen), cmp_u64);
    if (tr->valid) {
        for (i = 0; i < tr->n; i++)
            if (!has(seen, nbody, tr->v[i]))
                fail("a series gone since the last scrape got no marker");
        for (i = 0; i < nbody; i++) {
            const struct rec *r = &x->v[i];
            if (!ps_is_stale_nan(rec_value(r)))
                continue;
            if (!has(tr->v, tr->n, r->h))
                fail("a marker for a series the last scrape did not have");
            if (r->t != rep[0].t)
                fail("a marker not at the scrape's time");
        }
    }
    free(seen);
    /* This scrape's tracked series: appended and accepted (a failed
     * scrape tracks none). */
    if (tr->cap < nbody) {
        uint64_t *v = realloc(tr->v, nbody * sizeof(*v));
        if (v == NULL)
            fail("out of memory");
        tr->v = v;
        tr->cap = nbody;
    }
    for (i = 0; i < nbody && up == 1; i++)
        if (x->v[i].rc == PS_OK && !ps_is_stale_nan(rec_value(&x->v[i])))
            tr->v[nnew++] = x->v[i].h;
    tr->n = nnew;
    if (tr->n > 0) /* tr->v is NULL until the first tracked series */
        qsort(tr->v, tr->n, sizeof(*tr->v), cmp_u64);
}

/* The store as /federate text must parse back, one series per live
 * sample. */
static int count_live(const struct ps_mem_sample *s, void *ud)
{
    size_t *n = ud;

    *n += !s->stale && s->n_labels > 0;
    return 0;
}

static void check_text(struct ps_appender_mem *mem)
{
    struct ps_buf b;
    struct ps_parser *p = NULL;
    struct ps_parse_opts o;
    struct ps_err e;
    enum ps_entry ent;
    size_t live = 0, series = 0;
    int rc;

    ps_buf_init(&b, 64u << 20);
    if (ps_appender_mem_text(mem, &b) != PS_OK)
        fail("memory store text output");
    ps_appender_mem_foreach(mem, count_live, &live);
    /* A NUL byte is valid UTF-8, so relabeling may put one in a metric
     * name (Prometheus allows it too), but the parser refuses NUL in a
     * quoted name after # TYPE, and the text format has no escape for it:
     * such a store has no text form that reads back. */
    if (b.len > 0 && memchr(b.p, '\0', b.len) != NULL) {
        ps_buf_cleanup(&b);
        return;
    }
    memset(&o, 0, sizeof(o));
    o.format = PS_FORMAT_TEXT;
    ps_err_init(&e);
    if (ps_parse_new(&p, b.p ? b.p : "", b.len, &o, &e) != PS_OK)
        fail("parser");
    while ((rc = ps_parse_next(p, &ent, &e)) == PS_OK && ent != PS_ENTRY_EOF)
        series += ent == PS_ENTRY_SERIES;
    if (rc != PS_OK) {
        fprintf(stderr, "%s\n--- text:\n%.*s\n", e.msg, (int)b.len,
                b.p ? b.p : "");
        fail("the store's text output does not parse");
    }
    if (series != live)
        fail("the store's text output lost or invented series");
    ps_parse_free(p);
    ps_buf_cleanup(&b);
}

/* ---- the input ----------------------------------------------------------- */

static const unsigned char *find_sep(const unsigned char *p, size_t n)
{
    size_t k = sizeof(SEP) - 1, i;

    for (i = 0; i + k <= n; i++)
        if (p[i] == SEP[0] && memcmp(p + i, SEP, k) == 0)
            return p + i;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t body_limits[4] = {0, 100, 2000, 30000};
    static const uint64_t sample_limits[4] = {0, 1, 4, 50};
    static const uint64_t label_limits[4] = {0, 2, 4, 8};
    static const uint64_t len_limits[4] = {0, 3, 8, 32};
    struct fake f;
    struct ps_engine_opts eo;
    struct ps_engine *eng = NULL;
    struct ps_appender_mem *mem = NULL;
    struct ps_loop_config cfg;
    struct ps_loop *l = NULL;
    struct checker chk;
    struct tracked tr = {NULL, 0, 0, 0};
    struct ps_err e;
    const unsigned char *p, *end;
    int scrapes, legacy, set, i;

    if (size < 3 || size > MAX_IN)
        return 0;
    setup();
    memset(&f, 0, sizeof(f));
    p = data + 3;
    end = data + size;
    while (f.nresp < MAX_RESP) {
        const unsigned char *s = f.nresp + 1 < MAX_RESP
                                     ? find_sep(p, (size_t)(end - p))
                                     : NULL;
        size_t n = s ? (size_t)(s - p) : (size_t)(end - p);
        build_response(&f.r[f.nresp++], p, n);
        if (s == NULL)
            break;
        p = s + sizeof(SEP) - 1;
    }

    scrapes = 1 + (data[0] & 3) - ((data[0] & 3) == 3);
    legacy = (data[0] >> 7) & 1;
    set = data[1] & 7;
    memset(&cfg, 0, sizeof(cfg)); /* zero: new fields default off */
    cfg.job = "fuzz";
    cfg.honor_labels = (data[0] >> 2) & 1;
    cfg.honor_timestamps = (data[0] >> 3) & 1;
    cfg.track_timestamps_staleness = (data[0] >> 4) & 1;
    cfg.extra_scrape_metrics = (data[0] >> 5) & 1;
    cfg.http.disable_compression = (data[0] >> 6) & 1;
    cfg.legacy_names = legacy;
    cfg.metric_relabel = g.rel[legacy][set];
    cfg.scratch = g.scratch;
    cfg.body_size_limit = body_limits[(data[1] >> 3) & 3];
    cfg.sample_limit = sample_limits[(data[1] >> 5) & 3];
    cfg.fallback_format = (data[1] >> 7) & 1 ? PS_FORMAT_TEXT : -1;
    cfg.label_limit = label_limits[data[2] & 3];
    cfg.label_name_length_limit = len_limits[(data[2] >> 2) & 3];
    cfg.label_value_length_limit = len_limits[(data[2] >> 4) & 3];
    cfg.http.disable_follow_redirects = (data[2] >> 6) & 1;
    cfg.accept = g.accept[legacy];

    memset(&eo, 0, sizeof(eo));
    eo.http.test_unix_socket = g.sockname;
    memset(&chk, 0, sizeof(chk));
    chk.app.vt = &chk_vt;
    chk.cfg = &cfg;
    chk.target = &g.target[(data[2] >> 7) & 1];
    chk.relabeled = set != 0;
    /* Tracking depends on explicit timestamps only when they are honored
     * without track_timestamps_staleness: the checker cannot see them. */
    tr.valid = !cfg.honor_timestamps || cfg.track_timestamps_staleness;
    ps_err_init(&e);
    if (ps_engine_new(&eng, &eo, &e) != PS_OK ||
        ps_appender_mem_new(&mem, NULL, &e) != PS_OK)
        fail("setup: engine or store");
    chk.mem = ps_appender_mem_appender(mem);
    if (ps_loop_new(&l, eng, &chk.app, &cfg, chk.target, 1, NULL, &e) !=
            PS_OK ||
        ps_loop_start(l) != PS_OK)
        fail("setup: loop");

    for (i = 0; i < scrapes; i++) {
        struct ps_target_status st;
        size_t commits = chk.commits, served = f.next;
        int steps = 0;

        /* Fire the tick now rather than at the target's offset: a far
         * deadline runs the loop's timer, the only one on the heap. */
        ps_timer_run(ps_engine_timers(eng), UINT64_MAX);
        for (;;) {
            ps_loop_status(l, &st);
            if (st.scrapes > (uint64_t)i)
                break;
            if (++steps > MAX_STEPS)
                fail("the scrape never finished");
            if (ps_engine_step(eng, STEP_MS, &e) != PS_OK)
                fail("engine step");
            serve(&f); /* curl connected in that step: answer it */
        }
        close_peers(&f);
        if (chk.in_txn || chk.commits != commits + 1)
            fail("a scrape did not commit exactly one transaction");
        if (g.verbose)
            fprintf(stderr,
                    "scrape %d: %s, %llu samples, %zu appends, "
                    "%zu responses served, error: %s\n",
                    i + 1, ps_health_name(st.health),
                    (unsigned long long)st.last_samples, chk.last.n,
                    f.next, st.last_error);
        check_scrape(&chk, l, f.next > served ? &f.r[f.next - 1] : NULL, &tr);
    }
    check_text(mem);

    ps_loop_free(l);
    ps_engine_free(eng);
    ps_appender_mem_free(mem);
    close_peers(&f);
    serve(NULL); /* nothing may wait for the next input */
    for (i = 0; i < (int)f.nresp; i++)
        free(f.r[i].p);
    free(chk.cur.v);
    free(chk.last.v);
    free(tr.v);
    return 0;
}
