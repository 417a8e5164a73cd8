/* spec/c/test_hmap.c: ps_hmap, ps_labels_hash and ps_buf. TAP output. */
#include "ps_buf.h"
#include "ps_hmap.h"

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

/* Keys are uint64 numbers stored in a caller array; the map's value is the
 * array index, as the memory store uses it. */
#define NKEYS 5000
static uint64_t keys[NKEYS];

static int eq_key(const void *key, uint64_t val, void *ud)
{
    (void)ud;
    return keys[val] == *(const uint64_t *)key;
}

/* A deliberately weak hash so clusters and wrap-around happen. */
static uint64_t weak_hash(uint64_t k)
{
    return k % 97;
}

static int drop_odd(uint64_t hash, uint64_t val, void *ud)
{
    size_t *calls = ud;

    (void)hash;
    calls[val]++;
    return keys[val] % 2 == 1;
}

static struct ps_label L(const char *n, const char *v) {
    struct ps_label l;

    l.name = n;
    l.name_len = strlen(n);
    l.value = v;
    l.value_len = strlen(v);
    return l;
}

static void
test_map(uint64_t (*hf)(uint64_t), const char *what)
{
    struct ps_hmap m;
    char d[128];
    size_t i, cnt, it;
    uint64_t h, v, *vp, k;
    int good, found;
    static size_t calls[NKEYS];

    ps_hmap_init(&m);
    ok(ps_hmap_find(&m, 1, eq_key, &keys[0], NULL) == NULL,
       "find in an empty map");
    for (i = 0; i < NKEYS; i++)
        keys[i] = i * 7919u + 3;
    good = 1;
    for (i = 0; i < NKEYS; i++)
        good &= ps_hmap_insert(&m, hf(keys[i]), i) == PS_OK;
    snprintf(d, sizeof(d), "%s: %d inserts", what, NKEYS);
    ok(good && ps_hmap_count(&m) == NKEYS, d);
    ok(m.n * 4 <= m.cap * 3, "load stays <= 3/4");
    good = 1;
    for (i = 0; i < NKEYS; i++) {
        vp = ps_hmap_find(&m, hf(keys[i]), eq_key, &keys[i], NULL);
        good &= vp != NULL && *vp == i;
    }
    snprintf(d, sizeof(d), "%s: every key found", what);
    ok(good, d);
    k = 424242;
    ok(ps_hmap_find(&m, hf(k), eq_key, &k, NULL) == NULL, "absent key");

    /* upsert: existing and new */
    ok(ps_hmap_upsert(&m, hf(keys[10]), eq_key, &keys[10], NULL, 999, &vp,
                      &found) == PS_OK &&
           found == 1 && *vp == 10,
       "upsert finds an existing key");

    /* remove half, check the rest survive the backward shifts */
    good = 1;
    for (i = 0; i < NKEYS; i += 2) {
        uint64_t out = 0;

        good &= ps_hmap_remove(&m, hf(keys[i]), eq_key, &keys[i], NULL, &out) ==
                    1 &&
                out == i;
    }
    snprintf(d, sizeof(d), "%s: remove every other key", what);
    ok(good && ps_hmap_count(&m) == NKEYS / 2, d);
    good = 1;
    for (i = 0; i < NKEYS; i++) {
        vp = ps_hmap_find(&m, hf(keys[i]), eq_key, &keys[i], NULL);
        good &= (i % 2 == 0) ? vp == NULL : (vp != NULL && *vp == i);
    }
    snprintf(d, sizeof(d), "%s: survivors found, removed ones gone", what);
    ok(good, d);
    ok(ps_hmap_remove(&m, hf(keys[0]), eq_key, &keys[0], NULL, NULL) == 0,
       "removing an absent key returns 0");

    /* iterate */
    cnt = 0;
    it = 0;
    good = 1;
    while (ps_hmap_next(&m, &it, &h, &v)) {
        cnt++;
        good &= v % 2 == 1;
    }
    ok(good && cnt == NKEYS / 2, "iteration visits every live entry once");

    /* remove_if: every entry seen once, only matching ones removed */
    for (i = 0; i < NKEYS; i++) {
        keys[i] = i; /* odd index <=> odd key */
        calls[i] = 0;
    }
    ps_hmap_clear(&m);
    for (i = 0; i < NKEYS; i++)
        ps_hmap_insert(&m, hf(keys[i]), i);
    cnt = ps_hmap_remove_if(&m, drop_odd, calls);
    good = cnt == NKEYS / 2 && ps_hmap_count(&m) == NKEYS / 2;
    for (i = 0; i < NKEYS; i++) {
        good &= calls[i] == 1;
        vp = ps_hmap_find(&m, hf(keys[i]), eq_key, &keys[i], NULL);
        good &= (i % 2 == 1) ? vp == NULL : (vp != NULL && *vp == i);
    }
    snprintf(d, sizeof(d), "%s: remove_if calls drop once per entry", what);
    ok(good, d);

    /* upsert a new key */
    k = keys[1];
    ok(ps_hmap_upsert(&m, hf(k), eq_key, &k, NULL, 1, &vp, &found) == PS_OK &&
           found == 0 && *vp == 1 &&
           ps_hmap_find(&m, hf(k), eq_key, &k, NULL) != NULL,
       "upsert inserts a new key");

    /* clear keeps capacity */
    i = m.cap;
    ps_hmap_clear(&m);
    ok(ps_hmap_count(&m) == 0 && m.cap == i &&
           ps_hmap_find(&m, hf(keys[0]), eq_key, &keys[0], NULL) == NULL,
       "clear empties and keeps capacity");
    ps_hmap_cleanup(&m);
    ps_hmap_cleanup(&m);
    ok(m.v == NULL && m.cap == 0, "cleanup is idempotent");
}

