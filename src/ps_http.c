/*
 * ps_http: scrape GETs on one curl multi handle (curl_multi_poll driven).
 * The only file that includes <curl/curl.h>. See ps_http.h, docs/http.md.
 */
#include "ps_http.h"

#include <poll.h>
#include <sys/stat.h>

#include <curl/curl.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The connection cache when max_connects is 0: at least this, grown to
 * the number of live requests (one per target) so that every target keeps
 * its keep-alive connection between scrapes. */
#define MIN_MAX_CONNECTS 100L
#define MAX_REDIRECTS 10L
#define MAX_SECRETS 4
/* A secret file bigger than this is a mistake (a key pasted as a token
 * file, say), not a credential: refuse it rather than send it. */
#define MAX_SECRET_FILE 65536

/* 1 if libcurl refused the option (out of memory or a missing feature) */
#define SETOPT(c, opt, val) (curl_easy_setopt((c), (opt), (val)) != CURLE_OK)

struct ps_http {
    CURLM *multi;             /* owned: connection and DNS caches */
    struct ps_http_req *reqs; /* every live request (not owned) */
    size_t inflight;
    int in_perform; /* guards against ps_http_perform reentry */
    long maxconn_fixed; /* ps_http_opts.max_connects; 0: automatic */
    long maxconn;       /* CURLMOPT_MAXCONNECTS as set */
    size_t nreqs;       /* live requests */
    char *unix_socket;  /* owned copy of opts.test_unix_socket, or NULL */
};

struct ps_http_req {
    struct ps_http *h; /* NULL once detached by ps_http_free() */
    int counted;       /* in h->nreqs */
    struct ps_http_req *prev, *next;
    CURL *easy;                    /* owned, configured once */
    struct curl_slist *headers;    /* owned (curl's allocator), used by easy */
    struct curl_slist *connect_to; /* owned: tls server_name redirection */
    char *secrets[MAX_SECRETS];    /* owned copies, only for redaction */
    struct secret_file {           /* opts.*_file; path NULL when none */
        char *path;                /* owned */
        const char *field;         /* static: the option's name */
        int is_password;           /* else Authorization credentials */
        char *auth_type;           /* owned: "Bearer" unless set */
        char *value;               /* owned: the last content read */
        int known;                 /* 1 when the identity below is valid */
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtim;
    } sf;
    long timeout_ms;
    size_t limit; /* 0: none */
    /* body buffer: reused across scrapes, capped at limit + 1 (the NUL) */
    char *buf;
    size_t len, cap, last_size;
    size_t discarded; /* body bytes of a non-200 response */
    int busy, over_limit, oom, bad_status;
    int post; /* opts.post: POST mode, any 2xx is success */
    uint64_t start_ns;
    ps_http_done_fn done;
    void *ud;
    char errbuf[CURL_ERROR_SIZE];
    char msg[PS_ERR_MAX]; /* the result's error message */
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* 1 when status is a success: 200 for scrapes, any 2xx for POSTs. */
static int ok_status(const struct ps_http_req *r, long code)
{
    return r->post ? code >= 200 && code < 300 : code == 200;
}

/* ---- process-wide init --------------------------------------------------- */

int ps_http_global_init(struct ps_err *e)
{
    CURLcode cc = curl_global_init(CURL_GLOBAL_DEFAULT);

    if (cc != CURLE_OK)
        return ps_err_set(e, PS_EIO, "curl_global_init: %s",
                          curl_easy_strerror(cc));
    return PS_OK;
}

void ps_http_global_cleanup(void)
{
    curl_global_cleanup();
}

/* ---- client -------------------------------------------------------------- */

int ps_http_new(struct ps_http **out, const struct ps_http_opts *o,
                struct ps_err *e)
{
    struct ps_http *h = ps_calloc(1, sizeof(*h));
    /* 0: MIN_MAX_CONNECTS, grown with the requests (see grow_maxconn): a
     * fixed 100 made every pool of more than 100 targets reconnect on each
     * scrape. libcurl's own default (4x the easy handles currently added)
     * counts in-flight transfers only, so staggered scrapes would still
     * close idle connections. */
    long maxconn = (o && o->max_connects > 0) ? o->max_connects
                                              : MIN_MAX_CONNECTS;
    int rc = PS_ENOMEM;

    if (h == NULL)
        goto fail;
    h->multi = curl_multi_init();
    if (h->multi == NULL)
        goto fail;
    if (curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, maxconn) !=
        CURLM_OK) {
        rc = PS_EIO;
        goto fail;
    }
    h->maxconn_fixed = (o && o->max_connects > 0) ? o->max_connects : 0;
    if (o != NULL && o->test_unix_socket != NULL) {
        h->unix_socket = ps_strndup(o->test_unix_socket,
                                    strlen(o->test_unix_socket));
        if (h->unix_socket == NULL) {
            rc = PS_ENOMEM;
            goto fail;
        }
    }
    h->maxconn = maxconn;
    *out = h;
    return PS_OK;
fail:
    ps_http_free(h);
    return ps_err_set(e, rc, "http client: %s", ps_strerror(rc));
}

/* Takes r out of the multi handle if in flight; no callback. */
static void stop_transfer(struct ps_http_req *r)
{
    if (!r->busy)
        return;
    if (r->h != NULL) {
        curl_multi_remove_handle(r->h->multi, r->easy);
        r->h->inflight--;
    }
    r->busy = 0;
}

static void unlink_req(struct ps_http_req *r)
{
    if (r->h == NULL)
        return;
    if (r->counted)
        r->h->nreqs--;
    r->counted = 0;
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        r->h->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    r->h = NULL;
}

