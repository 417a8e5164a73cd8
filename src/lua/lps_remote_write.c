/*
 * lps_remote_write: Lua marshalling for ps_remote_write and
 * ps_appender_fanout, and the appender "switch" a Manager drives. No
 * delivery logic lives here; lua/promscrape/remote_write.lua normalizes
 * options through promscrape.config and documents the public API.
 *
 * core.remote_write_new(flat) -> RemoteWrite | nil, msg, code
 *   flat: one normalized remote_write entry, durations as *_ms numbers
 *   (built by remote_write.lua). Validated at once on a scratch engine;
 *   bound to a manager's engine by lps_capp_attach().
 * core.fanout_new({ app, ... }) -> Fanout (apps: MemoryStore, RemoteWrite,
 *   Fanout)
 * core.remote_write_apply(manager, { { key = s, opts = flat }, ... })
 *   -> true | nil, msg, code: the prometheus.yml entries of a manager
 * core.manager_remote_writes(manager) -> { RemoteWrite, ... }
 * RemoteWrite:stats(), :flush(seconds), :close(); Fanout:stats(), :close()
 *
 * Lifetime: every C appender here is a counted heap object (struct
 * lps_capp) held by its Lua box, by the fan-outs and switches it is a
 * child of, and by the manager it is attached to, so whatever the GC
 * finalizes first, the manager's loops never see a freed appender.
 */
#include "lps.h"
#include "lps_remote_write.h"
#include "lps_store.h"

#include "../ps_appender_fanout.h"
#include "../ps_remote_write.h"

#include <stdlib.h>
#include <string.h>

#define RW_MT "promscrape.RemoteWrite"
#define FANOUT_MT "promscrape.Fanout"
#define SWITCH_MT "promscrape.AppenderSwitch"
#define SWITCHES "promscrape.Manager.switches" /* manager -> switch box */
#define STORES "promscrape.Manager.stores"     /* manager -> MemoryStore */

#define ABSIDX(L, i)                                                           \
    ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)

/* An engine shared by a manager and the remote writes bound to it. */
struct lps_eng {
    int refs;
    struct ps_engine *eng;
};

enum capp_kind { K_RW, K_FANOUT, K_SWITCH };

/* A child: a memory store (counted sink) or another C appender. */
struct capp_child {
    struct lps_sink *s;
    struct lps_capp *c;
};

/* A remote_write entry of the applied config, kept while its key is. */
struct sw_entry {
    char *key;
    struct lps_capp *c;
};

struct lps_capp {
    struct ps_appender base; /* K_SWITCH only: the switch's vtable */
    int refs;
    enum capp_kind kind;
    struct lps_eng *eng; /* bound to (counted), or NULL */
    /* K_RW */
    int opts_ref; /* the flat options (registry) */
    struct ps_remote_write *rw;
    /* K_FANOUT: kids; K_SWITCH: kids[0] is the primary */
    struct capp_child *kids;
    size_t n;
    struct ps_appender_fanout *fo; /* fan-out over kids (+ entries) */
    /* K_SWITCH */
    struct sw_entry *ents;
    size_t nents;
    struct ps_appender *cur; /* what the switch forwards to */
    uint64_t epoch;          /* 1..255, in the top byte of its refs */
};

struct capp_box {
    struct lps_capp *c; /* NULL once closed */
};

/* ---- refcounts ------------------------------------------------------------
 */

static void eng_unref(struct lps_eng *g)
{
    if (g != NULL && --g->refs == 0) {
        ps_engine_free(g->eng);
        free(g);
    }
}

static void capp_unref(lua_State *L, struct lps_capp *c);

static void child_unref(lua_State *L, struct capp_child *k)
{
    lps_sink_unref(k->s);
    if (k->c != NULL)
        capp_unref(L, k->c);
    k->s = NULL;
    k->c = NULL;
}

/* Frees c at the last ref: its own core object first (it borrows the
 * children and the engine), then the children, then the engine. */
static void capp_unref(lua_State *L, struct lps_capp *c)
{
    size_t i;

    if (c == NULL || --c->refs > 0)
        return;
    ps_remote_write_free(c->rw);
    ps_appender_fanout_free(c->fo);
    for (i = 0; i < c->nents; i++) {
        capp_unref(L, c->ents[i].c);
        free(c->ents[i].key);
    }
    free(c->ents);
    for (i = 0; i < c->n; i++)
        child_unref(L, &c->kids[i]);
    free(c->kids);
    luaL_unref(L, LUA_REGISTRYINDEX, c->opts_ref);
    eng_unref(c->eng);
    free(c);
}

