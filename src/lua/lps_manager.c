/*
 * lps_manager: Lua marshalling for ps_manager and ps_pool, and the Lua side
 * of Lua appenders (draining ps_appender_batch). No scrape logic lives here;
 * lua/promscrape/manager.lua builds the public API on top (config
 * normalization, durations) and documents it.
 *
 * core.manager_new(opts) -> Manager | nil, msg, code
 *   opts.store = MemoryStore   append to this store (kept alive), or
 *   opts.appender = MemoryStore | RemoteWrite | Fanout   a C appender,
 *                              bound to a new engine (lps_remote_write.h), or
 *   opts.appender = table      a Lua appender: app:commit(batch) once per
 *                              scrape commit, app:rollback(info) optional
 *   opts.seed = number|string  offset seed (default: the host name)
 *   opts.on_error = function(msg)  called for each appender error
 *   opts.max_pending_samples = n   bound of the batch queue
 * Manager:_apply(flat) -> true | nil, msg, code   (flat: see read_job)
 * Manager:sync({ [job] = { {targets=, labels=, source=}, ... } })
 *   -> true | nil, msg, code
 * Manager:pools() -> { [job] = ScrapePool }; Manager:pool(job) -> pool|nil
 * Manager:step([timeout_s]) -> true | nil, msg, code
 * Manager:run([{ duration = s }]) -> true | nil, msg, code
 * Manager:stop(), Manager:close() (also __gc, __close), Manager:errors(),
 * Manager:appender_stats(); m.store is the MemoryStore (or nil).
 * Manager:run returns why it returned: "duration", "stopped", "signal".
 * Manager:listen(addr, handler [, opts]), :listen_address(),
 * :http_get(url, opts, callback), :signals(); core.signal_watch(names),
 * core.signal_unwatch(), core.getpid(). See docs/engine-services.md.
 * Rule lists may hold Lua functions (function rules): each becomes a
 * ps_relabel_hook called on the Lua thread stashed in the box during
 * step/run/apply/sync. See docs/scrape.md, "Function rules".
 * ScrapePool:targets(), :dropped_targets(), :job(), :close().
 *
 * Lua callbacks run only between engine iterations, on the thread that
 * called step/run, under lua_pcall with a traceback: no Lua error ever
 * unwinds through a core frame, and none escapes step/run. Function rules
 * are the exception that runs inside the core: they are called through
 * lua_pcall with every Lua operation inside the protected call.
 */
#include "lps.h"
#include "lps_store.h"
#include "lps_remote_write.h"

#include "../ps_appender_batch.h"
#include "../ps_httpd.h"
#include "../ps_manager.h"
#include "../ps_signal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MANAGER_MT "promscrape.Manager"
#define POOL_MT "promscrape.ScrapePool"

/* lua_absindex is 5.2+: LuaJIT lacks it. */
#define ABSIDX(L, i)                                                         \
    ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)

#define MAX_ERRORS 100 /* recorded appender errors kept for m:errors() */

struct lps_manager_box {
    struct ps_manager *m;            /* NULL once closed */
    struct lps_sink *sink;           /* memory store (counted ref) or NULL */
    struct lps_capp *capp; /* C appender (lps_remote_write.c) or NULL */
    struct ps_appender_batch *batch; /* Lua appender shim, or NULL */
    int app_ref;     /* the Lua appender table */
    int errors_ref;  /* array of recorded error strings */
    int on_error_ref;
    int driving;       /* inside step/run: no re-entry, close deferred */
    int stop;          /* m:stop() asked run to return */
    int close_pending; /* m:close() from a callback during step/run */
    int in_core;       /* inside a core call (step, apply, sync): only
                        * function rules run then; no re-entry at all */
    /* The Lua thread, set only while the core runs on it (step, run,
     * apply, sync): function rules are called on it. NULL otherwise, and
     * a hook called then fails instead of touching Lua. */
    lua_State *L;
    struct lps_hook *hooks_new;  /* made by the current/last _apply */
    struct lps_hook *hooks_dead; /* released by the core: to unref */
    struct ps_httpd *httpd;      /* m:listen, or NULL */
    int handler_ref;
    struct lps_get *gets;        /* m:http_get in flight */
    struct lps_get *done_head, *done_tail; /* finished, callback pending */
    struct ps_engine_io sig_io;  /* the signal self-pipe on our engine */
    uint64_t sig_seen[PS_SIGNAL_N]; /* counts already reported */
};

/* A Lua function rule: the core holds it through struct ps_relabel_hook
 * (ud) and counts references; at zero it moves to hooks_dead and the
 * function's registry ref is released on the Lua thread later. */
struct lps_hook {
    struct lps_manager_box *b;
    int fn_ref;
    int refs;
    struct lps_hook *next; /* in hooks_new or hooks_dead */
};

/* One m:http_get. */
struct lps_get {
    struct lps_manager_box *b;
    struct ps_http_req *req; /* NULL once finished */
    int cb_ref;
    struct lps_get *next;    /* in gets, then in the done queue */
    long status;
    char *body, *ctype, *err;
    size_t len;
};

/* A pool is named, not pointed to: a reload may free the C pool, so every
 * method looks the job up again (and raises if it is gone). */
struct lps_pool_box {
    struct lps_manager_box *mb; /* valid while mgr_ref holds the manager */
    int mgr_ref;                /* LUA_NOREF once closed */
    char job[1];                /* NUL-terminated, allocated with the box */
};

/* ---- helpers ------------------------------------------------------------ */

static int push_err(lua_State *L, int rc, const struct ps_err *e)
{
    luaL_pushfail(L);
    lua_pushstring(L, e != NULL && e->msg[0] ? e->msg : ps_strerror(rc));
    lua_pushstring(L, ps_errname(rc));
    return 3;
}

/* GC-owned scratch memory, anchored in the table at `anchor` until the
 * call returns: marshalling may raise at any point without leaking. */
static void *anchored(lua_State *L, int anchor, size_t n)
{
    void *p = lua_newuserdatauv(L, n ? n : 1, 0); /* +1 */

    memset(p, 0, n ? n : 1);
    lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1); /* 0 */
    return p;
}

static void push_labels(lua_State *L, const struct ps_label *v, size_t n)
{
    size_t i;

    lua_createtable(L, 0, (int)n); /* t */
    for (i = 0; i < n; i++) {
        lua_pushlstring(L, v[i].name, v[i].name_len);
        lua_pushlstring(L, v[i].value, v[i].value_len);
        lua_rawset(L, -3);
    }
}

static void push_lset(lua_State *L, const struct ps_labels *ls)
{
    if (ls == NULL)
        lua_createtable(L, 0, 0);
    else
        push_labels(L, ls->v, ls->n);
}

/* Reads the label table at idx into a GC-owned ps_labels (never cleaned up:
 * it owns no store). Values may be strings or numbers; anything else is
 * misuse and raises. */
static void read_labels(lua_State *L, int idx, int anchor, const char *what,
                        struct ps_labels *out, size_t extra)
{
    size_t n = 0, i = 0;

    idx = ABSIDX(L, idx);
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        n++;
        lua_pop(L, 1);
    }
    memset(out, 0, sizeof(*out));
    out->v = anchored(L, anchor, (n + extra) * sizeof(*out->v));
    out->cap = n + extra;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { /* key, value */
        struct ps_label *l = &out->v[i++];

        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%s: label names must be strings", what);
        if (lua_type(L, -1) == LUA_TNUMBER) {
            lua_pushvalue(L, -1); /* key value copy: converted, anchored */
            lua_tostring(L, -1);
            lua_pushvalue(L, -1);
            lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1);
            lua_replace(L, -2); /* key value-as-string */
        } else if (lua_type(L, -1) != LUA_TSTRING) {
            luaL_error(L, "%s: value of label '%s' must be a string, got %s",
                       what, lua_tostring(L, -2),
                       lua_typename(L, lua_type(L, -1)));
        }
        l->name = lua_tolstring(L, -2, &l->name_len);
        l->value = lua_tolstring(L, -1, &l->value_len);
        lua_pop(L, 1); /* key */
    }
    out->n = n;
}

/* ---- config marshalling (flat tables built by manager.lua) -------------- */

static const char *opt_str(lua_State *L, int t, const char *k)
{
    const char *s = NULL;

    lua_getfield(L, t, k); /* v: kept alive by the table */
    if (lua_type(L, -1) == LUA_TSTRING)
        s = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "config: %s: expected a string, got %s", k,
                   luaL_typename(L, -1));
    lua_pop(L, 1);
    return s != NULL && s[0] != '\0' ? s : NULL;
}

static int64_t opt_int(lua_State *L, int t, const char *k, int64_t dflt)
{
    int64_t v = dflt;

    lua_getfield(L, t, k);
    if (lua_type(L, -1) == LUA_TNUMBER) {
        lua_Number d = lua_tonumber(L, -1);
        if (d < 0 || d != d || d > 9.2e18)
            luaL_error(L, "config: %s: expected a non-negative number", k);
        v = (int64_t)d;
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "config: %s: expected a number, got %s", k,
                   luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, int t, const char *k, int dflt)
{
    int v = dflt;

    lua_getfield(L, t, k);
    if (lua_type(L, -1) == LUA_TBOOLEAN)
        v = lua_toboolean(L, -1);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "config: %s: expected a boolean, got %s", k,
                   luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

/* Pushes field k of table t if it is a table (returns 1), else nothing. */
static int opt_table(lua_State *L, int t, const char *k)
{
    lua_getfield(L, t, k);
    if (lua_istable(L, -1))
        return 1;
    if (!lua_isnil(L, -1))
        luaL_error(L, "config: %s: expected a table, got %s", k,
                   luaL_typename(L, -1));
    lua_pop(L, 1);
    return 0;
}

static const char *const *opt_strings(lua_State *L, int t, const char *k,
                                      int anchor, size_t *n)
{
    const char **v;
    size_t i, len;

    *n = 0;
    if (!opt_table(L, t, k))
        return NULL; /* 0 */
    len = lua_rawlen(L, -1);  /* list */
    v = anchored(L, anchor, (len + 1) * sizeof(*v));
    for (i = 0; i < len; i++) {
        lua_rawgeti(L, -1, (int)i + 1); /* list s */
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "config: %s: expected strings", k);
        v[i] = lua_tostring(L, -1); /* kept alive by the list */
        lua_pop(L, 1);
    }
    lua_pop(L, 1); /* 0 */
    *n = len;
    return v;
}

static void opt_ps_str(lua_State *L, int t, const char *k, int anchor,
                       struct ps_str *out)
{
    lua_getfield(L, t, k); /* v */
    if (lua_type(L, -1) == LUA_TNUMBER) {
        lua_pushvalue(L, -1);
        lua_tostring(L, -1); /* converted copy, anchored below */
        lua_pushvalue(L, -1);
        lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1);
        lua_replace(L, -2);
    }
    if (lua_type(L, -1) == LUA_TSTRING)
        out->p = lua_tolstring(L, -1, &out->n);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "config: relabel %s: expected a string", k);
    lua_pop(L, 1);
}