void ps_http_free(struct ps_http *h)
{
    if (h == NULL)
        return;
    while (h->reqs != NULL) { /* detach survivors; their owner frees them */
        struct ps_http_req *r = h->reqs;
        stop_transfer(r);
        unlink_req(r);
    }
    if (h->multi != NULL)
        curl_multi_cleanup(h->multi);
    ps_free(h->unix_socket);
    ps_free(h);
}

size_t ps_http_inflight(const struct ps_http *h)
{
    return h->inflight;
}

void ps_http_wakeup(struct ps_http *h)
{
    curl_multi_wakeup(h->multi); /* thread-safe by libcurl's contract */
}

/* ---- messages ------------------------------------------------------------ */

/* Go's time.Duration style for whole milliseconds: "10s", "1.5s", "250ms". */
static void fmt_duration(char *b, size_t n, long ms, int unit)
{
    if (unit && ms < 1000) {
        snprintf(b, n, "%ldms", ms);
        return;
    }
    if (ms % 1000 == 0) {
        snprintf(b, n, "%ld%s", ms / 1000, unit ? "s" : "");
    } else {
        char frac[8];
        size_t k;
        snprintf(frac, sizeof(frac), "%03ld", ms % 1000);
        for (k = strlen(frac); k > 0 && frac[k - 1] == '0'; k--)
            frac[k - 1] = '\0';
        snprintf(b, n, "%ld.%s%s", ms / 1000, frac, unit ? "s" : "");
    }
}

static const char *status_text(long code)
{
    switch (code) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 408:
        return "Request Timeout";
    case 410:
        return "Gone";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "";
    }
}

/* Replaces every occurrence of each secret in r->msg with "<secret>", in one
 * left-to-right pass per secret (the mask is never rescanned). */
static void redact(struct ps_http_req *r)
{
    static const char mask[] = "<secret>";
    int i;

    for (i = 0; i < MAX_SECRETS; i++) {
        const char *s = r->secrets[i], *from, *p;
        size_t sl = s ? strlen(s) : 0, k = 0;
        char out[PS_ERR_MAX];

        if (sl == 0 || strstr(r->msg, s) == NULL)
            continue;
        for (from = r->msg; (p = strstr(from, s)) != NULL; from = p + sl) {
            k += (size_t)snprintf(out + k, sizeof(out) - k, "%.*s%s",
                                  (int)(p - from), from, mask);
            if (k >= sizeof(out))
                k = sizeof(out) - 1; /* truncated: keep appending nothing */
        }
        snprintf(out + k, sizeof(out) - k, "%s", from);
        memcpy(r->msg, out, sizeof(out));
    }
}

static void set_msg(struct ps_http_req *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void set_msg(struct ps_http_req *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
    va_end(ap);
}

/* curl's detail if it left one, else its generic phrase. */
static const char *detail(const struct ps_http_req *r, CURLcode cc)
{
    return r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc);
}

/* Turns a finished transfer into (rc, r->msg); returns rc. */
static int classify(struct ps_http_req *r, CURLcode cc, long status,
                    int *timed_out)
{
    long oserr = 0;

    r->msg[0] = '\0';
    if (r->oom) {
        set_msg(r, "out of memory reading the body");
        return PS_ENOMEM;
    }
    if (r->over_limit) {
        set_msg(r, "body size limit of %zu bytes exceeded", r->limit);
        return PS_ELIMIT;
    }
    if (r->bad_status || (cc == CURLE_OK && !ok_status(r, status))) {
        size_t k = 0;
        if (r->post) /* quote the first line of the server's reason */
            while (k < r->len && r->buf[k] != '\n' && r->buf[k] != '\r')
                k++;
        set_msg(r, "server returned HTTP status %ld%s%s%s%.*s", status,
                status_text(status)[0] ? " " : "", status_text(status),
                k ? ": " : "", (int)k, k ? r->buf : "");
        return PS_EIO;
    }
    if (cc == CURLE_OK)
        return PS_OK;
    curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &oserr);
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT: {
        char d[32];
        fmt_duration(d, sizeof(d), r->timeout_ms, 1);
        *timed_out = 1;
        set_msg(r, "timeout after %s", d);
        return PS_EIO;
    }
    case CURLE_COULDNT_CONNECT:
        if (oserr == ECONNREFUSED)
            set_msg(r, "connection refused");
        else if (oserr != 0)
            set_msg(r, "connect: %s", strerror((int)oserr));
        else
            set_msg(r, "connect: %s", detail(r, cc));
        return PS_EIO;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        set_msg(r, "dns: %s", detail(r, cc));
        return PS_EIO;
    case CURLE_BAD_CONTENT_ENCODING: {
        /* curl: "Error while processing content unencoding: <zlib msg>" */
        const char *z = strrchr(detail(r, cc), ':');
        z = z ? z + 1 : detail(r, cc);
        while (*z == ' ')
            z++;
        if (strcmp(z, "incorrect header check") == 0)
            z = "invalid header"; /* Go's compress/gzip wording */
        set_msg(r, "gzip: %s", z);
        return PS_EPARSE;
    }
    case CURLE_WRITE_ERROR:
        /* Not on_write refusing (its flags are handled above), so curl's
         * decoder: bytes after the end of the gzip stream (its
         * process_trailer), e.g. a second gzip member, which libcurl does
         * not decode (Go's reader does). curl leaves no message, and its
         * generic one blames the disk. */
        set_msg(r, "gzip: unexpected data after the compressed body");
        return PS_EPARSE;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        if (oserr == ECONNRESET)
            set_msg(r, "connection reset by peer");
        else if (strstr(detail(r, cc), "SSL") != NULL)
            set_msg(r, "tls: %s", detail(r, cc)); /* e.g. an alert */
        else
            set_msg(r, "%s: %s", cc == CURLE_RECV_ERROR ? "read" : "write",
                    detail(r, cc));
        return PS_EIO;
    case CURLE_PARTIAL_FILE:
        set_msg(r, "unexpected EOF (%s)", detail(r, cc));
        return PS_EIO;
    case CURLE_GOT_NOTHING:
        set_msg(r, "server closed the connection without a response");
        return PS_EIO;
    case CURLE_TOO_MANY_REDIRECTS:
        set_msg(r, "stopped after %ld redirects", MAX_REDIRECTS);
        return PS_EIO;
    case CURLE_UNSUPPORTED_PROTOCOL:
        set_msg(r, "unsupported protocol scheme (%s)", detail(r, cc));
        return PS_EIO;
    case CURLE_OUT_OF_MEMORY:
        set_msg(r, "out of memory (libcurl)");
        return PS_ENOMEM;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CIPHER:
        set_msg(r, "tls: %s", detail(r, cc));
        return PS_EIO;
    default:
        set_msg(r, "%s", detail(r, cc));
        return PS_EIO;
    }
}

