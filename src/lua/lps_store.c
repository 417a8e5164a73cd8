/*
 * lps_store: Lua marshalling for ps_appender_mem (promscrape.memory()).
 * No store logic lives here.
 *
 * core.memory([opts]) -> MemoryStore | nil, msg, code
 *   opts.forget_after = seconds (default 0: keep every series forever)
 * MemoryStore:series() -> { { labels = {...}, value = v, timestamp = ms,
 *                             stale = bool }, ... } in creation order
 * MemoryStore:text()   -> the store as text exposition (like /federate)
 * MemoryStore:stats()  -> { series, appended, rejected, exemplars, forgotten }
 * MemoryStore:close()  (also __gc and __close): idempotent. A manager that
 *   appends to the store keeps the C store alive until it is closed too.
 *
 * The queries copy what they read into C memory owned by a GC-managed
 * snapshot before building any Lua value, so a Lua error (out of memory)
 * never unwinds through the store's locked iteration and never leaks.
 */
#include "lps.h"
#include "lps_store.h"

#include "../ps_buf.h"

#include <string.h>

#define SNAP_MT "promscrape.StoreSnapshot"

struct lps_store_box {
    struct lps_sink *s; /* NULL once closed */
};

void lps_sink_ref(struct lps_sink *s)
{
    s->refs++;
}

void lps_sink_unref(struct lps_sink *s)
{
    if (s != NULL && --s->refs == 0) {
        ps_appender_mem_free(s->mem);
        ps_free(s);
    }
}

static struct lps_store_box *check_open(lua_State *L, int idx)
{
    struct lps_store_box *b = luaL_checkudata(L, idx, LPS_STORE_MT);

    if (b->s == NULL)
        luaL_error(L, "attempt to use a closed memory store");
    return b;
}

struct lps_sink *lps_store_check(lua_State *L, int idx)
{
    return check_open(L, idx)->s;
}

static int lps_store_close(lua_State *L) /* __gc, __close and :close() */
{
    struct lps_store_box *b = luaL_checkudata(L, 1, LPS_STORE_MT);

    if (b->s != NULL) {
        lps_sink_unref(b->s); /* a manager may still hold the store */
        b->s = NULL;
    }
    return 0;
}

int lps_store_new(lua_State *L)
{
    struct ps_appender_mem_opts o;
    struct lps_store_box *b;
    struct lps_sink *s;
    struct ps_err e;
    int rc;

    memset(&o, 0, sizeof(o));
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 1) != 0) { /* key, value */
            const char *k = lua_type(L, -2) == LUA_TSTRING
                                ? lua_tostring(L, -2)
                                : "?";
            if (strcmp(k, "forget_after") != 0)
                return luaL_error(L, "memory: unknown option '%s'", k);
            o.forget_after_ms = (int64_t)(luaL_checknumber(L, -1) * 1000.0);
            if (o.forget_after_ms < 0)
                return luaL_argerror(L, 1, "forget_after must be >= 0");
            lua_pop(L, 1); /* key */
        }
    }
    /* The box exists (GC-owned) before anything that could leak. */
    b = lua_newuserdatauv(L, sizeof(*b), 0); /* box */
    b->s = NULL;
    ps_err_init(&e);
    s = ps_calloc(1, sizeof(*s));
    if (s == NULL) {
        luaL_pushfail(L);
        lua_pushliteral(L, "memory: out of memory");
        lua_pushstring(L, ps_errname(PS_ENOMEM));
        return 3;
    }
    rc = ps_appender_mem_new(&s->mem, &o, &e);
    if (rc != PS_OK) {
        ps_free(s);
        luaL_pushfail(L);
        lua_pushfstring(L, "memory: %s", e.msg[0] ? e.msg : ps_strerror(rc));
        lua_pushstring(L, ps_errname(rc));
        return 3;
    }
    s->refs = 1;
    b->s = s;
    luaL_setmetatable(L, LPS_STORE_MT); /* only once the store exists */
    return 1;
}

/* ---- snapshots ---------------------------------------------------------- */

struct snap_ent {
    size_t off, n; /* labels: labs[off .. off + n) */
    double value;
    int64_t ts_ms;
    int stale;
};

struct snap {
    struct snap_ent *v;
    size_t n, cap;
    struct ps_label *labs;
    size_t nlabs, caplabs;
    struct ps_strstore strs;
    struct ps_buf text;
    int failed; /* an allocation failed during the walk */
};

static int snap_gc(lua_State *L)
{
    struct snap *sn = luaL_checkudata(L, 1, SNAP_MT);

    ps_free(sn->v);
    ps_free(sn->labs);
    ps_strstore_cleanup(&sn->strs);
    ps_buf_cleanup(&sn->text);
    memset(sn, 0, sizeof(*sn));
    return 0;
}

/* Pushes an empty snapshot whose C memory the GC frees. */
static struct snap *snap_new(lua_State *L)
{
    struct snap *sn = lua_newuserdatauv(L, sizeof(*sn), 0); /* snap */

