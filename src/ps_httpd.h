/*
 * ps_httpd: a small non-blocking HTTP/1.1 server on a ps_engine, for
 * `promscrape run --listen` (/federate, /api/v1/targets).
 *
 * It accepts GET and HEAD only, never blocks the scrape loop and bounds
 * everything a client controls:
 * - the request line plus headers (max_head bytes, 8 KiB by default:
 *   431 beyond, 400 for a malformed head; at most max_headers headers);
 * - the time to send a request head (read_timeout_ms) and the time a
 *   keep-alive connection may stay idle (idle_timeout_ms), then it is
 *   closed; the time to take a response (write_timeout_ms);
 * - the number of connections (max_conns): at the limit the listening
 *   socket is not watched, so further clients wait in the kernel backlog.
 * Other methods get 405, a request body 400, another HTTP version 505,
 * all with "Connection: close". Keep-alive follows HTTP/1.1 (1.0: only
 * with "Connection: keep-alive"). One request per connection is in
 * progress at a time; pipelined requests wait their turn.
 *
 * Requests are queued, not dispatched: after stepping the engine, the
 * owner pops them with ps_httpd_next() and answers each with
 * ps_httpd_respond(), which queues the response for non-blocking writing.
 * This lets the Lua binding run its handler on the Lua thread between
 * engine steps. A popped request must be answered (or the server freed).
 *
 * Ownership: the server borrows the engine (which must outlive it) and
 * owns its sockets and connections. Everything runs on the engine thread.
 */
#ifndef PS_HTTPD_H
#define PS_HTTPD_H

#include "ps_core.h"
#include "ps_engine.h"

#include <stddef.h>

struct ps_httpd;

struct ps_httpd_opts {
    const char *addr;     /* "127.0.0.1:9099", "[::1]:0", "localhost:80":
                           * host required; port 0 picks a free one */
    size_t max_conns;     /* 0: 64 */
    size_t max_head;      /* request line + headers; 0: 8192 */
    size_t max_headers;   /* 0: 100 */
    int read_timeout_ms;  /* first byte to end of head; 0: 10000 */
    int idle_timeout_ms;  /* keep-alive wait for a request; 0: 30000 */
    int write_timeout_ms; /* to send one response; 0: 30000 */
};

/* Header views: names lowercased; NUL-terminated strings. */
struct ps_httpd_header {
    const char *name;
    const char *value;
};

/* A parsed request, owned by the server: valid until ps_httpd_respond()
 * or ps_httpd_free(). path and query are raw (not percent-decoded); query
 * is NULL without '?'. */
struct ps_httpd_req {
    const char *method; /* "GET" or "HEAD" */
    const char *path;
    const char *query;
    const char *version; /* "HTTP/1.1" or "HTTP/1.0" */
    const struct ps_httpd_header *headers;
    size_t n_headers;
};

/*
 * Binds and listens on o->addr (SO_REUSEADDR, non-blocking) and watches
 * the socket on eng. PS_OK; PS_EINVAL (bad address, with a message);
 * PS_EIO (bind/listen failed: the message has the system's reason);
 * PS_ENOMEM. *out only on success.
 */
int ps_httpd_new(struct ps_httpd **out, struct ps_engine *eng,
                 const struct ps_httpd_opts *o, struct ps_err *e);
/* Closes every connection (queued requests are dropped) and the listening
 * socket. NULL-safe. Not from an engine callback. */
void ps_httpd_free(struct ps_httpd *h);

/* The bound address, "127.0.0.1:PORT" or "[::1]:PORT". Borrowed. */
const char *ps_httpd_address(const struct ps_httpd *h);

/* Pops the oldest request waiting for an answer, or NULL. */
struct ps_httpd_req *ps_httpd_next(struct ps_httpd *h);

/*
 * Answers r (which is consumed in every case) with status, the headers
 * hdrs[0..n) ("Content-Length", "Connection" and "Transfer-Encoding" are
 * set by the server and ignored here; "Content-Type" defaults to
 * text/plain) and body[0..len) (copied; not sent for HEAD). PS_OK;
 * PS_EINVAL when a header name or value is malformed (a 500 is sent
 * instead); PS_ENOMEM (the connection is closed).
 */
int ps_httpd_respond(struct ps_httpd *h, struct ps_httpd_req *r, int status,
                     const struct ps_httpd_header *hdrs, size_t n,
                     const void *body, size_t len, struct ps_err *e);

/* Counters, for tests and status pages. */
size_t ps_httpd_nconns(const struct ps_httpd *h);
size_t ps_httpd_npending(const struct ps_httpd *h); /* queued, not popped */

/* The reason phrase of an HTTP status ("" if unknown). */
const char *ps_httpd_status_text(int status);

#endif