/* ---- transfers ----------------------------------------------------------- */

/* Grows the body buffer to hold need bytes (need <= limit + 1 is checked by
 * the caller). PS_OK or PS_ENOMEM, buffer untouched on failure. */
static int reserve_body(struct ps_http_req *r, size_t need)
{
    size_t cap = r->cap ? r->cap : 256;
    char *b;

    if (need <= r->cap)
        return PS_OK;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (r->limit != 0 && cap > r->limit + 1)
        cap = r->limit + 1; /* the cap: never more than limit + NUL */
    if (cap < need)
        cap = need;
    b = ps_realloc(r->buf, cap);
    if (b == NULL)
        return PS_ENOMEM;
    r->buf = b;
    r->cap = cap;
    return PS_OK;
}

/* CURLOPT_WRITEFUNCTION: sees decompressed bytes (CURLOPT_ACCEPT_ENCODING),
 * so the limit counts them. A short return aborts with CURLE_WRITE_ERROR. */
static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    struct ps_http_req *r = ud;
    size_t n = size * nmemb;
    long code = 0;

    /* Like Prometheus, the body of a non-200 answer is not kept: it is
     * drained (so the connection can be reused) up to the limit, then the
     * transfer is aborted and reported by its status. */
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    if (!ok_status(r, code)) {
        /* A POST keeps the start of the error body: the server's reason. */
        if (r->post && r->len < PS_HTTP_ERRBODY_MAX) {
            size_t k = PS_HTTP_ERRBODY_MAX - r->len;
            if (k > n)
                k = n;
            if (reserve_body(r, r->len + k + 1) == PS_OK) {
                memcpy(r->buf + r->len, p, k);
                r->len += k;
                r->buf[r->len] = '\0';
            }
        }
        r->discarded += n;
        if (r->limit != 0 && r->discarded > r->limit) {
            r->bad_status = 1;
            return 0;
        }
        return n;
    }
    /* Prometheus fails a body of limit bytes or more (it reads through an
     * io.LimitReader and rejects n >= limit), so do we. */
    if (r->limit != 0 && n >= r->limit - r->len) {
        r->over_limit = 1;
        return 0;
    }
    if (r->len + n + 1 < r->len || reserve_body(r, r->len + n + 1) != PS_OK) {
        r->oom = 1;
        return 0;
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
    r->buf[r->len] = '\0';
    return n;
}

/* The part of a start shared by GET and POST. */
/* Secret files (below, next to the option handling) are re-read here. */
static int refresh_secret(struct ps_http_req *r, struct ps_err *e);

static int start(struct ps_http_req *r, ps_http_done_fn done, void *ud,
                 struct ps_err *e)
{
    size_t want = r->last_size + 1;
    CURLMcode mc;

    if (r->limit != 0 && want > r->limit + 1)
        want = r->limit + 1;
    if (reserve_body(r, want) != PS_OK) /* pre-size to the last body */
        return ps_err_set(e, PS_ENOMEM, "http: body buffer of %zu bytes", want);
    r->len = 0;
    r->buf[0] = '\0';
    r->over_limit = r->oom = r->bad_status = 0;
    r->discarded = 0;
    r->errbuf[0] = '\0';
    r->done = done;
    r->ud = ud;
    mc = curl_multi_add_handle(r->h->multi, r->easy);
    if (mc != CURLM_OK)
        return ps_err_set(e, mc == CURLM_OUT_OF_MEMORY ? PS_ENOMEM : PS_EIO,
                          "http: curl_multi_add_handle: %s",
                          curl_multi_strerror(mc));
    r->busy = 1;
    r->h->inflight++;
    r->start_ns = now_ns();
    return PS_OK;
}

/* PS_OK if r may start now, in the given mode. */
static int check_startable(const struct ps_http_req *r, int post,
                           struct ps_err *e)
{
    if (r->h == NULL)
        return ps_err_set(e, PS_ESTATE, "http: client was freed");
    if (r->busy)
        return ps_err_set(e, PS_ESTATE, "http: request already in flight");
    if (r->post != post)
        return ps_err_set(e, PS_ESTATE, "http: %s started on a %s request",
                          post ? "POST" : "GET", r->post ? "POST" : "GET");
    return PS_OK;
}

int ps_http_start(struct ps_http_req *r, ps_http_done_fn done, void *ud,
                  struct ps_err *e)
{
    int rc = check_startable(r, 0, e);

    if (rc == PS_OK)
        rc = refresh_secret(r, e);
    return rc != PS_OK ? rc : start(r, done, ud, e);
}

int ps_http_start_post(struct ps_http_req *r, const void *body, size_t len,
                       ps_http_done_fn done, void *ud, struct ps_err *e)
{
    int rc = check_startable(r, 1, e);

    if (rc == PS_OK)
        rc = refresh_secret(r, e);
    if (rc != PS_OK)
        return rc;
    /* size first, so curl never strlen()s the (binary) body */
    if (SETOPT(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len) ||
        SETOPT(r->easy, CURLOPT_POSTFIELDS, len ? body : ""))
        return ps_err_set(e, PS_EIO, "http: libcurl rejected the POST body");
    return start(r, done, ud, e);
}