    memset(sn, 0, sizeof(*sn));
    ps_strstore_init(&sn->strs);
    ps_buf_init(&sn->text, 0);
    if (luaL_newmetatable(L, SNAP_MT)) { /* snap mt */
        lua_pushcfunction(L, snap_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2); /* snap */
    return sn;
}

static int grow(void **p, size_t *cap, size_t need, size_t elt)
{
    size_t nc;
    void *np;

    if (need <= *cap)
        return 0;
    nc = *cap ? *cap * 2 : 64;
    while (nc < need)
        nc *= 2;
    np = ps_realloc(*p, nc * elt);
    if (np == NULL)
        return -1;
    *p = np;
    *cap = nc;
    return 0;
}

/* Runs under the store's lock: copies only, never touches Lua. */
static int snap_add(const struct ps_mem_sample *smp, void *ud)
{
    struct snap *sn = ud;
    struct snap_ent *en;
    size_t i;

    if (grow((void **)&sn->v, &sn->cap, sn->n + 1, sizeof(*sn->v)) != 0 ||
        grow((void **)&sn->labs, &sn->caplabs, sn->nlabs + smp->n_labels,
             sizeof(*sn->labs)) != 0)
        goto fail;
    en = &sn->v[sn->n];
    en->off = sn->nlabs;
    en->n = smp->n_labels;
    en->value = smp->value;
    en->ts_ms = smp->ts_ms;
    en->stale = smp->stale;
    for (i = 0; i < smp->n_labels; i++) {
        const struct ps_label *l = &smp->labels[i];
        struct ps_label *d = &sn->labs[sn->nlabs + i];

        d->name = ps_strstore_dup(&sn->strs, l->name, l->name_len);
        d->value = ps_strstore_dup(&sn->strs, l->value, l->value_len);
        if (d->name == NULL || d->value == NULL)
            goto fail;
        d->name_len = l->name_len;
        d->value_len = l->value_len;
    }
    sn->nlabs += smp->n_labels;
    sn->n++;
    return 0;
fail:
    sn->failed = 1;
    return 1; /* stop the walk */
}

static int push_nomem(lua_State *L, const char *what)
{
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: out of memory", what);
    lua_pushstring(L, ps_errname(PS_ENOMEM));
    return 3;
}

static int lps_store_series(lua_State *L)
{
    struct lps_store_box *b = check_open(L, 1);
    struct snap *sn = snap_new(L); /* snap */
    size_t i, j;

    ps_appender_mem_foreach(b->s->mem, snap_add, sn);
    if (sn->failed)
        return push_nomem(L, "series");
    lua_createtable(L, (int)sn->n, 0); /* snap list */
    for (i = 0; i < sn->n; i++) {
        const struct snap_ent *en = &sn->v[i];

        lua_createtable(L, 0, 4); /* snap list s */
        lua_createtable(L, 0, (int)en->n); /* snap list s labels */
        for (j = 0; j < en->n; j++) {
            const struct ps_label *l = &sn->labs[en->off + j];
            lua_pushlstring(L, l->name, l->name_len);
            lua_pushlstring(L, l->value, l->value_len);
            lua_rawset(L, -3);
        }
        lua_setfield(L, -2, "labels");            /* snap list s */
        lua_pushnumber(L, (lua_Number)en->value);
        lua_setfield(L, -2, "value");
        lua_pushnumber(L, (lua_Number)en->ts_ms); /* ms as a double */
        lua_setfield(L, -2, "timestamp");
        lua_pushboolean(L, en->stale);
        lua_setfield(L, -2, "stale");
        lua_rawseti(L, -2, (int)i + 1);           /* snap list */
    }
    return 1;
}

static int lps_store_text(lua_State *L)
{
    struct lps_store_box *b = check_open(L, 1);
    struct snap *sn = snap_new(L); /* snap */
    int rc = ps_appender_mem_text(b->s->mem, &sn->text);

    if (rc != PS_OK) {
        luaL_pushfail(L);
        lua_pushfstring(L, "text: %s", ps_strerror(rc));
        lua_pushstring(L, ps_errname(rc));
        return 3;
    }
    lua_pushlstring(L, ps_buf_cstr(&sn->text), ps_buf_len(&sn->text));
    return 1; /* the snapshot is collected later */
}

static int lps_store_stats(lua_State *L)
{
    struct lps_store_box *b = check_open(L, 1);
    struct ps_mem_stats st;

    ps_appender_mem_stats(b->s->mem, &st);
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)st.series);
    lua_setfield(L, -2, "series");
    lua_pushinteger(L, (lua_Integer)st.appended);
    lua_setfield(L, -2, "appended");
    lua_pushinteger(L, (lua_Integer)st.rejected);
    lua_setfield(L, -2, "rejected");
    lua_pushinteger(L, (lua_Integer)st.exemplars);
    lua_setfield(L, -2, "exemplars");
    lua_pushinteger(L, (lua_Integer)st.forgotten);
    lua_setfield(L, -2, "forgotten");
    return 1;
}

static int lps_store_tostring(lua_State *L)
{
    struct lps_store_box *b = luaL_checkudata(L, 1, LPS_STORE_MT);

    lua_pushfstring(L, "promscrape.MemoryStore (%s%p)",
                    b->s ? "" : "closed, ", (void *)b);
    return 1;
}

void lps_store_register(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"series", lps_store_series}, {"text", lps_store_text},
        {"stats", lps_store_stats},   {"close", lps_store_close},
        {NULL, NULL}};

    luaL_newmetatable(L, LPS_STORE_MT); /* core mt */
    lps_newlib(L, methods);             /* core mt methods */
    lua_setfield(L, -2, "__index");     /* core mt */
    lua_pushcfunction(L, lps_store_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, lps_store_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, lps_store_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1); /* core */
    lua_pushcfunction(L, lps_store_new);
    lua_setfield(L, -2, "memory");
}
