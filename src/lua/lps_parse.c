/*
 * lps_parse: Lua marshalling for ps_parse (no parsing logic here).
 *
 *   series, meta = core.parse(body, content_type [, { strict = bool }])
 *   fmt = core.parse_format_of(content_type)   -- "text" | "openmetrics"
 *
 * Expected failures (malformed body, unsupported content type) return
 * nil, message; misuse (wrong argument types, unknown options) raises.
 *
 * Leak safety: Lua table creation may raise (out of memory) at any point,
 * and a raise longjmps past C frames. So the parser lives in a userdata box
 * whose __gc frees it: whatever happens, the collector reclaims it, and the
 * normal path frees it early through the same idempotent function.
 */
#include "lps.h"

#include "ps_parse.h"

#include <string.h>

#define PARSER_MT "promscrape.Parser"

struct lps_parser_box {
    struct ps_parser *p; /* NULL once freed */
};

/* __gc, and the early release on the normal path; idempotent. */
static int lps_parser_gc(lua_State *L)
{
    struct lps_parser_box *b = luaL_checkudata(L, 1, PARSER_MT);

    if (b->p != NULL) {
        ps_parse_free(b->p);
        b->p = NULL;
    }
    return 0;
}

static void push_str(lua_State *L, struct ps_str s)
{
    lua_pushlstring(L, s.p ? s.p : "", s.n);
}

/* Milliseconds: an integer where the VM has them, else a double. */
static void push_ts(lua_State *L, int64_t ms)
{
#if LUA_VERSION_NUM >= 503
    lua_pushinteger(L, (lua_Integer)ms);
#else
    lua_pushnumber(L, (lua_Number)ms);
#endif
}

/* Pushes a table of name -> value for labels l[0..n). Series labels (t is
 * the latest TYPE) get le/quantile normalized as Prometheus ingests them;
 * exemplar labels (t = PS_MTYPE_UNKNOWN) are left as exposed. */
static void push_labels(lua_State *L, const struct ps_label_view *l, size_t n,
                        enum ps_mtype t)
{
    char num[PS_FLOAT_FMT_MAX];
    struct ps_str v;
    size_t i;

    lua_createtable(L, 0, (int)(n > 64 ? 64 : n)); /* labels */
    for (i = 0; i < n; i++) {
        push_str(L, l[i].name); /* labels name */
        if (!ps_parse_normalize_label(t, &l[i], num, &v))
            v = l[i].value;
        push_str(L, v);         /* labels name value */
        lua_rawset(L, -3);      /* labels */
    }
}

/* Pushes the series table for the current entry. */
static void push_series(lua_State *L, const struct ps_series_view *v)
{
    lua_createtable(L, 0, 5);              /* s */
    push_str(L, v->name);                  /* s name */
    lua_setfield(L, -2, "name");           /* s */
    push_labels(L, v->labels, v->nlabels, v->mtype); /* s labels */
    lua_setfield(L, -2, "labels");         /* s */
    lua_pushnumber(L, v->value);           /* s value */
    lua_setfield(L, -2, "value");          /* s */
    if (v->has_ts) {
        push_ts(L, v->ts_ms);             /* s ts */
        lua_setfield(L, -2, "timestamp"); /* s */
    }
    if (v->has_exemplar) {
        const struct ps_exemplar_view *x = &v->exemplar;
        lua_createtable(L, 0, 3);              /* s x */
        push_labels(L, x->labels, x->nlabels, PS_MTYPE_UNKNOWN); /* s x labels */
        lua_setfield(L, -2, "labels");         /* s x */
        lua_pushnumber(L, x->value);           /* s x value */
        lua_setfield(L, -2, "value");          /* s x */
        if (x->has_ts) {
            push_ts(L, x->ts_ms);             /* s x ts */
            lua_setfield(L, -2, "timestamp"); /* s x */
        }
        lua_setfield(L, -2, "exemplar"); /* s */
    }
}

/* Sets meta[family][key] for the current metadata entry; meta at `mi`. */
static void set_meta(lua_State *L, int mi, const struct ps_meta_view *m,
                     enum ps_entry kind)
{
    push_str(L, m->family); /* fam */
    lua_pushvalue(L, -1);   /* fam fam */
    lua_rawget(L, mi);      /* fam t|nil */
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);            /* fam */
        lua_createtable(L, 0, 3); /* fam t */
        lua_pushvalue(L, -2);     /* fam t fam */
        lua_pushvalue(L, -2);     /* fam t fam t */
        lua_rawset(L, mi);        /* fam t */
    }
    switch (kind) {
    case PS_ENTRY_TYPE:
        lua_pushstring(L, ps_mtype_name(m->type)); /* fam t type */
        lua_setfield(L, -2, "type");               /* fam t */
        break;
    case PS_ENTRY_HELP:
        push_str(L, m->text);        /* fam t help */
        lua_setfield(L, -2, "help"); /* fam t */
        break;
    default:
        push_str(L, m->text);        /* fam t unit */
        lua_setfield(L, -2, "unit"); /* fam t */
        break;
    }
    lua_pop(L, 2); /* */
}

