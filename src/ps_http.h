/*
 * ps_http: non-blocking HTTP GET for scrapes (and POST for remote write,
 * see opts.post), on one libcurl multi handle.
 * See docs/http.md. This is the only module that includes <curl/curl.h>.
 *
 * - struct ps_http owns the multi handle, hence the connection cache and
 *   DNS cache shared by every request started from it.
 * - struct ps_http_req is one reusable scrape request (a target): the easy
 *   handle is configured once in ps_http_request_new() and restarted with
 *   ps_http_start() every scrape. It owns a body buffer that is reused,
 *   pre-sized to the last body and capped by body_size_limit.
 * - Progress happens only in ps_http_wait()/ps_http_perform(), called from
 *   the loop thread (ps_engine does this); completion callbacks run there.
 *
 * Threading: everything runs on one thread, except ps_http_wakeup(), which
 * any thread may call to interrupt ps_http_wait(). Call
 * ps_http_global_init() once per process before starting threads.
 *
 * Only status 200 is success. Error messages are short, human, and never
 * contain the configured secrets (password, credentials, key file paths are
 * not secrets; proxy URL userinfo is redacted too).
 */
#ifndef PS_HTTP_H
#define PS_HTTP_H

#include "ps_core.h"

#include <stddef.h>
#include <stdint.h>

struct ps_http;
struct ps_http_req;

/*
 * Process-wide libcurl initialisation (curl_global_init). Call once, before
 * any other thread runs (the Lua module does it in luaopen; C embedders in
 * main). Optional: without it libcurl initialises itself lazily on the first
 * ps_http_new(), which is only safe if no other thread is using curl.
 * ps_http_global_cleanup() pairs with it, at process exit (tests call it so
 * leak checkers see a clean heap). PS_OK or PS_EIO.
 */
int ps_http_global_init(struct ps_err *e);
void ps_http_global_cleanup(void);

struct ps_http_opts {
    long max_connects; /* connection cache size; 0: 100, grown to
                        * the number of live requests */
    /*
     * Test seam, for fuzzers and tests only (NULL in real use): a fake
     * transport. When set, every connection of every request on this
     * client, redirects to other hosts included, goes to this AF_UNIX
     * stream socket instead of the URL's host and port, so no name is
     * resolved and no TCP is used; what is sent (Host, path, scheme) is
     * unchanged. A leading '@' names a Linux abstract socket ("@x" is
     * "\0x"). Copied. See docs/http.md.
     */
    const char *test_unix_socket;
};

/* Creates a client. o may be NULL (defaults). PS_OK, PS_ENOMEM or PS_EIO;
 * *out written only on success. */
int ps_http_new(struct ps_http **out, const struct ps_http_opts *o,
                struct ps_err *e);
/* NULL-safe. Requests still in flight are cancelled without callbacks and
 * detached: ps_http_start() on them then fails with PS_ESTATE, and they must
 * still be freed with ps_http_request_free(). */
void ps_http_free(struct ps_http *h);

/* TLS settings; zero means the library default (verify against the system
 * CA store). */
struct ps_http_tls_opts {
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    const char *server_name; /* see docs/http.md: PS_ENOTSUP when it differs
                              * from the URL host (libcurl 7.88 cannot set
                              * the SNI/verification name on its own) */
    int insecure_skip_verify;
    const char *min_version; /* "TLS10", "TLS11", "TLS12", "TLS13" or NULL */
};

/*
 * One scrape request. Zero-initialised options give Prometheus's defaults:
 * follow redirects (at most 10), HTTP/2 over TLS, gzip, no size limit.
 * Every string is copied (by us or by libcurl): the options may be freed
 * once ps_http_request_new() returns.
 */
struct ps_http_req_opts {
    const char *url;             /* required: http:// or https:// */
    const char *accept;          /* Accept header value, or NULL */
    const char *const *headers;  /* extra "Name: value" lines, NULL-ended */
    const char *user_agent;      /* NULL: "promscrape/" PS_VERSION */
    long timeout_ms;             /* whole transfer; also sent as
                                  * X-Prometheus-Scrape-Timeout-Seconds.
                                  * 0: no timeout, no header */
    size_t body_size_limit;      /* decompressed bytes; 0: no limit */
    int disable_compression;     /* no Accept-Encoding: gzip */
    const char *basic_auth_user; /* basic auth if user is non-NULL */
    const char *basic_auth_password;
    const char *auth_type;        /* NULL: "Bearer" */
    const char *auth_credentials; /* Authorization: <type> <credentials> */
    /*
     * The password or the credentials kept in a file instead (Prometheus's
     * password_file, credentials_file, bearer_token_file). The file is read
     * when a transfer starts and again whenever its inode, size or mtime
     * changed, so a rotated secret is used without a reload, as Prometheus
     * reads it per request. A file that cannot be read fails that transfer
     * (ps_http_start: PS_EIO naming the file, never its content). The
     * password file needs basic_auth_user; neither may be combined with the
     * inline secret it replaces.
     */
    const char *basic_auth_password_file;
    const char *auth_credentials_file;
    struct ps_http_tls_opts tls;
    const char *proxy_url;
    int disable_follow_redirects;
    int disable_http2; /* HTTP/1.1 only */
    /*
     * A POST request (remote write) instead of a scrape GET. It is started
     * with ps_http_start_post() (ps_http_start() on it is PS_ESTATE, and
     * ps_http_start_post() on a GET request too). It also changes what the
     * scrape-specific defaults do: no X-Prometheus-Scrape-Timeout-Seconds
     * header, no "Expect: 100-continue" round trip, any 2xx status is
     * success, and up to PS_HTTP_ERRBODY_MAX bytes of a non-2xx body are
     * kept (in the result's body) and quoted in the error message, since a
     * remote-write server explains its rejections there.
     */
    int post;
};

