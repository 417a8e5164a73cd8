/*
 * lps_bg: background mode for Managers (issue 7), and the fork checks.
 *
 * Manager:start() -> true | nil, msg, code
 *   Runs the manager's engine on a background pthread (src/ps_bg.h):
 *   fetch, parse, relabel and C appenders (a MemoryStore) run there.
 * Manager:poll([{ max_samples = n }]) -> samples, pending | nil, msg, code
 *   On the Lua thread: runs deferred metric function rules (up to n
 *   series), hands queued batches to a Lua appender (whole
 *   batches, until n samples went; default 10000), then runs http_get
 *   callbacks and listen handlers. nil, msg, code if the thread ended on
 *   an engine error. Works in step mode too (it then only drains).
 * Manager:background() -> { running, alive, steps, lock_waits,
 *   max_lock_wait (s), error }
 * Manager:stop() stops and joins the thread (in background mode).
 *
 * How: this file wraps, once at registration, every C method of Manager,
 * ScrapePool and MemoryStore (and core.manager_new, core.memory) in a C
 * closure. The wrapper
 *   - checks the pid the object was created in: objects refuse use from
 *     another process (nginx forks workers after init_by_lua); their __gc
 *     there is a no-op (the memory is the parent's copy);
 *   - while the thread runs, takes the engine lock around the original
 *     method (ps_bg_lock wakes the engine, so the wait is one step's
 *     callbacks at most), re-entrantly: callbacks that poll runs with the
 *     lock held may call methods again;
 *   - refuses step/run while the thread runs, and defers stop/close made
 *     from inside poll or a locked call until it returns (joining the
 *     thread while holding the lock would deadlock).
 * No Lua is ever called from the background thread. Target function
 * rules run in apply_config/sync, on the Lua thread. Metric function
 * rules are deferred: on a scrape-cache miss that reaches one, the engine
 * thread parks the series and holds its samples (ps_loop.h,
 * ps_loop_resolve_deferred); m:poll runs the rules for them on the Lua
 * thread with the engine locked (bounded by max_samples series per call),
 * and the engine's next step installs the results (cache entry + held
 * samples in their own transaction, or cached as dropped).
 *
 * The per-manager state is a malloc'd struct found through a registry
 * table keyed by the Manager's box pointer (which is also what a
 * ScrapePool points to); it is freed when the manager is closed.
 *
 * Test hook: core._test_fake_pid(pid | nil) makes the checks see that pid
 * instead of getpid(): specs fake a fork without forking.
 */
#include "lps.h"
#include "lps_store.h"

#include "../ps_bg.h"
#include "../ps_manager.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MANAGER_MT "promscrape.Manager"
#define POOL_MT "promscrape.ScrapePool"
#define BG_KEY "promscrape.bg"     /* registry: box (light) -> state (light) */
#define PIDS_KEY "promscrape.pids" /* registry, weak keys: store -> pid */

#define DEFAULT_MAX_SAMPLES 10000

struct bg_state {
    long pid;          /* the process that created the manager */
    struct ps_bg *bg;  /* NULL until the first start */
    int depth;         /* > 0 while this thread holds the engine lock */
    int in_poll;       /* inside m:poll (callbacks may run) */
    int stop_pending;  /* m:stop() from inside poll or a locked call */
    int close_pending; /* m:close() likewise */
    int nest;          /* > 0 inside any wrapped call (step/run callbacks
                        * may close the manager: st must outlive them) */
};

enum { K_PLAIN, K_DRIVE, K_STOP, K_CLOSE, K_GC, K_APPLY };

static long fake_pid;            /* core._test_fake_pid */
static lua_CFunction orig_close; /* lps_manager.c's close (= __gc) */

static long cur_pid(void)
{
    return fake_pid != 0 ? fake_pid : (long)getpid();
}

static void check_pid(lua_State *L, long pid, const char *what)
{
    long now = cur_pid();

    if (pid != now)
        luaL_error(L,
                   "%s was created in process %d and cannot be used in "
                   "process %d (after fork): create it in the process "
                   "that uses it (nginx: init_worker_by_lua, not "
                   "init_by_lua)",
                   what, (int)pid, (int)now);
}

static struct bg_state *state_of_box(lua_State *L, void *box)
{
    struct bg_state *st;