void ps_http_cancel(struct ps_http_req *r)
{
    if (r != NULL)
        stop_transfer(r);
}

int ps_http_busy(const struct ps_http_req *r)
{
    return r->busy;
}

/*
 * The Content-Type of the final response only. CURLINFO_CONTENT_TYPE keeps
 * the one of an earlier response in a redirect chain when the final
 * response has none (libcurl 7.88, found by fuzz_response), which would
 * let a target that sends no Content-Type pass as text. The header API
 * (7.83+) asks the last request's own headers; curl builds without it
 * fall back to the info field. Valid until the next transfer on r.
 */
static char *final_content_type(struct ps_http_req *r)
{
    struct curl_header *hd = NULL;
    char *ct = NULL;
    CURLHcode hc = curl_easy_header(r->easy, "Content-Type", 0, CURLH_HEADER,
                                    -1, &hd);

    if (hc == CURLHE_OK)
        return hd->value;
    if (hc == CURLHE_NOT_BUILT_IN &&
        curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK)
        return ct;
    return NULL;
}

/* Completes one transfer: detach it from the multi, then call back. The
 * callback may free r, so r is not touched after it. */
static void finish(struct ps_http_req *r, CURLcode cc)
{
    struct ps_http_result res;
    long status = 0;
    char *ctype = NULL;
    int timed_out = 0;
    curl_off_t retry_after = 0;

    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    if (curl_easy_getinfo(r->easy, CURLINFO_RETRY_AFTER, &retry_after) !=
        CURLE_OK)
        retry_after = 0;
    ctype = final_content_type(r);
    stop_transfer(r);
    memset(&res, 0, sizeof(res));
    res.rc = classify(r, cc, status, &timed_out);
    redact(r);
    res.status = status;
    res.content_type = ctype ? ctype : ""; /* owned by the easy handle */
    res.body = r->buf ? r->buf : "";
    res.body_len = r->len;
    res.duration_ns = now_ns() - r->start_ns;
    res.timed_out = timed_out;
    res.error = r->msg;
    res.retry_after_s = retry_after > 0 ? (int64_t)retry_after : 0;
    r->last_size = r->len;
    if (r->done != NULL)
        r->done(r, &res, r->ud);
}

int ps_http_wait(struct ps_http *h, int timeout_ms, struct ps_err *e)
{
    CURLMcode mc;

    if (timeout_ms < 0)
        timeout_ms = 0;
    mc = curl_multi_poll(h->multi, NULL, 0, timeout_ms, NULL);
    if (mc != CURLM_OK)
        return ps_err_set(e, PS_EIO, "http: curl_multi_poll: %s",
                          curl_multi_strerror(mc));
    return PS_OK;
}

int ps_http_wait_fds(struct ps_http *h, struct pollfd *fds, unsigned n,
                     int timeout_ms, struct ps_err *e)
{
    struct curl_waitfd small[8], *w = small;
    unsigned i, k = 0;
    CURLMcode mc;

    if (n > sizeof(small) / sizeof(small[0])) {
        w = ps_calloc(n, sizeof(*w));
        if (w == NULL)
            return ps_err_set(e, PS_ENOMEM, "http: watching %u fds", n);
    }
    for (i = 0; i < n; i++) {
        fds[i].revents = 0;
        if (fds[i].fd < 0)
            continue;
        w[k].fd = fds[i].fd;
        w[k].events = (short)((fds[i].events & POLLIN ? CURL_WAIT_POLLIN : 0) |
                              (fds[i].events & POLLOUT ? CURL_WAIT_POLLOUT : 0));
        w[k].revents = 0;
        k++;
    }
    if (timeout_ms < 0)
        timeout_ms = 0;
    mc = curl_multi_poll(h->multi, w, k, timeout_ms, NULL);
    /* Copy back in the same order, skipping the ignored entries. */
    for (i = 0, k = 0; i < n && mc == CURLM_OK; i++) {
        if (fds[i].fd < 0)
            continue;
        fds[i].revents = (short)((w[k].revents & CURL_WAIT_POLLIN ? POLLIN : 0) |
                                 (w[k].revents & CURL_WAIT_POLLOUT ? POLLOUT : 0));
        k++;
    }
    if (w != small)
        ps_free(w);
    if (mc != CURLM_OK)
        return ps_err_set(e, PS_EIO, "http: curl_multi_poll: %s",
                          curl_multi_strerror(mc));
    return PS_OK;
}

#define PERFORM_EVERY_NS 2000000u /* 2 ms */

int ps_http_perform(struct ps_http *h, struct ps_err *e)
{
    CURLMcode mc;
    CURLMsg *m;
    int running = 0, left = 0;
    uint64_t last;

    if (h->in_perform)
        return ps_err_set(e, PS_ESTATE, "http: perform called from a callback");
    mc = curl_multi_perform(h->multi, &running);
    if (mc != CURLM_OK)
        return ps_err_set(e, PS_EIO, "http: curl_multi_perform: %s",
                          curl_multi_strerror(mc));
    h->in_perform = 1;
    last = now_ns();
    /* A callback may remove other handles: curl then drops their queued
     * messages, so every message read here is for a live request. */
    while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
        struct ps_http_req *r = NULL;
        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (r != NULL && r->busy)
            finish(r, m->data.result);
        /* A scrape's callback (parse, relabel, append) can take
         * milliseconds, and a busy step runs many: let curl move the other
         * transfers (remote-write uploads above all) on between them, at
         * most every PERFORM_EVERY_NS so idle handles cost little. Errors
         * here resurface at the next step's perform. */
        if (now_ns() - last >= PERFORM_EVERY_NS) {
            (void)curl_multi_perform(h->multi, &running);
            last = now_ns();
        }
    }
    h->in_perform = 0;
    return PS_OK;
}

