/*
 * ps_signal: Unix signals as counters and a self-pipe, for the command
 * line (SIGHUP reloads, SIGINT/SIGTERM stop).
 *
 * Signal dispositions belong to the process, not to an engine, so this is
 * the one module with process-wide state besides the allocator hook
 * (ps_set_allocator). It is kept apart so that everything else stays free
 * of globals and several managers can share a process.
 *
 * ps_signal_watch() installs handlers (sigaction, SA_RESTART) that only do
 * async-signal-safe work: bump a lock-free atomic counter per signal and
 * write one byte to a non-blocking self-pipe. An engine watches the pipe's
 * read end (ps_signal_fd) as an extra fd, so a signal ends its wait at
 * once, whichever thread the kernel delivered it to. Readers compare the
 * cumulative counters (ps_signal_count) with what they saw last, so any
 * number of readers can consume them independently.
 *
 * Call watch/unwatch from one thread (the Lua thread); the counters and
 * the fd may be read from any thread.
 */
#ifndef PS_SIGNAL_H
#define PS_SIGNAL_H

#include "ps_core.h"

#include <stdint.h>

/* The signals this module knows, by index: HUP INT TERM USR1 USR2 QUIT. */
#define PS_SIGNAL_N 6
const char *ps_signal_name(int idx);   /* "HUP", ...; NULL if out of range */
int ps_signal_index(const char *name); /* "HUP" or "SIGHUP"; -1 if unknown */
int ps_signal_number(int idx);         /* SIGHUP, ...; 0 if out of range */

/*
 * Installs the handlers for the signals idx[0..n) (indexes as above),
 * creating the self-pipe on first use (it then stays open for the life of
 * the process). Watching an already watched signal is a no-op. PS_OK,
 * PS_EINVAL (bad index), PS_EIO (pipe or sigaction failed; nothing new is
 * installed).
 */
int ps_signal_watch(const int *idx, size_t n, struct ps_err *e);
/* Restores the dispositions saved by ps_signal_watch for every watched
 * signal. Counters are kept. */
void ps_signal_unwatch(void);
/* 1 if signal idx is watched. */
int ps_signal_watched(int idx);

/* Times signal idx was received since the process started watching it. */
uint64_t ps_signal_count(int idx);
/* The self-pipe's read end (non-blocking), or -1 before the first watch. */
int ps_signal_fd(void);
/* Empties the self-pipe (call when ps_signal_fd is readable). */
void ps_signal_drain(void);

#endif
