/*
 * lps_relabel: Lua marshalling for ps_relabel. No relabel logic lives here.
 *
 * core.relabel_compile(rules [, opts]) -> RelabelRules | nil, msg, code
 *   rules: array of tables with Prometheus's YAML keys (functions are
 *   handled by lua/promscrape/relabel.lua, which calls this per run of
 *   table rules). opts.metric_name_validation_scheme = "utf8" | "legacy";
 *   opts.index_base = number naming rules[1] in errors (default 1).
 * RelabelRules:apply(labels [, first [, count]]) -> labels | nil, drop_at
 *   applies rules first..first+count-1 (1-based, default all); drop_at is
 *   the 1-based position of the dropping rule. The input is never modified.
 * RelabelRules:count(), :action(i), :close() (also __gc and __close).
 */
#include "lps.h"

#include "../ps_relabel.h"

#include <string.h>

#define RULES_MT "promscrape.RelabelRules"

/* The userdata is a box: the compiled rules plus per-box scratch, because
 * Lua runs one apply at a time per state and may reuse both. */
struct lps_relabel_box {
    struct ps_relabel *r; /* NULL once closed */
    struct ps_relabel_scratch *s;
    struct ps_labels in, out;
};

static const char *const fields[] = {
    "source_labels", "separator",   "regex",  "modulus",
    "target_label",  "replacement", "action", NULL};

static struct lps_relabel_box *check_box(lua_State *L)
{
    struct lps_relabel_box *b = luaL_checkudata(L, 1, RULES_MT);

    if (b->r == NULL)
        luaL_error(L, "attempt to use closed relabel rules");
    return b;
}

static int lps_relabel_close(lua_State *L) /* __gc, __close and :close() */
{
    struct lps_relabel_box *b = luaL_checkudata(L, 1, RULES_MT);

    if (b->r != NULL) {
        ps_relabel_free(b->r);
        ps_relabel_scratch_free(b->s);
        ps_labels_cleanup(&b->in);
        ps_labels_cleanup(&b->out);
        b->r = NULL;
        b->s = NULL;
    }
    return 0;
}

/*
 * Reads a string-ish field of the rule at stack index t into *out.
 * Numbers are accepted (YAML loaders turn `replacement: 1` into one); their
 * string form is anchored in the table at `anchor` so it outlives compile.
 * Returns NULL or an error message ("expected string ...").
 */
static const char *get_str(lua_State *L, int t, const char *k, int anchor,
                           struct ps_str *out)
{
    const char *err = NULL;

    lua_getfield(L, t, k); /* +1 */
    if (lua_type(L, -1) == LUA_TSTRING) {
        out->p = lua_tolstring(L, -1, &out->n); /* kept alive by the rule */
    } else if (lua_type(L, -1) == LUA_TNUMBER) {
        lua_pushvalue(L, -1); /* +2: converted in place */
        out->p = lua_tolstring(L, -1, &out->n);
        lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1); /* +1 */
    } else if (!lua_isnil(L, -1)) {
        err = lua_typename(L, lua_type(L, -1));
    }
    lua_pop(L, 1); /* 0 */
    return err;
}

/* Fills c from the rule table at index t. Returns NULL or a message in buf. */
static const char *read_rule(lua_State *L, int t, int anchor, size_t idx,
                             struct ps_relabel_config *c, char *buf, size_t bsz)
{
    static const char *const strk[] = {"separator", "regex", "target_label",
                                       "replacement", "action"};
    struct ps_str *strv[5];
    const char *bad;
    size_t i;