/* ---- request construction ------------------------------------------------ */

/* Rejects values that would smuggle extra header lines. */
static int has_newline(const char *s)
{
    return s != NULL && strpbrk(s, "\r\n") != NULL;
}

/* Formats one header line and appends it to r->headers (curl copies it).
 * The temporary is wiped, since it may hold credentials. */
static int add_header(struct ps_http_req *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int add_header(struct ps_http_req *r, const char *fmt, ...)
{
    va_list ap;
    int n;
    char *line;
    struct curl_slist *l;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return PS_EINVAL;
    line = ps_malloc((size_t)n + 1);
    if (line == NULL)
        return PS_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(line, (size_t)n + 1, fmt, ap);
    va_end(ap);
    l = curl_slist_append(r->headers, line);
    memset(line, 0, (size_t)n);
    ps_free(line);
    if (l == NULL)
        return PS_ENOMEM;
    r->headers = l;
    return PS_OK;
}

static int add_secret(struct ps_http_req *r, const char *s)
{
    int i;

    if (s == NULL || s[0] == '\0')
        return PS_OK;
    for (i = 0; i < MAX_SECRETS; i++) {
        if (r->secrets[i] == NULL) {
            r->secrets[i] = ps_strndup(s, strlen(s));
            return r->secrets[i] ? PS_OK : PS_ENOMEM;
        }
    }
    return PS_OK; /* cannot happen: at most MAX_SECRETS are added */
}

/* Parses url with libcurl's parser and keeps its password as a secret.
 * PS_OK, PS_EINVAL, PS_ENOMEM. The message never quotes the URL, which may
 * hold credentials. */
static int check_url(struct ps_http_req *r, const char *url, const char *what,
                     struct ps_err *e)
{
    CURLU *u = curl_url();
    CURLUcode uc;
    char *part = NULL;
    int rc = PS_OK;

    if (u == NULL)
        return ps_err_set(e, PS_ENOMEM, "http: %s: out of memory", what);
    uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        rc = ps_err_set(e, uc == CURLUE_OUT_OF_MEMORY ? PS_ENOMEM : PS_EINVAL,
                        "http: invalid %s: %s", what, curl_url_strerror(uc));
        goto done;
    }
    if (curl_url_get(u, CURLUPART_PASSWORD, &part, 0) == CURLUE_OK) {
        rc = add_secret(r, part);
        curl_free(part);
        part = NULL;
        if (rc != PS_OK) {
            ps_err_set(e, rc, "http: %s: out of memory", what);
            goto done;
        }
    }
done:
    curl_url_cleanup(u);
    return rc;
}

/*
 * tls.server_name (Go's tls.Config.ServerName: the SNI and verification
 * name) for an https URL whose host differs from it. libcurl 7.88 has no
 * option for this alone, so the request is addressed to server_name (curl
 * then sends it as SNI and verifies the certificate against it), the
 * connection is routed to the real host with CURLOPT_CONNECT_TO, and the
 * Host header keeps the real host, as Prometheus sends it. On success
 * *url_out is the rewritten URL (curl_free it) or NULL when nothing needs
 * rewriting. PS_OK, PS_EINVAL, PS_ENOMEM.
 */
static int apply_server_name(struct ps_http_req *r, const char *url,
                             const char *sn, char **url_out, struct ps_err *e)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *dport = NULL;
    int rc = PS_OK;

    *url_out = NULL;
    if (u == NULL)
        return ps_err_set(e, PS_ENOMEM, "http: out of memory");
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &dport, CURLU_DEFAULT_PORT) !=
            CURLUE_OK) {
        rc = ps_err_set(e, PS_EINVAL, "http: invalid url");
        goto done;
    }
    if (strcasecmp(scheme, "https") != 0 || strcasecmp(host, sn) == 0)
        goto done; /* nothing to do: plain http ignores server_name */
    if (strpbrk(sn, ":/[]@ \t\r\n") != NULL) {
        rc = ps_err_set(e, PS_EINVAL, "http: invalid tls server_name '%s'", sn);
        goto done;
    }
    curl_url_get(u, CURLUPART_PORT, &port, 0); /* NULL if none in the URL */
    if ((rc = add_header(r, "Host: %s%s%s", host, port ? ":" : "",
                         port ? port : "")) != PS_OK) {
        ps_err_set(e, rc, "http: out of memory");
        goto done;
    }
    {
        char line[600];
        struct curl_slist *l;
        snprintf(line, sizeof(line), "%s:%s:%s:%s", sn, dport, host, dport);
        l = curl_slist_append(r->connect_to, line);
        if (l == NULL) {
            rc = ps_err_set(e, PS_ENOMEM, "http: out of memory");
            goto done;
        }
        r->connect_to = l;
    }
    if (curl_url_set(u, CURLUPART_HOST, sn, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_URL, url_out, 0) != CURLUE_OK)
        rc = ps_err_set(e, PS_EINVAL, "http: invalid tls server_name '%s'", sn);
done:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(dport);
    curl_url_cleanup(u);
    return rc;
}

static int tls_version(const char *v, long *out)
{
    if (v == NULL || v[0] == '\0')
        *out = CURL_SSLVERSION_DEFAULT;
    else if (strcmp(v, "TLS10") == 0)
        *out = CURL_SSLVERSION_TLSv1_0;
    else if (strcmp(v, "TLS11") == 0)
        *out = CURL_SSLVERSION_TLSv1_1;
    else if (strcmp(v, "TLS12") == 0)
        *out = CURL_SSLVERSION_TLSv1_2;
    else if (strcmp(v, "TLS13") == 0)
        *out = CURL_SSLVERSION_TLSv1_3;
    else
        return PS_EINVAL;
    return PS_OK;
}

