/*
 * lps: the Lua binding layer. Each lps_<module>.c marshals one core module
 * and registers its functions into the promscrape.core table at the top of
 * the stack. Only these files include Lua headers; they hold no logic.
 */
#ifndef LPS_H
#define LPS_H

#include "lps_compat.h"

void lps_parse_register(lua_State *L);   /* parse, parse_format_of */
void lps_relabel_register(lua_State *L); /* relabel_rules, ... */
void lps_store_register(lua_State *L);   /* memory */
void lps_manager_register(lua_State *L); /* manager_new, manager_methods */
void lps_remote_write_register(lua_State *L); /* remote_write_new, ... */
void lps_bg_register(lua_State *L); /* start/poll, fork checks: last */

/* lps_manager.c accessors for lps_bg.c (see the end of lps_manager.c). */
struct ps_manager;
struct ps_manager *lps_manager_core(lua_State *L, int idx, int *busy);
void *lps_pool_owner(lua_State *L, int idx);
size_t lps_manager_drain_some(lua_State *L, int idx, size_t max_samples,
                              size_t *left);
void lps_manager_drain_rest(lua_State *L, int idx);
size_t lps_manager_resolve_deferred(lua_State *L, int idx, size_t max,
                                    size_t *left);

#endif
