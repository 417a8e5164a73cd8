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

#endif