    strv[0] = &c->separator;
    strv[1] = &c->regex;
    strv[2] = &c->target_label;
    strv[3] = &c->replacement;
    strv[4] = &c->action;
    /* Unknown keys are errors, as in Prometheus's strict YAML decoding:
     * a typo such as `target: x` must not be silently ignored. */
    lua_pushnil(L);
    while (lua_next(L, t) != 0) { /* key, value */
        int known = 0;

        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -2);
            for (i = 0; fields[i] != NULL; i++)
                if (strcmp(k, fields[i]) == 0)
                    known = 1;
        }
        if (!known) {
            snprintf(buf, bsz, "rule %zu: unknown field %s%s%s", idx,
                     lua_type(L, -2) == LUA_TSTRING ? "\"" : "",
                     lua_type(L, -2) == LUA_TSTRING
                         ? lua_tostring(L, -2)
                         : lua_typename(L, lua_type(L, -2)),
                     lua_type(L, -2) == LUA_TSTRING ? "\"" : "");
            lua_pop(L, 2);
            return buf;
        }
        lua_pop(L, 1); /* key */
    }
    for (i = 0; i < 5; i++) {
        if ((bad = get_str(L, t, strk[i], anchor, strv[i])) != NULL) {
            snprintf(buf, bsz, "rule %zu: %s: expected string, got %s", idx,
                     strk[i], bad);
            return buf;
        }
    }
    lua_getfield(L, t, "modulus"); /* +1 */
    if (!lua_isnil(L, -1)) {
        lua_Number m = lua_tonumber(L, -1);

        if (lua_type(L, -1) != LUA_TNUMBER || m < 0 || m != m ||
            m >= 18446744073709551616.0 || (lua_Number)(uint64_t)m != m) {
            lua_pop(L, 1);
            snprintf(buf, bsz,
                     "rule %zu: modulus: expected a non-negative "
                     "integer",
                     idx);
            return buf;
        }
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(L, -1))
            c->modulus = (uint64_t)lua_tointeger(L, -1);
        else
#endif
            c->modulus = (uint64_t)m;
    }
    lua_pop(L, 1);                       /* 0 */
    lua_getfield(L, t, "source_labels"); /* +1 */
    if (lua_istable(L, -1)) {
        size_t n = lua_rawlen(L, -1);
        struct ps_str *sl;

        /* GC-owned storage: an error cannot leak it. Anchored below. */
        sl = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*sl), 0); /* +2 */
        lua_rawseti(L, anchor, (int)lua_rawlen(L, anchor) + 1);  /* +1 */
        for (i = 0; i < n; i++) {
            lua_rawgeti(L, -1, (int)i + 1); /* +2 */
            if (lua_type(L, -1) != LUA_TSTRING) {
                snprintf(buf, bsz,
                         "rule %zu: source_labels: expected "
                         "strings, got %s at %zu",
                         idx, lua_typename(L, lua_type(L, -1)), i + 1);
                lua_pop(L, 2);
                return buf;
            }
            sl[i].p = lua_tolstring(L, -1, &sl[i].n);
            lua_pop(L, 1); /* +1 */
        }
        c->source_labels = sl;
        c->n_source_labels = n;
    } else if (!lua_isnil(L, -1)) {
        snprintf(buf, bsz,
                 "rule %zu: source_labels: expected array of "
                 "strings, got %s",
                 idx, lua_typename(L, lua_type(L, -1)));
        lua_pop(L, 1);
        return buf;
    }
    lua_pop(L, 1); /* 0 */
    c->index = idx;
    return NULL;
}

static unsigned read_opts(lua_State *L, int o, size_t *base)
{
    unsigned flags = 0;

    *base = 1;
    if (lua_isnoneornil(L, o))
        return 0;
    luaL_checktype(L, o, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, o) != 0) { /* key, value */
        const char *k =
            lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        if (strcmp(k, "metric_name_validation_scheme") == 0) {
            const char *v = luaL_checkstring(L, -1);
            if (strcmp(v, "legacy") == 0)
                flags |= PS_RELABEL_LEGACY_NAMES;
            else if (strcmp(v, "utf8") != 0)
                luaL_error(L,
                           "metric_name_validation_scheme: expected "
                           "\"utf8\" or \"legacy\", got \"%s\"",
                           v);
        } else if (strcmp(k, "index_base") == 0) {
            lua_Number n = luaL_checknumber(L, -1);
            *base = n >= 1 ? (size_t)n : 1;
        } else {
            luaL_argerror(L, o, lua_pushfstring(L, "unknown option '%s'", k));
        }
        lua_pop(L, 1); /* key */
    }
    return flags;
}