/* ---- Lua function rules --------------------------------------------------- */

static void hook_ref(void *ud, int delta)
{
    struct lps_hook *h = ud;

    h->refs += delta;
    if (h->refs == 0) { /* Lua refs are released later, on the Lua thread */
        h->next = h->b->hooks_dead;
        h->b->hooks_dead = h;
    }
}

/* Drops the binding's own reference on the hooks made by the last
 * _apply (the configs that kept them hold theirs), then releases the
 * functions of dead hooks. Never raises. */
static void hooks_reap(lua_State *L, struct lps_manager_box *b)
{
    struct lps_hook *h = b->hooks_new, *next;

    b->hooks_new = NULL;
    for (; h != NULL; h = next) {
        next = h->next;
        hook_ref(h, -1);
    }
    while ((h = b->hooks_dead) != NULL) {
        b->hooks_dead = h->next;
        luaL_unref(L, LUA_REGISTRYINDEX, h->fn_ref);
        free(h);
    }
}

static int traceback(lua_State *L);
static void record_error(lua_State *L, struct lps_manager_box *b, int msg);

/* In protected mode: calls the rule's function on a table of `in` and
 * copies the result into `out`. Arguments: hook, in, out (light). Returns
 * true when the function dropped the set. */
static int hook_body(lua_State *L)
{
    struct lps_hook *h = lua_touserdata(L, 1);
    const struct ps_labels *in = lua_touserdata(L, 2);
    struct ps_labels *out = lua_touserdata(L, 3);
    size_t i;

    lua_rawgeti(L, LUA_REGISTRYINDEX, h->fn_ref); /* fn */
    lua_createtable(L, 0, (int)in->n);             /* fn labels */
    for (i = 0; i < in->n; i++) {
        lua_pushlstring(L, in->v[i].name, in->v[i].name_len);
        lua_pushlstring(L, in->v[i].value, in->v[i].value_len);
        lua_rawset(L, -3);
    }
    lua_call(L, 1, 1); /* res */
    if (lua_isnil(L, -1) || (lua_isboolean(L, -1) && !lua_toboolean(L, -1))) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (!lua_istable(L, -1))
        return luaL_error(L, "function must return a label table or nil, "
                             "got %s", luaL_typename(L, -1));
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) { /* res k v */
        size_t kn, vn;
        const char *k, *v;

        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_error(L, "function returned a label name that is "
                                 "not a string");
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            return luaL_error(L, "function returned a %s for label '%s'",
                              luaL_typename(L, -1), lua_tostring(L, -2));
        k = lua_tolstring(L, -2, &kn);
        v = lua_tolstring(L, -1, &vn); /* converts a number in place */
        if (vn > 0 &&
            ps_labels_add(out, k, kn, v, vn, PS_LABELS_COPY) != PS_OK)
            return luaL_error(L, "not enough memory");
        lua_pop(L, 1); /* res k */
    }
    lua_pushboolean(L, 0);
    return 1;
}

/* In protected mode: record_error(box, msg). */
static int record_body(lua_State *L)
{
    record_error(L, lua_touserdata(L, 1), 2);
    return 0;
}

/* can_run of a Lua function rule: only while the core runs on the Lua
 * thread (b->L set: step, run, apply, sync, m:poll's resolution). On the
 * background thread b->L is NULL (the Lua thread sets it only while it
 * holds the engine lock), so metric rules are deferred to m:poll. */
static int hook_can_run(void *ud)
{
    const struct lps_hook *h = ud;

    return h->b->L != NULL;
}

/*
 * The ps_relabel_hook_fn of a Lua function rule. It runs inside the
 * engine step (or apply/sync, or m:poll) on the Lua thread that the
 * binding stashed in the box, under lua_pcall with a traceback: a Lua
 * error becomes a ps error (the scrape fails, the target is dropped, or
 * a deferred series is discarded) and the traceback goes to m:errors().
 * Nothing here can raise through the core.
 */
static int hook_call(void *ud, const struct ps_labels *in,
                     struct ps_labels *out, int *dropped, struct ps_err *e)
{
    struct lps_hook *h = ud;
    lua_State *L = h->b->L;
    int top, st;

    if (L == NULL) /* background thread (issue 7): rules are deferred */
        return ps_err_set(e, PS_ESTATE, "function rule called off the Lua "
                                        "thread");
    if (!lua_checkstack(L, 8))
        return ps_err_set(e, PS_ENOMEM, "function rule: Lua stack");
    top = lua_gettop(L);
    lua_pushcfunction(L, traceback);     /* tb */
    lua_pushcfunction(L, hook_body);     /* tb f */
    lua_pushlightuserdata(L, h);
    lua_pushlightuserdata(L, (void *)(uintptr_t)in);
    lua_pushlightuserdata(L, out);       /* tb f h in out */
    st = lua_pcall(L, 3, 1, top + 1);    /* tb res|err */
    if (st == 0) {
        *dropped = lua_toboolean(L, -1);
        lua_settop(L, top);
        return PS_OK;
    } else {
        const char *msg = lua_tostring(L, -1), *cut;
        int n;

        if (msg == NULL)
            msg = "(error object is not a string)";
        cut = strstr(msg, "\nstack traceback:");
        n = cut ? (int)(cut - msg) : (int)strlen(msg);
        ps_err_set(e, PS_EINVAL, "function failed: %.*s", n, msg);
        lua_pushcfunction(L, record_body); /* tb err rec */
        lua_pushlightuserdata(L, h->b);
        lua_pushvalue(L, -3);              /* tb err rec b err */
        if (lua_pcall(L, 2, 0, 0) != 0)    /* the full traceback */
            lua_pop(L, 1);
        lua_settop(L, top);
        return PS_EINVAL;
    }
}

/* Reads the rule list field k of job table t: tables become rules, Lua
 * functions become hooks at their position (rules keep their position in
 * `index`, so errors name the rule as written). */
static const struct ps_relabel_config *
read_rules(lua_State *L, struct lps_manager_box *b, int t, const char *k,
           int anchor, size_t *n, const struct ps_relabel_hook **hooks,
           size_t *nhooks)
{
    struct ps_relabel_config *v;
    struct ps_relabel_hook *hv;
    size_t i, len, nt = 0, nh = 0;

    *n = 0;
    *hooks = NULL;
    *nhooks = 0;
    if (!opt_table(L, t, k))
        return NULL;
    len = lua_rawlen(L, -1); /* list */
    v = anchored(L, anchor, (len ? len : 1) * sizeof(*v));
    hv = anchored(L, anchor, (len ? len : 1) * sizeof(*hv));
    for (i = 0; i < len; i++) {
        struct ps_relabel_config *c = &v[nt];
        int r;

        lua_rawgeti(L, -1, (int)i + 1); /* list rule */
        if (lua_isfunction(L, -1)) {
            struct lps_hook *h = malloc(sizeof(*h));
            char id[64];
            if (h == NULL)
                luaL_error(L, "not enough memory");
            snprintf(id, sizeof(id), "function: %p", lua_topointer(L, -1));
            h->b = b;
            h->refs = 1; /* the binding's, dropped by hooks_reap */
            h->fn_ref = LUA_NOREF;
            h->next = b->hooks_new; /* listed first: freed even if the */
            b->hooks_new = h;       /* marshalling raises from here on */
            lua_pushvalue(L, -1);
            h->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
            hv[nh].fn = hook_call;
            hv[nh].ud = h;
            hv[nh].ref = hook_ref;
            hv[nh].can_run = hook_can_run;
            lua_pushstring(L, id); /* list rule id: anchored below */
            hv[nh].id = lua_tostring(L, -1);
            lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1);
            hv[nh].position = i;
            nh++;
            lua_pop(L, 1); /* list */
            continue;
        }
        if (!lua_istable(L, -1))
            luaL_error(L, "config: %s: rule %d is not a table", k,
                       (int)i + 1);
        r = lua_gettop(L);
        opt_ps_str(L, r, "separator", anchor, &c->separator);
        opt_ps_str(L, r, "regex", anchor, &c->regex);
        opt_ps_str(L, r, "target_label", anchor, &c->target_label);
        opt_ps_str(L, r, "replacement", anchor, &c->replacement);
        opt_ps_str(L, r, "action", anchor, &c->action);
        c->modulus = (uint64_t)opt_int(L, r, "modulus", 0);
        if (opt_table(L, r, "source_labels")) { /* list rule sl */
            size_t j, m = lua_rawlen(L, -1);
            struct ps_str *sl = anchored(L, anchor, (m ? m : 1) * sizeof(*sl));
            for (j = 0; j < m; j++) {
                lua_rawgeti(L, -1, (int)j + 1);
                if (lua_type(L, -1) != LUA_TSTRING)
                    luaL_error(L, "config: %s: rule %d: source_labels: "
                               "expected strings", k, (int)i + 1);
                sl[j].p = lua_tolstring(L, -1, &sl[j].n);
                lua_pop(L, 1);
            }
            /* promscrape.config fills in an empty list for an absent
             * key (and has validated it): empty means absent here, or
             * labeldrop/labelkeep would be refused */
            c->source_labels = m > 0 ? sl : NULL;
            c->n_source_labels = m;
            lua_pop(L, 1); /* list rule */
        }
        c->index = i + 1;
        nt++;
        lua_pop(L, 1); /* list */
    }
    lua_pop(L, 1); /* 0 */
    *n = nt;
    *hooks = hv;
    *nhooks = nh;
    return v;
}

/* Reads an array of groups at idx: { targets = { "h:p" | {labels} ... },
 * labels = {...}, source = "..." }. */