/* Reads the options table at index 3 (absent or nil: defaults). Unknown
 * keys and wrong types raise. */
static int read_strict(lua_State *L)
{
    int strict = 0;

    if (lua_isnoneornil(L, 3))
        return 0;
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L); /* k */
    while (lua_next(L, 3) != 0) { /* k v */
        if (lua_type(L, -2) == LUA_TSTRING &&
            strcmp(lua_tostring(L, -2), "strict") == 0) {
            if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TBOOLEAN)
                luaL_argerror(L, 3, "opts.strict must be a boolean");
            strict = lua_toboolean(L, -1);
        } else {
            lua_pushfstring(L, "unknown option '%s'",
                            lua_type(L, -2) == LUA_TSTRING
                                ? lua_tostring(L, -2)
                                : luaL_typename(L, -2));
            luaL_argerror(L, 3, lua_tostring(L, -1));
        }
        lua_pop(L, 1); /* k */
    }
    return strict;
}

/* core.parse(body, content_type [, opts]) -> series, meta | nil, err */
static int lps_parse(lua_State *L)
{
    size_t blen, clen = 0;
    const char *body;
    struct ps_parse_opts o;
    const char *ct;
    struct lps_parser_box *b;
    struct ps_err e;
    enum ps_entry kind;
    lua_Integer n = 0;
    int rc, si, mi;

    /* A number body would be coerced by luaL_checklstring: refuse it. */
    luaL_checktype(L, 1, LUA_TSTRING);
    body = lua_tolstring(L, 1, &blen);
    ct = luaL_optlstring(L, 2, "", &clen);
    memset(&o, 0, sizeof(o));
    o.strict = read_strict(L);
    lua_settop(L, 3);
    ps_err_init(&e);
    if (ps_parse_format_of(ct, clen, &o.format, &e) != PS_OK) {
        luaL_pushfail(L);
        lua_pushstring(L, e.msg);
        return 2;
    }
    /* Box first, metatable next, parser last: __gc only ever sees a box
     * that is NULL or owns a parser. */
    b = lua_newuserdatauv(L, sizeof(*b), 0); /* box */
    b->p = NULL;
    if (luaL_newmetatable(L, PARSER_MT)) { /* box mt */
        lua_pushcfunction(L, lps_parser_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2); /* box */
    rc = ps_parse_new(&b->p, body, blen, &o, &e);
    if (rc == PS_ENOMEM)
        return luaL_error(L, "not enough memory");
    if (rc != PS_OK)
        return luaL_error(L, "%s", e.msg);
    lua_newtable(L); /* box series */
    si = lua_gettop(L);
    lua_newtable(L); /* box series meta */
    mi = lua_gettop(L);
    for (;;) {
        rc = ps_parse_next(b->p, &kind, &e);
        if (rc != PS_OK || kind == PS_ENTRY_EOF)
            break;
        switch (kind) {
        case PS_ENTRY_SERIES:
            push_series(L, ps_parse_series(b->p)); /* box series meta s */
            lua_rawseti(L, si, (int)++n);          /* box series meta */
            break;
        case PS_ENTRY_HELP:
        case PS_ENTRY_TYPE:
        case PS_ENTRY_UNIT:
            set_meta(L, mi, ps_parse_meta(b->p), kind);
            break;
        default:
            break;
        }
    }
    lua_pushcfunction(L, lps_parser_gc); /* box series meta gc */
    lua_pushvalue(L, 4);                 /* box series meta gc box */
    lua_call(L, 1, 0);                   /* box series meta */
    if (rc == PS_ENOMEM)
        return luaL_error(L, "not enough memory");
    if (rc != PS_OK) {
        luaL_pushfail(L);         /* ... nil */
        lua_pushstring(L, e.msg); /* ... nil err */
        return 2;
    }
    return 2; /* series meta */
}

/* core.parse_format_of(content_type) -> "text"|"openmetrics" | nil, err */
static int lps_parse_format_of(lua_State *L)
{
    size_t n = 0;
    const char *ct = luaL_optlstring(L, 1, "", &n);
    enum ps_format f;
    struct ps_err e;

    ps_err_init(&e);
    if (ps_parse_format_of(ct, n, &f, &e) != PS_OK) {
        luaL_pushfail(L);
        lua_pushstring(L, e.msg);
        return 2;
    }
    lua_pushstring(L, f == PS_FORMAT_OPENMETRICS ? "openmetrics" : "text");
    return 1;
}

void lps_parse_register(lua_State *L)
{
    lua_pushcfunction(L, lps_parse);          /* core f */
    lua_setfield(L, -2, "parse");             /* core */
    lua_pushcfunction(L, lps_parse_format_of); /* core f */
    lua_setfield(L, -2, "parse_format_of");   /* core */
}
