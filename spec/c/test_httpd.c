/*
 * spec/c/test_httpd.c: ps_httpd and the engine's extra-fd watching. TAP.
 *
 * The server runs on 127.0.0.1 (port 0) on a ps_engine that the test
 * steps; the clients are non-blocking sockets in the same process, so
 * one thread drives both sides: every wait for a client is a loop of
 * engine steps (which also answer the queued requests) and recv() calls.
 */
#include "ps_core.h"
#include "ps_engine.h"
#include "ps_http.h"
#include "ps_httpd.h"
#include "ps_signal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int n_test, n_fail;

static void ok(int cond, const char *desc)
{
    n_test++;
    if (!cond)
        n_fail++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n_test, desc);
    fflush(stdout);
}

static struct ps_engine *eng;
static struct ps_httpd *srv;
static int port;
static int answered, bad_header_mode;

/* The test's handler: echoes the request; /big answers 1 MiB. */
static void serve(void)
{
    struct ps_httpd_req *r;

    while (srv != NULL && (r = ps_httpd_next(srv)) != NULL) {
        char body[512];
        const char *ua = "";
        size_t i;
        struct ps_httpd_header h[2] = {{"X-Test", "yes"},
                                       {"Content-Length", "999"}};
        for (i = 0; i < r->n_headers; i++)
            if (strcmp(r->headers[i].name, "user-agent") == 0)
                ua = r->headers[i].value;
        answered++;
        if (strcmp(r->path, "/big") == 0) {
            size_t n = 1 << 20;
            char *big = malloc(n);
            memset(big, 'x', n);
            ps_httpd_respond(srv, r, 200, h, 1, big, n, NULL);
            free(big);
            continue;
        }
        if (bad_header_mode) {
            struct ps_httpd_header bad = {"Bad Name", "v"};
            struct ps_err e;
            ps_err_init(&e);
            ok(ps_httpd_respond(srv, r, 200, &bad, 1, "x", 1, &e) ==
                   PS_EINVAL,
               "respond: a bad header name is PS_EINVAL (500 sent)");
            continue;
        }
        snprintf(body, sizeof(body), "%s %s q=%s ua=%s", r->method, r->path,
                 r->query ? r->query : "(none)", ua);
        ps_httpd_respond(srv, r, 200, h, 2, body, strlen(body), NULL);
    }
}

static void pump(int ms)
{
    uint64_t end = ps_engine_now_ns() + (uint64_t)ms * 1000000u;

    do {
        ps_engine_step(eng, 5, NULL);
        serve();
    } while (ps_engine_now_ns() < end);
}

static int client(void)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void put(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
            pump(1);
            continue;
        }
        if (k <= 0)
            return;
        s += k;
        n -= (size_t)k;
    }
}

static void puts_(int fd, const char *s)
{
    put(fd, s, strlen(s));
}

/* Reads from fd while stepping the engine, until `want` responses are
 * complete (by Content-Length: a HEAD answer waits for the full ms), EOF,
 * or ms pass. Returns the bytes read
 * (in *buf, NUL-terminated, caller frees); *eof says if the peer closed. */
static size_t get(int fd, int want, int ms, char **buf, int *eof)
{
    size_t len = 0, cap = 4096;
    char *b = malloc(cap);
    uint64_t end = ps_engine_now_ns() + (uint64_t)ms * 1000000u;

    *eof = 0;
    while (ps_engine_now_ns() < end) {
        ssize_t k;
        int done = 0;
        const char *p = b;

        pump(2);
        if (cap - len < 65536) {
            cap = cap * 2 + 65536;
            b = realloc(b, cap);
        }
        k = recv(fd, b + len, cap - len - 1, 0);
        if (k == 0) {
            *eof = 1;
            break;
        }
        if (k > 0)
            len += (size_t)k;
        b[len] = '\0';
        /* count complete responses */
        p = b;
        for (;;) {
            const char *he = strstr(p, "\r\n\r\n"), *cl;
            size_t n;
            if (he == NULL)
                break;
            cl = strstr(p, "Content-Length: ");
            n = cl && cl < he ? strtoul(cl + 16, NULL, 10) : 0;
            if ((size_t)(b + len - (he + 4)) < n)
                break;
            done++;
            p = he + 4 + n;
        }
        if (done >= want)
            break;
    }
    b[len] = '\0';
    *buf = b;
    return len;
}