static struct ps_appender *capp_appender(struct lps_capp *c)
{
    switch (c->kind) {
    case K_RW:
        return ps_remote_write_appender(c->rw);
    case K_FANOUT:
        return ps_appender_fanout_appender(c->fo);
    default:
        return &c->base;
    }
}

static struct ps_appender *child_appender(const struct capp_child *k)
{
    return k->s != NULL ? ps_appender_mem_appender(k->s->mem)
                        : capp_appender(k->c);
}

/* ---- marshalling the flat options (built by remote_write.lua) ----------- */

static const char *f_str(lua_State *L, int t, const char *k)
{
    const char *s = NULL;

    lua_getfield(L, t, k); /* v: kept alive by the table */
    if (lua_type(L, -1) == LUA_TSTRING)
        s = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "remote_write: %s: expected a string", k);
    lua_pop(L, 1);
    return s != NULL && s[0] != '\0' ? s : NULL;
}

static double f_num(lua_State *L, int t, const char *k)
{
    double v = 0;

    lua_getfield(L, t, k);
    if (lua_type(L, -1) == LUA_TNUMBER)
        v = lua_tonumber(L, -1);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "remote_write: %s: expected a number", k);
    lua_pop(L, 1);
    return v;
}

static int f_bool(lua_State *L, int t, const char *k)
{
    int v;

    lua_getfield(L, t, k);
    v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* GC-owned zeroed memory anchored in the table at `anchor`. */
static void *anchored(lua_State *L, int anchor, size_t n)
{
    void *p = lua_newuserdatauv(L, n ? n : 1, 0); /* +1 */

    memset(p, 0, n ? n : 1);
    lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1); /* 0 */
    return p;
}

static void f_ps_str(lua_State *L, int t, const char *k, struct ps_str *out)
{
    lua_getfield(L, t, k); /* v */
    if (lua_type(L, -1) == LUA_TSTRING)
        out->p = lua_tolstring(L, -1, &out->n); /* kept by the table */
    else if (!lua_isnil(L, -1))
        luaL_error(L, "write_relabel_configs: %s: expected a string", k);
    lua_pop(L, 1);
}

/* write_relabel_configs: normalized rule tables (promscrape.config). */
static void read_rules(lua_State *L, int t, int anchor,
                       struct ps_remote_write_opts *o)
{
    struct ps_relabel_config *v;
    size_t i, n;

    lua_getfield(L, t, "write_relabel_configs"); /* list|nil */
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    n = lua_rawlen(L, -1);
    v = anchored(L, anchor, n * sizeof(*v));
    for (i = 0; i < n; i++) {
        int r;

        lua_rawgeti(L, -1, (int)i + 1); /* list rule */
        luaL_checktype(L, -1, LUA_TTABLE);
        r = lua_gettop(L);
        f_ps_str(L, r, "separator", &v[i].separator);
        f_ps_str(L, r, "regex", &v[i].regex);
        f_ps_str(L, r, "target_label", &v[i].target_label);
        f_ps_str(L, r, "replacement", &v[i].replacement);
        f_ps_str(L, r, "action", &v[i].action);
        v[i].modulus = (uint64_t)f_num(L, r, "modulus");
        lua_getfield(L, r, "source_labels"); /* list rule sl */
        if (lua_istable(L, -1) && lua_rawlen(L, -1) > 0) {
            size_t j, m = lua_rawlen(L, -1);
            struct ps_str *sl = anchored(L, anchor, m * sizeof(*sl));
            for (j = 0; j < m; j++) {
                lua_rawgeti(L, -1, (int)j + 1);
                sl[j].p = luaL_checklstring(L, -1, &sl[j].n);
                lua_pop(L, 1); /* kept alive by the list */
            }
            v[i].source_labels = sl;
            v[i].n_source_labels = m;
        }
        lua_pop(L, 2); /* list */
        v[i].index = i + 1;
    }
    lua_pop(L, 1); /* 0 */
    o->write_relabel_configs = v;
    o->n_write_relabel_configs = n;
}

/* Fills o from the flat table at t; strings stay owned by t, arrays by the
 * anchor table. Raises only on a malformed table (a bug in the caller). */