/* ---- secrets kept in files ---------------------------------------------- */

/* Replaces (or adds) the redaction copy of a secret: the old value is
 * wiped, since it may still be valid elsewhere. */
static int swap_secret(struct ps_http_req *r, const char *old, const char *s)
{
    int i;

    for (i = 0; old != NULL && i < MAX_SECRETS; i++) {
        if (r->secrets[i] != NULL && strcmp(r->secrets[i], old) == 0) {
            memset(r->secrets[i], 0, strlen(r->secrets[i]));
            ps_free(r->secrets[i]);
            r->secrets[i] = NULL;
            break;
        }
    }
    return add_secret(r, s);
}

/* Reads and trims (Go's strings.TrimSpace, as Prometheus) a secret file
 * into *out (ps_malloc'ed, caller frees). PS_OK, PS_EIO, PS_ELIMIT,
 * PS_ENOMEM; the message names the file, never the content. */
static int read_secret_file(const struct secret_file *sf, char **out,
                            struct ps_err *e)
{
    char *buf = ps_malloc(MAX_SECRET_FILE + 1);
    size_t n, s = 0;
    FILE *f;

    if (buf == NULL)
        return ps_err_set(e, PS_ENOMEM, "http: %s: out of memory", sf->field);
    f = fopen(sf->path, "rb");
    if (f == NULL) {
        ps_free(buf);
        return ps_err_set(e, PS_EIO, "http: %s: cannot read \"%s\": %s",
                          sf->field, sf->path, strerror(errno));
    }
    n = fread(buf, 1, MAX_SECRET_FILE + 1, f);
    fclose(f);
    if (n > MAX_SECRET_FILE) {
        memset(buf, 0, MAX_SECRET_FILE + 1);
        ps_free(buf);
        return ps_err_set(e, PS_ELIMIT, "http: %s: \"%s\" is over %d bytes",
                          sf->field, sf->path, MAX_SECRET_FILE);
    }
    while (n > 0 && strchr(" \t\r\n\v\f", buf[n - 1]) != NULL)
        n--;
    while (s < n && strchr(" \t\r\n\v\f", buf[s]) != NULL)
        s++;
    memmove(buf, buf + s, n - s);
    buf[n - s] = '\0';
    *out = buf;
    return PS_OK;
}

/* Puts the Authorization line in place of the old one: a fresh list keeps
 * the other headers in their order, then replaces the easy handle's. */
static int set_auth_header(struct ps_http_req *r, const char *type,
                           const char *cred)
{
    struct curl_slist *n = NULL, *l, *it;
    size_t len = strlen(type) + strlen(cred) + sizeof("Authorization:  ");
    char *line = ps_malloc(len);
    int found = 0;

    if (line == NULL)
        return PS_ENOMEM;
    snprintf(line, len, "Authorization: %s %s", type, cred);
    for (it = r->headers; it != NULL; it = it->next) {
        int auth = strncasecmp(it->data, "Authorization:", 14) == 0;
        l = curl_slist_append(n, auth ? line : it->data);
        if (l == NULL)
            goto oom;
        n = l;
        found |= auth;
    }
    if (!found) {
        if ((l = curl_slist_append(n, line)) == NULL)
            goto oom;
        n = l;
    }
    if (SETOPT(r->easy, CURLOPT_HTTPHEADER, n))
        goto oom;
    curl_slist_free_all(r->headers);
    r->headers = n;
    memset(line, 0, len);
    ps_free(line);
    return PS_OK;
oom:
    curl_slist_free_all(n);
    memset(line, 0, len);
    ps_free(line);
    return PS_ENOMEM;
}

/* Before each transfer: re-reads the secret file if it changed since the
 * last read (one stat per scrape, not one read). On failure the transfer
 * does not start and the next start tries again. */
static int refresh_secret(struct ps_http_req *r, struct ps_err *e)
{
    struct secret_file *sf = &r->sf;
    struct stat st;
    char *v = NULL;
    int rc;

    if (sf->path == NULL)
        return PS_OK;
    if (stat(sf->path, &st) != 0) {
        sf->known = 0;
        return ps_err_set(e, PS_EIO, "http: %s: cannot read \"%s\": %s",
                          sf->field, sf->path, strerror(errno));
    }
    /* a FIFO or a device would block the engine thread or never end */
    if (!S_ISREG(st.st_mode)) {
        sf->known = 0;
        return ps_err_set(e, PS_EIO, "http: %s: \"%s\" is not a regular file",
                          sf->field, sf->path);
    }
    if (sf->known && st.st_dev == sf->dev && st.st_ino == sf->ino &&
        st.st_size == sf->size && st.st_mtim.tv_sec == sf->mtim.tv_sec &&
        st.st_mtim.tv_nsec == sf->mtim.tv_nsec)
        return PS_OK;
    sf->known = 0;
    if ((rc = read_secret_file(sf, &v, e)) != PS_OK)
        return rc;
    if (!sf->is_password && strpbrk(v, "\r\n") != NULL) {
        rc = ps_err_set(e, PS_EINVAL,
                        "http: %s: \"%s\" holds a line break inside",
                        sf->field, sf->path);
        goto done;
    }
    rc = swap_secret(r, sf->value, v);
    if (rc == PS_OK)
        rc = sf->is_password
                 ? (SETOPT(r->easy, CURLOPT_PASSWORD, v) ? PS_ENOMEM : PS_OK)
                 : set_auth_header(r, sf->auth_type, v);
    if (rc != PS_OK) {
        rc = ps_err_set(e, rc, "http: %s: out of memory", sf->field);
        goto done;
    }
    if (sf->value != NULL) {
        memset(sf->value, 0, strlen(sf->value));
        ps_free(sf->value);
    }
    sf->value = v;
    v = NULL;
    sf->dev = st.st_dev;
    sf->ino = st.st_ino;
    sf->size = st.st_size;
    sf->mtim = st.st_mtim;
    sf->known = 1;
done:
    if (v != NULL) {
        memset(v, 0, strlen(v));
        ps_free(v);
    }
    return rc;
}

