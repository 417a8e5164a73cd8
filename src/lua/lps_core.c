/*
 * lps_core: luaopen_promscrape_core, the C half of `require "promscrape"`.
 * It only assembles the table; each lps_<module>.c registers its own
 * functions, so this file changes only when a module is added.
 */
#include "lps.h"

#include "ps_core.h"

/* Exported symbol: the one entry point Lua's loader looks up. */
int luaopen_promscrape_core(lua_State *L);

int luaopen_promscrape_core(lua_State *L)
{
    lua_newtable(L);                       /* core */
    lua_pushliteral(L, PS_VERSION);        /* core version */
    lua_setfield(L, -2, "_VERSION");       /* core */
    lps_parse_register(L);
    lps_relabel_register(L);
    lps_store_register(L);
    lps_manager_register(L);
    lps_remote_write_register(L);
    lps_bg_register(L); /* wraps the methods registered above */
    return 1;
}