static void read_opts(lua_State *L, int t, int anchor,
                      struct ps_remote_write_opts *o)
{
    t = ABSIDX(L, t);
    memset(o, 0, sizeof(*o));
    o->name = f_str(L, t, "name");
    o->url = f_str(L, t, "url");
    o->remote_timeout_ms = (long)f_num(L, t, "remote_timeout_ms");
    lua_getfield(L, t, "headers"); /* list|nil of "Name: value" */
    if (lua_istable(L, -1)) {
        size_t i, n = lua_rawlen(L, -1);
        const char **h = anchored(L, anchor, (n + 1) * sizeof(*h));
        for (i = 0; i < n; i++) {
            lua_rawgeti(L, -1, (int)i + 1);
            h[i] = luaL_checkstring(L, -1); /* kept by the list */
            lua_pop(L, 1);
        }
        o->headers = h;
    }
    lua_pop(L, 1);
    o->basic_auth_user = f_str(L, t, "basic_auth_user");
    o->basic_auth_password = f_str(L, t, "basic_auth_password");
    o->basic_auth_password_file = f_str(L, t, "basic_auth_password_file");
    if (o->basic_auth_user != NULL && o->basic_auth_password == NULL &&
        o->basic_auth_password_file == NULL)
        o->basic_auth_password = "";
    o->auth_type = f_str(L, t, "auth_type");
    o->auth_credentials = f_str(L, t, "auth_credentials");
    o->auth_credentials_file = f_str(L, t, "auth_credentials_file");
    o->tls.ca_file = f_str(L, t, "tls_ca_file");
    o->tls.cert_file = f_str(L, t, "tls_cert_file");
    o->tls.key_file = f_str(L, t, "tls_key_file");
    o->tls.server_name = f_str(L, t, "tls_server_name");
    o->tls.insecure_skip_verify = f_bool(L, t, "tls_insecure_skip_verify");
    o->tls.min_version = f_str(L, t, "tls_min_version");
    o->proxy_url = f_str(L, t, "proxy_url");
    o->disable_http2 = f_bool(L, t, "disable_http2");
    o->disable_follow_redirects = f_bool(L, t, "disable_follow_redirects");
    read_rules(L, t, anchor, o);
    o->queue.capacity = (size_t)f_num(L, t, "capacity");
    o->queue.max_shards = (unsigned)f_num(L, t, "max_shards");
    o->queue.min_shards = (unsigned)f_num(L, t, "min_shards");
    o->queue.max_samples_per_send = (size_t)f_num(L, t, "max_samples_per_send");
    o->queue.batch_send_deadline_ms =
        (long)f_num(L, t, "batch_send_deadline_ms");
    o->queue.min_backoff_ms = (long)f_num(L, t, "min_backoff_ms");
    o->queue.max_backoff_ms = (long)f_num(L, t, "max_backoff_ms");
    o->queue.retry_on_http_429 = f_bool(L, t, "retry_on_http_429");
    o->metadata.disable = f_bool(L, t, "metadata_disable");
    o->metadata.send_interval_ms =
        (long)f_num(L, t, "metadata_send_interval_ms");
    o->metadata.max_samples_per_send =
        (size_t)f_num(L, t, "metadata_max_samples_per_send");
    o->send_exemplars = f_bool(L, t, "send_exemplars");
    o->series_ttl_ms = (int64_t)f_num(L, t, "series_ttl_ms");
}

/* ps_remote_write_new from the flat table at t, on eng. */
static int rw_build(lua_State *L, int t, struct ps_engine *eng,
                    struct ps_remote_write **out, struct ps_err *e)
{
    struct ps_remote_write_opts o;
    int rc, top = lua_gettop(L);

    t = ABSIDX(L, t);
    lua_newtable(L); /* anchor */
    read_opts(L, t, lua_gettop(L), &o);
    rc = ps_remote_write_new(out, eng, &o, e);
    lua_settop(L, top);
    return rc;
}

/* ---- binding to an engine -------------------------------------------------
 */

static int capp_bind(lua_State *L, struct lps_capp *c, struct lps_eng *g,
                     struct ps_err *e);

static int child_bind(lua_State *L, struct capp_child *k, struct lps_eng *g,
                      struct ps_err *e)
{
    return k->c != NULL ? capp_bind(L, k->c, g, e) : PS_OK;
}

/* (Re)builds the fan-out of a switch: primary + entries, or the primary
 * alone. Bumps the epoch, so refs handed out before are seen as unknown
 * (ref 0) and every child finds its series by labels once. Outside a
 * transaction only (apply_config and attach are). */
static int switch_rebuild(struct lps_capp *c, struct ps_err *e)
{
    struct ps_appender_fanout_opts fo;
    struct ps_appender_fanout *nf = NULL;
    struct ps_appender *kids[65];
    size_t i;
    int rc;

    if (c->nents > 0) {
        if (c->nents + 1 > 64)
            return ps_err_set(e, PS_EINVAL,
                              "remote_write: at most 63 "
                              "entries");
        kids[0] = child_appender(&c->kids[0]);
        for (i = 0; i < c->nents; i++)
            kids[i + 1] = capp_appender(c->ents[i].c);
        memset(&fo, 0, sizeof(fo));
        fo.children = kids;
        fo.n_children = c->nents + 1;
        rc = ps_appender_fanout_new(&nf, &fo, e);
        if (rc != PS_OK)
            return rc;
    }
    ps_appender_fanout_free(c->fo);
    c->fo = nf;
    c->cur = nf != NULL ? ps_appender_fanout_appender(nf)
                        : child_appender(&c->kids[0]);
    c->epoch = c->epoch % 255 + 1;
    return PS_OK;
}

