/*
 * replay: runs a libFuzzer target's LLVMFuzzerTestOneInput over corpus
 * files without libFuzzer, so `make check` can replay the corpus under gcc
 * with ASan/UBSan (the fluent-bit local_test.c idea).
 *
 * Usage: replay_TARGET PATH...
 *   Each PATH is a directory (every regular file in it, in name order, dot
 *   files skipped) or a single file. One TAP line per PATH:
 *     ok N - replay <name> (<count> inputs)
 *   where <name> is the directory's base name (the target's corpus folder
 *   is named after the target) or the file's path; then the plan "1..N".
 *   A crash is the sanitizer's or the target's abort; the input being run
 *   is named on stderr first, so the failing file is known.
 * Exit: 0 if every PATH was read, 1 otherwise (a crash exits non-zero too).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime, strdup */
#endif

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define REPLAY_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define REPLAY_SANITIZER 1
#endif

/* The input being run, for the crash report (written before each run). */
static char current[4096];

#ifdef REPLAY_SANITIZER
#include <sanitizer/common_interface_defs.h>

/* Called by ASan/UBSan just before the process dies. */
static void on_death(void)
{
    fprintf(stderr, "replay: crashed on input %s\n", current);
}
#else
/* Without a sanitizer, catch the fatal signals ourselves; async-signal-safe
 * (write only), then re-raise with the default action. */
static void on_signal(int sig)
{
    static const char msg[] = "replay: crashed on input ";

    (void)!write(2, msg, sizeof(msg) - 1);
    (void)!write(2, current, strlen(current));
    (void)!write(2, "\n", 1);
    signal(sig, SIG_DFL);
    raise(sig);
}
#endif

static void install_crash_report(void)
{
#ifdef REPLAY_SANITIZER
    __sanitizer_set_death_callback(on_death);
#else
    /* Not under a sanitizer: ASan's own SEGV handler must not be replaced,
     * which is why this is compiled only in the plain build. */
    static const int sigs[] = {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL};
    size_t i;

    for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], on_signal);
#endif
}

/*
 * Reads path into an exactly-sized malloc'd buffer and runs the target on
 * it (the target copies again, so it owns its own exact buffer). Returns 0,
 * or -1 with a message on stderr when the file cannot be read.
 */
static int run_file(const char *path)
{
    FILE *f;
    uint8_t *buf = NULL;
    long size;
    int ok = -1;

    errno = 0;
    f = fopen(path, "rb");
    if (f == NULL)
        goto out;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0)
        goto out;
    buf = malloc(size ? (size_t)size : 1);
    if (buf == NULL || fread(buf, 1, (size_t)size, f) != (size_t)size)
        goto out;
    snprintf(current, sizeof(current), "%s", path);
    LLVMFuzzerTestOneInput(buf, (size_t)size);
    ok = 0;
out:
    if (ok != 0)
        fprintf(stderr, "replay: %s: %s\n", path,
                errno ? strerror(errno) : "read failed");
    free(buf);
    if (f != NULL)
        fclose(f);
    return ok;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Runs every regular file of dir, in name order (reproducible runs).
 * Returns the number of inputs run, or -1 if the directory or a file could
 * not be read.
 */
static long run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL, **nn, path[4096];
    size_t n = 0, cap = 0, i;
    long count = 0;
    struct stat st;

    if (d == NULL) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            nn = realloc(names, cap * sizeof(*names));
            if (nn == NULL)
                goto fail;
            names = nn;
        }
        names[n] = strdup(de->d_name);
        if (names[n] == NULL)
            goto fail;
        n++;
    }
    closedir(d);
    d = NULL;
    if (n > 0)
        qsort(names, n, sizeof(*names), cmp_str);
    for (i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue; /* subfolders and sockets are not inputs */
        if (run_file(path) != 0)
            goto fail;
        count++;
    }
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return count;
fail:
    if (d != NULL)
        closedir(d);
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return -1;
}

/* The TAP name of a directory: its base name, trailing slashes ignored. */
static void dir_label(const char *dir, char *out, size_t cap)
{
    size_t n = strlen(dir);
    const char *s;

    while (n > 1 && dir[n - 1] == '/')
        n--;
    s = dir + n;
    while (s > dir && s[-1] != '/')
        s--;
    snprintf(out, cap, "%.*s", (int)(dir + n - s), s);
}

int main(int argc, char **argv)
{
    char label[256];
    struct stat st;
    int i, bad = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
        return 2;
    }
    install_crash_report();
    for (i = 1; i < argc; i++) {
        long count;

        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            dir_label(argv[i], label, sizeof(label));
            count = run_dir(argv[i]);
        } else {
            snprintf(label, sizeof(label), "%s", argv[i]);
            count = run_file(argv[i]) == 0 ? 1 : -1;
        }
        if (count < 0) {
            printf("not ok %d - replay %s (cannot read)\n", i, label);
            bad = 1;
        } else {
            printf("ok %d - replay %s (%ld inputs)\n", i, label, count);
        }
        fflush(stdout); /* before the next path, in case it crashes */
    }
    printf("1..%d\n", argc - 1);
    return bad;
}