static struct ps_target_group *read_groups(lua_State *L, int idx, int anchor,
                                           const char *what, size_t *n)
{
    struct ps_target_group *gv;
    size_t i, len;

    idx = ABSIDX(L, idx);
    luaL_checktype(L, idx, LUA_TTABLE);
    len = lua_rawlen(L, idx);
    gv = anchored(L, anchor, (len ? len : 1) * sizeof(*gv));
    for (i = 0; i < len; i++) {
        struct ps_target_group *g = &gv[i];
        struct ps_labels *tv;
        size_t j, m;
        int gi;

        lua_rawgeti(L, idx, (int)i + 1); /* group */
        if (!lua_istable(L, -1))
            luaL_error(L, "%s: group %d: expected a table", what, (int)i + 1);
        gi = lua_gettop(L);
        g->source = opt_str(L, gi, "source");
        if (opt_table(L, gi, "labels")) { /* group labels */
            struct ps_labels *gl = anchored(L, anchor, sizeof(*gl));
            read_labels(L, -1, anchor, what, gl, 0);
            g->labels = gl;
            lua_pop(L, 1);
        }
        m = 0;
        tv = NULL;
        if (opt_table(L, gi, "targets")) { /* group targets */
            m = lua_rawlen(L, -1);
            tv = anchored(L, anchor, (m ? m : 1) * sizeof(*tv));
            for (j = 0; j < m; j++) {
                lua_rawgeti(L, -1, (int)j + 1); /* group targets t */
                if (lua_type(L, -1) == LUA_TSTRING) {
                    /* "host:port": the one label __address__ */
                    tv[j].v = anchored(L, anchor, sizeof(*tv[j].v));
                    tv[j].v[0].name = "__address__";
                    tv[j].v[0].name_len = 11;
                    tv[j].v[0].value =
                        lua_tolstring(L, -1, &tv[j].v[0].value_len);
                    tv[j].n = tv[j].cap = 1;
                } else if (lua_istable(L, -1)) {
                    read_labels(L, -1, anchor, what, &tv[j], 0);
                } else {
                    luaL_error(L, "%s: group %d: targets must be strings or "
                               "label tables", what, (int)i + 1);
                }
                lua_pop(L, 1); /* group targets */
            }
            lua_pop(L, 1); /* group */
        }
        g->targets = tv;
        g->n_targets = m;
        lua_pop(L, 1); /* 0 */
    }
    *n = len;
    return gv;
}

static void read_global(lua_State *L, int t, int anchor,
                        struct ps_global_config *g)
{
    ps_global_config_init(g);
    g->scrape_interval_ms = opt_int(L, t, "scrape_interval_ms", 0);
    g->scrape_timeout_ms = opt_int(L, t, "scrape_timeout_ms", 0);
    g->scrape_protocols =
        opt_strings(L, t, "scrape_protocols", anchor, &g->n_scrape_protocols);
    g->body_size_limit = (uint64_t)opt_int(L, t, "body_size_limit",
                                            (int64_t)g->body_size_limit);
    g->sample_limit = (uint64_t)opt_int(L, t, "sample_limit", 0);
    g->target_limit = (uint64_t)opt_int(L, t, "target_limit", 0);
    g->label_limit = (uint64_t)opt_int(L, t, "label_limit", 0);
    g->label_name_length_limit =
        (uint64_t)opt_int(L, t, "label_name_length_limit", 0);
    g->label_value_length_limit =
        (uint64_t)opt_int(L, t, "label_value_length_limit", 0);
    g->keep_dropped_targets =
        (uint64_t)opt_int(L, t, "keep_dropped_targets", 0);
    g->metric_name_validation_scheme =
        opt_str(L, t, "metric_name_validation_scheme");
}

static void read_http(lua_State *L, int t, struct ps_http_client_config *h)
{
    if (opt_table(L, t, "basic_auth")) { /* ba */
        int b = lua_gettop(L);
        h->basic_auth.username = opt_str(L, b, "username");
        h->basic_auth.password = opt_str(L, b, "password");
        h->basic_auth.password_file = opt_str(L, b, "password_file");
        lua_pop(L, 1);
    }
    if (opt_table(L, t, "authorization")) { /* au */
        int a = lua_gettop(L);
        h->authorization.type = opt_str(L, a, "type");
        h->authorization.credentials = opt_str(L, a, "credentials");
        h->authorization.credentials_file = opt_str(L, a, "credentials_file");
        lua_pop(L, 1);
    }
    h->bearer_token = opt_str(L, t, "bearer_token");
    h->bearer_token_file = opt_str(L, t, "bearer_token_file");
    if (opt_table(L, t, "tls_config")) { /* tls */
        int s = lua_gettop(L);
        h->tls_config.ca_file = opt_str(L, s, "ca_file");
        h->tls_config.cert_file = opt_str(L, s, "cert_file");
        h->tls_config.key_file = opt_str(L, s, "key_file");
        h->tls_config.server_name = opt_str(L, s, "server_name");
        h->tls_config.insecure_skip_verify =
            opt_bool(L, s, "insecure_skip_verify", 0);
        h->tls_config.min_version = opt_str(L, s, "min_version");
        lua_pop(L, 1);
    }
    h->proxy_url = opt_str(L, t, "proxy_url");
    h->follow_redirects = opt_bool(L, t, "follow_redirects", 1);
    h->enable_http2 = opt_bool(L, t, "enable_http2", 1);
}

/* One entry of flat.jobs: Prometheus's scrape_config field names, with
 * durations as <name>_ms numbers. */
static void read_job(lua_State *L, struct lps_manager_box *b, int t,
                     int anchor, struct ps_scrape_config *c)
{
    ps_scrape_config_init(c);
    c->job_name = opt_str(L, t, "job_name");
    if (c->job_name == NULL)
        luaL_error(L, "config: job_name is required");
    c->scrape_interval_ms = opt_int(L, t, "scrape_interval_ms", 0);
    c->scrape_timeout_ms = opt_int(L, t, "scrape_timeout_ms", 0);
    c->metrics_path = opt_str(L, t, "metrics_path");
    c->scheme = opt_str(L, t, "scheme");
    if (opt_table(L, t, "params")) { /* params: name -> { values } */
        int p = lua_gettop(L);
        size_t n = 0, i = 0;
        struct ps_param *pv;

        lua_pushnil(L);
        while (lua_next(L, p) != 0) {
            n += lua_istable(L, -1) ? lua_rawlen(L, -1) : 1;
            lua_pop(L, 1);
        }
        pv = anchored(L, anchor, (n ? n : 1) * sizeof(*pv));
        lua_pushnil(L);
        while (lua_next(L, p) != 0) { /* params k v */
            size_t j, m;

            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "config: params: names must be strings");
            if (lua_type(L, -1) == LUA_TSTRING) {
                pv[i].name = lua_tostring(L, -2);
                pv[i++].value = lua_tostring(L, -1);
            } else if (lua_istable(L, -1)) {
                m = lua_rawlen(L, -1);
                for (j = 0; j < m; j++) {
                    lua_rawgeti(L, -1, (int)j + 1);
                    if (lua_type(L, -1) != LUA_TSTRING)
                        luaL_error(L, "config: params: expected strings");
                    pv[i].name = lua_tostring(L, -3);
                    pv[i++].value = lua_tostring(L, -1); /* in the list */
                    lua_pop(L, 1);
                }
            } else {
                luaL_error(L, "config: params: expected lists of strings");
            }
            lua_pop(L, 1); /* params k */
        }
        c->params = pv;
        c->n_params = i;
        lua_pop(L, 1);
    }
    c->honor_labels = opt_bool(L, t, "honor_labels", 0);
    c->honor_timestamps = opt_bool(L, t, "honor_timestamps", 1);
    c->track_timestamps_staleness =
        opt_bool(L, t, "track_timestamps_staleness", 0);
    c->enable_compression = opt_bool(L, t, "enable_compression", 1);
    c->scrape_protocols =
        opt_strings(L, t, "scrape_protocols", anchor, &c->n_scrape_protocols);
    c->fallback_scrape_protocol = opt_str(L, t, "fallback_scrape_protocol");
    c->body_size_limit = (uint64_t)opt_int(L, t, "body_size_limit", 0);
    c->sample_limit = (uint64_t)opt_int(L, t, "sample_limit", 0);
    c->target_limit = (uint64_t)opt_int(L, t, "target_limit", 0);
    c->label_limit = (uint64_t)opt_int(L, t, "label_limit", 0);
    c->label_name_length_limit =
        (uint64_t)opt_int(L, t, "label_name_length_limit", 0);
    c->label_value_length_limit =
        (uint64_t)opt_int(L, t, "label_value_length_limit", 0);
    c->keep_dropped_targets =
        (uint64_t)opt_int(L, t, "keep_dropped_targets", 0);
    c->metric_name_validation_scheme =
        opt_str(L, t, "metric_name_validation_scheme");
    c->extra_scrape_metrics = opt_bool(L, t, "extra_scrape_metrics", 0);
    c->relabel_configs =
        read_rules(L, b, t, "relabel_configs", anchor, &c->n_relabel_configs,
                   &c->relabel_hooks, &c->n_relabel_hooks);
    c->metric_relabel_configs = read_rules(
        L, b, t, "metric_relabel_configs", anchor,
        &c->n_metric_relabel_configs, &c->metric_relabel_hooks,
        &c->n_metric_relabel_hooks);
    read_http(L, t, &c->http_client);
    if (opt_table(L, t, "static_configs")) { /* sc */
        c->static_configs = read_groups(L, -1, anchor, "static_configs",
                                        &c->n_static_configs);
        lua_pop(L, 1);
    }
    c->scrape_offset_ms = opt_int(L, t, "scrape_offset_ms", 0);
    c->scrape_align_interval_ms = opt_int(L, t, "scrape_align_interval_ms", 0);
}

/* ---- manager ------------------------------------------------------------ */

/* Pushes the weak-keyed table manager -> MemoryStore behind `m.store`. It
 * stays readable after m:close() and never keeps a manager alive. */
static void push_stores(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "promscrape.Manager.stores");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);               /* t */
        lua_createtable(L, 0, 1);      /* t mt */
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);       /* t */
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "promscrape.Manager.stores");
    }
}

static struct lps_manager_box *check_mgr(lua_State *L, int idx)
{
    struct lps_manager_box *b = luaL_checkudata(L, idx, MANAGER_MT);

    if (b->m == NULL || b->close_pending)
        luaL_error(L, "attempt to use a closed manager");
    return b;
}

/* Methods that drive the engine or change its state cannot run from an
 * appender callback inside step/run. */
static struct lps_manager_box *check_idle(lua_State *L, int idx)
{
    struct lps_manager_box *b = check_mgr(L, idx);

    if (b->driving || b->in_core)
        luaL_error(L, "manager is running: not allowed from its own "
                      "appender callbacks");
    return b;
}

static void mgr_free(lua_State *L, struct lps_manager_box *b);

/* After a core call outside step/run (apply, sync): a close requested
 * by a function rule during it happens now. Returns 1 if it did. */
static int late_close(lua_State *L, struct lps_manager_box *b)
{
    if (!b->close_pending || b->driving)
        return 0;
    b->close_pending = 0;
    mgr_free(L, b);
    return 1;
}

/* apply_config and sync may run from callbacks that run between engine
 * steps (http_get callbacks, listen handlers, appenders: the core is idle
 * then), but not from a function rule, which runs inside the core. */
static struct lps_manager_box *check_not_in_core(lua_State *L, int idx)
{
    struct lps_manager_box *b = check_mgr(L, idx);

    if (b->in_core)
        luaL_error(L, "manager is busy: not allowed from a function rule");
    return b;
}

/* Frees the core objects in dependency order: the manager's loops borrow
 * the appenders, so the manager goes first. Releases the Lua refs. */
static void gets_free(lua_State *L, struct lps_manager_box *b);