    if (box == NULL)
        return NULL;
    lua_getfield(L, LUA_REGISTRYINDEX, BG_KEY); /* t */
    lua_pushlightuserdata(L, box);
    lua_rawget(L, -2); /* t st|nil */
    st = lua_touserdata(L, -1);
    lua_pop(L, 2);
    return st;
}

static void set_state(lua_State *L, void *box, struct bg_state *st)
{
    lua_getfield(L, LUA_REGISTRYINDEX, BG_KEY); /* t */
    lua_pushlightuserdata(L, box);
    if (st != NULL)
        lua_pushlightuserdata(L, st);
    else
        lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* The state of the Manager at idx, or NULL if idx is not a Manager or it
 * has none (closed). */
static struct bg_state *mgr_state(lua_State *L, int idx)
{
    if (luaL_testudata(L, idx, MANAGER_MT) == NULL)
        return NULL;
    return state_of_box(L, lua_touserdata(L, idx));
}

/* Stops the thread, forgets the state, then runs the original close on
 * the Manager at idx. Never raises. */
static void mgr_close(lua_State *L, int idx, struct bg_state *st)
{
    ps_bg_free(st->bg); /* joins the thread before the engine goes */
    set_state(L, lua_touserdata(L, idx), NULL);
    free(st);
    lua_pushcfunction(L, orig_close);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 0);
}

/* After poll or a locked call returned: runs what was deferred. Returns 1
 * if the manager was closed (st is freed). */
static int finish_region(lua_State *L, struct bg_state *st, int idx)
{
    if (st->depth > 0 || st->in_poll || st->nest > 0)
        return 0;
    if (st->close_pending) {
        mgr_close(L, idx, st);
        return 1;
    }
    if (st->stop_pending) {
        st->stop_pending = 0;
        ps_bg_stop(st->bg);
    }
    return 0;
}

/* Calls upvalue 1 with this call's arguments, in protected mode, holding
 * the engine lock if `lock`. Leaves [self copy] results... on the stack;
 * returns the lua_pcall status; *base is the self copy's index. */
static int call_orig(lua_State *L, struct bg_state *st, int lock, int *base)
{
    int n = lua_gettop(L), i, status;

    lua_pushvalue(L, 1); /* args self */
    *base = n + 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    for (i = 1; i <= n; i++)
        lua_pushvalue(L, i); /* args self f args */
    if (lock) {
        ps_bg_lock(st->bg);
        st->depth++;
    }
    if (st != NULL)
        st->nest++;
    status = lua_pcall(L, n, LUA_MULTRET, 0); /* args self results|err */
    if (st != NULL)
        st->nest--;
    if (lock) {
        st->depth--;
        ps_bg_unlock(st->bg);
    }
    return status;
}

static int push_fail(lua_State *L, const char *msg, int rc)
{
    luaL_pushfail(L);
    lua_pushstring(L, msg);
    lua_pushstring(L, ps_errname(rc));
    return 3;
}

/* The wrapper of a Manager method. Upvalues: original, kind. */
static int mgr_wrap(lua_State *L)
{
    int kind = (int)lua_tointeger(L, lua_upvalueindex(2));
    struct bg_state *st = mgr_state(L, 1);
    int running, base, status, nres;

    if (st == NULL) { /* not a Manager (the original raises), or closed */
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_insert(L, 1);
        lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
        return lua_gettop(L);
    }
    if (kind == K_GC && st->pid != cur_pid())
        return 0; /* another process's copy: never touch it here */
    check_pid(L, st->pid, "promscrape.Manager");
    running = ps_bg_running(st->bg);
    switch (kind) {
    case K_DRIVE:
        if (st->in_poll)
            return luaL_error(L, "step/run: not allowed from poll "
                                 "callbacks");
        if (running)
            return luaL_error(L, "the manager runs in the background "
                                 "(m:start()): call m:poll(), not step/run "
                                 "(or m:stop() first)");
        break;
    case K_STOP:
        if (running) {
            if (st->depth > 0 || st->in_poll)
                st->stop_pending = 1;
            else
                ps_bg_stop(st->bg);
            return 0;
        }
        break;
    case K_CLOSE:
    case K_GC:
        if (st->depth > 0 || st->in_poll) {
            st->close_pending = 1;
            return 0;
        }
        if (st->nest > 0) {
            /* Closed from a callback of step/run (no thread running): the
             * original close handles that itself; our state is freed when
             * the outer call returns (finish_region), not under it. */
            st->close_pending = 1;
            lua_pushcfunction(L, orig_close);
            lua_pushvalue(L, 1);
            lua_call(L, 1, 0);
            return 0;
        }
        mgr_close(L, 1, st);
        return 0;
    default:
        break;
    }
    status = call_orig(L, st, running && st->depth == 0, &base);
    nres = lua_gettop(L) - base;
    finish_region(L, st, base); /* st may be freed from here on */
    if (status != 0)
        return lua_error(L);
    return nres;
}

