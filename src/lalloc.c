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
 * Freed blocks stay in their list for the state's next objects of that size; the chunks are
 * given back when the state is closed. Under AddressSanitizer free blocks are poisoned, so a
 * use after free inside the pool is still reported. One state (and its coroutines) per pool:
 * no locking. */
#include <stdlib.h>
#include <string.h>

#include "lalloc.h"

#if defined(__SANITIZE_ADDRESS__)
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
#define CHUNK_SIZE (64 * 1024)

typedef struct chunk {
    struct chunk *next;
    /* blocks follow, GRAIN-aligned */
} chunk;

struct nim_pool {
    void *free[NCLASSES]; /* each free block holds the next one's address */
    char *bump, *end;     /* the current chunk's part not yet carved */
    chunk *chunks;
};

/* The class of a small size (1..SMALL_MAX): 0 for 1..16, 1 for 17..32, ... */
static size_t class_of(size_t n) { return (n - 1) / GRAIN; }

nim_pool *nim_pool_new(void) { return calloc(1, sizeof(nim_pool)); }

void nim_pool_free(nim_pool *p) {
    if (!p) return;
    for (chunk *c = p->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(p);
}

static void *small_alloc(nim_pool *p, size_t k) {
    size_t size = (k + 1) * GRAIN;
    void *b = p->free[k];
    if (b) {
        UNPOISON(b, size);
        p->free[k] = *(void **)b;
        return b;
    }
    if ((size_t)(p->end - p->bump) < size) { /* the rest of this chunk is left unused */
        chunk *c = malloc(CHUNK_SIZE);
        if (!c) return NULL;
        c->next = p->chunks;
        p->chunks = c;
        size_t head = (sizeof(chunk) + GRAIN - 1) / GRAIN * GRAIN;
        p->bump = (char *)c + head;
        p->end = (char *)c + CHUNK_SIZE;
        POISON(p->bump, (size_t)(p->end - p->bump));
    }
    b = p->bump;
    p->bump += size;
    UNPOISON(b, size);
    return b;
}

static void small_free(nim_pool *p, void *b, size_t k) {
    *(void **)b = p->free[k];
    p->free[k] = b;
    POISON((char *)b + sizeof(void *), (k + 1) * GRAIN - sizeof(void *));
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
    if (ptr && osize <= SMALL_MAX && nsize <= SMALL_MAX && class_of(osize) == class_of(nsize))
        return ptr;
    void *b = nsize <= SMALL_MAX ? small_alloc(p, class_of(nsize)) : malloc(nsize);
    if (!b) return NULL; /* Lua keeps the old block */
    if (ptr) {
        memcpy(b, ptr, osize < nsize ? osize : nsize);
        if (osize <= SMALL_MAX)
            small_free(p, ptr, class_of(osize));
        else
            free(ptr);
    }
    return b;
}