static void test_addresses(void)
{
    static const char *bad[] = {":9099", "9099", "127.0.0.1", "[::1",
                                "::1:80", "127.0.0.1:x", "127.0.0.1:99999",
                                "no.such.host.invalid:80"};
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ps_httpd *h = NULL;
        struct ps_httpd_opts o;
        struct ps_err e;
        char d[512];
        int rc;

        memset(&o, 0, sizeof(o));
        o.addr = bad[i];
        ps_err_init(&e);
        rc = ps_httpd_new(&h, eng, &o, &e);
        snprintf(d, sizeof(d), "address '%s' is refused (%s)", bad[i],
                 e.msg);
        ok(rc == PS_EINVAL && h == NULL, d);
    }
    {
        struct ps_httpd *h = NULL;
        struct ps_httpd_opts o;
        memset(&o, 0, sizeof(o));
        o.addr = "[::1]:0";
        if (ps_httpd_new(&h, eng, &o, NULL) == PS_OK) {
            ok(strncmp(ps_httpd_address(h), "[::1]:", 6) == 0,
               "IPv6 loopback: address is [::1]:PORT");
            ps_httpd_free(h);
        } else {
            ok(1, "# SKIP no IPv6 loopback");
        }
    }
}

static void test_basic(void)
{
    char *b;
    int eof, fd = client();
    size_t n;

    ok(fd >= 0, "client connects");
    puts_(fd, "GET /hello?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t/1\r\n\r\n");
    n = get(fd, 1, 2000, &b, &eof);
    ok(n > 0 && strncmp(b, "HTTP/1.1 200 OK\r\n", 17) == 0, "GET: 200 OK");
    ok(strstr(b, "\r\n\r\nGET /hello q=x=1 ua=t/1") != NULL,
       "GET: method, path, query and a lowercased header reach the owner");
    ok(strstr(b, "X-Test: yes\r\n") != NULL &&
           strstr(b, "Content-Length: 999") == NULL,
       "GET: own headers kept, Content-Length set by the server");
    ok(strstr(b, "Connection: keep-alive") != NULL && !eof,
       "GET: HTTP/1.1 keeps the connection alive");
    free(b);
    puts_(fd, "HEAD /hello HTTP/1.1\r\n\r\n");
    n = get(fd, 1, 100, &b, &eof);
    ok(strstr(b, "Content-Length: 24\r\n") != NULL && /* "HEAD /hello.." */
           n == (size_t)(strstr(b, "\r\n\r\n") + 4 - b),
       "HEAD on the same connection: length of the GET body, no body");
    ok(ps_httpd_nconns(srv) == 1, "keep-alive: still one connection");
    free(b);
    /* two requests in one packet */
    puts_(fd, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close"
              "\r\n\r\n");
    n = get(fd, 2, 2000, &b, &eof);
    ok(strstr(b, "GET /a q=") != NULL && strstr(b, "GET /b q=") != NULL &&
           strstr(b, "GET /a") < strstr(b, "GET /b"),
       "pipelined requests are answered in order");
    ok(strstr(b, "Connection: close") != NULL, "Connection: close honored");
    free(b);
    n = get(fd, 99, 500, &b, &eof);
    ok(eof && n == 0, "the server closed after Connection: close");
    free(b);
    close(fd);
    fd = client();
    puts_(fd, "GET /old HTTP/1.0\r\n\r\n");
    n = get(fd, 1, 1000, &b, &eof);
    free(b);
    n = get(fd, 99, 500, &b, &eof);
    ok(eof, "HTTP/1.0 without keep-alive: closed after the response");
    free(b);
    close(fd);
}