static int fail3(lua_State *L, const char *msg, int code)
{
    luaL_pushfail(L);
    lua_pushstring(L, msg);
    lua_pushstring(L, ps_errname(code));
    return 3;
}

static int lps_relabel_compile(lua_State *L)
{
    struct ps_relabel_config *cfgs;
    struct lps_relabel_box *b;
    struct ps_relabel *r = NULL;
    struct ps_relabel_scratch *s = NULL;
    struct ps_err e;
    size_t n, i, base;
    unsigned flags;
    char buf[PS_ERR_MAX];
    int anchor, rc;

    luaL_checktype(L, 1, LUA_TTABLE);
    flags = read_opts(L, 2, &base);
    lua_settop(L, 2);
    n = lua_rawlen(L, 1);
    lua_newtable(L); /* 3: anchors converted strings and arrays */
    anchor = 3;
    cfgs = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*cfgs), 0); /* 4 */
    memset(cfgs, 0, (n ? n : 1) * sizeof(*cfgs));
    for (i = 0; i < n; i++) {
        const char *err;

        lua_rawgeti(L, 1, (int)i + 1); /* 5 */
        if (!lua_istable(L, 5)) {
            snprintf(buf, sizeof(buf), "rule %zu: expected a table, got %s",
                     base + i, lua_typename(L, lua_type(L, 5)));
            return fail3(L, buf, PS_EINVAL);
        }
        err = read_rule(L, 5, anchor, base + i, &cfgs[i], buf, sizeof(buf));
        if (err != NULL)
            return fail3(L, err, PS_EINVAL);
        lua_pop(L, 1); /* 4 */
    }
    ps_err_init(&e);
    /* The box exists before the core objects so an allocation error raised
     * by Lua cannot leak them; the metatable is set once they exist. */
    b = lua_newuserdatauv(L, sizeof(*b), 0); /* 5 */
    memset(b, 0, sizeof(*b));
    rc = ps_relabel_compile(&r, cfgs, n, flags, &e);
    if (rc != PS_OK)
        return fail3(L, e.msg, rc);
    if (ps_relabel_scratch_new(&s) != PS_OK) {
        ps_relabel_free(r);
        return luaL_error(L, "relabel: out of memory");
    }
    b->r = r;
    b->s = s;
    ps_labels_init(&b->in);
    ps_labels_init(&b->out);
    luaL_getmetatable(L, RULES_MT); /* box mt */
    lua_setmetatable(L, -2);        /* box */
    return 1;
}

/* Reads the label table at index t into b->in (strings borrowed from it;
 * numbers converted and copied). Raises on misuse. */
static void read_labels(lua_State *L, struct lps_relabel_box *b, int t)
{
    ps_labels_clear(&b->in);
    lua_pushnil(L);
    while (lua_next(L, t) != 0) { /* key, value */
        size_t nl, vl;
        const char *name, *value;
        unsigned flags = 0;
        int rc;

        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "labels: names must be strings, got %s",
                       lua_typename(L, lua_type(L, -2)));
        if (lua_type(L, -1) == LUA_TNUMBER)
            flags = PS_LABELS_COPY; /* converted string dies with the pop */
        else if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "labels: value of '%s' must be a string, got %s",
                       lua_tostring(L, -2), lua_typename(L, lua_type(L, -1)));
        name = lua_tolstring(L, -2, &nl);
        value = lua_tolstring(L, -1, &vl); /* converts the value copy only */
        rc = ps_labels_add(&b->in, name, nl, value, vl, flags);
        if (rc != PS_OK)
            luaL_error(L, "relabel: out of memory");
        lua_pop(L, 1); /* key */
    }
}

