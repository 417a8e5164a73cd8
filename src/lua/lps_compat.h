/*
 * lps_compat: one C source for Lua 5.4 and LuaJIT/5.1 (OpenResty).
 * Write against the 5.4 API; this maps the few calls 5.1 lacks.
 * Include it before any other Lua header.
 */
#ifndef LPS_COMPAT_H
#define LPS_COMPAT_H

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#if LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen((L), (i))
#endif

#if LUA_VERSION_NUM < 504
#define luaL_pushfail(L) lua_pushnil(L)
#define lua_newuserdatauv(L, s, n) lua_newuserdata((L), (s))
#endif

#if LUA_VERSION_NUM < 502 && !defined(LUAJIT_VERSION)
/* LuaJIT 2.1 already has these two; plain 5.1 does not. */
void luaL_setfuncs(lua_State *L, const luaL_Reg *l, int nup);
void *luaL_testudata(lua_State *L, int ud, const char *tname);
#define LPS_NEED_COMPAT_IMPL 1
#endif

#if LUA_VERSION_NUM < 502
#define lps_newlib(L, l) (lua_newtable(L), luaL_setfuncs((L), (l), 0))
#else
#define lps_newlib(L, l) luaL_newlib((L), (l))
#endif

#endif
