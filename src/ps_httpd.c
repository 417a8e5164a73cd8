/* ps_httpd: a minimal non-blocking HTTP/1.1 server (see ps_httpd.h). */
#include "ps_httpd.h"

#include "ps_buf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* BSDs: SO_NOSIGPIPE is set on each socket */
#endif

enum conn_state {
    C_READ,   /* waiting for (the rest of) a request head */
    C_QUEUED, /* parsed; waiting in the queue or popped by the owner */
    C_WRITE   /* sending a response */
};

struct conn {
    struct ps_httpd *h;
    struct conn *prev, *next; /* every connection */
    struct conn *qnext;       /* request queue */
    int fd;
    enum conn_state state;
    struct ps_engine_io io;
    struct ps_timer timer;
    char *in;                /* max_head + 1 bytes */
    size_t in_len, head_len; /* head_len: bytes of the parsed head */
    struct ps_buf out;
    size_t out_off;
    int keep_alive, head_only;
    struct ps_httpd_req req;      /* views into `in` */
    struct ps_httpd_header *hdrs; /* max_headers */
};

struct ps_httpd {
    struct ps_engine *eng;
    struct ps_httpd_opts o; /* resolved defaults; addr not kept */
    int fd;
    struct ps_engine_io io;
    struct conn *conns;
    size_t nconns, npending;
    struct conn *qhead, *qtail;
    char addr[INET6_ADDRSTRLEN + 16];
};

const char *ps_httpd_status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
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
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "";
    }
}

/* ---- connections --------------------------------------------------------- */

static void on_conn_io(struct ps_engine_io *io, unsigned revents, void *ud);
static void on_conn_timer(struct ps_timer *t, void *ud);
static void watch_listener(struct ps_httpd *h);

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static void conn_close(struct conn *c)
{
    struct ps_httpd *h = c->h;

    ps_engine_io_remove(h->eng, &c->io);
    ps_engine_timer_cancel(h->eng, &c->timer);
    close(c->fd);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    h->nconns--;
    ps_buf_cleanup(&c->out);
    ps_free(c->in);
    ps_free(c->hdrs);
    ps_free(c);
    watch_listener(h); /* room for one more */
}

/* Arms the connection's single timer. A failure (heap growth) closes the
 * connection, as an unbounded wait is not allowed. Returns 0 if closed. */
static int conn_deadline(struct conn *c, int ms)
{
    if (ps_engine_timer_in(c->h->eng, &c->timer, (uint64_t)ms) != PS_OK) {
        conn_close(c);
        return 0;
    }
    return 1;
}

static void on_conn_timer(struct ps_timer *t, void *ud)
{
    (void)t;
    conn_close(ud); /* a slow or idle client */
}

/* Starts writing c->out: tries at once (most responses fit the socket
 * buffer), else waits for POLLOUT. */
static void conn_send(struct conn *c);

static void conn_start_write(struct conn *c)
{
    c->state = C_WRITE;
    c->out_off = 0;
    if (!conn_deadline(c, c->h->o.write_timeout_ms))
        return;
    ps_engine_io_set(&c->io, PS_IO_WRITE);
    conn_send(c);
}

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') || strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static int is_token(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return 0;
    return 1;
}

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 && *s != '\t')
            return 1;
    return 0;
}

/* The status line and the server's own headers. */
static int put_head(struct ps_buf *b, int status, size_t len, int keep)
{
    return ps_buf_printf(b,
                         "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n"
                         "Connection: %s\r\n",
                         status, ps_httpd_status_text(status), len,
                         keep ? "keep-alive" : "close");
}

/* An error the server answers itself, then closes. */
static void conn_fail(struct conn *c, int status, const char *extra)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "%d %s\n", status,
                     ps_httpd_status_text(status));

    c->keep_alive = 0;
    ps_buf_reset(&c->out);
    if (put_head(&c->out, status, (size_t)n, 0) != PS_OK ||
        ps_buf_printf(&c->out,
                      "Content-Type: text/plain; charset=utf-8\r\n"
                      "%s\r\n%s",
                      extra ? extra : "", body) != PS_OK) {
        conn_close(c);
        return;
    }
    conn_start_write(c);
}

static const char *header_of(const struct conn *c, const char *name)
{
    size_t i;

    for (i = 0; i < c->req.n_headers; i++)
        if (strcmp(c->hdrs[i].name, name) == 0)
            return c->hdrs[i].value;
    return NULL;
}