/* Binds c (and its children) to g. PS_OK when already bound to g;
 * PS_ESTATE when bound to another engine. */
static int capp_bind(lua_State *L, struct lps_capp *c, struct lps_eng *g,
                     struct ps_err *e)
{
    struct ps_appender *kids[64];
    struct ps_appender_fanout_opts fo;
    size_t i;
    int rc = PS_OK;

    if (c->eng != NULL)
        return c->eng == g ? PS_OK
                           : ps_err_set(e, PS_ESTATE,
                                        "appender is already attached to "
                                        "another manager");
    for (i = 0; i < c->n && rc == PS_OK; i++)
        rc = child_bind(L, &c->kids[i], g, e);
    if (rc != PS_OK)
        return rc;
    switch (c->kind) {
    case K_RW:
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->opts_ref); /* flat */
        rc = rw_build(L, -1, g->eng, &c->rw, e);
        lua_pop(L, 1);
        break;
    case K_FANOUT:
        for (i = 0; i < c->n; i++)
            kids[i] = child_appender(&c->kids[i]);
        memset(&fo, 0, sizeof(fo));
        fo.children = kids;
        fo.n_children = c->n;
        rc = ps_appender_fanout_new(&c->fo, &fo, e);
        break;
    case K_SWITCH:
        rc = switch_rebuild(c, e);
        break;
    }
    if (rc == PS_OK) {
        c->eng = g;
        g->refs++;
    }
    return rc;
}

/* ---- the switch appender --------------------------------------------------
 */

#define TAG_SHIFT 56
#define TAG_MASK ((UINT64_C(1) << TAG_SHIFT) - 1)

/* A ref of this epoch -> the child's ref; anything else -> 0 (unknown). */
static uint64_t untag(const struct lps_capp *c, uint64_t ref)
{
    return ref >> TAG_SHIFT == c->epoch ? ref & TAG_MASK : 0;
}

/* A child's ref -> ours. A child ref using the top byte (a generation past
 * 2^24 reuses of one slot) loses it: the child then sees a stale ref and
 * falls back to the labels, which is slow but never aliases. */
static uint64_t tag(const struct lps_capp *c, uint64_t ref)
{
    return (ref & TAG_MASK) | c->epoch << TAG_SHIFT;
}

static int sw_begin(struct ps_appender *a, const struct ps_labels *target,
                    struct ps_err *e)
{
    struct lps_capp *c = (struct lps_capp *)a;

    return c->cur->vt->begin(c->cur, target, e);
}

static int sw_append(struct ps_appender *a, uint64_t ref,
                     const struct ps_labels *ls, int64_t t_ms, double v,
                     uint64_t *ref_out, struct ps_err *e)
{
    struct lps_capp *c = (struct lps_capp *)a;
    uint64_t out = 0;
    int rc = c->cur->vt->append(c->cur, untag(c, ref), ls, t_ms, v, &out, e);

    if (out != 0)
        *ref_out = tag(c, out);
    return rc;
}

static int sw_append_exemplar(struct ps_appender *a, uint64_t ref,
                              const struct ps_labels *ls,
                              const struct ps_exemplar *ex, struct ps_err *e)
{
    struct lps_capp *c = (struct lps_capp *)a;

    return c->cur->vt->append_exemplar(c->cur, untag(c, ref), ls, ex, e);
}

static int sw_update_metadata(struct ps_appender *a, uint64_t ref,
                              const struct ps_labels *ls,
                              const struct ps_metadata *m, struct ps_err *e)
{
    struct lps_capp *c = (struct lps_capp *)a;

    return c->cur->vt->update_metadata(c->cur, untag(c, ref), ls, m, e);
}

static int sw_commit(struct ps_appender *a, struct ps_err *e)
{
    struct lps_capp *c = (struct lps_capp *)a;

    return c->cur->vt->commit(c->cur, e);
}

static void sw_rollback(struct ps_appender *a)
{
    struct lps_capp *c = (struct lps_capp *)a;

    c->cur->vt->rollback(c->cur);
}

static void sw_free(struct ps_appender *a)
{
    (void)a; /* owned by its refcount, never by ps_appender_free */
}

static const struct ps_appender_vt switch_vt = {
    sw_begin,    sw_append, sw_append_exemplar, sw_update_metadata, sw_commit,
    sw_rollback, sw_free};

/* ---- Lua boxes ------------------------------------------------------------
 */