static int lps_relabel_apply(lua_State *L)
{
    struct lps_relabel_box *b = check_box(L);
    size_t count = ps_relabel_count(b->r), first = 0, drop_at, i;
    struct ps_err e;
    int rc;

    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) {
        lua_Integer f = luaL_checkinteger(L, 3);
        luaL_argcheck(L, f >= 1 && (size_t)f <= count + 1, 3, "out of range");
        first = (size_t)f - 1;
        count -= first;
    }
    if (!lua_isnoneornil(L, 4)) {
        lua_Integer c = luaL_checkinteger(L, 4);
        luaL_argcheck(L, c >= 0 && (size_t)c <= count, 4, "out of range");
        count = (size_t)c;
    }
    read_labels(L, b, 2);
    ps_err_init(&e);
    rc = ps_relabel_apply_range(b->r, b->s, &b->in, first, count, &b->out,
                                &drop_at, &e);
    ps_labels_clear(&b->in); /* drop borrowed views now */
    if (rc != PS_OK)
        return luaL_error(L, "%s", e.msg);
    if (drop_at != PS_RELABEL_KEPT) {
        luaL_pushfail(L);
        lua_pushinteger(L, (lua_Integer)(drop_at + 1));
        return 2;
    }
    lua_createtable(L, 0, (int)b->out.n);
    for (i = 0; i < b->out.n; i++) {
        const struct ps_label *l = &b->out.v[i];

        lua_pushlstring(L, l->name, l->name_len);
        lua_pushlstring(L, l->value, l->value_len);
        lua_rawset(L, -3);
    }
    ps_labels_clear(&b->out);
    return 1;
}

static int lps_relabel_count(lua_State *L)
{
    struct lps_relabel_box *b = check_box(L);

    lua_pushinteger(L, (lua_Integer)ps_relabel_count(b->r));
    return 1;
}

static int lps_relabel_action(lua_State *L)
{
    struct lps_relabel_box *b = check_box(L);
    lua_Integer i = luaL_checkinteger(L, 2);

    luaL_argcheck(L, i >= 1 && (size_t)i <= ps_relabel_count(b->r), 2,
                  "out of range");
    lua_pushstring(
        L, ps_relabel_action_name(ps_relabel_action_of(b->r, (size_t)i - 1)));
    return 1;
}

static int lps_relabel_tostring(lua_State *L)
{
    struct lps_relabel_box *b = luaL_checkudata(L, 1, RULES_MT);

    if (b->r == NULL)
        lua_pushstring(L, "promscrape.RelabelRules (closed)");
    else
        lua_pushfstring(L, "promscrape.RelabelRules (%d rules)",
                        (int)ps_relabel_count(b->r));
    return 1;
}

static const luaL_Reg methods[] = {{"apply", lps_relabel_apply},
                                   {"count", lps_relabel_count},
                                   {"action", lps_relabel_action},
                                   {"close", lps_relabel_close},
                                   {NULL, NULL}};

static const luaL_Reg meta[] = {{"__gc", lps_relabel_close},
#if LUA_VERSION_NUM >= 504
                                {"__close", lps_relabel_close},
#endif
                                {"__tostring", lps_relabel_tostring},
                                {NULL, NULL}};

void lps_relabel_register(lua_State *L)
{
    luaL_newmetatable(L, RULES_MT); /* core mt */
    luaL_setfuncs(L, meta, 0);
    lps_newlib(L, methods);         /* core mt methods */
    lua_setfield(L, -2, "__index"); /* core mt */
    lua_pop(L, 1);                  /* core */
    lua_pushcfunction(L, lps_relabel_compile);
    lua_setfield(L, -2, "relabel_compile");
}