static void mgr_free(lua_State *L, struct lps_manager_box *b)
{
    ps_httpd_free(b->httpd); /* uses the engine: before the manager */
    b->httpd = NULL;
    gets_free(L, b);         /* requests on the engine's client too */
    if (b->m != NULL)
        ps_engine_io_remove(ps_manager_engine(b->m), &b->sig_io);
    ps_manager_free(b->m);   /* releases the configs' function rules */
    b->m = NULL;
    hooks_reap(L, b);
    ps_appender_batch_free(b->batch);
    b->batch = NULL;
    lps_capp_detach(L, b->capp); /* after the manager: its loops borrow it */
    b->capp = NULL;
    lps_sink_unref(b->sink);
    b->sink = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, b->app_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, b->errors_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, b->on_error_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, b->handler_ref);
    b->app_ref = b->errors_ref = b->on_error_ref = LUA_NOREF;
    b->handler_ref = LUA_NOREF;
}

static int lps_manager_close(lua_State *L) /* __gc, __close and :close() */
{
    struct lps_manager_box *b = luaL_checkudata(L, 1, MANAGER_MT);

    if (b->m == NULL)
        return 0;
    if (b->driving || b->in_core) { /* from a callback: freed on return */
        b->close_pending = 1;
        b->stop = 1;
        return 0;
    }
    mgr_free(L, b);
    return 0;
}

static uint64_t default_seed(void)
{
    char host[256];

    if (gethostname(host, sizeof(host)) != 0)
        return 0;
    host[sizeof(host) - 1] = '\0';
    return ps_manager_seed_of(host, strlen(host));
}

static int lps_manager_new(lua_State *L)
{
    struct ps_appender_batch_opts bo;
    struct ps_manager_opts mo;
    struct lps_manager_box *b;
    struct ps_appender *app;
    struct ps_err e;
    int rc;

    luaL_checktype(L, 1, LUA_TTABLE);
    memset(&bo, 0, sizeof(bo));
    memset(&mo, 0, sizeof(mo));
    mo.offset_seed = default_seed();
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) { /* key, value: every option is known */
        const char *k =
            lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (strcmp(k, "seed") == 0) {
            size_t n;
            const char *s;
            if (lua_type(L, -1) == LUA_TNUMBER) {
                mo.offset_seed = (uint64_t)lua_tonumber(L, -1);
            } else {
                s = luaL_checklstring(L, -1, &n);
                mo.offset_seed = ps_manager_seed_of(s, n);
            }
        } else if (strcmp(k, "max_pending_samples") == 0) {
            bo.max_pending_samples = (size_t)luaL_checknumber(L, -1);
        } else if (strcmp(k, "on_error") == 0) {
            luaL_checktype(L, -1, LUA_TFUNCTION);
        } else if (strcmp(k, "store") != 0 && strcmp(k, "appender") != 0) {
            return luaL_error(L, "manager: unknown option '%s'", k);
        }
        lua_pop(L, 1); /* key */
    }
    lua_getfield(L, 1, "store");    /* 2 */
    lua_getfield(L, 1, "appender"); /* 3 */
    lua_getfield(L, 1, "on_error"); /* 4 */
    if (lua_isnil(L, 2) == lua_isnil(L, 3))
        return luaL_error(L, "manager: exactly one of store and appender");
    if (!lua_isnil(L, 2)) {
        lps_store_check(L, 2); /* raises unless an open MemoryStore */
    } else if (!lps_capp_test(L, 3)) { /* C appenders: see below */
        if (!lua_istable(L, 3) && !lua_isuserdata(L, 3))
            return luaL_error(L, "manager: appender must be a table with "
                                 "a commit method");
        lua_getfield(L, 3, "commit");
        if (lua_isnil(L, -1))
            return luaL_error(L, "manager: appender has no commit method");
        lua_pop(L, 1);
    }

    b = lua_newuserdatauv(L, sizeof(*b), 0); /* 5: box */
    memset(b, 0, sizeof(*b));
    b->app_ref = b->errors_ref = b->on_error_ref = LUA_NOREF;
    b->handler_ref = LUA_NOREF;
    {
        int i; /* signals received before this manager are not its own */
        for (i = 0; i < PS_SIGNAL_N; i++)
            b->sig_seen[i] = ps_signal_count(i);
    }
    luaL_setmetatable(L, MANAGER_MT); /* close is safe on a partial box */
    ps_err_init(&e);
    if (!lua_isnil(L, 2)) {
        b->sink = lps_store_check(L, 2);
        lps_sink_ref(b->sink);
        push_stores(L);      /* ... box stores */
        lua_pushvalue(L, 5); /* ... box stores box */
        lua_pushvalue(L, 2); /* ... box stores box store */
        lua_rawset(L, -3);   /* ... box stores */
        lua_pop(L, 1);       /* ... box */
        app = ps_appender_mem_appender(b->sink->mem);
    } else if (lps_capp_test(L, 3)) { /* MemoryStore, RemoteWrite, Fanout */
        rc = lps_capp_attach(L, 3, 5, &b->capp, &mo.engine, &app, &e);
        if (rc != PS_OK)
            return push_err(L, rc, &e);
    } else {
        rc = ps_appender_batch_new(&b->batch, &bo, &e);
        if (rc != PS_OK)
            return push_err(L, rc, &e); /* the box is collected */
        lua_pushvalue(L, 3);
        b->app_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        app = ps_appender_batch_appender(b->batch);
    }
    lua_newtable(L);
    b->errors_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (!lua_isnil(L, 4)) {
        lua_pushvalue(L, 4);
        b->on_error_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    mo.appender = app;
    rc = ps_manager_new(&b->m, &mo, &e);
    if (rc != PS_OK) {
        mgr_free(L, b); /* m is NULL: releases the appenders and refs */
        return push_err(L, rc, &e);
    }
    return 1; /* box */
}

/* __index: the methods, then the `store` field. */
static int lps_manager_index(lua_State *L)
{
    struct lps_manager_box *b = luaL_checkudata(L, 1, MANAGER_MT);

    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1)); /* methods[k] */
    if (!lua_isnil(L, -1))
        return 1;
    (void)b;
    if (lua_type(L, 2) == LUA_TSTRING &&
        strcmp(lua_tostring(L, 2), "store") == 0) {
        push_stores(L);   /* nil stores */
        lua_pushvalue(L, 1);
        lua_rawget(L, -2); /* nil stores store|nil */
    }
    return 1;
}

static int lps_manager_apply(lua_State *L)
{
    struct lps_manager_box *b = check_not_in_core(L, 1);
    struct ps_global_config g;
    struct ps_scrape_config *cv;
    struct ps_err e;
    size_t i, n;
    int anchor, rc;

    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    hooks_reap(L, b); /* leftovers of an _apply that raised */
    lua_newtable(L); /* 3: anchor for everything marshalled */
    anchor = 3;
    if (opt_table(L, 2, "global")) { /* 4 */
        read_global(L, 4, anchor, &g);
        lua_pop(L, 1);
    } else {
        read_global(L, anchor, anchor, &g); /* an empty table: defaults */
    }
    if (!opt_table(L, 2, "jobs"))
        lua_newtable(L); /* 4: jobs */
    n = lua_rawlen(L, 4);
    cv = anchored(L, anchor, (n ? n : 1) * sizeof(*cv));
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, 4, (int)i + 1); /* 5: job */
        luaL_checktype(L, 5, LUA_TTABLE);
        read_job(L, b, 5, anchor, &cv[i]);
        lua_pop(L, 1);
    }
    ps_err_init(&e);
    b->L = L;       /* target function rules run during the static syncs */
    b->in_core = 1; /* ... and must not re-enter the manager */
    rc = ps_manager_apply_config(b->m, &g, cv, n, &e);
    b->in_core = 0;
    b->L = b->driving ? L : NULL; /* called from a step's callback */
    if (late_close(L, b))
        return luaL_error(L, "manager closed by a function rule");
    hooks_reap(L, b);
    if (rc != PS_OK)
        return push_err(L, rc, &e);
    lua_pushboolean(L, 1);
    return 1;
}

static int lps_manager_sync(lua_State *L)
{
    struct lps_manager_box *b = check_not_in_core(L, 1);
    int anchor;

    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_newtable(L); /* 3: anchor */
    anchor = 3;
    lua_pushnil(L);
    while (lua_next(L, 2) != 0) { /* job groups */
        struct ps_target_group *gv;
        struct ps_err e;
        const char *job;
        size_t n;
        int rc;

        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_argerror(L, 2, "job names must be strings");
        job = lua_tostring(L, -2);
        gv = read_groups(L, -1, anchor, job, &n);
        /* As Prometheus, target sets of unknown jobs are ignored. */
        if (ps_manager_pool(b->m, job) != NULL) {
            ps_err_init(&e);
            b->L = L; /* target function rules */
            b->in_core = 1;
            rc = ps_manager_sync(b->m, job, gv, n, &e);
            b->in_core = 0;
            b->L = b->driving ? L : NULL;
            if (late_close(L, b))
                return luaL_error(L, "manager closed by a function rule");
            if (rc != PS_OK)
                return push_err(L, rc, &e);
        }
        lua_pop(L, 1); /* job */
    }
    lua_pushboolean(L, 1);
    return 1;
}

static void push_pool(lua_State *L, int mgr_idx, struct lps_manager_box *mb,
                      const char *job)
{
    size_t n = strlen(job);
    struct lps_pool_box *p;

    mgr_idx = ABSIDX(L, mgr_idx);
    p = lua_newuserdatauv(L, sizeof(*p) + n, 0); /* pool */
    p->mb = mb;
    p->mgr_ref = LUA_NOREF;
    memcpy(p->job, job, n + 1);
    lua_pushvalue(L, mgr_idx);
    p->mgr_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* keeps the manager */
    luaL_setmetatable(L, POOL_MT);
}

static int lps_manager_pools(lua_State *L)
{
    struct lps_manager_box *b = check_mgr(L, 1);
    size_t i, n = ps_manager_npools(b->m);

    lua_createtable(L, 0, (int)n); /* pools */
    for (i = 0; i < n; i++) {
        const char *job = ps_pool_job(ps_manager_pool_at(b->m, i));
        push_pool(L, 1, b, job); /* pools pool */
        lua_setfield(L, -2, job);
    }
    return 1;
}

static int lps_manager_pool(lua_State *L)
{
    struct lps_manager_box *b = check_mgr(L, 1);
    const char *job = luaL_checkstring(L, 2);

    if (ps_manager_pool(b->m, job) == NULL)
        return 0;
    push_pool(L, 1, b, job);
    return 1;
}

/* ---- Lua appenders: batches to method calls ------------------------------ */

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);

    if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)",
                              luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Builds the batch table; in protected mode (lua_pcall), so a memory error
 * leaves the batch to the caller to free. Arguments: app, batch (light). */
