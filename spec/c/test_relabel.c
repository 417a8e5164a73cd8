/*
 * test_relabel: C unit tests for ps_md5, ps_labels and ps_relabel, in TAP.
 * The Lua specs cover the semantics in breadth; this file checks the C
 * contracts (out-params, error codes, ordering) and fails every allocation
 * in turn (torture) to prove each failure is an error return, not a crash
 * or a leak (run under ASan/LSan and valgrind by make check).
 */
#include "ps_core.h"
#include "ps_labels.h"
#include "ps_md5.h"
#include "ps_relabel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_tests, n_failed;

static void ok(int cond, const char *fmt, const char *detail)
{
    n_tests++;
    if (!cond)
        n_failed++;
    printf("%sok %d - %s%s%s\n", cond ? "" : "not ", n_tests, fmt,
           detail ? ": " : "", detail ? detail : "");
}

#define S(lit)                                                                 \
    {                                                                          \
        lit, sizeof(lit) - 1                                                   \
    }
#define NONE                                                                   \
    {                                                                          \
        NULL, 0                                                                \
    }

/* ---- md5 --------------------------------------------------------------- */

static void hex(const unsigned char d[16], char out[33])
{
    int i;

    for (i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void test_md5(void)
{
    /* RFC 1321 appendix A.5 test suite. */
    static const char *const v[][2] = {
        {"", "d41d8cd98f00b204e9800998ecf8427e"},
        {"a", "0cc175b9c0f1b6a831c399e269772661"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
        {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
        {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
         "d174ab98d277d9f5a5611c2c9f419d9f"},
        {"1234567890123456789012345678901234567890123456789012345678901234567"
         "8901234567890",
         "57edf4a22be3c955ac49da2e2107b67a"}};
    size_t i, k;
    unsigned char d[16];
    char h[33];
    int all = 1;

    for (i = 0; i < sizeof(v) / sizeof(*v); i++) {
        ps_md5(v[i][0], strlen(v[i][0]), d);
        hex(d, h);
        ok(strcmp(h, v[i][1]) == 0, "md5 RFC 1321 vector", v[i][0]);
    }
    /* Incremental updates split at every offset give the same digest. */
    for (k = 0; k <= 80; k++) {
        struct ps_md5 m;
        const char *s = v[6][0];

        ps_md5_init(&m);
        ps_md5_update(&m, s, k);
        ps_md5_update(&m, s + k, strlen(s) - k);
        ps_md5_final(&m, d);
        hex(d, h);
        all &= strcmp(h, v[6][1]) == 0;
    }
    ok(all, "md5 incremental updates split at every offset", NULL);
}

/* ---- labels ------------------------------------------------------------ */

static void test_labels(void)
{
    struct ps_labels ls, cp;
    struct ps_labels_builder b;
    const struct ps_label *l, *snap;
    size_t n;
    char buf[8];

    ps_labels_init(&ls);
    ps_labels_init(&cp);
    ps_labels_add(&ls, "b", 1, "2", 1, 0);
    ps_labels_add(&ls, "a", 1, "1", 1, 0);
    strcpy(buf, "cc");
    ps_labels_add(&ls, buf, 2, buf, 2, PS_LABELS_COPY);
    buf[0] = 'X'; /* the copy must not see this */
    ok(ps_labels_sort(&ls) == PS_OK, "labels sort", NULL);
    ok(ls.n == 3 && ls.v[0].name[0] == 'a' && ls.v[2].name_len == 2 &&
           memcmp(ls.v[2].value, "cc", 2) == 0,
       "labels sorted by name, copies owned", NULL);
    l = ps_labels_get(&ls, "b", 1);
    ok(l && l->value[0] == '2' && !ps_labels_get(&ls, "c", 1),
       "labels get by binary search", NULL);
    ok(ps_labels_copy(&cp, &ls) == PS_OK && cp.n == 3 &&
           cp.v[1].value != ls.v[1].value,
       "labels deep copy", NULL);
    ps_labels_add(&ls, "a", 1, "again", 5, 0);
    ok(ps_labels_sort(&ls) == PS_EINVAL, "labels sort reports duplicates",
       NULL);

    /* Builder: Prometheus Range order is base labels by name, then added
     * labels in the order they were (last) added. */
    ps_labels_builder_init(&b);
    ok(ps_labels_builder_reset(&b, &cp) == PS_OK, "builder reset", NULL);
    ps_labels_builder_set(&b, "z", 1, "1", 1, PS_LABELS_COPY);
    ps_labels_builder_set(&b, "a", 1, "new", 3, PS_LABELS_COPY);
    ps_labels_builder_set(&b, "m", 1, "", 0, 0); /* "" deletes: no-op */
    ps_labels_builder_del(&b, "b", 1);
    ok(ps_labels_builder_range(&b, &snap, &n) == PS_OK && n == 3 &&
           snap[0].name[0] == 'c' && snap[1].name[0] == 'z' &&
           snap[2].name[0] == 'a',
       "builder range order: untouched, then added in order", NULL);
    l = ps_labels_builder_get(&b, "a", 1);
    ok(l && l->value_len == 3, "builder get sees the set value", NULL);
    ok(ps_labels_builder_labels(&b, &ls) == PS_OK && ls.n == 3 &&
           ls.v[0].name[0] == 'a' && ls.v[2].name[0] == 'z',
       "builder labels sorted", NULL);
    ps_labels_add(&cp, "cc", 2, "dup", 3, 0);
    ok(ps_labels_builder_reset(&b, &cp) == PS_EINVAL,
       "builder reset rejects duplicate names", NULL);
    ps_labels_builder_cleanup(&b);
    ps_labels_builder_cleanup(&b); /* idempotent */
    ps_labels_cleanup(&ls);
    ps_labels_cleanup(&cp);
    ps_labels_cleanup(&cp);
}

/* ---- relabel ----------------------------------------------------------- */

static const struct ps_str src_a[] = {S("a")};
static const struct ps_str src_ab[] = {S("a"), S("b")};

static const struct ps_relabel_config typical[] = {
    {src_ab, 2, NONE, S("(.*);(.*)"), 0, S("ab"), S("$2-${1}"), NONE, 0},
    {src_a, 1, NONE, NONE, 16, S("h"), NONE, S("HashMod"), 0},
    {NULL, 0, NONE, S("__meta_(.+)"), 0, NONE, NONE, S("labelmap"), 0},
    {NULL, 0, NONE, S("__meta_.*"), 0, NONE, NONE, S("labeldrop"), 0},
    {src_a, 1, NONE, NONE, 0, S("up"), NONE, S("uppercase"), 0},
    {src_a, 1, NONE, S("x"), 0, NONE, NONE, S("drop"), 0},
};

static void set_input(struct ps_labels *in)
{
    ps_labels_clear(in);
    /* deliberately unsorted */
    ps_labels_add(in, "b", 1, "bee", 3, 0);
    ps_labels_add(in, "a", 1, "foo", 3, 0);
    ps_labels_add(in, "__meta_pod", 10, "p1", 2, 0);
}

static const char *value_of(const struct ps_labels *l, const char *name)
{
    const struct ps_label *x = ps_labels_get(l, name, strlen(name));
    static char buf[64];

    if (x == NULL)
        return "(none)";
    snprintf(buf, sizeof(buf), "%.*s", (int)x->value_len, x->value);
    return buf;
}

static void test_relabel(void)
{
    struct ps_relabel *r = NULL, *untouched = (struct ps_relabel *)&r;
    struct ps_relabel_scratch *s = NULL;
    struct ps_labels in, out;
    struct ps_err e;
    size_t drop_at = 42;
    int rc;

    ps_labels_init(&in);
    ps_labels_init(&out);
    ps_err_init(&e);
    rc = ps_relabel_compile(&r, typical, 6, 0, &e);
    ok(rc == PS_OK && ps_relabel_count(r) == 6, "compile 6 rules", NULL);
    ok(r != NULL && ps_relabel_action_of(r, 1) == PS_RELABEL_HASHMOD &&
           strcmp(ps_relabel_action_name(PS_RELABEL_HASHMOD), "hashmod") == 0,
       "action names are case-insensitive", NULL);
    ok(ps_relabel_scratch_new(&s) == PS_OK, "scratch new", NULL);
    if (r == NULL || s == NULL) {
        ps_relabel_free(r); /* out of memory: only under spec/torture.sh */
        goto out;
    }
    set_input(&in);
    rc = ps_relabel_apply(r, s, &in, &out, &drop_at, &e);
    ok(rc == PS_OK && drop_at == PS_RELABEL_KEPT, "apply keeps", NULL);
    ok(strcmp(value_of(&out, "ab"), "bee-foo") == 0, "replace expands",
       value_of(&out, "ab"));
    /* printf '%s' foo | md5sum: ...edef654fccc4a4d8, mod 16 = 8 */
    ok(strcmp(value_of(&out, "h"), "8") == 0, "hashmod of foo mod 16",
       value_of(&out, "h"));
    ok(strcmp(value_of(&out, "pod"), "p1") == 0 &&
           strcmp(value_of(&out, "__meta_pod"), "(none)") == 0,
       "labelmap then labeldrop", NULL);
    ok(strcmp(value_of(&out, "up"), "FOO") == 0, "uppercase", NULL);
    ok(out.n == 6 && ps_label_cmp(&out.v[0], &out.v[1]) < 0, "output sorted",
       NULL);

    /* The drop rule fires when a is "x". */
    ps_labels_clear(&in);
    ps_labels_add(&in, "a", 1, "x", 1, 0);
    rc = ps_relabel_apply(r, s, &in, &out, &drop_at, &e);
    ok(rc == PS_OK && drop_at == 5 && out.n == 0,
       "drop reports the rule position and empties out", NULL);
    rc = ps_relabel_apply_range(r, s, &in, 0, 5, &out, &drop_at, &e);
    ok(rc == PS_OK && drop_at == PS_RELABEL_KEPT, "apply_range stops early",
       NULL);
    rc = ps_relabel_apply_range(r, s, &in, 5, 2, &out, &drop_at, &e);
    ok(rc == PS_EINVAL, "apply_range checks bounds", e.msg);

    ps_labels_add(&in, "a", 1, "y", 1, 0);
    rc = ps_relabel_apply(r, s, &in, &out, &drop_at, &e);
    ok(rc == PS_EINVAL, "duplicate input names are EINVAL", e.msg);
    ps_relabel_free(r);

    /* Errors name the rule; out-params untouched. */
    {
        struct ps_relabel_config bad[2] = {
            {NULL, 0, NONE, NONE, 0, S("t"), NONE, NONE, 0},
            {NULL, 0, NONE, NONE, 0, S("t"), NONE, S("hashmod"), 7}};

        r = untouched;
        rc = ps_relabel_compile(&r, bad, 2, 0, &e);
        ok(rc == PS_EINVAL && r == untouched &&
               strcmp(e.msg, "rule 7: modulus: action hashmod requires a "
                             "non-zero modulus") == 0,
           "error names rule index and field", e.msg);
        bad[1].action = (struct ps_str)S("keep");
        bad[1].regex = (struct ps_str)S("(a)\\1");
        rc = ps_relabel_compile(&r, bad, 2, 0, &e);
        ok(rc == PS_EINVAL &&
               strncmp(e.msg, "rule 7: regex: backreference", 28) == 0,
           "backreferences rejected like RE2", e.msg);
        bad[1].regex = (struct ps_str)S("a)(b");
        rc = ps_relabel_compile(&r, bad, 2, 0, &e);
        ok(rc == PS_OK, "wrapped like Prometheus: a)(b compiles", NULL);
        if (rc == PS_OK) /* else r is still the bogus untouched pointer */
            ps_relabel_free(r);
        bad[0].target_label = (struct ps_str)S("a.b");
        rc = ps_relabel_compile(&r, bad, 1, PS_RELABEL_LEGACY_NAMES, &e);
        ok(rc == PS_EINVAL, "legacy names reject a.b", e.msg);
    }
out:
    ps_relabel_free(NULL);
    ps_relabel_scratch_free(s);
    ps_relabel_scratch_free(NULL);
    ps_labels_cleanup(&in);
    ps_labels_cleanup(&out);
}

/* One full compile + scratch + two applies; returns the first error. */
static int torture_once(void)
{
    struct ps_relabel *r = NULL;
    struct ps_relabel_scratch *s = NULL;
    struct ps_labels in, out;
    size_t drop_at;
    int rc;

    ps_labels_init(&in);
    ps_labels_init(&out);
    rc = ps_relabel_compile(&r, typical, 6, 0, NULL);
    if (rc == PS_OK)
        rc = ps_relabel_scratch_new(&s);
    if (rc == PS_OK) {
        set_input(&in);
        rc = ps_relabel_apply(r, s, &in, &out, &drop_at, NULL);
    }
    if (rc == PS_OK)
        rc = ps_relabel_apply(r, s, &in, &out, &drop_at, NULL);
    ps_relabel_scratch_free(s);
    ps_relabel_free(r);
    ps_labels_cleanup(&in);
    ps_labels_cleanup(&out);
    return rc;
}

static void test_torture(void)
{
    long n, k;
    int bad = 0, oks = 0;
    char detail[80];

    ps_alloc_fail_after(-1);
    ok(torture_once() == PS_OK, "torture baseline run", NULL);
    n = ps_alloc_fail_after(-1);
    for (k = 0; k <= n; k++) {
        int rc;

        ps_alloc_fail_after(k);
        rc = torture_once();
        if (rc == PS_OK)
            oks++;
        else if (rc != PS_ENOMEM)
            bad++;
    }
    ps_alloc_fail_after(-1);
    snprintf(detail, sizeof(detail), "%ld allocations, %d runs ok, %d bad", n,
             oks, bad);
    ok(n > 10 && bad == 0 && oks >= 1, "every failed allocation is PS_ENOMEM",
       detail);
}

int main(void)
{
    test_md5();
    test_labels();
    test_relabel();
    test_torture();
    printf("1..%d\n", n_tests);
    return n_failed != 0;
}