static uint64_t zero_hash(uint64_t k)
{
    (void)k;
    return 0; /* hash 0 is allowed and collides everything */
}

static uint64_t good_hash(uint64_t k)
{
    return k * 0x9E3779B97F4A7C15ull;
}

static void test_labels_hash(void)
{
    struct ps_label a[2], b[2], big[3];
    struct ps_label *blk;
    char *v1 = malloc(5000), *v2 = malloc(5000);

    a[0] = L("a", "bc");
    b[0] = L("ab", "c");
    ok(ps_labels_hash_v(a, 1) != ps_labels_hash_v(b, 1),
       "(\"a\",\"bc\") and (\"ab\",\"c\") hash differently");
    a[0] = L("a", "");
    a[1] = L("b", "c");
    b[0] = L("a", "b");
    b[1] = L("", "c");
    ok(ps_labels_hash_v(a, 2) != ps_labels_hash_v(b, 2),
       "value/name boundary is kept across pairs");
    a[0] = L("job", "x");
    b[0] = L("job", "x");
    ok(ps_labels_hash_v(a, 1) == ps_labels_hash_v(b, 1),
       "equal sets hash equally (different storage)");
    ok(ps_labels_equal_v(a, 1, b, 1) && !ps_labels_equal_v(a, 1, b, 0),
       "ps_labels_equal_v");
    /* beyond the 1 KiB stack buffer: chunked, still deterministic */
    memset(v1, 'x', 4999);
    v1[4999] = '\0';
    memcpy(v2, v1, 5000);
    big[0] = L("__name__", "m");
    big[1] = L("big", v1);
    big[2] = L("z", "1");
    {
        uint64_t h1 = ps_labels_hash_v(big, 3);

        big[1] = L("big", v2);
        ok(h1 == ps_labels_hash_v(big, 3), "large sets hash deterministically");
        v2[4000] = 'y';
        ok(h1 != ps_labels_hash_v(big, 3), "a change past 1 KiB is seen");
    }
    blk = ps_label_block_dup(big, 3);
    ok(blk != NULL && ps_labels_equal_v(blk, 3, big, 3) &&
           blk[0].name[8] == '\0' && blk[0].name != big[0].name,
       "ps_label_block_dup copies into one block");
    ps_free(blk);
    ok(ps_label_block_dup(big, 0) == NULL, "block dup of nothing is NULL");
    {
        struct ps_labels ls;

        ps_labels_init(&ls);
        ps_labels_add(&ls, "b", 1, "2", 1, 0);
        ps_labels_add(&ls, "a", 1, "1", 1, 0);
        ps_labels_sort(&ls);
        a[0] = L("a", "1");
        a[1] = L("b", "2");
        ok(ps_labels_hash(&ls) == ps_labels_hash_v(a, 2),
           "ps_labels_hash = ps_labels_hash_v of the sorted views");
        ps_labels_cleanup(&ls);
    }
    free(v1);
    free(v2);
}

