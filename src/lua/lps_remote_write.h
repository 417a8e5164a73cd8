/*
 * lps_remote_write: C appenders as Lua values (RemoteWrite, Fanout) and
 * how a Manager adopts one. See docs/remote_write.md, "Lua API".
 *
 * A RemoteWrite is created unbound: it holds its validated options and no
 * transfer machinery. promscrape.manager{ appender = X } (X a MemoryStore,
 * a RemoteWrite or a Fanout of those) calls lps_capp_attach(), which
 *   - makes the manager's engine here (a counted ps_engine shared by the
 *     manager and every remote write bound to it, so a remote write can
 *     still be flushed after the manager is closed),
 *   - binds X to it (ps_remote_write_new on that engine, recursively),
 *   - wraps X in a "switch": the appender the manager really drives. The
 *     switch fans out to X plus the remote_write entries of the applied
 *     prometheus.yml (core.remote_write_apply) and can change that set
 *     between scrapes without invalidating the loops' cached refs (it
 *     tags the refs it hands out with an epoch).
 * A remote write binds to one engine for its life: attaching it to a
 * second manager is an error.
 */
#ifndef LPS_REMOTE_WRITE_H
#define LPS_REMOTE_WRITE_H

#include "lps_compat.h"

#include "../ps_appender.h"
#include "../ps_engine.h"

struct lps_capp;

/* 1 if the value at idx is an open MemoryStore, RemoteWrite or Fanout. */
int lps_capp_test(lua_State *L, int idx);

/*
 * Builds the switch around the appender at idx, on a new engine, and binds
 * everything to it. mgr_idx is the manager's userdata: m.store and the
 * switch are registered for it. On PS_OK, *out holds the manager's counted
 * ref (release with lps_capp_detach), *eng the engine (borrowed by the
 * manager) and *app the appender to drive. Raises on misuse only.
 */
int lps_capp_attach(lua_State *L, int idx, int mgr_idx, struct lps_capp **out,
                    struct ps_engine **eng, struct ps_appender **app,
                    struct ps_err *e);

/* Releases the manager's ref, after ps_manager_free(). NULL-safe. */
void lps_capp_detach(lua_State *L, struct lps_capp *c);

#endif