static int dispatch(lua_State *L)
{
    const struct ps_batch *bt = lua_touserdata(L, 2);
    const char *method =
        bt->kind == PS_BATCH_COMMIT ? "commit" : "rollback";
    size_t i;

    lua_getfield(L, 1, method); /* app bt fn */
    if (lua_isnil(L, -1))
        return 0; /* rollback is optional */
    lua_pushvalue(L, 1);        /* app bt fn app */
    lua_createtable(L, 0, 10);  /* app bt fn app batch */
    lua_pushinteger(L, (lua_Integer)bt->seq);
    lua_setfield(L, -2, "seq");
    push_labels(L, bt->lab, bt->n_target);
    lua_setfield(L, -2, "target");
    if (bt->kind == PS_BATCH_COMMIT) {
        lua_createtable(L, (int)bt->n, 0);
        for (i = 0; i < bt->n; i++) {
            lua_pushinteger(L, (lua_Integer)bt->refs[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        lua_setfield(L, -2, "refs");
        lua_createtable(L, (int)bt->n, 0);
        for (i = 0; i < bt->n; i++) {
            lua_pushnumber(L, (lua_Number)bt->values[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        lua_setfield(L, -2, "values");
        lua_createtable(L, (int)bt->n, 0);
        for (i = 0; i < bt->n; i++) {
            lua_pushnumber(L, (lua_Number)bt->ts_ms[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        lua_setfield(L, -2, "timestamps");
        /* LuaJIT canonicalizes NaNs, losing the staleness bit pattern:
         * stale samples are flagged by index instead. */
        lua_newtable(L);
        for (i = 0; i < bt->n; i++) {
            if (ps_is_stale_nan(bt->values[i])) {
                lua_pushboolean(L, 1);
                lua_rawseti(L, -2, (int)i + 1);
            }
        }
        lua_setfield(L, -2, "stale");
        lua_createtable(L, 0, (int)bt->n_series);
        for (i = 0; i < bt->n_series; i++) {
            const struct ps_batch_series *s = &bt->series[i];
            lua_pushinteger(L, (lua_Integer)s->ref);
            push_labels(L, bt->lab + s->off, s->n);
            lua_rawset(L, -3);
        }
        lua_setfield(L, -2, "new_series");
        lua_createtable(L, (int)bt->n_ex, 0);
        for (i = 0; i < bt->n_ex; i++) {
            const struct ps_batch_exemplar *x = &bt->ex[i];
            lua_createtable(L, 0, 4);
            lua_pushinteger(L, (lua_Integer)x->ref);
            lua_setfield(L, -2, "ref");
            push_labels(L, bt->lab + x->off, x->n);
            lua_setfield(L, -2, "labels");
            lua_pushnumber(L, (lua_Number)x->value);
            lua_setfield(L, -2, "value");
            if (x->has_ts) {
                lua_pushnumber(L, (lua_Number)x->ts_ms);
                lua_setfield(L, -2, "timestamp");
            }
            lua_rawseti(L, -2, (int)i + 1);
        }
        lua_setfield(L, -2, "exemplars");
        lua_createtable(L, (int)bt->n_meta, 0);
        for (i = 0; i < bt->n_meta; i++) {
            const struct ps_batch_meta *m = &bt->meta[i];
            lua_createtable(L, 0, 4);
            lua_pushinteger(L, (lua_Integer)m->ref);
            lua_setfield(L, -2, "ref");
            lua_pushstring(L, ps_mtype_name(m->type));
            lua_setfield(L, -2, "type");
            lua_pushlstring(L, m->help.p ? m->help.p : "", m->help.n);
            lua_setfield(L, -2, "help");
            lua_pushlstring(L, m->unit.p ? m->unit.p : "", m->unit.n);
            lua_setfield(L, -2, "unit");
            lua_rawseti(L, -2, (int)i + 1);
        }
        lua_setfield(L, -2, "metadata");
        lua_pushinteger(L, (lua_Integer)bt->dropped);
        lua_setfield(L, -2, "dropped");
    }
    lua_call(L, 2, 0); /* app bt */
    return 0;
}

/* Records an appender error: kept for m:errors() (the newest MAX_ERRORS)
 * and passed to on_error if set (whose own errors are ignored). */
static void record_error(lua_State *L, struct lps_manager_box *b, int msg)
{
    int n;

    msg = ABSIDX(L, msg);
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->errors_ref); /* errs */
    n = (int)lua_rawlen(L, -1);
    if (n >= MAX_ERRORS) { /* drop the oldest */
        int i;
        for (i = 1; i < n; i++) {
            lua_rawgeti(L, -1, i + 1);
            lua_rawseti(L, -2, i);
        }
        n--;
    }
    lua_pushvalue(L, msg);
    lua_rawseti(L, -2, n + 1);
    lua_pop(L, 1);
    if (b->on_error_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, b->on_error_ref);
        lua_pushvalue(L, msg);
        if (lua_pcall(L, 1, 0, 0) != 0)
            lua_pop(L, 1);
    }
}

/* Pops every queued batch and calls the appender; returns how many. Never
 * raises for the appender's errors (recorded instead). */
static int drain(lua_State *L, struct lps_manager_box *b)
{
    struct ps_batch *bt;
    int n = 0, top = lua_gettop(L);

    if (b->batch == NULL)
        return 0;
    while (!b->close_pending && ps_appender_batch_pop(b->batch, &bt)) {
        lua_pushcfunction(L, traceback);               /* tb */
        lua_pushcfunction(L, dispatch);                /* tb f */
        lua_rawgeti(L, LUA_REGISTRYINDEX, b->app_ref); /* tb f app */
        lua_pushlightuserdata(L, bt);                  /* tb f app bt */
        if (lua_pcall(L, 2, 0, top + 1) != 0)          /* tb [err] */
            record_error(L, b, -1);
        ps_batch_free(bt);
        lua_settop(L, top);
        n++;
    }
    return n;
}

static int timeout_ms_of(lua_State *L, int idx, int dflt)
{
    lua_Number s;

    if (lua_isnoneornil(L, idx))
        return dflt;
    s = luaL_checknumber(L, idx);
    if (!(s >= 0))
        luaL_argerror(L, idx, "timeout must be >= 0 seconds");
    return s * 1000.0 > 2e9 ? 2000000000 : (int)(s * 1000.0 + 0.5);
}

/* ---- engine services: http_get, listen, signals -------------------------- */

/* Frees every m:http_get (in flight: cancelled, no callback). */
static void gets_free(lua_State *L, struct lps_manager_box *b)
{
    struct lps_get *lists[2], *g, *next;
    int i;

    lists[0] = b->gets;
    lists[1] = b->done_head;
    b->gets = b->done_head = b->done_tail = NULL;
    for (i = 0; i < 2; i++) {
        for (g = lists[i]; g != NULL; g = next) {
            next = g->next;
            ps_http_request_free(g->req);
            luaL_unref(L, LUA_REGISTRYINDEX, g->cb_ref);
            free(g->body);
            free(g->ctype);
            free(g->err);
            free(g);
        }
    }
}

static char *cdup(const char *s, size_t n)
{
    char *p = malloc(n + 1);

    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* The request's completion (engine thread, inside the step): copies the
 * result, frees the request, queues the callback for the Lua thread. */
static void on_get_done(struct ps_http_req *r, const struct ps_http_result *res,
                        void *ud)
{
    struct lps_get *g = ud, **pp;
    struct lps_manager_box *b = g->b;

    g->status = res->status;
    g->ctype = cdup(res->content_type, strlen(res->content_type));
    if (res->rc == PS_OK) {
        g->body = cdup(res->body, res->body_len);
        g->len = res->body_len;
        if (g->body == NULL)
            g->err = cdup("out of memory", 13);
    } else {
        const char *m = res->error[0] ? res->error : ps_strerror(res->rc);
        g->err = cdup(m, strlen(m));
    }
    ps_http_request_free(r);
    g->req = NULL;
    for (pp = &b->gets; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    }
    g->next = NULL;
    if (b->done_tail != NULL)
        b->done_tail->next = g;
    else
        b->done_head = g;
    b->done_tail = g;
}

/* In protected mode: callback(result). Arguments: the get (light). */
static int get_body(lua_State *L)
{
    struct lps_get *g = lua_touserdata(L, 1);

    lua_rawgeti(L, LUA_REGISTRYINDEX, g->cb_ref); /* cb */
    lua_createtable(L, 0, 4);                      /* cb res */
    lua_pushinteger(L, (lua_Integer)g->status);
    lua_setfield(L, -2, "status");
    if (g->body != NULL) {
        lua_pushlstring(L, g->body, g->len);
        lua_setfield(L, -2, "body");
    }
    lua_pushstring(L, g->ctype ? g->ctype : "");
    lua_setfield(L, -2, "content_type");
    if (g->err != NULL) {
        lua_pushstring(L, g->err);
        lua_setfield(L, -2, "error");
    }
    lua_call(L, 1, 0);
    return 0;
}

static void drain_gets(lua_State *L, struct lps_manager_box *b)
{
    struct lps_get *g;
    int top = lua_gettop(L);

    while (!b->close_pending && (g = b->done_head) != NULL) {
        b->done_head = g->next;
        if (b->done_head == NULL)
            b->done_tail = NULL;
        lua_pushcfunction(L, traceback);  /* tb */
        lua_pushcfunction(L, get_body);   /* tb f */
        lua_pushlightuserdata(L, g);      /* tb f g */
        if (lua_pcall(L, 1, 0, top + 1) != 0)
            record_error(L, b, -1);
        lua_settop(L, top);
        luaL_unref(L, LUA_REGISTRYINDEX, g->cb_ref);
        free(g->body);
        free(g->ctype);
        free(g->err);
        free(g);
    }
}

/* What serve_body reports back to serve(). */
struct serve_state {
    struct lps_manager_box *b;
    struct ps_httpd_req *req;
    int answered;
};

/* In protected mode: builds req, calls the handler, answers. Argument:
 * the serve_state (light). Raises on a bad return value. */
static int serve_body(lua_State *L)
{
    struct serve_state *ss = lua_touserdata(L, 1);
    const struct ps_httpd_req *r = ss->req;
    struct ps_httpd_header *hv;
    const char *body;
    size_t i, n = 0, len = 0;
    lua_Number st;
    struct ps_err e;

    lua_rawgeti(L, LUA_REGISTRYINDEX, ss->b->handler_ref); /* h */
    lua_createtable(L, 0, 4);                              /* h req */
    lua_pushstring(L, r->method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, r->path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, r->query ? r->query : "");
    lua_setfield(L, -2, "query");
    lua_createtable(L, 0, (int)r->n_headers); /* h req hdrs */
    for (i = 0; i < r->n_headers; i++) {
        lua_getfield(L, -1, r->headers[i].name);
        if (lua_isstring(L, -1)) /* repeated: joined as one list */
            lua_pushfstring(L, "%s, %s", lua_tostring(L, -1),
                            r->headers[i].value);
        else
            lua_pushstring(L, r->headers[i].value);
        lua_setfield(L, -3, r->headers[i].name);
        lua_pop(L, 1);
    }
    lua_setfield(L, -2, "headers"); /* h req */
    lua_call(L, 1, 3);              /* status headers body */
    st = lua_tonumber(L, -3);
    if (!lua_isnumber(L, -3) || st < 100 || st > 999 || st != floor(st))
        return luaL_error(L, "handler must return an HTTP status, got %s",
                          luaL_typename(L, -3));
    if (!lua_isnil(L, -2)) {
        if (!lua_istable(L, -2))
            return luaL_error(L, "handler: headers must be a table");
        lua_pushnil(L);
        while (lua_next(L, -3) != 0) {
            n++;
            lua_pop(L, 1);
        }
    }
    hv = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*hv), 0);
    lua_insert(L, -4);        /* hv status headers body */
    lua_createtable(L, (int)n, 0);
    lua_insert(L, -4);        /* hv anchor status headers body */
    n = 0;
    if (!lua_isnil(L, -2)) {
        lua_pushnil(L);
        while (lua_next(L, -3) != 0) { /* ... headers body k v */
            if (lua_type(L, -2) != LUA_TSTRING ||
                (lua_type(L, -1) != LUA_TSTRING &&
                 lua_type(L, -1) != LUA_TNUMBER))
                return luaL_error(L, "handler: headers must map names to "
                                     "strings");
            hv[n].name = lua_tostring(L, -2); /* kept by headers */
            lua_tostring(L, -1);              /* a number becomes a string */
            hv[n].value = lua_tostring(L, -1);
            lua_rawseti(L, -6, (int)n + 1);   /* anchor[n+1] = v */
            n++;
        }
    }
    if (!lua_isnil(L, -1) && !lua_isstring(L, -1))
        return luaL_error(L, "handler: body must be a string, got %s",
                          luaL_typename(L, -1));
    body = lua_isnil(L, -1) ? "" : lua_tolstring(L, -1, &len);
    ss->answered = 1; /* even a failure below has answered (500) */
    ps_err_init(&e);
    if (ps_httpd_respond(ss->b->httpd, ss->req, (int)st, hv, n, body, len,
                         &e) != PS_OK)
        return luaL_error(L, "%s", e.msg);
    return 0;
}

static void drain_httpd(lua_State *L, struct lps_manager_box *b)
{
    struct ps_httpd_req *r;
    int top = lua_gettop(L);

    while (!b->close_pending && b->httpd != NULL &&
           (r = ps_httpd_next(b->httpd)) != NULL) {
        struct serve_state ss;

        ss.b = b;
        ss.req = r;
        ss.answered = 0;
        lua_pushcfunction(L, traceback);  /* tb */
        lua_pushcfunction(L, serve_body); /* tb f */
        lua_pushlightuserdata(L, &ss);    /* tb f ss */
        if (lua_pcall(L, 1, 0, top + 1) != 0) {
            static const char msg[] = "500 Internal Server Error\n";
            lua_pushfstring(L, "listen handler: %s", lua_tostring(L, -1));
            record_error(L, b, -1);
            if (!ss.answered && b->httpd != NULL)
                ps_httpd_respond(b->httpd, r, 500, NULL, 0, msg,
                                 sizeof(msg) - 1, NULL);
        }
        lua_settop(L, top);
    }
}

/* Watches the signal self-pipe on the manager's engine, once it exists,
 * so that a signal ends a wait at once. */
static void on_sig_io(struct ps_engine_io *io, unsigned revents, void *ud)
{
    (void)io;
    (void)revents;
    (void)ud;
    ps_signal_drain();
}

static void watch_signals(struct lps_manager_box *b)
{
    int fd = ps_signal_fd();

    if (fd < 0 || b->sig_io.slot != 0)
        return;
    ps_engine_io_init(&b->sig_io, fd, on_sig_io, b);
    (void)ps_engine_io_add(ps_manager_engine(b->m), &b->sig_io, PS_IO_READ);
    /* on ENOMEM: signals are still seen after each (short) step */
}

static int signal_pending(const struct lps_manager_box *b)
{
    int i;

    for (i = 0; i < PS_SIGNAL_N; i++)
        if (ps_signal_count(i) > b->sig_seen[i])
            return 1;
    return 0;
}

/* Everything queued for the Lua thread by the last engine iteration. */
static void services(lua_State *L, struct lps_manager_box *b)
{
    drain(L, b);
    drain_gets(L, b);
    drain_httpd(L, b);
    hooks_reap(L, b);
}

/* Ends step/run: runs a deferred close, returns the Lua results. */
static int finish(lua_State *L, struct lps_manager_box *b, int rc,
                  const struct ps_err *e, const char *why)
{
    b->driving = 0;
    b->L = NULL;
    if (b->close_pending) {
        b->close_pending = 0;
        mgr_free(L, b);
    }
    if (rc != PS_OK)
        return push_err(L, rc, e);
    if (why != NULL)
        lua_pushstring(L, why);
    else
        lua_pushboolean(L, 1);
    return 1;
}

static int lps_manager_step(lua_State *L)
{
    struct lps_manager_box *b = check_idle(L, 1);
    int ms = timeout_ms_of(L, 2, 0);
    struct ps_err e;
    int rc;

    ps_err_init(&e);
    b->driving = 1;
    b->L = L; /* function rules run during the step */
    watch_signals(b);
    services(L, b); /* anything left by an earlier iteration */
    b->in_core = 1;
    rc = b->close_pending ? PS_OK : ps_manager_step(b->m, ms, &e);
    b->in_core = 0;
    if (!b->close_pending)
        services(L, b);
    return finish(L, b, rc, &e, NULL);
}

/* m:run{ duration = s } -> "duration" | "stopped" | "signal" (why it
 * returned), or nil, err, code if the engine failed. */
static int lps_manager_run(lua_State *L)
{
    struct lps_manager_box *b = check_idle(L, 1);
    uint64_t start = ps_engine_now_ns(), limit = 0;
    const char *why = "stopped";
    struct ps_err e;
    int rc = PS_OK, forever = 1;

    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "duration");
        if (!lua_isnil(L, -1)) {
            lua_Number d = luaL_checknumber(L, -1);
            if (!(d >= 0))
                return luaL_argerror(L, 2, "duration must be >= 0 seconds");
            limit = (uint64_t)(d * 1e9);
            forever = 0;
        }
        lua_pop(L, 1);
    }
    ps_err_init(&e);
    b->driving = 1;
    b->L = L;
    watch_signals(b);
    /* Stepping here rather than in ps_manager_run lets the appender's
     * batches, http_get callbacks and listen requests reach Lua after
     * every iteration. */
    for (;;) {
        uint64_t el = ps_engine_now_ns() - start;
        int ms = 250;

        services(L, b);
        watch_signals(b); /* core.signal_watch may come from a callback */
        if (b->stop || b->close_pending) {
            why = "stopped";
            break;
        }
        if (signal_pending(b)) {
            why = "signal";
            break;
        }
        if (!forever) {
            if (el >= limit) {
                why = "duration";
                break;
            }
            if ((limit - el) / 1000000 < (uint64_t)ms)
                ms = (int)((limit - el + 999999) / 1000000);
        }
        b->in_core = 1;
        rc = ps_manager_step(b->m, ms, &e);
        b->in_core = 0;
        if (rc != PS_OK)
            break;
    }
    b->stop = 0; /* as ps_engine_run: a stop request ends one run */
    return finish(L, b, rc, &e, why);
}

/* Makes run return soon; callable from appender callbacks. Before a run,
 * the next run returns at once (as ps_engine_stop). */
static int lps_manager_stop(lua_State *L)
{
    struct lps_manager_box *b = check_mgr(L, 1);

    b->stop = 1;
    ps_manager_stop(b->m);
    return 0;
}

/* m:listen(addr, handler [, opts]) -> true | nil, err, code */
static int lps_manager_listen(lua_State *L)
{
    struct lps_manager_box *b = check_mgr(L, 1);
    const char *addr = luaL_checkstring(L, 2);
    struct ps_httpd_opts o;
    struct ps_err e;
    int rc;

    luaL_checktype(L, 3, LUA_TFUNCTION);
    memset(&o, 0, sizeof(o));
    o.addr = addr;
    if (!lua_isnoneornil(L, 4)) { /* tuning, mostly for tests */
        luaL_checktype(L, 4, LUA_TTABLE);
        o.max_conns = (size_t)opt_int(L, 4, "max_connections", 0);
        o.read_timeout_ms =
            (int)(opt_int(L, 4, "read_timeout_ms", 0) & 0x7fffffff);
        o.idle_timeout_ms =
            (int)(opt_int(L, 4, "idle_timeout_ms", 0) & 0x7fffffff);
        o.write_timeout_ms =
            (int)(opt_int(L, 4, "write_timeout_ms", 0) & 0x7fffffff);
    }
    if (b->httpd != NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "listen: already listening on %s",
                        ps_httpd_address(b->httpd));
        lua_pushstring(L, ps_errname(PS_ESTATE));
        return 3;
    }
    ps_err_init(&e);
    rc = ps_httpd_new(&b->httpd, ps_manager_engine(b->m), &o, &e);
    if (rc != PS_OK)
        return push_err(L, rc, &e);
    lua_pushvalue(L, 3);
    b->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushboolean(L, 1);
    return 1;
}

/* m:listen_address() -> "127.0.0.1:PORT" | nil */
static int lps_manager_listen_address(lua_State *L)
{
    struct lps_manager_box *b = check_mgr(L, 1);

    if (b->httpd == NULL)
        return 0;
    lua_pushstring(L, ps_httpd_address(b->httpd));
    return 1;
}

/* Field k of table t as a string, or NULL; a number is converted. */
static const char *get_str(lua_State *L, int t, const char *k, int anchor)
{
    const char *s = NULL;

    lua_getfield(L, t, k);
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        s = lua_tostring(L, -1);
        lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1);
        return s && s[0] ? s : NULL;
    }
    if (!lua_isnil(L, -1) && !lua_istable(L, -1) && !lua_isboolean(L, -1))
        luaL_error(L, "http_get: %s: expected a string", k);
    lua_pop(L, 1);
    return NULL;
}

/* Reads a credentials file as Prometheus does (surrounding space
 * trimmed); pushes nothing, returns an anchored string, or NULL with
 * *err set. */
static const char *read_secret_file(lua_State *L, const char *path,
                                    int anchor, const char **err)
{
    luaL_Buffer lb;
    char buf[4096];
    size_t n;
    const char *s;
    size_t len, i = 0;
    FILE *f = fopen(path, "rb");

    if (f == NULL) {
        *err = lua_pushfstring(L, "http_get: cannot read %s: %s", path,
                               strerror(errno));
        lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1);
        return NULL;
    }
    luaL_buffinit(L, &lb);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        luaL_addlstring(&lb, buf, n);
    fclose(f);
    luaL_pushresult(&lb);
    s = lua_tolstring(L, -1, &len);
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' ||
                       s[i] == '\r'))
        i++;
    while (len > i && (s[len - 1] == ' ' || s[len - 1] == '\t' ||
                       s[len - 1] == '\n' || s[len - 1] == '\r'))
        len--;
    lua_pushlstring(L, s + i, len - i);
    lua_remove(L, -2);
    s = lua_tostring(L, -1);
    lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1);
    return s;
}

