/*
 * spec/c/testlib.h: what the C tests share, header-only.
 *
 * TAP: ok() prints one numbered line per assertion, diag() a comment,
 * done_testing() the trailing plan and the exit status.
 *
 * The loopback fixture: fixture_start() listens on 127.0.0.1 (ephemeral
 * port) and forks a child that runs one thread per connection, each calling
 * the test's serve(fd) and then closing fd. Fork it first thing, before
 * anything is allocated or any thread exists, so leak checkers in the child
 * see nothing. The child stops when fixture_stop() closes its control pipe
 * (it then shuts down the open connections, which wakes handlers blocked in
 * read or poll, and joins them all), or when its own alarm fires after
 * lifetime_s seconds; fixture_stop() reaps it. One fixture per test. The
 * child never takes part in spec/torture.sh: it disarms ps_alloc_fail_at(),
 * so the k-th allocation counted from process start is always the test's.
 *
 * Everything is static inline so a test that skips a helper gets no
 * unused-function warning.
 */
#ifndef PS_TESTLIB_H
#define PS_TESTLIB_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ps_core.h"

/* ---- TAP ----------------------------------------------------------------- */

static int n_test, n_fail;

static inline void ok(int cond, const char *desc)
{
    n_test++;
    if (!cond)
        n_fail++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n_test, desc);
    fflush(stdout);
}

static inline void diag(const char *what, const char *s)
{
    printf("# %s: %s\n", what, s);
}

/* Prints the plan; returns main()'s exit status. */
static inline int done_testing(void)
{
    printf("1..%d\n", n_test);
    return n_fail != 0;
}

/* ---- sockets ------------------------------------------------------------ */

static inline void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        c += w;
        n -= (size_t)w;
    }
}

/* A socket bound to 127.0.0.1 on an ephemeral port (not yet listening). */
static inline int listen_loopback(int *port)
{
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* A port nothing listens on: bound (never listened), then closed. */
static inline int closed_port(void)
{
    int port = 0;
    int fd = listen_loopback(&port);

    if (fd >= 0)
        close(fd);
    return port;
}

/* Reads pipelined request heads (no bodies) on fd and passes each one,
 * NUL-terminated, to one() with its 1-based number on the connection,
 * until EOF, an 8 KiB head, or one() returning 0. */
static inline void serve_heads(int fd,
                               int (*one)(int fd, const char *req, int nreq))
{
    char req[8192];
    size_t len = 0;
    int nreq = 0;

    for (;;) {
        char *end;
        ssize_t n = read(fd, req + len, sizeof(req) - 1 - len);
        if (n <= 0)
            return;
        len += (size_t)n;
        req[len] = '\0';
        while ((end = strstr(req, "\r\n\r\n")) != NULL) {
            size_t used = (size_t)(end + 4 - req);
            char head[8192];
            memcpy(head, req, used);
            head[used] = '\0';
            memmove(req, req + used, len - used + 1);
            len -= used;
            if (!one(fd, head, ++nreq))
                return;
        }
        if (len == sizeof(req) - 1)
            return;
    }
}

/* ---- the fixture (the child side) ---------------------------------------- */

#define FIXTURE_MAX_CONN 256

/* Connection fds of the child, -1 once closed; guarded by fixture_mu so the
 * accept loop never shuts down an fd number a handler already closed. */
static int fixture_fd[FIXTURE_MAX_CONN];
static pthread_mutex_t fixture_mu = PTHREAD_MUTEX_INITIALIZER;
static void (*fixture_serve)(int fd);

static inline void *fixture_conn(void *arg)
{
    int slot = (int)(intptr_t)arg;

    fixture_serve(fixture_fd[slot]);
    pthread_mutex_lock(&fixture_mu);
    close(fixture_fd[slot]); /* FIN, or RST after SO_LINGER 0 */
    fixture_fd[slot] = -1;
    pthread_mutex_unlock(&fixture_mu);
    return NULL;
}

/* The accept loop: one thread per connection (cheaper than a fork under
 * valgrind), until the control pipe closes or the alarm kills the child. */
static inline void fixture_main(int ls, int ctl, unsigned lifetime_s)
{
    pthread_t th[FIXTURE_MAX_CONN];
    int n = 0, i;

    alarm(lifetime_s); /* hard bound on the fixture's life */
    for (;;) {
        struct pollfd p[2] = {{ls, POLLIN, 0}, {ctl, POLLIN, 0}};
        int fd;

        if (poll(p, 2, 1000) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            break; /* the test closed the pipe (or died) */
        if (!(p[0].revents & POLLIN) || (fd = accept(ls, NULL, NULL)) < 0)
            continue;
        if (n == FIXTURE_MAX_CONN) {
            close(fd);
            continue;
        }
        fixture_fd[n] = fd;
        if (pthread_create(&th[n], NULL, fixture_conn, (void *)(intptr_t)n)) {
            close(fd);
            continue;
        }
        n++;
    }
    pthread_mutex_lock(&fixture_mu);
    for (i = 0; i < n; i++)
        if (fixture_fd[i] >= 0)
            shutdown(fixture_fd[i], SHUT_RDWR);
    pthread_mutex_unlock(&fixture_mu);
    for (i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

/* ---- the fixture (the test side) ---------------------------------------- */

static pid_t fixture_pid = -1;
static int fixture_ctl = -1;

/* Forks the fixture; returns its port, or -1. */
static inline int fixture_start(void (*serve)(int fd), unsigned lifetime_s)
{
    int port = -1, ctl[2];
    int ls = listen_loopback(&port);

    if (ls < 0)
        return -1;
    if (listen(ls, 64) < 0 || pipe(ctl) < 0) {
        close(ls);
        return -1;
    }
    fixture_serve = serve;
    fflush(stdout);
    fixture_pid = fork();
    if (fixture_pid == 0) {
        /* The server is scaffolding, not code under test: under
         * spec/torture.sh only the test process fails its k-th allocation. */
        ps_alloc_fail_at(0);
        close(ctl[1]);
        fixture_main(ls, ctl[0], lifetime_s);
        _exit(0);
    }
    close(ls);
    close(ctl[0]);
    fixture_ctl = ctl[1];
    return fixture_pid > 0 ? port : -1;
}

/* Stops the fixture and reaps it; a no-op when none runs. */
static inline void fixture_stop(void)
{
    if (fixture_ctl >= 0)
        close(fixture_ctl);
    fixture_ctl = -1;
    if (fixture_pid > 0)
        waitpid(fixture_pid, NULL, 0);
    fixture_pid = -1;
}

#endif
