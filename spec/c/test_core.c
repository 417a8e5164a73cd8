/* spec/c/test_core.c: ps_core's validation and allocator hook. TAP output. */
#include "ps_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_test, n_fail;

static void ok(int cond, const char *desc)
{
    n_test++;
    if (!cond)
        n_fail++;
    printf("%sok %d - %s\n", cond ? "" : "not ", n_test, desc);
}

#define U8(s) ps_utf8_valid((s), sizeof(s) - 1)

static size_t live_bytes;

/* A counting allocator: proves every ps_* allocation goes through the hook. */
static void *counting(void *ud, void *p, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(p);
        return NULL;
    }
    live_bytes += nsize;
    return realloc(p, nsize);
}

int main(void)
{
    struct ps_err e;
    char *s;

    ok(U8("plain ascii label value"), "ascii is valid UTF-8");
    ok(U8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "2-, 3-, 4-byte sequences");
    ok(!U8("\xc3"), "truncated 2-byte sequence rejected");
    ok(!U8("\xc0\xaf"), "overlong '/' rejected");
    ok(!U8("\xe0\x80\xaf"), "overlong 3-byte rejected");
    ok(!U8("\xed\xa0\x80"), "UTF-16 surrogate rejected");
    ok(!U8("\xf4\x90\x80\x80"), "above U+10FFFF rejected");
    ok(!U8("0123456789abcdef\xff"), "bad byte after the 8-byte fast path");
    ok(U8("0123456789abcdef\xc3\xa9xyz"), "multibyte after the fast path");
    ok(ps_name_legacy_metric("http_requests:rate5m", 20), "legacy metric name with colon");
    ok(!ps_name_legacy_metric("1abc", 4), "legacy metric name cannot start with a digit");
    ok(!ps_name_legacy_metric("", 0), "empty metric name rejected");
    ok(ps_name_legacy_label("_a1", 3), "legacy label name");
    ok(!ps_name_legacy_label("a:b", 3), "colon not allowed in legacy label names");
    ok(!ps_name_legacy_label("a.b", 3), "dot not allowed in legacy label names");
    ok(ps_name_utf8("a.b", 3), "dot allowed in UTF-8 label names");
    ok(!ps_name_utf8("\xff", 1), "invalid UTF-8 name rejected");

    ps_err_init(&e);
    ok(ps_err_set(&e, PS_EPARSE, "line %d: %s", 3, "bad") == PS_EPARSE &&
           strcmp(e.msg, "line 3: bad") == 0,
       "ps_err_set returns the code and formats the message");
    ok(strcmp(ps_errname(PS_ENOMEM), "ENOMEM") == 0, "ps_errname");
    ok(ps_err_set(NULL, PS_EINVAL, "x") == PS_EINVAL, "ps_err_set(NULL) is safe");

    ps_set_allocator(counting, NULL);
    s = ps_strndup("abc", 3);
    ok(s != NULL && strcmp(s, "abc") == 0 && live_bytes == 4,
       "allocations go through the hook");
    ps_free(s);
    ps_set_allocator(NULL, NULL);

    ps_alloc_fail_after(1);
    s = ps_strndup("x", 1);
    ok(s != NULL, "first allocation succeeds under fail_after(1)");
    ok(ps_malloc(8) == NULL, "second allocation fails under fail_after(1)");
    ok(ps_alloc_fail_after(-1) == 2, "fail_after reports the allocations made");
    ps_free(s);
    ok(ps_calloc(SIZE_MAX / 2, 4) == NULL, "calloc overflow is refused");

    /* The whole-process torture of spec/torture.sh, which sets k itself
     * (so this part only runs outside it). */
    if (getenv("PS_TORTURE_FAIL_AT") == NULL) {
        long c = ps_alloc_fail_at(0);
        char *a, *b, *d;

        ps_alloc_fail_at(c + 2);
        a = ps_malloc(1);
        b = ps_malloc(1);
        d = ps_malloc(1);
        ok(a != NULL && b == NULL && d != NULL,
           "fail_at(k): the k-th allocation fails, and only that one");
        ps_free(a);
        ps_free(d);
        ps_alloc_fail_after(5);
        ps_free(ps_malloc(1));
        ps_alloc_fail_after(-1);
        ok(ps_alloc_fail_at(0) == c + 3,
           "fail_at counts allocations, except under a fail_after countdown");
    }

    printf("1..%d\n", n_test);
    return n_fail != 0;
}