static struct lps_capp *capp_alloc(enum capp_kind kind, size_t nkids)
{
    struct lps_capp *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->kids = nkids ? calloc(nkids, sizeof(*c->kids)) : NULL;
    if (nkids && c->kids == NULL) {
        free(c);
        return NULL;
    }
    c->refs = 1;
    c->kind = kind;
    c->n = nkids;
    c->opts_ref = LUA_NOREF;
    c->base.vt = &switch_vt;
    return c;
}

/* Pushes a box of metatable mt holding c (takes over the caller's ref).
 * On a Lua memory error c leaks its one ref: acceptable, as in lauxlib. */
static void push_box(lua_State *L, struct lps_capp *c, const char *mt)
{
    struct capp_box *b = lua_newuserdatauv(L, sizeof(*b), 0);

    b->c = c;
    luaL_setmetatable(L, mt);
}

static struct capp_box *check_box(lua_State *L, int idx, const char *mt)
{
    struct capp_box *b = luaL_checkudata(L, idx, mt);

    if (b->c == NULL)
        luaL_error(L, "attempt to use a closed %s",
                   strcmp(mt, RW_MT) == 0 ? "remote_write" : "fanout");
    return b;
}

static int box_close(lua_State *L, const char *mt)
{
    struct capp_box *b = luaL_checkudata(L, 1, mt);

    if (b->c != NULL) {
        capp_unref(L, b->c); /* a manager or fan-out may still hold it */
        b->c = NULL;
    }
    return 0;
}

static int lps_rw_close(lua_State *L) /* __gc, __close and :close() */
{
    return box_close(L, RW_MT);
}

static int lps_fanout_close(lua_State *L) /* __gc, __close and :close() */
{
    return box_close(L, FANOUT_MT);
}

static int lps_switch_close(lua_State *L) /* __gc */
{
    return box_close(L, SWITCH_MT);
}

static int fail3(lua_State *L, int rc, const struct ps_err *e)
{
    luaL_pushfail(L);
    lua_pushstring(L, e->msg[0] ? e->msg : ps_strerror(rc));
    lua_pushstring(L, ps_errname(rc));
    return 3;
}

/* core.remote_write_new(flat): validates on a scratch engine (no
 * transfer is made), keeps flat for the bind. */
static int lps_rw_new(lua_State *L)
{
    struct ps_remote_write *rw = NULL;
    struct ps_engine *eng = NULL;
    struct lps_capp *c;
    struct ps_err e;
    int rc;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    ps_err_init(&e);
    rc = ps_engine_new(&eng, NULL, &e);
    if (rc == PS_OK)
        rc = rw_build(L, 1, eng, &rw, &e); /* may raise: leaks eng (bug) */
    ps_remote_write_free(rw);
    ps_engine_free(eng);
    if (rc != PS_OK)
        return fail3(L, rc, &e);
    c = capp_alloc(K_RW, 0);
    if (c == NULL)
        return luaL_error(L, "not enough memory");
    lua_pushvalue(L, 1);
    c->opts_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    push_box(L, c, RW_MT);
    return 1;
}

/* Reads the child at idx into k (taking a ref); raises unless it is an
 * open MemoryStore, RemoteWrite or Fanout. */
static void read_child(lua_State *L, int idx, struct capp_child *k)
{
    struct capp_box *b;

    if (luaL_testudata(L, idx, LPS_STORE_MT) != NULL) {
        k->s = lps_store_check(L, idx);
        lps_sink_ref(k->s);
        return;
    }
    b = luaL_testudata(L, idx, RW_MT);
    if (b == NULL)
        b = luaL_testudata(L, idx, FANOUT_MT);
    if (b == NULL)
        luaL_error(L,
                   "fanout: appenders must be MemoryStore, RemoteWrite "
                   "or Fanout values, got %s",
                   luaL_typename(L, idx));
    if (b->c == NULL)
        luaL_error(L, "fanout: appender is closed");
    k->c = b->c;
    k->c->refs++;
}

/* core.fanout_new({ app, ... }) -> Fanout (raises on misuse). */
static int lps_fanout_new(lua_State *L)
{
    struct lps_capp *c;
    size_t i, n;

    luaL_checktype(L, 1, LUA_TTABLE);
    n = lua_rawlen(L, 1);
    if (n < 1 || n > 64)
        return luaL_argerror(L, 1, "1 to 64 appenders expected");
    c = capp_alloc(K_FANOUT, n);
    if (c == NULL)
        return luaL_error(L, "not enough memory");
    push_box(L, c, FANOUT_MT); /* box: frees c if a child raises */
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, 1, (int)i + 1); /* box child */
        read_child(L, -1, &c->kids[i]);
        lua_pop(L, 1);
    }
    return 1;
}

