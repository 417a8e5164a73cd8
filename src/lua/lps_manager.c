/*
 * lps_manager: Lua marshalling for ps_manager and ps_pool, and the Lua side
 * of Lua appenders (draining ps_appender_batch). No scrape logic lives here;
 * lua/promscrape/manager.lua builds the public API on top (config
 * normalization, durations) and documents it.
 *
 * core.manager_new(opts) -> Manager | nil, msg, code
 *   opts.store = MemoryStore   append to this store (kept alive), or
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
 * ScrapePool:targets(), :dropped_targets(), :job(), :close().
 *
 * Lua callbacks run only between engine iterations, on the thread that
 * called step/run, under lua_pcall with a traceback: no Lua error ever
 * unwinds through a core frame, and none escapes step/run.
 */
#include "lps.h"
#include "lps_store.h"

#include "../ps_appender_batch.h"
#include "../ps_manager.h"

#include <math.h>
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
    struct ps_appender_batch *batch; /* Lua appender shim, or NULL */
    int app_ref;     /* the Lua appender table */
    int errors_ref;  /* array of recorded error strings */
    int on_error_ref;
    int driving;       /* inside step/run: no re-entry, close deferred */
    int stop;          /* m:stop() asked run to return */
    int close_pending; /* m:close() from a callback during step/run */
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

/* Reads the rule list field k of job table t. Lua function rules are
 * rejected here (manager.lua reports them before calling). */
static const struct ps_relabel_config *read_rules(lua_State *L, int t,
                                                  const char *k, int anchor,
                                                  size_t *n)
{
    struct ps_relabel_config *v;
    size_t i, len;

    *n = 0;
    if (!opt_table(L, t, k))
        return NULL;
    len = lua_rawlen(L, -1); /* list */
    v = anchored(L, anchor, (len ? len : 1) * sizeof(*v));
    for (i = 0; i < len; i++) {
        struct ps_relabel_config *c = &v[i];
        int r;

        lua_rawgeti(L, -1, (int)i + 1); /* list rule */
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
            c->source_labels = sl;
            c->n_source_labels = m;
            lua_pop(L, 1); /* list rule */
        }
        c->index = i + 1;
        lua_pop(L, 1); /* list */
    }
    lua_pop(L, 1); /* 0 */
    *n = len;
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
    g->body_size_limit = (uint64_t)opt_int(L, t, "body_size_limit", 0);
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
static void read_job(lua_State *L, int t, int anchor,
                     struct ps_scrape_config *c)
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
    c->relabel_configs = read_rules(L, t, "relabel_configs", anchor,
                                    &c->n_relabel_configs);
    c->metric_relabel_configs = read_rules(
        L, t, "metric_relabel_configs", anchor, &c->n_metric_relabel_configs);
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

    if (b->driving)
        luaL_error(L, "manager is running: not allowed from its own "
                      "appender callbacks");
    return b;
}

/* Frees the core objects in dependency order: the manager's loops borrow
 * the appenders, so the manager goes first. Releases the Lua refs. */
static void mgr_free(lua_State *L, struct lps_manager_box *b)
{
    ps_manager_free(b->m);
    b->m = NULL;
    ps_appender_batch_free(b->batch);
    b->batch = NULL;
    lps_sink_unref(b->sink);
    b->sink = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, b->app_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, b->errors_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, b->on_error_ref);
    b->app_ref = b->errors_ref = b->on_error_ref = LUA_NOREF;
}

static int lps_manager_close(lua_State *L) /* __gc, __close and :close() */
{
    struct lps_manager_box *b = luaL_checkudata(L, 1, MANAGER_MT);

    if (b->m == NULL)
        return 0;
    if (b->driving) { /* from a callback: step/run frees on return */
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
    } else {
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
    struct lps_manager_box *b = check_idle(L, 1);
    struct ps_global_config g;
    struct ps_scrape_config *cv;
    struct ps_err e;
    size_t i, n;
    int anchor, rc;

    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
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
        read_job(L, 5, anchor, &cv[i]);
        lua_pop(L, 1);
    }
    ps_err_init(&e);
    rc = ps_manager_apply_config(b->m, &g, cv, n, &e);
    if (rc != PS_OK)
        return push_err(L, rc, &e);
    lua_pushboolean(L, 1);
    return 1;
}

static int lps_manager_sync(lua_State *L)
{
    struct lps_manager_box *b = check_idle(L, 1);
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
            rc = ps_manager_sync(b->m, job, gv, n, &e);
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

/* Ends step/run: runs a deferred close, returns the Lua results. */
static int finish(lua_State *L, struct lps_manager_box *b, int rc,
                  const struct ps_err *e)
{
    b->driving = 0;
    if (b->close_pending) {
        b->close_pending = 0;
        mgr_free(L, b);
    }
    if (rc != PS_OK)
        return push_err(L, rc, e);
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
    drain(L, b); /* anything left by an earlier iteration */
    rc = ps_manager_step(b->m, ms, &e);
    drain(L, b);
    return finish(L, b, rc, &e);
}

static int lps_manager_run(lua_State *L)
{
    struct lps_manager_box *b = check_idle(L, 1);
    uint64_t start = ps_engine_now_ns(), limit = 0;
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
    /* Stepping here rather than in ps_manager_run lets the appender's
     * batches reach Lua after every iteration. */
    while (!b->stop) {
        uint64_t el = ps_engine_now_ns() - start;
        int ms = 250;

        drain(L, b);
        if (b->stop)
            break;
        if (!forever) {
            if (el >= limit)
                break;
            if ((limit - el) / 1000000 < (uint64_t)ms)
                ms = (int)((limit - el + 999999) / 1000000);
        }
        rc = ps_manager_step(b->m, ms, &e);
        if (rc != PS_OK)
            break;
    }
    drain(L, b);
    b->stop = 0; /* as ps_engine_run: a stop request ends one run */
    return finish(L, b, rc, &e);
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
}
