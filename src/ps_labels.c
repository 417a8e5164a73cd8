/* ps_labels: label sets, string store and the relabel builder. */
#include "ps_labels.h"

#include "ps_core.h"

#include <stdlib.h>
#include <string.h>

struct ps_strblk {
    struct ps_strblk *next;
    size_t used, cap;
    char data[];
};

#define STRBLK_MIN 1024

/* ---- string store ------------------------------------------------------ */

void ps_strstore_init(struct ps_strstore *s)
{
    s->head = NULL;
}

void ps_strstore_clear(struct ps_strstore *s)
{
    struct ps_strblk *b;

    if (s->head == NULL)
        return;
    /* The head is the newest and largest chunk: keep it, free the rest. */
    b = s->head->next;
    while (b != NULL) {
        struct ps_strblk *next = b->next;
        ps_free(b);
        b = next;
    }
    s->head->next = NULL;
    s->head->used = 0;
}

void ps_strstore_cleanup(struct ps_strstore *s)
{
    ps_strstore_clear(s);
    ps_free(s->head);
    s->head = NULL;
}

char *ps_strstore_dup(struct ps_strstore *st, const char *s, size_t n)
{
    struct ps_strblk *b = st->head;
    char *d;

    if (n >= SIZE_MAX / 2 - sizeof(*b))
        return NULL;
    if (b == NULL || b->cap - b->used < n + 1) {
        /* Grow geometrically so a reused store settles on one chunk. */
        size_t cap = b ? b->cap * 2 : STRBLK_MIN;
        struct ps_strblk *nb;

        if (cap < n + 1)
            cap = n + 1;
        nb = ps_malloc(sizeof(*nb) + cap);
        if (nb == NULL)
            return NULL;
        nb->next = b;
        nb->used = 0;
        nb->cap = cap;
        st->head = b = nb;
    }
    d = b->data + b->used;
    if (n > 0)
        memcpy(d, s, n);
    d[n] = '\0';
    b->used += n + 1;
    return d;
}

/* ---- label sets -------------------------------------------------------- */

int ps_label_cmp(const struct ps_label *a, const struct ps_label *b)
{
    size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = n ? memcmp(a->name, b->name, n) : 0;

    if (c != 0)
        return c;
    return (a->name_len > b->name_len) - (a->name_len < b->name_len);
}

static int cmp_name(const char *a, size_t an, const char *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;

    if (c != 0)
        return c;
    return (an > bn) - (an < bn);
}

void ps_labels_init(struct ps_labels *ls)
{
    ls->v = NULL;
    ls->n = ls->cap = 0;
    ps_strstore_init(&ls->store);
}

void ps_labels_cleanup(struct ps_labels *ls)
{
    ps_free(ls->v);
    ps_strstore_cleanup(&ls->store);
    ps_labels_init(ls);
}

void ps_labels_clear(struct ps_labels *ls)
{
    ls->n = 0;
    ps_strstore_clear(&ls->store);
}

static int grow(void **v, size_t *cap, size_t need, size_t elem)
{
    size_t ncap;
    void *nv;

    if (need <= *cap)
        return PS_OK;
    ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    if (ncap > SIZE_MAX / elem)
        return PS_ENOMEM;
    nv = ps_realloc(*v, ncap * elem);
    if (nv == NULL)
        return PS_ENOMEM;
    *v = nv;
    *cap = ncap;
    return PS_OK;
}

int ps_labels_add(struct ps_labels *ls, const char *name, size_t name_len,
                  const char *value, size_t value_len, unsigned flags)
{
    struct ps_label *l;

    if (grow((void **)&ls->v, &ls->cap, ls->n + 1, sizeof(*ls->v)) != PS_OK)
        return PS_ENOMEM;
    if (flags & PS_LABELS_COPY) {
        name = ps_strstore_dup(&ls->store, name, name_len);
        value = name ? ps_strstore_dup(&ls->store, value, value_len) : NULL;
        if (value == NULL)
            return PS_ENOMEM; /* a stray copy stays in the store: harmless */
    }
    l = &ls->v[ls->n++];
    l->name = name;
    l->name_len = name_len;
    l->value = value;
    l->value_len = value_len;
    return PS_OK;
}