/* The wrapper of a ScrapePool method. Upvalue: original. */
static int pool_wrap(lua_State *L)
{
    struct bg_state *st = NULL;
    int base, status, lock;

    if (luaL_testudata(L, 1, POOL_MT) != NULL)
        st = state_of_box(L, lps_pool_owner(L, 1));
    if (st != NULL)
        check_pid(L, st->pid, "promscrape.ScrapePool");
    lock = st != NULL && ps_bg_running(st->bg) && st->depth == 0;
    status = call_orig(L, st, lock, &base);
    if (status != 0)
        return lua_error(L);
    return lua_gettop(L) - base;
}

/* The pid a MemoryStore was created in (0: unknown). */
static long store_pid(lua_State *L, int idx)
{
    long pid;

    lua_getfield(L, LUA_REGISTRYINDEX, PIDS_KEY);
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    pid = (long)lua_tonumber(L, -1);
    lua_pop(L, 2);
    return pid;
}

/* The wrapper of a MemoryStore method (the store has its own mutex: no
 * engine lock needed). Upvalues: original, is_gc. */
static int store_wrap(lua_State *L)
{
    long pid = lua_type(L, 1) == LUA_TUSERDATA ? store_pid(L, 1) : 0;

    if (pid != 0 && pid != cur_pid()) {
        if (lua_tointeger(L, lua_upvalueindex(2)) != 0)
            return 0; /* __gc in a forked child: leave the parent's copy */
        check_pid(L, pid, "promscrape.MemoryStore");
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* core.manager_new wrapper: the new Manager gets its state (its pid). */
static int new_manager_wrap(lua_State *L)
{
    struct bg_state *st;

    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET); /* results */
    if (lua_gettop(L) >= 1 && luaL_testudata(L, 1, MANAGER_MT) != NULL) {
        st = calloc(1, sizeof(*st));
        if (st == NULL) /* the Manager is collected, closed by orig */
            return luaL_error(L, "not enough memory");
        st->pid = cur_pid();
        set_state(L, lua_touserdata(L, 1), st);
    }
    return lua_gettop(L);
}

/* core.memory wrapper: remembers the new store's pid. */
static int new_store_wrap(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    if (lua_gettop(L) >= 1 && lua_type(L, 1) == LUA_TUSERDATA) {
        lua_getfield(L, LUA_REGISTRYINDEX, PIDS_KEY); /* ... pids */
        lua_pushvalue(L, 1);
        lua_pushnumber(L, (lua_Number)cur_pid());
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    return lua_gettop(L);
}

/* ---- the new methods ------------------------------------------------------
 */

/* The open Manager at 1 and its state; raises when closed, busy (inside
 * step/run/apply/sync) if !allow_busy, or from another process. */
static struct bg_state *check_bg(lua_State *L, struct ps_manager **mp)
{
    int busy = 0;
    struct ps_manager *m = lps_manager_core(L, 1, &busy); /* raises */
    struct bg_state *st = state_of_box(L, lua_touserdata(L, 1));

    if (m == NULL || st == NULL)
        luaL_error(L, "attempt to use a closed manager");
    check_pid(L, st->pid, "promscrape.Manager");
    if (busy)
        luaL_error(L, "manager is running: not allowed from its own "
                      "callbacks");
    if (mp != NULL)
        *mp = m;
    return st;
}

/* m:start() -> true | nil, msg, code */
static int lps_bg_start(lua_State *L)
{
    struct ps_manager *m;
    struct bg_state *st = check_bg(L, &m);
    struct ps_err e;
    int rc;

    if (st->depth > 0 || st->in_poll)
        return luaL_error(L, "m:start(): not allowed from poll callbacks");
    if (ps_bg_running(st->bg))
        return push_fail(L, "start: already running in the background",
                         PS_ESTATE);
    ps_err_init(&e);
    if (st->bg == NULL &&
        (rc = ps_bg_new(&st->bg, ps_manager_engine(m), &e)) != PS_OK)
        return push_fail(L, e.msg, rc);
    rc = ps_bg_start(st->bg, &e);
    if (rc != PS_OK)
        return push_fail(L, e.msg, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* In protected mode: the body of poll. Arguments: state (light), max. */
static int poll_body(lua_State *L)
{
    struct bg_state *st = lua_touserdata(L, 2);
    size_t max = (size_t)lua_tonumber(L, 3), left = 0, n;

    size_t dleft = 0;

    /* Deferred metric function rules first (engine locked: the loops'
     * pending series, their config and scratch are the engine's), so
     * the results are installed by the engine's next step. */
    if (ps_bg_running(st->bg) && st->depth == 0) {
        ps_bg_lock(st->bg);
        st->depth++;
        lps_manager_resolve_deferred(L, 1, max, &dleft); /* never raises */
        st->depth--;
        ps_bg_unlock(st->bg);
    } else {
        lps_manager_resolve_deferred(L, 1, max, &dleft);
    }
    n = lps_manager_drain_some(L, 1, max, &left); /* no lock: the queue
                                                   * has its own mutex */
    if (ps_bg_running(st->bg) && st->depth == 0) {
        ps_bg_lock(st->bg);
        st->depth++;
        lps_manager_drain_rest(L, 1); /* never raises */
        st->depth--;
        ps_bg_unlock(st->bg);
    } else {
        lps_manager_drain_rest(L, 1);
    }
    lua_pushnumber(L, (lua_Number)n);
    lua_pushnumber(L, (lua_Number)left);
    return 2;
}

/* m:poll([{ max_samples = n }]) -> samples, pending | nil, msg, code */
static int lps_bg_poll(lua_State *L)
{
    struct bg_state *st = check_bg(L, NULL);
    lua_Number max = DEFAULT_MAX_SAMPLES;
    struct ps_bg_status bs;
    struct ps_err e;
    int status;

    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "max_samples");
        if (!lua_isnil(L, -1)) {
            max = luaL_checknumber(L, -1);
            if (!(max >= 1))
                return luaL_argerror(L, 2, "max_samples must be >= 1");
        }
        lua_pop(L, 1);
    }
    if (st->in_poll || st->depth > 0)
        return luaL_error(L, "m:poll(): not allowed from its own callbacks");
    lua_settop(L, 1);
    lua_pushcfunction(L, poll_body); /* m f */
    lua_pushvalue(L, 1);
    lua_pushlightuserdata(L, st);
    lua_pushnumber(L, max); /* m f m st max */
    st->in_poll = 1;
    status = lua_pcall(L, 3, 2, 0); /* m n left | m err */
    st->in_poll = 0;
    if (finish_region(L, st, 1)) { /* closed from a callback */
        if (status != 0)
            return lua_error(L);
        return 2;
    }
    if (status != 0)
        return lua_error(L);
    if (st->bg != NULL) {
        ps_err_init(&e);
        ps_bg_status(st->bg, &bs, &e);
        if (bs.running && !bs.alive && bs.rc != PS_OK)
            return push_fail(L, e.msg[0] ? e.msg : ps_strerror(bs.rc), bs.rc);
    }
    return 2;
}

/* m:background() -> { running, alive, steps, lock_waits, max_lock_wait,
 * error } */
static int lps_bg_info(lua_State *L)
{
    struct bg_state *st = check_bg(L, NULL);
    struct ps_bg_status bs;
    struct ps_err e;

    memset(&bs, 0, sizeof(bs));
    ps_err_init(&e);
    if (st->bg != NULL)
        ps_bg_status(st->bg, &bs, &e);
    lua_createtable(L, 0, 6);
    lua_pushboolean(L, bs.running);
    lua_setfield(L, -2, "running");
    lua_pushboolean(L, bs.alive);
    lua_setfield(L, -2, "alive");
    lua_pushnumber(L, (lua_Number)bs.steps);
    lua_setfield(L, -2, "steps");
    lua_pushnumber(L, (lua_Number)bs.lock_waits);
    lua_setfield(L, -2, "lock_waits");
    lua_pushnumber(L, (lua_Number)bs.max_wait_ns / 1e9);
    lua_setfield(L, -2, "max_lock_wait");
    if (bs.rc != PS_OK) {
        lua_pushstring(L, e.msg[0] ? e.msg : ps_strerror(bs.rc));
        lua_setfield(L, -2, "error");
    }
    return 1;
}

/* core._test_fake_pid(pid | nil): test hook, see the header. */
static int lps_bg_fake_pid(lua_State *L)
{
    fake_pid = lua_isnoneornil(L, 1) ? 0 : (long)luaL_checknumber(L, 1);
    return 0;
}

/* ---- registration ----------------------------------------------------------
 */

static int kind_of(const char *name)
{
    if (strcmp(name, "step") == 0 || strcmp(name, "run") == 0)
        return K_DRIVE;
    if (strcmp(name, "stop") == 0)
        return K_STOP;
    if (strcmp(name, "close") == 0 || strcmp(name, "__close") == 0)
        return K_CLOSE;
    if (strcmp(name, "__gc") == 0)
        return K_GC;
    if (strcmp(name, "_apply") == 0)
        return K_APPLY;
    return K_PLAIN;
}

/* Replaces every C function of the table at t by wrapper(original, extra)
 * where extra is the kind (managers) or 0. */
static void wrap_table(lua_State *L, int t, lua_CFunction wrapper,
                       int with_kind)
{
    lua_pushnil(L);
    while (lua_next(L, t) != 0) { /* k v */
        if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
            const char *k = lua_tostring(L, -2);
            lua_pushvalue(L, -2); /* k v k */
            lua_pushvalue(L, -2); /* k v k v */
            lua_pushinteger(L, with_kind ? kind_of(k) : 0);
            lua_pushcclosure(L, wrapper, 2); /* k v k w */
            lua_rawset(L, t);                /* existing field: allowed */
        }
        lua_pop(L, 1); /* k */
    }
}

/* Wraps field k of the table at t (a C function) with wrapper(orig, x). */
static void wrap_field(lua_State *L, int t, const char *k,
                       lua_CFunction wrapper, int x)
{
    lua_getfield(L, t, k); /* orig */
    if (!lua_iscfunction(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    lua_pushinteger(L, x);
    lua_pushcclosure(L, wrapper, 2);
    lua_setfield(L, t, k);
}

void lps_bg_register(lua_State *L)
{
    int core = lua_gettop(L), t;

    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, BG_KEY);
    lua_newtable(L);          /* pids */
    lua_createtable(L, 0, 1); /* pids mt */
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2); /* pids */
    lua_setfield(L, LUA_REGISTRYINDEX, PIDS_KEY);

    /* Manager: methods, then the new ones (not wrapped: they lock
     * themselves), then __gc/__close. */
    lua_getfield(L, core, "manager_methods"); /* methods */
    t = lua_gettop(L);
    wrap_table(L, t, mgr_wrap, 1);
    lua_pushcfunction(L, lps_bg_start);
    lua_setfield(L, t, "start");
    lua_pushcfunction(L, lps_bg_poll);
    lua_setfield(L, t, "poll");
    lua_pushcfunction(L, lps_bg_info);
    lua_setfield(L, t, "background");
    lua_pop(L, 1);
    luaL_getmetatable(L, MANAGER_MT); /* mt */
    t = lua_gettop(L);
    lua_getfield(L, t, "__gc");
    orig_close = lua_tocfunction(L, -1);
    lua_pop(L, 1);
    wrap_field(L, t, "__gc", mgr_wrap, K_GC);
    wrap_field(L, t, "__close", mgr_wrap, K_CLOSE);
    lua_pop(L, 1);

    luaL_getmetatable(L, POOL_MT);  /* mt */
    lua_getfield(L, -1, "__index"); /* mt methods */
    if (lua_istable(L, -1))
        wrap_table(L, lua_gettop(L), pool_wrap, 0);
    lua_pop(L, 2);

    luaL_getmetatable(L, LPS_STORE_MT); /* mt */
    t = lua_gettop(L);
    lua_getfield(L, t, "__index"); /* mt methods */
    if (lua_istable(L, -1))
        wrap_table(L, lua_gettop(L), store_wrap, 0);
    lua_pop(L, 1);
    wrap_field(L, t, "__gc", store_wrap, 1);
    lua_pop(L, 1);

    lua_getfield(L, core, "manager_new");
    lua_pushcclosure(L, new_manager_wrap, 1);
    lua_setfield(L, core, "manager_new");
    lua_getfield(L, core, "memory");
    lua_pushcclosure(L, new_store_wrap, 1);
    lua_setfield(L, core, "memory");
    lua_pushcfunction(L, lps_bg_fake_pid);
    lua_setfield(L, core, "_test_fake_pid");
}
