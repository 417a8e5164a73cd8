/* ps_signal: signal counters and a self-pipe (see ps_signal.h). */
#include "ps_signal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *name;
    int sig;
} known[PS_SIGNAL_N] = {{"HUP", SIGHUP},   {"INT", SIGINT},
                        {"TERM", SIGTERM}, {"USR1", SIGUSR1},
                        {"USR2", SIGUSR2}, {"QUIT", SIGQUIT}};

/* Process-wide by nature (see the header). */
static atomic_uint_fast64_t counts[PS_SIGNAL_N];
static struct sigaction saved[PS_SIGNAL_N];
static int watched[PS_SIGNAL_N];
static int pipe_fd[2] = {-1, -1};

const char *ps_signal_name(int idx)
{
    return idx >= 0 && idx < PS_SIGNAL_N ? known[idx].name : NULL;
}

int ps_signal_number(int idx)
{
    return idx >= 0 && idx < PS_SIGNAL_N ? known[idx].sig : 0;
}

int ps_signal_index(const char *name)
{
    int i;

    if (strncmp(name, "SIG", 3) == 0)
        name += 3;
    for (i = 0; i < PS_SIGNAL_N; i++)
        if (strcmp(name, known[i].name) == 0)
            return i;
    return -1;
}

/* The handler: async-signal-safe only (lock-free atomics, write). */
static void on_signal(int sig)
{
    int i, saved_errno = errno;

    for (i = 0; i < PS_SIGNAL_N; i++)
        if (known[i].sig == sig)
            atomic_fetch_add(&counts[i], 1);
    if (pipe_fd[1] >= 0) {
        ssize_t r = write(pipe_fd[1], "s", 1); /* full pipe: fine */
        (void)r;
    }
    errno = saved_errno;
}

static int make_pipe(void)
{
    int fds[2], i;

    if (pipe_fd[0] >= 0)
        return 0;
    if (pipe(fds) != 0)
        return -1;
    for (i = 0; i < 2; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) < 0 ||
            fcntl(fds[i], F_SETFD, FD_CLOEXEC) < 0) {
            close(fds[0]);
            close(fds[1]);
            return -1;
        }
    }
    pipe_fd[0] = fds[0];
    pipe_fd[1] = fds[1];
    return 0;
}

int ps_signal_watch(const int *idx, size_t n, struct ps_err *e)
{
    struct sigaction sa;
    int fresh[PS_SIGNAL_N] = {0}; /* installed by this call */
    size_t i;

    for (i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= PS_SIGNAL_N)
            return ps_err_set(e, PS_EINVAL, "signal: unknown signal");
    if (make_pipe() != 0)
        return ps_err_set(e, PS_EIO, "signal: pipe: %s", strerror(errno));
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < n; i++) {
        int k = idx[i];
        if (watched[k])
            continue;
        if (sigaction(known[k].sig, &sa, &saved[k]) != 0) {
            int err = errno, j;
            for (j = 0; j < PS_SIGNAL_N; j++) { /* all or nothing */
                if (fresh[j]) {
                    sigaction(known[j].sig, &saved[j], NULL);
                    watched[j] = 0;
                }
            }
            return ps_err_set(e, PS_EIO, "signal: sigaction(SIG%s): %s",
                              known[k].name, strerror(err));
        }
        watched[k] = fresh[k] = 1;
    }
    return PS_OK;
}

void ps_signal_unwatch(void)
{
    int i;

    for (i = 0; i < PS_SIGNAL_N; i++) {
        if (watched[i]) {
            sigaction(known[i].sig, &saved[i], NULL);
            watched[i] = 0;
        }
    }
}

int ps_signal_watched(int idx)
{
    return idx >= 0 && idx < PS_SIGNAL_N && watched[idx];
}

uint64_t ps_signal_count(int idx)
{
    if (idx < 0 || idx >= PS_SIGNAL_N)
        return 0;
    return (uint64_t)atomic_load(&counts[idx]);
}

int ps_signal_fd(void)
{
    return pipe_fd[0];
}

void ps_signal_drain(void)
{
    char buf[64];

    if (pipe_fd[0] < 0)
        return;
    while (read(pipe_fd[0], buf, sizeof(buf)) > 0)
        ;
}