/*
 * m:http_get(url, opts, callback) -> true | nil, err, code
 * A one-off GET on the engine's client; callback({ status, body,
 * content_type, error }) runs on the Lua thread after a step. opts uses
 * Prometheus's HTTP client field names; other fields are ignored, so a
 * normalized http_sd_config can be passed as it is.
 */
static int lps_manager_http_get(lua_State *L)
{
    struct lps_manager_box *b = check_mgr(L, 1);
    struct ps_http_req_opts o;
    const char **hdrs = NULL;
    const char *err = NULL;
    struct lps_get *g;
    struct ps_err e;
    int anchor, rc, o_idx = 3;
    lua_Number tmo = 30;

    memset(&o, 0, sizeof(o));
    o.body_size_limit = PS_HTTP_DEFAULT_BODY_LIMIT;
    o.url = luaL_checkstring(L, 2);
    if (lua_isnoneornil(L, 3))
        o_idx = 0;
    else
        luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    lua_settop(L, 4);
    lua_newtable(L); /* 5: anchor */
    anchor = 5;
    if (o_idx) {
        const char *pf, *cf, *bt, *btf;
        lua_getfield(L, o_idx, "timeout");
        if (!lua_isnil(L, -1)) {
            tmo = luaL_checknumber(L, -1);
            if (!(tmo > 0))
                return luaL_argerror(L, 3, "timeout must be > 0 seconds");
        }
        lua_pop(L, 1);
        lua_getfield(L, o_idx, "oauth2");
        if (!lua_isnil(L, -1)) {
            lua_pushnil(L);
            lua_pushliteral(L, "http_get: oauth2 is not supported");
            lua_pushstring(L, ps_errname(PS_ENOTSUP));
            return 3;
        }
        lua_pop(L, 1);
        if (opt_table(L, o_idx, "headers")) { /* hs */
            int h = lua_gettop(L);
            size_t n = 0, i = 0;
            lua_pushnil(L);
            while (lua_next(L, h) != 0) {
                n += lua_istable(L, -1) ? lua_rawlen(L, -1) : 1;
                lua_pop(L, 1);
            }
            hdrs = anchored(L, anchor, (n + 1) * sizeof(*hdrs));
            lua_pushnil(L);
            while (lua_next(L, h) != 0) { /* hs k v */
                size_t j, m = lua_istable(L, -1) ? lua_rawlen(L, -1) : 1;
                if (lua_type(L, -2) != LUA_TSTRING)
                    return luaL_argerror(L, 3, "headers: names must be "
                                               "strings");
                for (j = 0; j < m; j++) {
                    if (lua_istable(L, -1))
                        lua_rawgeti(L, -1, (int)j + 1);
                    else
                        lua_pushvalue(L, -1); /* hs k v s */
                    if (!lua_isstring(L, -1))
                        return luaL_argerror(L, 3, "headers: values must "
                                                   "be strings");
                    hdrs[i] = lua_pushfstring(L, "%s: %s",
                                              lua_tostring(L, -3),
                                              lua_tostring(L, -1));
                    lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1);
                    lua_pop(L, 1);
                    i++;
                }
                lua_pop(L, 1); /* hs k */
            }
            hdrs[i] = NULL;
            lua_pop(L, 1);
            o.headers = hdrs;
        }
        if (opt_table(L, o_idx, "basic_auth")) { /* ba */
            int t = lua_gettop(L);
            o.basic_auth_user = get_str(L, t, "username", anchor);
            if (o.basic_auth_user == NULL)
                o.basic_auth_user = "";
            o.basic_auth_password = get_str(L, t, "password", anchor);
            pf = get_str(L, t, "password_file", anchor);
            if (pf != NULL &&
                (o.basic_auth_password =
                     read_secret_file(L, pf, anchor, &err)) == NULL)
                goto fail;
            lua_pop(L, 1);
        }
        if (opt_table(L, o_idx, "authorization")) { /* au */
            int t = lua_gettop(L);
            o.auth_type = get_str(L, t, "type", anchor);
            o.auth_credentials = get_str(L, t, "credentials", anchor);
            cf = get_str(L, t, "credentials_file", anchor);
            if (cf != NULL &&
                (o.auth_credentials = read_secret_file(L, cf, anchor,
                                                       &err)) == NULL)
                goto fail;
            lua_pop(L, 1);
        }
        bt = get_str(L, o_idx, "bearer_token", anchor);
        btf = get_str(L, o_idx, "bearer_token_file", anchor);
        if (bt != NULL)
            o.auth_credentials = bt;
        if (btf != NULL &&
            (o.auth_credentials = read_secret_file(L, btf, anchor, &err)) ==
                NULL)
            goto fail;
        if (opt_table(L, o_idx, "tls_config")) { /* tls */
            int t = lua_gettop(L);
            o.tls.ca_file = get_str(L, t, "ca_file", anchor);
            o.tls.cert_file = get_str(L, t, "cert_file", anchor);
            o.tls.key_file = get_str(L, t, "key_file", anchor);
            o.tls.server_name = get_str(L, t, "server_name", anchor);
            o.tls.min_version = get_str(L, t, "min_version", anchor);
            o.tls.insecure_skip_verify =
                opt_bool(L, t, "insecure_skip_verify", 0);
            lua_pop(L, 1);
        }
        o.proxy_url = get_str(L, o_idx, "proxy_url", anchor);
        o.disable_follow_redirects =
            !opt_bool(L, o_idx, "follow_redirects", 1);
        o.disable_http2 = !opt_bool(L, o_idx, "enable_http2", 1);
        o.body_size_limit = (size_t)opt_int(L, o_idx, "body_size_limit",
                                            PS_HTTP_DEFAULT_BODY_LIMIT);
    }
    o.timeout_ms = (long)(tmo * 1000.0 + 0.5);
    g = calloc(1, sizeof(*g));
    if (g == NULL)
        return luaL_error(L, "not enough memory");
    g->b = b;
    g->cb_ref = LUA_NOREF;
    ps_err_init(&e);
    rc = ps_http_request_new(ps_engine_http(ps_manager_engine(b->m)),
                             &g->req, &o, &e);
    if (rc == PS_OK)
        rc = ps_http_start(g->req, on_get_done, g, &e);
    if (rc != PS_OK) {
        ps_http_request_free(g->req);
        free(g);
        return push_err(L, rc, &e);
    }
    lua_pushvalue(L, 4);
    g->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    g->next = b->gets;
    b->gets = g;
    lua_pushboolean(L, 1);
    return 1;