/* Case-insensitive search for a token in a comma list ("close"). */
static int list_has(const char *v, const char *tok)
{
    size_t n = strlen(tok);

    while (v != NULL && *v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        if (strncasecmp(v, tok, n) == 0 &&
            (v[n] == '\0' || v[n] == ',' || v[n] == ' ' || v[n] == '\t'))
            return 1;
        while (*v && *v != ',')
            v++;
    }
    return 0;
}

/* Cuts the next line of the head at *p (ending "\r\n" or "\n"), returns
 * it NUL-terminated and advances *p. */
static char *next_line(char **p)
{
    char *s = *p, *nl = strchr(s, '\n');

    if (nl == NULL) { /* cannot happen: the head ends with a blank line */
        *p = s + strlen(s);
        return s;
    }
    *nl = '\0';
    if (nl > s && nl[-1] == '\r')
        nl[-1] = '\0';
    *p = nl + 1;
    return s;
}

/* Parses the head in c->in[0..head_len) in place. Returns 0 when the
 * request is queued, else the status of the error to send. */
static int parse_head(struct conn *c)
{
    char *p = c->in, *line, *sp1, *sp2, *q;
    const char *cl, *te;
    size_t nh = 0;

    /* lines are cut in place; the blank line ends the loop below before
     * any pipelined bytes after the head */
    line = next_line(&p);
    sp1 = strchr(line, ' ');
    sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || strchr(sp2 + 1, ' ') != NULL)
        return 400;
    *sp1 = *sp2 = '\0';
    c->req.method = line;
    c->req.path = sp1 + 1;
    c->req.version = sp2 + 1;
    if (!is_token(c->req.method) || c->req.path[0] != '/' ||
        has_ctl(c->req.path))
        return 400;
    if (strncmp(c->req.version, "HTTP/", 5) != 0)
        return 400;
    if (strcmp(c->req.version, "HTTP/1.1") != 0 &&
        strcmp(c->req.version, "HTTP/1.0") != 0)
        return 505;
    q = strchr(sp1 + 1, '?');
    c->req.query = NULL;
    if (q != NULL) {
        *q = '\0';
        c->req.query = q + 1;
    }
    while (*p != '\0') {
        char *colon, *v, *end;

        line = next_line(&p);
        if (line[0] == '\0')
            break;
        if (line[0] == ' ' || line[0] == '\t') /* obs-fold */
            return 400;
        colon = strchr(line, ':');
        if (colon == NULL)
            return 400;
        *colon = '\0';
        if (!is_token(line))
            return 400;
        if (nh == c->h->o.max_headers)
            return 431;
        for (v = line; *v; v++)
            if (*v >= 'A' && *v <= 'Z')
                *v = (char)(*v - 'A' + 'a');
        v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        end = v + strlen(v);
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (has_ctl(v))
            return 400;
        c->hdrs[nh].name = line;
        c->hdrs[nh].value = v;
        nh++;
    }
    c->req.headers = c->hdrs;
    c->req.n_headers = nh;
    if (strcmp(c->req.method, "GET") != 0 && strcmp(c->req.method, "HEAD") != 0)
        return 405;
    cl = header_of(c, "content-length");
    te = header_of(c, "transfer-encoding");
    if (te != NULL || (cl != NULL && strcmp(cl, "0") != 0))
        return 400; /* GET and HEAD take no body here */
    c->head_only = strcmp(c->req.method, "HEAD") == 0;
    if (strcmp(c->req.version, "HTTP/1.1") == 0)
        c->keep_alive = !list_has(header_of(c, "connection"), "close");
    else
        c->keep_alive = list_has(header_of(c, "connection"), "keep-alive");
    return 0;
}

/* Looks for a complete head in c->in; queues it or answers an error.
 * Returns 1 if the connection is still reading. */