static void expect_error(const char *req, const char *status,
                         const char *desc)
{
    char *b;
    int eof, fd = client();

    puts_(fd, req);
    get(fd, 1, 1000, &b, &eof);
    ok(strncmp(b, status, strlen(status)) == 0 &&
           strstr(b, "Connection: close") != NULL,
       desc);
    if (strncmp(b, status, strlen(status)) != 0)
        printf("# got: %.60s\n", b);
    free(b);
    get(fd, 99, 300, &b, &eof);
    ok(eof, "... and the connection is closed");
    free(b);
    close(fd);
}

static void test_errors(void)
{
    char *big = malloc(9000 + 64);

    size_t pre;

    strcpy(big, "GET / HTTP/1.1\r\nX-Big: ");
    pre = strlen(big);
    memset(big + pre, 'a', 9000);
    strcpy(big + pre + 9000, "\r\n\r\n");
    expect_error(big, "HTTP/1.1 431 ", "an 9 KB header is 431");
    free(big);
    expect_error("GARBAGE\r\n\r\n", "HTTP/1.1 400 ", "a bad request line is 400");
    expect_error("GET / HTTP/1.1\r\nNoColon\r\n\r\n", "HTTP/1.1 400 ",
                 "a header without a colon is 400");
    expect_error("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                 "HTTP/1.1 405 ", "POST is 405");
    expect_error("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                 "HTTP/1.1 400 ", "a GET with a body is 400");
    expect_error("GET / HTTP/2.0\r\n\r\n", "HTTP/1.1 505 ",
                 "another HTTP version is 505");
    expect_error("GET relative HTTP/1.1\r\n\r\n", "HTTP/1.1 400 ",
                 "a target not starting with / is 400");
}

static void test_timeouts(void)
{
    char *b;
    int eof, fd = client();
    size_t before;

    pump(20);
    before = ps_httpd_nconns(srv);
    puts_(fd, "GET / HTTP/1.1\r\nHost:"); /* and then nothing */
    get(fd, 1, 1500, &b, &eof);
    ok(eof, "a slow client is closed after read_timeout");
    free(b);
    close(fd);
    fd = client();
    pump(20);
    ok(ps_httpd_nconns(srv) == before, "an idle client is accepted");
    get(fd, 1, 1500, &b, &eof);
    ok(eof, "an idle client is closed after idle_timeout");
    free(b);
    close(fd);
    pump(20);
    ok(ps_httpd_nconns(srv) == 0, "no connection left");
}

static void test_many(void)
{
    int fds[12], i, served = 0;
    char *b;
    int eof;

    for (i = 0; i < 12; i++)
        fds[i] = client();
    pump(100);
    ok(ps_httpd_nconns(srv) == 4, "at most max_conns (4) connections");
    for (i = 0; i < 12; i++)
        puts_(fds[i], "GET /m HTTP/1.1\r\nConnection: close\r\n\r\n");
    for (i = 0; i < 12; i++) {
        get(fds[i], 1, 3000, &b, &eof);
        served += strncmp(b, "HTTP/1.1 200", 12) == 0;
        free(b);
        close(fds[i]);
    }
    ok(served == 12, "the waiting clients are served as others leave");
    pump(20);
    ok(ps_httpd_nconns(srv) == 0, "all closed");
}

static void test_big(void)
{
    char *b;
    int eof, fd = client();
    size_t n;

    puts_(fd, "GET /big HTTP/1.1\r\n\r\n");
    n = get(fd, 1, 5000, &b, &eof);
    ok(n > (1u << 20) && strstr(b, "Content-Length: 1048576") != NULL,
       "a 1 MiB response is written without blocking");
    free(b);
    close(fd);
}

static void test_bad_header(void)
{
    char *b;
    int eof, fd = client();

    bad_header_mode = 1;
    puts_(fd, "GET /x HTTP/1.1\r\n\r\n");
    get(fd, 1, 1000, &b, &eof);
    ok(strncmp(b, "HTTP/1.1 500 ", 13) == 0, "... and the client gets 500");
    free(b);
    bad_header_mode = 0;
    close(fd);
}

static int io_calls;
static void on_io(struct ps_engine_io *io, unsigned revents, void *ud)
{
    char c;

    (void)ud;
    io_calls++;
    if (revents & PS_IO_READ)
        if (read(io->fd, &c, 1) != 1)
            io_calls += 100;
    ps_engine_io_remove(eng, io); /* removal from its own callback */
}

static void test_engine_io(void)
{
    struct ps_engine_io io;
    int p[2];
    uint64_t t0;

    ok(pipe(p) == 0, "pipe");
    ps_engine_io_init(&io, p[0], on_io, NULL);
    ok(ps_engine_io_add(eng, &io, PS_IO_READ) == PS_OK, "io add");
    ps_engine_step(eng, 0, NULL);
    ok(io_calls == 0, "io: no callback while not ready");
    ok(write(p[1], "x", 1) == 1, "write");
    t0 = ps_engine_now_ns();
    ps_engine_step(eng, 1000, NULL);
    ok(io_calls == 1 && ps_engine_now_ns() - t0 < 500000000u,
       "io: a ready fd ends the wait and runs the callback once");
    ok(io.slot == 0, "io: removed from its callback");
    close(p[0]);
    close(p[1]);
}

static void test_signal(void)
{
    int idx = ps_signal_index("SIGUSR1");
    uint64_t before;
    struct ps_err e;

    ps_err_init(&e);
    ok(idx >= 0 && strcmp(ps_signal_name(idx), "USR1") == 0,
       "signal names");
    ok(ps_signal_watch(&idx, 1, &e) == PS_OK, "watch USR1");
    before = ps_signal_count(idx);
    raise(SIGUSR1);
    ok(ps_signal_count(idx) == before + 1, "a raised signal is counted");
    ok(ps_signal_fd() >= 0, "the self-pipe exists");
    ps_signal_drain();
    ps_signal_unwatch();
    ok(!ps_signal_watched(idx), "unwatched");
}

int main(void)
{
    struct ps_httpd_opts o;
    struct ps_err e;
    const char *a;

    signal(SIGPIPE, SIG_IGN);
    ps_http_global_init(NULL);
    ps_err_init(&e);
    ok(ps_engine_new(&eng, NULL, &e) == PS_OK, "engine");
    if (eng == NULL) /* out of memory: only under spec/torture.sh */
        goto out;
    test_engine_io();
    test_addresses();
    memset(&o, 0, sizeof(o));
    o.addr = "127.0.0.1:0";
    o.max_conns = 4;
    o.read_timeout_ms = 300;
    o.idle_timeout_ms = 300;
    ok(ps_httpd_new(&srv, eng, &o, &e) == PS_OK, "listen on 127.0.0.1:0");
    if (srv == NULL)
        goto out;
    a = ps_httpd_address(srv);
    port = atoi(strrchr(a, ':') + 1);
    ok(strncmp(a, "127.0.0.1:", 10) == 0 && port > 0,
       "the bound address has the chosen port");
    test_basic();
    test_errors();
    test_timeouts();
    test_many();
    test_big();
    test_bad_header();
    {
        /* freeing with a queued request and open connections */
        int fd = client();
        puts_(fd, "GET /q HTTP/1.1\r\n\r\n");
        ps_engine_step(eng, 50, NULL);
        ps_engine_step(eng, 50, NULL);
        ok(ps_httpd_npending(srv) == 1, "a request is queued");
        ps_httpd_free(srv);
        srv = NULL;
        ok(ps_engine_io_count(eng) == 0, "free removes every watcher");
        close(fd);
    }
    test_signal();
out:
    ps_engine_free(eng);
    ps_http_global_cleanup();
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