/* Counters as integers (doubles on LuaJIT, exact below 2^53). */
static void set_num(lua_State *L, const char *k, double v)
{
    if (v == (double)(lua_Integer)v)
        lua_pushinteger(L, (lua_Integer)v);
    else
        lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void push_rw_stats(lua_State *L, struct lps_capp *c)
{
    struct ps_remote_write_stats st;

    memset(&st, 0, sizeof(st));
    if (c->rw != NULL)
        ps_remote_write_stats(c->rw, &st);
    lua_createtable(L, 0, 22); /* t */
    set_num(L, "sent", (double)st.samples_sent);
    set_num(L, "failed", (double)st.samples_failed);
    set_num(L, "retried", (double)st.samples_retried);
    set_num(L, "dropped", (double)st.samples_dropped);
    set_num(L, "relabel_dropped", (double)st.samples_relabel_dropped);
    set_num(L, "exemplars_sent", (double)st.exemplars_sent);
    set_num(L, "exemplars_dropped", (double)st.exemplars_dropped);
    set_num(L, "metadata_sent", (double)st.metadata_sent);
    set_num(L, "metadata_failed", (double)st.metadata_failed);
    set_num(L, "requests", (double)st.requests);
    set_num(L, "pending", (double)st.pending);
    set_num(L, "inflight", (double)st.inflight);
    set_num(L, "series", (double)st.series);
    set_num(L, "shards", (double)st.shards);
    set_num(L, "desired_shards", (double)st.desired_shards);
    set_num(L, "reshards", (double)st.reshards);
    set_num(L, "last_send", (double)st.last_send_ms / 1000.0);
    set_num(L, "last_status", (double)st.last_status);
    lua_pushstring(L, st.last_error);
    lua_setfield(L, -2, "last_error");
    lua_pushboolean(L, c->rw != NULL);
    lua_setfield(L, -2, "attached");
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->opts_ref); /* t flat */
    lua_getfield(L, -1, "name");                    /* t flat name */
    lua_setfield(L, -3, "name");
    lua_getfield(L, -1, "url");
    lua_setfield(L, -3, "url");
    lua_pop(L, 1); /* t */
}

/* RemoteWrite:stats() -> counters (zeros until attached). */
static int lps_rw_stats(lua_State *L)
{
    push_rw_stats(L, check_box(L, 1, RW_MT)->c);
    return 1;
}

static int do_flush(lua_State *L, struct lps_capp *c, double s)
{
    struct ps_err e;
    int rc;

    if (c->rw == NULL) { /* never attached: nothing was queued */
        lua_pushboolean(L, 1);
        return 1;
    }
    ps_err_init(&e);
    rc = ps_remote_write_flush(c->rw, (long)(s * 1000.0), &e);
    if (rc != PS_OK)
        return fail3(L, rc, &e);
    lua_pushboolean(L, 1);
    return 1;
}

/* RemoteWrite:flush([seconds = 60]) -> true | nil, msg, code. Drives the
 * engine it is bound to (scrapes of its manager run meanwhile); not from
 * a manager's callbacks. */
static int lps_rw_flush(lua_State *L)
{
    struct capp_box *b = check_box(L, 1, RW_MT);
    double s = luaL_optnumber(L, 2, 60);

    luaL_argcheck(L, s >= 0, 2, "seconds must be >= 0");
    return do_flush(L, b->c, s);
}

static const char *kind_of(const struct capp_child *k)
{
    if (k->s != NULL)
        return "memory";
    return k->c->kind == K_RW ? "remote_write" : "fanout";
}

/* Fanout:stats() -> { { kind, errors, rejected, commits, last_error,
 * remote_write = {...} (remote write children) }, ... } */
static int lps_fanout_stats(lua_State *L)
{
    struct lps_capp *c = check_box(L, 1, FANOUT_MT)->c;
    size_t i;

    lua_createtable(L, (int)c->n, 0); /* list */
    for (i = 0; i < c->n; i++) {
        struct ps_fanout_child_stats st;

        memset(&st, 0, sizeof(st));
        if (c->fo != NULL)
            ps_appender_fanout_child_stats(c->fo, i, &st);
        lua_createtable(L, 0, 6); /* list t */
        lua_pushstring(L, kind_of(&c->kids[i]));
        lua_setfield(L, -2, "kind");
        set_num(L, "errors", (double)st.errors);
        set_num(L, "rejected", (double)st.rejected);
        set_num(L, "commits", (double)st.commits);
        lua_pushstring(L, st.last_error);
        lua_setfield(L, -2, "last_error");
        if (c->kids[i].c != NULL && c->kids[i].c->kind == K_RW) {
            push_rw_stats(L, c->kids[i].c); /* list t rw */
            lua_setfield(L, -2, "remote_write");
        }
        lua_rawseti(L, -2, (int)i + 1); /* list */
    }
    return 1;
}