static void test_buf(void)
{
    struct ps_buf b;
    size_t cap;

    ps_buf_init(&b, 16);
    ok(strcmp(ps_buf_cstr(&b), "") == 0 && ps_buf_len(&b) == 0,
       "fresh buffer is empty, no allocation");
    ok(ps_buf_adds(&b, "hello ") == PS_OK && ps_buf_addc(&b, 'w') == PS_OK &&
           ps_buf_printf(&b, "%d!", 42) == PS_OK &&
           strcmp(ps_buf_cstr(&b), "hello w42!") == 0,
       "add, addc, printf");
    ok(ps_buf_adds(&b, "1234567") == PS_ELIMIT &&
           strcmp(ps_buf_cstr(&b), "hello w42!") == 0,
       "over the cap: PS_ELIMIT, content unchanged");
    ok(ps_buf_adds(&b, "123456") == PS_OK && ps_buf_len(&b) == 16,
       "exactly the cap fits");
    cap = b.cap;
    ps_buf_reset(&b);
    ok(ps_buf_len(&b) == 0 && b.cap == cap && ps_buf_cstr(&b)[0] == '\0',
       "reset keeps capacity");
    ps_buf_cleanup(&b);
    ps_buf_init(&b, 0);
    {
        char big[300];
        int i, good = 1;

        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        for (i = 0; i < 50; i++)
            good &= ps_buf_printf(&b, "%s", big) == PS_OK;
        ok(good && ps_buf_len(&b) == 50 * 299, "long printf, uncapped");
    }
    ps_buf_cleanup(&b);
    ps_buf_cleanup(&b);
    ok(b.p == NULL, "buf cleanup is idempotent");
}

/* Every allocation failure is a clean error, and the map stays usable. */
static void test_torture(void)
{
    long n;
    int good = 1, fails = 0;

    for (n = 0; n < 40; n++) {
        struct ps_hmap m;
        struct ps_buf b;
        uint64_t i, *vp;
        int rc = PS_OK, found;

        ps_hmap_init(&m);
        ps_buf_init(&b, 0);
        ps_alloc_fail_after(n);
        for (i = 0; i < 200 && rc == PS_OK; i++) {
            keys[i] = i;
            rc = (i % 2) ? ps_hmap_insert(&m, good_hash(i), i)
                         : ps_hmap_upsert(&m, good_hash(i), eq_key, &keys[i],
                                          NULL, i, &vp, &found);
            if (rc == PS_OK)
                rc = ps_buf_printf(&b, "%u,", (unsigned)i);
        }
        ps_alloc_fail_after(-1);
        if (rc != PS_OK) {
            fails++;
            good &= rc == PS_ENOMEM;
        }
        /* what was inserted is still there */
        {
            uint64_t j, last = rc == PS_OK ? i : i - 1;

            for (j = 0; j < last; j++)
                good &= ps_hmap_find(&m, good_hash(j), eq_key, &keys[j],
                                     NULL) != NULL;
        }
        ps_hmap_cleanup(&m);
        ps_buf_cleanup(&b);
    }
    ok(good && fails > 0, "allocation failures: PS_ENOMEM, map intact");
}

int main(void)
{
    test_map(weak_hash, "weak hash");
    test_map(zero_hash, "all-zero hash");
    test_map(good_hash, "good hash");
    test_labels_hash();
    test_buf();
    test_torture();
    printf("1..%d\n", n_test);
    return n_fail ? 1 : 0;
}
