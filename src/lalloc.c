/* lalloc.c: the nimrank host's Lua allocator. Lua's small objects (tables, their node arrays,
 * short strings, closures, call frames: nearly all under 512 bytes) come from per-size free
 * lists carved out of 64 KiB chunks; anything larger goes to libc. A result of n documents
 * makes ~4n such objects and the collector frees them again, so each allocation costs a
 * list pop instead of a trip through malloc's bins (callgrind, 100 documents: libc's
 * allocator was a fifth of a call).
 *
 * Written by hand: Lua's allocator interface (lua_newstate's lua_Alloc) is the intended place
 * for this, and it tells the allocator each block's size on free and resize, so the lists
 * need no headers; a general allocator from Debian (tcmalloc, jemalloc) would replace malloc
 * for the whole process (libcurl, the gateway's buffers) and measured slower on this load.
 *
 * A freed block waits in its size's list for the next object of that size; a block of one
 * size never serves another, so between trims each size keeps its own peak. nim_lua_trim
 * (at idle moments: the gateway calls it where it gives memory back) drops the free blocks
 * of every chunk that holds no live object and returns those chunks to libc. Chunks are
 * aligned to their size, so a block finds its chunk's count of live objects by masking its
 * address. Under AddressSanitizer free and not-yet-carved memory is poisoned, and only the
 * bytes asked for are unpoisoned. One state (and its coroutines) per pool: no locking. */
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>

#include "lalloc.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NIM_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define NIM_ASAN 1
#endif
#if NIM_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define GRAIN 16
#define SMALL_MAX 512 /* larger blocks go to libc */
#define NCLASSES (SMALL_MAX / GRAIN)
#define CHUNK_SIZE ((size_t)64 * 1024) /* also the chunks' alignment */

typedef struct chunk {
    struct chunk *next, *prev;
    size_t live; /* blocks handed out and not freed */
} chunk;

#define CHUNK_HEAD ((sizeof(chunk) + GRAIN - 1) / GRAIN * GRAIN)

struct nim_pool {
    void *free[NCLASSES]; /* each free block holds the next one's address */
    char *bump, *end;     /* the current chunk's part not yet carved */
    chunk *chunks;        /* every chunk, the current one first */
};

/* The class of a small size (1..SMALL_MAX): 0 for 1..16, 1 for 17..32, ... */
static size_t class_of(size_t n) { return (n - 1) / GRAIN; }
static size_t class_size(size_t k) { return (k + 1) * GRAIN; }
static chunk *chunk_of(const void *b) {
    return (chunk *)((uintptr_t)b & ~(uintptr_t)(CHUNK_SIZE - 1));
}

nim_pool *nim_pool_new(void) { return calloc(1, sizeof(nim_pool)); }

void nim_pool_free(nim_pool *p) {
    if (!p) return;
    for (chunk *c = p->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(p);
}

static int new_chunk(nim_pool *p) {
    chunk *c = aligned_alloc(CHUNK_SIZE, CHUNK_SIZE);
    if (!c) return -1;
    c->live = 0;
    c->prev = NULL;
    c->next = p->chunks;
    if (p->chunks) p->chunks->prev = c;
    p->chunks = c;
    p->bump = (char *)c + CHUNK_HEAD;
    p->end = (char *)c + CHUNK_SIZE;
    POISON(p->bump, (size_t)(p->end - p->bump));
    return 0;
}

/* A block of class k with n bytes usable; NULL when no chunk can be had. */
static void *small_alloc(nim_pool *p, size_t k, size_t n) {
    size_t size = class_size(k);
    void *b = p->free[k];
    if (b) {
        UNPOISON(b, sizeof(void *));
        p->free[k] = *(void **)b;
    } else {
        /* the rest of the current chunk is left unused */
        if ((size_t)(p->end - p->bump) < size && new_chunk(p) != 0) return NULL;
        b = p->bump;
        p->bump += size;
    }
    chunk_of(b)->live++;
    UNPOISON(b, n);
    POISON((char *)b + n, size - n);
    return b;
}

static void small_free(nim_pool *p, void *b, size_t k) {
    chunk_of(b)->live--;
    UNPOISON(b, sizeof(void *));
    *(void **)b = p->free[k];
    p->free[k] = b;
    POISON(b, class_size(k));
}

void *nim_pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    nim_pool *p = ud;
    if (!ptr) osize = 0; /* Lua passes the kind of object there, not a size */
    if (nsize == 0) {
        if (ptr) {
            if (osize <= SMALL_MAX)
                small_free(p, ptr, class_of(osize));
            else
                free(ptr);
        }
        return NULL;
    }
    if (osize > SMALL_MAX && nsize > SMALL_MAX) return realloc(ptr, nsize);
    if (ptr && osize <= SMALL_MAX && nsize <= SMALL_MAX && class_of(osize) == class_of(nsize)) {
        UNPOISON(ptr, nsize); /* same block: only what is asked for is open */
        POISON((char *)ptr + nsize, class_size(class_of(nsize)) - nsize);
        return ptr;
    }
    void *b = nsize <= SMALL_MAX ? small_alloc(p, class_of(nsize), nsize) : malloc(nsize);
    if (!b) {
        /* Out of memory. A small block shrinking to a smaller class stays where it is (its
         * tail unused); anything else fails, and Lua keeps the old block. */
        if (ptr && osize <= SMALL_MAX && nsize < osize) return ptr;
        return NULL;
    }
    if (ptr) {
        memcpy(b, ptr, osize < nsize ? osize : nsize);
        if (osize <= SMALL_MAX)
            small_free(p, ptr, class_of(osize));
        else
            free(ptr);
    }
    return b;
}

void nim_pool_trim(nim_pool *p) {
    chunk *current = p->chunks;             /* carving continues there: kept */
    for (size_t k = 0; k < NCLASSES; k++) { /* each list rebuilt without the leaving blocks */
        void *b = p->free[k], *last = NULL; /* last kept: its link word open */
        p->free[k] = NULL;
        while (b) {
            UNPOISON(b, sizeof(void *));
            void *next = *(void **)b;
            if (chunk_of(b)->live != 0 || chunk_of(b) == current) {
                *(void **)b = NULL;
                if (last) {
                    *(void **)last = b;
                    POISON(last, sizeof(void *));
                } else {
                    p->free[k] = b;
                }
                last = b;
            }
            b = next;
        }
        if (last) POISON(last, sizeof(void *));
    }
    for (chunk *c = current ? current->next : NULL, *next; c; c = next) {
        next = c->next;
        if (c->live) continue;
        c->prev->next = c->next;
        if (c->next) c->next->prev = c->prev;
        free(c);
    }
}

size_t nim_pool_bytes(const nim_pool *p) {
    size_t n = 0;
    for (const chunk *c = p->chunks; c; c = c->next)
        n += CHUNK_SIZE;
    return n;
}

void nim_lua_trim(lua_State *L) {
    lua_gc(L, LUA_GCCOLLECT);
    void *ud;
    if (lua_getallocf(L, &ud) == nim_pool_alloc) nim_pool_trim(ud);
    malloc_trim(0);
}