static int lps_rw_tostring(lua_State *L)
{
    struct capp_box *b = luaL_checkudata(L, 1, RW_MT);

    lua_pushfstring(L, "promscrape.RemoteWrite (%p%s)", (void *)b,
                    b->c == NULL ? ", closed" : "");
    return 1;
}

/* ---- managers --------------------------------------------------------------
 */

/* Pushes the weak-keyed registry table `name`, creating it. */
static void push_weak(lua_State *L, const char *name)
{
    lua_getfield(L, LUA_REGISTRYINDEX, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);          /* t */
        lua_createtable(L, 0, 1); /* t mt */
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2); /* t */
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, name);
    }
}

int lps_capp_test(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, LPS_STORE_MT) != NULL ||
           luaL_testudata(L, idx, RW_MT) != NULL ||
           luaL_testudata(L, idx, FANOUT_MT) != NULL;
}

/* The MemoryStore behind m.store: the appender itself, or the first
 * MemoryStore of a fan-out given as the appender (its list value). */
static void set_store(lua_State *L, int idx, int mgr_idx)
{
    int found = 0;

    if (luaL_testudata(L, idx, LPS_STORE_MT) != NULL) {
        lua_pushvalue(L, idx); /* store */
        found = 1;
    }
    if (!found)
        return;
    push_weak(L, STORES);      /* store stores */
    lua_pushvalue(L, mgr_idx); /* store stores m */
    lua_pushvalue(L, -3);      /* store stores m store */
    lua_rawset(L, -3);         /* store stores */
    lua_pop(L, 2);
}

int lps_capp_attach(lua_State *L, int idx, int mgr_idx, struct lps_capp **out,
                    struct ps_engine **eng, struct ps_appender **app,
                    struct ps_err *e)
{
    struct lps_capp *sw;
    struct lps_eng *g;
    int rc;

    idx = ABSIDX(L, idx);
    mgr_idx = ABSIDX(L, mgr_idx);
    sw = capp_alloc(K_SWITCH, 1);
    if (sw == NULL)
        return ps_err_set(e, PS_ENOMEM, "manager: appender");
    push_box(L, sw, SWITCH_MT); /* sw: freed by the GC if we raise */
    read_child(L, idx, &sw->kids[0]);
    g = calloc(1, sizeof(*g));
    if (g == NULL) {
        lua_pop(L, 1);
        return ps_err_set(e, PS_ENOMEM, "manager: engine");
    }
    rc = ps_engine_new(&g->eng, NULL, e);
    if (rc != PS_OK) {
        free(g);
        lua_pop(L, 1);
        return rc;
    }
    g->refs = 1; /* ours, until the bind took its own */
    rc = capp_bind(L, sw, g, e);
    eng_unref(g);
    if (rc != PS_OK) {
        lua_pop(L, 1); /* the switch box: the GC releases what it bound */
        return rc;
    }
    push_weak(L, SWITCHES);    /* sw switches */
    lua_pushvalue(L, mgr_idx); /* sw switches m */
    lua_pushvalue(L, -3);      /* sw switches m sw */
    lua_rawset(L, -3);         /* sw switches */
    lua_pop(L, 2);
    set_store(L, idx, mgr_idx);
    sw->refs++; /* the manager's */
    *out = sw;
    *eng = g->eng;
    *app = &sw->base;
    return PS_OK;
}

void lps_capp_detach(lua_State *L, struct lps_capp *c)
{
    capp_unref(L, c);
}

/* The switch of the manager at idx, or NULL (a Lua-appender manager). */
static struct lps_capp *switch_of(lua_State *L, int idx)
{
    struct capp_box *b;

    luaL_checkudata(L, idx, "promscrape.Manager");
    push_weak(L, SWITCHES); /* switches */
    lua_pushvalue(L, idx);
    lua_rawget(L, -2); /* switches sw|nil */
    b = luaL_testudata(L, -1, SWITCH_MT);
    lua_pop(L, 2);
    return b != NULL ? b->c : NULL;
}

/*
 * core.remote_write_apply(m, { { key = s, opts = flat }, ... }) -> true |
 * nil, msg, code. Entries whose key (the canonical text of the normalized
 * entry) is unchanged keep their remote write, queue and counters; new
 * ones are created on the manager's engine; removed ones are freed (what
 * they still queue is lost). Nothing changes on error.
 */
