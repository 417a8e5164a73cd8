/*
 * fuzz_relabel: random rules and label sets through compile and apply.
 *
 * Input format (lines split on '\n'; the format is loose on purpose so
 * mutations stay meaningful):
 *   line 1: header; byte 0 % 9 = number of rules, bit 3 = legacy names
 *   then 7 lines per rule: action, source_labels (comma-separated),
 *     separator, regex, modulus (decimal), target_label, replacement;
 *     a line that is exactly "~" means "not given"
 *   remaining lines: labels as name=value
 * Compile errors are fine; an apply error other than PS_ELIMIT (a regex
 * resource limit) is a bug, and so is any output that is unsorted, has
 * duplicate names or empty values. Everything is freed: LSan checks.
 */
#include "ps_core.h"
#include "ps_labels.h"
#include "ps_relabel.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RULES 8
#define MAX_SRC 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct cursor {
    const char *p, *end;
};

/* Next line as a view; returns 0 at end of input. */
static int next_line(struct cursor *c, struct ps_str *out)
{
    const char *nl;

    if (c->p >= c->end)
        return 0;
    nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
    out->p = c->p;
    out->n = nl ? (size_t)(nl - c->p) : (size_t)(c->end - c->p);
    c->p = nl ? nl + 1 : c->end;
    return 1;
}

static struct ps_str given(struct ps_str s)
{
    if (s.n == 1 && s.p[0] == '~')
        s.p = NULL, s.n = 0;
    return s;
}

static void check_output(const struct ps_labels *out)
{
    size_t i;

    for (i = 0; i < out->n; i++) {
        if (out->v[i].value_len == 0)
            abort(); /* empty values mean "absent" */
        if (i > 0 && ps_label_cmp(&out->v[i - 1], &out->v[i]) >= 0)
            abort(); /* must be sorted, no duplicates */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cursor c = {(const char *)data, (const char *)data + size};
    struct ps_relabel_config cfg[MAX_RULES];
    struct ps_str src[MAX_RULES][MAX_SRC];
    struct ps_str line;
    struct ps_relabel *r = NULL;
    struct ps_relabel_scratch *s = NULL;
    struct ps_labels in, out;
    size_t nrules, i, drop_at;
    unsigned flags;
    int rc;

    if (!next_line(&c, &line) || line.n == 0)
        return 0;
    nrules = (unsigned char)line.p[0] % (MAX_RULES + 1);
    flags = ((unsigned char)line.p[0] & 8) ? PS_RELABEL_LEGACY_NAMES : 0;
    memset(cfg, 0, sizeof(cfg));
    for (i = 0; i < nrules; i++) {
        struct ps_str f[7];
        int k;

        for (k = 0; k < 7; k++)
            if (!next_line(&c, &f[k]))
                return 0;
        cfg[i].action = given(f[0]);
        if (!(f[1].n == 1 && f[1].p[0] == '~')) {
            /* comma-separated names */
            const char *p = f[1].p, *e = f[1].p + f[1].n;
            size_t n = 0;

            while (n < MAX_SRC) {
                const char *comma = memchr(p, ',', (size_t)(e - p));
                src[i][n].p = p;
                src[i][n].n = comma ? (size_t)(comma - p) : (size_t)(e - p);
                n++;
                if (!comma)
                    break;
                p = comma + 1;
            }
            cfg[i].source_labels = src[i];
            cfg[i].n_source_labels = f[1].n ? n : 0;
        }
        cfg[i].separator = given(f[2]);
        cfg[i].regex = given(f[3]);
        for (k = 0; k < (int)f[4].n && k < 19; k++)
            if (f[4].p[k] >= '0' && f[4].p[k] <= '9')
                cfg[i].modulus =
                    cfg[i].modulus * 10 + (uint64_t)(f[4].p[k] - '0');
        cfg[i].target_label = given(f[5]);
        cfg[i].replacement = given(f[6]);
    }
    if (ps_relabel_compile(&r, cfg, nrules, flags, NULL) != PS_OK)
        return 0;
    ps_labels_init(&in);
    ps_labels_init(&out);
    while (in.n < 64 && next_line(&c, &line)) {
        const char *eq = memchr(line.p, '=', line.n);
        size_t nl = eq ? (size_t)(eq - line.p) : line.n;

        if (ps_labels_add(&in, line.p, nl, eq ? eq + 1 : "",
                          eq ? line.n - nl - 1 : 0, 0) != PS_OK)
            goto done;
    }
    if (ps_relabel_scratch_new(&s) != PS_OK)
        goto done;
    rc = ps_relabel_apply(r, s, &in, &out, &drop_at, NULL);
    if (rc == PS_OK && drop_at == PS_RELABEL_KEPT)
        check_output(&out);
    else if (rc != PS_OK && rc != PS_EINVAL && rc != PS_ELIMIT)
        abort(); /* EINVAL: duplicate input names; ELIMIT: PCRE2 limits */
    /* Rule by rule, as the trace does. */
    for (i = 0; rc == PS_OK && i < nrules; i++) {
        rc = ps_relabel_apply_range(r, s, &in, i, 1, &out, &drop_at, NULL);
        if (rc == PS_OK && drop_at == PS_RELABEL_KEPT)
            check_output(&out);
    }
done:
    ps_relabel_scratch_free(s);
    ps_relabel_free(r);
    ps_labels_cleanup(&in);
    ps_labels_cleanup(&out);
    return 0;
}