static int try_parse(struct conn *c)
{
    struct ps_httpd *h = c->h;
    size_t i;
    int st;

    for (i = 0; i < c->in_len; i++) {
        /* the head ends at "\n\r\n" or "\n\n"; leading blank lines of a
         * request are not allowed here (400) */
        if (c->in[i] != '\n')
            continue;
        if (i + 1 < c->in_len && c->in[i + 1] == '\n') {
            c->head_len = i + 2;
            break;
        }
        if (i + 2 < c->in_len && c->in[i + 1] == '\r' && c->in[i + 2] == '\n') {
            c->head_len = i + 3;
            break;
        }
    }
    if (i == c->in_len) { /* incomplete */
        if (c->in_len >= h->o.max_head) {
            conn_fail(c, 431, NULL);
            return 0;
        }
        return 1;
    }
    if (memchr(c->in, '\0', c->head_len) != NULL) {
        conn_fail(c, 400, NULL);
        return 0;
    }
    st = parse_head(c);
    if (st != 0) {
        conn_fail(c, st, st == 405 ? "Allow: GET, HEAD\r\n" : NULL);
        return 0;
    }
    /* queued: stop reading and timing until the owner answers */
    ps_engine_timer_cancel(h->eng, &c->timer);
    ps_engine_io_set(&c->io, 0);
    c->state = C_QUEUED;
    c->qnext = NULL;
    if (h->qtail != NULL)
        h->qtail->qnext = c;
    else
        h->qhead = c;
    h->qtail = c;
    h->npending++;
    return 0;
}

static void conn_read(struct conn *c)
{
    struct ps_httpd *h = c->h;

    for (;;) {
        size_t room = h->o.max_head - c->in_len;
        ssize_t n;

        if (room == 0) {
            try_parse(c);
            return;
        }
        n = recv(c->fd, c->in + c->in_len, room, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
                       errno != EINTR)) {
            conn_close(c); /* peer gone (or reset) */
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* drained */
        }
        if (c->in_len == 0 && !conn_deadline(c, h->o.read_timeout_ms))
            return; /* first byte of a request: the read deadline */
        c->in_len += (size_t)n;
        c->in[c->in_len] = '\0';
        if (!try_parse(c))
            return;
    }
}

/* The next request on a kept-alive connection: keeps pipelined bytes. */
static void conn_reset(struct conn *c)
{
    size_t left = c->in_len - c->head_len;

    memmove(c->in, c->in + c->head_len, left);
    c->in_len = left;
    c->in[left] = '\0';
    c->head_len = 0;
    memset(&c->req, 0, sizeof(c->req));
    ps_buf_reset(&c->out);
    c->state = C_READ;
    ps_engine_io_set(&c->io, PS_IO_READ);
    if (!conn_deadline(c, left ? c->h->o.read_timeout_ms
                               : c->h->o.idle_timeout_ms))
        return;
    if (left > 0)
        try_parse(c);
}