#define PS_HTTP_ERRBODY_MAX 1024

/* The body limit (decompressed bytes) a scrape or an http_get gets when
 * the config says nothing: a gzip bomb or a runaway target stops here
 * instead of taking the process's memory. Prometheus has no default limit;
 * a config that sets body_size_limit: 0 explicitly still gets none.
 * lua/promscrape/config.lua repeats this value for the global default. */
#define PS_HTTP_DEFAULT_BODY_LIMIT ((size_t)64 << 20)

/* Creates a request on h. PS_OK, PS_EINVAL (bad options: message says
 * which, without secrets), PS_ENOTSUP, PS_ENOMEM; *out only on success. */
int ps_http_request_new(struct ps_http *h, struct ps_http_req **out,
                        const struct ps_http_req_opts *o, struct ps_err *e);
/* NULL-safe. Cancels the transfer if in flight (no callback). May be called
 * from the request's own completion callback. */
void ps_http_request_free(struct ps_http_req *r);

/*
 * What a finished transfer gives its callback. Everything is borrowed:
 * content_type and error are valid during the callback only (and not after
 * the callback frees the request); body stays valid until the next
 * ps_http_start() or ps_http_request_free() of the request. On a transport
 * error the body holds what arrived (possibly partial); the body of a
 * non-200 answer is discarded, as Prometheus does.
 */
struct ps_http_result {
    int rc;                   /* PS_OK; PS_EIO transport, timeout or status;
                               * PS_ELIMIT body too big; PS_EPARSE bad gzip;
                               * PS_ENOMEM */
    long status;              /* last HTTP status seen, 0 if none */
    const char *content_type; /* "" if none */
    const char *body;         /* never NULL; NUL-terminated for convenience */
    size_t body_len;
    uint64_t duration_ns;  /* from ps_http_start() to completion */
    int timed_out;         /* 1 when the timeout ended the transfer */
    const char *error;     /* "" on success, else a human message */
    int64_t retry_after_s; /* the answer's Retry-After in seconds (an
                            * HTTP date is converted), 0 when absent */
};

/* Runs on the loop thread, inside ps_http_perform(). It may restart this
 * request, start/cancel/free others, or free this one. */
typedef void (*ps_http_done_fn)(struct ps_http_req *r,
                                const struct ps_http_result *res, void *ud);

/* Starts a transfer. PS_OK; PS_ESTATE if already in flight or detached;
 * PS_ENOMEM (the body buffer is pre-sized here); PS_EIO if curl refuses.
 * On failure no callback will run. */
int ps_http_start(struct ps_http_req *r, ps_http_done_fn done, void *ud,
                  struct ps_err *e);
/* Starts a POST of body[0..len) on a request made with opts.post = 1.
 * body is borrowed: it must stay valid and unchanged until the completion
 * callback runs or the transfer is cancelled or freed. Failures as
 * ps_http_start(), plus PS_ESTATE on a GET request. */
int ps_http_start_post(struct ps_http_req *r, const void *body, size_t len,
                       ps_http_done_fn done, void *ud, struct ps_err *e);
/* Aborts the transfer if in flight, without a callback; else a no-op. */
void ps_http_cancel(struct ps_http_req *r);
int ps_http_busy(const struct ps_http_req *r); /* 1 while in flight */
size_t ps_http_inflight(const struct ps_http *h);

/*
 * The loop. ps_http_wait() blocks up to timeout_ms (capped by curl's own
 * timers) until a socket is ready or ps_http_wakeup() is called;
 * ps_http_perform() then drives the transfers and runs the completion
 * callbacks. Both return PS_OK, or PS_EIO if libcurl's multi interface fails
 * (then the client is unusable).
 */
int ps_http_wait(struct ps_http *h, int timeout_ms, struct ps_err *e);
int ps_http_perform(struct ps_http *h, struct ps_err *e);
/* ps_http_wait that also watches the caller's fds (the engine's listener
 * and signal pipe) in the same curl_multi_poll, so the loop wakes for
 * either without polling in slices. fds[i].revents is set on return (POLLIN
 * and POLLOUT only: curl reports nothing else; a hangup reads as POLLIN).
 * fds with fd < 0 are ignored. PS_OK, PS_EIO or PS_ENOMEM. */
struct pollfd;
int ps_http_wait_fds(struct ps_http *h, struct pollfd *fds, unsigned n,
                     int timeout_ms, struct ps_err *e);
/* Thread-safe: makes a current or the next ps_http_wait() return early. */
void ps_http_wakeup(struct ps_http *h);

#endif