static int lps_rw_apply(lua_State *L)
{
    struct lps_capp *sw = switch_of(L, 1);
    struct sw_entry *nv;
    struct ps_err e;
    size_t i, j, n;
    int rc = PS_OK;
    char *used;

    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    ps_err_init(&e);
    n = lua_rawlen(L, 2);
    if (sw == NULL) {
        if (n == 0) {
            lua_pushboolean(L, 1);
            return 1;
        }
        ps_err_set(&e, PS_EINVAL,
                   "remote_write: needs a manager whose "
                   "appender is a C appender (MemoryStore, "
                   "RemoteWrite or Fanout), not a Lua table");
        return fail3(L, PS_EINVAL, &e);
    }
    if (sw->eng == NULL || sw->eng->refs < 1)
        return luaL_error(L, "remote_write: manager is closed");
    nv = calloc(n ? n : 1, sizeof(*nv));
    used = calloc(sw->nents ? sw->nents : 1, 1);
    if (nv == NULL || used == NULL) {
        free(nv);
        free(used);
        return luaL_error(L, "not enough memory");
    }
    for (i = 0; i < n && rc == PS_OK; i++) {
        const char *key;

        lua_rawgeti(L, 2, (int)i + 1); /* ent */
        lua_getfield(L, -1, "key");    /* ent key */
        key = lua_tostring(L, -1);
        for (j = 0; key != NULL && j < sw->nents; j++) {
            if (!used[j] && strcmp(sw->ents[j].key, key) == 0) {
                used[j] = 1;
                nv[i].c = sw->ents[j].c;
                nv[i].c->refs++;
                break;
            }
        }
        nv[i].key = strdup(key != NULL ? key : "");
        if (nv[i].key == NULL)
            rc = ps_err_set(&e, PS_ENOMEM, "remote_write");
        if (rc == PS_OK && nv[i].c == NULL) {
            struct lps_capp *c = capp_alloc(K_RW, 0);
            if (c == NULL) {
                rc = ps_err_set(&e, PS_ENOMEM, "remote_write");
            } else {
                nv[i].c = c;
                lua_getfield(L, -2, "opts"); /* ent key flat */
                c->opts_ref = luaL_ref(L, LUA_REGISTRYINDEX);
                rc = capp_bind(L, c, sw->eng, &e);
            }
        }
        lua_pop(L, 2); /* 0 */
    }
    if (rc == PS_OK) { /* swap in the new set */
        struct sw_entry *old = sw->ents;
        size_t nold = sw->nents;

        sw->ents = nv;
        sw->nents = n;
        rc = switch_rebuild(sw, &e);
        if (rc != PS_OK) { /* keep the old set and fan-out */
            sw->ents = old;
            sw->nents = nold;
        } else {
            nv = old;
            n = nold;
        }
    }
    for (i = 0; i < n; i++) { /* the set not in use */
        capp_unref(L, nv[i].c);
        free(nv[i].key);
    }
    free(nv);
    free(used);
    if (rc != PS_OK)
        return fail3(L, rc, &e);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.manager_remote_writes(m) -> { RemoteWrite, ... } of the applied
 * config (new boxes on the same objects). */
static int lps_rw_of_manager(lua_State *L)
{
    struct lps_capp *sw = switch_of(L, 1);
    size_t i;

    lua_newtable(L);
    for (i = 0; sw != NULL && i < sw->nents; i++) {
        sw->ents[i].c->refs++;
        push_box(L, sw->ents[i].c, RW_MT);
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static void register_mt(lua_State *L, const char *mt, const luaL_Reg *methods,
                        lua_CFunction close)
{
    luaL_newmetatable(L, mt); /* core mt */
    lua_newtable(L);          /* core mt methods */
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1); /* core */
}

void lps_remote_write_register(lua_State *L)
{
    static const luaL_Reg rw_methods[] = {{"stats", lps_rw_stats},
                                          {"flush", lps_rw_flush},
                                          {"close", lps_rw_close},
                                          {NULL, NULL}};
    static const luaL_Reg fo_methods[] = {
        {"stats", lps_fanout_stats}, {"close", lps_fanout_close}, {NULL, NULL}};
    static const luaL_Reg sw_methods[] = {{NULL, NULL}};

    register_mt(L, RW_MT, rw_methods, lps_rw_close);
    luaL_getmetatable(L, RW_MT); /* core mt */
    lua_pushcfunction(L, lps_rw_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    register_mt(L, FANOUT_MT, fo_methods, lps_fanout_close);
    register_mt(L, SWITCH_MT, sw_methods, lps_switch_close);
    lua_pushcfunction(L, lps_rw_new);
    lua_setfield(L, -2, "remote_write_new");
    lua_pushcfunction(L, lps_fanout_new);
    lua_setfield(L, -2, "fanout_new");
    lua_pushcfunction(L, lps_rw_apply);
    lua_setfield(L, -2, "remote_write_apply");
    lua_pushcfunction(L, lps_rw_of_manager);
    lua_setfield(L, -2, "manager_remote_writes");
}
