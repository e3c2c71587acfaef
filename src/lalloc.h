/* lalloc.h: the nimrank host's Lua allocator (lalloc.c): per-size free lists for Lua's small
 * objects, libc for the rest. */
#ifndef NIM_LALLOC_H
#define NIM_LALLOC_H

#include <stddef.h>

typedef struct nim_pool nim_pool;

nim_pool *nim_pool_new(void);    /* NULL when out of memory */
void nim_pool_free(nim_pool *p); /* after lua_close of the state that used it */
/* A lua_Alloc: lua_newstate(nim_pool_alloc, pool). */
void *nim_pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* Returns to libc every chunk that holds no live object (their free blocks leave the lists). */
void nim_pool_trim(nim_pool *p);
size_t nim_pool_bytes(const nim_pool *p); /* what its chunks take */

typedef struct lua_State lua_State;
/* At an idle moment: a full collection, then what is free goes back to the system (the pool's
 * empty chunks when L's allocator is the pool, then malloc_trim). */
void nim_lua_trim(lua_State *L);

#endif
