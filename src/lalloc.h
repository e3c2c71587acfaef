/* lalloc.h: the nimrank host's Lua allocator (lalloc.c): per-size free lists for Lua's small
 * objects, libc for the rest. */
#ifndef NIM_LALLOC_H
#define NIM_LALLOC_H

#include <stddef.h>

typedef struct nim_pool nim_pool;

nim_pool *nim_pool_new(void); /* NULL when out of memory */
void nim_pool_free(nim_pool *p); /* after lua_close of the state that used it */
/* A lua_Alloc: lua_newstate(nim_pool_alloc, pool). */
void *nim_pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

#endif