static int qcmp_label(const void *a, const void *b)
{
    return ps_label_cmp(a, b);
}

int ps_labels_sort(struct ps_labels *ls)
{
    size_t i;

    if (ls->n > 1)
        qsort(ls->v, ls->n, sizeof(*ls->v), qcmp_label);
    for (i = 1; i < ls->n; i++)
        if (ps_label_cmp(&ls->v[i - 1], &ls->v[i]) == 0)
            return PS_EINVAL;
    return PS_OK;
}

const struct ps_label *ps_labels_get(const struct ps_labels *ls,
                                     const char *name, size_t name_len)
{
    size_t lo = 0, hi = ls->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct ps_label *l = &ls->v[mid];
        int c = cmp_name(l->name, l->name_len, name, name_len);

        if (c == 0)
            return l;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int ps_labels_copy(struct ps_labels *dst, const struct ps_labels *src)
{
    size_t i;

    ps_labels_clear(dst);
    for (i = 0; i < src->n; i++) {
        const struct ps_label *l = &src->v[i];

        if (ps_labels_add(dst, l->name, l->name_len, l->value, l->value_len,
                          PS_LABELS_COPY) != PS_OK) {
            ps_labels_clear(dst);
            return PS_ENOMEM;
        }
    }
    return PS_OK;
}

/* ---- builder ----------------------------------------------------------- */

void ps_labels_builder_init(struct ps_labels_builder *b)
{
    b->v = NULL;
    b->n = b->cap = 0;
    b->seq = 0;
    b->snap = NULL;
    b->snap_cap = 0;
    b->added = NULL;
    b->added_cap = 0;
    ps_strstore_init(&b->store);
}

void ps_labels_builder_cleanup(struct ps_labels_builder *b)
{
    ps_free(b->v);
    ps_free(b->snap);
    ps_free(b->added);
    ps_strstore_cleanup(&b->store);
    ps_labels_builder_init(b);
}

static int qcmp_ent(const void *a, const void *b)
{
    return ps_label_cmp(a, b); /* l is the first member */
}

int ps_labels_builder_reset(struct ps_labels_builder *b,
                            const struct ps_labels *base)
{
    size_t i;

    b->n = 0;
    b->seq = 0;
    ps_strstore_clear(&b->store);
    if (grow((void **)&b->v, &b->cap, base->n, sizeof(*b->v)) != PS_OK)
        return PS_ENOMEM;
    for (i = 0; i < base->n; i++) {
        if (base->v[i].value_len == 0)
            continue; /* empty value == absent label */
        b->v[b->n].l = base->v[i];
        b->v[b->n].seq = 0;
        b->n++;
    }
    /* Inputs are usually sorted already: check before paying for qsort. */
    for (i = 1; i < b->n; i++)
        if (ps_label_cmp(&b->v[i - 1].l, &b->v[i].l) >= 0)
            break;
    if (i < b->n) {
        qsort(b->v, b->n, sizeof(*b->v), qcmp_ent);
        for (i = 1; i < b->n; i++)
            if (ps_label_cmp(&b->v[i - 1].l, &b->v[i].l) == 0)
                return PS_EINVAL;
    }
    return PS_OK;
}

/* Index of name if present (*found = 1), else its insertion point. */
static size_t bsearch_ent(const struct ps_labels_builder *b, const char *name,
                          size_t name_len, int *found)
{
    size_t lo = 0, hi = b->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct ps_label *l = &b->v[mid].l;
        int c = cmp_name(l->name, l->name_len, name, name_len);

        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

const struct ps_label *ps_labels_builder_get(const struct ps_labels_builder *b,
                                             const char *name, size_t name_len)
{
    int found;
    size_t i = bsearch_ent(b, name, name_len, &found);

    return found ? &b->v[i].l : NULL;
}

void ps_labels_builder_del_at(struct ps_labels_builder *b, size_t i)
{
    memmove(&b->v[i], &b->v[i + 1], (b->n - i - 1) * sizeof(*b->v));
    b->n--;
}

void ps_labels_builder_del(struct ps_labels_builder *b, const char *name,
                           size_t name_len)
{
    int found;
    size_t i = bsearch_ent(b, name, name_len, &found);

    if (found)
        ps_labels_builder_del_at(b, i);
}

int ps_labels_builder_set(struct ps_labels_builder *b, const char *name,
                          size_t name_len, const char *value, size_t value_len,
                          unsigned flags)
{
    int found;
    size_t i;
    struct ps_labels_builder_ent *e;

    if (value_len == 0) {
        ps_labels_builder_del(b, name, name_len);
        return PS_OK;
    }
    i = bsearch_ent(b, name, name_len, &found);
    if (!found && grow((void **)&b->v, &b->cap, b->n + 1, sizeof(*b->v)))
        return PS_ENOMEM;
    if (flags & PS_LABELS_COPY) {
        value = ps_strstore_dup(&b->store, value, value_len);
        if (value == NULL)
            return PS_ENOMEM;
        if (!found) {
            name = ps_strstore_dup(&b->store, name, name_len);
            if (name == NULL)
                return PS_ENOMEM;
        }
    }
    if (!found) {
        memmove(&b->v[i + 1], &b->v[i], (b->n - i) * sizeof(*b->v));
        b->n++;
        e = &b->v[i];
        e->l.name = name;
        e->l.name_len = name_len;
        e->seq = ++b->seq;
    } else {
        e = &b->v[i];
        /* Prometheus moves a base label into its "add" list on Set, but an
         * already added label keeps its place. */
        if (e->seq == 0)
            e->seq = ++b->seq;
    }
    e->l.value = value;
    e->l.value_len = value_len;
    return PS_OK;
}

static int qcmp_seq(const void *a, const void *b)
{
    uint32_t x = ((const struct ps_labels_builder_ent *)a)->seq;
    uint32_t y = ((const struct ps_labels_builder_ent *)b)->seq;

    return (x > y) - (x < y);
}

int ps_labels_builder_range(struct ps_labels_builder *b,
                            const struct ps_label **out, size_t *n)
{
    size_t i, k = 0, nadd = 0;

    if (grow((void **)&b->snap, &b->snap_cap, b->n + 1, sizeof(*b->snap)) ||
        grow((void **)&b->added, &b->added_cap, b->n + 1, sizeof(*b->added)))
        return PS_ENOMEM;
    for (i = 0; i < b->n; i++)
        if (b->v[i].seq == 0)
            b->snap[k++] = b->v[i].l;
        else
            b->added[nadd++] = b->v[i];
    /* Untouched labels are already in name order; added ones go last, in
     * the order Prometheus's Builder appended them. */
    if (nadd > 1)
        qsort(b->added, nadd, sizeof(*b->added), qcmp_seq);
    for (i = 0; i < nadd; i++)
        b->snap[k++] = b->added[i].l;
    *out = b->snap;
    *n = k;
    return PS_OK;
}

int ps_labels_builder_labels(const struct ps_labels_builder *b,
                             struct ps_labels *out)
{
    size_t i;

    ps_labels_clear(out);
    for (i = 0; i < b->n; i++) {
        const struct ps_label *l = &b->v[i].l;

        if (ps_labels_add(out, l->name, l->name_len, l->value, l->value_len,
                          PS_LABELS_COPY) != PS_OK) {
            ps_labels_clear(out);
            return PS_ENOMEM;
        }
    }
    return PS_OK;
}