fail:
    lua_pushnil(L);
    lua_pushstring(L, err);
    lua_pushstring(L, ps_errname(PS_EIO));
    return 3;
}

/* m:signals() -> { "HUP", ... }: watched signals received since the last
 * call (each name once), in a fixed order. */
static int lps_manager_signals(lua_State *L)
{
    struct lps_manager_box *b = check_mgr(L, 1);
    int i, n = 0;

    lua_newtable(L);
    for (i = 0; i < PS_SIGNAL_N; i++) {
        uint64_t c = ps_signal_count(i);
        if (c > b->sig_seen[i]) {
            b->sig_seen[i] = c;
            lua_pushstring(L, ps_signal_name(i));
            lua_rawseti(L, -2, ++n);
        }
    }
    return 1;
}

/* core.signal_watch({ "HUP", "INT", "TERM" }) -> true | nil, err, code */
static int lps_signal_watch(lua_State *L)
{
    int idx[PS_SIGNAL_N];
    size_t i, n;
    struct ps_err e;
    int rc;

    luaL_checktype(L, 1, LUA_TTABLE);
    n = lua_rawlen(L, 1);
    if (n > PS_SIGNAL_N)
        return luaL_argerror(L, 1, "too many signals");
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, 1, (int)i + 1);
        idx[i] = lua_type(L, -1) == LUA_TSTRING
                     ? ps_signal_index(lua_tostring(L, -1))
                     : -1;
        if (idx[i] < 0)
            return luaL_argerror(
                L, 1,
                lua_pushfstring(L, "unknown signal '%s' (known: HUP INT "
                                   "TERM USR1 USR2 QUIT)",
                                lua_type(L, -1) == LUA_TSTRING
                                    ? lua_tostring(L, -1)
                                    : luaL_typename(L, -1)));
        lua_pop(L, 1);
    }
    ps_err_init(&e);
    rc = ps_signal_watch(idx, n, &e);
    if (rc != PS_OK)
        return push_err(L, rc, &e);
    lua_pushboolean(L, 1);
    return 1;
}

static int lps_signal_unwatch(lua_State *L)
{
    (void)L;
    ps_signal_unwatch();
    return 0;
}

static int lps_getpid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* Returns the recorded appender errors (oldest first) and forgets them. */
static int lps_manager_errors(lua_State *L)
{
    struct lps_manager_box *b = check_mgr(L, 1);

    lua_rawgeti(L, LUA_REGISTRYINDEX, b->errors_ref); /* errs */
    lua_newtable(L);
    luaL_unref(L, LUA_REGISTRYINDEX, b->errors_ref);
    b->errors_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* errs */
    return 1;
}

static int lps_manager_appender_stats(lua_State *L)
{
    struct lps_manager_box *b = check_mgr(L, 1);
    struct ps_batch_stats st;

    if (b->batch == NULL)
        return 0;
    ps_appender_batch_stats(b->batch, &st);
    lua_createtable(L, 0, 8);
#define F(name)                                                              \
    lua_pushinteger(L, (lua_Integer)st.name);                                \
    lua_setfield(L, -2, #name)
    F(batches);
    F(rollbacks);
    F(samples);
    F(dropped_samples);
    F(dropped_batches);
    F(pending_batches);
    F(pending_samples);
    F(series);
#undef F
    return 1;
}

static int lps_manager_tostring(lua_State *L)
{
    struct lps_manager_box *b = luaL_checkudata(L, 1, MANAGER_MT);

    lua_pushfstring(L, "promscrape.Manager (%s%p)", b->m ? "" : "closed, ",
                    (void *)b);
    return 1;
}

/* ---- pools -------------------------------------------------------------- */

static struct ps_pool *check_pool(lua_State *L, struct lps_pool_box **out)
{
    struct lps_pool_box *p = luaL_checkudata(L, 1, POOL_MT);
    struct ps_pool *pool;

    if (p->mgr_ref == LUA_NOREF)
        luaL_error(L, "attempt to use a closed scrape pool");
    if (p->mb->m == NULL || p->mb->close_pending)
        luaL_error(L, "scrape pool '%s': its manager is closed", p->job);
    pool = ps_manager_pool(p->mb->m, p->job);
    if (pool == NULL)
        luaL_error(L, "scrape pool '%s' no longer exists (removed by a "
                      "reload)", p->job);
    if (out != NULL)
        *out = p;
    return pool;
}

static int lps_pool_close(lua_State *L) /* __gc, __close and :close() */
{
    struct lps_pool_box *p = luaL_checkudata(L, 1, POOL_MT);

    if (p->mgr_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, p->mgr_ref); /* the manager may go */
        p->mgr_ref = LUA_NOREF;
    }
    return 0;
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, (lua_Number)v);
    lua_setfield(L, -2, k);
}

