/*
 * lps_store: the memory store shared by a MemoryStore userdata and the
 * Managers that append to it.
 *
 * The store must outlive every manager whose loops append to it, whatever
 * order the garbage collector finalizes them in, so neither userdata owns
 * it: both hold a counted reference to a small heap object (luv's
 * "userdata is a box" pattern), and the last release frees the store.
 */
#ifndef LPS_STORE_H
#define LPS_STORE_H

#include "lps_compat.h"

#include "../ps_appender_mem.h"

#define LPS_STORE_MT "promscrape.MemoryStore"

struct lps_sink {
    int refs;                   /* holders: the store box + managers */
    struct ps_appender_mem *mem; /* owned; freed with the last ref */
};

/* The sink of the open MemoryStore at index idx: raises if idx is not a
 * MemoryStore or it is closed. The caller takes a ref with lps_sink_ref. */
struct lps_sink *lps_store_check(lua_State *L, int idx);
/* Pushes a new MemoryStore userdata (raises on Lua memory errors; returns
 * nil, msg, code if the store cannot be created). Returns Lua results. */
int lps_store_new(lua_State *L);

void lps_sink_ref(struct lps_sink *s);
void lps_sink_unref(struct lps_sink *s); /* frees the store at zero */

#endif