static void conn_send(struct conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
                         MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* wait for POLLOUT */
        if (n <= 0) {
            conn_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    if (!c->keep_alive) {
        shutdown(c->fd, SHUT_WR);
        conn_close(c);
        return;
    }
    conn_reset(c);
}

static void on_conn_io(struct ps_engine_io *io, unsigned revents, void *ud)
{
    struct conn *c = ud;

    (void)io;
    if (c->state == C_READ && (revents & (PS_IO_READ | PS_IO_ERROR)))
        conn_read(c);
    else if (c->state == C_WRITE && (revents & (PS_IO_WRITE | PS_IO_ERROR)))
        conn_send(c);
}

static void accept_one(struct ps_httpd *h, int fd)
{
    struct conn *c = ps_calloc(1, sizeof(*c));

    if (c == NULL || (c->in = ps_malloc(h->o.max_head + 1)) == NULL ||
        (c->hdrs = ps_calloc(h->o.max_headers, sizeof(*c->hdrs))) == NULL)
        goto fail;
    c->h = h;
    c->fd = fd;
    c->in[0] = '\0';
    ps_buf_init(&c->out, 0);
    ps_timer_init(&c->timer, on_conn_timer, c);
    ps_engine_io_init(&c->io, fd, on_conn_io, c);
    if (ps_engine_io_add(h->eng, &c->io, PS_IO_READ) != PS_OK)
        goto fail;
    if (ps_engine_timer_in(h->eng, &c->timer, (uint64_t)h->o.idle_timeout_ms) !=
        PS_OK) {
        ps_engine_io_remove(h->eng, &c->io);
        goto fail;
    }
    c->next = h->conns;
    if (h->conns != NULL)
        h->conns->prev = c;
    h->conns = c;
    h->nconns++;
    return;
fail: /* out of memory: refuse this client */
    if (c != NULL) {
        ps_free(c->in);
        ps_free(c->hdrs);
        ps_free(c);
    }
    close(fd);
}

/* ---- listener ------------------------------------------------------------ */

static void watch_listener(struct ps_httpd *h)
{
    ps_engine_io_set(&h->io, h->nconns < h->o.max_conns ? PS_IO_READ : 0);
}

static void on_listen(struct ps_engine_io *io, unsigned revents, void *ud)
{
    struct ps_httpd *h = ud;

    (void)io;
    (void)revents;
    while (h->nconns < h->o.max_conns) {
        int fd = accept(h->fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break; /* EAGAIN, or EMFILE and the like: retry next step */
        }
        if (set_nonblock(fd) != 0) {
            close(fd);
            continue;
        }
#ifdef SO_NOSIGPIPE
        {
            int one = 1;
            setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
        }
#endif
        accept_one(h, fd);
    }
    watch_listener(h);
}

/* Splits "host:port" / "[v6]:port" into host and port buffers. */
static int split_addr(const char *addr, char *host, size_t hn, char *port,
                      size_t pn, struct ps_err *e)
{
    const char *colon, *hs = addr, *he;

    if (addr == NULL || *addr == '\0')
        return ps_err_set(e, PS_EINVAL, "listen: address is empty");
    if (addr[0] == '[') {
        he = strchr(addr, ']');
        if (he == NULL || he[1] != ':')
            return ps_err_set(e, PS_EINVAL,
                              "listen: bad address '%s' "
                              "(expected [v6]:port)",
                              addr);
        hs = addr + 1;
        colon = he + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL)
            return ps_err_set(e, PS_EINVAL,
                              "listen: bad address '%s' "
                              "(expected host:port)",
                              addr);
        he = colon;
        if (memchr(addr, ':', (size_t)(colon - addr)) != NULL)
            return ps_err_set(e, PS_EINVAL,
                              "listen: bad address '%s' "
                              "(IPv6 needs [brackets])",
                              addr);
    }
    if (he == hs)
        return ps_err_set(e, PS_EINVAL,
                          "listen: address '%s' has no host "
                          "(write 127.0.0.1:PORT or 0.0.0.0:PORT)",
                          addr);
    if ((size_t)(he - hs) >= hn || strlen(colon + 1) >= pn ||
        colon[1] == '\0' ||
        strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return ps_err_set(e, PS_EINVAL, "listen: bad address '%s'", addr);
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = '\0';
    strcpy(port, colon + 1);
    if (strtol(port, NULL, 10) > 65535)
        return ps_err_set(e, PS_EINVAL, "listen: bad port in '%s'", addr);
    return PS_OK;
}

static int bind_listen(struct ps_httpd *h, const char *addr, struct ps_err *e)
{
    char host[256], port[16];
    struct addrinfo hints, *res = NULL, *ai;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char ip[INET6_ADDRSTRLEN];
    int rc, err = 0, one = 1;

    rc = split_addr(addr, host, sizeof(host), port, sizeof(port), e);
    if (rc != PS_OK)
        return rc;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0)
        return ps_err_set(e, PS_EINVAL, "listen: %s: %s", addr,
                          gai_strerror(rc));
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (set_nonblock(fd) == 0 &&
            bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, 128) == 0) {
            h->fd = fd;
            break;
        }
        err = errno;
        close(fd);
    }
    freeaddrinfo(res);
    if (h->fd < 0)
        return ps_err_set(e, PS_EIO, "listen: %s: %s", addr, strerror(err));
    if (getsockname(h->fd, (struct sockaddr *)&ss, &sl) != 0)
        return ps_err_set(e, PS_EIO, "listen: getsockname: %s",
                          strerror(errno));
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(h->addr, sizeof(h->addr), "[%s]:%u", ip,
                 (unsigned)ntohs(s6->sin6_port));
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(h->addr, sizeof(h->addr), "%s:%u", ip,
                 (unsigned)ntohs(s4->sin_port));
    }
    return PS_OK;
}