/* Counts are integers on 5.4 (LuaJIT has only doubles: exact below 2^53). */
static void set_int(lua_State *L, const char *k, uint64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void push_status(lua_State *L, const struct ps_target_status *st)
{
    lua_createtable(L, 0, 16); /* t */
    push_lset(L, st->labels);
    lua_setfield(L, -2, "labels");
    push_lset(L, st->discovered);
    lua_setfield(L, -2, "discovered_labels");
    push_lset(L, st->all_labels);
    lua_setfield(L, -2, "all_labels");
    lua_pushstring(L, st->job ? st->job : "");
    lua_setfield(L, -2, "job");
    lua_pushstring(L, st->url ? st->url : "");
    lua_setfield(L, -2, "url");
    lua_pushstring(L, ps_health_name(st->health));
    lua_setfield(L, -2, "health");
    lua_pushstring(L, st->last_error ? st->last_error : "");
    lua_setfield(L, -2, "last_error");
    if (st->last_scrape_ms != 0)
        set_num(L, "last_scrape", (double)st->last_scrape_ms / 1000.0);
    set_num(L, "last_scrape_duration", (double)st->last_duration_ns / 1e9);
    set_num(L, "interval", (double)st->interval_ms / 1000.0);
    set_num(L, "timeout", (double)st->timeout_ms / 1000.0);
    set_int(L, "scrapes", st->scrapes);
    set_int(L, "skipped_ticks", st->skipped_ticks);
    set_int(L, "last_samples", st->last_samples);
    set_int(L, "last_series_added", st->last_series_added);
    if (st->deferred_pending || st->deferred_resolved || st->deferred_lost ||
        st->deferred_held || st->deferred_failed) {
        /* metric function rules deferred to m:poll (background mode) */
        lua_createtable(L, 0, 5);
        set_int(L, "pending", st->deferred_pending);
        set_int(L, "held", st->deferred_held);
        set_int(L, "resolved", st->deferred_resolved);
        set_int(L, "lost", st->deferred_lost);
        set_int(L, "failed", st->deferred_failed);
        lua_setfield(L, -2, "deferred");
    }
}

static int lps_pool_targets(lua_State *L)
{
    struct ps_pool *pool = check_pool(L, NULL);
    size_t i, n = ps_pool_ntargets(pool);

    lua_createtable(L, (int)n, 0); /* list */
    for (i = 0; i < n; i++) {
        struct ps_target_status st;

        if (ps_pool_target(pool, i, &st) != PS_OK)
            break;
        push_status(L, &st); /* list t */
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int lps_pool_dropped_targets(lua_State *L)
{
    struct ps_pool *pool = check_pool(L, NULL);
    size_t i, n = ps_pool_ndropped(pool);

    lua_createtable(L, (int)n, 0); /* list */
    for (i = 0; i < n; i++) {
        struct ps_dropped_target d;

        if (ps_pool_dropped(pool, i, &d) != PS_OK)
            break;
        lua_createtable(L, 0, 2); /* list t */
        push_lset(L, d.discovered);
        lua_setfield(L, -2, "discovered_labels");
        lua_pushstring(L, d.reason ? d.reason : "");
        lua_setfield(L, -2, "reason");
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int lps_pool_job(lua_State *L)
{
    struct lps_pool_box *p;

    check_pool(L, &p);
    lua_pushstring(L, p->job);
    return 1;
}

static int lps_pool_fingerprint(lua_State *L)
{
    lua_pushstring(L, ps_pool_fingerprint(check_pool(L, NULL)));
    return 1;
}

static int lps_pool_tostring(lua_State *L)
{
    struct lps_pool_box *p = luaL_checkudata(L, 1, POOL_MT);

    lua_pushfstring(L, "promscrape.ScrapePool '%s' (%p)", p->job, (void *)p);
    return 1;
}

void lps_manager_register(lua_State *L)
{
    static const luaL_Reg mmethods[] = {
        {"_apply", lps_manager_apply},
        {"sync", lps_manager_sync},
        {"pools", lps_manager_pools},
        {"pool", lps_manager_pool},
        {"step", lps_manager_step},
        {"run", lps_manager_run},
        {"stop", lps_manager_stop},
        {"close", lps_manager_close},
        {"errors", lps_manager_errors},
        {"appender_stats", lps_manager_appender_stats},
        {"listen", lps_manager_listen},
        {"listen_address", lps_manager_listen_address},
        {"http_get", lps_manager_http_get},
        {"signals", lps_manager_signals},
        {NULL, NULL}};
    static const luaL_Reg pmethods[] = {
        {"targets", lps_pool_targets},
        {"dropped_targets", lps_pool_dropped_targets},
        {"job", lps_pool_job},
        {"fingerprint", lps_pool_fingerprint},
        {"close", lps_pool_close},
        {NULL, NULL}};

    luaL_newmetatable(L, MANAGER_MT); /* core mt */
    lps_newlib(L, mmethods);          /* core mt methods */
    lua_pushvalue(L, -1);             /* core mt methods methods */
    lua_setfield(L, -4, "manager_methods"); /* core mt methods */
    lua_pushcclosure(L, lps_manager_index, 1); /* core mt index */
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, lps_manager_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, lps_manager_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, lps_manager_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1); /* core */

    luaL_newmetatable(L, POOL_MT); /* core mt */
    lps_newlib(L, pmethods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, lps_pool_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, lps_pool_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, lps_pool_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1); /* core */

    lua_pushcfunction(L, lps_manager_new);
    lua_setfield(L, -2, "manager_new");
    lua_pushcfunction(L, lps_signal_watch);
    lua_setfield(L, -2, "signal_watch");
    lua_pushcfunction(L, lps_signal_unwatch);
    lua_setfield(L, -2, "signal_unwatch");
    lua_pushcfunction(L, lps_getpid);
    lua_setfield(L, -2, "getpid");
}

/* ---- accessors for lps_bg.c (issue 7: background mode) ------------------ */

/* The core manager of the Manager at idx, or NULL once closed (raises if
 * idx is not a Manager); *busy is set inside step/run/apply/sync. */
struct ps_manager *lps_manager_core(lua_State *L, int idx, int *busy)
{
    struct lps_manager_box *b = luaL_checkudata(L, idx, MANAGER_MT);

    if (busy != NULL)
        *busy = b->driving || b->in_core;
    return b->close_pending ? NULL : b->m;
}

/* The box of the Manager behind the ScrapePool at idx (raises if idx is
 * not a pool), or NULL once the pool is closed. */
void *lps_pool_owner(lua_State *L, int idx)
{
    struct lps_pool_box *p = luaL_checkudata(L, idx, POOL_MT);

    return p->mgr_ref == LUA_NOREF ? NULL : (void *)p->mb;
}

/* Background mode's m:poll: hands queued batches to the Lua appender until
 * at least max_samples samples went (whole batches, at least one). Returns
 * the samples handed over; *left: batches still queued. Never raises for
 * the appender's errors (recorded, as in drain). */
size_t lps_manager_drain_some(lua_State *L, int idx, size_t max_samples,
                              size_t *left)
{
    struct lps_manager_box *b = luaL_checkudata(L, idx, MANAGER_MT);
    struct ps_batch_stats st;
    struct ps_batch *bt;
    size_t n = 0;
    int top = lua_gettop(L);

    *left = 0;
    while (b->m != NULL && b->batch != NULL && !b->close_pending &&
           n < max_samples && ps_appender_batch_pop(b->batch, &bt)) {
        n += bt->n;
        lua_pushcfunction(L, traceback);               /* tb */
        lua_pushcfunction(L, dispatch);                /* tb f */
        lua_rawgeti(L, LUA_REGISTRYINDEX, b->app_ref); /* tb f app */
        lua_pushlightuserdata(L, bt);                  /* tb f app bt */
        if (lua_pcall(L, 2, 0, top + 1) != 0)          /* tb [err] */
            record_error(L, b, -1);
        ps_batch_free(bt);
        lua_settop(L, top);
    }
    if (b->m != NULL && b->batch != NULL) {
        ps_appender_batch_stats(b->batch, &st);
        *left = st.pending_batches;
    }
    return n;
}

/* m:poll, with the engine locked (or in step mode): runs the metric
 * function rules of series the background thread deferred, for up to max
 * series, on this thread (see ps_loop_resolve_deferred). Returns the
 * number resolved; *left: series still queued. Never raises (a rule's
 * error is recorded in m:errors()). */
size_t lps_manager_resolve_deferred(lua_State *L, int idx, size_t max,
                                    size_t *left)
{
    struct lps_manager_box *b = luaL_checkudata(L, idx, MANAGER_MT);
    size_t i, j, n = 0, np, nl, l1;

    *left = 0;
    if (b->m == NULL || b->close_pending || b->in_core)
        return 0;
    b->L = L;
    b->in_core = 1; /* the rules must not re-enter the manager */
    np = ps_manager_npools(b->m);
    for (i = 0; i < np; i++) {
        struct ps_pool *p = ps_manager_pool_at(b->m, i);
        nl = ps_pool_ntargets(p);
        for (j = 0; j < nl; j++) {
            struct ps_loop *lp = ps_pool_loop(p, j);
            if (lp == NULL)
                continue;
            l1 = 0;
            n += ps_loop_resolve_deferred(lp, n < max ? max - n : 0, &l1);
            *left += l1;
        }
    }
    b->in_core = 0;
    b->L = b->driving ? L : NULL;
    return n;
}

/* The rest of services() for m:poll, with the engine locked: http_get
 * callbacks, listen requests, released function rules. */
void lps_manager_drain_rest(lua_State *L, int idx)
{
    struct lps_manager_box *b = luaL_checkudata(L, idx, MANAGER_MT);

    if (b->m == NULL)
        return;
    drain_gets(L, b);
    drain_httpd(L, b);
    hooks_reap(L, b);
}