/* configure(): remembers which file holds the secret; read at start. */
static int setup_secret_file(struct ps_http_req *r,
                             const struct ps_http_req_opts *o,
                             struct ps_err *e)
{
    struct secret_file *sf = &r->sf;
    const char *path = o->basic_auth_password_file;

    if (path != NULL) {
        if (o->basic_auth_user == NULL || o->basic_auth_password != NULL ||
            o->auth_credentials_file != NULL)
            return ps_err_set(e, PS_EINVAL,
                              "http: basic_auth password_file needs a "
                              "user and no other secret");
        sf->field = "basic_auth.password_file";
        sf->is_password = 1;
    } else if ((path = o->auth_credentials_file) != NULL) {
        if (o->auth_credentials != NULL || o->basic_auth_user != NULL)
            return ps_err_set(e, PS_EINVAL,
                              "http: credentials_file with another secret");
        sf->field = "authorization.credentials_file";
        if (has_newline(o->auth_type))
            return ps_err_set(e, PS_EINVAL,
                              "http: header value contains a line break");
        sf->auth_type = ps_strndup(o->auth_type ? o->auth_type : "Bearer",
                                   strlen(o->auth_type ? o->auth_type
                                                       : "Bearer"));
        if (sf->auth_type == NULL)
            return ps_err_set(e, PS_ENOMEM, "http: out of memory");
    } else {
        return PS_OK;
    }
    sf->path = ps_strndup(path, strlen(path));
    return sf->path ? PS_OK : ps_err_set(e, PS_ENOMEM, "http: out of memory");
}

static void secret_file_cleanup(struct secret_file *sf)
{
    if (sf->value != NULL) {
        memset(sf->value, 0, strlen(sf->value));
        ps_free(sf->value);
    }
    ps_free(sf->path);
    ps_free(sf->auth_type);
    memset(sf, 0, sizeof(*sf));
}

/* All the options; a failing setopt means libcurl lacks a feature or memory. */
static int configure(struct ps_http_req *r, const struct ps_http_req_opts *o,
                     struct ps_err *e)
{
    CURL *c = r->easy;
    char *url = NULL; /* rewritten for tls.server_name; curl_free */
    long sslver;
    int rc, fail = 0, i;

    if (o->url == NULL || o->url[0] == '\0')
        return ps_err_set(e, PS_EINVAL, "http: url is required");
    if (o->timeout_ms < 0)
        return ps_err_set(e, PS_EINVAL, "http: negative timeout");
    if (o->basic_auth_user != NULL && o->auth_credentials != NULL)
        return ps_err_set(e, PS_EINVAL,
                          "http: at most one of basic_auth "
                          "and authorization may be set");
    if (tls_version(o->tls.min_version, &sslver) != PS_OK)
        return ps_err_set(e, PS_EINVAL, "http: unknown tls min_version '%s'",
                          o->tls.min_version);
    if (has_newline(o->accept) || has_newline(o->user_agent) ||
        has_newline(o->auth_type) || has_newline(o->auth_credentials))
        return ps_err_set(e, PS_EINVAL,
                          "http: header value contains a "
                          "line break");
    for (i = 0; o->headers != NULL && o->headers[i] != NULL; i++)
        if (has_newline(o->headers[i]) || strchr(o->headers[i], ':') == NULL)
            return ps_err_set(e, PS_EINVAL,
                              "http: extra header %d is not a "
                              "single 'Name: value' line",
                              i + 1);

    if ((rc = setup_secret_file(r, o, e)) != PS_OK)
        return rc;
    /* secrets first, so every later message can be redacted */
    if ((rc = add_secret(r, o->basic_auth_password)) != PS_OK ||
        (rc = add_secret(r, o->auth_credentials)) != PS_OK)
        return ps_err_set(e, rc, "http: out of memory");
    if ((rc = check_url(r, o->url, "url", e)) != PS_OK)
        return rc;
    if (o->proxy_url != NULL &&
        (rc = check_url(r, o->proxy_url, "proxy_url", e)) != PS_OK)
        return rc;
    if (o->tls.server_name != NULL && o->tls.server_name[0] != '\0' &&
        (rc = apply_server_name(r, o->url, o->tls.server_name, &url, e)))
        return rc;

    /* headers: Prometheus's set, then the caller's */
    if (o->accept != NULL && (rc = add_header(r, "Accept: %s", o->accept)))
        goto oom;
    if (o->disable_compression &&
        (rc = add_header(r, "Accept-Encoding: identity")))
        goto oom;
    if (o->post && (rc = add_header(r, "Expect:"))) /* no 100-continue */
        goto oom;
    if (o->timeout_ms > 0 && !o->post) {
        char secs[32];
        fmt_duration(secs, sizeof(secs), o->timeout_ms, 0);
        if ((rc = add_header(r, "X-Prometheus-Scrape-Timeout-Seconds: %s",
                             secs)))
            goto oom;
    }
    if (o->auth_credentials != NULL &&
        (rc = add_header(r, "Authorization: %s %s",
                         o->auth_type ? o->auth_type : "Bearer",
                         o->auth_credentials)))
        goto oom;
    for (i = 0; o->headers != NULL && o->headers[i] != NULL; i++)
        if ((rc = add_header(r, "%s", o->headers[i])))
            goto oom;

