/*
 * ps_core: what every module shares and nothing else.
 *
 * - Error codes (PS_OK or a negative PS_E*), with ps_errname()/ps_strerror(),
 *   and struct ps_err: an optional caller-owned buffer for the detail message.
 *   Functions that fail write their detail into it (if non-NULL) and return
 *   the code; out-params are written only on success.
 * - The allocator hook. Every allocation of the core goes through
 *   ps_malloc/ps_calloc/ps_realloc/ps_free, so tests can fail the Nth
 *   allocation (make torture). The hook is process-wide by necessity (it
 *   replaces malloc); it is the only mutable global and is meant to be set
 *   once, before any other call, or by tests.
 * - UTF-8 and Prometheus name validity, used by the parser and relabeling.
 */
#ifndef PS_CORE_H
#define PS_CORE_H

#include <stddef.h>
#include <stdint.h>

#define PS_VERSION "0.1.0"

/* A borrowed byte range, not NUL-terminated; p == NULL means "absent" where
 * that matters. Shared by the parser, labels and relabeling. */
struct ps_str {
    const char *p;
    size_t n;
};

enum {
    PS_OK = 0,
    PS_ENOMEM = -1,  /* an allocation failed */
    PS_EINVAL = -2,  /* bad argument or configuration */
    PS_EPARSE = -3,  /* malformed input */
    PS_ELIMIT = -4,  /* a configured limit was exceeded */
    PS_EIO = -5,     /* I/O or transport failure */
    PS_ENOTSUP = -6, /* valid but not supported by this library */
    PS_ESTATE = -7   /* call not allowed in the object's current state */
};

#define PS_ERR_MAX 256

/* Caller storage; ps_err_init() it (or zero it) before use. */
struct ps_err {
    int code;
    char msg[PS_ERR_MAX];
};

void ps_err_init(struct ps_err *e);
/* Formats the detail into e (if non-NULL) and returns code, so callers can
 * write `return ps_err_set(e, PS_EPARSE, "line %d: ...", n);`. */
int ps_err_set(struct ps_err *e, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
const char *ps_errname(int code); /* "ENOMEM", "EINVAL", ... */
const char *ps_strerror(int code); /* a short English phrase */

/*
 * Allocator hook, lua_Alloc-like: (ud, ptr, osize, nsize). nsize == 0 frees
 * and returns NULL; otherwise behaves like realloc (ptr may be NULL). osize
 * is the old size when known, else 0. Passing f == NULL restores the default.
 */
typedef void *(*ps_alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);
void ps_set_allocator(ps_alloc_fn f, void *ud);

void *ps_malloc(size_t n);             /* NULL on failure or n == 0 */
void *ps_calloc(size_t nmemb, size_t size); /* NULL on failure/overflow */
void *ps_realloc(void *p, size_t n);   /* on failure p is left untouched */
void ps_free(void *p);                 /* NULL-safe */
char *ps_strndup(const char *s, size_t n); /* NUL-terminated copy, or NULL */

/* Torture support: after `n` more successful allocations, every allocation
 * fails (n < 0 disables). Returns the number of allocations made since the
 * last call, so a test can learn how many allocations a run needs. */
long ps_alloc_fail_after(long n);

/* Whole-process torture (make torture, spec/torture.sh; curl's -t): every
 * allocation is counted from process start, except those made while a
 * ps_alloc_fail_after() countdown is armed (such loops torture themselves;
 * a test keeps a repetitive stretch out of the count with
 * ps_alloc_fail_after(LONG_MAX), a countdown that never ends), and the k-th
 * counted one fails, that one only. k comes from the environment variable
 * PS_TORTURE_FAIL_AT, read at the first allocation, or from this call,
 * which overrides it (k <= 0: nothing fails; a forked test server calls
 * ps_alloc_fail_at(0)). With PS_TORTURE_FAIL_AT or PS_TORTURE_COUNT set,
 * the process prints "# ps_torture: counted=N fail_at=k" on stderr at exit.
 * Returns the number of allocations counted so far. */
long ps_alloc_fail_at(long k);

/*
 * Validation. Lengths are explicit: inputs are borrowed views, not C strings.
 * ps_utf8_valid: strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
 * Returns 1 if valid. NUL bytes are valid UTF-8; callers that forbid them
 * check separately.
 */
int ps_utf8_valid(const char *s, size_t n);
/* Legacy metric name: [a-zA-Z_:][a-zA-Z0-9_:]* (non-empty). */
int ps_name_legacy_metric(const char *s, size_t n);
/* Legacy label name: [a-zA-Z_][a-zA-Z0-9_]* (non-empty). */
int ps_name_legacy_label(const char *s, size_t n);
/* UTF-8 scheme (Prometheus 3.x default): non-empty valid UTF-8. */
int ps_name_utf8(const char *s, size_t n);

/*
 * Number formatting as Go does it. ps_fmt_go_float writes
 * strconv.FormatFloat(v, 'g', -1, 64) the way expfmt writes sample values
 * ("+Inf", "-Inf", "NaN", "1e+06", "0.1"); ps_fmt_om_float writes
 * Prometheus's FormatOpenMetricsFloat ("1.0", "0.0", "0.25", "1e-05"). out
 * needs PS_FLOAT_FMT_MAX bytes; both return the length, NUL-terminated.
 */
#define PS_FLOAT_FMT_MAX 32
size_t ps_fmt_go_float(double v, char *out);
size_t ps_fmt_om_float(double v, char *out);

#endif