int ps_httpd_new(struct ps_httpd **out, struct ps_engine *eng,
                 const struct ps_httpd_opts *o, struct ps_err *e)
{
    struct ps_httpd *h = ps_calloc(1, sizeof(*h));
    int rc;

    if (h == NULL)
        return ps_err_set(e, PS_ENOMEM, "listen: out of memory");
    h->eng = eng;
    h->fd = -1;
    h->o = *o;
    h->o.addr = NULL;
    if (h->o.max_conns == 0)
        h->o.max_conns = 64;
    if (h->o.max_head == 0)
        h->o.max_head = 8192;
    if (h->o.max_headers == 0)
        h->o.max_headers = 100;
    if (h->o.read_timeout_ms <= 0)
        h->o.read_timeout_ms = 10000;
    if (h->o.idle_timeout_ms <= 0)
        h->o.idle_timeout_ms = 30000;
    if (h->o.write_timeout_ms <= 0)
        h->o.write_timeout_ms = 30000;
    rc = bind_listen(h, o->addr, e);
    if (rc != PS_OK)
        goto fail;
    ps_engine_io_init(&h->io, h->fd, on_listen, h);
    rc = ps_engine_io_add(eng, &h->io, PS_IO_READ);
    if (rc != PS_OK) {
        ps_err_set(e, rc, "listen: out of memory");
        goto fail;
    }
    *out = h;
    return PS_OK;
fail:
    ps_httpd_free(h);
    return rc;
}

void ps_httpd_free(struct ps_httpd *h)
{
    if (h == NULL)
        return;
    while (h->conns != NULL)
        conn_close(h->conns);
    ps_engine_io_remove(h->eng, &h->io);
    if (h->fd >= 0)
        close(h->fd);
    ps_free(h);
}

const char *ps_httpd_address(const struct ps_httpd *h)
{
    return h->addr;
}

size_t ps_httpd_nconns(const struct ps_httpd *h)
{
    return h->nconns;
}

size_t ps_httpd_npending(const struct ps_httpd *h)
{
    return h->npending;
}

struct ps_httpd_req *ps_httpd_next(struct ps_httpd *h)
{
    struct conn *c = h->qhead;

    if (c == NULL)
        return NULL;
    h->qhead = c->qnext;
    if (h->qhead == NULL)
        h->qtail = NULL;
    c->qnext = NULL;
    h->npending--;
    return &c->req;
}

/* struct ps_httpd_req is the `req` member of its connection. */
static struct conn *conn_of(struct ps_httpd_req *r)
{
    return (struct conn *)(void *)((char *)r - offsetof(struct conn, req));
}

static int skip_header(const char *name)
{
    return strcasecmp(name, "content-length") == 0 ||
           strcasecmp(name, "connection") == 0 ||
           strcasecmp(name, "transfer-encoding") == 0;
}

int ps_httpd_respond(struct ps_httpd *h, struct ps_httpd_req *r, int status,
                     const struct ps_httpd_header *hdrs, size_t n,
                     const void *body, size_t len, struct ps_err *e)
{
    struct conn *c = conn_of(r);
    int rc = PS_OK, ctype = 0;
    size_t i;

    (void)h;
    for (i = 0; i < n; i++) {
        if (hdrs[i].name == NULL || hdrs[i].value == NULL ||
            !is_token(hdrs[i].name) || has_ctl(hdrs[i].value)) {
            conn_fail(c, 500, NULL);
            return ps_err_set(e, PS_EINVAL,
                              "httpd: bad response header "
                              "'%s'",
                              hdrs[i].name ? hdrs[i].name : "?");
        }
        ctype |= strcasecmp(hdrs[i].name, "content-type") == 0;
    }
    if (status < 100 || status > 999) {
        conn_fail(c, 500, NULL);
        return ps_err_set(e, PS_EINVAL, "httpd: bad status %d", status);
    }
    ps_buf_reset(&c->out);
    rc = put_head(&c->out, status, len, c->keep_alive);
    for (i = 0; i < n && rc == PS_OK; i++)
        if (!skip_header(hdrs[i].name))
            rc = ps_buf_printf(&c->out, "%s: %s\r\n", hdrs[i].name,
                               hdrs[i].value);
    if (rc == PS_OK && !ctype)
        rc = ps_buf_adds(&c->out, "Content-Type: text/plain; "
                                  "charset=utf-8\r\n");
    if (rc == PS_OK)
        rc = ps_buf_adds(&c->out, "\r\n");
    if (rc == PS_OK && !c->head_only && len > 0)
        rc = ps_buf_add(&c->out, body, len);
    if (rc != PS_OK) {
        conn_close(c);
        return ps_err_set(e, rc, "httpd: out of memory for a response");
    }
    conn_start_write(c);
    return PS_OK;
}