    r->timeout_ms = o->timeout_ms;
    r->limit = o->body_size_limit;
    r->post = o->post != 0;
    if (r->post)
        fail |= SETOPT(c, CURLOPT_POST, 1L);
    fail |= SETOPT(c, CURLOPT_PRIVATE, (void *)r);
    fail |= SETOPT(c, CURLOPT_URL, url ? url : o->url);
    curl_free(url); /* curl copied it */
    url = NULL;
    if (r->h->unix_socket != NULL) /* test seam, see ps_http_opts */
        fail |= r->h->unix_socket[0] == '@'
                    ? SETOPT(c, CURLOPT_ABSTRACT_UNIX_SOCKET,
                             r->h->unix_socket + 1)
                    : SETOPT(c, CURLOPT_UNIX_SOCKET_PATH, r->h->unix_socket);
    if (r->connect_to != NULL)
        fail |= SETOPT(c, CURLOPT_CONNECT_TO, r->connect_to);
    fail |= SETOPT(c, CURLOPT_PROTOCOLS_STR, "http,https");
    fail |= SETOPT(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    fail |= SETOPT(c, CURLOPT_NOSIGNAL, 1L);
    fail |= SETOPT(c, CURLOPT_ERRORBUFFER, r->errbuf);
    fail |= SETOPT(c, CURLOPT_WRITEFUNCTION, on_write);
    fail |= SETOPT(c, CURLOPT_WRITEDATA, (void *)r);
    fail |= SETOPT(c, CURLOPT_USERAGENT,
                   o->user_agent ? o->user_agent : "promscrape/" PS_VERSION);
    if (!o->disable_compression) /* curl then decodes before on_write */
        fail |= SETOPT(c, CURLOPT_ACCEPT_ENCODING, "gzip");
    fail |= SETOPT(c, CURLOPT_HTTPHEADER, r->headers);
    fail |= SETOPT(c, CURLOPT_TIMEOUT_MS, o->timeout_ms);
    if (o->basic_auth_user != NULL) {
        const char *pw = o->basic_auth_password ? o->basic_auth_password : "";
        fail |= SETOPT(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        fail |= SETOPT(c, CURLOPT_USERNAME, o->basic_auth_user);
        fail |= SETOPT(c, CURLOPT_PASSWORD, pw);
    }
    fail |= SETOPT(c, CURLOPT_FOLLOWLOCATION,
                   o->disable_follow_redirects ? 0L : 1L);
    fail |= SETOPT(c, CURLOPT_MAXREDIRS, MAX_REDIRECTS);
    fail |= SETOPT(c, CURLOPT_HTTP_VERSION,
                   o->disable_http2 ? (long)CURL_HTTP_VERSION_1_1
                                    : (long)CURL_HTTP_VERSION_2TLS);
    if (o->proxy_url != NULL)
        fail |= SETOPT(c, CURLOPT_PROXY, o->proxy_url);
    if (o->tls.ca_file != NULL)
        fail |= SETOPT(c, CURLOPT_CAINFO, o->tls.ca_file);
    if (o->tls.cert_file != NULL)
        fail |= SETOPT(c, CURLOPT_SSLCERT, o->tls.cert_file);
    if (o->tls.key_file != NULL)
        fail |= SETOPT(c, CURLOPT_SSLKEY, o->tls.key_file);
    if (o->tls.insecure_skip_verify) {
        fail |= SETOPT(c, CURLOPT_SSL_VERIFYPEER, 0L);
        fail |= SETOPT(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    fail |= SETOPT(c, CURLOPT_SSLVERSION, sslver);
    if (fail)
        return ps_err_set(e, PS_EIO,
                          "http: libcurl rejected an option "
                          "(out of memory or missing feature)");
    return PS_OK;
oom:
    curl_free(url);
    return ps_err_set(e, rc, "http: out of memory building headers");
}

/* Automatic connection cache size: room for one idle connection per live
 * request, doubled on growth (so setopt runs O(log n) times); never
 * shrunk. A refused setopt keeps the old size (best effort). */
static void grow_maxconn(struct ps_http *h)
{
    long want;

    if (h->maxconn_fixed > 0 || (size_t)h->maxconn >= h->nreqs)
        return;
    want = h->maxconn * 2;
    while ((size_t)want < h->nreqs)
        want *= 2;
    if (curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, want) == CURLM_OK)
        h->maxconn = want;
}

int ps_http_request_new(struct ps_http *h, struct ps_http_req **out,
                        const struct ps_http_req_opts *o, struct ps_err *e)
{
    struct ps_http_req *r;
    int rc;

    if (h == NULL || out == NULL || o == NULL)
        return ps_err_set(e, PS_EINVAL, "http: missing argument");
    r = ps_calloc(1, sizeof(*r));
    if (r == NULL)
        return ps_err_set(e, PS_ENOMEM, "http: out of memory");
    r->h = h; /* linked in below: every exit path can free r */
    r->next = h->reqs;
    if (h->reqs != NULL)
        h->reqs->prev = r;
    h->reqs = r;
    r->easy = curl_easy_init();
    if (r->easy == NULL) {
        rc = ps_err_set(e, PS_ENOMEM, "http: curl_easy_init failed");
        goto fail;
    }
    rc = configure(r, o, e);
    if (rc != PS_OK)
        goto fail;
    h->nreqs++;
    r->counted = 1;
    grow_maxconn(h);
    *out = r;
    return PS_OK;
fail:
    ps_http_request_free(r);
    return rc;
}

void ps_http_request_free(struct ps_http_req *r)
{
    int i;

    if (r == NULL)
        return;
    stop_transfer(r);
    unlink_req(r);
    if (r->easy != NULL)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    curl_slist_free_all(r->connect_to);
    secret_file_cleanup(&r->sf);
    for (i = 0; i < MAX_SECRETS; i++) {
        if (r->secrets[i] != NULL) {
            memset(r->secrets[i], 0, strlen(r->secrets[i]));
            ps_free(r->secrets[i]);
        }
    }
    ps_free(r->buf);
    ps_free(r);
}
